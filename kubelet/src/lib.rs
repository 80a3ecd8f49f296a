//! rkube-kubelet: the node agent. Registers its Node, runs pods through CRI. For now only its
//! flags exist; the kubelet issue fills it in.

use clap::Parser;

pub mod nodestatus;
pub mod pod_workers;
pub mod runtime;
pub mod status;

/// The version the kubelet reports in its Node's nodeInfo (the API version rkube speaks).
pub const KUBELET_VERSION: &str = "v1.33.0+rkube";

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-kubelet", about = "The node agent (not implemented yet)")]
pub struct Options {
    /// Path to a kubeconfig with the kubelet's credentials.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Name of the Node object this kubelet registers.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// CRI endpoint, e.g. unix:///run/containerd/containerd.sock.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    pub container_runtime_endpoint: String,
    /// Port of the kubelet's HTTPS server.
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rkube-kubelet is not implemented yet (see the kubelet issue)")
}
