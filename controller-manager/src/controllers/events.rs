//! Events, as upstream's core/v1 event recorder: `kubectl describe` lists them under the
//! object. Recording never blocks a reconcile: events go through a bounded channel to one
//! writer task, and are dropped when it is full (upstream's broadcaster drops too).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Resource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

const BUFFER: usize = 1000;

#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    tx: mpsc::Sender<Event>,
}

/// The reference an event names: kind, namespace, name, uid, apiVersion, resourceVersion.
pub fn reference<K: Resource<DynamicType = ()>>(o: &K) -> ObjectReference {
    let m = o.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    /// A recorder for `component` (e.g. `replicaset-controller`) and the task that writes its
    /// events until `cancel`.
    pub fn new(
        client: kube::Client,
        component: &'static str,
        cancel: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<Event>(BUFFER);
        let writer = async move {
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = rx.recv() => match ev { Some(ev) => ev, None => return },
                };
                let ns = ev.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                if let Err(e) = api.create(&PostParams::default(), &ev).await {
                    tracing::debug!(error = %e, reason = ?ev.reason, "event not recorded");
                }
            }
        };
        (Recorder { component, tx }, writer)
    }

    /// A recorder whose events are collected by the returned receiver (unit tests).
    pub fn recording(component: &'static str) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        (Recorder { component, tx }, rx)
    }

    pub fn event(&self, object: ObjectReference, type_: &str, reason: &str, message: String) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let name = format!("{}.{:x}", object.name.as_deref().unwrap_or("object"), now.as_nanosecond());
        let ev = Event {
            metadata: ObjectMeta { name: Some(name), namespace: object.namespace.clone(), ..Default::default() },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            source: Some(EventSource { component: Some(self.component.into()), host: None }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            ..Default::default()
        };
        let _ = self.tx.try_send(ev);
    }
}
