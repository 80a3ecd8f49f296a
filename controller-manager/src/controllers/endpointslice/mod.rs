//! The EndpointSlice controller, as upstream's `pkg/controller/endpointslice`: for every Service
//! with a selector, slices (label `kubernetes.io/service-name`, managed by
//! `endpointslice-controller.k8s.io`, addressType IPv4, at most `--max-endpoints-per-slice`
//! endpoints each) listing the selected pods with their addresses, node, zone and
//! ready/serving/terminating conditions, and the Service's ports resolved per pod (a named
//! targetPort can mean different numbers on different pods, so pods are grouped by their
//! resolved ports, one group per slice set).
//!
//! Services without a selector are left alone (their slices are someone else's — the
//! `kubernetes` Service's endpoints are the apiserver's, as upstream).
//!
//! Placement is simpler than upstream's churn-minimising reconciler: per port group, the
//! existing slices (by name) are rewritten in place with the desired chunks, extras created,
//! surplus deleted. The contents match upstream; which slice an endpoint lands in may not.

pub mod desired;
pub mod trigger_time;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use super::informer::{key_of, split_key, Informer};
use super::owner::controller_ref;
use super::workqueue::Queue;
use super::Context;
use desired::{desired_slices, port_key, selected, selects, Group};
use trigger_time::{TriggerTimeTracker, LAST_CHANGE_TRIGGER_TIME};

pub const NAME: &str = "endpointslice";
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// upstream --max-endpoints-per-slice default
pub const MAX_PER_SLICE: usize = 100;
const WORKERS: usize = 5;

struct Esc {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    queue: Arc<Queue>,
    trigger_times: TriggerTimeTracker,
}

