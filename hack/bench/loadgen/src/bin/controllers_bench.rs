//! rkube-controllers-bench: the load behind `hack/bench/controllers.sh`, against one running
//! rkube-apiserver: N Node objects (no kubelets) and a simple binder in this process (it lists
//! pending pods every 20 ms, binds the unbound ones round-robin through `pods/binding` and marks them
//! Running and Ready through `pods/status` at once, 32 at a time), then with
//! rkube-controller-manager (started here, a release build):
//!
//! 1. its RSS idle;
//! 2. a Deployment of 1,000 replicas: time until 1,000 pods exist and are bound;
//! 3. a rolling update of it (new image, 25%/25%): time until the Deployment is complete;
//! 4. scaled to 10,000 replicas, all bound and ready: its RSS then.
//!
//! Prints one markdown table row on stdout, progress on stderr.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rkube_bench::api::Api;
use rkube_bench::stats::{mib, ms};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Opts {
    #[arg(long)]
    apiserver: String,
    #[arg(long)]
    cert_dir: PathBuf,
    #[arg(long)]
    controller_manager_bin: PathBuf,
    #[arg(long)]
    controller_manager_log: PathBuf,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    #[arg(long, default_value_t = 10000)]
    big: usize,
}

const NS: &str = "default";

async fn patch(api: &Api, path: &str, ct: &str, body: Value) -> anyhow::Result<reqwest::StatusCode> {
    let r = api.client.patch(api.url(path)).header("content-type", ct).body(body.to_string()).send().await?;
    Ok(r.status())
}

/// Binds every unbound pod and marks it ready; counts bindings.
async fn binder(api: Arc<Api>, nodes: usize, bound: Arc<AtomicUsize>, stop: tokio_util::sync::CancellationToken) {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut next = 0usize;
    let mut ip = 0u32;
    while !stop.is_cancelled() {
        // Pending pods: unbound ones get bound, then every one is marked Running and Ready
        // (a failed status write is simply retried on the next pass).
        let list = api.get_json(&format!("/api/v1/namespaces/{NS}/pods?fieldSelector=status.phase%3DPending")).await;
        let items = list.ok().and_then(|v| v["items"].as_array().cloned()).unwrap_or_default();
        let mut tasks = tokio::task::JoinSet::new();
        for p in items {
            if !p["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let unbound = p["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
            let node = format!("bench-node-{}", next % nodes);
            next += 1;
            ip += 1;
            let addr = format!("198.18.{}.{}", (ip / 250) % 250, ip % 250 + 1);
            let (api, sem, bound) = (api.clone(), sem.clone(), bound.clone());
            tasks.spawn(async move {
                let Ok(_permit) = sem.acquire().await else { return };
                if unbound {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                    let r = api
                        .client
                        .post(api.url(&format!("/api/v1/namespaces/{NS}/pods/{name}/binding")))
                        .header("content-type", "application/json")
                        .body(binding.to_string())
                        .send()
                        .await;
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        return;
                    }
                    bound.fetch_add(1, Ordering::Relaxed);
                }
                let now = rkube_bench::api::unix_nanos() / 1_000_000_000;
                let now = chrono_like(now);
                let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let status = json!({"status": {"phase": "Running", "podIP": addr, "podIPs": [{"ip": addr}],
                    "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")]}});
                let _ = patch(&api, &format!("/api/v1/namespaces/{NS}/pods/{name}/status"), "application/merge-patch+json", status)
                    .await;
            });
        }
        while tasks.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// RFC 3339 for a unix second (UTC), without a date library.
