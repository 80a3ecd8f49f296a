//! rkube: local multi-node clusters. Each node is a network namespace on a bridge with its own
//! containerd and kubelet; the control plane runs on the host side. See README.md for the layout.
//!
//! `config` (the file and flags), `net` (address plan), `state` (the record and paths) and
//! `render` (files, commands, process table) decide; `sys`, `pki`, `images` and `cluster` do.

pub mod cluster;
pub mod config;
pub mod images;
pub mod net;
pub mod pki;
pub mod render;
pub mod state;
pub mod sys;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cluster::{ClusterError, Env};
use render::Component;
use state::Components;

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube", about = "Local multi-node Kubernetes clusters, without Docker or VMs")]
pub struct Options {
    /// Log format: text or json.
    #[arg(long, default_value = "text", global = true)]
    pub log_format: String,
    /// Where cluster records and state live.
    #[arg(long, env = "RKUBE_STATE_DIR", default_value = state::DEFAULT_STATE_ROOT, global = true)]
    pub state_dir: PathBuf,
    /// Directory of the rkube-* binaries (default: the one rkube itself is in).
    #[arg(long, env = "RKUBE_BIN_DIR", global = true)]
    pub bin_dir: Option<PathBuf>,
    /// Directory of the node image archives (default: _output/images of the source tree
    /// rkube was built in, else /var/lib/rkube/images).
    #[arg(long, env = "RKUBE_IMAGES_DIR", global = true)]
    pub images_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Create, delete, list, stop and start local clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Add or remove nodes of a running cluster.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Load images into a cluster's registry, list them.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Every process of a cluster: where it runs, whether it is up, where it logs.
    Status {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
    },
    /// Print a component's log (etcd, registry, apiserver, scheduler, controller-manager, dns,
    /// containerd, kubelet, proxy).
    Logs {
        component: String,
        /// The node, for containerd, kubelet and proxy.
        #[arg(long)]
        node: Option<String>,
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Create a local cluster and wait until every node is Ready.
    Create {
        /// Cluster name (overrides the config file's).
        #[arg(long)]
        name: Option<String>,
        /// Number of nodes (overrides the config file's node list length).
        #[arg(long)]
        nodes: Option<u32>,
        /// A `kind: Cluster` config file (apiVersion rkube.dev/v1alpha1).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to wait for the nodes to be Ready.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        wait: Duration,
        /// Keep what was made when create fails (for debugging).
        #[arg(long)]
        retain: bool,
        /// Do not start a component: scheduler, controller-manager, kubelet, proxy, dns.
        #[arg(long, value_parser = ["scheduler", "controller-manager", "kubelet", "proxy", "dns"])]
        disable: Vec<String>,
        /// Keep the default StorageClass's volumes in one folder shared by every node (no node
        /// affinity), so a pod moved to another node keeps its data (cluster.yaml:
        /// `storage: {shared: true}`).
        #[arg(long)]
        shared_storage: bool,
    },
    /// Delete a cluster and everything it made on this machine.
    Delete {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        name: String,
    },
    /// List clusters.
    List,
    /// Stop every process of a cluster, keeping its state.
    Stop {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        name: String,
    },
    /// Start a stopped cluster again (also after a reboot): same nodes, addresses, workloads.
    Start {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        wait: Duration,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodeCommand {
    /// Add a worker node to a running cluster.
    Add {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
        /// Node name (default: the next free <cluster>-workerN).
        #[arg(long)]
        name: Option<String>,
        /// Node labels, key=value,...
        #[arg(long, default_value = "")]
        labels: String,
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Remove a node: its processes, namespaces and Node object.
    Remove {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageCommand {
    /// Push oci-archive or docker-archive files into the cluster registry, under the names
    /// they carry; every node pulls them through its docker.io / registry.k8s.io mirror.
    Load {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
        #[arg(required = true)]
        archives: Vec<PathBuf>,
    },
    /// List the images in the cluster registry.
    Ls {
        #[arg(long, default_value = config::DEFAULT_NAME)]
        cluster: String,
    },
}

/// `90s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (like 90s or 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (like 90s or 2m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn env_from(opts: &Options) -> Env {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let bin_dir = opts.bin_dir.clone().or(exe_dir.clone()).unwrap_or_else(|| PathBuf::from("/usr/local/bin"));
    let images_dir = opts.images_dir.clone().unwrap_or_else(|| {
        // target/<profile>/rkube -> <source tree>/_output/images
        exe_dir
            .and_then(|d| d.parent().and_then(|t| t.parent()).map(|root| root.join("_output/images")))
            .filter(|d| d.is_dir())
            .unwrap_or_else(|| PathBuf::from("/var/lib/rkube/images"))
    });
    Env { state_root: opts.state_dir.clone(), bin_dir, images_dir, kubeconfig: cluster::default_kubeconfig() }
}

fn components(disable: &[String]) -> Components {
    let mut c = Components::default();
    for d in disable {
        match d.as_str() {
            "scheduler" => c.scheduler = false,
            "controller-manager" => c.controller_manager = false,
            "kubelet" => c.kubelet = false,
            "proxy" => c.proxy = false,
            "dns" => c.dns = false,
            _ => {}
        }
    }
    c
}

pub async fn run(opts: Options, cancel: CancellationToken) -> anyhow::Result<()> {
    let env = env_from(&opts);
    match opts.command {
        Command::Cluster(ClusterCommand::Create { name, nodes, config, wait, retain, disable, shared_storage }) => {
            let file = match &config {
                Some(p) => Some(config::load(p)?),
                None => None,
            };
            let spec = config::resolve(file, &config::Overrides { name, nodes, shared_storage })?;
            let opts = cluster::CreateOptions { spec, components: components(&disable), wait, retain };
            cluster::create(&env, opts, &cancel).await?;
        }
        Command::Cluster(ClusterCommand::Delete { name }) => cluster::delete(&env, &name)?,
        Command::Cluster(ClusterCommand::List) => {
            let clusters = cluster::list(&env)?;
            if clusters.is_empty() {
                println!("No clusters (rkube cluster create makes one).");
            } else {
                println!(
                    "{:<20} {:<9} {:>5}  {:<26} {:<17} {:<17} SERVICES",
                    "NAME", "PHASE", "NODES", "APISERVER", "NODE-NETWORK", "PODS"
                );
                for c in clusters {
                    println!(
                        "{:<20} {:<9} {:>5}  {:<26} {:<17} {:<17} {}",
                        c.name,
                        format!("{:?}", c.phase).to_lowercase(),
                        c.nodes.len(),
                        c.apiserver_url(),
                        c.plan.node_network.to_string(),
                        c.plan.pod_subnet.to_string(),
                        c.plan.service_subnet
                    );
                }
            }
        }
        Command::Cluster(ClusterCommand::Stop { name }) => cluster::stop(&env, &name)?,
        Command::Cluster(ClusterCommand::Start { name, wait }) => cluster::start(&env, &name, wait, &cancel).await?,
        Command::Node(NodeCommand::Add { cluster: c, name, labels, wait }) => {
            let labels = config::parse_labels(&labels)?;
            cluster::node_add(&env, &c, cluster::NodeAddOptions { name, labels, wait }, &cancel).await?;
        }
        Command::Node(NodeCommand::Remove { cluster: c, name }) => cluster::node_remove(&env, &c, &name).await?,
        Command::Image(ImageCommand::Load { cluster: c, archives }) => cluster::image_load(&env, &c, &archives)?,
        Command::Image(ImageCommand::Ls { cluster: c }) => {
            for image in cluster::image_list(&env, &c)? {
                println!("{image}");
            }
        }
        Command::Status { cluster: c } => status(&env, &c).await?,
        Command::Logs { component, node, cluster: c } => {
            let st = state::load(&env.state_root, &c)?;
            let comp = Component::parse(&component)
                .ok_or_else(|| anyhow::anyhow!("unknown component {component:?}: one of etcd, registry, apiserver, scheduler, controller-manager, dns, containerd, kubelet, proxy"))?;
            let node = match (comp.per_node(), node) {
                (true, Some(n)) => {
                    if st.node(&n).is_none() {
                        return Err(ClusterError::NoNode(n, c).into());
                    }
                    Some(n)
                }
                (true, None) => anyhow::bail!(
                    "{} runs on every node: pass --node (one of {})",
                    comp.name(),
                    st.nodes.iter().map(|n| n.spec.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                (false, _) => None,
            };
            let path = env.paths(&c).log_file(comp.name(), node.as_deref());
            let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            print!("{text}");
        }
    }
    Ok(())
}

async fn status(env: &Env, name: &str) -> anyhow::Result<()> {
    let st = state::load(&env.state_root, name)?;
    println!(
        "cluster {:?}: {}, apiserver {}, registry {}",
        st.name,
        format!("{:?}", st.phase).to_lowercase(),
        st.apiserver_url(),
        st.registry_addr()
    );
    println!("{:<20} {:<24} {:>8}  {:<8} LOG", "COMPONENT", "NODE", "PID", "STATE");
    let mut all_up = true;
    for p in cluster::processes(env, &st) {
        all_up &= p.pid.is_some();
        println!(
            "{:<20} {:<24} {:>8}  {:<8} {}",
            p.component.name(),
            p.node.as_deref().unwrap_or("(host)"),
            p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if p.pid.is_some() { "running" } else { "down" },
            p.log.display()
        );
    }
    if !st.components.proxy {
        println!(
            "{:<20} {:<24} {:>8}  {:<8} (not started: rkube-proxy is switched off)",
            "proxy", "(every node)", "-", "off"
        );
    }
    if !st.components.dns {
        println!("{:<20} {:<24} {:>8}  {:<8} (not started: rkube-dns is switched off)", "dns", "(host)", "-", "off");
    }
    if all_up && st.components.kubelet {
        match cluster::node_readiness(env, &st).await {
            Some(ready) => {
                for n in &st.nodes {
                    let r = if ready.contains(&n.spec.name) { "Ready" } else { "NotReady" };
                    println!(
                        "node {:<24} {:<15} pods {:<17} {r}",
                        n.spec.name,
                        n.ip.to_string(),
                        n.pod_cidr.to_string()
                    );
                }
            }
            None => println!("the apiserver does not answer"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let e = Options::try_parse_from(["rkube", "cluster", "create", "--nodez", "3"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        let e = Options::try_parse_from(["rkube", "cluster", "create", "--disable", "etcd"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let o = Options::try_parse_from([
            "rkube",
            "cluster",
            "create",
            "--name",
            "a",
            "--nodes",
            "2",
            "--disable",
            "proxy",
        ])
        .unwrap();
        assert!(matches!(o.command, Command::Cluster(ClusterCommand::Create { nodes: Some(2), .. })));
    }

    #[test]
    fn component_switches() {
        let c = components(&[]);
        assert!(c.kubelet && c.scheduler && c.controller_manager && c.proxy);
        let c = components(&["kubelet".into(), "proxy".into()]);
        assert!(!c.kubelet && !c.proxy && c.scheduler && c.dns);
        assert!(!components(&["dns".into()]).dns);
    }
}
