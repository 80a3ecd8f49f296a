//! rkube-scheduler: watches pods that wait for a node, filters and scores the nodes with
//! upstream's default plugins, assumes the winner in its cache and binds the pod through
//! `pods/binding`.
//!
//! - `framework/`: the queue, the cache and its snapshot, one scheduling cycle (pure).
//! - `plugins/`: one file per upstream plugin and the registry of the default profile.
//! - `scheduler`: informer handlers, the scheduling loop, binding and failure handling.
//! - `writer`: every write to the apiserver, behind a trait.
//! - `listers`: the reflector stores plugins read (volumes, services, owners, PDBs).
//! - `server`: /healthz and /metrics on a loopback port.

pub mod framework;
pub mod listers;
pub mod metrics;
pub mod plugins;
pub mod scheduler;
pub mod server;
#[cfg(test)]
mod testutil;
pub mod writer;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The profile name pods ask for in `spec.schedulerName`, and the events' reporter.
pub const SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-scheduler", about = "Binds pods to nodes")]
pub struct Options {
    /// Path to a kubeconfig with the scheduler's credentials (default: the usual kubeconfig
    /// search, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Take part in leader election on a Lease before scheduling (for running several
    /// schedulers of which one acts).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a non-leader waits after the last observed renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value = "kube-scheduler")]
    pub leader_elect_resource_name: String,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Plain-HTTP port for /healthz and /metrics, bound to 127.0.0.1 only (like upstream's
    /// old insecure `--port`); 0 switches the endpoint off.
    #[arg(long, default_value_t = 10251)]
    pub port: u16,
    /// Share of nodes to find feasible before scoring (upstream `percentageOfNodesToScore`);
    /// 0 = upstream's adaptive default.
    #[arg(long, default_value_t = 0)]
    pub percentage_of_nodes_to_score: usize,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    #[arg(long, default_value = "", long_help = component_base::featuregate::FeatureGates::help())]
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// `15s`, `500ms`, `2m` (what the leader-election flags take).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A client for the apiserver from `--kubeconfig` (or the default kubeconfig / in-cluster).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{host}_{:016x}", rand::random::<u64>())
}

/// Runs the scheduler until `cancel` (or until it loses leadership, an error).
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let client = client(opts.kubeconfig.as_deref()).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let server = if opts.port != 0 {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], opts.port));
        Some(server::start(addr, Arc::new(registry), cancel.clone()).await?)
    } else {
        None
    };
    let pct = opts.percentage_of_nodes_to_score;
    let pop_from_backoff = opts.feature_gates.enabled(component_base::featuregate::SCHEDULER_POP_FROM_BACKOFF_Q);
    let result = if opts.leader_elect {
        let mut cfg = component_base::leaderelection::Config::new(
            &opts.leader_elect_resource_namespace,
            &opts.leader_elect_resource_name,
            &identity(),
        );
        cfg.lease_duration = opts.leader_elect_lease_duration;
        cfg.renew_deadline = opts.leader_elect_renew_deadline;
        cfg.retry_period = opts.leader_elect_retry_period;
        let store =
            Arc::new(component_base::leaderelection::KubeLeaseStore::new(client.clone(), &cfg.namespace, &cfg.name));
        component_base::leaderelection::run(cfg, store, cancel.clone(), move |leading| async move {
            if let Err(e) = schedule(client, metrics, pct, pop_from_backoff, leading).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        })
        .await
        .map_err(anyhow::Error::from)
    } else {
        schedule(client, metrics, pct, pop_from_backoff, cancel.clone()).await
    };
    if let Some(s) = server {
        s.await.ok();
    }
    result
}

/// Starts the informers, waits for the pod and node caches to fill, then schedules until
/// `cancel`. `pop_from_backoff` is the SchedulerPopFromBackoffQ feature gate.
pub async fn schedule(
    client: kube::Client,
    metrics: metrics::Metrics,
    percentage_of_nodes_to_score: usize,
    pop_from_backoff: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = TaskTracker::new();
    let sched_cell: Arc<std::sync::OnceLock<Arc<scheduler::Scheduler>>> = Arc::default();
    let cell = sched_cell.clone();
    let volumes_changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        if let Some(s) = cell.get() {
            s.on_volume_change();
        }
    });
    let listers: Arc<dyn plugins::Listers> =
        Arc::new(listers::StoreListers::start(&client, &tasks, &cancel, volumes_changed));
    let fw = plugins::default_framework(&plugins::Handle { listers: listers.clone() }, percentage_of_nodes_to_score);
    let writer = Arc::new(writer::KubeWriter { client: client.clone() });
    let queue = framework::queue::Queue::with_pop_from_backoff(pop_from_backoff);
    let sched = scheduler::Scheduler::with_queue(fw, listers, writer, metrics, queue);
    let _ = sched_cell.set(sched.clone());

    let pods_synced = CancellationToken::new();
    let nodes_synced = CancellationToken::new();
    {
        let (s, s2, s3, synced) = (sched.clone(), sched.clone(), sched.clone(), pods_synced.clone());
        // upstream's informers drop managedFields before caching; so does PodInfo::new.
        let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
        tasks.spawn(scheduler::drive(
            stream,
            cancel.clone(),
            |p: &Pod| p.metadata.uid.clone().unwrap_or_default(),
            move |p| s.on_pod(p),
            move |p| s2.on_pod_deleted(p),
            move |seen: &HashSet<String>| {
                s3.resync_pods(seen);
                synced.cancel();
            },
        ));
    }
    {
        let (s, s2, s3, synced) = (sched.clone(), sched.clone(), sched.clone(), nodes_synced.clone());
        let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
        tasks.spawn(scheduler::drive(
            stream,
            cancel.clone(),
            |n: &Node| n.metadata.name.clone().unwrap_or_default(),
            move |n| s.on_node(n),
            move |n| s2.on_node_deleted(n),
            move |seen: &HashSet<String>| {
                s3.resync_nodes(seen);
                synced.cancel();
            },
        ));
    }
    // upstream WaitForCacheSync: scheduling before the bound pods are known would overcommit.
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = async { pods_synced.cancelled().await; nodes_synced.cancelled().await } => {
            tracing::info!("caches synced; scheduling");
            sched.clone().run(cancel.clone()).await;
        }
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}
