//! The Endpoints controller, as upstream's `pkg/controller/endpoint`: the legacy `Endpoints`
//! object (named after its Service) for older clients, with ready pods in `addresses` and
//! not-ready ones in `notReadyAddresses`, one subset per resolved port set. Services without a
//! selector are left alone (the apiserver owns the `kubernetes` Service's Endpoints), and the
//! Endpoints of a deleted Service are deleted. A rewrite carries the change's trigger time
//! (`endpoints.kubernetes.io/last-change-trigger-time`) as the EndpointSlice controller's do.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::endpointslice::desired::{desired_subsets, selected, selects};
use super::endpointslice::trigger_time::{TriggerTimeTracker, LAST_CHANGE_TRIGGER_TIME};
use super::endpointslice::watch_services_and_pods;
use super::informer::{split_key, Informer};
use super::workqueue::Queue;
use super::Context;

pub const NAME: &str = "endpoint";
const WORKERS: usize = 5;

struct Ec {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    endpoints: Arc<Informer<Endpoints>>,
    queue: Arc<Queue>,
    trigger_times: TriggerTimeTracker,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let ec = Arc::new(Ec {
        client: ctx.client.clone(),
        services: ctx.informers.get::<Service>(),
        pods: ctx.informers.get::<Pod>(),
        endpoints: ctx.informers.get::<Endpoints>(),
        queue: Arc::new(Queue::new()),
        trigger_times: TriggerTimeTracker::default(),
    });
    watch_services_and_pods(&ec.services, &ec.pods, &ec.queue);
    ec.services.wait_synced().await;
    ec.pods.wait_synced().await;
    ec.endpoints.wait_synced().await;
    // upstream: Endpoints whose Service is gone are checked once at start.
    for e in ec.endpoints.list() {
        let (ns, name) =
            (e.metadata.namespace.clone().unwrap_or_default(), e.metadata.name.clone().unwrap_or_default());
        if ec.services.get(&ns, &name).is_none() {
            ec.queue.add(format!("{ns}/{name}"));
        }
    }
    let c = ec.clone();
    super::run_workers(NAME, ec.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Ec {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let Some(svc) = self.services.get(ns, name) else {
            self.trigger_times.delete_service(key);
            if self.endpoints.get(ns, name).is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(None);
        };
        if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none_or(|s| s.is_empty()) {
            return Ok(None);
        }
        // Only the Service's pods are decoded, not the namespace's.
        let pods = self.pods.list_namespace_where(ns, |p| selects(&svc, p.labels.as_deref()));
        // upstream computes it on every sync, written or not, so the tracker's state follows
        // the pods even while the Endpoints stay as they are.
        let triggered = {
            let selected: Vec<&Pod> = selected(&svc, &pods).into_iter().map(|p| p.as_ref()).collect();
            self.trigger_times.compute(key, &svc, &selected)
        };
        let subsets = desired_subsets(&svc, &pods);
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert("service.kubernetes.io/headless".into(), String::new());
        }
        let want_subsets = (!subsets.is_empty()).then_some(subsets);
        let current = self.endpoints.get(ns, name);
        if let Some(cur) = &current {
            if cur.subsets == want_subsets && cur.metadata.labels.clone().unwrap_or_default() == labels {
                return Ok(None);
            }
        }
        // upstream keeps the current object's other annotations, and sets or clears the
        // trigger time with each rewrite.
        let mut annotations = current.as_ref().and_then(|c| c.metadata.annotations.clone()).unwrap_or_default();
        match triggered {
            Some(t) => annotations.insert(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string()),
            None => annotations.remove(LAST_CHANGE_TRIGGER_TIME),
        };
        let obj = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                resource_version: current.as_ref().and_then(|c| c.metadata.resource_version.clone()),
                ..Default::default()
            },
            subsets: want_subsets,
        };
        match current {
            Some(_) => api.replace(name, &PostParams::default(), &obj).await?,
            None => api.create(&PostParams::default(), &obj).await?,
        };
        Ok(None)
    }
}
