//! The sync benchmark behind `hack/bench/proxy.sh` (ignored in normal test runs): for 1,000
//! and 10,000 ClusterIP Services with 2 endpoints each, loaded through a real apiserver (on a
//! real etcd) and programmed by the whole proxy as in production (watches → tracker → sync
//! loop → `iptables-restore` into a fresh network namespace):
//!   - the proxy's first full sync (its `kubeproxy_sync_full_proxy_rules_duration_seconds`)
//!     next to a bare `iptables-restore` of the same text into another fresh namespace; where
//!     the bare restore takes under 5 s, the median of 5 of each, taken in turns, every one
//!     into a fresh namespace (the proxy restarted each time);
//!   - a one-endpoint change written through the API with upstream's trigger-time annotation
//!     set to the write time, timed from the write to the end of the restore that commits it
//!     (the proxy's `kubeproxy_network_programming_duration_seconds`), next to a bare restore
//!     of the same partial text (median of 5 rounds).
//!
//! `BENCH_BACKEND=legacy|nft` picks the iptables backend; `BENCH_SIZES=1000,10000` the sizes.
//! Prints a markdown table; `BENCH_OUT=<file>` also appends the rows there. Needs root.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use component_base::testing::{free_port, Etcd};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use rkube_proxy::iptables::render::{missing_jumps, render, render_tables, RenderConfig, Rendered};
use rkube_proxy::iptables::{Backend, Iptables, Real};
use rkube_proxy::tracker::{ServiceKey, Tracker, LAST_CHANGE_TRIGGER_TIME};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{sample, scrape};

const NS: &str = "default";
/// Creates in flight while loading: enough to keep etcd's batching busy, few enough not to
/// queue inside the apiserver.
const LOAD_CONCURRENCY: usize = 32;
/// The proxy's `--min-sync-period` (upstream's default); rounds start after it has passed so
/// the rate limit is not part of a measured change.
const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);
/// A bare full restore quicker than this is repeated: the full-sync columns are then the median
/// of `FULL_SAMPLES` runs on each side.
const REPEAT_BELOW: Duration = Duration::from_secs(5);
const FULL_SAMPLES: usize = 5;

struct Netns(String);

impl Netns {
    fn create(tag: &str) -> anyhow::Result<Netns> {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("rkpb-{tag}-{}-{nanos:x}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status()?;
        anyhow::ensure!(st.success(), "ip netns add {name}");
        Ok(Netns(name))
    }

    fn prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.0.clone()]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The i-th address of a /16, skipping .0 and .255.
fn addr(prefix: &str, i: usize) -> String {
    format!("{prefix}.{}.{}", i / 250, i % 250 + 1)
}

fn service(i: usize) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": NS},
        "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))?)
}

