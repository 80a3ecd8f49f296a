//! Watches Services and EndpointSlices (kube::runtime watchers, so list + watch with
//! bookmarks and backoff, never polling) and feeds every event into the tracker. Each event
//! wakes the sync loop; the tracker decides whether anything the rules depend on changed.
//!
//! upstream's informers use the same label selector: objects of another service proxy
//! (`service.kubernetes.io/service-proxy-name`) and headless services' slices are skipped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use tokio::sync::{watch as chan, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tracker::{ServiceKey, Tracker};

const SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// How one kind goes into the tracker.
trait Tracked: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {
    fn apply(&self, t: &mut Tracker);
    fn id(&self) -> (String, String) {
        let m = self.meta();
        (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
    }
    fn known(t: &Tracker) -> Vec<(String, String)>;
    fn delete(t: &mut Tracker, id: &(String, String));
}

impl Tracked for Service {
    fn apply(&self, t: &mut Tracker) {
        t.apply_service(self)
    }
    fn known(t: &Tracker) -> Vec<(String, String)> {
        t.service_keys().into_iter().map(|k| (k.namespace, k.name)).collect()
    }
    fn delete(t: &mut Tracker, id: &(String, String)) {
        t.delete_service(&ServiceKey::new(&id.0, &id.1))
    }
}

impl Tracked for EndpointSlice {
    fn apply(&self, t: &mut Tracker) {
        t.apply_slice(self)
    }
    fn known(t: &Tracker) -> Vec<(String, String)> {
        t.slice_ids()
    }
    fn delete(t: &mut Tracker, id: &(String, String)) {
        t.delete_slice(&id.0, &id.1)
    }
}

/// Starts both watches; the returned receiver turns true once both have listed everything.
pub fn start(
    client: kube::Client,
    tracker: Arc<Mutex<Tracker>>,
    changes: Arc<Notify>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> chan::Receiver<bool> {
    let (svc_tx, mut svc_rx) = chan::channel(false);
    let (eps_tx, mut eps_rx) = chan::channel(false);
    let (all_tx, all_rx) = chan::channel(false);
    tasks.spawn(watch_kind::<Service>(
        Api::all(client.clone()),
        tracker.clone(),
        changes.clone(),
        svc_tx,
        cancel.clone(),
    ));
    tasks.spawn(watch_kind::<EndpointSlice>(Api::all(client), tracker, changes, eps_tx, cancel.clone()));
    tasks.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            (a, b) = async {
                let a = svc_rx.wait_for(|s| *s).await.is_ok();
                let b = eps_rx.wait_for(|s| *s).await.is_ok();
                (a, b)
            } => {
                if a && b {
                    all_tx.send_replace(true);
                }
            }
        }
    });
    all_rx
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

async fn watch_kind<K: Tracked>(
    api: Api<K>,
    tracker: Arc<Mutex<Tracker>>,
    changes: Arc<Notify>,
    synced: chan::Sender<bool>,
    cancel: CancellationToken,
) {
    let kind = std::any::type_name::<K>().rsplit("::").next().unwrap_or_default();
    let stream = watcher::watcher(api, watcher::Config::default().labels(SELECTOR)).default_backoff();
    futures::pin_mut!(stream);
    // Objects seen during a (re)list; whatever the tracker knows beyond them was deleted
    // while the watch was down.
    let mut relist: Option<HashSet<(String, String)>> = None;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Err(e)) => tracing::warn!(kind, error = %e, "watch error; retrying"),
            Some(Ok(Event::Init)) => relist = Some(HashSet::new()),
            Some(Ok(Event::InitApply(o))) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert(o.id());
                }
                o.apply(&mut lock(&tracker));
            }
            Some(Ok(Event::InitDone)) => {
                let seen = relist.take().unwrap_or_default();
                {
                    let mut t = lock(&tracker);
                    for id in K::known(&t).into_iter().filter(|id| !seen.contains(id)) {
                        K::delete(&mut t, &id);
                    }
                }
                synced.send_replace(true);
                tracing::info!(kind, objects = seen.len(), "listed");
                changes.notify_one();
            }
            Some(Ok(Event::Apply(o))) => {
                o.apply(&mut lock(&tracker));
                changes.notify_one();
            }
            Some(Ok(Event::Delete(o))) => {
                K::delete(&mut lock(&tracker), &o.id());
                changes.notify_one();
            }
        }
    }
}
