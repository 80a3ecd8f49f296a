//! The garbage collector: the ownerReferences graph over every resource discovery lists.
//! - foreground deletion: an owner with the `foregroundDeletion` finalizer has its dependents
//!   deleted, and loses the finalizer once no dependent with `blockOwnerDeletion` remains;
//! - orphan deletion: an owner with the `orphan` finalizer has its reference removed from its
//!   dependents, then loses the finalizer;
//! - background: a dependent whose owners are all gone is deleted.
//!
//! Watches only wake the collector; each pass reads the graph's stores and acts through the
//! API, so a restart loses nothing but the stores.
//!
//! upstream: the collector watches through metadata informers (`PartialObjectMetadata`), never
//! whole objects, and kube-controller-manager trims managedFields from every informer. The
//! stores here go one step further: each object is kept as the graph [`Node`] a pass reads
//! ([`node_of`]: identity, version, deletion, finalizers and owners), built once when its event
//! arrives and shared with every pass. With every pod of the cluster in them, a full copy would
//! double the controller-manager's memory, and a node list rebuilt per pass would churn it.

mod graph;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tokio::sync::Notify;

use super::discovery::{deletable, Resource};
use super::Context;
pub use graph::{plan, Action as GcAction, Node};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

type Meta = PartialObjectMeta<DynamicObject>;

/// One resource's objects as graph nodes, by uid.
#[derive(Default)]
pub struct Store {
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    /// The first list has been stored.
    synced: AtomicBool,
    relist: std::sync::Mutex<HashMap<String, Arc<Node>>>,
}

impl Store {
    /// Applies one watch event for the resource at index `res`.
    pub fn apply(&self, ev: watcher::Event<Meta>, res: usize) {
        // Every write is a single map operation, so a poisoned lock is still consistent.
        let nodes = || self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let relist = || self.relist.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            watcher::Event::Init => relist().clear(),
            watcher::Event::InitApply(o) => {
                let n = node_of(&o, res);
                relist().insert(n.uid.clone(), Arc::new(n));
            }
            watcher::Event::InitDone => {
                *nodes() = std::mem::take(&mut *relist());
                self.synced.store(true, Ordering::Release);
            }
            watcher::Event::Apply(o) => {
                let n = node_of(&o, res);
                nodes().insert(n.uid.clone(), Arc::new(n));
            }
            watcher::Event::Delete(o) => {
                nodes().remove(o.metadata.uid.as_deref().unwrap_or_default());
            }
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

struct Watched {
    res: Resource,
    store: Arc<Store>,
}

/// upstream's ignoredResources: the collector neither watches nor collects events (core and
/// `events.k8s.io`). They own nothing, expire on their own, and are the most numerous objects
/// after pods (one per pod created or deleted by a workload).
pub fn ignored(res: &Resource) -> bool {
    res.ar.plural == "events" && (res.ar.group.is_empty() || res.ar.group == "events.k8s.io")
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let resources = deletable(&ctx.client).await?;
    let mut watched = Vec::new();
    let mut streams = Vec::new();
    for (i, res) in resources.into_iter().filter(|r| !ignored(r)).enumerate() {
        let store = Arc::new(Store::default());
        // Api<PartialObjectMeta<_>> lists and watches with `as=PartialObjectMetadata`.
        let api: Api<Meta> = Api::all_with(ctx.client.clone(), &res.ar);
        let (w, st) = (wake.clone(), store.clone());
        let s = watcher(api, watcher::Config::default()).default_backoff().for_each(move |ev| {
            match ev {
                Ok(ev) => st.apply(ev, i),
                Err(e) => tracing::debug!(controller = "garbagecollector", error = %e, "watch error; retrying"),
            }
            w.notify_one();
            futures::future::ready(())
        });
        streams.push(Box::pin(s));
        watched.push(Watched { res, store });
    }
    let cancel = ctx.cancel.clone();
    let watching = stream::iter(streams).for_each_concurrent(None, |s| s);
    tokio::pin!(watching);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = &mut watching => return Ok(()),
            _ = wake.notified() => {}
            _ = tick.tick() => {}
        }
        // Let a burst of events settle into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Err(e) = pass(&ctx.client, &watched).await {
            tracing::warn!(controller = "garbagecollector", error = %e, "pass failed; will retry");
        }
    }
}

