//! The CronJob controller, as upstream's `pkg/controller/cronjob` (the v2 controller): for each
//! CronJob it reconciles the active list with the Jobs it controls, trims the finished-Job
//! history, starts the Job for the most recent due schedule time (respecting
//! `startingDeadlineSeconds`, `concurrencyPolicy` and `suspend`), and requeues itself for just
//! after the next schedule time — no polling. `plan.rs` decides, `schedule.rs` parses cron;
//! the writes and the clock sit behind [`Control`] so the loop runs on a paused clock in tests.

pub mod plan;
pub mod schedule;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};

use super::events::{reference, Recorder, WARNING};
use super::informer::{key_of, Informer};
use super::owner::controller_of;
use super::workqueue::Queue;
use super::Context;
use plan::{job_ref, plan, PlannedEvent};

pub const NAME: &str = "cronjob";
const COMPONENT: &str = "cronjob-controller";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// The clock and the writes: the apiserver in production, a recording fake on a paused clock
/// in tests.
pub trait Control: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    fn job_exists<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, kube::Error>>;
    fn create_job<'a>(&'a self, ns: &'a str, job: &'a Job) -> BoxFuture<'a, Result<Job, kube::Error>>;
    /// Deletes with background propagation, as upstream.
    fn delete_job<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), kube::Error>>;
    fn update_status<'a>(&'a self, cj: &'a CronJob) -> BoxFuture<'a, Result<CronJob, kube::Error>>;
}

pub struct ApiControl {
    pub client: kube::Client,
}

