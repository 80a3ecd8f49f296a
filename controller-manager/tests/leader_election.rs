//! Two controller-managers with `--leader-elect`: one holds the kube-system Lease and acts, the
//! other waits (a ReplicaSet gets its pods once, not twice); when the leader stops it releases
//! the Lease and the other takes over.

use std::time::Duration;

use crate::common::{active_pods, Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get_opt("kube-controller-manager").await.expect("lease")?.spec?.holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_acts_and_a_successor_takes_over() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(1).await;
    let client = cluster.client.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let fast = ["--leader-elect-retry-period=200ms", "--controllers=replicaset"];
    cluster.start_controller_manager(&fast);
    eventually("a leader", WAIT, || async { holder(&leases).await.is_some() }).await;
    let first = holder(&leases).await;
    cluster.start_controller_manager(&fast);

    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}},
    }))
    .expect("rs");
    rss.create(&PostParams::default(), &rs).await.expect("rs");
    eventually("5 pods", WAIT, || async { active_pods(&client, "default", "web").await.len() == 5 }).await;
    // Long enough for a second active controller to have doubled them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(pods.list(&ListParams::default()).await.expect("pods").items.len(), 5, "only the leader acts");
    assert_eq!(holder(&leases).await, first);

    cluster.stop_controller_manager().await;
    eventually("a new leader", WAIT, || async { holder(&leases).await.is_some_and(|h| Some(&h) != first.as_ref()) })
        .await;
    rss.patch("web", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 7}}))).await.expect("scale");
    eventually("the successor scales", WAIT, || async { active_pods(&client, "default", "web").await.len() == 7 })
        .await;
    cluster.stop().await;
}