fn chrono_like(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

async fn deployment_done(api: &Api, replicas: usize) -> anyhow::Result<bool> {
    let d = api.get_json(&format!("/apis/apps/v1/namespaces/{NS}/deployments/bench")).await?;
    let st = &d["status"];
    let n = replicas as i64;
    Ok(st["observedGeneration"].as_i64() >= d["metadata"]["generation"].as_i64()
        && st["updatedReplicas"].as_i64() == Some(n)
        && st["replicas"].as_i64() == Some(n)
        && st["availableReplicas"].as_i64() == Some(n))
}

async fn wait<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while !f().await.unwrap_or(false) {
        if start.elapsed() > timeout {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let api = Arc::new(Api::new(&opts.apiserver, &opts.cert_dir)?);
    api.wait_ready(Duration::from_secs(30)).await?;
    let client = api.new_client(Some(Duration::from_secs(60)))?;
    for i in 0..opts.nodes {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("bench-node-{i}")}});
        api.create(&client, "/api/v1/nodes", node.to_string()).await?;
    }
    eprintln!("== {} nodes", opts.nodes);
    let log = std::fs::File::create(&opts.controller_manager_log).context("controller-manager log")?;
    let mut cmd = Command::new(&opts.controller_manager_bin);
    // Killed with the bench, also when the bench itself is killed (no stray process).
    component_base::testing::die_with_parent(&mut cmd);
    let mut cm = cmd
        .args(["--kubeconfig", opts.cert_dir.join("admin.kubeconfig").to_str().unwrap_or_default()])
        .args(["--bind-address", "127.0.0.1:0", "--leader-elect=false", "--controllers=*,-nodelifecycle,-podgc"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting rkube-controller-manager")?;
    let pid = cm.id();
    let result = measure(&opts, api.clone(), pid).await;
    let _ = cm.kill();
    let _ = cm.wait();
    let row = result?;
    println!("{row}");
    Ok(())
}

async fn measure(opts: &Opts, api: Arc<Api>, pid: u32) -> anyhow::Result<String> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rkube_bench::rss::read(pid).await?.current;
    eprintln!("== controller-manager idle RSS {}", mib(idle));

    let bound = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let binder_task = tokio::spawn(binder(api.clone(), opts.nodes, bound.clone(), stop.clone()));
    let client = api.new_client(Some(Duration::from_secs(60)))?;
    let deploy = |replicas: usize, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bench"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
                        "template": {"metadata": {"labels": {"app": "bench"}},
                                     "spec": {"containers": [{"name": "c", "image": image}]}}}})
    };
    let n = opts.replicas;
    let start = Instant::now();
    api.create(&client, &format!("/apis/apps/v1/namespaces/{NS}/deployments"), deploy(n, "v1").to_string()).await?;
    let b = bound.clone();
    wait("pods bound", Duration::from_secs(300), || {
        let b = b.clone();
        async move { Ok(b.load(Ordering::Relaxed) >= n) }
    })
    .await?;
    let created_bound = start.elapsed();
    eprintln!("== {n} pods created and bound in {}", ms(created_bound));
    wait("rollout 1", Duration::from_secs(300), || deployment_done(&api, n)).await?;

    let start = Instant::now();
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}});
    patch(
        &api,
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/bench"),
        "application/strategic-merge-patch+json",
        image,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait("rolling update", Duration::from_secs(600), || deployment_done(&api, n)).await?;
    let rolling = start.elapsed();
    eprintln!("== rolling update of {n} in {}", ms(rolling));

    let big = opts.big;
    let scale = json!({"spec": {"replicas": big}});
    patch(&api, &format!("/apis/apps/v1/namespaces/{NS}/deployments/bench"), "application/merge-patch+json", scale)
        .await?;
    wait("big deployment", Duration::from_secs(900), || deployment_done(&api, big)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_big = rkube_bench::rss::read(pid).await?;
    eprintln!("== controller-manager RSS at {big} pods {} (peak {})", mib(at_big.current), mib(at_big.peak));
    stop.cancel();
    let _ = binder_task.await;
    Ok(format!(
        "| {n} replicas, {} nodes | {} | {} | {} | {} (peak {}) |",
        opts.nodes,
        ms(created_bound),
        ms(rolling),
        mib(idle),
        mib(at_big.current),
        mib(at_big.peak)
    ))
}
