//! How the shared pod informer keeps a pod. A typed `Pod` takes about 7 KB of heap for a
//! one-container pod (the `Pod` struct alone is 2.5 KB, the `PodSpec` and `Container` structs
//! are mostly empty `Option`s, and every field is its own allocation), and pods are most of a
//! cluster's objects. A [`CachedPod`] keeps the metadata typed (every controller reads it:
//! owner references, labels, deletion timestamp), the few spec and status facts the
//! ReplicaSet controller reads on each sync (phase, node, the Ready condition, restarts), and
//! the rest of the pod, its spec and status, as compact JSON decoded only when a controller
//! reads the whole pod. Its labels are kept apart from the metadata and shared: the pods of
//! one ReplicaSet all carry the same labels, and a map of even one label is a 540-byte B-tree
//! node, so equal label maps are one `Arc` ([`intern_labels`]). So are equal specs (the
//! encoded spec leaves out `nodeName`, which is kept as a fact, and the random part of the
//! service account token volume's name, which the apiserver's ServiceAccount admission makes
//! different for every pod): pods of one template share one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use super::owner::{self, Claimable, PodView};

pub type Labels = BTreeMap<String, String>;

/// Every value of one kind a cached pod holds, once.
struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>>,
    /// The set's size after the last sweep of values no pod holds any more.
    swept: usize,
}

impl<T: ?Sized + Eq + Hash> Interner<T> {
    /// The shared copy of `v` (`make` makes a new one). Values no pod holds any more are swept
    /// whenever the set has doubled since the last sweep, so the set stays within twice the
    /// live values (plus 64).
    fn intern(&mut self, v: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        if let Some(l) = self.set.get(v) {
            return l.clone();
        }
        let l = make();
        self.set.insert(l.clone());
        if self.set.len() > 2 * self.swept.max(64) {
            self.set.retain(|l| Arc::strong_count(l) > 1);
            self.swept = self.set.len();
        }
        l
    }
}

fn interner<T: ?Sized>() -> Mutex<Interner<T>> {
    Mutex::new(Interner { set: HashSet::new(), swept: 0 })
}

static LABELS: LazyLock<Mutex<Interner<Labels>>> = LazyLock::new(interner);
static SPECS: LazyLock<Mutex<Interner<[u8]>>> = LazyLock::new(interner);

/// The shared copy of `labels`.
pub fn intern_labels(labels: &Labels) -> Arc<Labels> {
    LABELS.lock().unwrap_or_else(|p| p.into_inner()).intern(labels, || Arc::new(labels.clone()))
}

/// The shared copy of an encoded spec.
fn intern_spec(json: Vec<u8>) -> Arc<[u8]> {
    SPECS.lock().unwrap_or_else(|p| p.into_inner()).intern(&json, || Arc::from(json.as_slice()))
}

#[derive(Debug)]
pub struct CachedPod {
    /// Without its labels: they are [`Self::labels`].
    pub metadata: ObjectMeta,
    pub labels: Option<Arc<Labels>>,
    node_name: Option<Box<str>>,
    /// The name of the `kube-api-access-…` volume, which the shared spec calls [`TOKEN_VOLUME`].
    token_volume: Option<Box<str>>,
    phase: Option<Box<str>>,
    ready: Option<(bool, Option<Timestamp>)>,
    max_restarts: i32,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// The pod's `spec` without its `nodeName` (kept as a fact), shared by every pod with the
    /// same spec (the pods of one template), and its `status`, as JSON.
    Json { spec: Option<Arc<[u8]>>, status: Option<Box<[u8]>> },
    /// Kept typed if it could not be encoded (serde_json fails only on non-string map keys,
    /// which a typed pod has none of), so nothing is lost either way.
    Typed(Box<(Option<PodSpec>, Option<PodStatus>)>),
}

#[derive(Debug, thiserror::Error)]
#[error("a cached pod's spec and status do not decode: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// The token volume's name in a shared spec. Not a valid volume name (a DNS label cannot end
/// in `-`), so no pod's own volume is ever taken for it.
const TOKEN_VOLUME: &str = "kube-api-access-";

/// Renames volume `from` to `to` in `spec`: the volume and every container's mounts of it.
fn rename_volume(spec: &mut PodSpec, from: &str, to: &str) {
    for v in spec.volumes.iter_mut().flatten().filter(|v| v.name == from) {
        v.name = to.to_string();
    }
    let mounts = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .flat_map(|c| c.volume_mounts.iter_mut().flatten());
    let ephemeral = spec.ephemeral_containers.iter_mut().flatten().flat_map(|c| c.volume_mounts.iter_mut().flatten());
    for m in mounts.chain(ephemeral).filter(|m| m.name == from) {
        m.name = to.to_string();
    }
}

