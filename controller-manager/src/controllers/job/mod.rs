//! The Job controller, as upstream's `pkg/controller/job`: runs a Job's pods to completion —
//! `parallelism` at a time until `completions` succeed (NonIndexed), or once per index
//! (Indexed) — recreating failed pods with exponential backoff until `backoffLimit`, failing
//! the Job on `activeDeadlineSeconds` or a `podFailurePolicy` FailJob rule, deleting its pods
//! while `suspend`ed.
//!
//! Counting is upstream's finalizer protocol, so no pod is counted twice or lost: every pod
//! carries `batch.kubernetes.io/job-tracking`; a finished pod's uid first goes into
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves to
//! `succeeded`/`failed`. As upstream 1.31+, the Job first gets `FailureTarget` or
//! `SuccessCriteriaMet`, and `Failed`/`Complete` once none of its pods runs any more.
//! `logic.rs` holds the decisions.

pub mod logic;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::events::{reference, Recorder, NORMAL, WARNING};
use super::expectations::Expectations;
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, controller_ref, labels_match};
use super::replicaset::slow_start_batch;
use super::workqueue::Queue;
use super::Context;
use logic::{
    assess, backoff_remaining, condition_true, deadline_remaining, failure, finished, format_indexes,
    has_tracking_finalizer, is_indexed, pod_changes, pod_for_job, success, PodChanges, TRACKING_FINALIZER,
};

pub const NAME: &str = "job";
const COMPONENT: &str = "job-controller";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Manage(String),
}

struct Jc {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<Queue>,
    /// Pods (keys) carrying the tracking finalizer whose Job is gone.
    orphans: Arc<Queue>,
    exp: Expectations,
    recorder: Recorder,
    /// Pods (uids) whose finalizer this controller removed; the cache may still show it.
    in_flight: Mutex<HashSet<String>>,
    /// The last status this controller wrote per Job, read until the informer catches up.
    written: Mutex<HashMap<String, Arc<Job>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let jc = Arc::new(Jc {
        client: ctx.client.clone(),
        pods: ctx.informers.get::<Pod>(),
        jobs: ctx.informers.get::<Job>(),
        queue: Arc::new(Queue::new()),
        orphans: Arc::new(Queue::new()),
        exp: Expectations::new(),
        recorder: ctx.recorder(COMPONENT),
        in_flight: Mutex::default(),
        written: Mutex::default(),
    });
    let weak = Arc::downgrade(&jc);
    jc.jobs.add_handler(Arc::new(move |old: Option<&Arc<Job>>, new: Option<&Arc<Job>>| {
        let Some(c) = weak.upgrade() else { return };
        match (old, new) {
            (Some(o), None) => c.job_deleted(o),
            (_, Some(n)) => c.queue.add(key_of(n.as_ref())),
            (None, None) => {}
        }
    }));
    let weak = Arc::downgrade(&jc);
    jc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        if let Some(c) = weak.upgrade() {
            c.on_pod(old.map(|p| p.as_ref()), new.map(|p| p.as_ref()));
        }
    }));
    jc.pods.wait_synced().await;
    jc.jobs.wait_synced().await;
    let c = jc.clone();
    let orphans = super::run_workers("job-orphan-pod", jc.orphans.clone(), 1, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync_orphan(&key).await }
    });
    let c = jc.clone();
    let jobs = super::run_workers(NAME, jc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    });
    tokio::join!(orphans, jobs);
    Ok(())
}

