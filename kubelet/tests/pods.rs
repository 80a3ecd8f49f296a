//! The kubelet's pod loop against a real apiserver on a real etcd, with the recording fake
//! runtime: a pod bound to the node runs and reports Running with its IP and container
//! statuses; a crashing container is restarted and counted; a deleted pod is stopped and
//! then removed from the API; and the runtime's leftovers of a vanished pod are cleaned up.

use std::sync::Arc;
use std::time::Duration;

use component_base::testing::{eventually, Etcd};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use rkube_kubelet::pod_workers::manager::PodManager;
use rkube_kubelet::pod_workers::sync::{NodeConfig, PodDeps};
use rkube_kubelet::runtime::fake::FakeRuntime;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn phase(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_bound_to_the_node_run_report_and_go() {
    component_base::logging::init("text");
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let cancel = server.cancel.clone();
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let client = kube::Client::try_from(config).expect("client");

    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image("busybox:1.36");
    let root = tempfile::tempdir().expect("root dir");
    let deps = Arc::new(PodDeps::real(
        client.clone(),
        runtime.clone(),
        root.path().to_path_buf(),
        "node-1".into(),
        "198.19.0.2".into(),
        Default::default(),
    ));
    let deps_task = tokio::spawn(deps.clone().run(cancel.child_token()));
    let manager = PodManager {
        client: client.clone(),
        deps,
        runtime: runtime.clone(),
        node_name: "node-1".into(),
        host_ip: "198.19.0.2".into(),
        config: NodeConfig {
            cgroup_root: "/node-1/kubepods".into(),
            log_dir: "/tmp/logs".into(),
            runtime_handler: String::new(),
        },
        resync: Duration::from_millis(200),
    };
    let task = tokio::spawn(manager.run(cancel.child_token()));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, node: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "1d"]}]},
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod("web", "node-1")).await.expect("create");
    pods.create(&PostParams::default(), &pod("elsewhere", "node-2")).await.expect("create");
    eventually("web Running", WAIT, || async {
        pods.get("web").await.map(|p| phase(&p) == "Running").unwrap_or(false)
    })
    .await;
    let web = pods.get("web").await.expect("web");
    let st = web.status.clone().expect("status");
    assert_eq!(st.host_ip.as_deref(), Some("198.19.0.2"));
    let cs = &st.container_statuses.clone().expect("container statuses")[0];
    assert!(cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(), "{cs:?}");
    assert!(st.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    // Only pods bound to this node are run.
    assert_eq!(runtime.sandbox_ids().len(), 1);
    assert_ne!(phase(&pods.get("elsewhere").await.expect("elsewhere")), "Running");

    // A crash: the container is restarted and the restart counted.
    let first = runtime.container_ids()[0].clone();
    runtime.set_container_exited(&first, 1, "Error").expect("exit");
    eventually("a restart", WAIT, || async {
        pods.get("web")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.container_statuses)
            .is_some_and(|cs| cs[0].restart_count == 1)
    })
    .await;

    // Deletion: graceful on the API, finished by the kubelet.
    pods.delete("web", &DeleteParams::default()).await.expect("delete");
    eventually("web gone", WAIT, || async { pods.get_opt("web").await.map(|p| p.is_none()).unwrap_or(false) }).await;
    eventually("sandbox removed", WAIT, || async { runtime.sandbox_ids().is_empty() }).await;

    cancel.cancel();
    let _ = task.await;
    let _ = deps_task.await;
    server.stop().await;
}
