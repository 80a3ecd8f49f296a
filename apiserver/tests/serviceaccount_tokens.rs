//! Service account tokens: `serviceaccounts/{name}/token` (TokenRequest) signs a JWT that then
//! authenticates as `system:serviceaccount:<ns>:<name>` until the service account, or the
//! object the token is bound to, is deleted; bad requests get upstream's statuses; and
//! `kubectl create token` works with kubectl 1.27, 1.30 and 1.33.

use std::time::Duration;

use crate::support;
use crate::support::{Etcd, Server};
use component_base::testing::Kubectl;
use serde_json::{json, Value};

const NS: &str = "/api/v1/namespaces/default";

async fn token(s: &Server, sa: &str, spec: Value) -> (u16, Value) {
    s.post(
        &format!("{NS}/serviceaccounts/{sa}/token"),
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
    )
    .await
}

/// The status of a GET made with `token` as the bearer.
async fn status_as(s: &Server, token: &str, path: &str) -> u16 {
    let anon = support::anonymous_client(s.cert_dir.path());
    anon.get(s.url(path)).bearer_auth(token).send().await.expect("sent").status().as_u16()
}

#[tokio::test]
async fn token_request_signs_a_token_that_authenticates_until_its_owner_is_gone() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, _) = s.post(&format!("{NS}/serviceaccounts"), &json!({"metadata": {"name": "builder"}})).await;
    assert_eq!(code, 201);

    let (code, tr) = token(&s, "builder", json!({})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600, "upstream's default");
    assert_eq!(tr["spec"]["audiences"], json!(["https://kubernetes.default.svc.cluster.local"]));
    assert!(tr["status"]["expirationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{tr}");
    let jwt = tr["status"]["token"].as_str().expect("a token").to_string();
    assert_eq!(jwt.split('.').count(), 3, "a JWS compact serialization");
    // The claims say who it is for, as upstream's do.
    let claims: Value = {
        use base64::Engine as _;
        let part = jwt.split('.').nth(1).expect("claims");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("b64"))
            .expect("json")
    };
    assert_eq!(claims["sub"], "system:serviceaccount:default:builder");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "builder");

    assert_eq!(status_as(&s, &jwt, "/api/v1/namespaces/default/configmaps").await, 200);
    // A token with one byte of its signature changed is refused.
    let mut forged = jwt.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(status_as(&s, &String::from_utf8(forged).expect("ascii"), "/api/v1/namespaces").await, 401);

    // Deleting the service account revokes its tokens (the cache sees the delete at once, but
    // poll rather than race it).
    assert_eq!(s.delete(&format!("{NS}/serviceaccounts/builder")).await.0, 200);
    let revoked =
        support::wait_for(Duration::from_secs(5), || async { status_as(&s, &jwt, "/api/v1/namespaces").await == 401 })
            .await;
    assert!(revoked, "a deleted service account's token still authenticates");
    // And a new service account of the same name does not bring the old token back (new UID).
    assert_eq!(s.post(&format!("{NS}/serviceaccounts"), &json!({"metadata": {"name": "builder"}})).await.0, 201);
    assert_eq!(status_as(&s, &jwt, "/api/v1/namespaces").await, 401);
}

#[tokio::test]
async fn pod_bound_token_dies_with_its_pod() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    assert_eq!(s.post(&format!("{NS}/serviceaccounts"), &json!({"metadata": {"name": "app"}})).await.0, 201);
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = s.post(&format!("{NS}/pods"), &pod).await;
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].as_str().expect("uid").to_string();

    // A reference naming another UID is a conflict: the pod was recreated since.
    let (code, st) =
        token(&s, "app", json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "not-it"}}))
            .await;
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")), "{st}");
    // Only pods, secrets and nodes can hold a token.
    let (code, st) =
        token(&s, "app", json!({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}})).await;
    assert_eq!((code, st["reason"].as_str()), (400, Some("BadRequest")), "{st}");

    let (code, tr) =
        token(&s, "app", json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": uid}})).await;
    assert_eq!(code, 201, "{tr}");
    let jwt = tr["status"]["token"].as_str().expect("token").to_string();
    assert_eq!(status_as(&s, &jwt, "/api/v1/namespaces/default/pods").await, 200);
    assert_eq!(s.delete(&format!("{NS}/pods/p?gracePeriodSeconds=0")).await.0, 200);
    let revoked =
        support::wait_for(Duration::from_secs(5), || async { status_as(&s, &jwt, "/api/v1/namespaces").await == 401 })
            .await;
    assert!(revoked, "a deleted pod's token still authenticates");
}

#[tokio::test]
async fn bad_token_requests_get_upstream_statuses_and_sign_nothing() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    // No such service account.
    let (code, st) = token(&s, "ghost", json!({})).await;
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")), "{st}");
    assert_eq!(s.post(&format!("{NS}/serviceaccounts"), &json!({"metadata": {"name": "sa"}})).await.0, 201);
    // Under ten minutes.
    let (code, st) = token(&s, "sa", json!({"expirationSeconds": 60})).await;
    assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{st}");
    assert!(
        st["message"].as_str().is_some_and(|m| m.contains("may not specify a duration less than 10 minutes")),
        "{st}"
    );
    assert_eq!(st["details"]["causes"][0]["field"], "spec.expirationSeconds");
    // A token for another audience does not authenticate here.
    let (code, tr) = token(&s, "sa", json!({"audiences": ["vault"]})).await;
    assert_eq!(code, 201, "{tr}");
    assert_eq!(status_as(&s, tr["status"]["token"].as_str().expect("token"), "/api/v1/namespaces").await, 401);
    // GET on the subresource is not allowed.
    assert_eq!(s.get(&format!("{NS}/serviceaccounts/sa/token")).await.0, 405);
}

fn kubectl_create_token(minor: u32, cert_dir: &std::path::Path) -> String {
    let k = Kubectl::new(minor, cert_dir);
    k.ok(&["create", "serviceaccount", &format!("robot-{minor}")]);
    let out = k.ok(&["create", "token", &format!("robot-{minor}"), "--duration", "20m"]);
    out.trim().to_string()
}

#[tokio::test]
async fn kubectl_create_token_with_each_version() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    for minor in [27, 30, 33] {
        let dir = s.cert_dir.path().to_path_buf();
        let jwt = tokio::task::spawn_blocking(move || kubectl_create_token(minor, &dir)).await.expect("kubectl");
        assert_eq!(jwt.split('.').count(), 3, "kubectl 1.{minor} printed {jwt:?}");
        assert_eq!(status_as(&s, &jwt, "/api/v1/namespaces/default/serviceaccounts").await, 200, "kubectl 1.{minor}");
    }
}
