//! The state record of a cluster (`cluster.json`) and where everything of it lives on disk.
//! The record is written before anything is created, and every name a cluster uses on the
//! machine (netns, bridge, veths, cgroups, mounts) is derived from it, so `delete` can
//! remove whatever an interrupted `create` left.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::NodeSpec;
use crate::net::{AddressPlan, Ipv4Net};

pub const DEFAULT_STATE_ROOT: &str = "/var/lib/rkube/clusters";
const STATE_FILE: &str = "cluster.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a cluster record: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("no cluster {0:?} (rkube cluster list shows the clusters)")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// `create` is under way (or was interrupted: `delete` cleans it up).
    Creating,
    Running,
    Stopped,
}

/// Which processes the cluster runs (each can be switched off with `create --disable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    pub scheduler: bool,
    pub controller_manager: bool,
    pub kubelet: bool,
    pub proxy: bool,
    /// rkube-dns; records written before it existed start it too.
    #[serde(default = "yes")]
    pub dns: bool,
}

fn yes() -> bool {
    true
}

impl Default for Components {
    fn default() -> Self {
        Components { scheduler: true, controller_manager: true, kubelet: true, proxy: true, dns: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    #[serde(flatten)]
    pub spec: NodeSpec,
    /// Picks the node's address, pod /24 and veth name; stable across stop/start.
    pub slot: u32,
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    pub name: String,
    pub phase: Phase,
    pub created: String,
    pub plan: AddressPlan,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    /// The scheduler's and controller-manager's loopback health ports (free at create, so
    /// clusters side by side do not collide on the defaults).
    pub scheduler_port: u16,
    #[serde(default)]
    pub controller_manager_port: u16,
    pub components: Components,
    pub mirrors: Vec<String>,
    /// Where the rkube-* binaries were found at create time.
    pub bin_dir: PathBuf,
    pub nodes: Vec<NodeState>,
    /// Local-path volumes in one folder for all nodes, without node affinity.
    #[serde(default)]
    pub shared_storage: bool,
    /// `--feature-gates` for every component that takes it (`A=true,B=false`; empty = defaults).
    #[serde(default)]
    pub feature_gates: String,
}

impl ClusterState {
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.spec.name == name)
    }

    pub fn context_name(&self) -> String {
        format!("rkube-{}", self.name)
    }

    pub fn netns(&self, node: &str) -> String {
        format!("rkube-{}-{node}", self.name)
    }

    /// The node's cgroup subtree, in every hierarchy.
    pub fn cgroup(&self, node: &str) -> String {
        format!("rkube-{}-{node}", self.name)
    }

    /// The host end of the node's veth (15 characters at most).
    pub fn veth(&self, node: &NodeState) -> String {
        format!("rk{}n{}", self.plan.index, node.slot)
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://{}:{}", self.plan.host_ip, self.plan.apiserver_port)
    }

    pub fn registry_addr(&self) -> String {
        format!("{}:{}", self.plan.host_ip, self.plan.registry_port)
    }
}

/// The directory layout of one cluster.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, name: &str) -> Paths {
        Paths { dir: root.join(name) }
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn registry(&self) -> PathBuf {
        self.dir.join("registry")
    }
    /// The local-path provisioner's root: volume directories, per node or shared.
    pub fn local_path(&self) -> PathBuf {
        self.dir.join("local-path")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Holds the nodes' mount and UTS namespace files (a private bind mount).
    pub fn ns(&self) -> PathBuf {
        self.dir.join("ns")
    }
    pub fn mnt_ns(&self, node: &str) -> PathBuf {
        self.ns().join(format!("{node}.mnt"))
    }
    pub fn uts_ns(&self, node: &str) -> PathBuf {
        self.ns().join(format!("{node}.uts"))
    }
    pub fn node(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    pub fn containerd_sock(&self, node: &str) -> PathBuf {
        self.node(node).join("containerd.sock")
    }
    pub fn kubeconfig_for(&self, who: &str) -> PathBuf {
        self.pki().join(format!("{who}.kubeconfig"))
    }
    pub fn pid_file(&self, component: &str, node: Option<&str>) -> PathBuf {
        match node {
            Some(n) => self.run().join(format!("{n}.{component}.pid")),
            None => self.run().join(format!("{component}.pid")),
        }
    }
    pub fn log_file(&self, component: &str, node: Option<&str>) -> PathBuf {
        match node {
            Some(n) => self.logs().join(format!("{n}.{component}.log")),
            None => self.logs().join(format!("{component}.log")),
        }
    }
}

pub fn load(root: &Path, name: &str) -> Result<ClusterState, StateError> {
    let path = Paths::new(root, name).state_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::NotFound(name.to_owned())),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_str(&text).map_err(|source| StateError::Parse { path, source })
}

/// Writes the record atomically (temp file + rename), so a crash never leaves half a record.
pub fn save(root: &Path, state: &ClusterState) -> Result<(), StateError> {
    let paths = Paths::new(root, &state.name);
    std::fs::create_dir_all(&paths.dir).map_err(io(&paths.dir))?;
    let path = paths.state_file();
    let tmp = paths.dir.join(".cluster.json.tmp");
    let text =
        serde_json::to_string_pretty(state).map_err(|source| StateError::Parse { path: path.clone(), source })?;
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Names of every cluster with a record under `root`, sorted.
pub fn list(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(root)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(STATE_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Role;
    use crate::net::{node_addresses, plan_for, Requested};

    pub fn sample(name: &str, nodes: u32) -> ClusterState {
        let plan = plan_for(1, &Requested::default()).unwrap();
        let nodes = (0..nodes)
            .map(|slot| {
                let (ip, pod_cidr) = node_addresses(&plan, slot).unwrap();
                let spec = crate::config::node_spec(
                    crate::config::default_node_name(name, Role::Worker, slot as usize + 1),
                    Role::Worker,
                    Default::default(),
                    Vec::new(),
                    Vec::new(),
                )
                .unwrap();
                NodeState { spec, slot, ip, pod_cidr }
            })
            .collect();
        ClusterState {
            name: name.to_owned(),
            phase: Phase::Creating,
            created: "2026-11-22T18:00:00Z".to_owned(),
            plan,
            etcd_client_port: 40001,
            etcd_peer_port: 40002,
            scheduler_port: 40003,
            controller_manager_port: 40004,
            components: Components::default(),
            mirrors: crate::config::default_mirrors(),
            bin_dir: PathBuf::from("/opt/rkube/bin"),
            nodes,
            shared_storage: false,
            feature_gates: String::new(),
        }
    }

    #[test]
    fn save_load_list_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(list(dir.path()).unwrap(), Vec::<String>::new());
        let state = sample("dev", 2);
        save(dir.path(), &state).unwrap();
        save(dir.path(), &sample("alpha", 1)).unwrap();
        std::fs::create_dir_all(dir.path().join("not-a-cluster")).unwrap();
        assert_eq!(load(dir.path(), "dev").unwrap(), state);
        assert_eq!(list(dir.path()).unwrap(), ["alpha", "dev"]);
        assert!(matches!(load(dir.path(), "nope"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn derived_names() {
        let s = sample("dev", 2);
        assert_eq!(s.netns("dev-worker2"), "rkube-dev-dev-worker2");
        assert_eq!(s.veth(&s.nodes[1]), "rk1n1");
        assert_eq!(s.apiserver_url(), "https://198.19.16.1:6443");
        assert_eq!(s.registry_addr(), "198.19.16.1:5000");
        assert_eq!(s.context_name(), "rkube-dev");
    }
}
