//! Controller references and claiming, as upstream's `ControllerRefManager`: an owner claims
//! the objects its selector matches — keeping the ones it controls, adopting matching orphans,
//! releasing controlled ones that stopped matching — and never touches objects another
//! controller owns. Also the pod facts every workload controller reads (active, ready,
//! available).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource;
use serde_json::json;

use apimachinery::labels::Selector;

pub fn controller_of(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))
}

/// The reference a controller puts on what it creates (controller and blockOwnerDeletion true).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// upstream `metav1.LabelSelectorAsSelector`; an unparsable selector matches nothing.
pub fn selector(s: Option<&LabelSelector>) -> Result<Selector, apimachinery::labels::SelectorError> {
    let v = serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    Selector::from_label_selector(&v)
}

pub fn labels_match(sel: &Selector, m: &ObjectMeta) -> bool {
    match &m.labels {
        Some(l) => sel.matches(l),
        None => sel.matches(&std::collections::BTreeMap::<String, String>::new()),
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// What claiming reads of an object: its metadata and its labels, which the pod informer keeps
/// apart from the metadata ([`super::podcache::CachedPod`]).
pub trait Claimable: Resource {
    fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.meta().labels.as_ref()
    }
}

impl Claimable for Pod {}

/// Whether claiming for the controller `uid` with `sel` can touch this pod: it is the
/// controller's (kept or released) or its labels match (adopted if an orphan). Any other pod is
/// left alone by [`claim`], so a sync need not decode it.
pub fn claim_may_touch<P: Claimable>(uid: &str, sel: &Selector, p: &P) -> bool {
    controller_of(p.meta()).is_some_and(|r| r.uid == uid) || sel.matches(p.labels().unwrap_or(&NO_LABELS))
}
impl Claimable for k8s_openapi::api::apps::v1::ReplicaSet {}
impl Claimable for k8s_openapi::api::apps::v1::ControllerRevision {}

/// What claiming decided.
#[derive(Debug)]
pub struct Claim<K> {
    /// Controlled by the owner after claiming (includes the adopted).
    pub claimed: Vec<Arc<K>>,
    pub adopt: Vec<Arc<K>>,
    pub release: Vec<Arc<K>>,
}

/// upstream `ClaimObject` over a list: the owner is identified by `owner_uid`; an owner being
/// deleted neither adopts nor releases.
pub fn claim<K: Claimable>(owner_uid: &str, owner_deleting: bool, sel: &Selector, objs: &[Arc<K>]) -> Claim<K> {
    let mut c = Claim { claimed: Vec::new(), adopt: Vec::new(), release: Vec::new() };
    for o in objs {
        let m = o.meta();
        let matches = sel.matches(o.labels().unwrap_or(&NO_LABELS));
        match controller_of(m) {
            Some(r) if r.uid != owner_uid => {}
            Some(_) => {
                if matches {
                    c.claimed.push(o.clone());
                } else if !owner_deleting {
                    c.release.push(o.clone());
                }
            }
            None => {
                if matches && !owner_deleting && m.deletion_timestamp.is_none() {
                    c.adopt.push(o.clone());
                    c.claimed.push(o.clone());
                }
            }
        }
    }
    c
}

/// Adds `owner_ref` as the controller of `name`, if its uid is still `uid`.
pub async fn adopt<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    owner_ref: &OwnerReference,
    current: &[OwnerReference],
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut refs = current.to_vec();
    refs.push(owner_ref.clone());
    set_owner_refs(api, name, uid, refs).await
}

/// Removes the reference to `owner_uid` from `name`.
pub async fn release<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    owner_uid: &str,
    current: &[OwnerReference],
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs = current.iter().filter(|r| r.uid != owner_uid).cloned().collect();
    set_owner_refs(api, name, uid, refs).await
}

