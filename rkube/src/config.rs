//! The cluster config file (`kind: Cluster`, `apiVersion: rkube.dev/v1alpha1`), in kind's
//! spirit, and how it and the flags resolve into one `ClusterSpec`. Pure.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::net::Ipv4Net;

pub const API_VERSION: &str = "rkube.dev/v1alpha1";
pub const KIND: &str = "Cluster";
/// A cluster name is part of network namespace, cgroup and kubeconfig context names.
const MAX_CLUSTER_NAME: usize = 24;
/// Each node gets its own /24 out of the default /20 pod range.
pub const MAX_NODES: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {location}{field}{message}")]
    Parse { path: String, location: String, field: String, message: String },
    #[error("{path}: apiVersion must be {API_VERSION:?}, not {0:?}", path = .1)]
    ApiVersion(String, String),
    #[error("{path}: kind must be {KIND:?}, not {0:?}", path = .1)]
    Kind(String, String),
    #[error("invalid cluster name {0:?}: use at most {MAX_CLUSTER_NAME} lowercase letters, digits and '-', starting with a letter")]
    ClusterName(String),
    #[error("invalid node name {0:?}: use lowercase letters, digits and '-' (at most 40), starting with a letter")]
    NodeName(String),
    #[error("node name {0:?} is used twice")]
    DuplicateNode(String),
    #[error("a cluster needs 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(u32),
    #[error("invalid taint {0:?}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")]
    Taint(String),
    #[error("invalid label {0:?}: expected key=value")]
    Label(String),
    #[error("featureGates: {0}")]
    FeatureGates(#[from] component_base::featuregate::Error),
    #[error("extraPortMappings: hostPort {0} is used twice")]
    DuplicateHostPort(u16),
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// The default StorageClass's local-path volumes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageConfig {
    /// One folder for every node's volumes instead of one per node, and volumes without node
    /// affinity: a pod moved to another node keeps its data (the nodes share this host).
    #[serde(default)]
    pub shared: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub role: Role,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<String>,
    #[serde(default)]
    pub extra_port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Worker,
    /// The control plane itself runs on the host side; a `control-plane` node is a node with
    /// upstream's control-plane label and NoSchedule taint, as kubeadm makes them.
    ControlPlane,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    #[serde(default = "tcp")]
    pub protocol: Protocol,
}

fn tcp() -> Protocol {
    Protocol::Tcp
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn iptables(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default)]
    pub pod_subnet: Option<Ipv4Net>,
    #[serde(default)]
    pub service_subnet: Option<Ipv4Net>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    /// Upstream registries every node's containerd resolves through the cluster registry.
    #[serde(default = "default_mirrors")]
    pub mirrors: Vec<String>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { mirrors: default_mirrors() }
    }
}

pub fn default_mirrors() -> Vec<String> {
    vec!["docker.io".to_owned(), "registry.k8s.io".to_owned()]
}

/// Reads and checks a config file; errors name the line, column and field.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
    parse(&text, &shown)
}

pub fn parse(text: &str, path: &str) -> Result<ClusterConfig, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let config: ClusterConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location =
            inner.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
        let field = if field == "." { String::new() } else { field };
        let message = inner.to_string();
        // serde_yaml appends " at line N column M"; the location is already in front
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        // serde_yaml already puts the path in front of some messages
        let field = if field.is_empty() || message.starts_with(&format!("{field}: ")) {
            String::new()
        } else {
            format!("{field}: ")
        };
        ConfigError::Parse { path: path.to_owned(), location, field, message }
    })?;
    if config.api_version != API_VERSION {
        return Err(ConfigError::ApiVersion(config.api_version, path.to_owned()));
    }
    if config.kind != KIND {
        return Err(ConfigError::Kind(config.kind, path.to_owned()));
    }
    Ok(config)
}

/// The flags of `cluster create` that can override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub nodes: Option<u32>,
    /// `--shared-storage`: turns `storage.shared` on.
    pub shared_storage: bool,
}

/// One node as the cluster will run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    pub name: String,
    pub role: Role,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    #[serde(default)]
    pub extra_port_mappings: Vec<PortMapping>,
}

/// The resolved cluster, before addresses are assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    pub pod_subnet: Option<Ipv4Net>,
    pub service_subnet: Option<Ipv4Net>,
    pub mirrors: Vec<String>,
    pub shared_storage: bool,
    /// Passed to every component that takes `--feature-gates`, as kind does.
    pub feature_gates: component_base::featuregate::FeatureGates,
}

pub const DEFAULT_NAME: &str = "rkube";
pub const DEFAULT_NODES: u32 = 3;

/// kind's naming: `<cluster>-worker`, `<cluster>-worker2`, ...
pub fn default_node_name(cluster: &str, role: Role, ordinal: usize) -> String {
    let base = match role {
        Role::Worker => "worker",
        Role::ControlPlane => "control-plane",
    };
    if ordinal <= 1 {
        format!("{cluster}-{base}")
    } else {
        format!("{cluster}-{base}{ordinal}")
    }
}