/// The keys of the Services in the pod's namespace whose selector matches the pod's labels.
pub fn services_for_pod(services: &Informer<Service>, p: &Pod) -> Vec<String> {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let labels = p.metadata.labels.clone().unwrap_or_default();
    services
        .list_namespace(ns)
        .into_iter()
        .filter(|s| {
            let sel = s.spec.as_ref().and_then(|s| s.selector.as_ref());
            sel.is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| key_of(s.as_ref()))
        .collect()
}

/// Wires Service and pod changes to `queue` (shared with the Endpoints controller).
pub fn watch_services_and_pods(services: &Arc<Informer<Service>>, pods: &Arc<Informer<Pod>>, queue: &Arc<Queue>) {
    let q = Arc::downgrade(queue);
    services.add_handler(Arc::new(move |old: Option<&Arc<Service>>, new: Option<&Arc<Service>>| {
        if let (Some(q), Some(s)) = (q.upgrade(), new.or(old)) {
            q.add(key_of(s.as_ref()));
        }
    }));
    let q = Arc::downgrade(queue);
    let svcs = Arc::downgrade(services);
    pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        let (Some(q), Some(svcs)) = (q.upgrade(), svcs.upgrade()) else { return };
        for p in [old, new].into_iter().flatten() {
            for key in services_for_pod(&svcs, p) {
                q.add(key);
            }
        }
    }));
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let esc = Arc::new(Esc {
        client: ctx.client.clone(),
        services: ctx.informers.get::<Service>(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        slices: ctx.informers.get::<EndpointSlice>(),
        queue: Arc::new(Queue::new()),
        trigger_times: TriggerTimeTracker::default(),
    });
    watch_services_and_pods(&esc.services, &esc.pods, &esc.queue);
    let q = Arc::downgrade(&esc.queue);
    esc.slices.add_handler(Arc::new(move |old: Option<&Arc<EndpointSlice>>, new: Option<&Arc<EndpointSlice>>| {
        // Someone edited or deleted one of ours: put it back.
        let (Some(q), Some(s)) = (q.upgrade(), new.or(old)) else { return };
        let labels = s.metadata.labels.clone().unwrap_or_default();
        if labels.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME) {
            if let Some(svc) = labels.get(SERVICE_NAME) {
                q.add(format!("{}/{svc}", s.metadata.namespace.as_deref().unwrap_or_default()));
            }
        }
    }));
    esc.services.wait_synced().await;
    esc.pods.wait_synced().await;
    esc.nodes.wait_synced().await;
    esc.slices.wait_synced().await;
    let c = esc.clone();
    super::run_workers(NAME, esc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

fn slice_api(client: &kube::Client, ns: &str) -> Api<EndpointSlice> {
    Api::namespaced(client.clone(), ns)
}

impl Esc {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (ns, name) = split_key(key);
        let Some(svc) = self.services.get(ns, name) else {
            // Our slices carry the Service as owner: the garbage collector removes them.
            self.trigger_times.delete_service(key);
            return Ok(None);
        };
        if svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_none_or(|s| s.is_empty()) {
            return Ok(None);
        }
        let zones: HashMap<String, String> = self
            .nodes
            .list()
            .iter()
            .filter_map(|n| {
                let zone = n.metadata.labels.as_ref()?.get("topology.kubernetes.io/zone")?.clone();
                Some((n.metadata.name.clone()?, zone))
            })
            .collect();
        // Only the Service's pods are decoded, not the namespace's.
        let pods = self.pods.list_namespace_where(ns, |p| selects(&svc, p.labels.as_deref()));
        let triggered = {
            let selected: Vec<&Pod> = selected(&svc, &pods).into_iter().map(|p| p.as_ref()).collect();
            self.trigger_times.compute(key, &svc, &selected)
        };
        // upstream: slices this sync creates or rewrites carry the trigger time, or lose the
        // annotation when the sync has none; slices left as they are keep theirs.
        let annotations = triggered.map(|t| BTreeMap::from([(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string())]));
        let want = desired_slices(&svc, &pods, &zones, MAX_PER_SLICE);
        let mut have: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for s in self.slices.list_namespace(ns) {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            if labels.get(SERVICE_NAME).map(String::as_str) == Some(name)
                && labels.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
            {
                have.entry(port_key(s.ports.as_deref().unwrap_or_default())).or_default().push(s);
            }
        }
        let api = slice_api(&self.client, ns);
        let mut groups: BTreeMap<String, Group> = want.into_iter().map(|g| (port_key(&g.ports), g)).collect();
        // A Service selecting nothing still gets one empty slice, as upstream's does.
        if groups.is_empty() {
            groups.insert(port_key(&[]), Group { ports: Vec::new(), chunks: vec![Vec::new()] });
        }
        for (pk, group) in &groups {
            let mut existing = have.remove(pk).unwrap_or_default();
            existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            for (i, chunk) in group.chunks.iter().enumerate() {
                let mut slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.into()),
                        labels: Some(slice_labels(&svc)),
                        annotations: annotations.clone(),
                        owner_references: Some(vec![controller_ref(svc.as_ref())]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: chunk.clone(),
                    ports: Some(group.ports.clone()),
                };
                match existing.get(i) {
                    Some(cur) if same_content(cur, &slice) => {}
                    Some(cur) => {
                        slice.metadata.name = cur.metadata.name.clone();
                        slice.metadata.generate_name = None;
                        slice.metadata.resource_version = cur.metadata.resource_version.clone();
                        api.replace(cur.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &slice)
                            .await?;
                    }
                    None => {
                        api.create(&PostParams::default(), &slice).await?;
                    }
                }
            }
            for extra in existing.iter().skip(group.chunks.len()) {
                delete_slice(&api, extra).await?;
            }
        }
        for stale in have.values().flatten() {
            delete_slice(&api, stale).await?;
        }
        Ok(None)
    }
}

async fn delete_slice(api: &Api<EndpointSlice>, s: &EndpointSlice) -> Result<(), kube::Error> {
    match api.delete(s.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// upstream: the Service's labels, plus service-name and managed-by (and headless).
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    l.insert(SERVICE_NAME.into(), svc.metadata.name.clone().unwrap_or_default());
    l.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        l.insert("service.kubernetes.io/headless".into(), String::new());
    }
    l
}

fn same_content(cur: &EndpointSlice, want: &EndpointSlice) -> bool {
    cur.endpoints == want.endpoints
        && cur.ports.clone().unwrap_or_default() == want.ports.clone().unwrap_or_default()
        && cur.metadata.labels == want.metadata.labels
        && cur.address_type == want.address_type
}