async fn set_owner_refs<K>(api: &Api<K>, name: &str, uid: &str, refs: Vec<OwnerReference>) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]);
    let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        // Gone, or replaced by a different object of the same name: nothing to claim.
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 422) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The facts of a pod the workload controllers decide on, read the same way from a typed pod
/// and from the pod informer's [`super::podcache::CachedPod`].
pub trait PodView {
    /// The metadata; its labels are [`Self::pod_labels`].
    fn pod_meta(&self) -> &ObjectMeta;
    fn pod_labels(&self) -> Option<&BTreeMap<String, String>>;
    fn phase(&self) -> Option<&str>;
    fn node_name(&self) -> Option<&str>;
    /// The Ready condition's status and last transition.
    fn ready_condition(&self) -> Option<(bool, Option<Timestamp>)>;
    /// The most restarts of any of its containers.
    fn max_restarts(&self) -> i32;
}

impl PodView for Pod {
    fn pod_meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn pod_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.labels.as_ref()
    }
    fn phase(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.phase.as_deref())
    }
    fn node_name(&self) -> Option<&str> {
        self.spec.as_ref().and_then(|s| s.node_name.as_deref())
    }
    fn ready_condition(&self) -> Option<(bool, Option<Timestamp>)> {
        let c = self.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
        Some((c.status == "True", c.last_transition_time.as_ref().map(|t| t.0)))
    }
    fn max_restarts(&self) -> i32 {
        self.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl<P: PodView + ?Sized> PodView for &P {
    fn pod_meta(&self) -> &ObjectMeta {
        (**self).pod_meta()
    }
    fn pod_labels(&self) -> Option<&BTreeMap<String, String>> {
        (**self).pod_labels()
    }
    fn phase(&self) -> Option<&str> {
        (**self).phase()
    }
    fn node_name(&self) -> Option<&str> {
        (**self).node_name()
    }
    fn ready_condition(&self) -> Option<(bool, Option<Timestamp>)> {
        (**self).ready_condition()
    }
    fn max_restarts(&self) -> i32 {
        (**self).max_restarts()
    }
}

impl<P: PodView + ?Sized> PodView for Arc<P> {
    fn pod_meta(&self) -> &ObjectMeta {
        (**self).pod_meta()
    }
    fn pod_labels(&self) -> Option<&BTreeMap<String, String>> {
        (**self).pod_labels()
    }
    fn phase(&self) -> Option<&str> {
        (**self).phase()
    }
    fn node_name(&self) -> Option<&str> {
        (**self).node_name()
    }
    fn ready_condition(&self) -> Option<(bool, Option<Timestamp>)> {
        (**self).ready_condition()
    }
    fn max_restarts(&self) -> i32 {
        (**self).max_restarts()
    }
}

/// upstream `IsPodActive`: not finished and not being deleted.
pub fn is_active<P: PodView + ?Sized>(p: &P) -> bool {
    !matches!(p.phase(), Some("Succeeded") | Some("Failed")) && p.pod_meta().deletion_timestamp.is_none()
}

pub fn is_terminated<P: PodView + ?Sized>(p: &P) -> bool {
    matches!(p.phase(), Some("Succeeded") | Some("Failed"))
}

/// The Ready condition's status and last transition.
pub fn ready_condition<P: PodView + ?Sized>(p: &P) -> Option<(bool, Option<Timestamp>)> {
    p.ready_condition()
}

pub fn is_ready<P: PodView + ?Sized>(p: &P) -> bool {
    p.ready_condition().is_some_and(|(r, _)| r)
}

/// upstream `IsPodAvailable`: ready for at least `min_ready_seconds` at `now`.
pub fn is_available<P: PodView + ?Sized>(p: &P, min_ready_seconds: i32, now: Timestamp) -> bool {
    match p.ready_condition() {
        Some((true, since)) => {
            min_ready_seconds <= 0
                || since.is_some_and(|t| t.as_second() + i64::from(min_ready_seconds) <= now.as_second())
        }
        _ => false,
    }
}

/// Carries out a `Claim` for `owner`: adopts only if the live owner (read from `owner_api`,
/// not the cache, which may lag) is the same object and not being deleted (upstream
/// RecheckDeletionTimestamp), and releases what stopped matching. Returns what the owner
/// controls afterwards.
pub async fn apply_claim<O, A, K>(
    owner_api: &Api<O>,
    owner: &O,
    api: &Api<A>,
    claim: Claim<K>,
) -> Result<Vec<Arc<K>>, kube::Error>
where
    O: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    A: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Resource,
{
    let mut claimed = claim.claimed;
    let (owner_uid, owner_name) = (owner.meta().uid.clone(), owner.meta().name.clone().unwrap_or_default());
    if !claim.adopt.is_empty() {
        let live = owner_api.get_opt(&owner_name).await?;
        let ok = live.is_some_and(|l| l.meta().uid == owner_uid && l.meta().deletion_timestamp.is_none());
        let cref = controller_ref(owner);
        for o in &claim.adopt {
            if ok {
                let m = o.meta();
                let refs = m.owner_references.clone().unwrap_or_default();
                let (name, uid) = (m.name.as_deref().unwrap_or_default(), m.uid.as_deref().unwrap_or_default());
                adopt(api, name, uid, &cref, &refs).await?;
            } else {
                claimed.retain(|c| !Arc::ptr_eq(c, o));
            }
        }
    }
    let owner_uid = owner_uid.unwrap_or_default();
    for o in &claim.release {
        let m = o.meta();
        let refs = m.owner_references.clone().unwrap_or_default();
        let (name, uid) = (m.name.as_deref().unwrap_or_default(), m.uid.as_deref().unwrap_or_default());
        release(api, name, uid, &owner_uid, &refs).await?;
    }
    Ok(claimed)
}

/// Routes pod events to the workload that controls the pod, or to those that could adopt an
/// orphan (upstream's addPod/updatePod/deletePod, which the ReplicaSet, StatefulSet and
/// DaemonSet controllers share), counting what it sees against the owner's expectations.
pub struct PodRouter<'a, K: super::informer::Cache> {
    pub owners: &'a super::informer::Informer<K>,
    /// The owner reference kind that names `K`.
    pub kind: &'static str,
    pub selector: fn(&K) -> Option<&LabelSelector>,
    pub min_ready_seconds: fn(&K) -> i32,
    pub queue: &'a super::workqueue::Queue,
    pub exp: &'a super::expectations::Expectations,
}