fn slice(i: usize, ips: [String; 2], trigger: Option<SystemTime>) -> anyhow::Result<EndpointSlice> {
    let mut v = json!({
        "metadata": {"name": format!("svc-{i}-abc"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    });
    if let Some(t) = trigger {
        let stamp = chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        v["metadata"]["annotations"] = json!({ LAST_CHANGE_TRIGGER_TIME: stamp });
    }
    Ok(serde_json::from_value(v)?)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median, with the range when there is more than one sample: `113 ms (98–130)`.
fn spread(v: &[Duration]) -> String {
    let (min, max) = (v.iter().min(), v.iter().max());
    match (min, max) {
        (Some(min), Some(max)) if v.len() > 1 => {
            format!("{} ({:.0}–{:.0})", ms(median(v.to_vec())), min.as_secs_f64() * 1000.0, max.as_secs_f64() * 1000.0)
        }
        _ => ms(median(v.to_vec())),
    }
}

async fn timed<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<Duration, E> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}

/// The whole proxy programming its own fresh namespace.
struct Proxy {
    metrics: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    // Dropped (deleted) after the proxy stopped: see `stop`.
    _ns: Netns,
}

impl Proxy {
    /// Starts the proxy and waits for its first full sync, whose metrics it returns.
    async fn start(
        backend: Backend,
        kubeconfig: &Path,
        parent: &CancellationToken,
    ) -> anyhow::Result<(Proxy, Scraped)> {
        let ns = Netns::create("proxy")?;
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let opts = rkube_proxy::Options::try_parse_from([
            "rkube-proxy",
            "--kubeconfig",
            kubeconfig.to_str().ok_or_else(|| anyhow::anyhow!("kubeconfig path"))?,
            "--hostname-override",
            "node1",
            "--cluster-cidr",
            "198.18.0.0/16",
            "--min-sync-period",
            "1s",
            // No periodic full resync during the run: on nf_tables one takes over a minute at
            // 10,000 services and would hold up the measured change.
            "--sync-period",
            "1h",
            "--metrics-bind-address",
            &metrics.to_string(),
            "--healthz-bind-address",
            "127.0.0.1:0",
        ])?;
        let cancel = parent.child_token();
        let ipt = Real::new(backend).with_prefix(ns.prefix());
        let task = tokio::spawn(rkube_proxy::run_with(opts, ipt, cancel.clone()));
        let proxy = Proxy { metrics, cancel, task, _ns: ns };
        let m = wait_metrics(metrics, Duration::from_secs(900), "the first full sync", |m| m.full_count >= 1.0).await?;
        anyhow::ensure!(m.full_count == 1.0 && m.partial_count == 0.0, "one full sync expected first: {m:?}");
        Ok((proxy, m))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task.await??;
        Ok(())
    }
}

/// The proxy's metrics this benchmark reads, from one scrape.
#[derive(Debug, Clone, Copy)]
struct Scraped {
    full_count: f64,
    full_sum: f64,
    partial_count: f64,
    partial_sum: f64,
    npl_count: f64,
    npl_sum: f64,
    last_sync: f64,
}

async fn read_metrics(addr: SocketAddr) -> anyhow::Result<Scraped> {
    let body = scrape(addr).await?;
    let get = |name: &str| sample(&body, name).ok_or_else(|| anyhow::anyhow!("{name} missing"));
    Ok(Scraped {
        full_count: get("kubeproxy_sync_full_proxy_rules_duration_seconds_count")?,
        full_sum: get("kubeproxy_sync_full_proxy_rules_duration_seconds_sum")?,
        partial_count: get("kubeproxy_sync_partial_proxy_rules_duration_seconds_count")?,
        partial_sum: get("kubeproxy_sync_partial_proxy_rules_duration_seconds_sum")?,
        npl_count: get("kubeproxy_network_programming_duration_seconds_count")?,
        npl_sum: get("kubeproxy_network_programming_duration_seconds_sum")?,
        last_sync: get("kubeproxy_sync_proxy_rules_last_timestamp_seconds")?,
    })
}

/// Scrapes until `done` holds (every 10 ms, the values come from the proxy, not from the
/// polling), or fails after `timeout`.
async fn wait_metrics(
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Scraped) -> bool,
) -> anyhow::Result<Scraped> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(m) = read_metrics(addr).await {
            if done(&m) {
                return Ok(m);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn one_size(backend: Backend, n: usize) -> anyhow::Result<String> {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let kubeconfig = server.kubeconfig();
    let client = rkube_proxy::client(Some(&kubeconfig)).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);

    let load = Instant::now();
    let pp = PostParams::default();
    futures::stream::iter(0..n)
        .map(|i| {
            let (services, slices, pp) = (&services, &slices, &pp);
            async move {
                services.create(pp, &service(i)?).await?;
                slices.create(pp, &slice(i, [addr("198.18", 2 * i), addr("198.18", 2 * i + 1)], None)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(LOAD_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    eprintln!("{backend:?} {n}: loaded {n} services and slices through the API in {:?}", load.elapsed());

    // What the proxy will see (the `kubernetes` Service included), listed with its selector.
    let selector =
        ListParams::default().labels("!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless");
    let mut mirror = Tracker::new();
    for s in Api::<Service>::all(client.clone()).list(&selector).await?.items {
        mirror.apply_service(&s);
    }
    for s in Api::<EndpointSlice>::all(client.clone()).list(&selector).await?.items {
        mirror.apply_slice(&s);
    }
    mirror.take_changed();
    let cfg =
        RenderConfig { node_name: "node1".into(), cluster_cidr: Some("198.18.0.0/16".into()), ..Default::default() };
    // Exactly what the proxy's first sync restores into its fresh namespace: every rule, no
    // chain to delete, and all the jump rules from the built-in chains.
    let jumps: Vec<_> = ["filter", "nat"].iter().flat_map(|t| missing_jumps(t, "")).collect();
    let full = render_tables(&cfg, &mirror, None).finish(&[], &jumps);

    // The first pair of samples; more pairs when a bare restore is cheap, each side into a fresh
    // namespace, taken in turns so that a change in the machine's load meets both sides alike.
    let mut bare_ns = Netns::create("bare")?;
    let mut bare = Real::new(backend).with_prefix(bare_ns.prefix());
    let mut bare_full = vec![timed(bare.restore(&full.text, true)).await?];
    let proxy_cancel = server.cancel.child_token();
    let (mut proxy, mut m) = Proxy::start(backend, &kubeconfig, &proxy_cancel).await?;
    let mut proxy_full = vec![Duration::from_secs_f64(m.full_sum)];
    let samples = if bare_full[0] < REPEAT_BELOW { FULL_SAMPLES } else { 1 };
    for _ in 1..samples {
        bare_ns = Netns::create("bare")?;
        bare = Real::new(backend).with_prefix(bare_ns.prefix());
        bare_full.push(timed(bare.restore(&full.text, true)).await?);
        proxy.stop().await?;
        (proxy, m) = Proxy::start(backend, &kubeconfig, &proxy_cancel).await?;
        proxy_full.push(Duration::from_secs_f64(m.full_sum));
    }
    eprintln!("{backend:?} {n}: bare full restores {bare_full:?}, proxy full syncs {proxy_full:?}");
    let metrics = proxy.metrics;

    let (mut bare_part, mut proxy_part, mut api_part) = (Vec::new(), Vec::new(), Vec::new());
    let mut active = full.active_nat_chains.clone();
    let mut current = slices.get("svc-0-abc").await?;
    for round in 0..5 {
        // Move svc-0's second endpoint back and forth: one endpoint changes per round.
        let second = if round % 2 == 0 { addr("198.18", 2 * n + 1) } else { addr("198.18", 1) };
        let ips = [addr("198.18", 0), second];
        // The bare side restores exactly what the proxy's partial sync will.
        mirror.apply_slice(&slice(0, ips.clone(), None)?);
        let r = render(&cfg, &mirror, Some(&BTreeSet::from([ServiceKey::new(NS, "svc-0")])), &active);
        mirror.take_changed();
        active = r.active_nat_chains;

        // Let --min-sync-period since the last sync pass, so the rate limit is not measured.
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(m.last_sync);
        let wait = (since + MIN_SYNC_PERIOD + Duration::from_millis(100))
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;

        let written = SystemTime::now();
        let mut changed = slice(0, ips, Some(written))?;
        changed.metadata.resource_version = current.metadata.resource_version.clone();
        current = slices.replace("svc-0-abc", &pp, &changed).await?;
        let before = m;
        m = wait_metrics(metrics, Duration::from_secs(120), "the change's commit", |x| x.npl_count > before.npl_count)
            .await?;
        anyhow::ensure!(
            m.npl_count == before.npl_count + 1.0 && m.partial_count == before.partial_count + 1.0,
            "one partial sync with one change expected: {before:?} → {m:?}"
        );
        api_part.push(Duration::from_secs_f64(m.npl_sum - before.npl_sum));
        proxy_part.push(Duration::from_secs_f64(m.partial_sum - before.partial_sum));

        let start = Instant::now();
        bare.restore(&r.text, true).await?;
        bare_part.push(start.elapsed());
    }
    proxy.stop().await?;
    drop(bare_ns);
    server.stop().await;

    let (bare_part, proxy_part, api_part) = (median(bare_part), median(proxy_part), median(api_part));
    let ratio = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64());
    let (bare_med, proxy_med) = (median(bare_full.clone()), median(proxy_full.clone()));
    Ok(format!(
        "| {backend:?} | {n} | {} | {samples} | {} | {} | {} | {} | {} | {} | {} |",
        full.nat_rules + full.filter_rules,
        spread(&bare_full),
        spread(&proxy_full),
        ratio(proxy_med, bare_med),
        ms(bare_part),
        ms(proxy_part),
        ms(api_part),
        ratio(api_part, bare_part),
    ))
}

fn sizes() -> anyhow::Result<Vec<usize>> {
    Ok(std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?)
}

/// The proxy's own share of a full sync without the kernel: the render of the state the
/// benchmark loads (ClusterIP Services with 2 endpoints, cluster IPs set here since no
/// apiserver allocates them), median of 21 full renders and of 21 one-service partial renders.
/// Needs no root: `<test binary> --ignored --exact sync_bench::render_only --nocapture`.
#[test]
#[ignore = "benchmark: the render alone"]
fn render_only() -> anyhow::Result<()> {
    for n in sizes()? {
        let mut t = Tracker::new();
        for i in 0..n {
            let mut svc = service(i)?;
            if let Some(spec) = svc.spec.as_mut() {
                spec.cluster_ip = Some(addr("198.19", i));
            }
            t.apply_service(&svc);
            t.apply_slice(&slice(i, [addr("198.18", 2 * i), addr("198.18", 2 * i + 1)], None)?);
        }
        t.take_changed();
        let cfg = RenderConfig {
            node_name: "node1".into(),
            cluster_cidr: Some("198.18.0.0/16".into()),
            ..Default::default()
        };
        let full = render(&cfg, &t, None, &BTreeSet::new());
        // Per service: the KUBE-SERVICES jump, the masquerade rule, two endpoint jumps, two
        // rules in each of the two KUBE-SEP chains.
        anyhow::ensure!(full.nat_rules == 8 * n + 5, "{} nat rules for {n} services", full.nat_rules);
        let changed = BTreeSet::from([ServiceKey::new(NS, "svc-0")]);
        let time = |f: &dyn Fn() -> Rendered| {
            median(
                (0..21)
                    .map(|_| {
                        let start = Instant::now();
                        std::hint::black_box(f());
                        start.elapsed()
                    })
                    .collect(),
            )
        };
        let full_time = time(&|| render(&cfg, &t, None, &full.active_nat_chains));
        let partial_time = time(&|| render(&cfg, &t, Some(&changed), &full.active_nat_chains));
        println!(
            "render, {n} services: {} rules, {:.2} MB; full {:.2} ms, one-service partial {:.2} ms",
            full.nat_rules + full.filter_rules,
            full.text.len() as f64 / 1e6,
            full_time.as_secs_f64() * 1000.0,
            partial_time.as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hack/bench/proxy.sh"]
async fn proxy_sync() -> anyhow::Result<()> {
    anyhow::ensure!(rustix::process::geteuid().is_root(), "needs root");
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("legacy") => Backend::Legacy,
        _ => Backend::Nft,
    };
    let mut rows = Vec::new();
    for n in sizes()? {
        let row = one_size(backend, n).await?;
        println!("{row}");
        rows.push(row);
    }
    if let Ok(out) = std::env::var("BENCH_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
        for r in rows {
            writeln!(f, "{r}")?;
        }
    }
    Ok(())
}
