//! The kubelet's event recorder: core/v1 Events with source component `kubelet` and the node
//! as host, like upstream's `record.EventRecorder`. Recording never blocks the caller: events
//! go through a channel to [`run`], which correlates them (upstream's `EventCorrelator`): an
//! identical event bumps `count` and `lastTimestamp` of the one already written, and more than
//! [`MAX_SIMILAR`] events differing only in message within [`AGGREGATE_WINDOW`] are combined into
//! one "(combined from similar events): ..." event; and each object's events pass a token
//! bucket (upstream's spam filter: a burst of [`SPAM_BURST`], then one per
//! [`SPAM_REFILL`]). So a crash loop does not spam.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// upstream's event reasons the kubelet uses.
pub mod reason {
    pub const PULLING: &str = "Pulling";
    pub const PULLED: &str = "Pulled";
    pub const CREATED: &str = "Created";
    pub const STARTED: &str = "Started";
    pub const KILLING: &str = "Killing";
    pub const BACK_OFF: &str = "BackOff";
    pub const UNHEALTHY: &str = "Unhealthy";
    pub const FAILED_MOUNT: &str = "FailedMount";
    pub const FAILED_CREATE_POD_SANDBOX: &str = "FailedCreatePodSandBox";
    pub const FAILED: &str = "Failed";
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
    pub const FAILED_POST_START_HOOK: &str = "FailedPostStartHook";
    pub const FAILED_PRE_STOP_HOOK: &str = "FailedPreStopHook";
    pub const MISSING_CLUSTER_DNS: &str = "MissingClusterDNS";
    pub const INVALID_ENV_VAR_NAMES: &str = "InvalidEnvironmentVariableNames";
}

/// Events differing only in message that are combined after this many in the window.
pub const MAX_SIMILAR: usize = 10;
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// upstream's EventSourceObjectSpamFilter: burst and refill interval per object.
pub const SPAM_BURST: f64 = 25.0;
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// How long an event is remembered for counting repeats.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// A reference to a pod, or to one of its containers (`fieldPath`).
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let field_path = container.map(|name| {
        let is_init = pod.spec.as_ref().is_some_and(|s| s.init_containers.iter().flatten().any(|c| c.name == name));
        if is_init {
            format!("spec.initContainers{{{name}}}")
        } else {
            format!("spec.containers{{{name}}}")
        }
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        field_path,
        ..Default::default()
    }
}

/// One event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub object: ObjectReference,
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

/// Where events go: the API in the kubelet, a recording fake in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn create(&self, event: Event) -> Result<(), String>;
    /// Updates an event already written: its count, last time and (aggregation) message.
    async fn update(&self, namespace: &str, name: &str, count: i32, last: Time, message: &str) -> Result<(), String>;
}

/// The API server as an [`EventSink`].
pub struct ApiEvents {
    pub client: kube::Client,
}

#[async_trait]
impl EventSink for ApiEvents {
    async fn create(&self, event: Event) -> Result<(), String> {
        let ns = event.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), &ns);
        api.create(&Default::default(), &event).await.map(|_| ()).map_err(|e| e.to_string())
    }
    async fn update(&self, namespace: &str, name: &str, count: i32, last: Time, message: &str) -> Result<(), String> {
        let api: kube::Api<Event> = kube::Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"count": count, "lastTimestamp": last, "message": message});
        api.patch(name, &Default::default(), &kube::api::Patch::Strategic(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A recording [`EventSink`] for tests: the events as they would be in the API.
#[derive(Debug, Default)]
pub struct FakeEvents {
    pub events: std::sync::Mutex<Vec<Event>>,
}

impl FakeEvents {
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// (type, reason, message, count) of every event, in creation order.
    pub fn summary(&self) -> Vec<(String, String, String, i32)> {
        self.snapshot()
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                    e.count.unwrap_or(0),
                )
            })
            .collect()
    }
}

#[async_trait]
impl EventSink for FakeEvents {
    async fn create(&self, event: Event) -> Result<(), String> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        Ok(())
    }
    async fn update(&self, namespace: &str, name: &str, count: i32, last: Time, message: &str) -> Result<(), String> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let e = events
            .iter_mut()
            .find(|e| e.metadata.name.as_deref() == Some(name) && e.metadata.namespace.as_deref() == Some(namespace))
            .ok_or_else(|| format!("events {name:?} not found"))?;
        e.count = Some(count);
        e.last_timestamp = Some(last);
        e.message = Some(message.into());
        Ok(())
    }
}

/// What to write for one recorded event.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Create(Box<Event>),
    Update {
        namespace: String,
        name: String,
        count: i32,
        last: Time,
        message: String,
    },
    /// Dropped by the spam filter.
    Skip,
}

