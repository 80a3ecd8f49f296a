//! rkube-controller-manager: the reconcile loops. Every controller is a descriptor in
//! `controllers::DESCRIPTORS`; `--controllers` picks them (`*` = the defaults, `-name` switches
//! one off). Controllers are level-triggered: watches only wake them, reads come from their
//! stores, writes go through the API.

pub mod controllers;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

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

/// Runs the selected controllers until `cancel`.
pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let client = client(opts.kubeconfig.as_deref()).await?;
    let selected = controllers::select(&opts.controllers)?;
    tracing::info!(controllers = ?selected.iter().map(|d| d.name).collect::<Vec<_>>(), "starting controllers");
    let mut tasks = tokio::task::JoinSet::new();
    for d in selected {
        let ctx = controllers::Context { client: client.clone(), cancel: cancel.child_token() };
        let name = d.name;
        tasks.spawn(async move {
            if let Err(e) = (d.start)(ctx).await {
                tracing::error!(controller = name, error = %e, "controller stopped");
            }
        });
    }
    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
