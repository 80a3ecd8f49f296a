//! Shared informers, as upstream's `SharedInformerFactory`: one watch per resource type for
//! the whole controller-manager, an indexed store every controller reads, and change handlers
//! that see the old and the new object (a ReplicaSet must wake both the old and the new owner
//! of a pod whose labels changed). Handlers only enqueue keys; they run on the watch task and
//! must not block.
//!
//! `managedFields` are dropped from stored objects (upstream's informers do the same through a
//! transform): no controller reads them, and they are most of a pod's size.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `old` is `None` for an add, `new` is `None` for a delete.
pub type Handler<K> = Arc<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

type ByNamespace<K> = HashMap<String, HashMap<String, Arc<K>>>;

pub struct Informer<K> {
    store: RwLock<ByNamespace<K>>,
    handlers: Mutex<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
}

/// `namespace/name`, or `name` for cluster-scoped objects (upstream's MetaNamespaceKeyFunc).
pub fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    match &m.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", m.name.as_deref().unwrap_or_default()),
        _ => m.name.clone().unwrap_or_default(),
    }
}

/// Splits a key into (namespace, name).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

impl<K: Resource + Clone + Send + Sync + 'static> Informer<K> {
    pub fn new() -> Self {
        Informer {
            store: RwLock::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByNamespace<K>> {
        // Every write below is a single map operation, so a poisoned lock is still consistent.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ByNamespace<K>> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace).and_then(|m| m.get(name)).cloned()
    }

    pub fn get_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read().get(namespace).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().flat_map(|m| m.values().cloned()).collect()
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

    /// Puts `o` in the store; returns the object it replaced.
    pub fn upsert(&self, o: K) -> (Option<Arc<K>>, Arc<K>) {
        let o = Arc::new(o);
        let m = o.meta();
        let ns = m.namespace.clone().unwrap_or_default();
        let name = m.name.clone().unwrap_or_default();
        let old = self.write().entry(ns).or_default().insert(name, o.clone());
        (old, o)
    }

    pub fn remove(&self, o: &K) -> Option<Arc<K>> {
        let m = o.meta();
        let ns = m.namespace.as_deref().unwrap_or_default();
        let name = m.name.as_deref().unwrap_or_default();
        let mut s = self.write();
        let old = s.get_mut(ns).and_then(|by_name| by_name.remove(name));
        if s.get(ns).is_some_and(|by_name| by_name.is_empty()) {
            s.remove(ns);
        }
        old
    }

    fn apply(&self, o: K) {
        let (old, new) = self.upsert(o);
        let unchanged = old.as_ref().is_some_and(|old| old.meta().resource_version == new.meta().resource_version);
        if !unchanged {
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
        for o in self.list() {
            if !keep.contains(&key_of(o.as_ref())) {
                self.delete((*o).clone());
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

impl<K: Resource + Clone + Send + Sync + 'static> Default for Informer<K> {
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
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
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
}
