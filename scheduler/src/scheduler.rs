//! The scheduler's moving parts (upstream `pkg/scheduler/scheduler.go`, `schedule_one.go`,
//! `eventhandlers.go`): informer handlers that feed the queue and the cache, the loop that
//! runs one scheduling cycle at a time, assumes the chosen node (Reserve) and hands the
//! binding to a task (Bind), and the failure path (PostFilter/preemption, the PodScheduled
//! condition, FailedScheduling events). Decisions come from `framework` and `plugins`; every
//! write goes through `writer::ApiWriter`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use rand::SeedableRng;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::framework::cycle::{FitError, Framework, PluginTiming};
use crate::framework::queue::{Popped, Queue};
use crate::framework::resource::is_terminal;
use crate::framework::{Cache, CycleState, PodInfo, Snapshot};
use crate::metrics::{Metrics, PluginLabels};
use crate::plugins::{default_preemption, inter_pod_affinity, pod_topology_spread, volume_binding, Listers};
use crate::writer::{ApiWriter, PodEvent, PodRef};

/// Bindings in flight at once: enough to keep the apiserver busy, bounded so a slow
/// apiserver slows the loop instead of piling up tasks.
const PARALLEL_BINDS: usize = 64;
/// upstream's event broadcaster queues 1,000 events, drops the rest when writes lag, and
/// writes them to the sink one at a time.
const EVENT_QUEUE: usize = 1000;
const PARALLEL_EVENT_WRITES: usize = 1;
/// upstream samples plugin timings in 10 % of cycles.
const PLUGIN_METRICS_SAMPLE: u64 = 10;

pub struct Scheduler {
    fw: Framework,
    listers: Arc<dyn Listers>,
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    wake: Notify,
    writer: Arc<dyn ApiWriter>,
    pub metrics: Metrics,
    events: mpsc::Sender<PodEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<PodEvent>>>,
    tasks: TaskTracker,
    bind_slots: Arc<Semaphore>,
}

