//! rkube: the cluster tool (create, delete, list local clusters; add nodes; load images).
//! For now only its flags exist; the cluster-tool issue fills it in.

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube", about = "Local Kubernetes clusters (not implemented yet)")]
pub struct Options {
    /// Log format: text or json.
    #[arg(long, default_value = "text", global = true)]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage local clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create a local cluster.
    Create {
        #[arg(long, default_value = "rkube")]
        name: String,
        #[arg(long, default_value_t = 3)]
        nodes: u32,
    },
    /// Delete a local cluster.
    Delete {
        #[arg(long, default_value = "rkube")]
        name: String,
    },
}

pub fn run(_opts: Options) -> anyhow::Result<()> {
    anyhow::bail!("rkube is not implemented yet (see the cluster-tool issue)")
}
