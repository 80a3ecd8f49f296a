//! The kubelet's Node against a real apiserver on a real etcd: registration with upstream's
//! labels and status, the Lease renewed in kube-node-lease, NotReady with the runtime's reason
//! when the runtime goes down and Ready again when it returns, and re-registration after a
//! restart keeps the same Node.

use std::collections::BTreeMap;
use std::time::Duration;

use component_base::testing::{eventually, Etcd};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use rkube_kubelet::eviction;
use rkube_kubelet::nodestatus::{self, NodeFacts, RuntimeHealth};

const WAIT: Duration = Duration::from_secs(30);

fn facts() -> NodeFacts {
    NodeFacts {
        name: "node-1".into(),
        internal_ip: "198.19.0.2".into(),
        kubelet_port: 10250,
        pod_cidr: Some("198.18.1.0/24".into()),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        cpu_millis: 2000,
        memory_bytes: 4 << 30,
        ephemeral_storage_bytes: 50 << 30,
        max_pods: 110,
        kernel_version: "6.18".into(),
        os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        runtime_version: "containerd://1.6.20".into(),
        boot_id: "boot".into(),
        machine_id: "machine".into(),
        images: Vec::new(),
        pressure: Default::default(),
    }
}

fn ready(n: &Node) -> Option<(String, String)> {
    condition(n, "Ready")
}

fn condition(n: &Node, type_: &str) -> Option<(String, String)> {
    let c = n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_renews_its_lease_and_reports_runtime_health() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let cancel = server.cancel.clone();
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(config).expect("client");

    let (health_tx, health_rx) = tokio::sync::watch::channel(RuntimeHealth::Ready);
    let (facts_tx, facts_rx) = tokio::sync::watch::channel(facts());
    let node_cancel = cancel.child_token();
    let task = tokio::spawn(nodestatus::run(
        client.clone(),
        facts_rx,
        health_rx,
        Duration::from_millis(300),
        Duration::from_millis(300),
        node_cancel.clone(),
    ));
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("Ready", WAIT, || async {
        nodes.get_opt("node-1").await.ok().flatten().and_then(|n| ready(&n)).map(|r| r.0) == Some("True".into())
    })
    .await;
    let n = nodes.get("node-1").await.expect("node");
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname").map(String::as_str), Some("node-1"));
    let status = n.status.clone().expect("status");
    assert_eq!(status.capacity.as_ref().and_then(|c| c.get("pods")).map(|q| q.0.as_str()), Some("110"));
    assert_eq!(status.addresses.as_ref().map(|a| a[0].address.as_str()), Some("198.19.0.2"));
    assert_eq!(status.node_info.as_ref().map(|i| i.kubelet_version.starts_with("v1.33")), Some(true));
    assert_eq!(n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).as_deref(), Some("198.18.1.0/24"));

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    eventually("a lease", WAIT, || async { leases.get_opt("node-1").await.ok().flatten().is_some() }).await;
    let first = leases.get("node-1").await.expect("lease").spec.and_then(|s| s.renew_time).expect("renewTime");
    eventually("a renewal", WAIT, || async {
        leases.get("node-1").await.ok().and_then(|l| l.spec).and_then(|s| s.renew_time).is_some_and(|t| t.0 > first.0)
    })
    .await;

    health_tx.send(RuntimeHealth::Down("connect: connection refused".into())).expect("send");
    eventually("NotReady", WAIT, || async {
        nodes.get("node-1").await.ok().and_then(|n| ready(&n)) == Some(("False".into(), "KubeletNotReady".into()))
    })
    .await;
    health_tx.send(RuntimeHealth::Ready).expect("send");
    eventually("Ready again", WAIT, || async {
        nodes.get("node-1").await.ok().and_then(|n| ready(&n)).map(|r| r.0) == Some("True".into())
    })
    .await;

    // The eviction signals of this machine: its filesystem is never 100 % free, so this
    // threshold is crossed and DiskPressure is reported; memory and PIDs stay fine.
    let signals = eviction::Sources { root_dir: std::env::temp_dir(), image_dir: None, memory_capacity: 4 << 30 };
    let thresholds = eviction::Thresholds::parse("nodefs.available<100%").expect("thresholds");
    let pressure_cancel = node_cancel.child_token();
    let pressure = tokio::spawn(eviction::run(signals, thresholds, facts_tx.clone(), pressure_cancel.clone()));
    eventually("DiskPressure", WAIT, || async {
        nodes.get("node-1").await.ok().and_then(|n| condition(&n, "DiskPressure"))
            == Some(("True".into(), "KubeletHasDiskPressure".into()))
    })
    .await;
    let n = nodes.get("node-1").await.expect("node");
    assert_eq!(condition(&n, "MemoryPressure").map(|c| c.0), Some("False".into()));
    assert_eq!(condition(&n, "PIDPressure").map(|c| c.0), Some("False".into()));
    pressure_cancel.cancel();
    pressure.await.expect("pressure loop stops");

    // A changed fact (the runtime's version, learnt late) reaches the Node.
    facts_tx.send_modify(|f| f.runtime_version = "containerd://1.6.21".into());
    eventually("the new runtime version", WAIT, || async {
        nodes
            .get("node-1")
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.node_info)
            .map(|i| i.container_runtime_version)
            == Some("containerd://1.6.21".into())
    })
    .await;

    // A restarted kubelet takes over the same Node.
    node_cancel.cancel();
    task.await.expect("node loop");
    let uid = nodes.get("node-1").await.expect("node").metadata.uid;
    let again = nodestatus::register(&client, &facts()).await.expect("re-register");
    assert_eq!(again.metadata.uid, uid);

    cancel.cancel();
    server.stop().await;
}
