//! Shared informers, as upstream's `SharedInformerFactory`: one watch per resource type for
//! the whole controller-manager, an indexed store every controller reads, and change handlers
//! that see the old and the new object (a ReplicaSet must wake both the old and the new owner
//! of a pod whose labels changed). Handlers only enqueue keys; they run on the watch task and
//! must not block.
//!
//! `managedFields` are dropped from stored objects (upstream's informers do the same through a
//! transform): no controller reads them, and they are most of a pod's size.
//!
//! Pods are kept as [`CachedPod`]s (typed metadata, a few facts, the rest as JSON): `get` and
//! `list` decode them, [`Informer::list_namespace_cached`] does not.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::podcache::CachedPod;

/// `old` is `None` for an add, `new` is `None` for a delete.
pub type Handler<K> = Arc<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

/// How an informer keeps an object of its kind: most kinds typed and `Arc`-shared, pods as a
/// [`CachedPod`] (see `podcache.rs` for why).
pub trait Cache: Resource + Clone + Send + Sync + Sized + 'static {
    /// Cheap to clone: reads copy it out under the store's lock and decode after.
    type Stored: Clone + Send + Sync + 'static;
    fn store(o: &Arc<Self>) -> Self::Stored;
    /// `None` only if a stored object no longer decodes (a bug; logged).
    fn load(s: &Self::Stored) -> Option<Arc<Self>>;
    fn stored_meta(s: &Self::Stored) -> &ObjectMeta;
}

macro_rules! typed {
    ($($k:ty),* $(,)?) => {$(
        impl Cache for $k {
            type Stored = Arc<$k>;
            fn store(o: &Arc<Self>) -> Arc<Self> {
                o.clone()
            }
            fn load(s: &Arc<Self>) -> Option<Arc<Self>> {
                Some(s.clone())
            }
            fn stored_meta(s: &Arc<Self>) -> &ObjectMeta {
                &s.metadata
            }
        }
    )*};
}

typed!(
    ConfigMap,
    ControllerRevision,
    CronJob,
    DaemonSet,
    Deployment,
    EndpointSlice,
    Endpoints,
    Job,
    Lease,
    Namespace,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    PodDisruptionBudget,
    ReplicaSet,
    Service,
    ServiceAccount,
    StatefulSet,
    StorageClass,
);

impl Cache for Pod {
    type Stored = Arc<CachedPod>;
    fn store(o: &Arc<Pod>) -> Arc<CachedPod> {
        Arc::new(CachedPod::new(o))
    }
    fn load(s: &Arc<CachedPod>) -> Option<Arc<Pod>> {
        match s.decode() {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::error!(pod = ?s.metadata.name, error = %e, "left out of the read");
                None
            }
        }
    }
    fn stored_meta(s: &Arc<CachedPod>) -> &ObjectMeta {
        &s.metadata
    }
}