fn pod_ref(p: &PodInfo) -> PodRef {
    PodRef { namespace: p.namespace.clone(), name: p.name.clone(), uid: p.uid.clone() }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks is a bug already reported; keep scheduling.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    pub fn new(fw: Framework, listers: Arc<dyn Listers>, writer: Arc<dyn ApiWriter>, metrics: Metrics) -> Arc<Self> {
        Self::with_queue(fw, listers, writer, metrics, Queue::new())
    }

    /// A scheduler whose queue is set up by the caller (the feature gates shape it).
    pub fn with_queue(
        fw: Framework,
        listers: Arc<dyn Listers>,
        writer: Arc<dyn ApiWriter>,
        metrics: Metrics,
        queue: Queue,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        Arc::new(Scheduler {
            fw,
            listers,
            cache: Mutex::new(Cache::new()),
            queue: Mutex::new(queue),
            wake: Notify::new(),
            writer,
            metrics,
            events: tx,
            events_rx: Mutex::new(Some(rx)),
            tasks: TaskTracker::new(),
            bind_slots: Arc::new(Semaphore::new(PARALLEL_BINDS)),
        })
    }

    fn emit(&self, ev: PodEvent) {
        if self.events.try_send(ev).is_err() {
            tracing::debug!("event queue full, dropping an event");
        }
    }

    fn move_for_event(&self, plugins: Option<&[&str]>) {
        lock(&self.queue).move_for_event(plugins, Instant::now());
        self.wake.notify_one();
    }

    // ---- informer handlers (upstream eventhandlers.go) ----

    /// A pod was added or changed.
    pub fn on_pod(&self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if is_terminal(&pod) {
            self.on_pod_deleted(&pod);
            return;
        }
        match pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
            Some(node) => {
                let was_assumed = {
                    let mut cache = lock(&self.cache);
                    cache.clear_nomination(&uid);
                    cache.is_assumed(&uid)
                };
                lock(&self.cache).upsert_pod(Arc::new(PodInfo::new_bound(pod)), &node);
                lock(&self.queue).delete(&uid);
                if !was_assumed {
                    // A new neighbour can satisfy pod affinity or change spreading.
                    self.move_for_event(Some(&[inter_pod_affinity::NAME, pod_topology_spread::NAME]));
                }
            }
            None => {
                let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(crate::SCHEDULER_NAME)
                    == crate::SCHEDULER_NAME;
                if !ours || pod.metadata.deletion_timestamp.is_some() || lock(&self.cache).is_assumed(&uid) {
                    lock(&self.cache).clear_nomination(&uid);
                    return;
                }
                let nominated =
                    pod.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
                let info = Arc::new(PodInfo::new(pod));
                {
                    // An update without the nomination can be one written before preemption's
                    // status write landed: the in-memory nomination stays (as upstream's
                    // nominator keeps it).
                    let mut cache = lock(&self.cache);
                    let node = nominated.or_else(|| cache.nominated_node(&info.uid));
                    cache.nominate(info.clone(), node.as_deref());
                }
                lock(&self.queue).add_or_update(info, Instant::now());
                self.wake.notify_one();
            }
        }
    }

    pub fn on_pod_deleted(&self, pod: &Pod) {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        lock(&self.queue).delete(uid);
        lock(&self.cache).clear_nomination(uid);
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        if bound {
            lock(&self.cache).remove_pod(uid);
            // Freed resources, ports, anti-affinity: any waiting pod may fit now.
            self.move_for_event(None);
        }
    }

    pub fn on_node(&self, node: Node) {
        if lock(&self.cache).upsert_node(node) {
            self.move_for_event(None);
        }
    }

    pub fn on_node_deleted(&self, node: &Node) {
        lock(&self.cache).remove_node(node.metadata.name.as_deref().unwrap_or_default());
    }

    /// A re-list finished: forget pods and nodes it did not show.
    pub fn resync_pods(&self, seen: &HashSet<String>) {
        let stale: Vec<String> =
            lock(&self.cache).confirmed_pod_uids().into_iter().filter(|u| !seen.contains(u)).collect();
        for u in &stale {
            lock(&self.cache).remove_pod(u);
        }
        let gone: Vec<String> = lock(&self.queue).uids().into_iter().filter(|u| !seen.contains(u)).collect();
        for u in &gone {
            lock(&self.queue).delete(u);
        }
        if !stale.is_empty() {
            self.move_for_event(None);
        }
    }

    pub fn resync_nodes(&self, seen: &HashSet<String>) {
        let names = lock(&self.cache).node_names();
        for n in names.into_iter().filter(|n| !seen.contains(n)) {
            lock(&self.cache).remove_node(&n);
        }
    }

    /// A PVC, PV or StorageClass changed: pods waiting on volumes may fit now.
    pub fn on_volume_change(&self) {
        self.move_for_event(Some(&[volume_binding::NAME]));
    }

    // ---- the scheduling loop (upstream scheduleOne) ----

    async fn next_pod(&self, cancel: &CancellationToken) -> Option<Popped> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (popped, next) = {
                let mut q = lock(&self.queue);
                (q.pop(Instant::now()), q.next_wakeup())
            };
            if popped.is_some() {
                return popped;
            }
            let sleep = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = &mut notified => {}
                _ = sleep => {}
            }
        }
    }

    /// Runs until `cancel`: the scheduling loop, event writers and the pending-pods gauge.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if let Some(rx) = lock(&self.events_rx).take() {
            let writer = self.writer.clone();
            let c = cancel.clone();
            self.tasks.spawn(async move { write_events(rx, writer, c).await });
        }
        let me = self.clone();
        let c = cancel.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = tick.tick() => me.metrics.set_pending(lock(&me.queue).lens()),
                }
            }
        });

        let mut snap = Snapshot::default();
        let mut start = 0usize;
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let mut cycles: u64 = 0;
        while let Some(p) = self.next_pod(&cancel).await {
            cycles += 1;
            self.schedule_one(p, &mut snap, &mut start, &mut rng, cycles % PLUGIN_METRICS_SAMPLE == 0, &cancel).await;
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    async fn schedule_one(
        self: &Arc<Self>,
        p: Popped,
        snap: &mut Snapshot,
        start: &mut usize,
        rng: &mut rand::rngs::StdRng,
        sample: bool,
        cancel: &CancellationToken,
    ) {
        let t0 = std::time::Instant::now();
        lock(&self.cache).update_snapshot(snap);
        let mut state = CycleState::default();
        let mut timings: Vec<PluginTiming> = Vec::new();
        let result = self.fw.schedule_pod(&mut state, &p.info, snap, start, rng, sample.then_some(&mut timings));
        for t in &timings {
            self.metrics
                .plugin_duration
                .get_or_create(&PluginLabels { plugin: t.plugin, extension_point: t.point })
                .observe(t.duration.as_secs_f64());
        }
        match result {
            Ok(r) => {
                // Reserve: the node's resources are taken before the binding is written.
                let assumed = {
                    let mut cache = lock(&self.cache);
                    cache.clear_nomination(&p.info.uid);
                    cache.assume_pod(p.info.clone(), &r.node)
                };
                if let Err(e) = assumed {
                    tracing::error!(pod = %p.info.key(), error = %e, "assume failed");
                    lock(&self.queue).requeue_backoff(&p.info.uid, Instant::now());
                    self.metrics.attempt("error", t0.elapsed().as_secs_f64());
                    return;
                }
                lock(&self.queue).done(&p.info.uid);
                let volumes = snap
                    .get(&r.node)
                    .map(|n| volume_binding::assume(self.listers.as_ref(), &p.info, n))
                    .unwrap_or_default();
                let permit = tokio::select! {
                    _ = cancel.cancelled() => {
                        lock(&self.cache).forget_pod(&p.info.uid);
                        return;
                    }
                    permit = self.bind_slots.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let (me, cancel) = (self.clone(), cancel.clone());
                self.tasks.spawn(async move {
                    me.bind(p, r.node, volumes, &cancel, t0).await;
                    drop(permit);
                });
            }
            Err(fit) => self.handle_failure(p, state, snap, fit, t0),
        }
    }

    /// Bind (upstream DefaultBinder), then the Scheduled event; on failure the assumption is
    /// forgotten and the pod retried after its backoff.
    async fn bind(
        &self,
        p: Popped,
        node: String,
        volumes: volume_binding::PodVolumes,
        cancel: &CancellationToken,
        t0: std::time::Instant,
    ) {
        let pr = pod_ref(&p.info);
        let timeout = volume_binding::BIND_TIMEOUT;
        if let Err(e) =
            volume_binding::pre_bind(&volumes, self.listers.as_ref(), self.writer.as_ref(), timeout, cancel).await
        {
            tracing::warn!(pod = %p.info.key(), node, error = %e, "binding volumes failed");
            self.metrics.attempt("error", t0.elapsed().as_secs_f64());
            lock(&self.cache).forget_pod(&p.info.uid);
            lock(&self.queue).readd_after_error(p.info.clone(), p.attempts, Instant::now());
            self.move_for_event(None);
            self.emit(PodEvent {
                pod: pr,
                type_: "Warning",
                reason: "FailedScheduling",
                action: "Scheduling",
                message: format!("running PreBind plugin \"VolumeBinding\": {e}"),
            });
            return;
        }
        match self.writer.bind(&pr, &node).await {
            Ok(()) => {
                self.metrics.attempt("scheduled", t0.elapsed().as_secs_f64());
                self.metrics.e2e.observe(p.initial_attempt.elapsed().as_secs_f64());
                self.emit(PodEvent {
                    message: format!("Successfully assigned {}/{} to {node}", pr.namespace, pr.name),
                    pod: pr,
                    type_: "Normal",
                    reason: "Scheduled",
                    action: "Binding",
                });
            }
            Err(e) => {
                tracing::warn!(pod = %p.info.key(), node, error = %e, "binding failed");
                self.metrics.attempt("error", t0.elapsed().as_secs_f64());
                lock(&self.cache).forget_pod(&p.info.uid);
                // 404: the pod is gone; 409: it is bound already or being deleted. The
                // informer brings either news; anything else is retried.
                if !matches!(e.code(), Some(404 | 409)) {
                    lock(&self.queue).readd_after_error(p.info.clone(), p.attempts, Instant::now());
                }
                self.move_for_event(None);
                self.emit(PodEvent {
                    pod: pr,
                    type_: "Warning",
                    reason: "FailedScheduling",
                    action: "Scheduling",
                    message: format!("Binding rejected: {e}"),
                });
            }
        }
    }

    /// PostFilter (preemption), then the pod waits in the unschedulable set; the event and
    /// the PodScheduled condition say why.
    fn handle_failure(
        self: &Arc<Self>,
        p: Popped,
        state: CycleState,
        snap: &Snapshot,
        mut fit: Box<FitError>,
        t0: std::time::Instant,
    ) {
        let mut nominated = None;
        if fit.num_all_nodes > 0 {
            let pdbs = self.listers.pdbs();
            match default_preemption::preempt(&self.fw, &state, &p.info, snap, &fit, &pdbs) {
                Ok(c) => {
                    // Nominated at once, not when the status write comes back: the next pods
                    // in this burst must already leave the freed room alone.
                    lock(&self.cache).nominate(p.info.clone(), Some(&c.node));
                    nominated = Some(c.node.clone());
                    for v in &c.victims {
                        let me = self.clone();
                        let (victim, preemptor, node) = (pod_ref(v), p.info.key(), c.node.clone());
                        self.tasks.spawn(async move {
                            match me.writer.delete_pod(&victim).await {
                                Ok(()) => me.emit(PodEvent {
                                    message: format!("Preempted by {preemptor} on node {node}"),
                                    pod: victim,
                                    type_: "Normal",
                                    reason: "Preempted",
                                    action: "Preempting",
                                }),
                                Err(e) => tracing::warn!(pod = %victim.name, error = %e, "deleting a preemption victim failed"),
                            }
                        });
                    }
                }
                Err(msg) => fit.diagnosis.post_filter_msg = Some(msg),
            }
        }
        let message = fit.to_string();
        tracing::debug!(pod = %p.info.key(), %message, "unschedulable");
        self.metrics.attempt("unschedulable", t0.elapsed().as_secs_f64());
        lock(&self.queue).requeue_unschedulable(
            &p.info.uid,
            p.cycle,
            fit.diagnosis.unschedulable_plugins.clone(),
            Instant::now(),
        );
        let pr = pod_ref(&p.info);
        self.emit(PodEvent {
            pod: pr.clone(),
            type_: "Warning",
            reason: "FailedScheduling",
            action: "Scheduling",
            message: message.clone(),
        });
        if condition_changed(&p.info.pod, &message, nominated.as_deref()) {
            let me = self.clone();
            self.tasks.spawn(async move {
                if let Err(e) = me.writer.set_unschedulable(&pr, &message, nominated.as_deref()).await {
                    tracing::warn!(pod = %pr.name, error = %e, "updating the PodScheduled condition failed");
                }
            });
        }
    }

    /// (active, backoff, unschedulable) queue lengths.
    pub fn pending(&self) -> (usize, usize, usize) {
        lock(&self.queue).lens()
    }
}

/// upstream only writes the condition when it (or the nominated node) would change.
fn condition_changed(pod: &Pod, message: &str, nominated: Option<&str>) -> bool {
    let st = pod.status.as_ref();
    let same = st.and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    !same || (nominated.is_some() && st.and_then(|s| s.nominated_node_name.as_deref()) != nominated)
}

async fn write_events(mut rx: mpsc::Receiver<PodEvent>, writer: Arc<dyn ApiWriter>, cancel: CancellationToken) {
    use futures::StreamExt;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let work = stream.for_each_concurrent(PARALLEL_EVENT_WRITES, |ev| {
        let writer = writer.clone();
        async move {
            if let Err(e) = writer.event(&ev).await {
                tracing::debug!(pod = %ev.pod.name, error = %e, "writing an event failed");
            }
        }
    });
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = work => {}
    }
}

