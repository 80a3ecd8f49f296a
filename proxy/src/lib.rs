//! rkube-proxy: Services and EndpointSlices as iptables rules. For now only its flags exist;
//! the proxy issue fills it in.

pub mod iptables;
pub mod tracker;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-proxy", about = "Services as iptables rules (not implemented yet)")]
pub struct Options {
    /// Path to a kubeconfig with the proxy's credentials.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Minimum interval between two syncs.
    #[arg(long, default_value = "1s")]
    pub min_sync_period: String,
    /// Interval of the full resync.
    #[arg(long, default_value = "30s")]
    pub sync_period: String,
    /// Remove every rule this proxy made, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rkube-proxy is not implemented yet (see the proxy issue)")
}
