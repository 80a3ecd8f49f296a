//! The pure half of the StatefulSet controller, as upstream's `stateful_set_utils.go`: ordinals
//! and names, a pod's stable identity (name, hostname, subdomain, labels), its claims
//! (`<template>-<set>-<ordinal>`), the ownerReferences the PVC retention policy asks for,
//! pod health, and the status counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::controllers::deployment::util::scaled_value;
use crate::controllers::owner::{controller_ref, is_available, is_ready};
use crate::controllers::replicaset::pod_from_template;

/// upstream: apps.StatefulSetPodNameLabel
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// upstream: apps.PodIndexLabel
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// upstream: apps.StatefulSetRevisionLabel (the ControllerRevision's name)
pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const RETAIN: &str = "Retain";
pub const DELETE: &str = "Delete";

pub fn spec(set: &StatefulSet) -> StatefulSetSpec {
    set.spec.clone().unwrap_or_default()
}

pub fn name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// upstream getStartOrdinal: `spec.ordinals.start`, default 0.
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0)
}

pub fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// upstream allowsBurst: Parallel pod management.
pub fn allows_burst(set: &StatefulSet) -> bool {
    set.spec.as_ref().and_then(|s| s.pod_management_policy.as_deref()) == Some("Parallel")
}

pub fn is_on_delete(set: &StatefulSet) -> bool {
    set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref()) == Some("OnDelete")
}

pub fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

/// upstream getStatefulSetMaxUnavailable: default 1, percentages of replicas rounded up, at
/// least 1.
pub fn max_unavailable(set: &StatefulSet) -> i32 {
    let v = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    scaled_value(&v, replicas(set), true).max(1)
}

pub fn revision_history_limit(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10)
}

/// (whenDeleted, whenScaled), each Retain unless Delete.
pub fn retention(set: &StatefulSet) -> (&'static str, &'static str) {
    let p = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let pick = |v: Option<&str>| if v == Some(DELETE) { DELETE } else { RETAIN };
    (pick(p.and_then(|p| p.when_deleted.as_deref())), pick(p.and_then(|p| p.when_scaled.as_deref())))
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", name(set))
}

/// upstream getParentNameAndOrdinal: `<parent>-<ordinal>`; None when the name has no ordinal.
pub fn parent_and_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = pod_name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

pub fn ordinal(p: &Pod) -> Option<i32> {
    parent_and_ordinal(p.metadata.name.as_deref().unwrap_or_default()).map(|(_, o)| o)
}

/// upstream isMemberOf: the pod's name says it belongs to this set.
pub fn is_member_of(set: &StatefulSet, p: &Pod) -> bool {
    is_member_name(set, p.metadata.name.as_deref().unwrap_or_default())
}

/// [`is_member_of`] on the pod's name alone.
pub fn is_member_name(set: &StatefulSet, pod_name: &str) -> bool {
    parent_and_ordinal(pod_name).is_some_and(|(parent, _)| parent == name(set))
}

/// upstream podInOrdinalRange: `start <= ordinal < start + replicas`.
pub fn in_ordinal_range(set: &StatefulSet, p: &Pod) -> bool {
    let start = start_ordinal(set);
    ordinal(p).is_some_and(|o| o >= start && o < start + replicas(set))
}

pub fn claim_name(set: &StatefulSet, template: &str, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", name(set))
}

fn claim_templates(set: &StatefulSet) -> Vec<PersistentVolumeClaim> {
    set.spec.as_ref().and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default()
}

/// upstream getPersistentVolumeClaims: the claims the pod at `ordinal` uses, keyed by template
/// name, in template order; labelled with the set's selector matchLabels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let match_labels = set.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    claim_templates(set)
        .into_iter()
        .map(|mut c| {
            let template = c.metadata.name.clone().unwrap_or_default();
            c.metadata.name = Some(claim_name(set, &template, ordinal));
            c.metadata.namespace = set.metadata.namespace.clone();
            let labels = c.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(match_labels.clone());
            c.status = None;
            (template, c)
        })
        .collect()
}

