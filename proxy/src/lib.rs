//! rkube-proxy: kube-proxy's iptables mode. Services and EndpointSlices are watched
//! (`watch.rs`) into a pure tracker (`tracker/`), rendered into `iptables-restore` input
//! (`iptables/render.rs`) and applied by the sync loop (`proxier.rs`) through the narrow
//! `Iptables` trait (`iptables/mod.rs`). `/healthz` and `/metrics` are in `server.rs`.

pub mod iptables;
pub mod proxier;
mod server;
pub mod tracker;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use iptables::render::RenderConfig;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-proxy", about = "Services as iptables rules (kube-proxy's iptables mode)")]
pub struct Options {
    /// Path to a kubeconfig with the proxy's credentials (default: the usual kubeconfig
    /// search, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name: endpoints whose nodeName matches are local (default: the hostname).
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The pod network (e.g. 198.18.0.0/16). Traffic from outside it to a ClusterIP is
    /// masqueraded, and externalTrafficPolicy Local short-circuits traffic from inside it.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// CIDRs whose node addresses answer node ports (comma-separated); empty means every local
    /// address but loopback. Resolved against the interfaces at start.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,
    /// Minimum interval between two syncs.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub min_sync_period: Duration,
    /// Interval of the full resync.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// Masquerade all traffic sent to a ClusterIP.
    #[arg(long)]
    pub masquerade_all: bool,
    /// Only `iptables` is implemented.
    #[arg(long, default_value = "iptables")]
    pub proxy_mode: String,
    /// Address for /metrics (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: SocketAddr,
    /// Address for /healthz (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: SocketAddr,
    /// Remove every rule and chain this proxy made, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    /// Accepted as upstream's components accept every gate; none of them changes this
    /// component yet.
    #[arg(long, default_value = "", long_help = component_base::featuregate::FeatureGates::help())]
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// Parses a Go-style duration as upstream's flags take them: `1s`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(total);
    }
    if rest.is_empty() {
        return Err("empty duration".into());
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

fn node_name(opts: &Options) -> anyhow::Result<String> {
    if let Some(n) = opts.hostname_override.as_deref().filter(|n| !n.trim().is_empty()) {
        return Ok(n.trim().to_lowercase());
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname")?;
    Ok(h.trim().to_lowercase())
}

/// `ip -o -4 addr show` output → the addresses inside any of `cidrs`.
pub fn addresses_in(cidrs: &[String], ip_addr_output: &str) -> Result<Vec<String>, String> {
    let nets = cidrs
        .iter()
        .map(|c| parse_cidr(c).ok_or_else(|| format!("invalid CIDR {c:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for line in ip_addr_output.lines() {
        let mut words = line.split_whitespace();
        let Some(addr) = words.by_ref().skip_while(|w| *w != "inet").nth(1) else { continue };
        let Some(ip) = addr.split('/').next().and_then(|a| a.parse::<std::net::Ipv4Addr>().ok()) else { continue };
        if !ip.is_loopback() && nets.iter().any(|(net, bits)| in_net(ip, *net, *bits)) && !out.contains(&ip.to_string())
        {
            out.push(ip.to_string());
        }
    }
    Ok(out)
}

fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, bits) = s.trim().split_once('/')?;
    let bits: u8 = bits.parse().ok().filter(|b| *b <= 32)?;
    Some((ip.parse().ok()?, bits))
}

fn in_net(ip: std::net::Ipv4Addr, net: std::net::Ipv4Addr, bits: u8) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Runs the proxy until `cancel`, on the node's iptables backend.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let ipt = iptables::Real::detect(Vec::new()).await;
    tracing::info!(backend = ?ipt.backend(), "iptables backend");
    if opts.cleanup {
        iptables::cleanup(&ipt).await?;
        tracing::info!("removed the proxy's rules and chains");
        return Ok(());
    }
    run_with(opts, ipt, cancel).await
}

/// `run` with the `Iptables` implementation injected (tests pass the recording fake).
pub async fn run_with<I: iptables::Iptables>(opts: Options, ipt: I, cancel: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.proxy_mode == "iptables",
        "--proxy-mode {:?} is not supported (only iptables)",
        opts.proxy_mode
    );
    if let Some(c) = &opts.cluster_cidr {
        anyhow::ensure!(parse_cidr(c).is_some(), "--cluster-cidr {c:?} is not an IPv4 CIDR");
    }
    let node = node_name(&opts)?;
    let nodeport_ips = if opts.nodeport_addresses.is_empty() {
        None
    } else {
        let out = tokio::process::Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .await
            .context("running ip addr")?;
        let ips = addresses_in(&opts.nodeport_addresses, &String::from_utf8_lossy(&out.stdout))
            .map_err(anyhow::Error::msg)?;
        tracing::info!(addresses = ?ips, "node ports answer on these addresses");
        Some(ips)
    };
    let cfg = RenderConfig {
        node_name: node.clone(),
        cluster_cidr: opts.cluster_cidr.clone(),
        masquerade_all: opts.masquerade_all,
        nodeport_ips,
    };
    let client = client(opts.kubeconfig.as_deref()).await?;
    tracing::info!(node = %node, "starting rkube-proxy in iptables mode");

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(proxier::Metrics::new(&mut registry));
    let health = Arc::new(proxier::Health::default());
    let tasks = TaskTracker::new();
    let metrics_listener = tokio::net::TcpListener::bind(opts.metrics_bind_address)
        .await
        .with_context(|| format!("binding {}", opts.metrics_bind_address))?;
    let healthz_listener = tokio::net::TcpListener::bind(opts.healthz_bind_address)
        .await
        .with_context(|| format!("binding {}", opts.healthz_bind_address))?;
    tracing::info!(metrics = %metrics_listener.local_addr()?, healthz = %healthz_listener.local_addr()?, "serving");
    let state = server::State { registry: Arc::new(registry), health: health.clone(), sync_period: opts.sync_period };
    tasks.spawn(server::serve(metrics_listener, state.clone(), cancel.clone()));
    tasks.spawn(server::serve(healthz_listener, state, cancel.clone()));

    let tracker = Arc::new(Mutex::new(tracker::Tracker::new()));
    let changes = Arc::new(tokio::sync::Notify::new());
    let synced = watch::start(client, tracker.clone(), changes.clone(), &tasks, cancel.clone());
    let p = proxier::Proxier::new(ipt, cfg, tracker, metrics, health);
    let timing = proxier::Timing { min_sync_period: opts.min_sync_period, sync_period: opts.sync_period };
    tasks.spawn(p.run(changes, synced, timing, cancel.clone()));

    cancel.cancelled().await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_upstream_flags_do() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("40").is_err());
    }

    #[test]
    fn flags_the_cluster_tool_passes_parse() {
        let o = Options::try_parse_from([
            "rkube-proxy",
            "--kubeconfig",
            "/k",
            "--hostname-override",
            "node1",
            "--cluster-cidr",
            "198.18.0.0/16",
        ])
        .expect("flags");
        assert_eq!(o.hostname_override.as_deref(), Some("node1"));
        assert_eq!((o.min_sync_period, o.sync_period), (Duration::from_secs(1), Duration::from_secs(30)));
        assert_eq!(o.proxy_mode, "iptables");
    }

    #[test]
    fn nodeport_addresses_pick_interface_addresses_inside_the_cidrs() {
        let ip = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                  2: eth0    inet 198.19.0.2/24 brd 198.19.0.255 scope global eth0\n\
                  3: cni0    inet 198.18.1.1/24 brd 198.18.1.255 scope global cni0\n";
        assert_eq!(addresses_in(&["198.19.0.0/16".into()], ip), Ok(vec!["198.19.0.2".to_string()]));
        assert_eq!(
            addresses_in(&["0.0.0.0/0".into()], ip),
            Ok(vec!["198.19.0.2".to_string(), "198.18.1.1".to_string()])
        );
        assert!(addresses_in(&["nope".into()], ip).is_err());
    }
}
