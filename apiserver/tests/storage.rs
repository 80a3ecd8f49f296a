//! Storage semantics against a real etcd: resourceVersion = mod revision, compare-and-swap
//! updates, lists at a revision, pagination, watches from a revision, 410 after compaction.

use std::time::Duration;

use crate::support;
use crate::support::{Etcd, Server};
use futures::StreamExt;
use serde_json::{json, Value};

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": v}})
}

fn rv(o: &Value) -> i64 {
    o["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().expect("numeric")
}

#[tokio::test]
async fn create_get_update_delete_with_resource_versions() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (code, created) = s.post("/api/v1/namespaces/default/configmaps", &cm("a", "1")).await;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let (code, got) = s.get("/api/v1/namespaces/default/configmaps/a").await;
    assert_eq!(code, 200);
    assert_eq!(rv(&got), rv(&created));
    assert_eq!(got["kind"], "ConfigMap");

    // A stale resourceVersion is a 409 Conflict and changes nothing.
    let mut stale = got.clone();
    stale["data"]["k"] = json!("2");
    let (code, _) = s.put("/api/v1/namespaces/default/configmaps/a", &stale).await;
    assert_eq!(code, 200);
    stale["data"]["k"] = json!("3");
    let (code, body) = s.put("/api/v1/namespaces/default/configmaps/a", &stale).await;
    assert_eq!(code, 409);
    assert_eq!(body["reason"], "Conflict");
    let (_, now) = s.get("/api/v1/namespaces/default/configmaps/a").await;
    assert_eq!(now["data"]["k"], "2");
    assert!(rv(&now) > rv(&created));

    let (code, _) = s.delete("/api/v1/namespaces/default/configmaps/a").await;
    assert_eq!(code, 200);
    let (code, body) = s.get("/api/v1/namespaces/default/configmaps/a").await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "configmaps \"a\" not found");
}

#[tokio::test]
async fn create_twice_is_already_exists() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    assert_eq!(s.post("/api/v1/namespaces/default/configmaps", &cm("a", "1")).await.0, 201);
    let (code, body) = s.post("/api/v1/namespaces/default/configmaps", &cm("a", "1")).await;
    assert_eq!(code, 409);
    assert_eq!(body["reason"], "AlreadyExists");
    assert_eq!(body["details"]["kind"], "configmaps");
}

/// A list read straight from etcd (no resourceVersion) whose range response is bigger than
/// gRPC's default 4 MiB message cap still answers (a namespace of a few thousand pods is).
#[tokio::test]
async fn a_list_larger_than_four_mib_reads_from_etcd() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let big = "x".repeat(700 * 1024);
    for i in 0..8 {
        let (code, body) = s.post("/api/v1/namespaces/default/configmaps", &cm(&format!("big{i}"), &big)).await;
        assert_eq!(code, 201, "{}", &body.to_string()[..200.min(body.to_string().len())]);
    }
    let (code, list) = s.get("/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 200, "{}", &list.to_string()[..300.min(list.to_string().len())]);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(8));
    let (code, list) = s.get("/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%21%3Dbig0").await;
    assert_eq!(code, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(7));
}

#[tokio::test]
async fn list_pagination_and_exact_revision() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let mut revs = Vec::new();
    for i in 0..7 {
        let (_, o) = s.post("/api/v1/namespaces/default/configmaps", &cm(&format!("c{i}"), "x")).await;
        revs.push(rv(&o));
    }
    // Pages of 3 at one revision, even with a write between pages.
    let (code, p1) = s.get("/api/v1/namespaces/default/configmaps?limit=3").await;
    assert_eq!(code, 200);
    assert_eq!(p1["items"].as_array().expect("items").len(), 3);
    assert_eq!(p1["metadata"]["remainingItemCount"], 4);
    let token = p1["metadata"]["continue"].as_str().expect("continue token").to_string();
    s.post("/api/v1/namespaces/default/configmaps", &cm("c99", "late")).await;
    let (_, p2) = s.get(&format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}")).await;
    let (_, p3) = s
        .get(&format!(
            "/api/v1/namespaces/default/configmaps?limit=3&continue={}",
            p2["metadata"]["continue"].as_str().expect("continue")
        ))
        .await;
    let names: Vec<String> = [&p1, &p2, &p3]
        .iter()
        .flat_map(|p| {
            p["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
        })
        .collect();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    assert!(p3["metadata"].get("continue").is_none());

    // Exact: the list as it was at the third create.
    let (_, at) = s
        .get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={}&resourceVersionMatch=Exact", revs[2]))
        .await;
    assert_eq!(at["items"].as_array().expect("items").len(), 3);
    assert_eq!(at["metadata"]["resourceVersion"], revs[2].to_string());
    // resourceVersion=0: served from the watch cache.
    assert!(
        support::wait_for(Duration::from_secs(5), || async {
            s.get("/api/v1/namespaces/default/configmaps?resourceVersion=0").await.1["items"].as_array().map(Vec::len)
                == Some(8)
        })
        .await
    );
}

async fn watch_lines(s: &Server, path: &str, n: usize) -> Vec<Value> {
    let resp = s.client.get(s.url(path)).send().await.expect("watch");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .expect("chunk");
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).expect("a JSON event per line"));
        }
    }
    out
}