impl Control for ApiControl {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn job_exists<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, kube::Error>> {
        Box::pin(async move { Ok(Api::<Job>::namespaced(self.client.clone(), ns).get_opt(name).await?.is_some()) })
    }
    fn create_job<'a>(&'a self, ns: &'a str, job: &'a Job) -> BoxFuture<'a, Result<Job, kube::Error>> {
        Box::pin(
            async move { Api::<Job>::namespaced(self.client.clone(), ns).create(&PostParams::default(), job).await },
        )
    }
    fn delete_job<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), kube::Error>> {
        Box::pin(async move {
            let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
            match Api::<Job>::namespaced(self.client.clone(), ns).delete(name, &dp).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
    fn update_status<'a>(&'a self, cj: &'a CronJob) -> BoxFuture<'a, Result<CronJob, kube::Error>> {
        Box::pin(async move {
            let api =
                Api::<CronJob>::namespaced(self.client.clone(), cj.metadata.namespace.as_deref().unwrap_or_default());
            api.replace_status(cj.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), cj).await
        })
    }
}

pub struct Controller<C> {
    pub cronjobs: Arc<Informer<CronJob>>,
    pub jobs: Arc<Informer<Job>>,
    pub queue: Arc<Queue>,
    pub control: C,
    pub recorder: Recorder,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let c = Arc::new(Controller {
        cronjobs: ctx.informers.get::<CronJob>(),
        jobs: ctx.informers.get::<Job>(),
        queue: Arc::new(Queue::new()),
        control: ApiControl { client: ctx.client.clone() },
        recorder: ctx.recorder(COMPONENT),
    });
    c.watch();
    c.cronjobs.wait_synced().await;
    c.jobs.wait_synced().await;
    let w = c.clone();
    super::run_workers(NAME, c.queue.clone(), WORKERS, &ctx, move |key| {
        let w = w.clone();
        async move { w.sync(&key).await }
    })
    .await;
    Ok(())
}

impl<C: Control> Controller<C> {
    /// Registers the handlers: a CronJob change, and a change to a Job it controls, wake it.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.cronjobs.add_handler(Arc::new(move |old: Option<&Arc<CronJob>>, new: Option<&Arc<CronJob>>| {
            if let (Some(c), Some(o)) = (weak.upgrade(), new.or(old)) {
                c.queue.add(key_of(o.as_ref()));
            }
        }));
        let weak = Arc::downgrade(self);
        self.jobs.add_handler(Arc::new(move |old: Option<&Arc<Job>>, new: Option<&Arc<Job>>| {
            let Some(c) = weak.upgrade() else { return };
            for j in [old, new].into_iter().flatten() {
                if let Some(r) = controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                    let ns = j.metadata.namespace.as_deref().unwrap_or_default();
                    c.queue.add(format!("{ns}/{}", r.name));
                }
            }
        }));
    }

    fn emit(&self, cj: &CronJob, events: Vec<PlannedEvent>) {
        for (type_, reason, message) in events {
            self.recorder.event(reference(cj), type_, reason, message);
        }
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(cj) = self.cronjobs.get_key(key) else { return Ok(None) };
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&ns)
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        // upstream: an active entry missing from the cache is dropped only once the apiserver
        // confirms it is gone (the cache may not have seen a Job we just created).
        let mut gone = HashSet::new();
        for r in cj.status.as_ref().and_then(|s| s.active.as_ref()).into_iter().flatten() {
            if jobs.iter().any(|j| j.metadata.uid == r.uid) {
                continue;
            }
            if !self.control.job_exists(&ns, r.name.as_deref().unwrap_or_default()).await? {
                gone.extend(r.uid.clone());
            }
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let parsed = match schedule::parse(&spec.schedule) {
            Err(e) => Err((WARNING, "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule))),
            Ok(s) => match schedule::time_zone(spec.time_zone.as_deref()) {
                Ok(tz) => Ok((s, tz)),
                Err(e) => Err((WARNING, "UnknownTimeZone", format!("invalid timeZone: {:?}: {e}", spec.time_zone))),
            },
        };
        let now = self.control.now();
        let mut p = plan(&cj, &jobs, &gone, now, parsed);
        self.emit(&cj, std::mem::take(&mut p.events));
        let mut first_err = None;
        for name in &p.delete_history {
            if let Err(e) = self.control.delete_job(&ns, name).await {
                first_err.get_or_insert(e);
            }
        }
        for r in &p.delete_active {
            if let Err(e) = self.control.delete_job(&ns, r.name.as_deref().unwrap_or_default()).await {
                first_err.get_or_insert(e);
            }
        }
        let mut status = p.status;
        if let (Some((job, scheduled)), None) = (p.create.as_ref(), first_err.as_ref()) {
            match self.control.create_job(&ns, job).await {
                Ok(created) => {
                    let name = created.metadata.name.clone().unwrap_or_default();
                    self.recorder.event(
                        reference(cj.as_ref()),
                        super::events::NORMAL,
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    );
                    status.active.get_or_insert_with(Vec::new).push(job_ref(&created));
                    status.last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(*scheduled));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // upstream: someone else created it; the cache will show it and the next
                    // sync records it.
                    first_err.get_or_insert(kube::Error::Api(e));
                }
                Err(e) => {
                    let msg = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        e => e.to_string(),
                    };
                    self.recorder.event(
                        reference(cj.as_ref()),
                        WARNING,
                        "FailedCreate",
                        format!("Error creating job: {msg}"),
                    );
                    first_err.get_or_insert(e);
                }
            }
        }
        if cj.status.as_ref() != Some(&status) && cj.metadata.deletion_timestamp.is_none() {
            let mut obj = (*cj).clone();
            obj.status = Some(status);
            match self.control.update_status(&obj).await {
                Ok(updated) => {
                    // Read our own write until the informer delivers it.
                    self.cronjobs.upsert(updated);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e.into());
        }
        Ok(p.requeue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// A paused-clock apiserver: time is `base` plus the tokio clock's progress; created Jobs
    /// land in the Job informer, status writes in the CronJob informer.
    struct Fake {
        base: Timestamp,
        start: tokio::time::Instant,
        cronjobs: Arc<Informer<CronJob>>,
        jobs: Arc<Informer<Job>>,
        created: Mutex<Vec<(String, Timestamp)>>,
        uid: AtomicU64,
    }

    impl Control for Arc<Fake> {
        fn now(&self) -> Timestamp {
            let d = tokio::time::Instant::now() - self.start;
            self.base.checked_add(jiff::SignedDuration::try_from(d).expect("small")).expect("in range")
        }
        fn job_exists<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<bool, kube::Error>> {
            Box::pin(async move { Ok(self.jobs.get(ns, name).is_some()) })
        }
        fn create_job<'a>(&'a self, _ns: &'a str, job: &'a Job) -> BoxFuture<'a, Result<Job, kube::Error>> {
            Box::pin(async move {
                let mut j = job.clone();
                j.metadata.uid = Some(format!("job-{}", self.uid.fetch_add(1, Ordering::Relaxed)));
                self.created.lock().expect("lock").push((j.metadata.name.clone().unwrap_or_default(), self.now()));
                self.jobs.upsert(j.clone());
                Ok(j)
            })
        }
        fn delete_job<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, Result<(), kube::Error>> {
            Box::pin(async move {
                if let Some(j) = self.jobs.get(ns, name) {
                    self.jobs.remove(&j);
                }
                Ok(())
            })
        }
        fn update_status<'a>(&'a self, cj: &'a CronJob) -> BoxFuture<'a, Result<CronJob, kube::Error>> {
            Box::pin(async move {
                self.cronjobs.upsert(cj.clone());
                Ok(cj.clone())
            })
        }
    }

    /// Runs the controller for `for_secs` of paused time on one CronJob every minute with
    /// `policy`, its Jobs never finishing; returns the fake apiserver.
    async fn drive(policy: &str, for_secs: u64) -> (Arc<Fake>, Timestamp) {
        let base: Timestamp = "2026-03-10T10:00:20Z".parse().expect("ts");
        let fake = Arc::new(Fake {
            base,
            start: tokio::time::Instant::now(),
            cronjobs: Arc::new(Informer::new()),
            jobs: Arc::new(Informer::new()),
            created: Mutex::default(),
            uid: AtomicU64::new(0),
        });
        let (recorder, _events) = Recorder::recording(COMPONENT);
        let c = Arc::new(Controller {
            cronjobs: fake.cronjobs.clone(),
            jobs: fake.jobs.clone(),
            queue: Arc::new(Queue::new()),
            control: fake.clone(),
            recorder,
        });
        c.watch();
        fake.cronjobs.upsert(CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("cj".into()),
                creation_timestamp: Some(Time(base)),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: "* * * * *".into(),
                concurrency_policy: Some(policy.into()),
                job_template: JobTemplateSpec::default(),
                ..Default::default()
            }),
            status: None,
        });
        c.queue.add("default/tick");
        // The worker loop of `run_workers`, against the fake: sync, requeue as it asks.
        let until = tokio::time::Instant::now() + Duration::from_secs(for_secs);
        while let Ok(Some(key)) = tokio::time::timeout_at(until, c.queue.get()).await {
            let next = c.sync(&key).await.expect("sync");
            c.queue.done(&key);
            if let Some(d) = next {
                c.queue.add_after(key, d);
            }
        }
        (fake, base)
    }

    fn jobs_left(fake: &Fake) -> usize {
        fake.jobs.list().len()
    }

    #[tokio::test(start_paused = true)]
    async fn every_minute_fires_exactly_once_per_minute_over_an_hour() {
        let (fake, base) = drive("Allow", 3600).await;
        let created = fake.created.lock().expect("lock").clone();
        assert_eq!(created.len(), 60, "one job per minute: {created:?}");
        for (i, (name, at)) in created.iter().enumerate() {
            let minute = base.as_second() / 60 + 1 + i as i64;
            assert_eq!(name, &format!("tick-{minute}"), "job {i}");
            // Started just after its minute, never before it, never a minute late.
            assert!(at.as_second() >= minute * 60 && at.as_second() < minute * 60 + 2, "{name} at {at}");
        }
        let st = fake.cronjobs.get("default", "tick").and_then(|c| c.status.clone()).expect("status");
        assert_eq!(st.last_schedule_time.map(|t| t.0.as_second()), Some((base.as_second() / 60 + 60) * 60));
        assert_eq!(st.active.map(|a| a.len()), Some(60), "none finished, all active (Allow)");
    }

    #[tokio::test(start_paused = true)]
    async fn forbid_starts_nothing_while_a_run_is_active() {
        let (fake, base) = drive("Forbid", 600).await;
        let created = fake.created.lock().expect("lock").clone();
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0].0, format!("tick-{}", base.as_second() / 60 + 1));
        let st = fake.cronjobs.get("default", "tick").and_then(|c| c.status.clone()).expect("status");
        assert_eq!(st.active.map(|a| a.len()), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_only_the_newest_run() {
        let (fake, base) = drive("Replace", 600).await;
        assert_eq!(fake.created.lock().expect("lock").len(), 10, "one per minute");
        assert_eq!(jobs_left(&fake), 1, "each new run replaced the previous one");
        let st = fake.cronjobs.get("default", "tick").and_then(|c| c.status.clone()).expect("status");
        let active = st.active.expect("active");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].name, Some(format!("tick-{}", base.as_second() / 60 + 10)));
    }
}
