//! The ServiceAccount admission plugin against a real etcd: a pod gets the `default` service
//! account and a projected token volume in every container; a missing service account is a
//! 403 that writes nothing, while a `default` created shortly after the pod's request is
//! waited for; `automountServiceAccountToken: false` and imagePullSecrets as upstream; dry runs
//! are mutated too; and `--disable-admission-plugins=ServiceAccount` leaves pods alone.

use std::time::Duration;

use crate::support::{Etcd, Server};
use serde_json::{json, Value};

const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn pod(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "app", "image": "busybox"}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

async fn start(etcd: &Etcd) -> Server {
    let cert_dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("/registry-{}", uuid::Uuid::new_v4());
    Server::start_with_args(etcd.endpoint.clone(), cert_dir, prefix, &["--enable-admission-plugins=ServiceAccount"])
        .await
}

/// A server with namespace `ns` and its `default` service account, as the controller-manager
/// would have made it.
async fn start_with_default_account(etcd: &Etcd, ns: &str) -> Server {
    let s = start(etcd).await;
    create_ns(&s, ns).await;
    create_sa(&s, ns, json!({"metadata": {"name": "default"}})).await;
    s
}

async fn create_ns(s: &Server, ns: &str) {
    let (code, body) = s.post("/api/v1/namespaces", &json!({"metadata": {"name": ns}})).await;
    assert_eq!(code, 201, "{body}");
}

async fn create_sa(s: &Server, ns: &str, sa: Value) {
    let (code, body) = s.post(&format!("/api/v1/namespaces/{ns}/serviceaccounts"), &sa).await;
    assert_eq!(code, 201, "{body}");
}

/// The token volume's name, checking every container mounts it read-only at the path.
fn token_volume(p: &Value) -> String {
    let vols = p["spec"]["volumes"].as_array().expect("volumes");
    let v = vols
        .iter()
        .find(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-")))
        .expect("a token volume");
    let name = v["name"].as_str().expect("name").to_string();
    assert_eq!(name.len(), "kube-api-access-".len() + 5, "{name}");
    for c in p["spec"]["initContainers"].as_array().into_iter().chain(p["spec"]["containers"].as_array()).flatten() {
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        assert!(
            mounts.contains(&json!({"name": name, "readOnly": true, "mountPath": TOKEN_PATH})),
            "container {} lacks the token mount: {mounts:?}",
            c["name"]
        );
    }
    let sources = &v["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(
        sources[1]["configMap"],
        json!({"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]})
    );
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
    name
}

#[tokio::test]
async fn pods_get_the_default_service_account_and_a_token_volume() {
    let etcd = Etcd::start();
    let s = start_with_default_account(&etcd, "apps").await;

    let (code, p) = s
        .post(
            "/api/v1/namespaces/apps/pods",
            &pod("web", json!({"initContainers": [{"name": "init", "image": "busybox"}]})),
        )
        .await;
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["serviceAccount"], "default");
    let name = token_volume(&p);
    // Admission runs after the field manager, as upstream's: what it added has no owner.
    let managed = p["metadata"]["managedFields"].to_string();
    assert!(managed.contains("f:containers") && !managed.contains("kube-api-access"), "{managed}");
    assert!(!managed.contains("f:serviceAccountName"), "{managed}");
    // What was stored is what was answered.
    let (_, got) = s.get("/api/v1/namespaces/apps/pods/web").await;
    assert_eq!(token_volume(&got), name);

    // Two pods of one spec get differently named volumes, as upstream's do.
    let (_, p2) = s.post("/api/v1/namespaces/apps/pods", &pod("web2", json!({}))).await;
    assert_ne!(token_volume(&p2), name);

    // A dry run is admitted, and so mutated, like a real create.
    let (code, dry) = s.post("/api/v1/namespaces/apps/pods?dryRun=All", &pod("dry", json!({}))).await;
    assert_eq!(code, 201, "{dry}");
    token_volume(&dry);
    let (code, _) = s.get("/api/v1/namespaces/apps/pods/dry").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_missing_service_account_is_forbidden_and_writes_nothing() {
    let etcd = Etcd::start();
    let s = start(&etcd).await;
    create_ns(&s, "apps").await;
    let before = s.etcd_dump().await;

    let (code, st) =
        s.post("/api/v1/namespaces/apps/pods", &pod("web", json!({"serviceAccountName": "builder"}))).await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "pods \"web\" is forbidden: error looking up service account apps/builder: serviceaccount \"builder\" not found"
    );
    assert_eq!(st["details"]["kind"], "pods");

    // `default` is looked for for about two seconds before the same answer.
    let started = std::time::Instant::now();
    let (code, st) = s.post("/api/v1/namespaces/apps/pods", &pod("web", json!({}))).await;
    assert_eq!(code, 403, "{st}");
    assert!(st["message"].as_str().is_some_and(|m| m.contains("apps/default")), "{st}");
    assert!(started.elapsed() >= Duration::from_millis(900), "gave up after {:?}", started.elapsed());
    assert_eq!(s.etcd_dump().await, before, "a refused pod writes nothing");

    // A missing namespace is answered as before, without waiting for a service account.
    let (code, st) = s.post("/api/v1/namespaces/nowhere/pods", &pod("web", json!({}))).await;
    assert_eq!(code, 404, "{st}");
}

#[tokio::test]
async fn a_default_account_created_while_the_pod_waits_is_used() {
    let etcd = Etcd::start();
    let s = std::sync::Arc::new(start(&etcd).await);
    create_ns(&s, "fresh").await;
    // The controller-manager's part, a little after the pod's request.
    let late = {
        let s = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            create_sa(&s, "fresh", json!({"metadata": {"name": "default"}})).await;
        })
    };
    let (code, p) = s.post("/api/v1/namespaces/fresh/pods", &pod("early", json!({}))).await;
    late.await.expect("the service account was created");
    assert_eq!(code, 201, "{p}");
    token_volume(&p);
}

#[tokio::test]
async fn automount_and_image_pull_secrets_follow_the_pod_then_the_account() {
    let etcd = Etcd::start();
    let s = start_with_default_account(&etcd, "apps").await;
    create_sa(
        &s,
        "apps",
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "reg"}]}),
    )
    .await;

    let (code, p) =
        s.post("/api/v1/namespaces/apps/pods", &pod("off", json!({"automountServiceAccountToken": false}))).await;
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert!(p["spec"].get("volumes").is_none(), "{p}");

    let (code, p) = s.post("/api/v1/namespaces/apps/pods", &pod("quiet", json!({"serviceAccountName": "quiet"}))).await;
    assert_eq!(code, 201, "{p}");
    assert!(p["spec"].get("volumes").is_none(), "{p}");
    assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));

    let (code, p) = s
        .post(
            "/api/v1/namespaces/apps/pods",
            &pod("loud", json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true})),
        )
        .await;
    assert_eq!(code, 201, "{p}");
    token_volume(&p);
}

#[tokio::test]
async fn disabled_the_plugin_leaves_pods_alone() {
    let etcd = Etcd::start();
    // The harness's default: no controller-manager, so no service accounts.
    let s = Server::start(&etcd).await;
    create_ns(&s, "apps").await;
    let (code, p) = s.post("/api/v1/namespaces/apps/pods", &pod("web", json!({}))).await;
    assert_eq!(code, 201, "{p}");
    assert!(p["spec"].get("serviceAccountName").is_none(), "{p}");
    assert!(p["spec"].get("volumes").is_none(), "{p}");
}
