//! rkube-controller-manager: the reconcile loops. Every controller is a descriptor in
//! `controllers::DESCRIPTORS`; `--controllers` picks them (`*` = the defaults, `-name` switches
//! one off). Controllers are level-triggered: shared informers only wake them (by queueing
//! keys), reads come from the informers' stores, writes go through the API. `/healthz` and
//! `/metrics` are served on `--bind-address`.

pub mod controllers;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-controller-manager", about = "Runs the controllers")]
pub struct Options {
    /// Path to a kubeconfig with the controller-manager's credentials (default: the usual
    /// kubeconfig search, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` for the defaults, `name` to add one, `-name` to switch one off.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Address for /healthz and /metrics (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub bind_address: SocketAddr,
    /// Take part in leader election on a Lease before running the controllers, so several
    /// controller-managers can run and one acts (upstream default: true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value = "kube-controller-manager")]
    pub leader_elect_resource_name: String,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// The cluster CA bundle (PEM) published as `kube-root-ca.crt` in every namespace
    /// (default: the CA of the kubeconfig).
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    /// How long a node's Lease and heartbeat may stand still before it is Ready=Unknown.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller looks at the nodes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// rkube: how long pods without a not-ready/unreachable toleration stay on such a node
    /// (upstream's apiserver adds these tolerations, 300 s, through DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    pub default_toleration_seconds: i64,
    /// Terminated pods kept before the oldest are deleted (0 = keep all).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// rkube: how often pod GC runs (upstream: fixed 20 s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub pod_gc_period: Duration,
    /// rkube: where the local-path provisioner (controller `local-path-provisioner`) makes
    /// volume directories (upstream local-path-provisioner's default path).
    #[arg(long, default_value = "/opt/local-path-provisioner")]
    pub local_path_root: PathBuf,
    /// rkube: one folder for every node (no per-node subdirectory, no node affinity): for a
    /// local cluster whose nodes share the host's filesystem.
    #[arg(long)]
    pub local_path_shared: bool,
    #[arg(long, default_value = "", long_help = component_base::featuregate::FeatureGates::help())]
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// Parses a Go-style duration as upstream's flags take them: `40s`, `5m`, `1h`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(total);
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unit {unit:?}")),
        };
        total += Duration::from_secs_f64(secs);
        rest = tail;
    }
    Ok(total)
}

async fn config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

/// A client for the apiserver from `--kubeconfig` (or the default kubeconfig / in-cluster).
pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(kubeconfig).await?)?)
}

/// At most this many requests of the controllers wait for their response at once; the rest
/// queue in the client. Each one in flight holds its own HTTP/1.1 connection (with its TLS
/// state and read buffer, tens of KB), which the pool keeps open for 90 s after: unlimited, the
/// ReplicaSet controller's 500-pod create batches opened 500 connections, and their buffers
/// were the largest transient in the controller-manager's heap (16 MiB at 10,000 pods,
/// `docs/benchmarks.md`). Upstream's kube-controller-manager limits its client too (QPS 20,
/// burst 30 by default); this limits concurrency only, not the rate. A watch holds a place only
/// until its response starts.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 32;

fn limited_client(cfg: kube::Config) -> Result<kube::Client, kube::Error> {
    let limit = tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS_IN_FLIGHT);
    Ok(kube::client::ClientBuilder::try_from(cfg)?.with_layer(&limit).build())
}

/// PEM of DER certificates.
fn pem(ders: &[Vec<u8>]) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Runs the selected controllers until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let cfg = config(opts.kubeconfig.as_deref()).await?;
    let root_ca = match &opts.root_ca_file {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => cfg.root_cert.as_deref().map(pem),
    };
    let client = limited_client(cfg)?;
    let selected = controllers::select(&opts.controllers)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(controllers::metrics::Metrics::new(&mut registry));
    let tasks = TaskTracker::new();
    let listener = tokio::net::TcpListener::bind(opts.bind_address)
        .await
        .with_context(|| format!("binding {}", opts.bind_address))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz and /metrics");
    tasks.spawn(server::serve(listener, Arc::new(registry), cancel.clone()));

    let opts = Arc::new(opts);
    let lead = {
        let (client, metrics, tasks, opts) = (client.clone(), metrics.clone(), tasks.clone(), opts.clone());
        move |leading: CancellationToken| run_controllers(client, selected, metrics, tasks, opts, root_ca, leading)
    };
    let result = if opts.leader_elect {
        let host =
            std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let identity = format!("{host}_{:x}{:x}", std::process::id(), nanos);
        let mut cfg = component_base::leaderelection::Config::new(
            &opts.leader_elect_resource_namespace,
            &opts.leader_elect_resource_name,
            &identity,
        );
        cfg.lease_duration = opts.leader_elect_lease_duration;
        cfg.renew_deadline = opts.leader_elect_renew_deadline;
        cfg.retry_period = opts.leader_elect_retry_period;
        let store = Arc::new(component_base::leaderelection::KubeLeaseStore::new(client, &cfg.namespace, &cfg.name));
        component_base::leaderelection::run(cfg, store, cancel.clone(), lead).await.map_err(anyhow::Error::from)
    } else {
        lead(cancel.clone()).await;
        Ok(())
    };
    tasks.close();
    tasks.wait().await;
    result
}

/// Starts the selected controllers on shared informers and runs them until `cancel`.
async fn run_controllers(
    client: kube::Client,
    selected: Vec<&'static controllers::Descriptor>,
    metrics: Arc<controllers::metrics::Metrics>,
    tasks: TaskTracker,
    opts: Arc<Options>,
    root_ca: Option<String>,
    cancel: CancellationToken,
) {
    let informers = Arc::new(controllers::informer::Factory::new(client.clone(), cancel.clone(), tasks.clone()));
    tracing::info!(controllers = ?selected.iter().map(|d| d.name).collect::<Vec<_>>(), "starting controllers");
    let mut running = tokio::task::JoinSet::new();
    for d in selected {
        let ctx = controllers::Context {
            client: client.clone(),
            cancel: cancel.child_token(),
            informers: informers.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            opts: opts.clone(),
            root_ca: root_ca.clone(),
        };
        let name = d.name;
        running.spawn(async move {
            if let Err(e) = (d.start)(ctx).await {
                tracing::error!(controller = name, error = %e, "controller stopped");
            }
        });
    }
    cancel.cancelled().await;
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_upstream_flags_do() {
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("40").is_err());
    }
}
