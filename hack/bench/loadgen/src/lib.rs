//! rkube-bench: the load generator behind `hack/bench/apiserver.sh`. Against one running
//! rkube-apiserver and the etcd under it, it measures in one run: ConfigMap create throughput
//! next to raw etcd puts, a list of every pod served from the watch cache next to a raw etcd
//! range, watch fan-out latency to many watchers next to one raw etcd watch, GET throughput
//! over keep-alive connections, and the apiserver's RSS before and after; and where the CPU
//! went in each phase. It prints markdown tables on stdout and its progress on stderr.

pub mod api;
pub mod cpu;
pub mod create;
pub mod get;
pub mod list;
pub mod load;
pub mod report;
pub mod rss;
pub mod stats;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use api::Api;
use report::Report;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-bench", about = "Load generator for rkube-apiserver (see hack/bench/apiserver.sh)")]
pub struct Options {
    /// Base URL of the apiserver (https://127.0.0.1:PORT).
    #[arg(long)]
    pub apiserver: String,
    /// The apiserver's cert dir (ca.crt, admin.crt, admin.key).
    #[arg(long)]
    pub cert_dir: PathBuf,
    /// The etcd the apiserver runs on (http://127.0.0.1:PORT).
    #[arg(long)]
    pub etcd: String,
    /// The apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Key prefix for raw etcd writes; must lie outside --etcd-prefix.
    #[arg(long, default_value = "/bench-raw/")]
    pub raw_prefix: String,
    /// The apiserver's pid, for its RSS and CPU.
    #[arg(long)]
    pub apiserver_pid: u32,
    /// etcd's pid, for its CPU.
    #[arg(long)]
    pub etcd_pid: u32,
    /// Concurrent clients for creates and puts.
    #[arg(long, default_value_t = 32)]
    pub create_clients: usize,
    /// Create and put phases stop after this many seconds ...
    #[arg(long, default_value_t = 10)]
    pub create_seconds: u64,
    /// ... or this many operations, whichever comes first.
    #[arg(long, default_value_t = 20_000)]
    pub create_max: usize,
    /// Pods to create before timing lists.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Timed lists of each kind (after one warm-up).
    #[arg(long, default_value_t = 11)]
    pub list_runs: usize,
    /// Concurrent HTTP watch streams.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Writes whose delivery is timed.
    #[arg(long, default_value_t = 100)]
    pub watch_writes: usize,
    /// Milliseconds between those writes.
    #[arg(long, default_value_t = 50)]
    pub watch_interval_ms: u64,
    /// Keep-alive connections for the GET phase.
    #[arg(long, default_value_t = 64)]
    pub get_connections: usize,
    /// Seconds of GETs.
    #[arg(long, default_value_t = 10)]
    pub get_seconds: u64,
}

const NS_CREATE: &str = "bench-create";
const NS_PODS: &str = "bench-pods";
const NS_WATCH: &str = "bench-watch";
const NS_GET: &str = "bench-get";
const NS_WARMUP: &str = "bench-warmup";

