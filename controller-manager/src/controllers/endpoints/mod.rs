//! The Endpoints controller, as upstream's `pkg/controller/endpoint`: the legacy `Endpoints`
//! object (named after its Service) for older clients, with ready pods in `addresses` and
//! not-ready ones in `notReadyAddresses`, one subset per resolved port set. Services without a
//! selector are left alone (the apiserver owns the `kubernetes` Service's Endpoints), and the
//! Endpoints of a deleted Service are deleted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::endpointslice::desired::desired_subsets;
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
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let ec = Arc::new(Ec {
        client: ctx.client.clone(),
        services: ctx.informers.get::<Service>(),
        pods: ctx.informers.get::<Pod>(),
        endpoints: ctx.informers.get::<Endpoints>(),
        queue: Arc::new(Queue::new()),
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
        let subsets = desired_subsets(&svc, &self.pods.list_namespace(ns));
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
        let obj = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels),
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