/// What a pass reads of an object: everything else in its metadata is dropped on arrival.
fn node_of(obj: &Meta, res: usize) -> Node {
    let m = &obj.metadata;
    Node {
        res,
        uid: m.uid.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        namespace: m.namespace.clone(),
        resource_version: m.resource_version.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|o| graph::Owner {
                uid: o.uid.clone(),
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                block: o.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
    }
}

async fn pass(client: &kube::Client, watched: &[Watched]) -> Result<(), kube::Error> {
    if !watched.iter().all(|w| w.store.is_synced()) {
        return Ok(());
    }
    let nodes: Vec<Arc<Node>> = watched.iter().flat_map(|w| w.store.nodes()).collect();
    let kinds: HashMap<(String, String), usize> =
        watched.iter().enumerate().map(|(i, w)| ((w.res.ar.api_version.clone(), w.res.ar.kind.clone()), i)).collect();
    for action in plan(&nodes) {
        let res = |n: &Node| &watched[n.res].res;
        let api_for = |n: &Node| match (&n.namespace, res(n).namespaced) {
            (Some(ns), true) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &res(n).ar),
            _ => Api::<DynamicObject>::all_with(client.clone(), &res(n).ar),
        };
        let result = match &action {
            GcAction::Delete { node, .. } | GcAction::DeleteIfOwnersGone { node } => {
                if matches!(action, GcAction::DeleteIfOwnersGone { .. })
                    && owners_alive(client, node, watched, &kinds).await?
                {
                    continue;
                }
                let policy = match &action {
                    GcAction::Delete { foreground: true, .. } => DeleteParams::foreground(),
                    _ => DeleteParams::background(),
                };
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: Some(node.uid.clone()), resource_version: None }),
                    ..policy
                };
                tracing::info!(controller = "garbagecollector", namespace = ?node.namespace, name = %node.name, "deleting dependent");
                api_for(node).delete(&node.name, &dp).await.map(|_| ())
            }
            GcAction::RemoveFinalizer { node, finalizer } => {
                let rest: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
                replace_at_version(&api_for(node), node, "/metadata/finalizers", json!(rest)).await
            }
            GcAction::RemoveOwner { node, owner_uid } => {
                // The store keeps owners only as far as the graph needs them: the references
                // written back come from the live object, at the version they were read.
                let api = api_for(node);
                match api.get_opt(&node.name).await? {
                    Some(live) if live.metadata.uid.as_deref() == Some(node.uid.as_str()) => {
                        let kept: Vec<serde_json::Value> = live
                            .metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|o| o.uid != *owner_uid)
                            .map(|o| serde_json::to_value(o).expect("an OwnerReference serializes"))
                            .collect();
                        let read = Node {
                            resource_version: live.metadata.resource_version.unwrap_or_default(),
                            ..node.clone()
                        };
                        replace_at_version(&api, &read, "/metadata/ownerReferences", json!(kept)).await
                    }
                    _ => Ok(()),
                }
            }
        };
        match result {
            Ok(()) => {}
            // Someone else changed or removed it first; the next pass sees the new state.
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409 | 422) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Replaces one field of `node`'s object, only if it is still at the version the pass saw.
async fn replace_at_version(
    api: &Api<DynamicObject>,
    node: &Node,
    path: &str,
    value: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": node.resource_version},
        {"op": "replace", "path": path, "value": value},
    ]);
    let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(&node.name, &PatchParams::default(), &Patch::<()>::Json(patch)).await.map(|_| ())
}

