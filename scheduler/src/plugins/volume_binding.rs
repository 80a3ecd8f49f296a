//! VolumeBinding: a pod's PersistentVolumeClaims decide where it can run. A bound claim's
//! PersistentVolume node affinity must match the node; an unbound claim of a
//! `WaitForFirstConsumer` StorageClass needs an available matching volume on the node, or a
//! provisioner that may create one there (the class's `allowedTopologies`); an unbound claim
//! of an `Immediate` class waits for the PV controller, so the pod waits too.
//!
//! Once a node is chosen, `assume` picks (as upstream's AssumePodVolumes) the static volume
//! each unbound WaitForFirstConsumer claim takes there, or marks it for provisioning, and
//! `pre_bind` (upstream's PreBind) writes the volumes' `claimRef`s and the claims'
//! `volume.kubernetes.io/selected-node`, then waits (bounded) until the PV controller has
//! bound every claim, before the pod itself is bound.

use std::sync::Arc;
use std::time::Duration;

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
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

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
        let names_claim = r.name == claim.metadata.name && r.namespace == claim.metadata.namespace;
        if !names_claim || (r.uid.is_some() && r.uid != claim.metadata.uid) {
            return false;
        }
    }
    if spec.volume_mode.as_deref().unwrap_or("Filesystem")
        != claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref()).unwrap_or("Filesystem")
    {
        return false;
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Available");
    if phase != "Available" && spec.claim_ref.is_none() {
        return false;
    }
    let want = claim_request(claim);
    let have = capacity(pv);
    let modes = claim.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    let pv_modes = spec.access_modes.as_deref().unwrap_or(&[]);
    have >= want && modes.iter().all(|m| pv_modes.contains(m))
}

fn claim_request(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| parse_quantity(&q.0, false))
        .unwrap_or(0)
}

fn capacity(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| parse_quantity(&q.0, false))
        .unwrap_or(0)
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

/// upstream's default `VolumeBindingArgs.bindTimeoutSeconds`.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(600);
const BIND_POLL: Duration = Duration::from_millis(100);

/// What PreBind does for one pod on its chosen node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodVolumes {
    pub node: String,
    /// Static volumes the pod's claims take (volume name, claim): PreBind writes the
    /// volume's `claimRef`.
    pub bindings: Vec<(String, Arc<PersistentVolumeClaim>)>,
    /// Claims to wait for without a write: their volume is already pre-bound to them.
    pub prebound: Vec<Arc<PersistentVolumeClaim>>,
    /// Claims a provisioner creates a volume for on `node`: PreBind sets their
    /// `volume.kubernetes.io/selected-node`.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl PodVolumes {
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.prebound.is_empty() && self.provisions.is_empty()
    }

    fn claims(&self) -> impl Iterator<Item = &Arc<PersistentVolumeClaim>> {
        self.bindings.iter().map(|(_, c)| c).chain(&self.prebound).chain(&self.provisions)
    }
}

fn claim_names(pod: &PodInfo) -> impl Iterator<Item = &str> {
    pod.spec()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
}

