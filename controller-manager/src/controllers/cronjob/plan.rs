//! The CronJob decisions, pure: which active Jobs are done, which finished Jobs fall out of
//! the history, whether a Job is due now (upstream `mostRecentScheduleTime`, the starting
//! deadline, the concurrency policy), and when to look again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::schedule::Schedule;
use crate::controllers::events::{reference, NORMAL, WARNING};
use crate::controllers::owner::controller_ref;

/// upstream: the annotation with the scheduled time on every Job a CronJob creates.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// upstream nextScheduleDelta: wake a little after the scheduled time, never just before it.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// upstream: more missed start times than this is reported as a warning event.
const TOO_MANY_MISSED: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// upstream mostRecentScheduleTime: the latest schedule time in (earliest, now], where earliest
/// is the last schedule time (or creation), moved up to `now - startingDeadlineSeconds`.
pub fn most_recent_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    schedule: &Schedule,
    tz: &TimeZone,
    include_starting_deadline: bool,
) -> (Timestamp, Option<Timestamp>, Missed, i64) {
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut earliest = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0).unwrap_or(created);
    if let (true, Some(sds)) = (include_starting_deadline, cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds)) {
        if let Ok(deadline) = Timestamp::from_second(now.as_second() - sds) {
            if deadline > earliest {
                earliest = deadline;
            }
        }
    }
    let Some(t1) = schedule.next(earliest, tz) else { return (earliest, None, Missed::None, 0) };
    if now < t1 {
        return (earliest, None, Missed::None, 0);
    }
    // Walk the real schedule (irregular ones too) up to the warning threshold; past it, jump
    // with upstream's approximation and walk the rest.
    let mut most_recent = t1;
    let mut count = 1;
    while let Some(n) = schedule.next(most_recent, tz) {
        if n > now {
            return (earliest, Some(most_recent), if count > 1 { Missed::Few } else { Missed::None }, count);
        }
        most_recent = n;
        count += 1;
        if count > TOO_MANY_MISSED {
            break;
        }
    }
    if count <= TOO_MANY_MISSED {
        return (earliest, Some(most_recent), if count > 1 { Missed::Few } else { Missed::None }, count);
    }
    let interval = schedule.next(t1, tz).map(|t2| t2.as_second() - t1.as_second()).unwrap_or(0).max(1);
    let elapsed = now.as_second() - t1.as_second();
    let total = elapsed / interval + 1;
    let mut guess = Timestamp::from_second(t1.as_second() + (total - 2).max(0) * interval).unwrap_or(most_recent);
    if guess < most_recent {
        guess = most_recent;
    }
    while let Some(n) = schedule.next(guess, tz) {
        if n > now {
            break;
        }
        guess = n;
    }
    (earliest, Some(guess), Missed::Many, total)
}

/// upstream nextScheduleTimeDuration: from `now` to just after the next schedule time.
pub fn next_schedule_duration(schedule: &Schedule, tz: &TimeZone, now: Timestamp) -> Option<Duration> {
    let next = schedule.next(now, tz)?;
    let d = next.duration_since(now);
    Some(Duration::try_from(d).unwrap_or_default() + NEXT_SCHEDULE_DELTA)
}

/// upstream getJobName: `<cronjob>-<scheduled time in minutes since the epoch>`.
pub fn job_name(cj_name: &str, scheduled: Timestamp) -> String {
    format!("{cj_name}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in the CronJob's time zone, `Z` for UTC, as Go's time.RFC3339.
fn rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// upstream getJobFromTemplate2: the job template's labels, annotations and spec, a
/// deterministic name, the scheduled-time annotation, the CronJob as controller.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let tmpl = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let m = tmpl.metadata.unwrap_or_default();
    let mut annotations = m.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), rfc3339(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: m.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: tmpl.spec,
        status: None,
    }
}

/// upstream IsJobFinished: the Complete or Failed condition, and which.
pub fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    for c in conds {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return Some("Complete"),
                "Failed" => return Some("Failed"),
                _ => {}
            }
        }
    }
    None
}

pub type PlannedEvent = (&'static str, &'static str, String);

/// What one sync of a CronJob should do.
#[derive(Debug, Default)]
pub struct Plan {
    /// The status after the active list and history are reconciled (before any new Job).
    pub status: CronJobStatus,
    /// Finished Jobs over the history limits (background deletion).
    pub delete_history: Vec<String>,
    /// `Replace`: the running Jobs to delete before starting the new one.
    pub delete_active: Vec<ObjectReference>,
    /// The Job to create and its scheduled time.
    pub create: Option<(Job, Timestamp)>,
    pub events: Vec<PlannedEvent>,
    /// When to sync again (the next schedule time), `None` to wait for a change.
    pub requeue: Option<Duration>,
}

