//! rkube-scheduler-bench: the load behind `hack/bench/scheduler.sh`, upstream scheduler_perf's
//! SchedulingBasic shape against one running rkube-apiserver: N Node objects (4 cpu, 32 Gi,
//! 110 pods, no kubelets), then
//!
//! 1. raw binding throughput: pods no scheduler owns are created, then bound by POSTing
//!    `pods/binding` directly (round-robin over the nodes, 32 clients), then deleted;
//! 2. the scheduler (started here, a release build) binds 1,000 warm-up pods, then
//!    10,000 measured pods (100m cpu, 500 Mi each, created by 32 clients); per-pod latency is
//!    create-sent to binding-seen on a watch; throughput is pods bound per second from the
//!    first create to the last binding;
//! 3. the scheduler's RSS (now and peak).
//!
//! Prints one markdown table row on stdout, progress on stderr.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rkube_bench::api::Api;
use rkube_bench::stats::{mib, ms, Summary};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Opts {
    #[arg(long)]
    apiserver: String,
    #[arg(long)]
    cert_dir: PathBuf,
    /// The rkube-scheduler binary to start.
    #[arg(long)]
    scheduler_bin: PathBuf,
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    #[arg(long, default_value_t = 1000)]
    initial_pods: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where the scheduler's log goes.
    #[arg(long)]
    scheduler_log: PathBuf,
}

fn node(name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
    .to_string()
}

fn pod(ns: &str, name: &str, scheduler: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "schedulerName": scheduler,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
        },
    })
    .to_string()
}

/// Runs `f(i)` for i in 0..n over `clients` concurrent workers.
async fn parallel<F, Fut>(n: usize, clients: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (next, f) = (next.clone(), f.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                f(i).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

async fn post(api: &Api, path: &str, body: String) -> anyhow::Result<()> {
    api.create(&api.client, path, body).await
}

/// Pod name → when its binding was first seen.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches a namespace's pods from `rv` and records when each first shows a nodeName.
fn watch_bindings(api: &Api, ns: &str, rv: i64) -> anyhow::Result<(Seen, tokio::task::JoinHandle<()>)> {
    let client = api.new_client(None)?;
    let url = api.url(&format!("/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=false"));
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let h = tokio::spawn(async move {
        let Ok(mut resp) = client.get(url).send().await else { return };
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(ev) = serde_json::from_slice::<Value>(&line) else { continue };
                let obj = &ev["object"];
                if obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
                    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                        s.lock().expect("not poisoned").entry(name.to_string()).or_insert(now);
                    }
                }
            }
        }
    });
    Ok((seen, h))
}