/// upstream FindPodVolumes + AssumePodVolumes on the chosen node: for every unbound
/// WaitForFirstConsumer claim, a volume pre-bound to it, else the smallest available
/// matching volume that fits the node and no other claim of this pod took, else provisioning.
pub fn assume(listers: &dyn Listers, pod: &PodInfo, node: &NodeInfo) -> PodVolumes {
    let mut out = PodVolumes { node: node.name.clone(), ..Default::default() };
    let mut pvs: Option<Vec<Arc<PersistentVolume>>> = None;
    let mut taken: Vec<String> = Vec::new();
    for name in claim_names(pod) {
        let Some(claim) = listers.pvc(&pod.namespace, name) else { continue };
        if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let delayed = listers
            .storage_class(class_of_claim(&claim))
            .is_some_and(|sc| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !delayed {
            continue;
        }
        let all = pvs.get_or_insert_with(|| listers.pvs());
        let usable = all.iter().filter(|pv| {
            !taken.iter().any(|t| Some(t.as_str()) == pv.metadata.name.as_deref())
                && volume_matches_claim(pv, &claim)
                && pv_fits_node(pv, node)
        });
        let prebound = |pv: &&Arc<PersistentVolume>| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some());
        let best = usable.min_by_key(|pv| (!prebound(pv), capacity(pv)));
        match best {
            Some(pv) => {
                let pv_name = pv.metadata.name.clone().unwrap_or_default();
                taken.push(pv_name.clone());
                if prebound(&pv) {
                    out.prebound.push(claim);
                } else {
                    out.bindings.push((pv_name, claim));
                }
            }
            None => out.provisions.push(claim),
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum PreBindError {
    #[error("binding volumes: {0}")]
    Write(#[from] crate::writer::WriteError),
    #[error("binding volumes: timed out waiting for the condition")]
    Timeout,
    #[error("binding volumes: {0}")]
    ClaimGone(String),
    #[error("binding volumes: the scheduler is stopping")]
    Cancelled,
}

/// upstream PreBind (BindPodVolumes): writes the claimRefs and selected-node annotations,
/// then waits until the PV controller has bound every claim, at most `timeout`.
pub async fn pre_bind(
    v: &PodVolumes,
    listers: &dyn Listers,
    writer: &dyn crate::writer::ApiWriter,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), PreBindError> {
    if v.is_empty() {
        return Ok(());
    }
    for (pv, claim) in &v.bindings {
        writer.bind_volume(pv, claim).await?;
    }
    for claim in &v.provisions {
        writer.select_node(claim, &v.node).await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if all_bound(v, listers)? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PreBindError::Timeout);
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(PreBindError::Cancelled),
            _ = tokio::time::sleep(BIND_POLL) => {}
        }
    }
}

/// upstream checkBindings: every claim still exists (the same object) and is bound.
fn all_bound(v: &PodVolumes, listers: &dyn Listers) -> Result<bool, PreBindError> {
    for want in v.claims() {
        let ns = want.metadata.namespace.as_deref().unwrap_or_default();
        let name = want.metadata.name.as_deref().unwrap_or_default();
        let Some(c) = listers.pvc(ns, name).filter(|c| c.metadata.uid == want.metadata.uid) else {
            return Err(PreBindError::ClaimGone(format!("persistentvolumeclaim {name:?} was deleted")));
        };
        let bound = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty())
            && c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED));
        if !bound {
            return Ok(false);
        }
    }
    Ok(true)
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

#[cfg(test)]
mod prebind_tests {
    use super::*;
    use crate::testutil::{node, node_info, pod, with_labels};
    use crate::writer::RecordingWriter;
    use apimachinery::labels::Selector;
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimSpec,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod, Volume, VolumeNodeAffinity,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::{BTreeMap, HashMap};

    #[derive(Default)]
    struct Fake {
        pvcs: HashMap<String, Arc<PersistentVolumeClaim>>,
        pvs: Vec<Arc<PersistentVolume>>,
        scs: HashMap<String, Arc<StorageClass>>,
    }
    impl Listers for Fake {
        fn pvc(&self, _: &str, n: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.pvcs.get(n).cloned()
        }
        fn pv(&self, n: &str) -> Option<Arc<PersistentVolume>> {
            self.pvs.iter().find(|p| p.metadata.name.as_deref() == Some(n)).cloned()
        }
        fn pvs(&self) -> Vec<Arc<PersistentVolume>> {
            self.pvs.clone()
        }
        fn storage_class(&self, n: &str) -> Option<Arc<StorageClass>> {
            self.scs.get(n).cloned()
        }
        fn default_selector(&self, _: &Pod) -> Option<Selector> {
            None
        }
    }