/// upstream updateIdentity: name, namespace, the pod-name and pod-index labels, hostname and
/// subdomain.
pub fn update_identity(set: &StatefulSet, p: &mut Pod, ordinal: i32) {
    let name = pod_name(set, ordinal);
    p.metadata.name = Some(name.clone());
    p.metadata.generate_name = None;
    p.metadata.namespace = set.metadata.namespace.clone();
    let labels = p.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let spec = p.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());
}

/// upstream identityMatches.
pub fn identity_matches(set: &StatefulSet, p: &Pod) -> bool {
    let pname = p.metadata.name.as_deref().unwrap_or_default();
    let Some((parent, ord)) = parent_and_ordinal(pname) else { return false };
    let labels = p.metadata.labels.clone().unwrap_or_default();
    parent == name(set)
        && p.metadata.namespace == set.metadata.namespace
        && labels.get(POD_NAME_LABEL).map(String::as_str) == Some(pname)
        && labels.get(POD_INDEX_LABEL) == Some(&ord.to_string())
}

/// upstream updateStorage: a PVC volume per claim template (replacing a template volume of
/// the same name), then the template's other volumes.
pub fn update_storage(set: &StatefulSet, p: &mut Pod, ordinal: i32) {
    let claims = claims_for(set, ordinal);
    let spec = p.spec.get_or_insert_with(Default::default);
    let current = spec.volumes.take().unwrap_or_default();
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, c)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: c.metadata.name.clone().unwrap_or_default(),
                read_only: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    volumes.extend(current.into_iter().filter(|v| !claims.iter().any(|(t, _)| *t == v.name)));
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
}

/// upstream storageMatches: every claim template has a volume pointing at this ordinal's claim.
pub fn storage_matches(set: &StatefulSet, p: &Pod) -> bool {
    let Some(ord) = ordinal(p) else { return false };
    let volumes = p.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    claims_for(set, ord).iter().all(|(template, c)| {
        volumes.iter().any(|v| {
            v.name == *template && v.persistent_volume_claim.as_ref().map(|s| &s.claim_name) == c.metadata.name.as_ref()
        })
    })
}

/// upstream newStatefulSetPod: the template's pod with the set as controller, its identity and
/// its claims' volumes.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32) -> Pod {
    let mut p = pod_from_template(template, name(set), controller_ref(set));
    update_identity(set, &mut p, ordinal);
    update_storage(set, &mut p, ordinal);
    p
}

/// upstream newVersionedStatefulSetPod: ordinals below `start + partition` are made from the
/// current revision, the rest from the update revision; labelled with that revision's name.
pub fn new_versioned_pod(
    set: &StatefulSet,
    current: (&PodTemplateSpec, &str),
    update: (&PodTemplateSpec, &str),
    ordinal: i32,
) -> Pod {
    let below_partition = !is_on_delete(set) && ordinal < start_ordinal(set) + partition(set);
    let (template, revision) = if below_partition { current } else { update };
    let mut p = new_pod(set, template, ordinal);
    p.metadata.labels.get_or_insert_with(BTreeMap::new).insert(REVISION_LABEL.into(), revision.into());
    p
}

pub fn pod_revision(p: &Pod) -> &str {
    p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)).map(String::as_str).unwrap_or_default()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// upstream isCreated: the apiserver has given it a phase.
pub fn is_created(p: &Pod) -> bool {
    !phase(p).is_empty()
}

pub fn is_failed(p: &Pod) -> bool {
    phase(p) == "Failed"
}

pub fn is_succeeded(p: &Pod) -> bool {
    phase(p) == "Succeeded"
}

pub fn is_pending(p: &Pod) -> bool {
    phase(p) == "Pending"
}

pub fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

pub fn is_running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && is_ready(p)
}

