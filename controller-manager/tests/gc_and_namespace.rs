//! The garbage collector and the namespace controller against a real apiserver on a real etcd:
//! foreground deletion removes dependents before the owner, orphan deletion leaves dependents
//! without the reference, a dangling dependent is collected, and a deleted namespace empties,
//! says what is left while an object's finalizer holds it, and goes away.

use std::time::Duration;

use clap::Parser;
use component_base::testing::{eventually, Etcd};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn replicaset(name: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .expect("replicaset")
}

fn owned_pod(name: &str, owner: &ReplicaSet) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner.metadata.name, "uid": owner.metadata.uid,
            "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_and_namespace_controller() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let cancel = server.cancel.clone();
    let kubeconfig = server.kubeconfig();
    let cm_opts = rkube_controller_manager::Options::parse_from([
        "rkube-controller-manager",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--bind-address",
        "127.0.0.1:0",
        // These pods are made by hand: no ReplicaSet controller may add or remove any.
        "--controllers=garbagecollector,namespace",
    ]);
    let cm = tokio::spawn(rkube_controller_manager::run(cm_opts, cancel.child_token()));
    let client = rkube_controller_manager::client(Some(&kubeconfig)).await.expect("client");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Foreground: the pod goes first, then the ReplicaSet.
    let rs = rs_api.create(&pp, &replicaset("fg")).await.expect("rs");
    pods.create(&pp, &owned_pod("fg-pod", &rs)).await.expect("pod");
    rs_api.delete("fg", &DeleteParams::foreground()).await.expect("delete");
    // Held by its finalizer until the pod is gone (or already collected).
    assert!(rs_api.get_opt("fg").await.expect("get").is_none_or(|r| r.metadata.deletion_timestamp.is_some()));
    eventually("foreground deletion", WAIT, || async {
        pods.get_opt("fg-pod").await.expect("get").is_none() && rs_api.get_opt("fg").await.expect("get").is_none()
    })
    .await;

    // Orphan: the ReplicaSet goes, the pod stays without its owner reference.
    let rs = rs_api.create(&pp, &replicaset("or")).await.expect("rs");
    pods.create(&pp, &owned_pod("or-pod", &rs)).await.expect("pod");
    rs_api.delete("or", &DeleteParams::orphan()).await.expect("delete");
    eventually("orphan deletion", WAIT, || async { rs_api.get_opt("or").await.expect("get").is_none() }).await;
    let p = pods.get("or-pod").await.expect("the orphan stays");
    assert!(p.metadata.owner_references.unwrap_or_default().is_empty());

    // Background: the owner is gone at once; the collector removes the dangling pod.
    let rs = rs_api.create(&pp, &replicaset("bg")).await.expect("rs");
    pods.create(&pp, &owned_pod("bg-pod", &rs)).await.expect("pod");
    rs_api.delete("bg", &DeleteParams::background()).await.expect("delete");
    eventually("background collection", WAIT, || async { pods.get_opt("bg-pod").await.expect("get").is_none() }).await;

    // Namespace deletion empties the namespace, then finalizes it.
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&pp, &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns")).await.expect("ns");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "doomed");
    for i in 0..5 {
        cms.create(&pp, &serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).expect("cm"))
            .await
            .expect("cm");
    }
    svcs.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})).expect("svc"),
    )
    .await
    .expect("svc");
    let held = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}});
    cms.create(&pp, &serde_json::from_value(held).expect("cm")).await.expect("cm");
    nss.delete("doomed", &DeleteParams::default()).await.expect("delete ns");
    // While the finalizer holds one ConfigMap, the namespace's conditions say so, as upstream's.
    let messages = |n: &Namespace| -> Vec<(String, String)> {
        let conds = n.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        conds.into_iter().map(|c| (c.type_, c.message.unwrap_or_default())).collect()
    };
    let want = vec![
        (
            "NamespaceContentRemaining".to_string(),
            "Some resources are remaining: configmaps. has 1 resource instances".to_string(),
        ),
        (
            "NamespaceFinalizersRemaining".to_string(),
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                .to_string(),
        ),
    ];
    eventually("the conditions name the held ConfigMap", WAIT, || async {
        nss.get_opt("doomed").await.expect("get").is_some_and(|n| messages(&n) == want)
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&release)).await.expect("release");
    eventually("namespace deletion", WAIT, || async { nss.get_opt("doomed").await.expect("get").is_none() }).await;
    assert!(cms.list(&Default::default()).await.expect("list").items.is_empty());

    cancel.cancel();
    let _ = cm.await;
    server.stop().await;
}
