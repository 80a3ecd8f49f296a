//! A node whose kubelet Lease stops: it turns Ready=Unknown with the unreachable taints, its
//! pods are marked not ready, evicted after the (default) toleration, force-deleted by pod GC
//! (no kubelet will confirm), and the Deployment's pods come back on the live node. Short
//! periods via flags.

use crate::common::{active_pods, deployment, Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

fn on(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_replaced_elsewhere() {
    let mut cluster = Cluster::start().await;
    let kubelet = cluster.start_nodes(2).await;
    cluster.start_controller_manager(&[
        "--node-monitor-grace-period=2s",
        "--node-monitor-period=200ms",
        "--default-toleration-seconds=1",
        "--pod-gc-period=500ms",
    ]);
    let client = cluster.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("web", 4, "v1")).await.expect("create");
    eventually("4 pods on both nodes", WAIT, || async {
        let pods = active_pods(&client, "default", "web").await;
        pods.len() == 4 && pods.iter().any(|p| on(p) == "node-1") && pods.iter().all(|p| !on(p).is_empty())
    })
    .await;

    // node-1's kubelet goes silent.
    kubelet.nodes.lock().expect("nodes").retain(|n| n != "node-1");
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("node-1 unreachable", WAIT, || async {
        let n = nodes.get("node-1").await.expect("node");
        let ready =
            n.status.clone().and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready");
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        ready.is_some_and(|c| {
            c.status == "Unknown" && c.message.as_deref() == Some("Kubelet stopped posting node status.")
        }) && taints.iter().any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
            && taints.iter().any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoSchedule")
    })
    .await;
    eventually("all 4 pods on node-0", WAIT, || async {
        let pods = active_pods(&client, "default", "web").await;
        pods.len() == 4 && pods.iter().all(|p| on(p) == "node-0")
    })
    .await;
    let all: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("node-1's pods collected", WAIT, || async {
        all.list(&Default::default()).await.expect("pods").items.iter().all(|p| on(p) != "node-1")
    })
    .await;
    cluster.stop().await;
}
