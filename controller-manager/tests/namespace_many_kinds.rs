//! Deleting a namespace that holds 50 objects of 10 kinds (core, apps, batch, coordination)
//! empties it kind by kind and then removes the namespace, against a real apiserver on a real
//! etcd with the namespace controller and the garbage collector running.

use std::time::Duration;

use clap::Parser;
use component_base::testing::{eventually, Etcd};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "busy";

fn pod_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "busybox"}]})
}

/// (group, version, kind, plural, body of object `i`).
type KindCase = (&'static str, &'static str, &'static str, &'static str, fn(usize) -> Value);

fn kinds() -> Vec<KindCase> {
    vec![
        ("", "v1", "ConfigMap", "configmaps", |i| json!({"metadata": {"name": format!("cm{i}")}, "data": {"k": "v"}})),
        ("", "v1", "Secret", "secrets", |i| json!({"metadata": {"name": format!("s{i}")}, "stringData": {"k": "v"}})),
        (
            "",
            "v1",
            "Service",
            "services",
            |i| json!({"metadata": {"name": format!("svc{i}")}, "spec": {"ports": [{"port": 80}]}}),
        ),
        ("", "v1", "ServiceAccount", "serviceaccounts", |i| json!({"metadata": {"name": format!("sa{i}")}})),
        ("", "v1", "Pod", "pods", |i| json!({"metadata": {"name": format!("p{i}")}, "spec": pod_spec()})),
        (
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            |i| json!({"metadata": {"name": format!("pvc{i}")}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        ("apps", "v1", "ReplicaSet", "replicasets", |i| {
            json!({"metadata": {"name": format!("rs{i}")}, "spec": {"replicas": 0, "selector": {"matchLabels": {"rs": format!("{i}")}},
                "template": {"metadata": {"labels": {"rs": format!("{i}")}}, "spec": pod_spec()}}})
        }),
        ("apps", "v1", "Deployment", "deployments", |i| {
            json!({"metadata": {"name": format!("d{i}")}, "spec": {"replicas": 0, "selector": {"matchLabels": {"d": format!("{i}")}},
                "template": {"metadata": {"labels": {"d": format!("{i}")}}, "spec": pod_spec()}}})
        }),
        ("batch", "v1", "Job", "jobs", |i| {
            json!({"metadata": {"name": format!("j{i}")}, "spec": {"suspend": true, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
        }),
        (
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            |i| json!({"metadata": {"name": format!("l{i}")}, "spec": {"holderIdentity": "x"}}),
        ),
    ]
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(client.clone(), NS, &ar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_with_fifty_objects_of_ten_kinds_deletes_cleanly() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let cancel = server.cancel.clone();
    let kubeconfig = server.kubeconfig();
    let opts = rkube_controller_manager::Options::parse_from([
        "rkube-controller-manager",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--bind-address",
        "127.0.0.1:0",
        "--leader-elect=false",
        // Only what namespace deletion needs: no workload controller adds pods meanwhile.
        "--controllers=garbagecollector,namespace",
    ]);
    let cm = tokio::spawn(rkube_controller_manager::run(opts, cancel.child_token()));
    let client = rkube_controller_manager::client(Some(&kubeconfig)).await.expect("client");

    let nss: Api<Namespace> = Api::all(client.clone());
    let pp = PostParams::default();
    nss.create(&pp, &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns")).await.expect("ns");
    let kinds = kinds();
    assert_eq!(kinds.len(), 10);
    for (group, version, kind, plural, body) in &kinds {
        let a = api(&client, group, version, kind, plural);
        for i in 0..5 {
            let mut obj = body(i);
            obj["apiVersion"] =
                json!(if group.is_empty() { version.to_string() } else { format!("{group}/{version}") });
            obj["kind"] = json!(kind);
            let obj: DynamicObject = serde_json::from_value(obj).expect("object");
            a.create(&pp, &obj).await.unwrap_or_else(|e| panic!("create {plural} {i}: {e}"));
        }
        assert_eq!(a.list(&ListParams::default()).await.expect("list").items.len(), 5, "{plural}");
    }

    nss.delete(NS, &DeleteParams::default()).await.expect("delete namespace");
    // While it empties, the namespace says it is Terminating.
    let phase = nss.get_opt(NS).await.expect("get").and_then(|n| n.status).and_then(|s| s.phase);
    assert!(phase.is_none() || phase.as_deref() == Some("Terminating"), "{phase:?}");
    eventually("the namespace to go", WAIT, || async { nss.get_opt(NS).await.expect("get").is_none() }).await;
    for (group, version, kind, plural, _) in &kinds {
        let left = api(&client, group, version, kind, plural).list(&ListParams::default()).await.expect("list");
        assert!(left.items.is_empty(), "{} {plural} left in the deleted namespace", left.items.len());
    }

    cancel.cancel();
    let _ = cm.await;
    server.stop().await;
}
