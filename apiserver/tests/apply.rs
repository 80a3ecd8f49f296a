//! Server-side apply over HTTP against a real etcd: conflicts between managers, `force`,
//! removal of fields a manager stops applying, ownership taken by non-apply writes, dry run,
//! client-written managedFields, and the same conflict seen through the real kubectl.

use std::path::Path;

use crate::support::{Etcd, Server};
use serde_json::{json, Value};

const APPLY: &str = "application/apply-patch+yaml";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
        },
    })
}

fn apply_path(manager: &str, force: bool) -> String {
    format!("{DEPLOYMENTS}/web?fieldManager={manager}&force={force}")
}

/// The entry of `manager` with `operation` in the object's managedFields.
fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"].as_array()?.iter().find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn owns_replicas(obj: &Value, manager: &str, operation: &str) -> bool {
    entry(obj, manager, operation).is_some_and(|e| e.pointer("/fieldsV1/f:spec/f:replicas").is_some())
}

#[tokio::test]
async fn apply_conflicts_between_managers_and_force_moves_ownership() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;

    let (code, d) = s.patch(&apply_path("alice", false), APPLY, &deployment(2, json!({"app": "web"}))).await;
    assert_eq!(code, 201, "{d}");
    assert!(owns_replicas(&d, "alice", "Apply"), "{}", d["metadata"]["managedFields"]);
    let e = entry(&d, "alice", "Apply").cloned().unwrap_or_default();
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].is_string(), "{e}");
    // Defaulted fields belong to nobody.
    assert!(e.pointer("/fieldsV1/f:spec/f:revisionHistoryLimit").is_none(), "{e}");

    // bob applies a different replicas: 409 naming alice.
    let bob =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let (code, st) = s.patch(&apply_path("bob", false), APPLY, &bob).await;
    assert_eq!(code, 409, "{st}");
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(st["message"], "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
    assert_eq!(
        st["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"alice\"", "field": ".spec.replicas"}])
    );
    let (_, live) = s.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(live["spec"]["replicas"], 2, "a failed apply changes nothing");

    // Dry run with force returns the would-be object and stores nothing.
    let (code, dry) = s.patch(&format!("{}&dryRun=All", apply_path("bob", true)), APPLY, &bob).await;
    assert_eq!(code, 200, "{dry}");
    assert_eq!(dry["spec"]["replicas"], 5);
    assert!(owns_replicas(&dry, "bob", "Apply"));
    let (_, live) = s.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(live["spec"]["replicas"], 2);

    // force=true: bob takes the field, alice keeps the rest.
    let (code, d) = s.patch(&apply_path("bob", true), APPLY, &bob).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["spec"]["replicas"], 5);
    assert!(owns_replicas(&d, "bob", "Apply"));
    assert!(!owns_replicas(&d, "alice", "Apply"));
    assert!(entry(&d, "alice", "Apply").is_some_and(|e| e.pointer("/fieldsV1/f:spec/f:selector").is_some()));

    // Applying the same value as another manager shares the field without conflict.
    let (code, d) = s.patch(&apply_path("carol", false), APPLY, &bob).await;
    assert_eq!(code, 200, "{d}");
    assert!(owns_replicas(&d, "bob", "Apply") && owns_replicas(&d, "carol", "Apply"));
}

#[tokio::test]
async fn reapply_without_a_label_removes_it() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, d) =
        s.patch(&apply_path("alice", false), APPLY, &deployment(1, json!({"app": "web", "tier": "front"}))).await;
    assert_eq!(code, 201, "{d}");
    // A label another writer added stays when alice stops applying hers.
    let (code, d) = s
        .patch(
            &format!("{DEPLOYMENTS}/web?fieldManager=labeler"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
    assert_eq!(code, 200, "{d}");
    assert!(entry(&d, "labeler", "Update").is_some_and(|e| e.pointer("/fieldsV1/f:metadata/f:labels/f:team").is_some()));

    let (code, d) = s.patch(&apply_path("alice", false), APPLY, &deployment(1, json!({"app": "web"}))).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["metadata"]["labels"], json!({"app": "web", "team": "a"}));
    let labels = entry(&d, "alice", "Apply").and_then(|e| e.pointer("/fieldsV1/f:metadata/f:labels")).cloned();
    assert_eq!(labels, Some(json!({"f:app": {}})));
}