#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    at: Timestamp,
}

/// upstream's EventCorrelator (aggregation + repeat counting), pure: time comes in.
#[derive(Debug, Default)]
pub struct Correlator {
    /// Identical events: key includes the message.
    seen: HashMap<String, Seen>,
    /// Similar events (all but the message): when each was seen, in the window.
    similar: HashMap<String, Vec<Timestamp>>,
    /// Spam filter buckets per object: (tokens, last refill).
    buckets: HashMap<String, (f64, Timestamp)>,
}

fn object_key(o: &ObjectReference) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        o.kind.as_deref().unwrap_or(""),
        o.namespace.as_deref().unwrap_or(""),
        o.name.as_deref().unwrap_or(""),
        o.uid.as_deref().unwrap_or(""),
        o.field_path.as_deref().unwrap_or("")
    )
}

fn ts(t: Timestamp) -> Time {
    Time(t)
}

impl Correlator {
    pub fn observe(&mut self, ev: &NewEvent, node: &str, now: Timestamp) -> Write {
        let cutoff = now - CACHE_FOR;
        self.seen.retain(|_, s| s.at > cutoff);
        self.buckets.retain(|_, (_, at)| *at > cutoff);
        let (tokens, at) = self.buckets.entry(object_key(&ev.object)).or_insert((SPAM_BURST, now));
        let elapsed = now.duration_since(*at).as_secs_f64().max(0.0);
        *tokens = (*tokens + elapsed / SPAM_REFILL.as_secs_f64()).min(SPAM_BURST);
        *at = now;
        if *tokens < 1.0 {
            return Write::Skip;
        }
        *tokens -= 1.0;
        let window_start = now - AGGREGATE_WINDOW;
        let similar_key = format!("{}|{}|{}", object_key(&ev.object), ev.type_, ev.reason);
        let times = self.similar.entry(similar_key.clone()).or_default();
        times.retain(|t| *t > window_start);
        times.push(now);
        let aggregate = times.len() > MAX_SIMILAR;
        let message =
            if aggregate { format!("(combined from similar events): {}", ev.message) } else { ev.message.clone() };
        let key = if aggregate { format!("{similar_key}|*") } else { format!("{similar_key}|{}", ev.message) };
        if let Some(s) = self.seen.get_mut(&key) {
            s.count += 1;
            s.at = now;
            return Write::Update {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                count: s.count,
                last: ts(now),
                message,
            };
        }
        let namespace = ev.object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!("{}.{:x}", ev.object.name.as_deref().unwrap_or("event"), now.as_nanosecond());
        self.seen.insert(key, Seen { namespace: namespace.clone(), name: name.clone(), count: 1, at: now });
        Write::Create(Box::new(Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(namespace), ..Default::default() },
            involved_object: ev.object.clone(),
            reason: Some(ev.reason.clone()),
            message: Some(message),
            type_: Some(ev.type_.into()),
            source: Some(EventSource { component: Some("kubelet".into()), host: Some(node.into()) }),
            first_timestamp: Some(ts(now)),
            last_timestamp: Some(ts(now)),
            count: Some(1),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.into()),
            ..Default::default()
        }))
    }
}

/// Records events without waiting for the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<NewEvent>,
}

impl Recorder {
    /// A recorder and the receiving end to hand to [`run`].
    pub fn new() -> (Recorder, mpsc::UnboundedReceiver<NewEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Recorder { tx }, rx)
    }

    pub fn event(&self, object: ObjectReference, type_: &'static str, reason: &str, message: impl Into<String>) {
        // The writer is gone only at shutdown; events then have nowhere to go.
        let _ = self.tx.send(NewEvent { object, type_, reason: reason.into(), message: message.into() });
    }

    pub fn pod_event(&self, pod: &Pod, type_: &'static str, reason: &str, message: impl Into<String>) {
        self.event(pod_ref(pod, None), type_, reason, message);
    }

    pub fn container_event(
        &self,
        pod: &Pod,
        container: &str,
        type_: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.event(pod_ref(pod, Some(container)), type_, reason, message);
    }
}

