//! The garbage collector: the ownerReferences graph over every resource discovery lists.
//! - foreground deletion: an owner with the `foregroundDeletion` finalizer has its dependents
//!   deleted, and loses the finalizer once no dependent with `blockOwnerDeletion` remains;
//! - orphan deletion: an owner with the `orphan` finalizer has its reference removed from its
//!   dependents, then loses the finalizer;
//! - background: a dependent whose owners are all gone is deleted.
//!
//! Watches only wake the collector; each pass reads the reflector stores and acts through the
//! API, so a restart loses nothing but the stores.
//!
//! upstream: the collector watches through metadata informers (`PartialObjectMetadata`), never
//! whole objects, and kube-controller-manager trims managedFields from every informer. The
//! stores here go one step further and keep only the metadata a pass reads ([`trim`]): with
//! every pod of the cluster in them, a full copy would double the controller-manager's memory.

mod graph;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use tokio::sync::Notify;

use super::discovery::{deletable, Resource};
use super::Context;
pub use graph::{plan, Action as GcAction, Node};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

type Meta = PartialObjectMeta<DynamicObject>;

struct Watched {
    res: Resource,
    store: Store<Meta>,
}

/// Keeps only what [`node_of`] and the actions read: identity, version, deletion, finalizers and
/// owners. Labels, annotations, managedFields and the rest would only cost memory.
pub fn trim(o: &mut Meta) {
    let m = std::mem::take(&mut o.metadata);
    o.types = None;
    o.metadata = ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        owner_references: m.owner_references,
        ..ObjectMeta::default()
    };
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let resources = deletable(&ctx.client).await?;
    let mut watched = Vec::new();
    let mut streams = Vec::new();
    for res in resources {
        let writer = Writer::new(res.ar.clone());
        let store = writer.as_reader();
        // Api<PartialObjectMeta<_>> lists and watches with `as=PartialObjectMetadata`.
        let api: Api<Meta> = Api::all_with(ctx.client.clone(), &res.ar);
        let w = wake.clone();
        let events = watcher(api, watcher::Config::default()).modify(trim).default_backoff();
        let s = reflector::reflector(writer, events).for_each(move |_| {
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
        if watched.iter().any(|w| w.store.state().is_empty() && !is_ready(&w.store)) {
            continue;
        }
        if let Err(e) = pass(&ctx.client, &watched).await {
            tracing::warn!(controller = "garbagecollector", error = %e, "pass failed; will retry");
        }
    }
}

fn is_ready(store: &Store<Meta>) -> bool {
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

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
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|o| graph::Owner {
                uid: o.uid,
                api_version: o.api_version,
                kind: o.kind,
                name: o.name,
                block: o.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
    }
}

async fn pass(client: &kube::Client, watched: &[Watched]) -> Result<(), kube::Error> {
    if !watched.iter().all(|w| is_ready(&w.store)) {
        return Ok(());
    }
    let nodes: Vec<Node> = watched
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.store.state().into_iter().map(move |o| node_of(&o, i)))
        .collect();
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
                let kept: Vec<serde_json::Value> = watched[node.res]
                    .store
                    .state()
                    .into_iter()
                    .find(|o| o.metadata.uid.as_deref() == Some(node.uid.as_str()))
                    .and_then(|o| o.metadata.owner_references.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o.uid != *owner_uid)
                    .map(|o| serde_json::to_value(o).expect("an OwnerReference serializes"))
                    .collect();
                replace_at_version(&api_for(node), node, "/metadata/ownerReferences", json!(kept)).await
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference, Time};
    use kube::api::TypeMeta;

    fn full() -> Meta {
        Meta {
            types: Some(TypeMeta { api_version: "meta.k8s.io/v1".into(), kind: "PartialObjectMetadata".into() }),
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                generate_name: Some("web-".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                resource_version: Some("42".into()),
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
    fn trim_keeps_what_the_collector_reads_and_nothing_else() {
        let mut o = full();
        trim(&mut o);
        let f = full().metadata;
        assert_eq!(
            o.metadata,
            ObjectMeta {
                name: f.name,
                namespace: f.namespace,
                uid: f.uid,
                resource_version: f.resource_version,
                deletion_timestamp: f.deletion_timestamp,
                finalizers: f.finalizers,
                owner_references: f.owner_references,
                ..Default::default()
            }
        );
        assert_eq!(o.types, None);
    }

    #[test]
    fn a_trimmed_object_makes_the_same_graph_node() {
        let mut o = full();
        trim(&mut o);
        assert_eq!(node_of(&o, 3), node_of(&full(), 3));
    }
}
