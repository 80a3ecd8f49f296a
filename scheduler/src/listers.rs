//! `plugins::Listers` over kube-runtime reflector stores, and the informers that fill them.

use std::sync::Arc;

use apimachinery::labels::{Operator, Requirement, Selector};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::plugins::default_preemption::Pdb;
use crate::plugins::Listers;

pub struct StoreListers {
    pvcs: Store<PersistentVolumeClaim>,
    pvs: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    services: Store<Service>,
    replicasets: Store<ReplicaSet>,
    statefulsets: Store<StatefulSet>,
    pdbs: Store<PodDisruptionBudget>,
}

/// Starts one reflector; `changed` runs after every event it applies.
fn reflect<K>(
    api: Api<K>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    changed: Arc<dyn Fn() + Send + Sync>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let cancel = cancel.clone();
    tasks.spawn(async move {
        use futures::StreamExt;
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = stream.next() => match ev {
                    None => return,
                    Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => changed(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::warn!(error = %e, "watch failed; retrying"),
                },
            }
        }
    });
    store
}

impl StoreListers {
    /// Starts the reflectors. `volumes_changed` runs when a PVC, PV or StorageClass changes.
    pub fn start(
        client: &kube::Client,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
        volumes_changed: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let quiet: Arc<dyn Fn() + Send + Sync> = Arc::new(|| {});
        StoreListers {
            pvcs: reflect(Api::all(client.clone()), tasks, cancel, volumes_changed.clone()),
            pvs: reflect(Api::all(client.clone()), tasks, cancel, volumes_changed.clone()),
            classes: reflect(Api::all(client.clone()), tasks, cancel, volumes_changed),
            services: reflect(Api::all(client.clone()), tasks, cancel, quiet.clone()),
            replicasets: reflect(Api::all(client.clone()), tasks, cancel, quiet.clone()),
            statefulsets: reflect(Api::all(client.clone()), tasks, cancel, quiet.clone()),
            pdbs: reflect(Api::all(client.clone()), tasks, cancel, quiet),
        }
    }
}

fn selector_of(s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>) -> Option<Selector> {
    let v = serde_json::to_value(s?).ok()?;
    Selector::from_label_selector(&v).ok()
}

impl Listers for StoreListers {
    fn pvc(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.pvcs.get(&ObjectRef::new(name).within(namespace))
    }
    fn pv(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.pvs.get(&ObjectRef::new(name))
    }
    fn pvs(&self) -> Vec<Arc<PersistentVolume>> {
        self.pvs.state()
    }
    fn storage_class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes.get(&ObjectRef::new(name))
    }

    fn default_selector(&self, pod: &Pod) -> Option<Selector> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let empty = Default::default();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let mut reqs: Vec<Requirement> = Vec::new();
        for svc in self.services.state() {
            if svc.metadata.namespace.as_deref() != Some(ns) {
                continue;
            }
            let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
                continue;
            };
            if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                reqs.extend(
                    sel.iter()
                        .filter_map(|(k, v)| Requirement::new(k.as_str(), Operator::Equals, vec![v.clone()]).ok()),
                );
            }
        }
        let owners = self
            .replicasets
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
            .filter_map(|r| selector_of(r.spec.as_ref().map(|s| &s.selector)))
            .chain(
                self.statefulsets
                    .state()
                    .into_iter()
                    .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
                    .filter_map(|r| selector_of(r.spec.as_ref().map(|s| &s.selector))),
            );
        for sel in owners {
            if !sel.is_empty() && sel.matches(labels) {
                reqs.extend(sel.requirements().iter().cloned());
            }
        }
        if reqs.is_empty() {
            return None;
        }
        Some(reqs.into_iter().fold(Selector::default(), Selector::with_requirement))
    }

    fn pdbs(&self) -> Vec<Pdb> {
        self.pdbs
            .state()
            .iter()
            .filter_map(|p| {
                Some(Pdb {
                    namespace: p.metadata.namespace.clone()?,
                    selector: selector_of(p.spec.as_ref()?.selector.as_ref())?,
                    disruptions_allowed: p.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0),
                })
            })
            .collect()
    }
}
