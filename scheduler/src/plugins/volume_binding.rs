//! VolumeBinding: a pod's PersistentVolumeClaims decide where it can run. A bound claim's
//! PersistentVolume node affinity must match the node; an unbound claim of a
//! `WaitForFirstConsumer` StorageClass needs an available matching volume on the node, or a
//! provisioner that may create one there (the class's `allowedTopologies`); an unbound claim
//! of an `Immediate` class waits for the PV controller, so the pod waits too.
//!
//! Not done here: upstream's PreBind, which writes the chosen volume's `claimRef` (or the
//! claim's `volume.kubernetes.io/selected-node` annotation for a provisioner) and waits for
//! the binding. This scheduler picks a node the claims could use and binds the pod only.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::node_affinity::{node_selector_matches, term_matches};
use super::{Handle, Listers};
use crate::framework::resource::parse_quantity;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};

pub const NAME: &str = "VolumeBinding";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

pub struct VolumeBinding {
    listers: Arc<dyn Listers>,
}

pub fn new(h: &Handle) -> Box<dyn Plugin> {
    Box::new(VolumeBinding { listers: h.listers.clone() })
}

const STATE_KEY: &str = "PreFilterVolumeBinding";

struct PreFilterState {
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound WaitForFirstConsumer claims with their class.
    delayed: Vec<(Arc<PersistentVolumeClaim>, Arc<StorageClass>)>,
    /// Available volumes (snapshot at PreFilter) the delayed claims may take.
    candidates: Vec<Arc<PersistentVolume>>,
}

fn pv_fits_node(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    match pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()) {
        Some(sel) => node_selector_matches(sel, node.labels(), &node.name),
        None => true,
    }
}