/// Runs every phase and returns the markdown report.
pub async fn run(opts: Options) -> anyhow::Result<String> {
    let api = Arc::new(Api::new(&opts.apiserver, &opts.cert_dir)?);
    api.wait_ready(Duration::from_secs(60)).await?;
    // Shortly after ready, before any load: the idle footprint.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss::read(opts.apiserver_pid).await?;
    eprintln!("rkube-bench: idle RSS {}", stats::mib(idle.current));

    let probe = cpu::Probe::new(opts.apiserver_pid, opts.etcd_pid)?;
    let mut usage = Vec::new();
    let s = probe.snapshot().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let quiet = probe.usage("before the load (1 s, idle)", &s, &probe.snapshot().await?);
    if quiet.machine > 0.25 {
        eprintln!("rkube-bench: warning: {:.2} cores busy before the load; numbers will be low", quiet.machine);
    }
    usage.push(quiet);

    let etcd = etcd_client::Client::connect([opts.etcd.as_str()], None).await.context("connecting to etcd")?;
    for ns in [NS_CREATE, NS_PODS, NS_WATCH, NS_GET, NS_WARMUP] {
        api.ensure_namespace(ns).await?;
    }
    let raw = opts.raw_prefix.trim_end_matches('/').to_string();
    let (clients, create_for, max) = (opts.create_clients, Duration::from_secs(opts.create_seconds), opts.create_max);

    eprintln!("rkube-bench: warm-up (2 s of puts, 2 s of creates)");
    create::etcd(etcd.clone(), &format!("{raw}/warmup/"), clients, Duration::from_secs(2), usize::MAX).await;
    create::apiserver(api.clone(), NS_WARMUP, "cm", clients, Duration::from_secs(2), usize::MAX).await;

    eprintln!("rkube-bench: creates ({clients} clients, {create_for:?} or {max} each)");
    let s = probe.snapshot().await?;
    let puts = create::etcd(etcd.clone(), &format!("{raw}/configmaps/"), clients, create_for, max).await;
    let e = probe.snapshot().await?;
    let mut per_op = Vec::new();
    let u = probe.usage("etcd puts", &s, &e);
    per_op.push(("etcd put", u.per_op(puts.ops)));
    usage.push(u);
    let txns = create::etcd_txn(etcd.clone(), &format!("{raw}/txn/"), clients, create_for, max).await?;
    let s = probe.snapshot().await?;
    let u = probe.usage("etcd create-if-absent txns + watch", &e, &s);
    per_op.push(("etcd create-if-absent txn", u.per_op(txns.ops)));
    usage.push(u);
    let creates = create::apiserver(api.clone(), NS_CREATE, "cm", clients, create_for, max).await;
    let e = probe.snapshot().await?;
    let u = probe.usage("apiserver ConfigMap creates", &s, &e);
    per_op.push(("apiserver ConfigMap create", u.per_op(creates.ops)));
    usage.push(u);

    eprintln!("rkube-bench: creating {} pods", opts.pods);
    let pods = list::create_pods(api.clone(), NS_PODS, opts.pods, clients).await?;
    let s = probe.snapshot().await?;
    let u = probe.usage("apiserver Pod creates", &e, &s);
    per_op.push(("apiserver Pod create", u.per_op(pods.ops)));
    usage.push(u);
    eprintln!("rkube-bench: lists ({} runs each)", opts.list_runs);
    let lists = list::compare(&api, &etcd, &opts.etcd_prefix, opts.pods, opts.list_runs).await?;
    let e = probe.snapshot().await?;
    usage.push(probe.usage("lists, apiserver and etcd alternating", &s, &e));

    let interval = Duration::from_millis(opts.watch_interval_ms);
    eprintln!("rkube-bench: one etcd watch, {} puts", opts.watch_writes);
    let etcd_watch = watch::etcd(&etcd, &format!("{raw}/watch/"), opts.watch_writes, interval).await?;
    let s = probe.snapshot().await?;
    usage.push(probe.usage("one etcd watch, paced puts", &e, &s));
    eprintln!("rkube-bench: {} watchers, {} writes", opts.watchers, opts.watch_writes);
    let fanout = watch::apiserver(&api, NS_WATCH, opts.watchers, opts.watch_writes, interval).await?;
    let e = probe.snapshot().await?;
    usage.push(probe.usage("apiserver watchers: connect, paced writes", &s, &e));

    let get_path = format!("/api/v1/namespaces/{NS_GET}/configmaps/target");
    api.create(&api.client, &format!("/api/v1/namespaces/{NS_GET}/configmaps"), api::configmap(NS_GET, "target", &[]))
        .await?;
    eprintln!("rkube-bench: GET over {} connections", opts.get_connections);
    let s = probe.snapshot().await?;
    let gets = get::run(&api, &get_path, opts.get_connections, Duration::from_secs(opts.get_seconds)).await?;
    let e = probe.snapshot().await?;
    usage.push(probe.usage("apiserver GETs (incl. connecting)", &s, &e));

    // Let closed watch connections and finished requests drain before reading the footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss::read(opts.apiserver_pid).await?;

    let report = Report {
        opts: &opts,
        idle,
        after,
        puts,
        txns,
        creates,
        pods,
        lists,
        etcd_watch,
        fanout,
        gets,
        usage,
        per_op,
        cores: probe.cores(),
    };
    Ok(report.render())
}