#[tokio::test]
async fn watch_from_revision_sees_every_later_change_in_order() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (_, a) = s.post("/api/v1/namespaces/default/configmaps", &cm("a", "1")).await;
    let start = rv(&a);
    let mut b = cm("a", "2");
    b["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"].clone();
    s.put("/api/v1/namespaces/default/configmaps/a", &b).await;
    s.post("/api/v1/namespaces/default/configmaps", &cm("b", "1")).await;
    s.delete("/api/v1/namespaces/default/configmaps/a").await;
    let ev =
        watch_lines(&s, &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start}"), 3).await;
    let kinds: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| (e["type"].as_str().unwrap_or(""), e["object"]["metadata"]["name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds, [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]);
    let revs: Vec<i64> = ev.iter().map(|e| rv(&e["object"])).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    assert_eq!(ev[0]["object"]["kind"], "ConfigMap");
}

#[tokio::test]
async fn watch_without_revision_starts_with_synthetic_added() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    s.post("/api/v1/namespaces/default/configmaps", &cm("x", "1")).await;
    s.post("/api/v1/namespaces/default/configmaps", &cm("y", "1")).await;
    let ev = watch_lines(
        &s,
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dy",
        1,
    )
    .await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["metadata"]["name"], "y");
}

#[tokio::test]
async fn bookmarks_and_initial_events_end() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    s.post("/api/v1/namespaces/default/configmaps", &cm("x", "1")).await;
    let ev = watch_lines(
        &s,
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
        2,
    )
    .await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[1]["type"], "BOOKMARK");
    assert_eq!(ev[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
}

#[tokio::test]
async fn compacted_revision_is_410_expired_for_list_and_watch() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (_, a) = s.post("/api/v1/namespaces/default/configmaps", &cm("a", "1")).await;
    let old = rv(&a);
    let mut last = 0;
    for i in 0..5 {
        let (_, o) = s.post("/api/v1/namespaces/default/configmaps", &cm(&format!("n{i}"), "1")).await;
        last = rv(&o);
    }
    let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.expect("etcd");
    c.compact(last, None).await.expect("compact");
    let (code, body) =
        s.get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={old}&resourceVersionMatch=Exact")).await;
    assert_eq!(code, 410, "{body}");
    assert_eq!(body["reason"], "Expired");
    let (code, body) = s
        .get(&format!("/api/v1/namespaces/default/configmaps?resourceVersion={old}&resourceVersionMatch=Exact&limit=1"))
        .await;
    assert_eq!(code, 410, "{body}");
    // A restarted server's watch cache starts after `old`; etcd compacted it: ERROR 410.
    let (ep, dir, prefix) = s.stop().await;
    let s = Server::start_with(ep, dir, prefix).await;
    let ev =
        watch_lines(&s, &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old}"), 1).await;
    assert_eq!(ev[0]["type"], "ERROR", "{ev:?}");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
}

/// A loopback TCP forwarder in front of etcd whose open connections can be cut, as a network
/// fault or an etcd restart would cut them; new connections keep being accepted.
struct Cutter {
    addr: std::net::SocketAddr,
    /// Cancelled to cut the connections of the current generation.
    generation: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
    stop: tokio_util::sync::CancellationToken,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Cutter {
    async fn start(etcd_endpoint: &str) -> Cutter {
        let target = etcd_endpoint.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let generation = std::sync::Arc::new(std::sync::Mutex::new(stop.child_token()));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, s, n) = (generation.clone(), stop.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let mut inbound = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok((c, _)) => c, Err(_) => return },
                };
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let cut = g.lock().expect("generation").clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Cutter { addr, generation, stop, accepted }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every connection open now.
    fn cut(&self) {
        let mut g = self.generation.lock().expect("generation");
        g.cancel();
        *g = self.stop.child_token();
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn a_cut_etcd_connection_is_redialed_and_the_cache_catches_up() {
    let etcd = Etcd::start();
    let proxy = Cutter::start(&etcd.endpoint).await;
    let prefix = format!("/registry-{}", uuid::Uuid::new_v4());
    let s = Server::start_with(proxy.endpoint(), tempfile::tempdir().expect("dir"), prefix).await;
    let (code, body) = s.post("/api/v1/namespaces/default/configmaps", &cm("before", "1")).await;
    assert_eq!(code, 201, "{body}");

    let before = proxy.accepted();
    proxy.cut();
    // Requests in flight when the connection broke may fail; a fresh name per attempt keeps
    // a create that reached etcd before the cut from answering 409 to the next try.
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    let created = std::sync::Mutex::new(None::<String>);
    let (s, attempt, created_ref) = (&s, &attempt, &created);
    component_base::testing::eventually("a create after the cut", Duration::from_secs(20), || async move {
        let name = format!("after-{}", attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (code, _) = s.post("/api/v1/namespaces/default/configmaps", &cm(&name, "1")).await;
        if code == 201 {
            *created_ref.lock().expect("created") = Some(name);
        }
        code == 201
    })
    .await;
    assert!(proxy.accepted() > before, "the apiserver never dialed etcd again");
    let name = created.lock().expect("created").clone().expect("a name");
    let name = name.as_str();
    // The watch cache lost its etcd watch with the connection: it re-lists and serves the
    // object written after the cut.
    component_base::testing::eventually("the cached list has the new object", Duration::from_secs(20), || async move {
        let (code, list) = s.get("/api/v1/namespaces/default/configmaps?resourceVersion=0").await;
        code == 200 && list["items"].as_array().is_some_and(|items| items.iter().any(|i| i["metadata"]["name"] == name))
    })
    .await;
    // Creating an existing object is still refused after the redial.
    let (code, body) = s.post("/api/v1/namespaces/default/configmaps", &cm("before", "2")).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["reason"], "AlreadyExists");
}