pub fn is_running_and_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    phase(p) == "Running" && is_available(p, min_ready_seconds, now)
}

/// upstream isHealthy: running, ready and not being deleted.
pub fn is_healthy(p: &Pod) -> bool {
    is_running_and_ready(p) && !is_terminating(p)
}

/// upstream computeReplicaStatus + updateStatus over the given pod lists.
pub fn count_status(
    st: &mut StatefulSetStatus,
    pods: &[&Arc<Pod>],
    min_ready_seconds: i32,
    current: &str,
    update: &str,
    now: Timestamp,
) {
    let (mut replicas, mut ready, mut available, mut cur, mut upd) = (0, 0, 0, 0, 0);
    for p in pods {
        if is_created(p) {
            replicas += 1;
        }
        if is_running_and_ready(p) {
            ready += 1;
            if is_running_and_available(p, min_ready_seconds, now) {
                available += 1;
            }
        }
        if is_created(p) && !is_terminating(p) {
            let r = pod_revision(p);
            if r == current {
                cur += 1;
            }
            if r == update {
                upd += 1;
            }
        }
    }
    st.replicas = replicas;
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(cur);
    st.updated_replicas = Some(upd);
}

/// upstream completeRollingUpdate: once every replica is updated and ready, the update
/// revision becomes the current one.
pub fn complete_rolling_update(set: &StatefulSet, st: &mut StatefulSetStatus) {
    if !is_on_delete(set) && st.updated_replicas == Some(st.replicas) && st.ready_replicas == Some(st.replicas) {
        st.current_replicas = st.updated_replicas;
        st.current_revision = st.update_revision.clone();
    }
}

// ---- PVC retention (upstream StatefulSetAutoDeletePVC, GA in 1.32) ----

fn refs(claim: &PersistentVolumeClaim) -> &[OwnerReference] {
    claim.metadata.owner_references.as_deref().unwrap_or_default()
}

/// upstream matchesRef: same name, apiVersion and kind (the uid may differ).
fn matches_ref<K: Resource<DynamicType = ()>>(r: &OwnerReference, owner: &K) -> bool {
    owner.meta().name.as_deref() == Some(r.name.as_str())
        && r.api_version == K::api_version(&())
        && r.kind == K::kind(&())
}

fn uid<K: Resource>(o: &K) -> &str {
    o.meta().uid.as_deref().unwrap_or_default()
}

fn has_owner_ref<K: Resource>(claim: &PersistentVolumeClaim, owner: &K) -> bool {
    !uid(owner).is_empty() && refs(claim).iter().any(|r| r.uid == uid(owner))
}

/// upstream hasStaleOwnerRef: a ref to an object of the owner's name and kind, but another uid.
pub fn has_stale_owner_ref<K: Resource<DynamicType = ()>>(claim: &PersistentVolumeClaim, owner: &K) -> bool {
    refs(claim).iter().find(|r| matches_ref(r, owner)).is_some_and(|r| r.uid != uid(owner))
}

/// upstream hasUnexpectedController: under a non-Retain policy, a controller other than the
/// set or the pod (or a ref to a previous set or pod of the same name).
fn has_unexpected_controller(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    if retention(set) == (RETAIN, RETAIN) {
        return false;
    }
    refs(claim).iter().any(|r| {
        if matches_ref(r, set) {
            r.uid != uid(set)
        } else if matches_ref(r, pod) {
            r.uid != uid(pod)
        } else {
            r.controller == Some(true)
        }
    })
}

fn has_non_controller_owner(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    refs(claim)
        .iter()
        .any(|r| (r.uid == uid(set) || (!uid(pod).is_empty() && r.uid == uid(pod))) && r.controller != Some(true))
}

