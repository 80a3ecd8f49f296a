//! rkube-dns: the cluster DNS server, CoreDNS's kubernetes plugin in one small process.
//! Services and EndpointSlices are watched (`watch.rs`) into a pure zone (`zone.rs`: the
//! records of each name); `answer.rs` decides the response to each request, pure as well;
//! `server.rs` moves the bytes (UDP, TCP, forwarding to `--upstream` resolvers) and
//! `http.rs` serves `/metrics`, `/health` and `/ready`.

pub mod answer;
pub mod http;
pub mod metrics;
pub mod server;
mod watch;
pub mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-dns", about = "Cluster DNS from Services and EndpointSlices (CoreDNS's kubernetes plugin)")]
pub struct Options {
    /// Path to a kubeconfig (default: the usual kubeconfig search, then in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster domain served from the API.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Address for DNS over UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    pub listen_address: SocketAddr,
    /// Resolvers for names outside the cluster domain (ip or ip:port; repeat or
    /// comma-separate). None by default: such names are refused at once. The host's
    /// /etc/resolv.conf is never read.
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    #[arg(long, default_value = "2s", value_parser = parse_seconds)]
    pub forward_timeout: Duration,
    /// Address for /metrics, /health and /ready (plain HTTP; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics_bind_address: SocketAddr,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// `1.2.3.4`, `1.2.3.4:5353`, `[fd00::1]:53` or `fd00::1` (port 53 when left out).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an ip or ip:port"))
}

/// `2s`, `500ms`.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (like 2s or 500ms)"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(n * scale))
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

/// The sockets the server answers on, bound before anything else so a taken port fails
/// at start.
pub struct Sockets {
    pub udp: tokio::net::UdpSocket,
    pub tcp: tokio::net::TcpListener,
    pub http: tokio::net::TcpListener,
}

impl Sockets {
    pub async fn bind(dns: SocketAddr, http: SocketAddr) -> anyhow::Result<Sockets> {
        // The same port for TCP as UDP got. With port 0 the kernel picks a free UDP port whose
        // TCP twin another process may hold: pick again (a fixed port fails at once).
        let mut tries = 0;
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind(dns).await.with_context(|| format!("binding udp {dns}"))?;
            let tcp_addr = udp.local_addr()?;
            match tokio::net::TcpListener::bind(tcp_addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if dns.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => tries += 1,
                Err(e) => return Err(e).with_context(|| format!("binding tcp {tcp_addr}")),
            }
        };
        let http = tokio::net::TcpListener::bind(http).await.with_context(|| format!("binding {http}"))?;
        Ok(Sockets { udp, tcp, http })
    }

    /// The DNS address (UDP and TCP).
    pub fn dns_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or_default()
}

/// Binds the sockets, connects to the apiserver and serves until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let sockets = Sockets::bind(opts.listen_address, opts.metrics_bind_address).await?;
    let client = client(opts.kubeconfig.as_deref()).await?;
    serve(opts, sockets, client, cancel).await
}

/// Serves on bound `sockets` with `client` until `cancel` (tests bind port 0 and pass a
/// client of their own apiserver).
pub async fn serve(
    opts: Options,
    sockets: Sockets,
    client: kube::Client,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let zone = zone::Zone::new(&opts.cluster_domain, unix_now())?;
    // one label value for the process' lifetime: the counters then need no allocation
    let zone_label: &'static str = Box::leak(zone.domain_text().to_owned().into_boxed_str());
    let zone = Arc::new(RwLock::new(zone));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(metrics::Metrics::new(&mut registry));
    tracing::info!(
        dns = %sockets.dns_addr()?,
        metrics = %sockets.http_addr()?,
        domain = zone_label,
        upstreams = ?opts.upstream,
        "starting rkube-dns"
    );
    let tasks = TaskTracker::new();
    watch::start(client, zone.clone(), &tasks, cancel.clone());
    let shared = server::Shared {
        zone: zone.clone(),
        metrics,
        zone_label,
        upstreams: opts.upstream.clone().into(),
        forward_timeout: opts.forward_timeout,
    };
    let Sockets { udp, tcp, http: http_listener } = sockets;
    tasks.spawn(server::serve_udp(Arc::new(udp), shared.clone(), tasks.clone(), cancel.clone()));
    tasks.spawn(server::serve_tcp(tcp, shared, tasks.clone(), cancel.clone()));
    tasks.spawn(http::serve(http_listener, http::Shared { registry: Arc::new(registry), zone }, cancel.clone()));
    cancel.cancelled().await;
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_the_cluster_tool_passes_parse() {
        let o = Options::try_parse_from([
            "rkube-dns",
            "--kubeconfig",
            "/k",
            "--listen-address",
            "198.19.16.1:53",
            "--metrics-bind-address",
            "198.19.16.1:9153",
        ])
        .expect("flags");
        assert_eq!(o.cluster_domain, "cluster.local");
        assert!(o.upstream.is_empty(), "no upstream unless asked: names outside the domain are refused");
        assert_eq!(o.forward_timeout, Duration::from_secs(2));
        let o = Options::try_parse_from(["rkube-dns", "--upstream", "127.0.0.1:5353,127.0.0.2", "--upstream", "::1"])
            .expect("flags");
        assert_eq!(
            o.upstream,
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "127.0.0.2:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(Options::try_parse_from(["rkube-dns", "--upstream", "resolver.example"]).is_err());
        assert_eq!(parse_seconds("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("0s").is_err());
    }
}