fn uses_volume_name(spec: &PodSpec, name: &str) -> bool {
    let mounts = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .chain(spec.ephemeral_containers.iter().flatten().flat_map(|c| c.volume_mounts.iter().flatten()));
    spec.volumes.iter().flatten().any(|v| v.name == name) || mounts.into_iter().any(|m| m.name == name)
}

impl CachedPod {
    pub fn new(p: &Pod) -> Self {
        // A pod that already uses the placeholder's name (possible only if validation let it
        // through) keeps its spec as it is.
        let token_volume: Option<Box<str>> = p
            .spec
            .as_ref()
            .filter(|s| !uses_volume_name(s, TOKEN_VOLUME))
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name.starts_with(TOKEN_VOLUME)))
            .map(|v| v.name.as_str().into());
        let spec = p.spec.as_ref().map(|s| {
            let mut shared = PodSpec { node_name: None, ..s.clone() };
            if let Some(name) = &token_volume {
                rename_volume(&mut shared, name, TOKEN_VOLUME);
            }
            serde_json::to_vec(&shared)
        });
        let status = p.status.as_ref().map(serde_json::to_vec);
        let body = match (spec.transpose(), status.transpose()) {
            (Ok(spec), Ok(status)) => {
                Body::Json { spec: spec.map(intern_spec), status: status.map(Vec::into_boxed_slice) }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(pod = ?p.metadata.name, error = %e, "pod not encodable; cached typed");
                Body::Typed(Box::new((p.spec.clone(), p.status.clone())))
            }
        };
        CachedPod {
            metadata: ObjectMeta { labels: None, ..p.metadata.clone() },
            labels: p.metadata.labels.as_ref().map(intern_labels),
            node_name: p.node_name().map(Into::into),
            token_volume,
            phase: p.phase().map(Into::into),
            ready: p.ready_condition(),
            max_restarts: p.max_restarts(),
            body,
        }
    }

    /// The whole pod, as it was cached.
    pub fn decode(&self) -> Result<Pod, DecodeError> {
        let (spec, status) = match &self.body {
            Body::Json { spec, status } => {
                let spec = match spec {
                    Some(json) => {
                        let mut spec = PodSpec {
                            node_name: self.node_name.as_deref().map(Into::into),
                            ..serde_json::from_slice(json)?
                        };
                        if let Some(name) = &self.token_volume {
                            rename_volume(&mut spec, TOKEN_VOLUME, name);
                        }
                        Some(spec)
                    }
                    None => None,
                };
                (spec, status.as_deref().map(serde_json::from_slice).transpose()?)
            }
            Body::Typed(b) => (b.0.clone(), b.1.clone()),
        };
        let metadata = ObjectMeta { labels: self.labels.as_deref().cloned(), ..self.metadata.clone() };
        Ok(Pod { metadata, spec, status })
    }
}

impl PodView for CachedPod {
    fn pod_meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn pod_labels(&self) -> Option<&Labels> {
        self.labels.as_deref()
    }
    fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }
    fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }
    fn ready_condition(&self) -> Option<(bool, Option<Timestamp>)> {
        self.ready
    }
    fn max_restarts(&self) -> i32 {
        self.max_restarts
    }
}

/// A cached pod is a pod to everything that reads only its metadata (claiming, keys, owner
/// references).
impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl Claimable for CachedPod {
    fn labels(&self) -> Option<&Labels> {
        self.labels.as_deref()
    }
}