/// upstream isClaimOwnerUpToDate: the claim carries exactly the refs the retention policy asks
/// for — a controller ref to the set under whenDeleted=Delete (so the garbage collector deletes
/// the claim with the set), and to the pod under whenScaled=Delete once the pod is scaled away.
pub fn claim_owner_up_to_date(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    if has_stale_owner_ref(claim, set) || has_stale_owner_ref(claim, pod) {
        // Managed by a previous set or pod of the same name: left alone.
        return true;
    }
    if has_unexpected_controller(claim, set, pod) {
        return !(has_owner_ref(claim, set) || has_owner_ref(claim, pod));
    }
    if has_non_controller_owner(claim, set, pod) {
        return false;
    }
    let (when_deleted, when_scaled) = retention(set);
    let to_set = has_owner_ref(claim, set);
    let to_pod = has_owner_ref(claim, pod);
    let scaled_down = !in_ordinal_range(set, pod);
    match (when_scaled, when_deleted) {
        (DELETE, RETAIN) => !to_set && scaled_down == to_pod,
        (DELETE, _) => scaled_down != to_set && scaled_down == to_pod,
        (_, DELETE) => to_set && !to_pod,
        _ => !to_set && !to_pod,
    }
}

fn add_controller_ref<K: Resource<DynamicType = ()>>(refs: &mut Vec<OwnerReference>, owner: &K) {
    if !uid(owner).is_empty() && !refs.iter().any(|r| r.uid == uid(owner)) {
        refs.push(controller_ref(owner));
    }
}

/// upstream updateClaimOwnerRefForSetAndPod: the claim's refs with the set's and the pod's
/// replaced by what the policy asks for (none when another controller manages the claim).
pub fn claim_refs_for_policy(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> Vec<OwnerReference> {
    let unexpected = has_unexpected_controller(claim, set, pod);
    let mut out: Vec<OwnerReference> =
        refs(claim).iter().filter(|r| !matches_ref(r, set) && !matches_ref(r, pod)).cloned().collect();
    if unexpected {
        return out;
    }
    let scaled_down = !in_ordinal_range(set, pod);
    match retention(set) {
        (DELETE, RETAIN) => add_controller_ref(&mut out, set),
        (RETAIN, DELETE) if scaled_down => add_controller_ref(&mut out, pod),
        (DELETE, DELETE) if scaled_down => add_controller_ref(&mut out, pod),
        (DELETE, DELETE) => add_controller_ref(&mut out, set),
        _ => {}
    }
    out
}

/// upstream PodClaimIsStale: under whenScaled=Delete, an existing claim whose pod ref is not
/// this pod (a new pod has no uid yet) belongs to a pod that is going away; creating the pod now
/// would bind it to a claim about to be deleted.
pub fn claim_is_stale(set: &StatefulSet, pod: &Pod, claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>) -> bool {
    if retention(set).1 == RETAIN {
        return false;
    }
    let Some(ord) = ordinal(pod) else { return false };
    claims_for(set, ord)
        .iter()
        .filter_map(|(_, c)| claims.get(c.metadata.name.as_deref().unwrap_or_default()))
        .any(|c| has_stale_owner_ref(c, pod))
}

/// upstream ClaimsMatchRetentionPolicy, over the claims in the store (missing ones match).
pub fn claims_match_policy(
    set: &StatefulSet,
    pod: &Pod,
    claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>,
) -> bool {
    let Some(ord) = ordinal(pod) else { return true };
    claims_for(set, ord)
        .iter()
        .filter_map(|(_, c)| claims.get(c.metadata.name.as_deref().unwrap_or_default()))
        .all(|c| claim_owner_up_to_date(c, set, pod))
}

/// The template a revision's data holds, applied to the set (upstream ApplyRevision).
pub fn with_template(set: &StatefulSet, template: Option<PodTemplateSpec>) -> StatefulSet {
    let mut s = set.clone();
    if let (Some(t), Some(spec)) = (template, s.spec.as_mut()) {
        spec.template = t;
    }
    s
}

pub fn meta_labels(m: &ObjectMeta) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}
