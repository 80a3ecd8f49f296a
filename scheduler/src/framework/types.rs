//! What the plugins read about pods and nodes, computed once per object (upstream
//! `framework.PodInfo` and `framework.NodeInfo`): a pod's requests, host ports and parsed
//! affinity terms; a node's allocatable, the pods on it and their summed requests, kept up to
//! date incrementally as pods come and go so no plugin re-adds them per scheduling attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use apimachinery::labels::Selector;
use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm};

use super::resource::{pod_requests, Resource};

/// One `hostPort` a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// upstream `HostPortInfo`: the same protocol and port conflict when either address is
    /// the wildcard or both are equal.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.port == o.port && self.protocol == o.protocol && (wild(&self.ip) || wild(&o.ip) || self.ip == o.ip)
    }
}

/// A pod (anti-)affinity term with its selector parsed and its namespaces resolved.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Namespaces the term looks at; empty with `all_namespaces` means every namespace.
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    pub selector: Selector,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(t: &PodAffinityTerm, own_namespace: &str) -> Self {
        let selector = t
            .label_selector
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| Selector::from_label_selector(&v).ok())
            .unwrap_or_else(Selector::nothing);
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        // upstream: an empty namespaceSelector selects every namespace; a non-empty one needs
        // namespace labels, which this scheduler does not watch (only the listed namespaces
        // count then).
        let all_namespaces = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        });
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(own_namespace.to_string());
        }
        AffinityTerm { namespaces, all_namespaces, selector, topology_key: t.topology_key.clone() }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        (self.all_namespaces || self.namespaces.contains(&pod.namespace)) && self.selector.matches(pod.labels())
    }
}

#[derive(Debug, Clone)]
pub struct WeightedTerm {
    pub weight: i32,
    pub term: AffinityTerm,
}

/// A pod as the scheduler sees it: the object (shared, never cloned) and what was derived
/// from it.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub priority: i32,
    /// What the pod needs to fit (init-container max rule and overhead applied).
    pub requests: Resource,
    /// cpu/memory with upstream's defaults for containers without requests, for scoring.
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedTerm>,
    pub preferred_anti_affinity: Vec<WeightedTerm>,
}

static EMPTY_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl PodInfo {
    pub fn new(mut pod: Pod) -> Self {
        // upstream's informers drop managedFields too: the scheduler never reads them.
        pod.metadata.managed_fields = None;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        static EMPTY_SPEC: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        let spec = pod.spec.as_ref().unwrap_or_else(|| EMPTY_SPEC.get_or_init(Default::default));
        let requests = pod_requests(spec, false);
        let nz = pod_requests(spec, true);
        let mut host_ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ip: p.host_ip.clone().unwrap_or_default(),
                        port: hp,
                    });
                }
            }
        }
        let aff = spec.affinity.as_ref();
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let req = |terms: Option<&Vec<PodAffinityTerm>>| {
            terms.into_iter().flatten().map(|t| AffinityTerm::parse(t, &namespace)).collect::<Vec<_>>()
        };
        let pref = |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|w| WeightedTerm { weight: w.weight, term: AffinityTerm::parse(&w.pod_affinity_term, &namespace) })
                .collect::<Vec<_>>()
        };
        PodInfo {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests,
            non_zero_cpu: nz.milli_cpu,
            non_zero_memory: nz.memory,
            host_ports,
            required_affinity: req(pa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
            required_anti_affinity: req(
                paa.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            ),
            preferred_affinity: pref(pa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())),
            preferred_anti_affinity: pref(
                paa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
            namespace,
            pod: Arc::new(pod),
        }
    }

    /// A bound pod for the cache: everything plugins read about placed pods is derived
    /// above, so the object keeps only its identity, labels, deletion and start time (a
    /// few hundred bytes instead of the whole Pod, for every pod in the cluster).
    pub fn new_bound(pod: Pod) -> Self {
        let mut info = Self::new(pod);
        let full = &info.pod;
        let slim = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: full.metadata.name.clone(),
                namespace: full.metadata.namespace.clone(),
                uid: full.metadata.uid.clone(),
                labels: full.metadata.labels.clone(),
                deletion_timestamp: full.metadata.deletion_timestamp.clone(),
                creation_timestamp: full.metadata.creation_timestamp.clone(),
                ..Default::default()
            },
            spec: None,
            status: full.status.as_ref().map(|s| k8s_openapi::api::core::v1::PodStatus {
                start_time: s.start_time.clone(),
                ..Default::default()
            }),
        };
        info.pod = Arc::new(slim);
        info
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY_LABELS)
    }

    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        self.pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }
}

/// A node and the pods the scheduler counts on it (bound, or assumed while binding).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub node: Option<Arc<Node>>,
    pub allocatable: Resource,
    pub pods: Vec<Arc<PodInfo>>,
    /// Sum of the pods' `requests`.
    pub requested: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub used_ports: Vec<HostPort>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    /// Image name (normalized, every tag/digest name the node reports) → size in bytes.
    pub images: std::collections::HashMap<String, i64>,
    /// Changes whenever anything above changes; the snapshot copies nodes whose generation moved.
    pub generation: u64,
}

static EMPTY_NODE_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl NodeInfo {
    pub fn new(name: &str) -> Self {
        NodeInfo {
            name: name.to_string(),
            node: None,
            allocatable: Resource::default(),
            pods: Vec::new(),
            requested: Resource::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            used_ports: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            images: Default::default(),
            generation: 0,
        }
    }

    pub fn set_node(&mut self, mut node: Node) {
        node.metadata.managed_fields = None;
        self.allocatable = Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        self.images.clear();
        for img in node.status.as_ref().and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for n in img.names.iter().flatten() {
                self.images.insert(normalize_image_name(n), img.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(Arc::new(node));
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref()).unwrap_or(&EMPTY_NODE_LABELS)
    }

    pub fn taints(&self) -> &[k8s_openapi::api::core::v1::Taint] {
        self.node.as_ref().and_then(|n| n.spec.as_ref()).and_then(|s| s.taints.as_deref()).unwrap_or(&[])
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_cpu += p.non_zero_cpu;
        self.non_zero_memory += p.non_zero_memory;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(p);
    }

    /// Removes the pod with this uid; false if it was not here.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_cpu -= p.non_zero_cpu;
        self.non_zero_memory -= p.non_zero_memory;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        true
    }
}

/// upstream `normalizedImageName`: a name without a tag or digest means `:latest`.
pub fn normalize_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{pod, pod_labels};

    #[test]
    fn bound_pod_keeps_what_plugins_read_about_placed_pods() {
        let mut p = pod_labels(pod("p", "1", "1Gi"), &[("app", "web")]);
        p.spec.as_mut().expect("spec").containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..Default::default()
        }]);
        let full = PodInfo::new(p.clone());
        let slim = PodInfo::new_bound(p);
        assert!(slim.pod.spec.is_none());
        assert_eq!(slim.requests, full.requests);
        assert_eq!(slim.host_ports, full.host_ports);
        assert_eq!(slim.labels(), full.labels());
        assert_eq!((slim.uid.as_str(), slim.key()), (full.uid.as_str(), full.key()));
    }
}
