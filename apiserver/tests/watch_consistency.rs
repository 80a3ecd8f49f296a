//! 8 writers update 200 objects while 50 watchers watch from one revision: every watcher sees
//! exactly etcd's sequence of changes (no gap, no duplicate, same order). After compaction,
//! a watch from a revision older than the cache's window gets 410 Expired.

use std::time::Duration;

use crate::support;
use crate::support::Etcd;
use futures::StreamExt;
use serde_json::{json, Value};

const OBJECTS: usize = 200;
const WRITERS: usize = 8;
const ROUNDS: usize = 4;
const WATCHERS: usize = 50;

async fn collect(client: reqwest::Client, url: String, want: usize) -> Vec<(String, i64, String)> {
    let resp = client.get(url).send().await.expect("watch");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < want {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await else { break };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: Value = serde_json::from_slice(&line).expect("event");
            let rv = ev["object"]["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse().unwrap_or(0);
            let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("").to_string();
            out.push((name, rv, ev["type"].as_str().unwrap_or("").to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_see_exactly_etcds_sequence() {
    let etcd = Etcd::start();
    let cert_dir = tempfile::tempdir().expect("dir");
    let prefix = "/registry-consistency".to_string();
    let mut opts = support::options(&etcd.endpoint, cert_dir.path(), &prefix);
    opts.default_watch_cache_size = 100;
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = rkube_apiserver::start(opts, cancel.clone()).await.expect("starts");
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    let client = support::admin_client(cert_dir.path());
    let cm = format!("{base}/api/v1/namespaces/default/configmaps");
    assert!(
        support::wait_for(Duration::from_secs(20), || async {
            client.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success()).unwrap_or(false)
        })
        .await
    );

    for i in 0..OBJECTS {
        let r = client
            .post(&cm)
            .json(&json!({"metadata": {"name": format!("o{i}")}, "data": {"v": "0"}}))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
    }
    let list: Value = client.get(&cm).send().await.expect("list").json().await.expect("json");
    let start: i64 = list["metadata"]["resourceVersion"].as_str().expect("rv").parse().expect("numeric");

    let total = WRITERS * (OBJECTS / WRITERS) * ROUNDS;
    let watchers: Vec<_> = (0..WATCHERS)
        .map(|_| tokio::spawn(collect(client.clone(), format!("{cm}?watch=true&resourceVersion={start}"), total)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let cm = cm.clone();
            tokio::spawn(async move {
                for round in 1..=ROUNDS {
                    for i in (w..OBJECTS).step_by(WRITERS) {
                        let r = client
                            .patch(format!("{cm}/o{i}"))
                            .header("content-type", "application/merge-patch+json")
                            .body(json!({"data": {"v": format!("{round}")}}).to_string())
                            .send()
                            .await
                            .expect("patch");
                        assert_eq!(r.status(), 200);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }

    // etcd's own history of the same keys, from the same revision.
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.expect("etcd");
    let key = format!("{prefix}/configmaps/default/");
    let mut stream = raw
        .watch(key.as_str(), Some(etcd_client::WatchOptions::new().with_prefix().with_start_revision(start + 1)))
        .await
        .expect("etcd watch");
    let mut truth = Vec::new();
    while truth.len() < total {
        let resp = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("etcd events")
            .expect("ok")
            .expect("open");
        for ev in resp.events() {
            let kv = ev.kv().expect("kv");
            let name = kv.key_str().expect("utf-8").rsplit('/').next().expect("name").to_string();
            truth.push((name, kv.mod_revision(), "MODIFIED".to_string()));
        }
    }
    assert_eq!(truth.len(), total);
    for (i, w) in watchers.into_iter().enumerate() {
        let seen = w.await.expect("watcher");
        assert_eq!(seen.len(), total, "watcher {i} saw {} of {total} events", seen.len());
        assert!(
            seen == truth,
            "watcher {i} diverged from etcd at {:?}",
            seen.iter().zip(&truth).position(|(a, b)| a != b)
        );
    }

    // The 1,000 updates pushed `start` out of the 100-event window; once etcd compacts it,
    // a watch from it is 410 Expired.
    let current = raw.get("x", None).await.expect("get").header().expect("header").revision();
    raw.compact(current, None).await.expect("compact");
    let resp = client.get(format!("{cm}?watch=true&resourceVersion={start}")).send().await.expect("watch");
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("ends").expect("body");
    let first: Value = serde_json::from_str(text.lines().next().expect("an event")).expect("json");
    assert_eq!(first["type"], "ERROR");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
    running.stop().await;
}
