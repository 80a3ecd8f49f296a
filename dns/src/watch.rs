//! Watches Services and EndpointSlices (kube::runtime watchers: list + watch with bookmarks
//! and backoff) and applies every event to the zone. Only what DNS needs is kept (see
//! `zone::service_from_api`), not the objects. After both kinds have listed once the zone is
//! marked synced, and a relist drops whatever vanished while the watch was down.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use tokio::sync::watch as chan;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::zone::{self, Key, Zone};

/// How one kind goes into the zone.
trait Tracked: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    const KIND: &'static str;
    fn apply(&self, z: &mut Zone);
    fn key(&self) -> Key {
        let m = self.meta();
        Key::new(m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default())
    }
    fn known(z: &Zone) -> Vec<Key>;
    fn delete(z: &mut Zone, key: &Key);
}

impl Tracked for Service {
    const KIND: &'static str = "Service";
    fn apply(&self, z: &mut Zone) {
        if let Some((k, s)) = zone::service_from_api(self) {
            z.apply_service(k, s);
        }
    }
    fn known(z: &Zone) -> Vec<Key> {
        z.service_keys()
    }
    fn delete(z: &mut Zone, key: &Key) {
        z.delete_service(key)
    }
}

impl Tracked for EndpointSlice {
    const KIND: &'static str = "EndpointSlice";
    fn apply(&self, z: &mut Zone) {
        match zone::slice_from_api(self) {
            Some((k, s)) => z.apply_slice(k, s),
            // a slice whose service label went away no longer counts
            None => z.delete_slice(&self.key()),
        }
    }
    fn known(z: &Zone) -> Vec<Key> {
        z.slice_keys()
    }
    fn delete(z: &mut Zone, key: &Key) {
        z.delete_slice(key)
    }
}

fn lock(z: &RwLock<Zone>) -> RwLockWriteGuard<'_, Zone> {
    z.write().unwrap_or_else(|p| p.into_inner())
}

/// Starts both watches; the zone is marked synced once both have listed.
pub fn start(client: kube::Client, zone: Arc<RwLock<Zone>>, tasks: &TaskTracker, cancel: CancellationToken) {
    let (svc_tx, mut svc_rx) = chan::channel(false);
    let (eps_tx, mut eps_rx) = chan::channel(false);
    tasks.spawn(watch_kind::<Service>(Api::all(client.clone()), zone.clone(), svc_tx, cancel.clone()));
    tasks.spawn(watch_kind::<EndpointSlice>(Api::all(client), zone.clone(), eps_tx, cancel.clone()));
    tasks.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            ok = async { svc_rx.wait_for(|s| *s).await.is_ok() && eps_rx.wait_for(|s| *s).await.is_ok() } => {
                if ok {
                    lock(&zone).mark_synced();
                    tracing::info!("Services and EndpointSlices listed; answering the cluster domain");
                }
            }
        }
    });
}

async fn watch_kind<K: Tracked>(
    api: Api<K>,
    zone: Arc<RwLock<Zone>>,
    synced: chan::Sender<bool>,
    cancel: CancellationToken,
) {
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut relist: Option<HashSet<Key>> = None;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Err(e)) => tracing::warn!(kind = K::KIND, error = %e, "watch error; retrying"),
            Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
            Some(Ok(Event::InitApply(o))) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert(o.key());
                }
                o.apply(&mut lock(&zone));
            }
            Some(Ok(Event::InitDone)) => {
                let seen = relist.take().unwrap_or_default();
                {
                    let mut z = lock(&zone);
                    for key in K::known(&z).into_iter().filter(|k| !seen.contains(k)) {
                        K::delete(&mut z, &key);
                    }
                }
                synced.send_replace(true);
                tracing::info!(kind = K::KIND, objects = seen.len(), "listed");
            }
            Some(Ok(Event::Apply(o))) => o.apply(&mut lock(&zone)),
            Some(Ok(Event::Delete(o))) => K::delete(&mut lock(&zone), &o.key()),
        }
    }
}