fn sort_oldest_first(jobs: &mut [&Arc<Job>]) {
    // upstream byJobStartTime: jobs without a start time go last, then by name.
    jobs.sort_by(|a, b| {
        let (sa, sb) = (
            a.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            b.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        );
        match (sa, sb) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => a.metadata.name.cmp(&b.metadata.name),
        }
    });
}

/// The sync of one CronJob. `jobs` are the Jobs it controls; `gone` the uids of active-list
/// entries the apiserver confirmed missing.
pub fn plan(
    cj: &CronJob,
    jobs: &[Arc<Job>],
    gone: &HashSet<String>,
    now: Timestamp,
    parsed: Result<(Schedule, TimeZone), PlannedEvent>,
) -> Plan {
    let mut p = Plan { status: cj.status.clone().unwrap_or_default(), ..Plan::default() };
    let spec = cj.spec.clone().unwrap_or_default();
    let mut active = p.status.active.take().unwrap_or_default();
    let job_uids: HashSet<&str> = jobs.iter().filter_map(|j| j.metadata.uid.as_deref()).collect();

    // upstream syncCronJob: drop finished and missing Jobs from the active list, remember the
    // latest success.
    for j in jobs {
        let uid = j.metadata.uid.as_deref().unwrap_or_default();
        let Some(cond) = finished(j) else { continue };
        if active.iter().any(|r| r.uid.as_deref() == Some(uid)) {
            active.retain(|r| r.uid.as_deref() != Some(uid));
            let name = j.metadata.name.as_deref().unwrap_or_default();
            p.events.push((NORMAL, "SawCompletedJob", format!("Saw completed job: {name}, condition: {cond}")));
        }
        if cond == "Complete" {
            if let Some(ct) = j.status.as_ref().and_then(|s| s.completion_time.clone()) {
                if p.status.last_successful_time.as_ref().is_none_or(|t| t.0 < ct.0) {
                    p.status.last_successful_time = Some(ct);
                }
            }
        }
    }
    active.retain(|r| {
        let uid = r.uid.as_deref().unwrap_or_default();
        let missing = !job_uids.contains(uid) && gone.contains(uid);
        if missing {
            p.events.push((
                NORMAL,
                "MissingJob",
                format!("Active job went missing: {}", r.name.as_deref().unwrap_or_default()),
            ));
        }
        !missing
    });

    // upstream cleanupFinishedJobs
    let (mut ok, mut failed): (Vec<&Arc<Job>>, Vec<&Arc<Job>>) =
        jobs.iter().filter(|j| finished(j).is_some()).partition(|j| finished(j) == Some("Complete"));
    for (list, limit) in [(&mut ok, spec.successful_jobs_history_limit), (&mut failed, spec.failed_jobs_history_limit)]
    {
        let Some(limit) = limit else { continue };
        let limit = limit.max(0) as usize;
        if list.len() > limit {
            sort_oldest_first(list);
            let n = list.len() - limit;
            p.delete_history.extend(list[..n].iter().filter_map(|j| j.metadata.name.clone()));
        }
    }
    for name in &p.delete_history {
        p.events.push((NORMAL, "SuccessfulDelete", format!("Deleted job {name}")));
    }

    p.status.active = (!active.is_empty()).then(|| active.clone());
    if cj.metadata.deletion_timestamp.is_some() {
        return p;
    }
    let (schedule, tz) = match parsed {
        Ok(v) => v,
        Err(ev) => {
            p.events.push(ev);
            return p;
        }
    };
    if spec.suspend == Some(true) {
        return p;
    }
    p.requeue = next_schedule_duration(&schedule, &tz, now);
    let (_, scheduled, missed, _) = most_recent_schedule_time(cj, now, &schedule, &tz, true);
    let Some(scheduled) = scheduled else { return p };
    if missed == Missed::Many {
        p.events.push((
            WARNING,
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if scheduled.as_second() + sds < now.as_second() {
            p.events.push((
                WARNING,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")),
            ));
            return p;
        }
    }
    let name = job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
    // Already started (our status write may not have been seen yet): record it, do not repeat.
    if let Some(j) = jobs.iter().find(|j| j.metadata.name.as_deref() == Some(name.as_str())) {
        if finished(j).is_none() && !active.iter().any(|r| r.uid == j.metadata.uid) {
            active.push(job_ref(j));
        }
        if p.status.last_schedule_time.as_ref().is_none_or(|t| t.0 < scheduled) {
            p.status.last_schedule_time = Some(Time(scheduled));
        }
        p.status.active = (!active.is_empty()).then_some(active);
        return p;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            p.events.push((
                NORMAL,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return p;
        }
        Some("Replace") => {
            p.delete_active = std::mem::take(&mut active);
            for r in &p.delete_active {
                p.events.push((
                    NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted job {}", r.name.as_deref().unwrap_or_default()),
                ));
            }
            p.status.active = None;
        }
        _ => {}
    }
    p.create = Some((job_from_template(cj, scheduled, &tz), scheduled));
    p
}

/// The active-list entry for a Job.
pub fn job_ref(j: &Job) -> ObjectReference {
    reference(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::cronjob::schedule::parse;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn cj(schedule: &str, created: &str, last: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("cj".into()),
                namespace: Some("default".into()),
                uid: Some("cj-uid".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                concurrency_policy: Some("Allow".into()),
                successful_jobs_history_limit: Some(3),
                failed_jobs_history_limit: Some(1),
                ..Default::default()
            }),
            status: Some(CronJobStatus { last_schedule_time: last.map(|l| Time(ts(l))), ..Default::default() }),
        }
    }

    fn parsed(c: &CronJob) -> Result<(Schedule, TimeZone), PlannedEvent> {
        Ok((parse(&c.spec.as_ref().expect("spec").schedule).expect("valid"), TimeZone::UTC))
    }

    fn job(name: &str, uid: &str, done: Option<(&str, &str)>) -> Arc<Job> {
        Arc::new(Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                start_time: done.map(|(_, t)| Time(ts(t))),
                completion_time: done.filter(|(c, _)| *c == "Complete").map(|(_, t)| Time(ts(t))),
                conditions: done
                    .map(|(c, _)| vec![JobCondition { type_: c.into(), status: "True".into(), ..Default::default() }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn most_recent_missed_time_is_the_latest_one() {
        let s = parse("*/5 * * * *").expect("valid");
        let c = cj("*/5 * * * *", "2026-03-10T10:00:30Z", None);
        let (_, t, missed, n) = most_recent_schedule_time(&c, ts("2026-03-10T10:03:00Z"), &s, &TimeZone::UTC, true);
        assert_eq!((t, missed, n), (None, Missed::None, 0), "nothing due yet");
        let (_, t, missed, n) = most_recent_schedule_time(&c, ts("2026-03-10T10:05:10Z"), &s, &TimeZone::UTC, true);
        assert_eq!((t, missed, n), (Some(ts("2026-03-10T10:05:00Z")), Missed::None, 1));
        let (_, t, missed, n) = most_recent_schedule_time(&c, ts("2026-03-10T10:21:00Z"), &s, &TimeZone::UTC, true);
        assert_eq!((t, missed, n), (Some(ts("2026-03-10T10:20:00Z")), Missed::Few, 4));
    }

    #[test]
    fn more_than_a_hundred_missed_times_warn_and_start_the_latest() {
        let c = cj("* * * * *", "2026-03-10T10:00:00Z", None);
        let p = plan(&c, &[], &HashSet::new(), ts("2026-03-10T14:00:30Z"), parsed(&c));
        assert!(p.events.iter().any(|(t, r, _)| *t == WARNING && *r == "TooManyMissedTimes"), "{:?}", p.events);
        let (job, at) = p.create.expect("a job for the latest time");
        assert_eq!(at, ts("2026-03-10T14:00:00Z"));
        assert_eq!(job.metadata.name.as_deref(), Some(format!("cj-{}", at.as_second() / 60).as_str()));
        assert_eq!(
            job.metadata.annotations.expect("annotations").get(SCHEDULED_TIMESTAMP_ANNOTATION).map(String::as_str),
            Some("2026-03-10T14:00:00Z")
        );
    }

    #[test]
    fn time_zone_schedules_and_annotates_in_local_time() {
        let mut c = cj("0 9 * * *", "2026-01-09T12:00:00Z", None);
        c.spec.as_mut().expect("spec").time_zone = Some("Europe/Paris".into());
        let tz = crate::controllers::cronjob::schedule::time_zone(Some("Europe/Paris")).expect("tzdata");
        let parsed = Ok((parse("0 9 * * *").expect("valid"), tz));
        let p = plan(&c, &[], &HashSet::new(), ts("2026-01-10T08:00:05Z"), parsed);
        let (job, at) = p.create.expect("09:00 in Paris is 08:00 UTC in winter");
        assert_eq!(at, ts("2026-01-10T08:00:00Z"));
        let ann = job.metadata.annotations.expect("annotations");
        assert_eq!(ann.get(SCHEDULED_TIMESTAMP_ANNOTATION).map(String::as_str), Some("2026-01-10T09:00:00+01:00"));
    }

    #[test]
    fn starting_deadline_bounds_the_search_and_skips_late_starts() {
        let mut c = cj("0 * * * *", "2026-03-10T08:30:00Z", None);
        c.spec.as_mut().expect("spec").starting_deadline_seconds = Some(60);
        // 10:00 was missed by 2 minutes: past the deadline, nothing starts.
        let p = plan(&c, &[], &HashSet::new(), ts("2026-03-10T10:02:00Z"), parsed(&c));
        assert!(p.create.is_none());
        assert_eq!(p.requeue, Some(Duration::from_secs(58 * 60) + NEXT_SCHEDULE_DELTA));
        // Within the deadline it starts.
        let p = plan(&c, &[], &HashSet::new(), ts("2026-03-10T10:00:40Z"), parsed(&c));
        assert_eq!(p.create.map(|(_, t)| t), Some(ts("2026-03-10T10:00:00Z")));
    }

    #[test]
    fn concurrency_policy_allow_forbid_replace() {
        let now = ts("2026-03-10T10:01:05Z");
        let running = job("cj-old", "old-uid", None);
        let mut c = cj("* * * * *", "2026-03-10T09:00:00Z", Some("2026-03-10T10:00:00Z"));
        c.status.as_mut().expect("status").active = Some(vec![job_ref(&running)]);
        let jobs = [running.clone()];

        let p = plan(&c, &jobs, &HashSet::new(), now, parsed(&c));
        assert!(p.create.is_some() && p.delete_active.is_empty(), "Allow starts alongside");

        c.spec.as_mut().expect("spec").concurrency_policy = Some("Forbid".into());
        let p = plan(&c, &jobs, &HashSet::new(), now, parsed(&c));
        assert!(p.create.is_none(), "Forbid waits");
        assert!(p.events.iter().any(|(_, r, _)| *r == "JobAlreadyActive"));
        assert_eq!(p.requeue, Some(Duration::from_secs(55) + NEXT_SCHEDULE_DELTA));

        c.spec.as_mut().expect("spec").concurrency_policy = Some("Replace".into());
        let p = plan(&c, &jobs, &HashSet::new(), now, parsed(&c));
        assert!(p.create.is_some(), "Replace starts the new one");
        assert_eq!(p.delete_active.iter().filter_map(|r| r.name.as_deref()).collect::<Vec<_>>(), ["cj-old"]);
        assert_eq!(p.status.active, None);
    }

    #[test]
    fn finished_jobs_leave_the_active_list_and_the_history_is_trimmed() {
        let now = ts("2026-03-10T10:00:30Z");
        let mut c = cj("0 0 1 1 *", "2026-03-10T09:00:00Z", None);
        c.spec.as_mut().expect("spec").successful_jobs_history_limit = Some(1);
        let jobs = [
            job("cj-1", "1", Some(("Complete", "2026-03-10T09:01:00Z"))),
            job("cj-2", "2", Some(("Complete", "2026-03-10T09:02:00Z"))),
            job("cj-3", "3", Some(("Failed", "2026-03-10T09:03:00Z"))),
            job("cj-4", "4", Some(("Failed", "2026-03-10T09:04:00Z"))),
        ];
        c.status.as_mut().expect("status").active = Some(vec![job_ref(&jobs[1]), job_ref(&jobs[3])]);
        let p = plan(&c, &jobs, &HashSet::new(), now, parsed(&c));
        assert_eq!(p.status.active, None);
        assert_eq!(p.status.last_successful_time, Some(Time(ts("2026-03-10T09:02:00Z"))));
        assert_eq!(p.delete_history, ["cj-1", "cj-3"]);
        let reasons: Vec<_> = p.events.iter().map(|(_, r, _)| *r).collect();
        assert_eq!(reasons, ["SawCompletedJob", "SawCompletedJob", "SuccessfulDelete", "SuccessfulDelete"]);
    }

    #[test]
    fn suspended_cronjobs_start_nothing_and_missing_jobs_are_dropped() {
        let mut c = cj("* * * * *", "2026-03-10T09:00:00Z", None);
        c.spec.as_mut().expect("spec").suspend = Some(true);
        c.status.as_mut().expect("status").active =
            Some(vec![ObjectReference { name: Some("gone".into()), uid: Some("g".into()), ..Default::default() }]);
        let gone: HashSet<String> = ["g".to_string()].into();
        let p = plan(&c, &[], &gone, ts("2026-03-10T10:00:30Z"), parsed(&c));
        assert!(p.create.is_none() && p.requeue.is_none());
        assert_eq!(p.status.active, None);
        assert_eq!(p.events[0].1, "MissingJob");
    }
}
