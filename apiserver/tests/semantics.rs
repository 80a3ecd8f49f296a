//! Object semantics as upstream: defaulting, generation, spec/status split, generateName,
//! graceful deletion, finalizers, namespace lifecycle, Service IP allocation, dry run,
//! scale and binding subresources.

use crate::support::{Etcd, Server};
use serde_json::{json, Value};

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "nginx"}]}},
        },
    })
}

#[tokio::test]
async fn defaults_generation_and_status_split() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, d) = s.post(path, &deployment("web", 2)).await;
    assert_eq!(code, 201, "{d}");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["schedulerName"], "default-scheduler");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");

    // A status change through the main resource is ignored; a spec change bumps generation.
    let (_, d2) = s
        .patch(
            &format!("{path}/web"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 3}, "status": {"replicas": 9}}),
        )
        .await;
    assert_eq!(d2["metadata"]["generation"], 2);
    assert!(d2["status"].get("replicas").is_none(), "{d2}");
    // /status ignores spec and does not bump generation.
    let (code, d3) = s
        .patch(
            &format!("{path}/web/status"),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 7}, "status": {"replicas": 3, "observedGeneration": 2}}),
        )
        .await;
    assert_eq!(code, 200, "{d3}");
    assert_eq!(d3["status"]["replicas"], 3);
    assert_eq!(d3["spec"]["replicas"], 3);
    assert_eq!(d3["metadata"]["generation"], 2);
    // A metadata-only change keeps the generation.
    let (_, d4) = s
        .patch(&format!("{path}/web"), "application/merge-patch+json", &json!({"metadata": {"labels": {"x": "y"}}}))
        .await;
    assert_eq!(d4["metadata"]["generation"], 2);
}

