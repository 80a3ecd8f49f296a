//! What kubectl reads: /version, legacy and aggregated discovery, OpenAPI, Table output,
//! label and field selectors, health and metrics.

use crate::support;
use crate::support::{Etcd, Server};
use serde_json::{json, Value};

async fn get_with_accept(s: &Server, path: &str, accept: &str) -> (u16, String, Value) {
    let r = s.client.get(s.url(path)).header("accept", accept).send().await.expect("sent");
    let code = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = r.text().await.expect("body");
    (code, ct, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

#[tokio::test]
async fn version_and_discovery() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (_, v) = s.get("/version").await;
    assert_eq!(v["major"], "1");
    assert_eq!(v["minor"], "33");
    let (_, _, api) = get_with_accept(&s, "/api", "application/json, */*").await;
    assert_eq!(api["kind"], "APIVersions");
    let (_, _, apis) = get_with_accept(&s, "/apis", "application/json, */*").await;
    let groups: Vec<&str> =
        apis["groups"].as_array().expect("groups").iter().map(|g| g["name"].as_str().expect("name")).collect();
    for g in [
        "apps",
        "batch",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "networking.k8s.io",
        "policy",
        "storage.k8s.io",
    ] {
        assert!(groups.contains(&g), "{g} missing");
    }
    for (accept, v) in [
        ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", "v2"),
        ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", "v2beta1"),
    ] {
        let (code, ct, agg) = get_with_accept(&s, "/apis", accept).await;
        assert_eq!(code, 200);
        assert!(ct.contains(&format!("v={v}")) && ct.contains("as=APIGroupDiscoveryList"), "{ct}");
        assert_eq!(agg["apiVersion"], format!("apidiscovery.k8s.io/{v}"));
        let apps = agg["items"].as_array().expect("items").iter().find(|g| g["metadata"]["name"] == "apps").expect("apps");
        let deploy = apps["versions"][0]["resources"].as_array().expect("resources").iter().find(|r| r["resource"] == "deployments").expect("deployments");
        assert_eq!(deploy["responseKind"]["kind"], "Deployment");
        assert_eq!(deploy["shortNames"][0], "deploy");
        assert!(deploy["categories"].as_array().expect("categories").contains(&json!("all")));
    }
    let (_, core) = s.get("/api/v1").await;
    let names: Vec<&str> =
        core["resources"].as_array().expect("resources").iter().map(|r| r["name"].as_str().expect("name")).collect();
    for r in [
        "pods",
        "pods/log",
        "pods/exec",
        "pods/eviction",
        "pods/binding",
        "services",
        "namespaces/finalize",
        "nodes/status",
    ] {
        assert!(names.contains(&r), "{r} missing");
    }
}

#[tokio::test]
async fn openapi_v2_is_protobuf_and_v3_is_hashed() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let r = s
        .client
        .get(s.url("/openapi/v2"))
        .header("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let (_, root) = s.get("/openapi/v3").await;
    let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps/v1 document").to_string();
    assert!(url.contains("?hash="));
    let r = s.client.get(s.url(&url)).send().await.expect("sent");
    assert_eq!(r.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("public, immutable"));
    let doc: Value = r.json().await.expect("json");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
}

#[tokio::test]
async fn tables_have_upstream_columns_and_objects() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    s.post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "p", "labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).await;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (code, ct, t) = get_with_accept(&s, "/api/v1/namespaces/default/pods?limit=500", accept).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("application/json;as=Table"), "{ct}");
    let cols: Vec<&str> =
        t["columnDefinitions"].as_array().expect("columns").iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert!(cols.contains(&"Nominated Node") && cols.contains(&"Readiness Gates"));
    assert_eq!(t["rows"][0]["cells"][0], "p");
    assert_eq!(t["rows"][0]["cells"][1], "0/1");
    assert_eq!(t["rows"][0]["cells"][2], "Pending");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "a");
    let (_, _, full) = get_with_accept(&s, "/api/v1/namespaces/default/pods?includeObject=Object", accept).await;
    assert_eq!(full["rows"][0]["object"]["kind"], "Pod");
    let (_, _, svc) = get_with_accept(&s, "/api/v1/namespaces/default/services", accept).await;
    let cols: Vec<&str> = svc["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(cols[..6], ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]);
    assert_eq!(svc["rows"][0]["cells"][4], "443/TCP");
    // Writes never answer with a Table, and an Accept we cannot serve is a 406.
    let (code, _, _) =
        get_with_accept(&s, "/api/v1/namespaces/default/pods", "application/vnd.kubernetes.protobuf").await;
    assert_eq!(code, 406);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let p = "/api/v1/namespaces/default/pods";
    for (name, tier, node) in [("a", "web", "n1"), ("b", "db", "n1"), ("c", "web", "n2"), ("d", "cache", "")] {
        let mut pod = json!({"metadata": {"name": name, "labels": {"tier": tier}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if !node.is_empty() {
            pod["spec"]["nodeName"] = json!(node);
            pod["metadata"]["labels"]["scheduled"] = json!("yes");
        }
        assert_eq!(s.post(p, &pod).await.0, 201);
    }
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
            .collect();
        n.sort();
        n
    };
    let q = |sel: &str| format!("{p}?{sel}");
    for (sel, want) in [
        ("labelSelector=tier%3Dweb", vec!["a", "c"]),
        ("labelSelector=tier%21%3Dweb", vec!["b", "d"]),
        ("labelSelector=tier%20in%20(db,cache)", vec!["b", "d"]),
        ("labelSelector=tier%20notin%20(db,cache)", vec!["a", "c"]),
        ("labelSelector=scheduled", vec!["a", "b", "c"]),
        ("labelSelector=%21scheduled", vec!["d"]),
        ("labelSelector=tier%3Dweb,scheduled", vec!["a", "c"]),
        ("fieldSelector=spec.nodeName%3Dn1", vec!["a", "b"]),
        ("fieldSelector=spec.nodeName%3D", vec!["d"]),
        ("fieldSelector=metadata.name%3Dc", vec!["c"]),
        ("fieldSelector=status.phase%21%3DSucceeded,status.phase%21%3DFailed,spec.nodeName%3Dn2", vec!["c"]),
    ] {
        let (code, v) = s.get(&q(sel)).await;
        assert_eq!(code, 200, "{sel}: {v}");
        assert_eq!(names(&v), want, "{sel}");
    }
    // -A: the cluster-wide path.
    let (_, all) = s.get("/api/v1/pods?labelSelector=tier%3Dweb").await;
    assert_eq!(names(&all), ["a", "c"]);
    // Events by involved object, as describe asks.
    s.post("/api/v1/namespaces/default/events", &json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "a", "namespace": "default", "uid": "u1"}, "reason": "Started", "message": "m", "type": "Normal"})).await;
    s.post("/api/v1/namespaces/default/events", &json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "b", "namespace": "default", "uid": "u2"}, "reason": "Started", "message": "m", "type": "Normal"})).await;
    let (_, ev) = s.get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.uid%3Du1,involvedObject.name%3Da,involvedObject.namespace%3Ddefault,involvedObject.kind%3DPod").await;
    assert_eq!(names(&ev), ["e1"]);
}

#[tokio::test]
async fn health_and_metrics() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let anon = support::anonymous_client(s.cert_dir.path());
    for p in ["/healthz", "/livez", "/readyz"] {
        let r = anon.get(s.url(p)).send().await.expect("sent");
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.text().await.expect("body"), "ok");
    }
    s.get("/api/v1/namespaces").await;
    let (_, m) = s.get("/metrics").await;
    let text = m.as_str().expect("text");
    assert!(text.contains("apiserver_request_total{"), "{text}");
    assert!(text.contains("apiserver_request_duration_seconds_bucket{"));
    assert!(text.contains("verb=\"LIST\",resource=\"namespaces\""));
    assert!(text.contains("etcd_request_duration_seconds_count{operation=\"list\",type=\"namespaces\"}"), "{text}");
    // An open watch is counted while it lives.
    let w = s.client.get(s.url("/api/v1/namespaces/default/configmaps?watch=true")).send().await.expect("watch");
    let (_, m) = s.get("/metrics").await;
    assert!(m.as_str().expect("text").contains("apiserver_registered_watchers{resource=\"configmaps\"} 1"), "{m}");
    drop(w);
}
