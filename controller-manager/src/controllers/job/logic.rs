//! The Job decisions, pure: which finished pods are new, how many succeeded and failed, the
//! pod failure policy, backoff, whether the Job met its success or failure criteria, how many
//! pods (or which indexes) to create, which to delete, and the pods it creates.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::owner::is_ready;

/// upstream: the finalizer that keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// upstream: the completion index of a pod of an Indexed Job (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// upstream DefaultJobPodFailureBackOff
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// upstream: the pod recreation backoff is capped at six minutes.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(6 * 60);

pub fn has_tracking_finalizer(p: &Pod) -> bool {
    p.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// The pod's completion index, if it has a valid one.
pub fn completion_index(p: &Pod) -> Option<i32> {
    let m = &p.metadata;
    let v = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))?;
    v.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// upstream's completedIndexes text: `1,3-5,7` (two neighbours are listed, three or more
/// become a range).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        });
    }
    out.join(",")
}

/// The inverse of [`format_indexes`]; indexes at or over `completions` are dropped.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            set.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    set
}

/// upstream getFinishedTime: the last container finish, else the Ready transition, else the
/// deletion.
pub fn finish_time(p: &Pod) -> Option<Timestamp> {
    let st = p.status.as_ref();
    let finished = st
        .into_iter()
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    finished
        .or_else(|| {
            st?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?.last_transition_time.as_ref().map(|t| t.0)
        })
        .or_else(|| p.metadata.deletion_timestamp.as_ref().map(|t| t.0))
}

/// upstream getRemainingTime over the pods' finish history: `10 s × 2^(failures since the last
/// success − 1)`, capped at six minutes, counted from the last failure.
pub fn backoff_remaining(finished: &[(Timestamp, bool)], now: Timestamp) -> Duration {
    let mut sorted = finished.to_vec();
    sorted.sort();
    let last_success = sorted.iter().rposition(|(_, ok)| *ok);
    let after = &sorted[last_success.map_or(0, |i| i + 1)..];
    let Some((last_failure, _)) = after.last() else { return Duration::ZERO };
    let n = after.len() as u32;
    let backoff = POD_FAILURE_BACKOFF.saturating_mul(2u32.saturating_pow(n - 1)).min(MAX_POD_FAILURE_BACKOFF);
    let elapsed = Duration::try_from(now.duration_since(*last_failure)).unwrap_or_default();
    backoff.saturating_sub(elapsed)
}

/// What the pod failure policy says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAction {
    FailJob(String),
    Ignore,
    Count,
}

/// upstream matchPodFailurePolicy: the first rule matching the pod's non-zero exit codes or
/// its conditions; `None` when no rule matches (the default: count it).
pub fn match_pod_failure_policy(rules: &[PodFailurePolicyRule], p: &Pod) -> Option<PolicyAction> {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let name = p.metadata.name.as_deref().unwrap_or_default();
    let st = p.status.clone().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let mut matched = None;
        if let Some(req) = &rule.on_exit_codes {
            let statuses = st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten());
            for c in statuses {
                let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code) else {
                    continue;
                };
                if code == 0 || req.container_name.as_ref().is_some_and(|n| *n != c.name) {
                    continue;
                }
                let listed = req.values.contains(&code);
                if (req.operator == "In") == listed {
                    matched = Some(format!(
                        "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                        c.name, rule.action
                    ));
                    break;
                }
            }
        }
        for pat in rule.on_pod_conditions.iter().flatten() {
            if matched.is_some() {
                break;
            }
            let want = pat.status.as_str();
            if st.conditions.iter().flatten().any(|c| c.type_ == pat.type_ && c.status == want) {
                matched = Some(format!(
                    "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                    pat.type_, rule.action
                ));
            }
        }
        if let Some(msg) = matched {
            return Some(match rule.action.as_str() {
                "FailJob" => PolicyAction::FailJob(msg),
                "Ignore" => PolicyAction::Ignore,
                // FailIndex needs backoffLimitPerIndex, which rkube does not implement: count.
                _ => PolicyAction::Count,
            });
        }
    }
    None
}