async fn wait_count(
    seen: &Mutex<HashMap<String, Instant>>,
    n: usize,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = seen.lock().expect("not poisoned").len();
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: only {got} of {n} bound within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.trim_start_matches(name).trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let api = Arc::new(Api::new(&o.apiserver, &o.cert_dir)?);
    api.wait_ready(Duration::from_secs(60)).await?;
    for ns in ["bench-raw", "bench-init", "bench-sched"] {
        api.ensure_namespace(ns).await?;
    }

    eprintln!("scheduler-bench: {} nodes", o.nodes);
    let a = api.clone();
    parallel(o.nodes, o.clients, move |i| {
        let a = a.clone();
        async move { post(&a, "/api/v1/nodes", node(&format!("node-{i}"))).await }
    })
    .await?;

    // 1. Raw bindings: no scheduler owns these pods.
    eprintln!("scheduler-bench: raw bindings of {} pods", o.pods);
    let a = api.clone();
    parallel(o.pods, o.clients, move |i| {
        let a = a.clone();
        async move { post(&a, "/api/v1/namespaces/bench-raw/pods", pod("bench-raw", &format!("raw-{i}"), "nobody")).await }
    })
    .await?;
    let t = Instant::now();
    let (a, nodes) = (api.clone(), o.nodes);
    parallel(o.pods, o.clients, move |i| {
        let a = a.clone();
        async move {
            let name = format!("raw-{i}");
            let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                              "target": {"kind": "Node", "name": format!("node-{}", i % nodes)}})
            .to_string();
            post(&a, &format!("/api/v1/namespaces/bench-raw/pods/{name}/binding"), body).await
        }
    })
    .await?;
    let raw_secs = t.elapsed().as_secs_f64();
    let raw_rate = o.pods as f64 / raw_secs;
    eprintln!("scheduler-bench: raw bindings {raw_rate:.0}/s");
    let a = api.clone();
    parallel(o.pods, o.clients, move |i| {
        let a = a.clone();
        async move {
            let url = a.url(&format!("/api/v1/namespaces/bench-raw/pods/raw-{i}?gracePeriodSeconds=0"));
            let r = a.client.delete(url).send().await.context("delete")?;
            r.bytes().await.context("delete body")?;
            Ok(())
        }
    })
    .await?;

    // 2. The scheduler.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::File::create(&o.scheduler_log)?;
    let mut cmd = Command::new(&o.scheduler_bin);
    // Killed with the bench, also when the bench itself is killed (no stray process).
    component_base::testing::die_with_parent(&mut cmd);
    let mut child = cmd
        .args(["--kubeconfig", o.cert_dir.join("admin.kubeconfig").to_str().unwrap_or_default()])
        .args(["--leader-elect=false", "--port", &port.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting rkube-scheduler")?;
    let pid = child.id();
    let result = measure(&o, &api, pid).await;
    let _ = child.kill();
    let _ = child.wait();
    let (rate, lat, rss_now, rss_peak, wall) = result?;
    let half = raw_rate / 2.0;
    println!(
        "| {} nodes, {} pods present, {} measured | {:.0} pods/s ({} in {:.1} s) | p50 {}, p99 {} | {:.0} bindings/s ({} in {:.1} s) | {:.0} % | {} (peak {}) |",
        o.nodes,
        o.initial_pods,
        o.pods,
        rate,
        o.pods,
        wall,
        ms(lat.p50),
        ms(lat.p99),
        raw_rate,
        o.pods,
        raw_secs,
        100.0 * rate / raw_rate,
        mib(rss_now),
        mib(rss_peak),
    );
    eprintln!("scheduler-bench: {rate:.0} pods/s vs half of raw {half:.0}/s");
    Ok(())
}

async fn measure(o: &Opts, api: &Arc<Api>, pid: u32) -> anyhow::Result<(f64, Summary, u64, u64, f64)> {
    eprintln!("scheduler-bench: {} warm-up pods", o.initial_pods);
    let rv = api.list_rv("/api/v1/namespaces/bench-init/pods").await?;
    let (seen, h) = watch_bindings(api, "bench-init", rv)?;
    let a = api.clone();
    parallel(o.initial_pods, o.clients, move |i| {
        let a = a.clone();
        async move {
            post(&a, "/api/v1/namespaces/bench-init/pods", pod("bench-init", &format!("init-{i}"), "default-scheduler"))
                .await
        }
    })
    .await?;
    wait_count(&seen, o.initial_pods, Duration::from_secs(300), "warm-up").await?;
    h.abort();

    eprintln!("scheduler-bench: {} measured pods", o.pods);
    let rv = api.list_rv("/api/v1/namespaces/bench-sched/pods").await?;
    let (seen, h) = watch_bindings(api, "bench-sched", rv)?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (a, s) = (api.clone(), sent.clone());
    let t0 = Instant::now();
    parallel(o.pods, o.clients, move |i| {
        let (a, s) = (a.clone(), s.clone());
        async move {
            let name = format!("p-{i}");
            s.lock().expect("not poisoned").insert(name.clone(), Instant::now());
            post(&a, "/api/v1/namespaces/bench-sched/pods", pod("bench-sched", &name, "default-scheduler")).await
        }
    })
    .await?;
    wait_count(&seen, o.pods, Duration::from_secs(600), "measured").await?;
    h.abort();
    let seen = seen.lock().expect("not poisoned").clone();
    let sent = sent.lock().expect("not poisoned").clone();
    let last = seen.values().max().copied().unwrap_or(t0);
    let wall = last.duration_since(t0).as_secs_f64();
    let lat =
        Summary::of(seen.iter().filter_map(|(n, t)| sent.get(n).map(|s| t.saturating_duration_since(*s))).collect());
    let (now, peak) = rss(pid);
    Ok((o.pods as f64 / wall, lat, now, peak, wall))
}