impl Jc {
    fn job_deleted(&self, j: &Job) {
        let key = key_of(j);
        self.exp.forget(&key);
        lock(&self.written).remove(&key);
        let uid = j.metadata.uid.as_deref().unwrap_or_default();
        let ns = j.metadata.namespace.as_deref().unwrap_or_default();
        for p in self.pods.list_namespace_where(ns, |p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid)) {
            if has_tracking_finalizer(&p) {
                self.orphans.add(key_of(p.as_ref()));
            }
        }
    }

    /// The Job `r` names, if it is the same object.
    fn resolve(&self, namespace: &str, r: &OwnerReference) -> Option<Arc<Job>> {
        if r.kind != "Job" {
            return None;
        }
        self.jobs.get(namespace, &r.name).filter(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()))
    }

    /// upstream addPod/updatePod/deletePod: wake the owning Job (counting expectations), or
    /// every Job that may adopt an orphan; a tracked pod without a Job goes to the orphan queue.
    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let Some(p) = new.or(old) else { return };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if new.is_none_or(|n| !has_tracking_finalizer(n)) {
            lock(&self.in_flight).remove(&uid);
        }
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let pod_key = key_of(p);
        if let Some(o) = old {
            if let Some(j) = controller_of(&o.metadata).and_then(|r| self.resolve(ns, r)) {
                self.queue.add(key_of(j.as_ref()));
            }
        }
        let Some(cur) = new else {
            if let Some(j) = controller_of(&p.metadata).and_then(|r| self.resolve(ns, r)) {
                let k = key_of(j.as_ref());
                self.exp.deletion_observed(&k, &pod_key);
                self.queue.add(k);
            }
            return;
        };
        match controller_of(&cur.metadata) {
            Some(r) => match self.resolve(ns, r) {
                Some(j) => {
                    let k = key_of(j.as_ref());
                    if old.is_none() {
                        self.exp.creation_observed(&k);
                    }
                    if cur.metadata.deletion_timestamp.is_some() {
                        self.exp.deletion_observed(&k, &pod_key);
                    }
                    self.queue.add(k);
                }
                None if has_tracking_finalizer(cur) => self.orphans.add(pod_key),
                None => {}
            },
            None => {
                if has_tracking_finalizer(cur) {
                    self.orphans.add(pod_key.clone());
                }
                for j in self.jobs.list_namespace(ns) {
                    let sel = owner::selector(j.spec.as_ref().and_then(|s| s.selector.as_ref()));
                    if sel.is_ok_and(|s| !s.is_empty() && labels_match(&s, &cur.metadata)) {
                        self.queue.add(key_of(j.as_ref()));
                    }
                }
            }
        }
    }

    /// upstream syncOrphanPod: a pod whose Job is gone (confirmed with the apiserver) loses
    /// its tracking finalizer.
    async fn sync_orphan(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(p) = self.pods.get_key(key) else { return Ok(None) };
        if !has_tracking_finalizer(&p) {
            return Ok(None);
        }
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        if let Some(r) = controller_of(&p.metadata) {
            if r.kind == "Job" {
                let live = Api::<Job>::namespaced(self.client.clone(), &ns).get_opt(&r.name).await?;
                if live.is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str())) {
                    return Ok(None);
                }
            }
        }
        self.remove_finalizer(&p).await?;
        Ok(None)
    }

    /// The newest Job we know: the informer's, or our own last write if the informer is
    /// behind it (etcd revisions grow).
    fn current(&self, key: &str) -> Option<Arc<Job>> {
        let from_informer = self.jobs.get_key(key)?;
        let mut written = lock(&self.written);
        let rv = |j: &Job| j.metadata.resource_version.as_deref().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match written.get(key) {
            Some(w) if w.metadata.uid == from_informer.metadata.uid && rv(w) > rv(&from_informer) => Some(w.clone()),
            _ => {
                written.remove(key);
                Some(from_informer)
            }
        }
    }

    async fn remove_finalizer(&self, p: &Pod) -> Result<(), kube::Error> {
        let Some(i) = p.metadata.finalizers.iter().flatten().position(|f| f == TRACKING_FINALIZER) else {
            return Ok(());
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let patch = json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": TRACKING_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]);
        let patch = serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or_default());
        match api
            .patch(p.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
        lock(&self.in_flight).insert(uid);
        Ok(())
    }

    /// Removes the finalizer from `pods`; returns the uids done.
    async fn remove_finalizers(&self, pods: &[Arc<Pod>]) -> (HashSet<String>, Option<kube::Error>) {
        let results = join_all(pods.iter().map(|p| async move { (p, self.remove_finalizer(p).await) })).await;
        let mut done = HashSet::new();
        let mut err = None;
        for (p, r) in results {
            match r {
                Ok(()) => {
                    done.extend(p.metadata.uid.clone());
                }
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        (done, err)
    }

    async fn write_status(&self, key: &str, job: &Arc<Job>, status: JobStatus) -> Result<Arc<Job>, Error> {
        if job.status.as_ref() == Some(&status) {
            return Ok(job.clone());
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let mut obj = (**job).clone();
        obj.status = Some(status);
        let out = Arc::new(
            api.replace_status(job.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &obj).await?,
        );
        lock(&self.written).insert(key.to_string(), out.clone());
        Ok(out)
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(job) = self.current(key) else {
            self.exp.forget(key);
            return Ok(None);
        };
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let sel = match owner::selector(job.spec.as_ref().and_then(|s| s.selector.as_ref())) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(controller = NAME, namespace = %ns, name = ?job.metadata.name, error = %e, "invalid selector");
                return Ok(None);
            }
        };
        let all = self.pods.list_namespace_where(&ns, |p| owner::claim_may_touch(&uid, &sel, p));
        let claim = owner::claim(&uid, job.metadata.deletion_timestamp.is_some(), &sel, &all);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let cref = controller_ref(job.as_ref());
        let mut pods = claim.claimed;
        if !claim.adopt.is_empty() {
            let live = Api::<Job>::namespaced(self.client.clone(), &ns)
                .get_opt(job.metadata.name.as_deref().unwrap_or_default())
                .await?;
            let ok =
                live.is_some_and(|l| l.metadata.uid == job.metadata.uid && l.metadata.deletion_timestamp.is_none());
            for p in &claim.adopt {
                if ok {
                    let refs = p.metadata.owner_references.clone().unwrap_or_default();
                    let puid = p.metadata.uid.as_deref().unwrap_or_default();
                    owner::adopt(&pods_api, p.metadata.name.as_deref().unwrap_or_default(), puid, &cref, &refs).await?;
                } else {
                    pods.retain(|c| !Arc::ptr_eq(c, p));
                }
            }
        }
        for p in &claim.release {
            let refs = p.metadata.owner_references.clone().unwrap_or_default();
            let puid = p.metadata.uid.as_deref().unwrap_or_default();
            owner::release(&pods_api, p.metadata.name.as_deref().unwrap_or_default(), puid, &uid, &refs).await?;
        }

        let mut st = job.status.clone().unwrap_or_default();
        if finished(&st) || job.metadata.deletion_timestamp.is_some() {
            // upstream: a finished or deleted Job keeps no finalizers on its pods.
            let tracked: Vec<Arc<Pod>> = pods.into_iter().filter(|p| has_tracking_finalizer(p)).collect();
            return match self.remove_finalizers(&tracked).await.1 {
                Some(e) => Err(e.into()),
                None => Ok(None),
            };
        }

        let now = Timestamp::now();
        let spec = job.spec.clone().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        let job_ref = reference(job.as_ref());
        let mut requeue: Option<Duration> = None;
        let mut soonest = |d: Duration| requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));

        // Suspend and resume (upstream: startTime restarts on resume).
        let was_suspended = condition_true(&st, "Suspended");
        if suspended && !was_suspended {
            set_condition(&mut st, "Suspended", "True", "JobSuspended", "Job suspended", now);
            self.recorder.event(job_ref.clone(), NORMAL, "Suspended", "Job suspended".into());
        } else if !suspended && was_suspended {
            set_condition(&mut st, "Suspended", "False", "JobResumed", "Job resumed", now);
            st.start_time = Some(Time(now));
            self.recorder.event(job_ref.clone(), NORMAL, "Resumed", "Job resumed".into());
        }
        if !suspended && st.start_time.is_none() {
            st.start_time = Some(Time(now));
        }

        let targeted = condition_true(&st, "FailureTarget") || condition_true(&st, "SuccessCriteriaMet");
        let in_flight = lock(&self.in_flight).clone();
        let a = assess(&job, &pods, &in_flight, suspended || targeted);
        // The criteria are judged against the status with its start time.
        let judged = Job { status: Some(st.clone()), ..(*job).clone() };
        if !targeted {
            if let Some((reason, msg)) = failure(&judged, &a, now) {
                set_condition(&mut st, "FailureTarget", "True", reason, &msg, now);
            } else if let Some((reason, msg)) = success(&judged, &a) {
                set_condition(&mut st, "SuccessCriteriaMet", "True", reason, &msg, now);
            }
        }
        let stopping = condition_true(&st, "FailureTarget") || condition_true(&st, "SuccessCriteriaMet");

        // Manage pods.
        let mut changes = if stopping {
            PodChanges { create: Vec::new(), delete: a.active.clone() }
        } else if self.exp.satisfied(key) {
            pod_changes(&job, &a, suspended)
        } else {
            PodChanges::default()
        };
        if !changes.create.is_empty() {
            let wait = backoff_remaining(&a.history, now);
            if !wait.is_zero() {
                changes.create.clear();
                soonest(wait);
            }
        }
        let deleted = self.delete_pods(key, &job, &changes.delete).await;
        let (created, create_err) = self.create_pods(key, &job, &changes.create).await;
        let deleted_ok = deleted.as_ref().map_or(0, |n| *n);

        // Status: counts, newly finished pods into uncounted, completed indexes.
        st.active = Some(a.active.len() as i32 + created as i32 - deleted_ok as i32);
        st.ready = Some(a.ready);
        st.terminating = Some(a.terminating + deleted_ok as i32);
        let mut unc = st.uncounted_terminated_pods.take().unwrap_or_default();
        unc.succeeded.get_or_insert_with(Vec::new).extend(a.new_succeeded.iter().cloned());
        unc.failed.get_or_insert_with(Vec::new).extend(a.new_failed.iter().cloned());
        if is_indexed(&job) {
            st.completed_indexes = Some(format_indexes(&a.completed));
        }
        st.uncounted_terminated_pods = Some(normalize(unc.clone()));
        let job2 = self.write_status(key, &job, st.clone()).await?;

        // Finalizers off the pods now recorded (and the ones that never count).
        let recorded: HashSet<&String> = unc.succeeded.iter().flatten().chain(unc.failed.iter().flatten()).collect();
        let strip: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| has_tracking_finalizer(p))
            .filter(|p| {
                let u = p.metadata.uid.clone().unwrap_or_default();
                recorded.contains(&u) || a.not_counted.contains(&u)
            })
            .cloned()
            .collect();
        let (stripped, strip_err) = self.remove_finalizers(&strip).await;

        // Move what no longer has a finalizer from uncounted to the counters.
        let by_uid: HashMap<&str, &Arc<Pod>> =
            pods.iter().filter_map(|p| Some((p.metadata.uid.as_deref()?, p))).collect();
        let counted =
            |u: &String| stripped.contains(u) || by_uid.get(u.as_str()).is_none_or(|p| !has_tracking_finalizer(p));
        let mut st = job2.status.clone().unwrap_or_default();
        let mut unc = st.uncounted_terminated_pods.take().unwrap_or_default();
        let (moved_s, left_s): (Vec<String>, Vec<String>) =
            unc.succeeded.take().unwrap_or_default().into_iter().partition(counted);
        let (moved_f, left_f): (Vec<String>, Vec<String>) =
            unc.failed.take().unwrap_or_default().into_iter().partition(counted);
        st.succeeded = Some(st.succeeded.unwrap_or(0) + moved_s.len() as i32);
        st.failed = Some(st.failed.unwrap_or(0) + moved_f.len() as i32);
        let uncounted_left = !left_s.is_empty() || !left_f.is_empty();
        st.uncounted_terminated_pods =
            Some(normalize(UncountedTerminatedPods { succeeded: Some(left_s), failed: Some(left_f) }));

        // upstream 1.31+: Failed/Complete once no pod of the Job runs or terminates.
        let active_now = st.active.unwrap_or(0);
        let terminating_now = st.terminating.unwrap_or(0);
        if stopping && active_now == 0 && terminating_now == 0 && !uncounted_left {
            if let Some(c) = condition(&st, "FailureTarget") {
                let (reason, msg) = (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
                set_condition(&mut st, "Failed", "True", &reason, &msg, now);
                self.recorder.event(job_ref.clone(), WARNING, event_reason(&reason), msg);
            } else if let Some(c) = condition(&st, "SuccessCriteriaMet") {
                let (reason, msg) = (c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
                set_condition(&mut st, "Complete", "True", &reason, &msg, now);
                st.completion_time = Some(Time(now));
                self.recorder.event(job_ref.clone(), NORMAL, "Completed", "Job completed".into());
            }
        }
        self.write_status(key, &job2, st.clone()).await?;

        if let Some(e) = strip_err {
            return Err(e.into());
        }
        deleted?;
        if let Some(e) = create_err {
            return Err(e);
        }
        if !suspended && !finished(&st) {
            if let Some(left) = deadline_remaining(&judged, now) {
                soonest(left + Duration::from_millis(100));
            }
        }
        Ok(requeue)
    }

    async fn delete_pods(&self, key: &str, job: &Job, pods: &[Arc<Pod>]) -> Result<usize, Error> {
        if pods.is_empty() {
            return Ok(0);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let job_ref = reference(job);
        self.exp.expect_deletions(key, pods.iter().map(|p| key_of(p.as_ref())));
        let results = join_all(pods.iter().map(|p| {
            let (api, job_ref) = (api.clone(), job_ref.clone());
            async move {
                let name = p.metadata.name.clone().unwrap_or_default();
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {
                        self.recorder.event(job_ref, NORMAL, "SuccessfulDelete", format!("Deleted pod: {name}"));
                        Ok(true)
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.exp.deletion_observed(key, &key_of(p.as_ref()));
                        Ok(false)
                    }
                    Err(e) => {
                        self.exp.deletion_observed(key, &key_of(p.as_ref()));
                        self.recorder.event(
                            job_ref,
                            WARNING,
                            "FailedDelete",
                            format!("Error deleting: {}", message(&e)),
                        );
                        Err(e)
                    }
                }
            }
        }))
        .await;
        let mut n = 0;
        for r in results {
            if r.map_err(|e| Error::Manage(message(&e)))? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn create_pods(&self, key: &str, job: &Arc<Job>, indexes: &[Option<i32>]) -> (usize, Option<Error>) {
        if indexes.is_empty() {
            return (0, None);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or_default());
        let cref = controller_ref(job.as_ref());
        let job_ref = reference(job.as_ref());
        self.exp.expect_creations(key, indexes.len());
        let next = AtomicUsize::new(0);
        let (created, err) = slow_start_batch(indexes.len(), 1, || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let pod = pod_for_job(job, cref.clone(), indexes.get(i).copied().flatten());
            let (api, job_ref) = (api.clone(), job_ref.clone());
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        let name = p.metadata.name.unwrap_or_default();
                        self.recorder.event(job_ref, NORMAL, "SuccessfulCreate", format!("Created pod: {name}"));
                        Ok(())
                    }
                    Err(e) => {
                        self.recorder.event(
                            job_ref,
                            WARNING,
                            "FailedCreate",
                            format!("Error creating: {}", message(&e)),
                        );
                        Err(e)
                    }
                }
            }
        })
        .await;
        for _ in created..indexes.len() {
            self.exp.creation_observed(key);
        }
        (created, err.map(|e| Error::Manage(message(&e))))
    }
}

/// The recorder takes static reasons: the ones a failure condition can carry (upstream emits the
/// Failed condition's reason as the event reason).
fn event_reason(reason: &str) -> &'static str {
    match reason {
        "BackoffLimitExceeded" => "BackoffLimitExceeded",
        "DeadlineExceeded" => "DeadlineExceeded",
        "PodFailurePolicy" => "PodFailurePolicy",
        _ => "Failed",
    }
}

/// Empty lists are omitted, as upstream serializes them.
fn normalize(u: UncountedTerminatedPods) -> UncountedTerminatedPods {
    UncountedTerminatedPods {
        succeeded: u.succeeded.filter(|v| !v.is_empty()),
        failed: u.failed.filter(|v| !v.is_empty()),
    }
}

fn condition<'a>(st: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    st.conditions.iter().flatten().find(|c| c.type_ == type_ && c.status == "True")
}

/// upstream: a condition changes its transition time only when its status changes.
fn set_condition(st: &mut JobStatus, type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(Time(now));
        }
        None => conds.push(JobCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        }),
    }
}