/// How a Job's pods stand.
#[derive(Debug, Default)]
pub struct Assessment {
    /// Active pods (not finished, not being deleted).
    pub active: Vec<Arc<Pod>>,
    pub ready: i32,
    /// Being deleted and not finished.
    pub terminating: i32,
    /// Finished pods to count now (uids), not yet in uncountedTerminatedPods.
    pub new_succeeded: Vec<String>,
    pub new_failed: Vec<String>,
    /// Finished pods that will never count (ignored by the policy, duplicate indexes).
    pub not_counted: Vec<String>,
    /// A FailJob rule matched: the condition message.
    pub fail_job: Option<String>,
    /// Succeeded and failed including this sync's and the uncounted.
    pub succeeded: i32,
    pub failed: i32,
    /// Indexed: completed indexes including this sync's.
    pub completed: BTreeSet<i32>,
    /// Restarts of the active pods' containers (restartPolicy OnFailure).
    pub restarts: i32,
    /// (finish time, succeeded) of every finished pod, for backoff.
    pub history: Vec<(Timestamp, bool)>,
}

pub fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref().and_then(|s| s.completions)
}

pub fn parallelism(job: &Job) -> i32 {
    job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1).max(0)
}

/// Classifies the Job's pods. `in_flight` are pods whose finalizer removal this controller
/// already made (counted; the cache may not show it yet). `stopping`: the Job is suspended or
/// finishing, so pods being deleted were deleted by this controller and are not failures.
pub fn assess(job: &Job, pods: &[Arc<Pod>], in_flight: &HashSet<String>, stopping: bool) -> Assessment {
    let st = job.status.clone().unwrap_or_default();
    let uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
    let unc_s: HashSet<&str> = uncounted.succeeded.iter().flatten().map(String::as_str).collect();
    let unc_f: HashSet<&str> = uncounted.failed.iter().flatten().map(String::as_str).collect();
    let indexed = is_indexed(job);
    let completions = completions(job).unwrap_or(0);
    let policy = job.spec.as_ref().and_then(|s| s.pod_failure_policy.as_ref()).map(|p| p.rules.clone());
    let mut a = Assessment {
        completed: if indexed {
            parse_indexes(st.completed_indexes.as_deref().unwrap_or_default(), completions)
        } else {
            BTreeSet::new()
        },
        ..Default::default()
    };
    for p in pods {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ph = phase(p);
        let deleting = p.metadata.deletion_timestamp.is_some();
        let succeeded = ph == Some("Succeeded");
        let terminal = succeeded || ph == Some("Failed");
        if deleting && !terminal {
            a.terminating += 1;
        }
        // upstream isPodFailed: with a failure policy only the Failed phase counts (the
        // policy needs the exit codes); without, a pod deleted before finishing failed —
        // unless this controller deleted it to suspend or finish the Job.
        let failed = ph == Some("Failed") || (policy.is_none() && deleting && !succeeded && !stopping);
        let dropped = deleting && !terminal && stopping;
        if !succeeded && !failed && !dropped {
            if !deleting {
                a.ready += i32::from(is_ready(p));
                a.restarts += p
                    .status
                    .iter()
                    .flat_map(|s| {
                        s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten())
                    })
                    .map(|c| c.restart_count)
                    .sum::<i32>();
                a.active.push(p.clone());
            }
            continue;
        }
        if !has_tracking_finalizer(p)
            || in_flight.contains(&uid)
            || unc_s.contains(uid.as_str())
            || unc_f.contains(uid.as_str())
        {
            if !dropped {
                a.history.extend(finish_time(p).map(|t| (t, succeeded)));
            }
            continue;
        }
        if dropped {
            a.not_counted.push(uid);
            continue;
        }
        a.history.extend(finish_time(p).map(|t| (t, succeeded)));
        if succeeded {
            match (indexed, completion_index(p)) {
                (false, _) => a.new_succeeded.push(uid),
                (true, Some(i)) if i < completions && !a.completed.contains(&i) => {
                    a.completed.insert(i);
                    a.new_succeeded.push(uid);
                }
                (true, _) => a.not_counted.push(uid),
            }
            continue;
        }
        match policy.as_deref().filter(|_| ph == Some("Failed")).and_then(|r| match_pod_failure_policy(r, p)) {
            Some(PolicyAction::Ignore) => a.not_counted.push(uid),
            Some(PolicyAction::FailJob(msg)) => {
                a.fail_job.get_or_insert(msg);
                a.new_failed.push(uid);
            }
            Some(PolicyAction::Count) | None => a.new_failed.push(uid),
        }
    }
    a.succeeded = st.succeeded.unwrap_or(0) + unc_s.len() as i32 + a.new_succeeded.len() as i32;
    a.failed = st.failed.unwrap_or(0) + unc_f.len() as i32 + a.new_failed.len() as i32;
    a
}