#[tokio::test]
async fn generate_name_and_dry_run() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, o) =
        s.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"generateName": "gen-"}})).await;
    assert_eq!(code, 201);
    let name = o["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let before = s.etcd_dump().await;
    let (code, dry) =
        s.post("/api/v1/namespaces/default/configmaps?dryRun=All", &json!({"metadata": {"name": "dry"}})).await;
    assert_eq!(code, 201);
    assert_eq!(dry["metadata"]["name"], "dry");
    let (code, _) = s
        .patch(
            &format!("/api/v1/namespaces/default/configmaps/{name}?dryRun=All"),
            "application/merge-patch+json",
            &json!({"data": {"a": "b"}}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .req(reqwest::Method::DELETE, &format!("/api/v1/namespaces/default/configmaps/{name}?dryRun=All"), None, None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(s.etcd_dump().await, before, "dry run wrote to etcd");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let p = "/api/v1/namespaces/default/configmaps";
    s.post(p, &json!({"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})).await;
    let (code, o) = s.delete(&format!("{p}/f")).await;
    assert_eq!(code, 200);
    assert!(o["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(s.get(&format!("{p}/f")).await.0, 200);
    let (code, _) =
        s.patch(&format!("{p}/f"), "application/merge-patch+json", &json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(code, 200);
    assert_eq!(s.get(&format!("{p}/f")).await.0, 404);
}

#[tokio::test]
async fn pods_delete_gracefully_once_bound_and_at_once_before() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let p = "/api/v1/namespaces/default/pods";
    let pod =
        |n: &str| json!({"metadata": {"name": n}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    let (code, created) = s.post(p, &pod("unbound")).await;
    assert_eq!(code, 201);
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["status"]["qosClass"], "BestEffort");
    assert_eq!(created["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    s.delete(&format!("{p}/unbound")).await;
    assert_eq!(s.get(&format!("{p}/unbound")).await.0, 404);

    s.post(p, &pod("bound")).await;
    let (code, b) = s.post(&format!("{p}/bound/binding"), &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "node-1"}})).await;
    assert_eq!(code, 201, "{b}");
    let (_, bound) = s.get(&format!("{p}/bound")).await;
    assert_eq!(bound["spec"]["nodeName"], "node-1");
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    // A second binding is a conflict.
    let (code, _) = s
        .post(&format!("{p}/bound/binding"), &json!({"metadata": {"name": "bound"}, "target": {"name": "node-2"}}))
        .await;
    assert_eq!(code, 409);
    let (_, d) = s.delete(&format!("{p}/bound")).await;
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(s.get(&format!("{p}/bound")).await.0, 200);
    // What the kubelet does once the containers stopped: delete with grace 0.
    let (code, _) = s
        .req(
            reqwest::Method::DELETE,
            &format!("{p}/bound"),
            Some("application/json"),
            Some(json!({"gracePeriodSeconds": 0}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(s.get(&format!("{p}/bound")).await.0, 404);
}

#[tokio::test]
async fn namespace_lifecycle() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, o) = s.get(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(code, 200, "{ns}");
        assert_eq!(o["status"]["phase"], "Active");
    }
    s.post("/api/v1/namespaces", &json!({"metadata": {"name": "gone"}})).await;
    let (code, o) = s.delete("/api/v1/namespaces/gone").await;
    assert_eq!(code, 200);
    assert_eq!(o["status"]["phase"], "Terminating");
    let (code, st) = s.post("/api/v1/namespaces/gone/configmaps", &json!({"metadata": {"name": "x"}})).await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(st["details"]["causes"][0]["reason"], "NamespaceTerminating");
    // What the namespace controller does once it is empty.
    let mut fin = o.clone();
    fin["spec"]["finalizers"] = json!([]);
    let (code, _) = s.put("/api/v1/namespaces/gone/finalize", &fin).await;
    assert_eq!(code, 200);
    assert_eq!(s.get("/api/v1/namespaces/gone").await.0, 404);
}

#[tokio::test]
async fn service_cluster_ips_are_unique_under_concurrent_creates() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = s.client.clone();
        let url = s.url("/api/v1/namespaces/default/services");
        tasks.push(tokio::spawn(async move {
            let body = json!({"metadata": {"name": format!("s{i}")}, "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}});
            let r = client.post(url).json(&body).send().await.expect("sent");
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.expect("json");
            (v["spec"]["clusterIP"].as_str().expect("ip").to_string(), v["spec"]["ports"][0]["nodePort"].as_i64().expect("nodePort"))
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for t in tasks {
        let (ip, port) = t.await.expect("task");
        assert!(ip.starts_with("198.19."), "{ip}");
        assert!((30000..=32767).contains(&port));
        assert!(ips.insert(ip), "duplicate cluster IP");
        assert!(ports.insert(port), "duplicate node port");
    }
    let (_, k) = s.get("/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(k["spec"]["clusterIP"], "198.19.128.1");
    assert!(!ips.contains("198.19.128.1"));
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    s.post("/apis/apps/v1/namespaces/default/deployments", &deployment("web", 2)).await;
    let (code, sc) = s.get("/apis/apps/v1/namespaces/default/deployments/web/scale").await;
    assert_eq!(code, 200);
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["apiVersion"], "autoscaling/v1");
    assert_eq!(sc["spec"]["replicas"], 2);
    assert_eq!(sc["status"]["selector"], "app=web");
    let (code, sc) = s
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(code, 200, "{sc}");
    assert_eq!(sc["spec"]["replicas"], 4);
    let (_, d) = s.get("/apis/apps/v1/namespaces/default/deployments/web").await;
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["generation"], 2);
}

/// A Running, Ready pod `name` with `app: w`.
async fn running_pod(s: &Server, name: &str) {
    let p = "/api/v1/namespaces/default/pods";
    let pod = json!({"metadata": {"name": name, "labels": {"app": "w"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(s.post(p, &pod).await.0, 201);
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    let (code, o) = s.patch(&format!("{p}/{name}/status"), "application/merge-patch+json", &status).await;
    assert_eq!(code, 200, "{o}");
}

async fn set_budget_status(s: &Server, name: &str, status: Value) {
    let path = format!("/apis/policy/v1/namespaces/default/poddisruptionbudgets/{name}/status");
    let (code, o) = s.patch(&path, "application/merge-patch+json", &json!({"status": status})).await;
    assert_eq!(code, 200, "{o}");
}

async fn evict(s: &Server, name: &str) -> (u16, Value) {
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}, "deleteOptions": {}});
    s.post(&format!("/api/v1/namespaces/default/pods/{name}/eviction"), &eviction).await
}

async fn terminating(s: &Server, name: &str) -> bool {
    s.get(&format!("/api/v1/namespaces/default/pods/{name}")).await.1["metadata"]["deletionTimestamp"].is_string()
}

#[tokio::test]
async fn eviction_respects_disruption_budgets() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    running_pod(&s, "w").await;
    let pdb =
        json!({"metadata": {"name": "budget"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "w"}}}});
    assert_eq!(s.post(pdbs, &pdb).await.0, 201);

    // The disruption controller has not observed the budget yet: 429, retry in 10 s.
    let (code, st) = evict(&s, "w").await;
    assert_eq!(code, 429, "{st}");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(st["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        st["details"]["causes"][0]["message"],
        "The disruption budget budget is still being processed by the server."
    );
    assert!(!terminating(&s, "w").await);

    // Observed, but no disruption allowed.
    set_budget_status(&s, "budget", json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1})).await;
    let (code, st) = evict(&s, "w").await;
    assert_eq!(code, 429, "{st}");
    assert_eq!(
        st["details"]["causes"][0]["message"],
        "The disruption budget budget needs 1 healthy pods and has 1 currently"
    );
    assert!(!terminating(&s, "w").await);

    // One allowed: the eviction takes it, records the pod, and deletes gracefully.
    set_budget_status(&s, "budget", json!({"disruptionsAllowed": 1, "currentHealthy": 2, "expectedPods": 2})).await;
    let (code, st) = evict(&s, "w").await;
    assert_eq!(code, 201, "{st}");
    assert!(terminating(&s, "w").await);
    let (_, b) = s.get(&format!("{pdbs}/budget")).await;
    assert_eq!(b["status"]["disruptionsAllowed"], 0, "{b}");
    assert!(b["status"]["disruptedPods"]["w"].is_string(), "{b}");
    assert_eq!(b["status"]["conditions"][0]["reason"], "InsufficientPods", "{b}");
    assert_eq!(b["status"]["conditions"][0]["status"], "False", "{b}");

    // The budget is spent: the next pod is refused.
    running_pod(&s, "w2").await;
    assert_eq!(evict(&s, "w2").await.0, 429);
    // A pod that has not started needs no budget.
    let pending = json!({"metadata": {"name": "pending", "labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(s.post("/api/v1/namespaces/default/pods", &pending).await.0, 201);
    assert_eq!(evict(&s, "pending").await.0, 201);

    // Two evictions racing for the last disruption: the compare-and-swap lets exactly one win.
    running_pod(&s, "w3").await;
    set_budget_status(&s, "budget", json!({"disruptionsAllowed": 1, "disruptedPods": null})).await;
    let (a, b) = tokio::join!(evict(&s, "w2"), evict(&s, "w3"));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [201, 429], "{a:?} {b:?}");
    assert_eq!(terminating(&s, "w2").await as u8 + terminating(&s, "w3").await as u8, 1);

    // More than one budget for a pod: upstream refuses with a 500.
    running_pod(&s, "w4").await;
    let everything = json!({"metadata": {"name": "everything"}, "spec": {"maxUnavailable": 1, "selector": {}}});
    assert_eq!(s.post(pdbs, &everything).await.0, 201);
    let (code, st) = evict(&s, "w4").await;
    assert_eq!(code, 500, "{st}");
    assert_eq!(
        st["message"],
        "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
}

#[tokio::test]
async fn delete_preconditions_and_yaml_bodies() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let p = "/api/v1/namespaces/default/configmaps";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  key: value\n";
    let (code, o) = s.req(reqwest::Method::POST, p, Some("application/yaml"), Some(yaml.to_string())).await;
    assert_eq!(code, 201, "{o}");
    assert_eq!(o["data"]["key"], "value");
    // A YAML answer when asked for.
    let r =
        s.client.get(s.url(&format!("{p}/from-yaml"))).header("accept", "application/yaml").send().await.expect("get");
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/yaml"));
    assert!(r.text().await.expect("body").contains("key: value"));
    // Preconditions: a wrong uid or resourceVersion is a 409 and deletes nothing.
    let body = json!({"preconditions": {"uid": "not-the-uid"}}).to_string();
    let (code, st) =
        s.req(reqwest::Method::DELETE, &format!("{p}/from-yaml"), Some("application/json"), Some(body)).await;
    assert_eq!(code, 409, "{st}");
    let body =
        json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "preconditions": {"resourceVersion": "1"}})
            .to_string();
    let (code, _) =
        s.req(reqwest::Method::DELETE, &format!("{p}/from-yaml"), Some("application/json"), Some(body)).await;
    assert_eq!(code, 409);
    let uid = o["metadata"]["uid"].as_str().expect("uid");
    let body = json!({"preconditions": {"uid": uid}, "propagationPolicy": "Background"}).to_string();
    let (code, _) =
        s.req(reqwest::Method::DELETE, &format!("{p}/from-yaml"), Some("application/json"), Some(body)).await;
    assert_eq!(code, 200);
    assert_eq!(s.get(&format!("{p}/from-yaml")).await.0, 404);
}