    fn claim(name: &str, bound_to: Option<&str>) -> Arc<PersistentVolumeClaim> {
        let annotations = bound_to.map(|_| BTreeMap::from([(ANN_BIND_COMPLETED.to_string(), "yes".to_string())]));
        Arc::new(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                annotations,
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("local".into()),
                volume_name: bound_to.map(str::to_string),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn pv(name: &str, size: &str, host: &str) -> Arc<PersistentVolume> {
        Arc::new(PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some("local".into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                capacity: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
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

    fn wffc() -> Arc<StorageClass> {
        Arc::new(StorageClass {
            metadata: ObjectMeta { name: Some("local".into()), ..Default::default() },
            provisioner: "rancher.io/local-path".into(),
            volume_binding_mode: Some("WaitForFirstConsumer".into()),
            ..Default::default()
        })
    }

    fn pod_with_claims(claims: &[&str]) -> PodInfo {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").volumes = Some(
            claims
                .iter()
                .map(|c| Volume {
                    name: c.to_string(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: c.to_string(),
                        read_only: None,
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        PodInfo::new(p)
    }

    fn n(name: &str) -> NodeInfo {
        node_info(with_labels(node(name, "1", "1Gi"), &[("kubernetes.io/hostname", name)]), vec![])
    }

    fn names(v: &PodVolumes) -> (Vec<(String, String)>, Vec<String>) {
        let b = v.bindings.iter().map(|(pv, c)| (pv.clone(), c.metadata.name.clone().unwrap_or_default())).collect();
        let p = v.provisions.iter().map(|c| c.metadata.name.clone().unwrap_or_default()).collect();
        (b, p)
    }

    #[test]
    fn assume_takes_the_smallest_volume_on_the_node_then_provisions_the_rest() {
        let mut f = Fake::default();
        f.scs.insert("local".into(), wffc());
        for c in ["a", "b"] {
            f.pvcs.insert(c.into(), claim(c, None));
        }
        f.pvcs.insert("done".into(), claim("done", Some("old")));
        f.pvs = vec![pv("big-n1", "5Gi", "n1"), pv("small-n1", "1Gi", "n1"), pv("tiny-n2", "1Mi", "n2")];
        let v = assume(&f, &pod_with_claims(&["a", "b", "done"]), &n("n1"));
        assert_eq!(v.node, "n1");
        assert_eq!(
            names(&v),
            (vec![("small-n1".into(), "a".into()), ("big-n1".into(), "b".into())], vec![]),
            "each claim its own volume, smallest first; a bound claim needs nothing"
        );
        let v = assume(&f, &pod_with_claims(&["a", "b"]), &n("n2"));
        assert_eq!(names(&v), (vec![("tiny-n2".into(), "a".into())], vec!["b".into()]));
    }

    #[test]
    fn volumes_prebound_elsewhere_or_of_another_mode_are_not_taken_and_a_prebound_one_wins() {
        let mut f = Fake::default();
        f.scs.insert("local".into(), wffc());
        f.pvcs.insert("a".into(), claim("a", None));
        let mut other = (*pv("for-other", "1Gi", "n1")).clone();
        other.spec.as_mut().expect("spec").claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            namespace: Some("default".into()),
            name: Some("other".into()),
            ..Default::default()
        });
        let mut block = (*pv("block", "1Gi", "n1")).clone();
        block.spec.as_mut().expect("spec").volume_mode = Some("Block".into());
        f.pvs = vec![Arc::new(other), Arc::new(block)];
        let v = assume(&f, &pod_with_claims(&["a"]), &n("n1"));
        assert_eq!(names(&v), (vec![], vec!["a".into()]));

        let mut mine = (*pv("mine", "9Gi", "n1")).clone();
        mine.spec.as_mut().expect("spec").claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            namespace: Some("default".into()),
            name: Some("a".into()),
            ..Default::default()
        });
        f.pvs = vec![pv("small", "1Gi", "n1"), Arc::new(mine)];
        let v = assume(&f, &pod_with_claims(&["a"]), &n("n1"));
        assert_eq!(names(&v), (vec![], vec![]));
        assert_eq!(v.prebound.len(), 1, "the volume pre-bound to the claim, no write needed");
    }

    #[tokio::test]
    async fn pre_bind_writes_claim_refs_and_selected_nodes_then_returns_once_bound() {
        let mut f = Fake::default();
        f.scs.insert("local".into(), wffc());
        f.pvcs.insert("a".into(), claim("a", None));
        f.pvcs.insert("b".into(), claim("b", None));
        f.pvs = vec![pv("pv-n1", "1Gi", "n1")];
        let v = assume(&f, &pod_with_claims(&["a", "b"]), &n("n1"));
        // The binder bound both by the time PreBind looks.
        f.pvcs.insert("a".into(), claim("a", Some("pv-n1")));
        f.pvcs.insert("b".into(), claim("b", Some("pvc-u-b")));
        let w = RecordingWriter::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        pre_bind(&v, &f, &w, BIND_TIMEOUT, &cancel).await.expect("bound");
        assert_eq!(*w.volume_binds.lock().expect("lock"), vec![("pv-n1".to_string(), "a".to_string())]);
        assert_eq!(*w.selected_nodes.lock().expect("lock"), vec![("b".to_string(), "n1".to_string())]);
    }

    #[tokio::test(start_paused = true)]
    async fn pre_bind_gives_up_after_the_bind_timeout_or_when_a_claim_goes() {
        let mut f = Fake::default();
        f.scs.insert("local".into(), wffc());
        f.pvcs.insert("a".into(), claim("a", None));
        let v = assume(&f, &pod_with_claims(&["a"]), &n("n1"));
        let w = RecordingWriter::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let started = tokio::time::Instant::now();
        let r = pre_bind(&v, &f, &w, Duration::from_secs(30), &cancel).await;
        assert!(matches!(r, Err(PreBindError::Timeout)), "{r:?}");
        assert!(started.elapsed() >= Duration::from_secs(30));
        f.pvcs.clear();
        let r = pre_bind(&v, &f, &w, Duration::from_secs(30), &cancel).await;
        assert!(matches!(r, Err(PreBindError::ClaimGone(_))), "{r:?}");
    }
}