impl<K: super::informer::Cache> PodRouter<'_, K> {
    /// The owner `r` names in `namespace`, if it is the same object (uid).
    fn resolve(&self, namespace: &str, r: &OwnerReference) -> Option<Arc<K>> {
        if r.kind != self.kind {
            return None;
        }
        self.owners.get(namespace, &r.name).filter(|o| o.meta().uid.as_deref() == Some(r.uid.as_str()))
    }

    /// upstream getPodXs: the owners whose selector matches an orphan.
    fn matching(&self, p: &Pod) -> Vec<Arc<K>> {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        self.owners
            .list_namespace(ns)
            .into_iter()
            .filter(|o| selector((self.selector)(o)).is_ok_and(|s| !s.is_empty() && labels_match(&s, &p.metadata)))
            .collect()
    }

    fn pod_deleted(&self, p: &Pod) {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(o) = controller_of(&p.metadata).and_then(|r| self.resolve(ns, r)) {
            let key = super::informer::key_of(o.as_ref());
            self.exp.deletion_observed(&key, &super::informer::key_of(p));
            self.queue.add(key);
        }
    }

    /// A pod was added (`old` None), changed, or deleted (`new` None).
    pub fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        use super::informer::key_of;
        let Some(new) = new else {
            if let Some(old) = old {
                self.pod_deleted(old);
            }
            return;
        };
        let ns = new.metadata.namespace.as_deref().unwrap_or_default();
        if new.metadata.deletion_timestamp.is_some() {
            // A graceful delete: count it now, the final delete event may come much later.
            self.pod_deleted(new);
            if let Some(old) = old.filter(|o| o.metadata.labels != new.metadata.labels) {
                self.pod_deleted(old);
            }
            return;
        }
        let cur_ref = controller_of(&new.metadata);
        let old_ref = old.and_then(|o| controller_of(&o.metadata));
        if let (Some(o), true) = (old_ref, old_ref.map(|r| &r.uid) != cur_ref.map(|r| &r.uid)) {
            if let Some(owner) = self.resolve(ns, o) {
                self.queue.add(key_of(owner.as_ref()));
            }
        }
        match cur_ref {
            Some(r) => {
                let Some(owner) = self.resolve(ns, r) else { return };
                let key = key_of(owner.as_ref());
                if old.is_none() {
                    self.exp.creation_observed(&key);
                }
                self.queue.add(key.clone());
                // upstream: a pod that just became ready is available minReadySeconds later.
                let min_ready = (self.min_ready_seconds)(&owner);
                if min_ready > 0 && old.is_some_and(|o| !is_ready(o)) && is_ready(new) {
                    self.queue.add_after(key, std::time::Duration::from_secs(min_ready as u64 + 1));
                }
            }
            None => {
                let changed = old.is_none_or(|o| o.metadata.labels != new.metadata.labels || old_ref.is_some());
                if changed {
                    for owner in self.matching(new) {
                        self.queue.add(key_of(owner.as_ref()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, app: &str, owner: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                owner_references: owner
                    .map(|uid| vec![OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() }]),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn names(v: &[Arc<Pod>]) -> Vec<&str> {
        v.iter().map(|p| p.metadata.name.as_deref().unwrap_or_default()).collect()
    }

    /// One pod of each kind a claim by owner `me` on `app=web` meets.
    fn mixed_pods() -> [Arc<Pod>; 5] {
        [
            pod("mine", "web", Some("me")),
            pod("orphan", "web", None),
            pod("stray", "db", Some("me")),
            pod("theirs", "web", Some("other")),
            pod("unrelated", "db", None),
        ]
    }

    #[test]
    fn claim_keeps_adopts_releases_and_ignores_others() {
        let sel = Selector::from_set([("app", "web")]);
        let pods = mixed_pods();
        let c = claim("me", false, &sel, &pods);
        assert_eq!(names(&c.claimed), ["mine", "orphan"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["stray"]);
        let c = claim("me", true, &sel, &pods);
        assert_eq!(names(&c.claimed), ["mine"], "an owner being deleted does not adopt");
        assert!(c.release.is_empty(), "an owner being deleted does not release");
    }

    #[test]
    fn the_pods_a_claim_may_touch_are_all_it_decides_on() {
        let sel = Selector::from_set([("app", "web")]);
        let pods = mixed_pods();
        let touched: Vec<Arc<Pod>> = pods.iter().filter(|p| claim_may_touch("me", &sel, p.as_ref())).cloned().collect();
        assert_eq!(names(&touched), ["mine", "orphan", "stray", "theirs"]);
        for deleting in [false, true] {
            let (all, some) = (claim("me", deleting, &sel, &pods), claim("me", deleting, &sel, &touched));
            assert_eq!(names(&all.claimed), names(&some.claimed));
            assert_eq!(names(&all.adopt), names(&some.adopt));
            assert_eq!(names(&all.release), names(&some.release));
        }
    }

    #[test]
    fn available_means_ready_for_min_ready_seconds() {
        let since = Timestamp::from_second(1000).expect("ts");
        let p = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since)),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let at = |s| Timestamp::from_second(s).expect("ts");
        assert!(is_available(&p, 0, at(1000)));
        assert!(!is_available(&p, 10, at(1009)));
        assert!(is_available(&p, 10, at(1010)));
    }
}