fn class_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// upstream `volume.FindMatchingVolume`, reduced to what a static volume must satisfy: same
/// class, unclaimed (or claimed by this claim), enough capacity, every requested access mode.
fn volume_matches_claim(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = pv.spec.as_ref() else { return false };
    if spec.storage_class_name.as_deref().unwrap_or("") != class_of_claim(claim) {
        return false;
    }
    if let Some(r) = spec.claim_ref.as_ref() {
        if r.uid.is_some() && r.uid != claim.metadata.uid {
            return false;
        }
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Available");
    if phase != "Available" && spec.claim_ref.is_none() {
        return false;
    }
    let want = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| parse_quantity(&q.0, false))
        .unwrap_or(0);
    let have = spec.capacity.as_ref().and_then(|c| c.get("storage")).map(|q| parse_quantity(&q.0, false)).unwrap_or(0);
    let modes = claim.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    let pv_modes = spec.access_modes.as_deref().unwrap_or(&[]);
    have >= want && modes.iter().all(|m| pv_modes.contains(m))
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        let claims: Vec<&str> = pod
            .spec()
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
            .collect();
        if claims.is_empty() {
            return Status::skip();
        }
        let mut s = PreFilterState { bound: Vec::new(), delayed: Vec::new(), candidates: Vec::new() };
        let mut unbound_immediate = false;
        for name in claims {
            let Some(claim) = self.listers.pvc(&pod.namespace, name) else {
                return Status::unresolvable(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if claim.metadata.deletion_timestamp.is_some() {
                return Status::unresolvable(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            match claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
                Some(pv_name) => match self.listers.pv(pv_name) {
                    Some(pv) => s.bound.push(pv),
                    None => return Status::unresolvable("pvc(s) bound to non-existent pv(s)"),
                },
                None => {
                    let sc = self.listers.storage_class(class_of_claim(&claim));
                    match sc {
                        Some(sc) if sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
                            s.delayed.push((claim, sc));
                        }
                        _ => unbound_immediate = true,
                    }
                }
            }
        }
        if unbound_immediate {
            return Status::unresolvable(ERR_REASON_UNBOUND_IMMEDIATE);
        }
        if !s.delayed.is_empty() {
            s.candidates = self.listers.pvs();
        }
        state.write(STATE_KEY, s);
        Status::success()
    }

    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(STATE_KEY) else { return Status::success() };
        if s.bound.iter().any(|pv| !pv_fits_node(pv, node)) {
            return Status::unresolvable(ERR_REASON_NODE_CONFLICT);
        }
        let mut taken: Vec<&str> = Vec::new();
        for (claim, sc) in &s.delayed {
            let found = s.candidates.iter().find(|pv| {
                let name = pv.metadata.name.as_deref().unwrap_or("");
                !taken.contains(&name) && volume_matches_claim(pv, claim) && pv_fits_node(pv, node)
            });
            if let Some(pv) = found {
                taken.push(pv.metadata.name.as_deref().unwrap_or(""));
                continue;
            }
            let provisioner_can = sc.provisioner != NO_PROVISIONER
                && sc.allowed_topologies.as_ref().is_none_or(|tops| {
                    tops.is_empty()
                        || tops.iter().any(|t| {
                            let term = k8s_openapi::api::core::v1::NodeSelectorTerm {
                                match_expressions: Some(
                                    t.match_label_expressions
                                        .iter()
                                        .flatten()
                                        .map(|e| k8s_openapi::api::core::v1::NodeSelectorRequirement {
                                            key: e.key.clone(),
                                            operator: "In".into(),
                                            values: Some(e.values.clone()),
                                        })
                                        .collect(),
                                ),
                                match_fields: None,
                            };
                            term_matches(&term, node.labels(), &node.name)
                        })
                });
            if !provisioner_can {
                return Status::unresolvable(ERR_REASON_BIND_CONFLICT);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod, with_labels};
    use apimachinery::labels::Selector;
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, Volume, VolumeNodeAffinity,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        pvcs: HashMap<String, Arc<PersistentVolumeClaim>>,
        pvs: HashMap<String, Arc<PersistentVolume>>,
        scs: HashMap<String, Arc<StorageClass>>,
    }
    impl Listers for Fake {
        fn pvc(&self, _: &str, n: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.pvcs.get(n).cloned()
        }
        fn pv(&self, n: &str) -> Option<Arc<PersistentVolume>> {
            self.pvs.get(n).cloned()
        }
        fn pvs(&self) -> Vec<Arc<PersistentVolume>> {
            self.pvs.values().cloned().collect()
        }
        fn storage_class(&self, n: &str) -> Option<Arc<StorageClass>> {
            self.scs.get(n).cloned()
        }
        fn default_selector(&self, _: &Pod) -> Option<Selector> {
            None
        }
    }

    fn claim(name: &str, class: &str, volume: Option<&str>) -> Arc<PersistentVolumeClaim> {
        Arc::new(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some(class.into()),
                volume_name: volume.map(str::to_string),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn local_pv(name: &str, class: &str, host: &str) -> Arc<PersistentVolume> {
        Arc::new(PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(class.into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: "kubernetes.io/hostname".into(),
                                operator: "In".into(),
                                values: Some(vec![host.into()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
        Arc::new(StorageClass {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        })
    }

    fn pod_with_claim(c: &str) -> PodInfo {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
            name: "v".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: c.into(), read_only: None }),
            ..Default::default()
        }]);
        PodInfo::new(p)
    }

    fn run(f: Fake, p: &PodInfo, nodes: &[&str]) -> (Status, Vec<Status>) {
        let plugin = VolumeBinding { listers: Arc::new(f) };
        let snap = Snapshot::from_nodes(
            nodes.iter().map(|n| node_info(with_labels(node(n, "1", "1Gi"), &[]), vec![])).collect(),
        );
        let mut st = CycleState::default();
        let pre = plugin.pre_filter(&mut st, p, &snap);
        let per = snap.nodes.iter().map(|n| plugin.filter(&st, p, n)).collect();
        (pre, per)
    }

    #[test]
    fn bound_claim_follows_its_volume_node_affinity() {
        let mut f = Fake::default();
        f.pvcs.insert("c".into(), claim("c", "local", Some("pv1")));
        f.pvs.insert("pv1".into(), local_pv("pv1", "local", "n2"));
        let (pre, per) = run(f, &pod_with_claim("c"), &["n1", "n2"]);
        assert!(pre.is_success());
        assert_eq!(per[0], Status::unresolvable(ERR_REASON_NODE_CONFLICT));
        assert!(per[1].is_success());
    }

    #[test]
    fn missing_claim_and_unbound_immediate_claim_reject_in_prefilter() {
        let (pre, _) = run(Fake::default(), &pod_with_claim("nope"), &["n1"]);
        assert_eq!(pre, Status::unresolvable("persistentvolumeclaim \"nope\" not found"));
        let mut f = Fake::default();
        f.pvcs.insert("c".into(), claim("c", "fast", None));
        f.scs.insert("fast".into(), class("fast", "Immediate", "example.com/csi"));
        let (pre, _) = run(f, &pod_with_claim("c"), &["n1"]);
        assert_eq!(pre, Status::unresolvable(ERR_REASON_UNBOUND_IMMEDIATE));
    }

    #[test]
    fn wait_for_first_consumer_claim_goes_where_a_volume_is_available() {
        let mut f = Fake::default();
        f.pvcs.insert("c".into(), claim("c", "local", None));
        f.scs.insert("local".into(), class("local", "WaitForFirstConsumer", NO_PROVISIONER));
        f.pvs.insert("pv1".into(), local_pv("pv1", "local", "n2"));
        let (pre, per) = run(f, &pod_with_claim("c"), &["n1", "n2"]);
        assert!(pre.is_success());
        assert_eq!(per[0], Status::unresolvable(ERR_REASON_BIND_CONFLICT));
        assert!(per[1].is_success());
    }

    #[test]
    fn wait_for_first_consumer_with_a_provisioner_fits_any_node() {
        let mut f = Fake::default();
        f.pvcs.insert("c".into(), claim("c", "csi", None));
        f.scs.insert("csi".into(), class("csi", "WaitForFirstConsumer", "example.com/csi"));
        let (_, per) = run(f, &pod_with_claim("c"), &["n1", "n2"]);
        assert!(per.iter().all(Status::is_success));
    }
}
