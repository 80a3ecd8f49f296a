//! The pod startup benchmark behind `hack/bench/pod-startup.sh` (ignored in normal test runs):
//! on one `support::TestCluster` node, with the images present,
//!
//! 1. raw CRI: RunPodSandbox + CreateContainer + StartContainer called directly, one pod at
//!    a time, with the least a pod needs (identity, log path, cgroup parent, namespaces; no
//!    DNS config or mounts), before the kubelet runs; the pods are removed afterwards;
//! 2. the kubelet: pods created through the API with `nodeName` set, one at a time, each timed
//!    from the create call to the watch event that shows it Running and Ready;
//! 3. the kubelet's RSS (VmRSS) idle with 0 pods and with 30.
//!
//! It prints a markdown table; `BENCH_OUT=<file>` also writes it there.

use std::time::{Duration, Instant};

use crate::support::{ensure_images, is_root, wait_for, TestCluster, TestResult};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use rkube_kubelet::runtime::{api, image_spec, ContainerRuntime};
use serde_json::json;

const PODS: usize = 50;
const RSS_AT: usize = 30;

fn pod(name: &str, node: &str) -> TestResult<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    }))?)
}

/// The least sandbox config a pod needs (what tests/cri.rs sends too).
fn raw_sandbox(i: usize, cluster: &TestCluster) -> api::PodSandboxConfig {
    let (name, uid) = (format!("raw-{i}"), format!("raw-uid-{i}"));
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: cluster.node.dir.join(format!("logs/default_{name}_{uid}")).to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/kubepods/pod{uid}", cluster.node.cgroup_parent),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn raw_container() -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "c".into(), attempt: 0 }),
        image: Some(image_spec("docker.io/library/busybox:1.36")),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "c/0.log".into(),
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// RSS after the kubelet has had `settle` to go idle (a benchmark's settling time, not a wait
/// for a condition).
async fn idle_rss(pid: u32, settle: Duration) -> u64 {
    tokio::time::sleep(settle).await;
    rss_kib(pid)
}

async fn bench(cluster: &mut TestCluster) -> TestResult<String> {
    let node_name = cluster.node.name.clone();
    let cri = cluster.node.wait_ready().await?;

    // 1. raw CRI, one pod at a time, plus one warm-up pod not counted
    let mut raw = Vec::new();
    for i in 0..=PODS {
        let sc = raw_sandbox(i, cluster);
        let started = Instant::now();
        let sb = cri.run_pod_sandbox(sc.clone(), "").await?;
        let id = cri.create_container(&sb, raw_container(), sc).await?;
        cri.start_container(&id).await?;
        if i > 0 {
            raw.push(started.elapsed());
        }
    }
    for sb in cri.list_pod_sandbox(None).await? {
        cri.stop_pod_sandbox(&sb.id).await?;
        cri.remove_pod_sandbox(&sb.id).await?;
    }
    raw.sort();

    // 2. the kubelet
    cluster.start_kubelet()?;
    let pid = cluster.kubelet_pid().ok_or("no kubelet")?;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    wait_for("the node to be Ready", Duration::from_secs(60), || async {
        let n = nodes.get_opt(&node_name).await.ok().flatten()?;
        let ready = n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await?;
    let rss_0 = idle_rss(pid, Duration::from_secs(5)).await;

    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    // One watch for all pods: each pod's first event showing Running + Ready is its end time.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let w = pods.clone();
    let watch = tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut stream = watcher(w, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else { continue };
            let st = p.status.clone().unwrap_or_default();
            let ready = st.conditions.unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let name = p.metadata.name.clone().unwrap_or_default();
            if st.phase.as_deref() == Some("Running") && ready && seen.insert(name.clone()) {
                let _ = tx.send((name, Instant::now()));
            }
        }
    });
    let mut kubelet = Vec::new();
    let mut rss_30 = 0;
    for i in 0..=PODS {
        let name = format!("pod-{i}");
        let p = pod(&name, &node_name)?;
        let started = Instant::now();
        pods.create(&PostParams::default(), &p).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let done = loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((n, at))) if n == name => break at,
                Ok(Some(_)) => continue,
                _ => return Err(format!("{name} not Running and Ready within 60 s").into()),
            }
        };
        if i > 0 {
            kubelet.push(done - started);
        }
        if i == RSS_AT {
            rss_30 = idle_rss(pid, Duration::from_secs(5)).await;
        }
    }
    watch.abort();
    kubelet.sort();

    let (raw50, raw99) = (percentile(&raw, 50.0), percentile(&raw, 99.0));
    let (k50, k99) = (percentile(&kubelet, 50.0), percentile(&kubelet, 99.0));
    let ratio = k50.as_secs_f64() / raw50.as_secs_f64().max(1e-9);
    let mut t = String::new();
    t.push_str("| measure | p50 | p99 | max | target |\n|---|---|---|---|---|\n");
    t.push_str(&format!(
        "| raw CRI: RunPodSandbox + CreateContainer + StartContainer ({PODS} pods, one at a time) | {} | {} | {} | |\n",
        ms(raw50),
        ms(raw99),
        ms(*raw.last().unwrap_or(&Duration::ZERO))
    ));
    t.push_str(&format!(
        "| kubelet: create with nodeName → Running and Ready seen by a watch ({PODS} pods, one at a time) | {} | {} | {} | p50 ≤ 1.5× raw ({:.2}×: {}), p99 < 2 s ({}) |\n",
        ms(k50),
        ms(k99),
        ms(*kubelet.last().unwrap_or(&Duration::ZERO)),
        ratio,
        if ratio <= 1.5 { "met" } else { "missed" },
        if k99 < Duration::from_secs(2) { "met" } else { "missed" },
    ));
    t.push_str(&format!("\n| kubelet RSS (VmRSS, idle 5 s) | value | target |\n|---|---|---|\n| 0 pods | {:.1} MiB | |\n| {RSS_AT} pods | {:.1} MiB | < 25 MiB ({}) |\n",
        rss_0 as f64 / 1024.0,
        rss_30 as f64 / 1024.0,
        if rss_30 < 25 * 1024 { "met" } else { "missed" },
    ));
    Ok(t)
}

#[test]
#[ignore = "a benchmark: run by hack/bench/pod-startup.sh"]
fn pod_startup() -> TestResult {
    if !is_root() {
        return Err("the benchmark needs root (network namespaces, mounts, cgroups)".into());
    }
    let archives = ensure_images()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cluster = rt.block_on(TestCluster::start(&archives))?;
    let result = rt.block_on(bench(&mut cluster));
    drop(cluster);
    drop(rt);
    let table = result?;
    println!("{table}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, &table)?;
    }
    Ok(())
}