impl Informer<Pod> {
    /// The namespace's pods as cached, without decoding them: for the readers of metadata and
    /// of the facts [`CachedPod`] keeps (the ReplicaSet controller, which syncs on every event
    /// of its pods).
    pub fn list_namespace_cached(&self, namespace: &str) -> Vec<Arc<CachedPod>> {
        self.read().get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Every pod as cached, without decoding: for passes over all pods that act on a few
    /// (pod GC, node lifecycle).
    pub fn list_cached(&self) -> Vec<Arc<CachedPod>> {
        self.read().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// The namespace's pods that `keep` accepts, decoded. `keep` sees the cached form (metadata,
    /// labels and facts), so a controller that wants a few pods of a large namespace (a
    /// Service's, a Job's) decodes those and not the whole namespace on each sync.
    pub fn list_namespace_where(&self, namespace: &str, keep: impl Fn(&CachedPod) -> bool) -> Vec<Arc<Pod>> {
        let stored: Vec<Arc<CachedPod>> =
            self.read().get(namespace).map(|m| m.values().filter(|p| keep(p)).cloned().collect()).unwrap_or_default();
        stored.iter().filter_map(<Pod as Cache>::load).collect()
    }
}

type ByNamespace<S> = HashMap<String, HashMap<String, S>>;

pub struct Informer<K: Cache> {
    store: RwLock<ByNamespace<K::Stored>>,
    handlers: Mutex<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
}

/// `namespace/name`, or `name` for cluster-scoped objects (upstream's MetaNamespaceKeyFunc).
pub fn key_of<K: Resource>(o: &K) -> String {
    meta_key(o.meta())
}

fn meta_key(m: &ObjectMeta) -> String {
    match &m.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        _ => m.name.clone().unwrap_or_default(),
    }
}

/// Splits a key into (namespace, name).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl<K: Cache> Informer<K> {
    pub fn new() -> Self {
        Informer {
            store: RwLock::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByNamespace<K::Stored>> {
        // Every write below is a single map operation, so a poisoned lock is still consistent.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByNamespace<K::Stored>> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let s = self.read().get(namespace).and_then(|m| m.get(name)).cloned();
        s.as_ref().and_then(K::load)
    }

    pub fn get_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let stored: Vec<K::Stored> =
            self.read().get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default();
        stored.iter().filter_map(K::load).collect()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        let stored: Vec<K::Stored> = self.read().values().flat_map(|m| m.values().cloned()).collect();
        stored.iter().filter_map(K::load).collect()
    }

    pub fn len(&self) -> usize {
        self.read().values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a handler and replays the current contents to it as adds, so a controller
    /// that starts late still sees everything.
    pub fn add_handler(&self, h: Handler<K>) {
        self.handlers.lock().unwrap_or_else(|p| p.into_inner()).push(h.clone());
        for o in self.list() {
            h(None, Some(&o));
        }
    }

    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    fn notify(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        let handlers = self.handlers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for h in handlers {
            h(old, new);
        }
    }

    fn insert(&self, o: &Arc<K>) -> Option<K::Stored> {
        let m = o.meta();
        let ns = m.namespace.clone().unwrap_or_default();
        let name = m.name.clone().unwrap_or_default();
        let stored = K::store(o);
        self.write().entry(ns).or_default().insert(name, stored)
    }

    fn remove_stored(&self, ns: &str, name: &str) -> Option<K::Stored> {
        let mut s = self.write();
        let old = s.get_mut(ns).and_then(|by_name| by_name.remove(name));
        if s.get(ns).is_some_and(|by_name| by_name.is_empty()) {
            s.remove(ns);
        }
        old
    }

    /// Puts `o` in the store; returns the object it replaced.
    pub fn upsert(&self, o: K) -> (Option<Arc<K>>, Arc<K>) {
        let o = Arc::new(o);
        let old = self.insert(&o);
        (old.as_ref().and_then(K::load), o)
    }

    pub fn remove(&self, o: &K) -> Option<Arc<K>> {
        let m = o.meta();
        let old = self.remove_stored(m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default());
        old.as_ref().and_then(K::load)
    }

    fn apply(&self, o: K) {
        let new = Arc::new(o);
        let old = self.insert(&new);
        let unchanged =
            old.as_ref().is_some_and(|old| K::stored_meta(old).resource_version == new.meta().resource_version);
        if !unchanged {
            let old = old.as_ref().and_then(K::load);
            self.notify(old.as_ref(), Some(&new));
        }
    }

    fn delete(&self, o: K) {
        let old = self.remove(&o).unwrap_or_else(|| Arc::new(o));
        self.notify(Some(&old), None);
    }

    /// A relist finished: anything not in it is gone, everything in it is applied.
    fn replace(&self, listed: Vec<K>) {
        let keep: std::collections::HashSet<String> = listed.iter().map(|o| key_of(o)).collect();
        // Only the objects that are gone are read back whole, not the whole store.
        let gone: Vec<(String, String)> = self
            .read()
            .iter()
            .flat_map(|(ns, by_name)| {
                by_name
                    .values()
                    .map(|s| K::stored_meta(s))
                    .filter(|m| !keep.contains(&meta_key(m)))
                    .map(move |m| (ns.clone(), m.name.clone().unwrap_or_default()))
            })
            .collect();
        for (ns, name) in gone {
            if let Some(old) = self.remove_stored(&ns, &name).as_ref().and_then(K::load) {
                self.notify(Some(&old), None);
            }
        }
        for o in listed {
            self.apply(o);
        }
        self.synced.send_replace(true);
    }

    async fn run(self: Arc<Self>, api: Api<K>, cancel: CancellationToken)
    where
        K: DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relist: Vec<K> = Vec::new();
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(kind = %K::kind(&Default::default()), error = %e, "watch error; retrying")
                }
                Some(Ok(ev)) => match ev {
                    watcher::Event::Init => relist.clear(),
                    watcher::Event::InitApply(o) => relist.push(strip(o)),
                    watcher::Event::InitDone => self.replace(std::mem::take(&mut relist)),
                    watcher::Event::Apply(o) => self.apply(strip(o)),
                    watcher::Event::Delete(o) => self.delete(strip(o)),
                },
            }
        }
    }
}

impl<K: Cache> Default for Informer<K> {
    fn default() -> Self {
        Self::new()
    }
}

fn strip<K: Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}

