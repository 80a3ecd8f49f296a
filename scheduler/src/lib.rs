//! rkube-scheduler: watches unscheduled pods, filters and scores nodes, and binds pods
//! through `pods/binding`. For now only its flags exist; the scheduler issue fills it in.

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-scheduler", about = "Binds pods to nodes (not implemented yet)")]
pub struct Options {
    /// Path to a kubeconfig with the scheduler's credentials.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Take part in leader election on a Lease in kube-system.
    #[arg(long, default_value_t = true)]
    pub leader_elect: bool,
    /// Port for /healthz and /metrics.
    #[arg(long, default_value_t = 10259)]
    pub secure_port: u16,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rkube-scheduler is not implemented yet (see the scheduler issue)")
}