/// Feeds a watcher's events to `apply`/`delete`; after a (re-)list, `resync` gets the keys
/// the list showed.
pub async fn drive<K, S>(
    stream: S,
    cancel: CancellationToken,
    key: impl Fn(&K) -> String,
    mut apply: impl FnMut(K),
    mut delete: impl FnMut(&K),
    mut resync: impl FnMut(&HashSet<String>),
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    use futures::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<HashSet<String>> = None;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => listing = Some(HashSet::new()),
            Some(Ok(watcher::Event::InitApply(o))) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(key(&o));
                }
                apply(o);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if let Some(l) = listing.take() {
                    resync(&l);
                }
            }
            Some(Ok(watcher::Event::Apply(o))) => apply(o),
            Some(Ok(watcher::Event::Delete(o))) => delete(&o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{default_framework, Handle, NoListers};
    use crate::testutil::{node, pod};
    use crate::writer::RecordingWriter;
    use prometheus_client::registry::Registry;

    fn scheduler(writer: Arc<RecordingWriter>) -> Arc<Scheduler> {
        let listers: Arc<dyn Listers> = Arc::new(NoListers);
        let fw = default_framework(&Handle { listers: listers.clone() }, 0);
        Scheduler::new(fw, listers, writer, Metrics::new(&mut Registry::default()))
    }

    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn burst_never_overcommits_a_node() {
        let w = Arc::new(RecordingWriter::default());
        let s = scheduler(w.clone());
        s.on_node(node("n1", "2", "8Gi"));
        s.on_node(node("n2", "2", "8Gi"));
        for i in 0..6 {
            s.on_pod(pod(&format!("p{i}"), "1", "1Gi"));
        }
        let cancel = CancellationToken::new();
        let run = tokio::spawn(s.clone().run(cancel.clone()));
        wait_until("4 bindings and 2 unschedulable", || {
            w.binds.lock().expect("lock").len() == 4 && w.unschedulable.lock().expect("lock").len() == 2
        })
        .await;
        let binds = w.binds.lock().expect("lock").clone();
        for n in ["n1", "n2"] {
            assert_eq!(binds.iter().filter(|(_, node)| node == n).count(), 2, "{n} holds exactly two 1-cpu pods");
        }
        let msg = w.unschedulable.lock().expect("lock")[0].1.clone();
        assert_eq!(
            msg,
            "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: \
             2 No preemption victims found for incoming pod.."
        );
        cancel.cancel();
        run.await.expect("joined");
    }

    #[tokio::test]
    async fn equal_pods_spread_evenly_over_equal_nodes() {
        let w = Arc::new(RecordingWriter::default());
        let s = scheduler(w.clone());
        for n in ["n1", "n2", "n3"] {
            s.on_node(node(n, "4", "8Gi"));
        }
        for i in 0..6 {
            s.on_pod(pod(&format!("p{i}"), "500m", "10Mi"));
        }
        let cancel = CancellationToken::new();
        let run = tokio::spawn(s.clone().run(cancel.clone()));
        wait_until("6 bindings", || w.binds.lock().expect("lock").len() == 6).await;
        let binds = w.binds.lock().expect("lock").clone();
        for n in ["n1", "n2", "n3"] {
            assert_eq!(binds.iter().filter(|(_, node)| node == n).count(), 2, "{binds:?}");
        }
        cancel.cancel();
        run.await.expect("joined");
    }

    #[tokio::test]
    async fn failed_binding_is_forgotten_and_retried() {
        let w = Arc::new(RecordingWriter::default());
        w.fail_binds.store(1, std::sync::atomic::Ordering::SeqCst);
        let s = scheduler(w.clone());
        s.on_node(node("n1", "1", "8Gi"));
        s.on_pod(pod("p", "1", "1Gi"));
        let cancel = CancellationToken::new();
        let run = tokio::spawn(s.clone().run(cancel.clone()));
        // The retry waits out a 1 s backoff; the node must be free again for it to fit.
        wait_until("the retried binding", || w.binds.lock().expect("lock").len() == 1).await;
        wait_until("the events", || w.events.lock().expect("lock").len() == 2).await;
        let reasons: Vec<&str> = w.events.lock().expect("lock").iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["FailedScheduling", "Scheduled"]);
        assert_eq!(w.events.lock().expect("lock")[1].message, "Successfully assigned default/p to n1");
        cancel.cancel();
        run.await.expect("joined");
    }

    #[test]
    fn condition_is_rewritten_only_when_it_changes() {
        let mut p = pod("p", "", "");
        assert!(condition_changed(&p, "m", None));
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("m".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!condition_changed(&p, "m", None));
        assert!(condition_changed(&p, "other", None));
        assert!(condition_changed(&p, "m", Some("n1")));
    }
}