/// Why a Job fails or completes: (condition reason, message).
pub type Criteria = (&'static str, String);

/// upstream: the failure criteria, in upstream's order (pod failure policy, backoff limit,
/// active deadline).
pub fn failure(job: &Job, a: &Assessment, now: Timestamp) -> Option<Criteria> {
    if let Some(msg) = &a.fail_job {
        return Some(("PodFailurePolicy", msg.clone()));
    }
    let spec = job.spec.clone().unwrap_or_default();
    let limit = spec.backoff_limit.unwrap_or(6);
    let on_failure = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    // upstream pastBackoffLimitOnFailure: container restarts count as retries.
    let restarts_exceed = on_failure && if limit == 0 { a.restarts > 0 } else { a.restarts >= limit };
    if a.failed > limit || restarts_exceed {
        return Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit".into()));
    }
    if let Some(left) = deadline_remaining(job, now) {
        if left.is_zero() {
            return Some(("DeadlineExceeded", "Job was active longer than specified deadline".into()));
        }
    }
    None
}

/// Time left before `activeDeadlineSeconds`, counted from `startTime`.
pub fn deadline_remaining(job: &Job, now: Timestamp) -> Option<Duration> {
    let ads = job.spec.as_ref()?.active_deadline_seconds?;
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    let end = start.as_second().saturating_add(ads);
    Some(Duration::from_secs(end.saturating_sub(now.as_second()).max(0) as u64))
}

/// upstream: success when `completions` pods succeeded (NonIndexed), every index completed
/// (Indexed), or, without `completions`, once one succeeded and none is still running.
pub fn success(job: &Job, a: &Assessment) -> Option<Criteria> {
    let done = match completions(job) {
        Some(c) if is_indexed(job) => a.completed.len() as i32 >= c,
        Some(c) => a.succeeded >= c,
        None => a.succeeded > 0 && a.active.is_empty(),
    };
    done.then(|| ("CompletionsReached", "Reached expected number of succeeded pods".to_string()))
}

/// How many pods should run (upstream manageJob's wantActive).
pub fn want_active(job: &Job, a: &Assessment) -> i32 {
    let par = parallelism(job);
    match completions(job) {
        None if a.succeeded > 0 => (a.active.len() as i32).min(par),
        None => par,
        Some(c) => {
            let done = if is_indexed(job) { a.completed.len() as i32 } else { a.succeeded };
            (c - done).clamp(0, par)
        }
    }
}

/// What to change about the running pods.
#[derive(Debug, Default, PartialEq)]
pub struct PodChanges {
    /// NonIndexed: `n` × `None`; Indexed: the indexes to start.
    pub create: Vec<Option<i32>>,
    pub delete: Vec<Arc<Pod>>,
}

/// Deletion order: unscheduled, then not running, then not ready, then the newest.
fn rank_for_deletion(pods: &mut [Arc<Pod>]) {
    pods.sort_by_key(|p| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let running = phase(p) == Some("Running");
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        (scheduled, running, is_ready(p), std::cmp::Reverse(created))
    });
}

/// upstream manageJob: delete surplus pods (for Indexed, first those with a duplicate or
/// out-of-range index), create missing ones (for Indexed, the lowest pending indexes).
pub fn pod_changes(job: &Job, a: &Assessment, suspended: bool) -> PodChanges {
    let mut ch = PodChanges::default();
    let want = if suspended { 0 } else { want_active(job, a) };
    let mut keep: Vec<Arc<Pod>> = Vec::new();
    let mut running_indexes = BTreeSet::new();
    if is_indexed(job) {
        let completions = completions(job).unwrap_or(0);
        for p in &a.active {
            match completion_index(p) {
                Some(i) if i < completions && !a.completed.contains(&i) && running_indexes.insert(i) => {
                    keep.push(p.clone())
                }
                _ => ch.delete.push(p.clone()),
            }
        }
    } else {
        keep = a.active.clone();
    }
    let active = keep.len() as i32;
    if active > want {
        rank_for_deletion(&mut keep);
        ch.delete.extend(keep.into_iter().take((active - want) as usize));
        return ch;
    }
    let missing = (want - active) as usize;
    if is_indexed(job) {
        let completions = completions(job).unwrap_or(0);
        ch.create = (0..completions)
            .filter(|i| !a.completed.contains(i) && !running_indexes.contains(i))
            .take(missing)
            .map(Some)
            .collect();
    } else {
        ch.create = vec![None; missing];
    }
    ch
}

