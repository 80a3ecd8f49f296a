//! rkube-controller-manager: the reconcile loops (ReplicaSet, Deployment, garbage collector, …).
//! For now only its flags exist; the controller-manager issues fill it in.

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-controller-manager", about = "Runs the controllers (not implemented yet)")]
pub struct Options {
    /// Path to a kubeconfig with the controller-manager's credentials.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Controllers to run: `*` for the defaults, `-name` to switch one off.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Take part in leader election on a Lease in kube-system.
    #[arg(long, default_value_t = true)]
    pub leader_elect: bool,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rkube-controller-manager is not implemented yet (see the controller-manager issues)")
}
