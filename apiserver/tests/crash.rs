//! `kill -9` of the apiserver process during a stream of creates: after a restart every
//! create that was answered 201 is there, and nothing is half-written (each stored object is
//! complete, and every Service's IP allocation exists exactly when its Service does).

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;
use crate::support::Etcd;
use serde_json::{json, Value};

fn spawn_apiserver(etcd: &str, cert_dir: &std::path::Path, port: u16) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkube-apiserver"));
    cmd.args([
        "--etcd-servers",
        etcd,
        "--etcd-prefix",
        "/registry-crash",
        "--secure-port",
        &port.to_string(),
        "--cert-dir",
        cert_dir.to_str().expect("utf-8"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    component_base::testing::die_with_parent(&mut cmd);
    cmd.spawn().expect("apiserver binary")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    assert!(
        support::wait_for(Duration::from_secs(30), || async {
            client.get(format!("{base}/readyz")).send().await.map(|r| r.status().is_success()).unwrap_or(false)
        })
        .await,
        "apiserver not ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_creates_loses_no_acknowledged_write() {
    let etcd = Etcd::start();
    let cert_dir = tempfile::tempdir().expect("dir");
    // Picked before the server binds it (twice: it restarts on the same port).
    let port = component_base::testing::free_port();
    let base = format!("https://127.0.0.1:{port}");
    let mut server = spawn_apiserver(&etcd.endpoint, cert_dir.path(), port);
    // The certificates exist once the server answered.
    assert!(support::wait_for(Duration::from_secs(30), || async { cert_dir.path().join("admin.key").exists() }).await);
    let client = support::admin_client(cert_dir.path());
    wait_ready(&client, &base).await;

    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let client = client.clone();
        let base = base.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let (kind, body) = if i % 3 == 0 {
                    ("services", json!({"metadata": {"name": format!("s-{w}-{i}")}, "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}}))
                } else {
                    ("configmaps", json!({"metadata": {"name": format!("c-{w}-{i}")}, "data": {"k": "v".repeat(512)}}))
                };
                let r = client.post(format!("{base}/api/v1/namespaces/default/{kind}")).json(&body).send().await;
                match r {
                    Ok(r) if r.status() == 201 => {
                        let name = body["metadata"]["name"].as_str().expect("name").to_string();
                        acked.lock().expect("lock").push((kind.to_string(), name));
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().expect("kill -9");
    server.wait().expect("reaped");
    for t in tasks {
        t.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "too few creates before the kill: {}", acked.len());

    let mut server = spawn_apiserver(&etcd.endpoint, cert_dir.path(), port);
    wait_ready(&client, &base).await;
    let mut present: HashSet<(String, String)> = HashSet::new();
    let mut service_ips = HashSet::new();
    for kind in ["configmaps", "services"] {
        let list: Value = client
            .get(format!("{base}/api/v1/namespaces/default/{kind}"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        for item in list["items"].as_array().expect("items") {
            let name = item["metadata"]["name"].as_str().expect("name").to_string();
            assert!(item["metadata"]["uid"].is_string() && item["metadata"]["creationTimestamp"].is_string(), "{item}");
            if kind == "services" && name != "kubernetes" {
                service_ips.insert(item["spec"]["clusterIP"].as_str().expect("clusterIP").to_string());
            }
            present.insert((kind.to_string(), name));
        }
    }
    for a in &acked {
        assert!(present.contains(a), "{a:?} was acknowledged with 201 but is gone");
    }
    // Allocations live and die with their Service: no orphan, no missing one.
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.expect("etcd");
    let resp = raw
        .get("/registry-crash/ranges/serviceips/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("range");
    let allocated: HashSet<String> = resp
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf-8").rsplit('/').next().expect("ip").to_string())
        .filter(|ip| !ip.ends_with(".1"))
        .collect();
    let service_ips: HashSet<String> = service_ips.into_iter().filter(|ip| !ip.ends_with(".1")).collect();
    assert_eq!(allocated, service_ips);
    // Every stored value is a complete JSON object.
    let all = raw.get("/registry-crash/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("range");
    for kv in all.kvs() {
        let v: Result<Value, _> = serde_json::from_slice(kv.value());
        assert!(v.is_ok(), "half-written value at {}", kv.key_str().unwrap_or("?"));
    }
    server.kill().expect("kill");
    server.wait().expect("reaped");
}
