//! The TTL-after-finished controller, as upstream's `pkg/controller/ttlafterfinished`: a
//! finished Job (Complete or Failed) with `ttlSecondsAfterFinished` is deleted that many
//! seconds after it finished — with foreground propagation, so its pods go first — after
//! re-reading it from the apiserver (the TTL may have been changed). It waits with the
//! queue's `add_after`, never by polling.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use super::informer::{key_of, split_key, Informer};
use super::workqueue::Queue;
use super::Context;

pub const NAME: &str = "ttl-after-finished";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// upstream timeLeft: `None` if the Job is not (yet) to be cleaned up, else the time until it
/// expires (zero once it has).
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = finished.last_transition_time.as_ref().map(|t| t.0).unwrap_or(now);
    let expire = at.as_second().saturating_add(i64::from(ttl));
    Some(Duration::from_secs(expire.saturating_sub(now.as_second()).max(0) as u64))
}

struct Tc {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    queue: Arc<Queue>,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let tc =
        Arc::new(Tc { client: ctx.client.clone(), jobs: ctx.informers.get::<Job>(), queue: Arc::new(Queue::new()) });
    let weak = Arc::downgrade(&tc);
    tc.jobs.add_handler(Arc::new(move |_old: Option<&Arc<Job>>, new: Option<&Arc<Job>>| {
        if let (Some(c), Some(j)) = (weak.upgrade(), new) {
            if time_left(j, Timestamp::now()).is_some() {
                c.queue.add(key_of(j.as_ref()));
            }
        }
    }));
    tc.jobs.wait_synced().await;
    let c = tc.clone();
    super::run_workers(NAME, tc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Tc {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(job) = self.jobs.get_key(key) else { return Ok(None) };
        match time_left(&job, Timestamp::now()) {
            None => return Ok(None),
            Some(left) if !left.is_zero() => return Ok(Some(left)),
            Some(_) => {}
        }
        // upstream: the cache may be stale; decide again on a fresh read.
        let (ns, name) = split_key(key);
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let Some(fresh) = api.get_opt(name).await? else { return Ok(None) };
        match time_left(&fresh, Timestamp::now()) {
            None => return Ok(None),
            Some(left) if !left.is_zero() => return Ok(Some(left)),
            Some(_) => {}
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions { uid: fresh.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                tracing::info!(controller = NAME, namespace = ns, name, "deleted a finished job after its TTL");
                Ok(None)
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, finished: Option<(&str, i64)>) -> Job {
        Job {
            spec: Some(JobSpec { ttl_seconds_after_finished: ttl, ..Default::default() }),
            status: Some(JobStatus {
                conditions: finished.map(|(t, at)| {
                    vec![JobCondition {
                        type_: t.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(at).expect("ts"))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn finished_jobs_with_a_ttl_expire_ttl_seconds_after_finishing() {
        let now = Timestamp::from_second(1_000).expect("ts");
        assert_eq!(time_left(&job(None, Some(("Complete", 900))), now), None, "no TTL");
        assert_eq!(time_left(&job(Some(60), None), now), None, "still running");
        assert_eq!(time_left(&job(Some(60), Some(("SuccessCriteriaMet", 990))), now), None, "not finished yet");
        assert_eq!(time_left(&job(Some(60), Some(("Complete", 990))), now), Some(Duration::from_secs(50)));
        assert_eq!(time_left(&job(Some(60), Some(("Failed", 900))), now), Some(Duration::ZERO));
        assert_eq!(time_left(&job(Some(0), Some(("Complete", 1_000))), now), Some(Duration::ZERO));
    }
}
