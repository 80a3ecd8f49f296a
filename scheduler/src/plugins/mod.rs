//! The in-tree plugins, one file each, named as upstream's (`pkg/scheduler/framework/plugins`),
//! and the one registry list the default profile is built from.

pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use std::sync::Arc;

use apimachinery::labels::Selector;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::framework::cycle::Framework;
use crate::framework::Plugin;

/// Read access to the objects plugins need besides pods and nodes (reflector stores in the
/// scheduler, maps in unit tests).
pub trait Listers: Send + Sync {
    fn pvc(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn pv(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    fn pvs(&self) -> Vec<Arc<PersistentVolume>>;
    fn storage_class(&self, name: &str) -> Option<Arc<StorageClass>>;
    /// upstream `helper.DefaultSelector`: the selectors of the Services, ReplicationControllers,
    /// ReplicaSets and StatefulSets that select this pod, ANDed; None when there are none.
    fn default_selector(&self, pod: &Pod) -> Option<Selector>;
    /// PodDisruptionBudgets, for preemption.
    fn pdbs(&self) -> Vec<default_preemption::Pdb> {
        Vec::new()
    }
}

/// Listers with nothing in them.
pub struct NoListers;

impl Listers for NoListers {
    fn pvc(&self, _: &str, _: &str) -> Option<Arc<PersistentVolumeClaim>> {
        None
    }
    fn pv(&self, _: &str) -> Option<Arc<PersistentVolume>> {
        None
    }
    fn pvs(&self) -> Vec<Arc<PersistentVolume>> {
        Vec::new()
    }
    fn storage_class(&self, _: &str) -> Option<Arc<StorageClass>> {
        None
    }
    fn default_selector(&self, _: &Pod) -> Option<Selector> {
        None
    }
}

/// What a plugin may be built with.
#[derive(Clone)]
pub struct Handle {
    pub listers: Arc<dyn Listers>,
}

/// One entry of the registry: the plugin's name, constructor, whether it filters, and its
/// weight in the default profile (0 = does not score).
pub struct Registration {
    pub name: &'static str,
    pub new: fn(&Handle) -> Box<dyn Plugin>,
    pub filter: bool,
    pub score_weight: i64,
}

/// upstream's default profile (`getDefaultPlugins`), in its order, with its score weights.
/// DefaultPreemption (PostFilter) and DefaultBinder (Bind) are not per-node plugins and live
/// in `default_preemption` and `crate::scheduler`.
pub static REGISTRY: &[Registration] = &[
    Registration { name: node_unschedulable::NAME, new: node_unschedulable::new, filter: true, score_weight: 0 },
    Registration { name: node_name::NAME, new: node_name::new, filter: true, score_weight: 0 },
    Registration { name: taint_toleration::NAME, new: taint_toleration::new, filter: true, score_weight: 3 },
    Registration { name: node_affinity::NAME, new: node_affinity::new, filter: true, score_weight: 2 },
    Registration { name: node_ports::NAME, new: node_ports::new, filter: true, score_weight: 0 },
    Registration { name: node_resources_fit::NAME, new: node_resources_fit::new, filter: true, score_weight: 1 },
    Registration { name: volume_binding::NAME, new: volume_binding::new, filter: true, score_weight: 0 },
    Registration { name: pod_topology_spread::NAME, new: pod_topology_spread::new, filter: true, score_weight: 2 },
    Registration { name: inter_pod_affinity::NAME, new: inter_pod_affinity::new, filter: true, score_weight: 2 },
    Registration {
        name: node_resources_balanced_allocation::NAME,
        new: node_resources_balanced_allocation::new,
        filter: false,
        score_weight: 1,
    },
    Registration { name: image_locality::NAME, new: image_locality::new, filter: false, score_weight: 1 },
];

/// The default profile built from `REGISTRY`.
pub fn default_framework(handle: &Handle, percentage_of_nodes_to_score: usize) -> Framework {
    let mut fw =
        Framework { plugins: Vec::new(), filters: Vec::new(), scorers: Vec::new(), percentage_of_nodes_to_score };
    for r in REGISTRY {
        let i = fw.plugins.len();
        fw.plugins.push((r.new)(handle));
        if r.filter {
            fw.filters.push(i);
        }
        if r.score_weight > 0 {
            fw.scorers.push((i, r.score_weight));
        }
    }
    fw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_match_the_plugins() {
        let fw = default_framework(&Handle { listers: Arc::new(NoListers) }, 0);
        for (r, p) in REGISTRY.iter().zip(&fw.plugins) {
            assert_eq!(r.name, p.name());
        }
    }

    #[test]
    fn default_profile_weights_are_upstreams() {
        let w: Vec<(&str, i64)> =
            REGISTRY.iter().filter(|r| r.score_weight > 0).map(|r| (r.name, r.score_weight)).collect();
        assert_eq!(
            w,
            [
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 1),
                ("PodTopologySpread", 2),
                ("InterPodAffinity", 2),
                ("NodeResourcesBalancedAllocation", 1),
                ("ImageLocality", 1)
            ]
        );
    }
}