/// A live check before a background delete: the stores may lag behind a just-created owner.
async fn owners_alive(
    client: &kube::Client,
    node: &Node,
    watched: &[Watched],
    kinds: &HashMap<(String, String), usize>,
) -> Result<bool, kube::Error> {
    for o in &node.owners {
        let Some(&i) = kinds.get(&(o.api_version.clone(), o.kind.clone())) else {
            // An owner kind nobody serves cannot exist: the reference dangles.
            continue;
        };
        let r = &watched[i].res;
        let api = match (&node.namespace, r.namespaced) {
            (Some(ns), true) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &r.ar),
            _ => Api::<DynamicObject>::all_with(client.clone(), &r.ar),
        };
        match api.get_opt(&o.name).await? {
            Some(live) if live.metadata.uid.as_deref() == Some(o.uid.as_str()) => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_both_groups_are_ignored_and_nothing_else() {
        let res = |group: &str, plural: &str| Resource {
            ar: kube::discovery::ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: if group.is_empty() { "v1".into() } else { format!("{group}/v1") },
                kind: "Kind".into(),
                plural: plural.into(),
            },
            namespaced: true,
        };
        assert!(ignored(&res("", "events")));
        assert!(ignored(&res("events.k8s.io", "events")));
        assert!(!ignored(&res("", "pods")));
        assert!(!ignored(&res("example.com", "events")));
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference, Time};
    use kube::api::{ObjectMeta, TypeMeta};

    fn meta(uid: &str, rv: &str) -> Meta {
        Meta {
            types: Some(TypeMeta { api_version: "meta.k8s.io/v1".into(), kind: "PartialObjectMetadata".into() }),
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                generate_name: Some("web-".into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                creation_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                deletion_timestamp: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
                finalizers: Some(vec![FOREGROUND.into()]),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some([("note".to_string(), "x".repeat(100))].into()),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..Default::default()
                }]),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    uid: "u0".into(),
                    block_owner_deletion: Some(true),
                    controller: Some(true),
                }]),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn a_node_keeps_what_a_pass_reads() {
        assert_eq!(
            node_of(&meta("u1", "42"), 3),
            Node {
                res: 3,
                uid: "u1".into(),
                name: "web-1".into(),
                namespace: Some("default".into()),
                resource_version: "42".into(),
                deleting: true,
                finalizers: vec![FOREGROUND.into()],
                owners: vec![graph::Owner {
                    uid: "u0".into(),
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    block: true,
                }],
            }
        );
    }

    fn uids_and_versions(s: &Store) -> Vec<(String, String)> {
        let mut v: Vec<_> = s.nodes().iter().map(|n| (n.uid.clone(), n.resource_version.clone())).collect();
        v.sort();
        v
    }

    #[test]
    fn the_store_follows_the_watch_and_a_relist_replaces_it() {
        let s = Store::default();
        s.apply(watcher::Event::Init, 0);
        s.apply(watcher::Event::InitApply(meta("a", "1")), 0);
        assert!(!s.is_synced(), "not synced before the list is complete");
        assert!(s.nodes().is_empty());
        s.apply(watcher::Event::InitDone, 0);
        assert!(s.is_synced());
        s.apply(watcher::Event::Apply(meta("b", "2")), 0);
        s.apply(watcher::Event::Apply(meta("a", "3")), 0);
        assert_eq!(uids_and_versions(&s), [("a".into(), "3".into()), ("b".into(), "2".into())]);
        s.apply(watcher::Event::Delete(meta("b", "4")), 0);
        assert_eq!(uids_and_versions(&s), [("a".into(), "3".into())]);

        // A relist: what it lacks is gone once it is done, the old contents stay until then.
        s.apply(watcher::Event::Init, 0);
        s.apply(watcher::Event::InitApply(meta("c", "5")), 0);
        assert_eq!(uids_and_versions(&s), [("a".into(), "3".into())]);
        s.apply(watcher::Event::InitDone, 0);
        assert_eq!(uids_and_versions(&s), [("c".into(), "5".into())]);
    }
}