/// Writes recorded events until `cancel`; failures are logged and dropped, as upstream does
/// after its retries.
pub async fn run(
    sink: std::sync::Arc<dyn EventSink>,
    mut rx: mpsc::UnboundedReceiver<NewEvent>,
    node: String,
    cancel: CancellationToken,
) {
    let mut correlator = Correlator::default();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = rx.recv() => match ev { Some(ev) => ev, None => return },
        };
        let result = match correlator.observe(&ev, &node, Timestamp::now()) {
            Write::Create(e) => sink.create(*e).await,
            Write::Update { namespace, name, count, last, message } => {
                sink.update(&namespace, &name, count, last, &message).await
            }
            Write::Skip => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(reason = %ev.reason, error = %e, "writing an event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"initContainers": [{"name": "setup", "image": "x"}], "containers": [{"name": "app", "image": "x"}]}}))
        .expect("pod")
    }

    fn ev(reason: &str, message: &str) -> NewEvent {
        NewEvent {
            object: pod_ref(&pod(), Some("app")),
            type_: WARNING,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn references_name_the_container_field_path() {
        assert_eq!(pod_ref(&pod(), Some("app")).field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(pod_ref(&pod(), Some("setup")).field_path.as_deref(), Some("spec.initContainers{setup}"));
        assert_eq!(pod_ref(&pod(), None).field_path, None);
    }

    #[test]
    fn first_event_is_created_with_kubelet_source() {
        let mut c = Correlator::default();
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let Write::Create(e) = c.observe(&ev("BackOff", "Back-off restarting failed container"), "node-1", now) else {
            panic!("expected a create")
        };
        assert_eq!(e.source.as_ref().and_then(|s| s.component.as_deref()), Some("kubelet"));
        assert_eq!(e.source.as_ref().and_then(|s| s.host.as_deref()), Some("node-1"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert!(e.metadata.name.as_deref().is_some_and(|n| n.starts_with("web.")));
        assert_eq!(e.involved_object.field_path.as_deref(), Some("spec.containers{app}"));
    }

    #[test]
    fn identical_events_count_up_instead_of_repeating() {
        let mut c = Correlator::default();
        let t0 = Timestamp::from_second(1_800_000_000).expect("time");
        let first = c.observe(&ev("BackOff", "m"), "n", t0);
        let Write::Create(created) = first else { panic!("create") };
        for i in 2..=5 {
            match c.observe(&ev("BackOff", "m"), "n", t0 + Duration::from_secs(i)) {
                Write::Update { name, count, .. } => {
                    assert_eq!(Some(name), created.metadata.name.clone());
                    assert_eq!(count, i as i32);
                }
                w => panic!("expected an update, got {w:?}"),
            }
        }
        assert!(matches!(c.observe(&ev("Killing", "m"), "n", t0), Write::Create(_)), "another reason is new");
    }

    #[test]
    fn many_similar_events_are_combined() {
        let mut c = Correlator::default();
        let t0 = Timestamp::from_second(1_800_000_000).expect("time");
        let mut creates = 0;
        let mut last_message = String::new();
        for i in 0..20 {
            match c.observe(&ev("Unhealthy", &format!("probe failed {i}")), "n", t0 + Duration::from_secs(i)) {
                Write::Create(e) => {
                    creates += 1;
                    last_message = e.message.unwrap_or_default();
                }
                Write::Update { message, .. } => last_message = message,
                Write::Skip => panic!("20 events are within the spam filter's burst"),
            }
        }
        assert_eq!(creates, MAX_SIMILAR + 1, "ten distinct events, then one combined");
        assert_eq!(last_message, "(combined from similar events): probe failed 19");
    }

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_five_minutes() {
        let mut c = Correlator::default();
        let t0 = Timestamp::from_second(1_800_000_000).expect("time");
        let written = (0..40)
            .filter(|i| !matches!(c.observe(&ev("FailedMount", "m"), "n", t0 + Duration::from_secs(*i)), Write::Skip))
            .count();
        assert_eq!(written, 25, "the burst");
        assert!(matches!(c.observe(&ev("FailedMount", "m"), "n", t0 + Duration::from_secs(100)), Write::Skip));
        assert!(!matches!(c.observe(&ev("FailedMount", "m"), "n", t0 + Duration::from_secs(40 + 300)), Write::Skip));
        let other = NewEvent { object: pod_ref(&pod(), Some("setup")), ..ev("FailedMount", "m") };
        assert!(!matches!(c.observe(&other, "n", t0 + Duration::from_secs(100)), Write::Skip), "per object");
    }

    #[tokio::test]
    async fn run_writes_through_the_sink() {
        let sink = Arc::new(FakeEvents::default());
        let (rec, rx) = Recorder::new();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(sink.clone(), rx, "node-1".into(), cancel.clone()));
        rec.container_event(&pod(), "app", NORMAL, reason::PULLED, "Container image \"x\" already present on machine");
        rec.container_event(&pod(), "app", NORMAL, reason::PULLED, "Container image \"x\" already present on machine");
        drop(rec);
        task.await.expect("task");
        assert_eq!(
            sink.summary(),
            [(
                "Normal".to_string(),
                "Pulled".to_string(),
                "Container image \"x\" already present on machine".to_string(),
                2
            )]
        );
    }
}
