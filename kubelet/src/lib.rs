//! rkube-kubelet: the node agent. Registers its Node, runs the pods bound to it through a CRI
//! runtime, and serves logs, exec/attach/port-forward and stats on :10250.
//!
//! [`run`] wires the parts together under one cancellation token: the runtime client and its
//! health loop, the Node status and Lease loop, the pod loop, and the HTTPS server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub mod dns;
pub mod envvars;
pub mod events;
pub mod eviction;
pub mod images;
pub mod lifecycle;
pub mod machine;
pub mod nodestatus;
pub mod objects;
pub mod pod_workers;
pub mod prober;
pub mod qos;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod status;
pub mod volumes;

use nodestatus::RuntimeHealth;
use runtime::cri::CriOptions;
use runtime::ContainerRuntime;

/// The version the kubelet reports in its Node's nodeInfo (the API version rkube speaks).
pub const KUBELET_VERSION: &str = "v1.33.0+rkube";

/// The kubelet's flags. Names and defaults are upstream's; the cluster tool starts the kubelet
/// with exactly these, so keep them stable (listed in README.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-kubelet", about = "The rkube node agent: runs the pods bound to this node through CRI")]
pub struct Options {
    /// Path to a kubeconfig with the kubelet's credentials (default: the usual kubeconfig lookup).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Node object this kubelet registers (default: the hostname).
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's InternalIP (default: the first non-loopback IPv4 address).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// CRI endpoint, e.g. unix:///run/containerd/containerd.sock.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    pub container_runtime_endpoint: String,
    /// Timeout of every runtime call except image pulls.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub runtime_request_timeout: Duration,
    /// Port of the kubelet's HTTPS server.
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Address the HTTPS server binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Serving certificate (PEM) of the HTTPS server.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Key of the serving certificate (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates the HTTPS server accepts (the apiserver's kubelet client).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// The node's pod CIDR, when the Node object does not get one from elsewhere.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Cluster DNS server IPs given to ClusterFirst pods (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The kubelet's state directory (pod volume directories live under it).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// Where container logs are written (`<ns>_<pod>_<uid>/<container>/<restart>.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,
    /// Labels the Node registers with: key=value,key2=value2.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Taints the Node registers with: key=value:Effect,key2:Effect.
    #[arg(long, value_delimiter = ',')]
    pub register_with_taints: Vec<String>,
    /// Most pods this node runs (its `pods` capacity).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Hard eviction thresholds (`signal<value`, comma-separated); crossing one sets the Node's
    /// MemoryPressure, DiskPressure or PIDPressure condition.
    #[arg(long, default_value = eviction::DEFAULT_EVICTION_HARD, value_parser = eviction::Thresholds::parse)]
    pub eviction_hard: eviction::Thresholds,
    /// Parent cgroup of every pod (pods go to `<cgroup-root>/kubepods/pod<uid>`).
    #[arg(long, default_value = "/")]
    pub cgroup_root: String,
    /// How often the Node's status is written even when nothing changed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_status_update_frequency: Duration,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Accepted as upstream's components accept every gate; none of them changes this
    /// component yet.
    #[arg(long, default_value = "", long_help = component_base::featuregate::FeatureGates::help())]
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// Why the kubelet could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid flag: {0}")]
    Flag(String),
    #[error("loading the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Machine(#[from] machine::MachineError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
}

/// Go-style durations as upstream's flags take them: `10s`, `500ms`, `2m`, `1h`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
        rest = tail;
    }
    Ok(total)
}

async fn api_client(opts: &Options) -> Result<kube::Client, RunError> {
    let config = match &opts.kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| RunError::Kubeconfig(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Kubeconfig(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| RunError::Kubeconfig(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(RunError::Client)
}

/// How often the runtime's health is checked (upstream's runtime state check runs every 5 s
/// as part of the sync loop).
const RUNTIME_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The runtime's health from its `Status` answer: both RuntimeReady and NetworkReady must hold.
pub fn runtime_health(status: &runtime::api::StatusResponse) -> RuntimeHealth {
    let conditions = status.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for want in ["RuntimeReady", "NetworkReady"] {
        match conditions.iter().find(|c| c.r#type == want) {
            Some(c) if c.status => {}
            Some(c) => {
                return RuntimeHealth::Down(format!(
                    "container runtime not ready: {want}=false reason:{} message:{}",
                    c.reason, c.message
                ))
            }
            None => return RuntimeHealth::Down(format!("container runtime not ready: {want} is missing")),
        }
    }
    RuntimeHealth::Ready
}

/// The Node's `status.images` from the runtime's list: tags and digests, biggest first.
pub fn node_images(images: &[runtime::api::Image]) -> Vec<nodestatus::NodeImage> {
    let mut out: Vec<nodestatus::NodeImage> = images
        .iter()
        .map(|i| nodestatus::NodeImage {
            names: i.repo_digests.iter().chain(i.repo_tags.iter()).cloned().collect(),
            size_bytes: i.size,
        })
        .filter(|i| !i.names.is_empty())
        .collect();
    out.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then_with(|| a.names.cmp(&b.names)));
    out
}

/// Polls the runtime: its health into `health`, its version and images into the node facts.
async fn runtime_health_loop(
    rt: Arc<dyn ContainerRuntime>,
    health: watch::Sender<RuntimeHealth>,
    facts: watch::Sender<nodestatus::NodeFacts>,
    cancel: CancellationToken,
) {
    loop {
        let h = match rt.status(false).await {
            Ok(s) => runtime_health(&s),
            Err(e) => RuntimeHealth::Down(format!("container runtime is down: {e}")),
        };
        if h == RuntimeHealth::Ready {
            if let Ok(v) = rt.version().await {
                let version = format!("{}://{}", v.runtime_name, v.runtime_version);
                facts.send_if_modified(|f| {
                    let changed = f.runtime_version != version;
                    f.runtime_version = version.clone();
                    changed
                });
            }
            if let Ok(images) = rt.list_images(None).await {
                let images = node_images(&images);
                facts.send_if_modified(|f| {
                    let changed = f.images != images;
                    f.images = images.clone();
                    changed
                });
            }
        }
        health.send_if_modified(|cur| {
            let changed = *cur != h;
            if changed {
                tracing::info!(health = ?h, "container runtime health changed");
            }
            *cur = h.clone();
            changed
        });
        // Check quickly until the runtime is up, then at the steady pace.
        let every = if *health.borrow() == RuntimeHealth::Ready { RUNTIME_CHECK_EVERY } else { Duration::from_secs(1) };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Runs the kubelet until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> Result<(), RunError> {
    let client = api_client(&opts).await?;
    let cri_opts =
        CriOptions { connect_timeout: Duration::from_secs(10), request_timeout: opts.runtime_request_timeout };
    // Lazy: a runtime that is not up yet makes the node NotReady, it does not stop the kubelet.
    let rt: Arc<dyn ContainerRuntime> =
        Arc::new(runtime::CriRuntime::connect_lazy(&opts.container_runtime_endpoint, cri_opts)?);
    let facts = machine::node_facts(&opts)?;
    let node_name = facts.name.clone();
    tracing::info!(node = %node_name, ip = %facts.internal_ip, "rkube-kubelet starting");

    let (facts_tx, facts_rx) = watch::channel(facts.clone());
    let (health_tx, health_rx) =
        watch::channel(RuntimeHealth::Down("container runtime status check may not have completed yet".into()));

    let metrics = server::Metrics::new(&node_name);
    let server_cfg = server::ServerConfig {
        addr: SocketAddr::new(opts.address, opts.port),
        tls_cert_file: opts.tls_cert_file.clone(),
        tls_private_key_file: opts.tls_private_key_file.clone(),
        client_ca_file: opts.client_ca_file.clone(),
        node_name: node_name.clone(),
    };
    let listener = server::bind(&server_cfg).await?;
    let tls = server::tls_config(&server_cfg, &facts.internal_ip)?;

    let deps = Arc::new(pod_deps(&opts, &facts, client.clone(), rt.clone()));
    let manager = pod_workers::manager::PodManager {
        client: client.clone(),
        deps: deps.clone(),
        runtime: rt.clone(),
        node_name: node_name.clone(),
        host_ip: facts.internal_ip.clone(),
        config: pod_workers::sync::NodeConfig {
            cgroup_root: format!("{}/kubepods", opts.cgroup_root.trim_end_matches('/')),
            log_dir: opts.pod_logs_dir.clone(),
            runtime_handler: String::new(),
        },
        resync: Duration::from_secs(1),
    };
    let pod_writer = kube::runtime::reflector::store::Writer::default();
    let state = Arc::new(server::State {
        runtime: rt.clone(),
        metrics,
        node_name: node_name.clone(),
        pods: pod_writer.as_reader(),
    });

    let tracker = tokio_util::task::TaskTracker::new();
    let pressure_sources =
        eviction::Sources { root_dir: opts.root_dir.clone(), image_dir: None, memory_capacity: facts.memory_bytes };
    tracker.spawn(eviction::run(pressure_sources, opts.eviction_hard.clone(), facts_tx.clone(), cancel.clone()));
    tracker.spawn(runtime_health_loop(rt.clone(), health_tx, facts_tx, cancel.clone()));
    tracker.spawn(nodestatus::run(
        client.clone(),
        facts_rx,
        health_rx,
        opts.node_status_update_frequency,
        Duration::from_secs(u64::from(nodestatus::LEASE_DURATION_SECONDS.unsigned_abs()) / 4),
        cancel.clone(),
    ));
    tracker.spawn(deps.run(cancel.clone()));
    tracker.spawn(manager.run_with_store(pod_writer, cancel.clone()));
    tracker.spawn(server::serve(listener, tls, state, cancel.clone()));
    tracker.close();
    cancel.cancelled().await;
    tracing::info!("rkube-kubelet stopping");
    tracker.wait().await;
    Ok(())
}

/// The pod loop's objects, volumes, events and probes, from the flags and the machine.
fn pod_deps(
    opts: &Options,
    facts: &nodestatus::NodeFacts,
    client: kube::Client,
    rt: Arc<dyn ContainerRuntime>,
) -> pod_workers::sync::PodDeps {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let dns = dns::DnsSettings {
        cluster_dns: opts.cluster_dns.iter().map(|ip| ip.to_string()).collect(),
        cluster_domain: opts.cluster_domain.clone(),
        host: dns::parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    };
    let mut deps = pod_workers::sync::PodDeps::real(
        client,
        rt,
        opts.root_dir.clone(),
        facts.name.clone(),
        facts.internal_ip.clone(),
        dns,
    );
    deps.allocatable = [
        ("cpu".to_string(), Quantity(format!("{}m", facts.cpu_millis))),
        ("memory".to_string(), Quantity(facts.memory_bytes.to_string())),
        ("ephemeral-storage".to_string(), Quantity(facts.ephemeral_storage_bytes.to_string())),
    ]
    .into_iter()
    .collect();
    deps.memory_capacity = i64::try_from(facts.memory_bytes).unwrap_or(i64::MAX);
    deps.cgroup_root = format!("{}/kubepods", opts.cgroup_root.trim_end_matches('/'));
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn flags_have_upstream_names_and_defaults() {
        let o = Options::parse_from(["rkube-kubelet"]);
        assert_eq!(o.port, 10250);
        assert_eq!(o.max_pods, 110);
        assert_eq!(o.eviction_hard, eviction::Thresholds::parse(eviction::DEFAULT_EVICTION_HARD).expect("default"));
        assert!(Options::try_parse_from(["rkube-kubelet", "--eviction-hard", "memory.free<1"]).is_err());
        assert_eq!(o.cluster_domain, "cluster.local");
        assert_eq!(o.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(o.pod_logs_dir, PathBuf::from("/var/log/pods"));
        assert_eq!(o.node_status_update_frequency, Duration::from_secs(10));
        let o = Options::parse_from([
            "rkube-kubelet",
            "--node-ip=198.19.0.2",
            "--cluster-dns=198.19.128.10,198.19.128.11",
            "--node-labels=a=b,c=d",
            "--register-with-taints=k=v:NoSchedule",
            "--node-status-update-frequency=2s",
        ]);
        assert_eq!(o.node_ip, Some(IpAddr::from([198, 19, 0, 2])));
        assert_eq!(o.cluster_dns.len(), 2);
        assert_eq!(o.node_labels, ["a=b", "c=d"]);
        assert_eq!(o.register_with_taints, ["k=v:NoSchedule"]);
        assert_eq!(o.node_status_update_frequency, Duration::from_secs(2));
    }

    fn status(runtime_ready: bool, network_ready: bool) -> runtime::api::StatusResponse {
        let cond = |t: &str, s: bool| runtime::api::RuntimeCondition {
            r#type: t.into(),
            status: s,
            reason: if s { String::new() } else { "NetworkPluginNotReady".into() },
            message: if s { String::new() } else { "cni config uninitialized".into() },
        };
        runtime::api::StatusResponse {
            status: Some(runtime::api::RuntimeStatus {
                conditions: vec![cond("RuntimeReady", runtime_ready), cond("NetworkReady", network_ready)],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn node_images_are_biggest_first_with_digests_and_tags() {
        let img = |tag: &str, size| runtime::api::Image {
            id: format!("sha256:{tag}"),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![format!("{tag}@sha256:0")],
            size,
            ..Default::default()
        };
        let out = node_images(&[img("a:1", 10), img("b:1", 30), runtime::api::Image::default()]);
        assert_eq!(out.len(), 2, "an image without names is left out");
        assert_eq!(out[0].names, ["b:1@sha256:0", "b:1"]);
        assert_eq!(out[1].size_bytes, 10);
    }

    #[test]
    fn runtime_health_needs_both_conditions() {
        assert_eq!(runtime_health(&status(true, true)), RuntimeHealth::Ready);
        let RuntimeHealth::Down(why) = runtime_health(&status(true, false)) else { panic!("expected Down") };
        assert!(why.contains("NetworkReady=false") && why.contains("cni config uninitialized"), "{why}");
        assert!(matches!(runtime_health(&runtime::api::StatusResponse::default()), RuntimeHealth::Down(_)));
    }
}