/// Merges the file (if any) and the flags; flags win.
pub fn resolve(file: Option<ClusterConfig>, flags: &Overrides) -> Result<ClusterSpec, ConfigError> {
    let file = file.unwrap_or_else(|| ClusterConfig {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        ..ClusterConfig::default()
    });
    // Checked here so a wrong gate stops `create` before anything is made, not a component.
    let feature_gates = component_base::featuregate::FeatureGates::from_map(&file.feature_gates)?;
    let name = flags.name.clone().or(file.name.clone()).unwrap_or_else(|| DEFAULT_NAME.to_owned());
    validate_cluster_name(&name)?;
    let mut nodes_cfg = file.nodes.clone();
    let count = flags.nodes.unwrap_or(if nodes_cfg.is_empty() { DEFAULT_NODES } else { nodes_cfg.len() as u32 });
    if count == 0 || count > MAX_NODES {
        return Err(ConfigError::NodeCount(count));
    }
    nodes_cfg.truncate(count as usize);
    while (nodes_cfg.len() as u32) < count {
        nodes_cfg.push(NodeConfig::default());
    }
    let mut ordinals: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut nodes = Vec::new();
    for node in nodes_cfg {
        let key = match node.role {
            Role::Worker => "worker",
            Role::ControlPlane => "control-plane",
        };
        // named nodes do not use up a default name
        let name = match node.name.clone() {
            Some(n) => n,
            None => {
                let ordinal = ordinals.entry(key).or_insert(0);
                *ordinal += 1;
                default_node_name(&name, node.role, *ordinal)
            }
        };
        nodes.push(node_spec(name, node.role, node.labels, node.taints, node.extra_port_mappings)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut ports = std::collections::BTreeSet::new();
    for n in &nodes {
        if !seen.insert(n.name.clone()) {
            return Err(ConfigError::DuplicateNode(n.name.clone()));
        }
        for m in &n.extra_port_mappings {
            if !ports.insert(m.host_port) {
                return Err(ConfigError::DuplicateHostPort(m.host_port));
            }
        }
    }
    Ok(ClusterSpec {
        name,
        nodes,
        pod_subnet: file.networking.pod_subnet,
        service_subnet: file.networking.service_subnet,
        mirrors: file.registry.mirrors,
        shared_storage: flags.shared_storage || file.storage.shared,
        feature_gates,
    })
}

/// Checks a node's name, labels and taints and adds the role's label and taint.
pub fn node_spec(
    name: String,
    role: Role,
    mut labels: BTreeMap<String, String>,
    mut taints: Vec<String>,
    extra_port_mappings: Vec<PortMapping>,
) -> Result<NodeSpec, ConfigError> {
    validate_node_name(&name)?;
    if role == Role::ControlPlane {
        labels.entry("node-role.kubernetes.io/control-plane".to_owned()).or_default();
        let taint = "node-role.kubernetes.io/control-plane:NoSchedule".to_owned();
        if !taints.contains(&taint) {
            taints.push(taint);
        }
    }
    for (k, v) in &labels {
        if k.is_empty() || k.contains('=') || k.contains(',') || v.contains(',') || v.contains('=') {
            return Err(ConfigError::Label(format!("{k}={v}")));
        }
    }
    for t in &taints {
        parse_taint(t)?;
    }
    Ok(NodeSpec { name, role, labels, taints, extra_port_mappings })
}

/// Parses `key=value,key2=value2` as `--labels` takes it.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| ConfigError::Label(part.to_owned()))?;
        if k.trim().is_empty() {
            return Err(ConfigError::Label(part.to_owned()));
        }
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// `key[=value]:Effect`, as the kubelet's --register-with-taints takes it.
pub fn parse_taint(s: &str) -> Result<(String, String, String), ConfigError> {
    let bad = || ConfigError::Taint(s.to_owned());
    let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(bad());
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    if k.is_empty() || k.contains(',') || v.contains(',') {
        return Err(bad());
    }
    Ok((k.to_owned(), v.to_owned(), effect.to_owned()))
}

fn dns_label_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn validate_cluster_name(name: &str) -> Result<(), ConfigError> {
    if dns_label_ok(name, MAX_CLUSTER_NAME) {
        Ok(())
    } else {
        Err(ConfigError::ClusterName(name.to_owned()))
    }
}

pub fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    if dns_label_ok(name, 40) {
        Ok(())
    } else {
        Err(ConfigError::NodeName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
apiVersion: rkube.dev/v1alpha1
kind: Cluster
name: dev
nodes:
- role: control-plane
- role: worker
  labels: {tier: web}
  extraPortMappings:
  - {containerPort: 30080, hostPort: 8080}
- role: worker
  name: big
  taints: [gpu=true:NoSchedule]
networking:
  podSubnet: 198.18.128.0/17
  serviceSubnet: 198.19.200.0/24
registry:
  mirrors: [docker.io, registry.k8s.io, quay.io]
";

    #[test]
    fn full_file_resolves() {
        let spec = resolve(Some(parse(FULL, "c.yaml").unwrap()), &Overrides::default()).unwrap();
        assert_eq!(spec.name, "dev");
        let names: Vec<_> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["dev-control-plane", "dev-worker", "big"]);
        assert_eq!(spec.nodes[0].taints, ["node-role.kubernetes.io/control-plane:NoSchedule"]);
        assert_eq!(spec.nodes[0].labels.get("node-role.kubernetes.io/control-plane").map(String::as_str), Some(""));
        assert_eq!(spec.nodes[1].labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(
            spec.nodes[1].extra_port_mappings,
            [PortMapping { container_port: 30080, host_port: 8080, protocol: Protocol::Tcp }]
        );
        assert_eq!(spec.nodes[2].taints, ["gpu=true:NoSchedule"]);
        assert_eq!(spec.pod_subnet, Some("198.18.128.0/17".parse().unwrap()));
        assert_eq!(spec.mirrors, ["docker.io", "registry.k8s.io", "quay.io"]);
    }

    #[test]
    fn feature_gates_from_the_file() {
        let text = "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\n\
                    featureGates:\n  MaxUnavailableStatefulSet: true\n  SchedulerPopFromBackoffQ: false\n";
        let spec = resolve(Some(parse(text, "c").unwrap()), &Overrides::default()).unwrap();
        assert_eq!(spec.feature_gates.to_flag(), "MaxUnavailableStatefulSet=true,SchedulerPopFromBackoffQ=false");
        assert_eq!(resolve(None, &Overrides::default()).unwrap().feature_gates.to_flag(), "");
    }

    #[test]
    fn shared_storage_from_the_file_or_the_flag() {
        let text = "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nstorage:\n  shared: true\n";
        let spec = resolve(Some(parse(text, "c.yaml").unwrap()), &Overrides::default()).unwrap();
        assert!(spec.shared_storage);
        assert!(!resolve(None, &Overrides::default()).unwrap().shared_storage);
        assert!(resolve(None, &Overrides { shared_storage: true, ..Default::default() }).unwrap().shared_storage);
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse(FULL, "c.yaml").unwrap();
        let spec = resolve(
            Some(file.clone()),
            &Overrides { name: Some("other".into()), nodes: Some(5), ..Default::default() },
        )
        .unwrap();
        assert_eq!(spec.name, "other");
        let names: Vec<_> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["other-control-plane", "other-worker", "big", "other-worker2", "other-worker3"]);
        let spec = resolve(Some(file), &Overrides { name: None, nodes: Some(1), ..Default::default() }).unwrap();
        assert_eq!(spec.nodes.len(), 1);
    }

    #[test]
    fn defaults_without_a_file() {
        let spec = resolve(None, &Overrides::default()).unwrap();
        assert_eq!(spec.name, "rkube");
        let names: Vec<_> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["rkube-worker", "rkube-worker2", "rkube-worker3"]);
        assert_eq!(spec.mirrors, default_mirrors());
    }

    #[test]
    fn errors_name_line_and_field() {
        let text = "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnodes:\n- role: worker\n- role: master\n";
        let e = parse(text, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml: line 5, column 9: nodes[1].role: unknown variant `master`"), "{e}");

        let text = "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnetworking:\n  podSubnet: 10.0.0.1/8\n";
        let e = parse(text, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("networking.podSubnet") && e.contains("host bits"), "{e}");

        let text = "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnodez: []\n";
        let e = parse(text, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("unknown field `nodez`"), "{e}");

        let e = parse("apiVersion: kind.x-k8s.io/v1alpha4\nkind: Cluster\n", "c.yaml").unwrap_err().to_string();
        assert!(e.contains("apiVersion must be \"rkube.dev/v1alpha1\""), "{e}");
        let e = parse("nodes: [\n", "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml: line"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let flags = |name: &str, nodes| Overrides { name: Some(name.into()), nodes: Some(nodes), ..Default::default() };
        assert!(matches!(resolve(None, &flags("Bad_Name", 1)), Err(ConfigError::ClusterName(_))));
        assert!(matches!(resolve(None, &flags("ok", 0)), Err(ConfigError::NodeCount(0))));
        assert!(matches!(resolve(None, &flags("ok", 17)), Err(ConfigError::NodeCount(17))));
        let file = parse("apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnodes:\n- taints: [nope]\n", "c").unwrap();
        assert!(matches!(resolve(Some(file), &Overrides::default()), Err(ConfigError::Taint(_))));
        let file = parse("apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnodes:\n- name: a\n- name: a\n", "c").unwrap();
        assert!(matches!(resolve(Some(file), &Overrides::default()), Err(ConfigError::DuplicateNode(_))));
        let file = parse("apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nfeatureGates: {Foo: true}\n", "c").unwrap();
        let e = resolve(Some(file), &Overrides::default()).unwrap_err();
        assert_eq!(e.to_string(), "featureGates: unrecognized feature gate: Foo");
    }

    #[test]
    fn labels_and_taints() {
        let l = parse_labels("a=b, tier=web").unwrap();
        assert_eq!(l.get("tier").map(String::as_str), Some("web"));
        assert!(parse_labels("novalue").is_err());
        assert_eq!(parse_taint("k:NoExecute").unwrap(), ("k".into(), "".into(), "NoExecute".into()));
        assert!(parse_taint("k=v:Sometimes").is_err());
    }
}