#[tokio::test]
async fn scale_then_apply_of_other_replicas_conflicts_with_the_scaler() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, d) = s.patch(&apply_path("alice", false), APPLY, &deployment(2, json!({"app": "web"}))).await;
    assert_eq!(code, 201, "{d}");

    // What `kubectl scale` sends, with a field manager named.
    let (code, sc) = s
        .patch(
            &format!("{DEPLOYMENTS}/web/scale?fieldManager=scaler"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(code, 200, "{sc}");
    let (_, live) = s.get(&format!("{DEPLOYMENTS}/web")).await;
    assert!(owns_replicas(&live, "scaler", "Update"), "{}", live["metadata"]["managedFields"]);
    assert!(!owns_replicas(&live, "alice", "Apply"), "the update took the field from the applier");

    let (code, st) = s.patch(&apply_path("alice", false), APPLY, &deployment(3, json!({"app": "web"}))).await;
    assert_eq!(code, 409, "{st}");
    let msg = st["message"].as_str().unwrap_or_default();
    assert!(msg.contains("conflict with \"scaler\" using apps/v1") && msg.contains(".spec.replicas"), "{msg}");

    // Re-applying the scaled value is no conflict; the apply shares the field.
    let (code, d) = s.patch(&apply_path("alice", false), APPLY, &deployment(4, json!({"app": "web"}))).await;
    assert_eq!(code, 200, "{d}");
    assert!(owns_replicas(&d, "alice", "Apply") && owns_replicas(&d, "scaler", "Update"));
}

#[tokio::test]
async fn client_written_managed_fields_are_kept_or_reset() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, d) = s.patch(&apply_path("alice", false), APPLY, &deployment(2, json!({"app": "web"}))).await;
    assert_eq!(code, 201, "{d}");
    let rv = d["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();

    // kubectl's CSA→SSA migration: replace managedFields with a JSON patch; kept as written.
    let written = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let ops = json!([
        {"op": "replace", "path": "/metadata/managedFields", "value": written},
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
    ]);
    let (code, d) =
        s.patch(&format!("{DEPLOYMENTS}/web?fieldManager=kubectl"), "application/json-patch+json", &ops).await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["metadata"]["managedFields"], written);

    // An explicit empty list clears them.
    let (code, d) = s
        .patch(
            &format!("{DEPLOYMENTS}/web"),
            "application/merge-patch+json",
            &json!({"metadata": {"managedFields": []}}),
        )
        .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["metadata"].get("managedFields"), None, "{d}");

    // An apply configuration may not carry managedFields.
    let mut bad = deployment(2, json!({}));
    bad["metadata"]["managedFields"] = json!([]);
    let (code, st) = s.patch(&apply_path("alice", false), APPLY, &bad).await;
    assert_eq!(code, 400, "{st}");
}

// ---- with the real kubectl ----

fn manifest(replicas: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  namespace: default\nspec:\n  replicas: {replicas}\n  \
         selector:\n    matchLabels:\n      app: ssa\n  template:\n    metadata:\n      labels:\n        app: ssa\n    \
         spec:\n      containers:\n      - name: main\n        image: nginx\n"
    )
}

fn kubectl_session(cert_dir: &Path) {
    let kubectl = component_base::testing::Kubectl::new(33, cert_dir);
    let k = |args: &[&str]| kubectl.run(args);
    let first = kubectl.home.path().join("first.yaml");
    let second = kubectl.home.path().join("second.yaml");
    std::fs::write(&first, manifest(2)).expect("write manifest");
    std::fs::write(&second, manifest(3)).expect("write manifest");
    let (first, second) = (first.to_str().expect("utf-8"), second.to_str().expect("utf-8"));

    let r = k(&["apply", "--server-side", "--field-manager=team-a", "-f", first]);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("deployment.apps/ssa serverside-applied"), "{}", r.stdout);

    let r = k(&["apply", "--server-side", "--field-manager=team-b", "-f", second]);
    assert_eq!(r.code, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("conflict with \"team-a\""), "{}", r.stderr);
    assert!(r.stderr.contains(".spec.replicas"), "{}", r.stderr);

    let r = k(&["apply", "--server-side", "--field-manager=team-b", "--force-conflicts", "-f", second]);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let r = k(&["get", "deployment", "ssa", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(r.stdout, "3", "{}", r.stderr);
}

#[tokio::test]
async fn kubectl_server_side_apply_conflict_and_force_conflicts() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let cert_dir = s.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || kubectl_session(&cert_dir)).await.expect("kubectl session");
    drop(s);
}