/// upstream: the pod for a Job — the template's labels, annotations and finalizers plus the
/// tracking finalizer, the Job as controller; an Indexed pod also gets its index (annotation,
/// label, `JOB_COMPLETION_INDEX` from the downward API, hostname `<job>-<index>`).
pub fn pod_for_job(job: &Job, cref: OwnerReference, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let t = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let m = t.metadata.unwrap_or_default();
    let mut finalizers = m.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let mut annotations = m.annotations;
    let mut labels = m.labels;
    let mut spec = t.spec;
    let mut generate_name = format!("{name}-");
    if let Some(i) = index {
        generate_name = format!("{name}-{i}-");
        annotations.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), i.to_string());
        labels.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(s) = spec.as_mut() {
            if s.hostname.is_none() {
                s.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
                value: None,
            };
            for c in s.containers.iter_mut().chain(s.init_containers.iter_mut().flatten()) {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels,
            annotations,
            finalizers: Some(finalizers),
            owner_references: Some(vec![cref]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// upstream IsJobFinished: the Job's Complete or Failed condition is True.
pub fn finished(st: &JobStatus) -> bool {
    st.conditions.iter().flatten().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

pub fn condition_true(st: &JobStatus, type_: &str) -> bool {
    st.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        JobSpec, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
        UncountedTerminatedPods,
    };
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodSpec, PodStatus,
        PodTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("ts")
    }

    fn job(completions: Option<i32>, parallelism: i32, indexed: bool) -> Job {
        Job {
            metadata: ObjectMeta { name: Some("pi".into()), namespace: Some("default".into()), ..Default::default() },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(2),
                completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container { name: "c".into(), ..Default::default() }],
                        restart_policy: Some("Never".into()),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod: `phase`, exit code of container `c` when finished, tracking finalizer, index.
    fn pod(uid: &str, phase: &str, exit: Option<i32>, index: Option<i32>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("pod-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                finalizers: Some(vec![TRACKING_FINALIZER.into()]),
                annotations: index.map(|i| [(COMPLETION_INDEX.to_string(), i.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: exit.map(|code| {
                    vec![ContainerStatus {
                        name: "c".into(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: code,
                                finished_at: Some(Time(ts(0))),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn completed_indexes_text_matches_upstream() {
        let set: BTreeSet<i32> = [1, 3, 4, 5, 7, 9, 10].into();
        assert_eq!(format_indexes(&set), "1,3-5,7,9,10");
        assert_eq!(parse_indexes("1,3-5,7,9,10", 100), set);
        assert_eq!(parse_indexes("0-9", 4), [0, 1, 2, 3].into(), "out of range indexes are dropped");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_and_is_capped_at_six_minutes() {
        let fails = |n: i64| (0..n).map(|i| (ts(i), false)).collect::<Vec<_>>();
        assert_eq!(backoff_remaining(&[], ts(0)), Duration::ZERO);
        assert_eq!(backoff_remaining(&fails(1), ts(0)), Duration::from_secs(10));
        assert_eq!(backoff_remaining(&fails(2), ts(1)), Duration::from_secs(20));
        assert_eq!(backoff_remaining(&fails(3), ts(2 + 15)), Duration::from_secs(40 - 15));
        assert_eq!(backoff_remaining(&fails(10), ts(9)), Duration::from_secs(360));
        assert_eq!(backoff_remaining(&fails(1), ts(30)), Duration::ZERO, "elapsed");
        // A success resets the count: one failure after it is 10 s again.
        let mixed = [(ts(0), false), (ts(1), false), (ts(2), true), (ts(3), false)];
        assert_eq!(backoff_remaining(&mixed, ts(3)), Duration::from_secs(10));
        assert_eq!(backoff_remaining(&[(ts(0), false), (ts(1), true)], ts(1)), Duration::ZERO);
    }

    #[test]
    fn finished_pods_are_counted_once() {
        let mut j = job(Some(5), 2, false);
        let pods = [
            pod("a", "Succeeded", Some(0), None),
            pod("b", "Failed", Some(1), None),
            pod("c", "Running", None, None),
            pod("d", "Succeeded", Some(0), None),
            pod("e", "Succeeded", Some(0), None),
        ];
        // "d" is already in uncounted, "e" has had its finalizer removed by us.
        j.status = Some(JobStatus {
            succeeded: Some(1),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["d".into()]),
                failed: None,
            }),
            ..Default::default()
        });
        let a = assess(&j, &pods, &["e".to_string()].into(), false);
        assert_eq!(a.new_succeeded, ["a"]);
        assert_eq!(a.new_failed, ["b"]);
        assert_eq!((a.succeeded, a.failed, a.active.len()), (3, 1, 1), "1 counted + d + a; b");
        // Without the finalizer a finished pod was counted before.
        let mut plain = (*pods[0]).clone();
        plain.metadata.finalizers = None;
        let a = assess(&j, &[Arc::new(plain)], &HashSet::new(), false);
        assert!(a.new_succeeded.is_empty());
    }

    #[test]
    fn nonindexed_parallelism_and_completions_bound_the_pods() {
        let j = job(Some(5), 2, false);
        let a = assess(&j, &[], &HashSet::new(), false);
        assert_eq!(pod_changes(&j, &a, false).create, [None, None]);
        let pods = [pod("a", "Running", None, None)];
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(pod_changes(&j, &a, false).create, [None]);
        // 4 succeeded: only one more is needed.
        let pods: Vec<_> = (0..4).map(|i| pod(&i.to_string(), "Succeeded", Some(0), None)).collect();
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(pod_changes(&j, &a, false).create, [None]);
        assert!(success(&j, &a).is_none());
        let mut pods = pods;
        pods.push(pod("4", "Succeeded", Some(0), None));
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(success(&j, &a).map(|c| c.0), Some("CompletionsReached"));
        assert_eq!(pod_changes(&j, &a, false), PodChanges::default());
        // Suspended: every running pod goes.
        let pods = [pod("a", "Running", None, None), pod("b", "Pending", None, None)];
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(pod_changes(&j, &a, true).delete.len(), 2);
    }

    #[test]
    fn work_queue_jobs_complete_when_one_succeeded_and_none_run() {
        let j = job(None, 3, false);
        let a = assess(
            &j,
            &[pod("a", "Succeeded", Some(0), None), pod("b", "Running", None, None)],
            &HashSet::new(),
            false,
        );
        assert!(success(&j, &a).is_none());
        assert!(pod_changes(&j, &a, false).create.is_empty(), "no new pods once one succeeded");
        let a = assess(&j, &[pod("a", "Succeeded", Some(0), None)], &HashSet::new(), false);
        assert!(success(&j, &a).is_some());
    }

    #[test]
    fn indexed_jobs_start_the_lowest_pending_indexes_and_count_each_index_once() {
        let mut j = job(Some(5), 2, true);
        j.status = Some(JobStatus { completed_indexes: Some("0,1".into()), succeeded: Some(2), ..Default::default() });
        let pods = [
            pod("a", "Running", None, Some(3)),
            pod("b", "Succeeded", Some(0), Some(1)), // a second success of a completed index
            pod("c", "Succeeded", Some(0), Some(2)),
            pod("d", "Running", None, Some(3)), // duplicate index
            pod("e", "Running", None, Some(7)), // out of range
        ];
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(a.new_succeeded, ["c"]);
        assert_eq!(a.not_counted, ["b"]);
        assert_eq!(format_indexes(&a.completed), "0-2");
        let ch = pod_changes(&j, &a, false);
        assert_eq!(ch.create, [Some(4)]);
        let deleted: Vec<_> = ch.delete.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
        assert_eq!(deleted, ["d", "e"]);
    }

    #[test]
    fn indexed_pods_carry_their_index_hostname_and_env() {
        let j = job(Some(3), 3, true);
        let p = pod_for_job(&j, OwnerReference::default(), Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().and_then(|a| a.get(COMPLETION_INDEX)).map(String::as_str),
            Some("2")
        );
        assert_eq!(p.metadata.labels.as_ref().and_then(|a| a.get(COMPLETION_INDEX)).map(String::as_str), Some("2"));
        assert_eq!(p.metadata.finalizers, Some(vec![TRACKING_FINALIZER.to_string()]));
        let spec = p.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().expect("env")[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        assert_eq!(
            env.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str()),
            Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        let p = pod_for_job(&job(Some(3), 3, false), OwnerReference::default(), None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(p.spec.expect("spec").containers[0].env.is_none());
    }

    #[test]
    fn backoff_limit_and_deadline_fail_the_job() {
        let j = job(Some(1), 1, false);
        let pods: Vec<_> = (0..3).map(|i| pod(&i.to_string(), "Failed", Some(1), None)).collect();
        let a = assess(&j, &pods[..2], &HashSet::new(), false);
        assert!(failure(&j, &a, ts(0)).is_none(), "2 failures, backoffLimit 2");
        let a = assess(&j, &pods, &HashSet::new(), false);
        assert_eq!(failure(&j, &a, ts(0)).map(|c| c.0), Some("BackoffLimitExceeded"));

        let mut j = job(Some(1), 1, false);
        j.spec.as_mut().expect("spec").active_deadline_seconds = Some(30);
        j.status = Some(JobStatus { start_time: Some(Time(ts(0))), ..Default::default() });
        let a = assess(&j, &[], &HashSet::new(), false);
        assert_eq!(deadline_remaining(&j, ts(10)), Some(Duration::from_secs(20)));
        assert!(failure(&j, &a, ts(29)).is_none());
        assert_eq!(failure(&j, &a, ts(30)).map(|c| c.0), Some("DeadlineExceeded"));
    }

    #[test]
    fn container_restarts_count_against_the_backoff_limit_with_restart_on_failure() {
        let mut j = job(Some(1), 1, false);
        let spec = j.spec.as_mut().expect("spec");
        spec.template.spec.as_mut().expect("pod spec").restart_policy = Some("OnFailure".into());
        let mut running = (*pod("a", "Running", None, None)).clone();
        running.status.as_mut().expect("status").container_statuses =
            Some(vec![ContainerStatus { name: "c".into(), restart_count: 1, ..Default::default() }]);
        let a = assess(&j, &[Arc::new(running.clone())], &HashSet::new(), false);
        assert_eq!(a.restarts, 1);
        assert!(failure(&j, &a, ts(0)).is_none(), "1 restart, backoffLimit 2");
        running.status.as_mut().expect("status").container_statuses.as_mut().expect("statuses")[0].restart_count = 2;
        let a = assess(&j, &[Arc::new(running)], &HashSet::new(), false);
        assert_eq!(failure(&j, &a, ts(0)).map(|c| c.0), Some("BackoffLimitExceeded"));
    }

    #[test]
    fn pods_deleted_to_suspend_or_finish_are_not_failures() {
        let j = job(Some(1), 1, false);
        let mut deleted = (*pod("a", "Running", None, None)).clone();
        deleted.metadata.deletion_timestamp = Some(Time(ts(0)));
        let deleted = Arc::new(deleted);
        let a = assess(&j, std::slice::from_ref(&deleted), &HashSet::new(), true);
        assert_eq!((a.failed, a.terminating, a.not_counted.len()), (0, 1, 1));
        let a = assess(&j, &[deleted], &HashSet::new(), false);
        assert_eq!((a.failed, a.terminating), (1, 1), "deleted by someone else: a failure");
    }

    #[test]
    fn pod_failure_policy_fails_ignores_or_counts() {
        let rules = vec![
            PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: None,
                    operator: "In".into(),
                    values: vec![42],
                }),
                on_pod_conditions: None,
            },
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                }]),
            },
            PodFailurePolicyRule {
                action: "Count".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some("c".into()),
                    operator: "NotIn".into(),
                    values: vec![42],
                }),
                on_pod_conditions: None,
            },
        ];
        assert_eq!(
            match_pod_failure_policy(&rules, &pod("a", "Failed", Some(42), None)),
            Some(PolicyAction::FailJob(
                "Container c for pod default/pod-a failed with exit code 42 matching FailJob rule at index 0".into()
            ))
        );
        let mut disrupted = (*pod("b", "Failed", Some(137), None)).clone();
        disrupted.status.as_mut().expect("status").conditions =
            Some(vec![PodCondition { type_: "DisruptionTarget".into(), status: "True".into(), ..Default::default() }]);
        assert_eq!(match_pod_failure_policy(&rules, &disrupted), Some(PolicyAction::Ignore));
        assert_eq!(match_pod_failure_policy(&rules, &pod("c", "Failed", Some(1), None)), Some(PolicyAction::Count));

        let mut j = job(Some(1), 1, false);
        j.spec.as_mut().expect("spec").pod_failure_policy =
            Some(k8s_openapi::api::batch::v1::PodFailurePolicy { rules });
        let a = assess(&j, &[Arc::new(disrupted), pod("a", "Failed", Some(42), None)], &HashSet::new(), false);
        assert_eq!(a.not_counted, ["b"], "ignored failures never count");
        assert_eq!(a.failed, 1);
        assert_eq!(failure(&j, &a, ts(0)).map(|c| c.0), Some("PodFailurePolicy"));
    }
}
