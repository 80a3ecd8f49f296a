//! What one sync of a claim or a volume should do (upstream `syncClaim`, `syncUnboundClaim`,
//! `syncBoundClaim`, `syncVolume`, `reclaimVolume`), decided from the objects alone. The
//! controller turns a decision into API writes; the tests compare decisions.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::ann;
use super::matching::{check_volume_satisfies_claim, claim_class, find_matching_volume};

/// An event to record: type, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ev {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn normal(reason: &'static str, message: impl Into<String>) -> Ev {
    Ev { type_: "Normal", reason, message: message.into() }
}

fn warning(reason: &'static str, message: impl Into<String>) -> Ev {
    Ev { type_: "Warning", reason, message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimDecision {
    /// upstream RetroactiveDefaultStorageClass: a claim without a class gets the default one.
    SetDefaultClass(String),
    /// Bind both sides (each step is skipped when already done) and mark the claim Bound.
    Bind(Arc<PersistentVolume>),
    /// Hand the claim to an external provisioner: the storage-provisioner annotations.
    Provision {
        provisioner: String,
        event: Ev,
    },
    Pending(Option<Ev>),
    Lost(Ev),
}

#[derive(Debug, Clone, PartialEq)]
pub enum VolumeDecision {
    /// No claim (or a user's pre-bind without uid): Available.
    Available,
    Bound,
    /// The claim is mid-bind (its `volumeName` is still empty): let its sync finish.
    SyncClaim,
    /// The claim went to another volume: drop the controller's claimRef (or just its uid
    /// when a user pre-bound the volume), and the volume is Available again.
    Unbind {
        keep_name: bool,
    },
    /// The claim is gone: Released, then the reclaim policy.
    Release,
    /// Released and Retain: the data stays until an administrator acts.
    Retain,
    /// Released and Delete with a provisioner: it deletes the storage and then the volume.
    WaitForProvisioner,
    /// Released but nothing can reclaim it: Failed.
    Fail(Ev),
    /// Failed already: an administrator's turn.
    Stay,
}

pub fn has_ann(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> bool {
    m.annotations.as_ref().is_some_and(|a| a.contains_key(key))
}

fn volume_name(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|n| !n.is_empty())
}

/// upstream `IsDelayBindingMode`.
pub fn is_delay_binding(class: Option<&StorageClass>) -> bool {
    class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

/// upstream `GetDefaultClass`: the newest class annotated as default (either annotation).
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<&Arc<StorageClass>> {
    classes
        .iter()
        .filter(|c| {
            let a = c.metadata.annotations.as_ref();
            [ann::IS_DEFAULT_CLASS, ann::BETA_IS_DEFAULT_CLASS]
                .iter()
                .any(|k| a.and_then(|a| a.get(*k)).is_some_and(|v| v == "true"))
        })
        .max_by(|a, b| {
            let t = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

pub struct ClaimInputs<'a> {
    pub claim: &'a PersistentVolumeClaim,
    pub volumes: &'a [Arc<PersistentVolume>],
    /// The claim's class, if it exists.
    pub class: Option<&'a StorageClass>,
    pub default_class: Option<&'a str>,
    /// The node in the claim's `volume.kubernetes.io/selected-node`, if it exists.
    pub selected_node: Option<&'a Node>,
}

pub fn decide_claim(i: &ClaimInputs) -> ClaimDecision {
    let c = i.claim;
    let bound = has_ann(&c.metadata, ann::BIND_COMPLETED);
    let find = |name: &str| i.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(name)).cloned();
    if bound {
        let Some(name) = volume_name(c) else {
            return ClaimDecision::Lost(warning(
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            ));
        };
        let Some(v) = find(name) else {
            return ClaimDecision::Lost(warning(
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            ));
        };
        return match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => ClaimDecision::Bind(v),
            Some(r) if r.uid == c.metadata.uid => ClaimDecision::Bind(v),
            Some(_) => ClaimDecision::Lost(warning(
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )),
        };
    }
    if let Some(name) = volume_name(c) {
        // The user asked for this volume by name.
        let Some(v) = find(name) else { return ClaimDecision::Pending(None) };
        return match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => match check_volume_satisfies_claim(&v, c) {
                Ok(()) => ClaimDecision::Bind(v),
                Err(why) => ClaimDecision::Pending(Some(warning(
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume {name:?}: {why}"),
                ))),
            },
            Some(_) if super::matching::is_volume_bound_to_claim(&v, c) => ClaimDecision::Bind(v),
            Some(_) => ClaimDecision::Pending(Some(warning(
                "FailedBinding",
                format!("volume {name:?} already bound to a different claim."),
            ))),
        };
    }
    let has_class = c.spec.as_ref().is_some_and(|s| s.storage_class_name.is_some())
        || has_ann(&c.metadata, ann::BETA_STORAGE_CLASS);
    if !has_class {
        if let Some(d) = i.default_class {
            return ClaimDecision::SetDefaultClass(d.to_string());
        }
    }
    let delay = is_delay_binding(i.class);
    let selected = has_ann(&c.metadata, ann::SELECTED_NODE);
    let node = if delay && selected { i.selected_node } else { None };
    if let Some(v) = find_matching_volume(c, i.volumes, node, delay) {
        return ClaimDecision::Bind(v.clone());
    }
    if delay && !selected {
        return ClaimDecision::Pending(Some(normal(
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )));
    }
    let class_name = claim_class(c);
    if class_name.is_empty() {
        return ClaimDecision::Pending(Some(normal(
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )));
    }
    match i.class {
        None => ClaimDecision::Pending(Some(warning(
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        ))),
        Some(sc) if sc.provisioner == ann::NO_PROVISIONER => ClaimDecision::Pending(Some(warning(
            "ProvisioningFailed",
            format!("no volume plugin matched name: {}", ann::NO_PROVISIONER),
        ))),
        Some(sc) => ClaimDecision::Provision {
            provisioner: sc.provisioner.clone(),
            event: normal(
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the \
                     system administrator. If volume creation is delayed, please verify that the provisioner is \
                     running and correctly registered.",
                    sc.provisioner
                ),
            ),
        },
    }
}

/// `claim` is the live claim the volume's `claimRef` names (same namespace and name), if any.
pub fn decide_volume(v: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumeDecision {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return VolumeDecision::Available };
    if r.uid.as_deref().unwrap_or("").is_empty() {
        return VolumeDecision::Available;
    }
    let claim = claim.filter(|c| c.metadata.uid == r.uid);
    let phase = v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let Some(c) = claim else {
        return match phase {
            "Failed" => VolumeDecision::Stay,
            "Released" => reclaim(v),
            _ => VolumeDecision::Release,
        };
    };
    match volume_name(c) {
        None => VolumeDecision::SyncClaim,
        Some(n) if Some(n) == v.metadata.name.as_deref() => VolumeDecision::Bound,
        Some(_) => VolumeDecision::Unbind { keep_name: !has_ann(&v.metadata, ann::BOUND_BY_CONTROLLER) },
    }
}

fn reclaim_failure(v: &PersistentVolume) -> Ev {
    let name = v.metadata.name.as_deref().unwrap_or("");
    match policy(v) {
        "Recycle" => warning("VolumeFailedRecycle", format!("No recycler plugin found for the volume {name:?}")),
        _ => warning(
            "VolumeFailedDelete",
            format!("error getting deleter volume plugin for volume {name:?}: no deletable volume plugin matched"),
        ),
    }
}

pub fn policy(v: &PersistentVolume) -> &str {
    v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain")
}

/// upstream `reclaimVolume` for a Released volume.
fn reclaim(v: &PersistentVolume) -> VolumeDecision {
    match policy(v) {
        "Delete" if has_ann(&v.metadata, ann::PROVISIONED_BY) => VolumeDecision::WaitForProvisioner,
        "Delete" | "Recycle" => VolumeDecision::Fail(reclaim_failure(v)),
        _ => VolumeDecision::Retain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::persistentvolume::matching::tests::{claimed, node, on_host, pv, pvc};
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use std::collections::BTreeMap;

    const RWO: &[&str] = &["ReadWriteOnce"];

    fn class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
        StorageClass {
            metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        }
    }

    fn annotate<T: kube::Resource>(mut o: T, k: &str, v: &str) -> T {
        o.meta_mut().annotations.get_or_insert_with(BTreeMap::new).insert(k.into(), v.into());
        o
    }

    fn with_volume_name(mut c: PersistentVolumeClaim, v: &str) -> PersistentVolumeClaim {
        c.spec.as_mut().expect("spec").volume_name = Some(v.into());
        c
    }

    fn phase(mut v: PersistentVolume, p: &str) -> PersistentVolume {
        v.status = Some(PersistentVolumeStatus { phase: Some(p.into()), ..Default::default() });
        v
    }

    fn policy(mut v: PersistentVolume, p: &str) -> PersistentVolume {
        v.spec.as_mut().expect("spec").persistent_volume_reclaim_policy = Some(p.into());
        v
    }

    fn decide(c: &PersistentVolumeClaim, vols: Vec<PersistentVolume>, class: Option<&StorageClass>) -> ClaimDecision {
        let vols: Vec<Arc<PersistentVolume>> = vols.into_iter().map(Arc::new).collect();
        let n = node("n1");
        decide_claim(&ClaimInputs {
            claim: c,
            volumes: &vols,
            class,
            default_class: Some("standard"),
            selected_node: Some(&n),
        })
    }

    fn bound_to(d: &ClaimDecision) -> Option<&str> {
        match d {
            ClaimDecision::Bind(v) => v.metadata.name.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn unbound_claim_binds_to_a_matching_volume() {
        let c = pvc("c", "1Gi", Some("manual"), RWO);
        assert_eq!(bound_to(&decide(&c, vec![pv("v", "1Gi", "manual", RWO)], None)), Some("v"));
    }

    #[test]
    fn claim_without_a_class_gets_the_default_class() {
        let c = pvc("c", "1Gi", None, RWO);
        assert_eq!(decide(&c, vec![], None), ClaimDecision::SetDefaultClass("standard".into()));
        // An explicit "" means "no class" and is left alone.
        let c = pvc("c", "1Gi", Some(""), RWO);
        assert!(matches!(decide(&c, vec![], None), ClaimDecision::Pending(Some(Ev { reason: "FailedBinding", .. }))));
    }

    #[test]
    fn wait_for_first_consumer_waits_for_the_selected_node_then_provisions() {
        let sc = class("standard", "WaitForFirstConsumer", "rancher.io/local-path");
        let c = pvc("c", "1Gi", Some("standard"), RWO);
        // A free volume is the scheduler's to pick, not the binder's.
        let d = decide(&c, vec![pv("free", "1Gi", "standard", RWO)], Some(&sc));
        assert_eq!(
            d,
            ClaimDecision::Pending(Some(normal(
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding"
            )))
        );
        let c = annotate(c, ann::SELECTED_NODE, "n1");
        match decide(&c, vec![], Some(&sc)) {
            ClaimDecision::Provision { provisioner, event } => {
                assert_eq!(provisioner, "rancher.io/local-path");
                assert_eq!(event.reason, "ExternalProvisioning");
            }
            d => panic!("expected provisioning, got {d:?}"),
        }
        // With a node, a volume that fits it binds; one on another node does not.
        let d = decide(&c, vec![on_host(pv("far", "1Gi", "standard", RWO), "n2")], Some(&sc));
        assert!(matches!(d, ClaimDecision::Provision { .. }));
        let d = decide(&c, vec![on_host(pv("near", "1Gi", "standard", RWO), "n1")], Some(&sc));
        assert_eq!(bound_to(&d), Some("near"));
    }

    #[test]
    fn immediate_class_provisions_at_once_and_no_provisioner_fails() {
        let sc = class("csi", "Immediate", "example.com/csi");
        let c = pvc("c", "1Gi", Some("csi"), RWO);
        assert!(matches!(decide(&c, vec![], Some(&sc)), ClaimDecision::Provision { .. }));
        let sc = class("local", "Immediate", ann::NO_PROVISIONER);
        let c = pvc("c", "1Gi", Some("local"), RWO);
        assert!(matches!(
            decide(&c, vec![], Some(&sc)),
            ClaimDecision::Pending(Some(Ev { reason: "ProvisioningFailed", .. }))
        ));
        let c = pvc("c", "1Gi", Some("missing"), RWO);
        assert_eq!(
            decide(&c, vec![], None),
            ClaimDecision::Pending(Some(warning(
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"missing\" not found"
            )))
        );
    }

    #[test]
    fn claim_prebound_by_volume_name() {
        let c = with_volume_name(pvc("c", "2Gi", Some("m"), RWO), "v");
        assert_eq!(decide(&c, vec![], None), ClaimDecision::Pending(None));
        assert_eq!(bound_to(&decide(&c, vec![pv("v", "2Gi", "m", RWO)], None)), Some("v"));
        assert!(matches!(
            decide(&c, vec![pv("v", "1Gi", "m", RWO)], None),
            ClaimDecision::Pending(Some(Ev { reason: "VolumeMismatch", .. }))
        ));
        let other = pvc("other", "1Gi", Some("m"), RWO);
        assert!(matches!(
            decide(&c, vec![claimed(pv("v", "2Gi", "m", RWO), &other, true)], None),
            ClaimDecision::Pending(Some(Ev { reason: "FailedBinding", .. }))
        ));
    }

    #[test]
    fn bound_claim_is_lost_without_its_volume_or_misbound() {
        let c = annotate(with_volume_name(pvc("c", "1Gi", Some("m"), RWO), "v"), ann::BIND_COMPLETED, "yes");
        assert!(matches!(decide(&c, vec![], None), ClaimDecision::Lost(Ev { reason: "ClaimLost", .. })));
        let other = pvc("other", "1Gi", Some("m"), RWO);
        assert!(matches!(
            decide(&c, vec![claimed(pv("v", "1Gi", "m", RWO), &other, true)], None),
            ClaimDecision::Lost(Ev { reason: "ClaimMisbound", .. })
        ));
        assert_eq!(bound_to(&decide(&c, vec![claimed(pv("v", "1Gi", "m", RWO), &c, true)], None)), Some("v"));
    }

    #[test]
    fn volume_phases_follow_the_claim() {
        let c = pvc("c", "1Gi", Some("m"), RWO);
        let v = pv("v", "1Gi", "m", RWO);
        assert_eq!(decide_volume(&v, None), VolumeDecision::Available);
        // A user's pre-bind without uid waits Available for that claim.
        assert_eq!(decide_volume(&claimed(v.clone(), &c, false), Some(&c)), VolumeDecision::Available);
        let mine = claimed(v.clone(), &c, true);
        assert_eq!(decide_volume(&mine, Some(&c)), VolumeDecision::SyncClaim);
        assert_eq!(decide_volume(&mine, Some(&with_volume_name(c.clone(), "v"))), VolumeDecision::Bound);
        let elsewhere = with_volume_name(c.clone(), "other");
        assert_eq!(
            decide_volume(&annotate(mine.clone(), ann::BOUND_BY_CONTROLLER, "yes"), Some(&elsewhere)),
            VolumeDecision::Unbind { keep_name: false }
        );
        assert_eq!(decide_volume(&mine, Some(&elsewhere)), VolumeDecision::Unbind { keep_name: true });
    }

    #[test]
    fn released_volume_is_reclaimed_by_its_policy() {
        let c = pvc("c", "1Gi", Some("m"), RWO);
        let gone = claimed(pv("v", "1Gi", "m", RWO), &c, true);
        // A claim of the same name but another uid is a new claim: the old one is gone.
        let mut recreated = c.clone();
        recreated.metadata.uid = Some("new".into());
        assert_eq!(decide_volume(&phase(gone.clone(), "Bound"), Some(&recreated)), VolumeDecision::Release);
        assert_eq!(decide_volume(&phase(gone.clone(), "Bound"), None), VolumeDecision::Release);
        let released = phase(gone, "Released");
        assert_eq!(decide_volume(&policy(released.clone(), "Retain"), None), VolumeDecision::Retain);
        let provisioned = annotate(policy(released.clone(), "Delete"), ann::PROVISIONED_BY, "rancher.io/local-path");
        assert_eq!(decide_volume(&provisioned, None), VolumeDecision::WaitForProvisioner);
        assert!(matches!(
            decide_volume(&policy(released.clone(), "Delete"), None),
            VolumeDecision::Fail(Ev { reason: "VolumeFailedDelete", .. })
        ));
        assert_eq!(decide_volume(&phase(policy(released, "Delete"), "Failed"), None), VolumeDecision::Stay);
    }

    #[test]
    fn the_newest_default_class_wins() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |c: StorageClass, secs: i64| {
            let mut c = c;
            c.metadata.creation_timestamp =
                Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid time")));
            c
        };
        let classes: Vec<Arc<StorageClass>> = vec![
            Arc::new(at(annotate(class("old", "Immediate", "x"), ann::IS_DEFAULT_CLASS, "true"), 1)),
            Arc::new(at(annotate(class("new", "Immediate", "x"), ann::BETA_IS_DEFAULT_CLASS, "true"), 2)),
            Arc::new(at(annotate(class("off", "Immediate", "x"), ann::IS_DEFAULT_CLASS, "false"), 3)),
        ];
        assert_eq!(default_class(&classes).and_then(|c| c.metadata.name.as_deref()), Some("new"));
    }
}
