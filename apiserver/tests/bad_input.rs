//! Bad input: each malformed or invalid request gets upstream's status and reason, and
//! etcd is byte-for-byte unchanged afterwards.

use crate::support::{Etcd, Server};
use serde_json::json;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: &'static str,
    body: String,
    code: u16,
    reason: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    ct: &'static str,
    body: impl Into<String>,
    code: u16,
    reason: &'static str,
) -> Case {
    Case { name, method, path, content_type: ct, body: body.into(), code, reason }
}

#[tokio::test]
async fn bad_input_table_changes_nothing() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    // One object to update and patch.
    let (code, live) = s
        .post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "live"}, "data": {"a": "1"}}))
        .await;
    assert_eq!(code, 201);
    let (code, _) = s
        .post(
            "/apis/apps/v1/namespaces/default/deployments",
            &json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = s
        .post(
            "/api/v1/namespaces/default/persistentvolumeclaims",
            &json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        )
        .await;
    assert_eq!(code, 201);
    let stale_rv = live["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    // Make `stale_rv` stale.
    let (code, _) = s
        .patch(
            "/api/v1/namespaces/default/configmaps/live",
            "application/merge-patch+json",
            &json!({"data": {"a": "2"}}),
        )
        .await;
    assert_eq!(code, 200);

    let cm = "/api/v1/namespaces/default/configmaps";
    let big = "x".repeat(3 * 1024 * 1024 + 10);
    let cases = vec![
        case("malformed JSON", "POST", cm, "application/json", "{\"metadata\": {", 400, "BadRequest"),
        case("malformed YAML", "POST", cm, "application/yaml", "metadata: [name: x\n  - : :", 400, "BadRequest"),
        case("wrong kind for the URL", "POST", cm, "application/json", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).to_string(), 400, "BadRequest"),
        case("wrong apiVersion for the URL", "POST", cm, "application/json", json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}}).to_string(), 400, "BadRequest"),
        case("name too long", "POST", cm, "application/json", json!({"metadata": {"name": "a".repeat(254)}}).to_string(), 422, "Invalid"),
        case("name with capitals", "POST", cm, "application/json", json!({"metadata": {"name": "Bad"}}).to_string(), 422, "Invalid"),
        case("invalid label", "POST", cm, "application/json", json!({"metadata": {"name": "l", "labels": {"bad key!": "v"}}}).to_string(), 422, "Invalid"),
        case("invalid label value", "POST", cm, "application/json", json!({"metadata": {"name": "l", "labels": {"k": "-bad-"}}}).to_string(), 422, "Invalid"),
        case("body over 3 MiB", "POST", cm, "application/json", big, 413, "RequestEntityTooLarge"),
        case("unknown field under Strict", "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "application/json", json!({"metadata": {"name": "u"}, "spec": {"x": 1}}).to_string(), 400, "BadRequest"),
        case("duplicate field under Strict", "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "application/json", r#"{"metadata": {"name": "d", "name": "e"}}"#, 400, "BadRequest"),
        case("unsupported media type", "POST", cm, "text/csv", "a,b", 415, "UnsupportedMediaType"),
        case("missing namespace", "POST", "/api/v1/namespaces/nope/configmaps", "application/json", json!({"metadata": {"name": "n"}}).to_string(), 404, "NotFound"),
        case("json patch that does not apply", "PATCH", "/api/v1/namespaces/default/configmaps/live", "application/json-patch+json", json!([{"op": "test", "path": "/data/a", "value": "nope"}]).to_string(), 422, "Invalid"),
        case("json patch to a missing path", "PATCH", "/api/v1/namespaces/default/configmaps/live", "application/json-patch+json", json!([{"op": "replace", "path": "/data/zzz/q", "value": "1"}]).to_string(), 422, "Invalid"),
        case("merge patch that is not an object", "PATCH", "/api/v1/namespaces/default/configmaps/live", "application/merge-patch+json", "[1,2]", 400, "BadRequest"),
        case("patch with an unsupported type", "PATCH", "/api/v1/namespaces/default/configmaps/live", "application/json", "{}", 415, "UnsupportedMediaType"),
        case("stale resourceVersion", "PUT", "/api/v1/namespaces/default/configmaps/live", "application/json", json!({"metadata": {"name": "live", "resourceVersion": stale_rv}, "data": {"a": "3"}}).to_string(), 409, "Conflict"),
        case("name differs from URL", "PUT", "/api/v1/namespaces/default/configmaps/live", "application/json", json!({"metadata": {"name": "other"}}).to_string(), 400, "BadRequest"),
        case("immutable selector", "PATCH", "/apis/apps/v1/namespaces/default/deployments/web", "application/merge-patch+json", json!({"spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}}}}).to_string(), 422, "Invalid"),
        case("immutable PVC spec", "PATCH", "/api/v1/namespaces/default/persistentvolumeclaims/data", "application/merge-patch+json", json!({"spec": {"accessModes": ["ReadWriteMany"]}}).to_string(), 422, "Invalid"),
        case("pod without containers", "POST", "/api/v1/namespaces/default/pods", "application/json", json!({"metadata": {"name": "p"}, "spec": {"containers": []}}).to_string(), 422, "Invalid"),
        case("bad label selector", "GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(", "", String::new(), 400, "BadRequest"),
        case("unsupported field selector", "GET", "/api/v1/namespaces/default/configmaps?fieldSelector=spec.nope%3Dx", "", String::new(), 400, "BadRequest"),
        case("unknown resource", "GET", "/api/v1/namespaces/default/nopes", "", String::new(), 404, "NotFound"),
        case("method not allowed", "PUT", "/api/v1/namespaces/default/configmaps", "application/json", "{}", 405, "MethodNotAllowed"),
    ];
    let before = s.etcd_dump().await;
    let mut failures = Vec::new();
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).expect("method");
        let ct = if c.content_type.is_empty() { None } else { Some(c.content_type) };
        let body = if c.body.is_empty() { None } else { Some(c.body.clone()) };
        let (code, status) = s.req(method, c.path, ct, body).await;
        if code != c.code || status["reason"] != c.reason || status["kind"] != "Status" {
            failures.push(format!("{}: got {code} {} ({})", c.name, status["reason"], status["message"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(s.etcd_dump().await, before, "a rejected request changed etcd");
}

#[tokio::test]
async fn invalid_status_lists_causes_per_field() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, st) = s
        .post(
            "/api/v1/namespaces/default/pods",
            &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(st["details"]["kind"], "Pod");
    assert_eq!(st["details"]["name"], "p");
    assert_eq!(st["details"]["causes"][0]["field"], "spec.containers[0].image");
    assert_eq!(st["details"]["causes"][0]["reason"], "FieldValueRequired");
    assert_eq!(st["message"], "Pod \"p\" is invalid: spec.containers[0].image: Required value");
}