/// upstream `IsPodActive` on a cached pod (the same rule as [`owner::is_active`]).
pub fn is_active(p: &CachedPod) -> bool {
    owner::is_active(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                owner_references: Some(vec![OwnerReference {
                    uid: "rs".into(),
                    kind: "ReplicaSet".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container { name: "c".into(), image: Some("v1".into()), ..Default::default() }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![
                    PodCondition { type_: "PodScheduled".into(), status: "True".into(), ..Default::default() },
                    PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(1000).expect("ts"))),
                        ..Default::default()
                    },
                ]),
                container_statuses: Some(vec![
                    ContainerStatus { name: "a".into(), restart_count: 2, ..Default::default() },
                    ContainerStatus { name: "b".into(), restart_count: 5, ..Default::default() },
                ]),
                ..Default::default()
            }),
        }
    }

    type Ready = Option<(bool, Option<Timestamp>)>;

    fn facts<P: PodView>(p: &P) -> (ObjectMeta, Option<Labels>, Option<String>, Option<String>, Ready, i32) {
        (
            ObjectMeta { labels: None, ..p.pod_meta().clone() },
            p.pod_labels().cloned(),
            p.node_name().map(Into::into),
            p.phase().map(Into::into),
            p.ready_condition(),
            p.max_restarts(),
        )
    }

    #[test]
    fn the_facts_of_a_cached_pod_are_those_of_the_typed_pod() {
        let p = pod();
        let c = CachedPod::new(&p);
        assert_eq!(facts(&c), facts(&p));
        assert_eq!(
            facts(&p),
            (
                ObjectMeta { labels: None, ..p.metadata.clone() },
                Some([("app".to_string(), "web".to_string())].into()),
                Some("n1".into()),
                Some("Running".into()),
                Some((true, Some(Timestamp::from_second(1000).expect("ts")))),
                5
            )
        );
        let bare = Pod::default();
        assert_eq!(facts(&CachedPod::new(&bare)), facts(&bare));
        assert_eq!(facts(&bare), (ObjectMeta::default(), None, None, None, None, 0));
    }

    #[test]
    fn a_cached_pod_decodes_to_the_pod_it_was_made_from() {
        let p = pod();
        assert_eq!(CachedPod::new(&p).decode().expect("decode"), p);
        assert_eq!(CachedPod::new(&Pod::default()).decode().expect("decode"), Pod::default());
    }

    #[test]
    fn pods_with_equal_labels_share_one_map() {
        let (a, b) = (CachedPod::new(&pod()), CachedPod::new(&pod()));
        let (la, lb) = (a.labels.expect("labels"), b.labels.expect("labels"));
        assert!(Arc::ptr_eq(&la, &lb));
        let mut other = pod();
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let lo = CachedPod::new(&other).labels.expect("labels");
        assert!(!Arc::ptr_eq(&la, &lo));
        assert_eq!(*lo, Labels::from([("app".to_string(), "db".to_string())]));
    }

    #[test]
    fn pods_of_one_template_share_their_spec_and_keep_their_own_token_volume() {
        use k8s_openapi::api::core::v1::{Volume, VolumeMount};
        let with_token = |suffix: &str| {
            let mut p = pod();
            let spec = p.spec.as_mut().expect("spec");
            let name = format!("kube-api-access-{suffix}");
            spec.volumes = Some(vec![
                Volume { name: "data".into(), ..Default::default() },
                Volume { name: name.clone(), ..Default::default() },
            ]);
            spec.containers[0].volume_mounts = Some(vec![
                VolumeMount { name: "data".into(), mount_path: "/data".into(), ..Default::default() },
                VolumeMount {
                    name,
                    mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                    ..Default::default()
                },
            ]);
            p
        };
        let (pa, pb) = (with_token("abcde"), with_token("fghjk"));
        let (a, b) = (CachedPod::new(&pa), CachedPod::new(&pb));
        let (Body::Json { spec: Some(sa), .. }, Body::Json { spec: Some(sb), .. }) = (&a.body, &b.body) else {
            panic!("not encoded: {a:?} {b:?}");
        };
        assert!(Arc::ptr_eq(sa, sb));
        assert_eq!(a.decode().expect("decode"), pa);
        assert_eq!(b.decode().expect("decode"), pb);

        // A pod already using the placeholder's name is cached as it is.
        let mut odd = with_token("abcde");
        odd.spec.as_mut().expect("spec").volumes.as_mut().expect("volumes")[0].name = TOKEN_VOLUME.into();
        let c = CachedPod::new(&odd);
        assert!(c.token_volume.is_none());
        assert_eq!(c.decode().expect("decode"), odd);
    }

    #[test]
    fn pods_of_one_template_share_their_spec_and_keep_their_own_node() {
        let mut elsewhere = pod();
        elsewhere.spec.as_mut().expect("spec").node_name = Some("n2".into());
        let (a, b) = (CachedPod::new(&pod()), CachedPod::new(&elsewhere));
        let (Body::Json { spec: Some(sa), .. }, Body::Json { spec: Some(sb), .. }) = (&a.body, &b.body) else {
            panic!("not encoded: {a:?} {b:?}");
        };
        assert!(Arc::ptr_eq(sa, sb));
        assert_eq!(a.decode().expect("decode"), pod());
        assert_eq!(b.decode().expect("decode"), elsewhere);
    }

    #[test]
    fn label_maps_no_pod_holds_are_swept() {
        let unique = |i: usize| Labels::from([(format!("sweep-test-{}", std::process::id()), i.to_string())]);
        let kept = intern_labels(&unique(0));
        for i in 1..1000 {
            intern_labels(&unique(i));
        }
        let i = LABELS.lock().expect("lock");
        let left = i.set.iter().filter(|l| l.keys().next() == unique(0).keys().next()).count();
        assert!(left < 600, "{left} of 1000 dropped maps are still interned");
        assert!(i.set.contains(&kept), "a map still held is kept");
    }

    #[test]
    fn activity_follows_phase_and_deletion() {
        let mut p = pod();
        assert!(is_active(&CachedPod::new(&p)));
        p.status.as_mut().expect("status").phase = Some("Succeeded".into());
        assert!(!is_active(&CachedPod::new(&p)));
        let mut p = pod();
        p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(5).expect("ts")));
        assert!(!is_active(&CachedPod::new(&p)));
    }
}