/// One informer per type, started on first use and stopped with the factory's token.
pub struct Factory {
    client: kube::Client,
    cancel: CancellationToken,
    tasks: TaskTracker,
    informers: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Factory {
    pub fn new(client: kube::Client, cancel: CancellationToken, tasks: TaskTracker) -> Self {
        Factory { client, cancel, tasks, informers: Mutex::new(HashMap::new()) }
    }

    pub fn get<K>(&self) -> Arc<Informer<K>>
    where
        K: Cache + DeserializeOwned + Debug,
        K::DynamicType: Default,
    {
        let mut all = self.informers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = all.get(&TypeId::of::<K>()).and_then(|a| a.clone().downcast::<Informer<K>>().ok()) {
            return i;
        }
        let i = Arc::new(Informer::<K>::new());
        all.insert(TypeId::of::<K>(), i.clone());
        let api: Api<K> = Api::all(self.client.clone());
        self.tasks.spawn(i.clone().run(api, self.cancel.clone()));
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

    fn recording(i: &Informer<Pod>) -> Seen {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        i.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
            let rv = |p: Option<&Arc<Pod>>| p.and_then(|p| p.metadata.resource_version.clone());
            s.lock().expect("lock").push((rv(old), rv(new)));
        }));
        seen
    }

    #[test]
    fn handlers_see_old_and_new_and_skip_resyncs_of_the_same_version() {
        let i = Informer::<Pod>::new();
        let seen = recording(&i);
        i.apply(pod("a", "p", "1"));
        i.apply(pod("a", "p", "1"));
        i.apply(pod("a", "p", "2"));
        i.delete(pod("a", "p", "2"));
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![(None, Some("1".into())), (Some("1".into()), Some("2".into())), (Some("2".into()), None)]
        );
        assert!(i.is_empty());
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_contains() {
        let i = Informer::<Pod>::new();
        i.apply(pod("a", "gone", "1"));
        i.apply(pod("a", "kept", "1"));
        let seen = recording(&i);
        seen.lock().expect("lock").clear();
        i.replace(vec![pod("a", "kept", "1"), pod("b", "new", "3")]);
        assert!(i.get("a", "gone").is_none());
        assert_eq!(i.list_namespace("b").len(), 1);
        assert!(i.has_synced());
        let seen = seen.lock().expect("lock").clone();
        assert!(seen.contains(&(Some("1".into()), None)));
        assert!(seen.contains(&(None, Some("3".into()))));
        assert_eq!(seen.len(), 2, "the unchanged object is not re-announced: {seen:?}");
    }

    #[test]
    fn a_late_handler_gets_the_current_contents_as_adds() {
        let i = Informer::<Pod>::new();
        i.apply(pod("a", "p", "7"));
        let seen = recording(&i);
        assert_eq!(*seen.lock().expect("lock"), vec![(None, Some("7".into()))]);
    }

    fn running_on(ns: &str, name: &str, rv: &str, node: &str) -> Pod {
        use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
        Pod {
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container { name: "c".into(), image: Some("v1".into()), ..Default::default() }],
                ..Default::default()
            }),
            status: Some(PodStatus { phase: Some("Running".into()), ..Default::default() }),
            ..pod(ns, name, rv)
        }
    }

    #[test]
    fn pods_read_back_whole_and_an_update_changes_the_cached_facts() {
        use super::super::owner::PodView;
        let i = Informer::<Pod>::new();
        i.apply(running_on("a", "p", "1", "n1"));
        assert_eq!(i.get("a", "p").as_deref(), Some(&running_on("a", "p", "1", "n1")));
        i.apply(running_on("a", "p", "2", "n2"));
        assert_eq!(i.list_namespace("a"), vec![Arc::new(running_on("a", "p", "2", "n2"))]);
        let cached = i.list_namespace_cached("a");
        let facts: Vec<_> =
            cached.iter().map(|p| (p.node_name(), p.phase(), p.pod_meta().resource_version.as_deref())).collect();
        assert_eq!(facts, [(Some("n2"), Some("Running"), Some("2"))]);
    }

    #[test]
    fn a_filtered_pod_list_decodes_only_the_accepted_pods_whole() {
        use super::super::owner::PodView;
        let i = Informer::<Pod>::new();
        i.apply(running_on("a", "p1", "1", "n1"));
        i.apply(running_on("a", "p2", "1", "n2"));
        i.apply(running_on("b", "p3", "1", "n1"));
        let on_n1 = i.list_namespace_where("a", |p| p.node_name() == Some("n1"));
        assert_eq!(on_n1, vec![Arc::new(running_on("a", "p1", "1", "n1"))]);
        assert!(i.list_namespace_where("a", |_| false).is_empty());
        assert!(i.list_namespace_where("c", |_| true).is_empty());
    }

    #[test]
    fn a_pod_relist_removes_the_gone_and_hands_them_out_whole() {
        let i = Informer::<Pod>::new();
        i.apply(running_on("a", "gone", "1", "n1"));
        i.apply(running_on("a", "kept", "1", "n1"));
        let deleted: Arc<Mutex<Vec<Pod>>> = Arc::default();
        let d = deleted.clone();
        i.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
            if let (Some(old), None) = (old, new) {
                d.lock().expect("lock").push((**old).clone());
            }
        }));
        i.replace(vec![running_on("a", "kept", "1", "n1")]);
        assert_eq!(*deleted.lock().expect("lock"), [running_on("a", "gone", "1", "n1")]);
        let names: Vec<_> = i.list_namespace_cached("a").iter().map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, [Some("kept".to_string())]);
    }
}
