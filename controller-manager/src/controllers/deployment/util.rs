//! The pure half of the Deployment controller, as upstream's
//! `pkg/controller/deployment/util`: the pod-template hash, maxSurge/maxUnavailable
//! fenceposts, the revision and replicas annotations, conditions, status and the proportional
//! scaling arithmetic. Everything here compares values; nothing talks to the API.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// upstream: annotations a Deployment never copies to its ReplicaSets.
const SKIP_COPY: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];
/// upstream: maxRevHistoryLengthInChars
const MAX_REV_HISTORY_CHARS: usize = 2000;

// Condition types and reasons kubectl and users read.
pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(h: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(h, |h, b| (h ^ u32::from(*b)).wrapping_mul(16_777_619))
}

/// upstream `rand.SafeEncodeString`: each byte mapped into an alphabet without vowels (so no
/// words) and without look-alike characters.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// upstream `controller.ComputeHash`: FNV-32a over the template, then the collision count as
/// 8 little-endian bytes (the low 4 set), rendered as the decimal of the sum in the safe
/// alphabet. Upstream feeds the hasher a `spew` dump of the Go struct; we feed it the
/// template's canonical JSON (sorted maps, fixed field order), so the values differ from
/// upstream's but have the same shape and the same properties (stable, changes with any
/// template or collision-count change).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(2_166_136_261, &json);
    if let Some(c) = collision_count {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h = fnv32a(h, &b);
    }
    safe_encode(&h.to_string())
}

/// upstream `EqualIgnoreHash`: templates equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(POD_TEMPLATE_HASH);
        }
        if let Some(m) = t.metadata.as_mut() {
            if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
                m.labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

/// (replicas, ready, available) from the ReplicaSet's status. Available is capped at the
/// ReplicaSet's size: after a scale-down the status still counts the pods whose deletion is in
/// flight, and counting them would let the next step take away more than maxUnavailable
/// allows (upstream trusts the status here and can overshoot on a lagging one).
pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0).min(rs_replicas(rs)))
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// upstream `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let prod = pct * i64::from(total);
            (if round_up { (prod + 99) / 100 } else { prod / 100 }) as i32
        }
    }
}

/// upstream `ResolveFenceposts`: surge rounds up, unavailable rounds down, and both zero
/// means one may be unavailable.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let pct25 = IntOrString::String("25%".into());
    let surge = ru.and_then(|r| r.max_surge.clone()).unwrap_or_else(|| pct25.clone());
    let unavail = ru.and_then(|r| r.max_unavailable.clone()).unwrap_or(pct25);
    let desired = replicas(d);
    let s = scaled_value(&surge, desired, true);
    let u = scaled_value(&unavail, desired, false);
    if s == 0 && u == 0 {
        (0, 1)
    } else {
        (s, u)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter().map(revision).max().unwrap_or(0)
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, DESIRED_REPLICAS)
}

/// upstream `SetReplicasAnnotations`; true when something changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation_i32(rs, DESIRED_REPLICAS) != Some(desired) || annotation_i32(rs, MAX_REPLICAS) != Some(max)
}

/// upstream `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, bumps the
/// revision (remembering the old one in revision-history when a rollback reuses this
/// ReplicaSet), and on creation sets desired/max replicas. True when something changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIP_COPY.contains(&k.as_str()) {
            continue;
        }
        if a.get(k) != Some(v) {
            a.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let old_revision = a.get(REVISION).cloned();
    let old_int: i64 = match old_revision.as_deref() {
        None => 0,
        Some(s) => match s.parse() {
            Ok(v) => v,
            Err(_) => return changed,
        },
    };
    if old_int < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old_revision {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut olds: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < olds.len() {
                    total -= olds[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    olds = olds.split_off(start);
                    olds.push(&old);
                    a.insert(REVISION_HISTORY.into(), olds.join(","));
                }
            }
        }
    }
    if !exists {
        let desired = replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge(d));
    }
    changed
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Oldest first (upstream `ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(rss: &mut [ReplicaSet]) {
    rss.sort_by(by_creation);
}

/// upstream `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
pub fn find_new<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let t = d.spec.as_ref().map(|s| &s.template)?;
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sorted.sort_by(|a, b| by_creation(a, b));
    sorted
        .into_iter()
        .find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|rt| equal_ignore_hash(rt, t)))
}

/// upstream `NewRSNewReplicas`: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

pub fn condition<'a>(st: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    st.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn new_condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// upstream `SetDeploymentCondition`: same status and reason is no change; same status keeps
/// the transition time.
pub fn set_condition(st: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(st, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = st.conditions.get_or_insert_with(Vec::new);
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

pub fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = st.conditions.as_mut() {
        c.retain(|x| x.type_ != type_);
        if c.is_empty() {
            st.conditions = None;
        }
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).filter(|s| *s != i32::MAX)
}

/// upstream `calculateStatus`.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| rs_status(r).0).sum()),
        updated_replicas: Some(new_rs.map(|r| rs_status(r).0).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|r| rs_status(r).1).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut st,
            new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.".into(), now),
        );
    } else {
        set_condition(
            &mut st,
            new_condition(
                AVAILABLE,
                "False",
                MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    st
}

/// upstream `DeploymentComplete`.
pub fn complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let r = replicas(d);
    st.updated_replicas.unwrap_or(0) == r
        && st.replicas.unwrap_or(0) == r
        && st.available_replicas.unwrap_or(0) == r
        && st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// upstream `DeploymentProgressing`: more updated, fewer old, more ready or more available.
pub fn progressing(d: &Deployment, st: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(st.replicas) - g(st.updated_replicas);
    g(st.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(st.ready_replicas) > g(old.ready_replicas)
        || g(st.available_replicas) > g(old.available_replicas)
}

/// upstream `DeploymentTimedOut`: the Progressing condition has not been updated for
/// progressDeadlineSeconds.
pub fn timed_out(d: &Deployment, st: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else { return false };
    let Some(c) = condition(st, PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// upstream `syncRolloutStatus`'s condition logic: the new status with Progressing updated.
pub fn rollout_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut st = calculate_status(all, new_rs, d, now);
    if progress_deadline(d).is_none() {
        remove_condition(&mut st, PROGRESSING);
    }
    let cur = condition(&st, PROGRESSING).cloned();
    let is_complete = st.replicas == st.updated_replicas
        && cur.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if progress_deadline(d).is_some() && !is_complete {
        let rs_name = new_rs.and_then(|r| r.metadata.name.clone());
        if complete(d, &st) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                None => "Deployment has successfully progressed.".into(),
            };
            set_condition(&mut st, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE, msg, now));
        } else if progressing(d, &st) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                None => "Deployment is progressing.".into(),
            };
            let mut c = new_condition(PROGRESSING, "True", RS_UPDATED, msg, now);
            if let Some(cur) = cur.as_ref().filter(|c| c.status == "True") {
                c.last_transition_time = cur.last_transition_time.clone();
            }
            // Always rewrite it: lastUpdateTime is what the deadline counts from.
            remove_condition(&mut st, PROGRESSING);
            st.conditions.get_or_insert_with(Vec::new).push(c);
        } else if timed_out(d, &st, now) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                None => "Deployment has timed out progressing.".into(),
            };
            set_condition(&mut st, new_condition(PROGRESSING, "False", TIMED_OUT, msg, now));
        }
    }
    // upstream getReplicaFailures: the new ReplicaSet's ReplicaFailure, else an old one's.
    let failure = new_rs
        .into_iter()
        .chain(all.iter().copied())
        .find_map(|rs| rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE).cloned());
    match failure {
        Some(f) => set_condition(
            &mut st,
            DeploymentCondition {
                type_: REPLICA_FAILURE.into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove_condition(&mut st, REPLICA_FAILURE),
    }
    st
}

/// Status equality that ignores condition timestamps' sub-second noise is not needed: we
/// compare exactly, as upstream's `reflect.DeepEqual` does.
pub fn same_status(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    a == Some(b)
}

/// upstream `getReplicaSetFraction`.
fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated =
        annotation_i32(rs, MAX_REPLICAS).unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

/// upstream `GetProportion`.
fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let f = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        f.min(allowed)
    } else {
        f.max(allowed)
    }
}

/// upstream `scale` for a RollingUpdate Deployment resized mid-rollout: the new sizes of the
/// active ReplicaSets (by name), spreading the difference in proportion to their sizes, the
/// leftover going to the largest.
pub fn proportional_sizes(d: &Deployment, active: &[&ReplicaSet]) -> (Vec<(String, i32)>, &'static str) {
    let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let allowed = if replicas(d) > 0 { replicas(d) + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    let mut sorted: Vec<&ReplicaSet> = active.to_vec();
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if to_add > 0 {
        // upstream ReplicaSetsBySizeNewer: larger first, then newer.
        sorted.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| t(b).cmp(&t(a))));
    } else if to_add < 0 {
        // upstream ReplicaSetsBySizeOlder: larger first, then older.
        sorted.sort_by(|a, b| rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| t(a).cmp(&t(b))));
    }
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::new();
    for rs in &sorted {
        let name = rs.metadata.name.clone().unwrap_or_default();
        if to_add != 0 {
            let p = proportion(rs, d, to_add, added);
            sizes.push((name, rs_replicas(rs) + p));
            added += p;
        } else {
            sizes.push((name, rs_replicas(rs)));
        }
    }
    if to_add != 0 {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    (sizes, if to_add > 0 { "up" } else { "down" })
}

/// upstream `IsSaturated`: the ReplicaSet has all the Deployment's replicas, available.
pub fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    rs_replicas(rs) == replicas(d) && desired_annotation(rs) == Some(replicas(d)) && rs_status(rs).2 == replicas(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(replicas: i32, surge: IntOrString, unavail: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta { name: Some("web".into()), generation: Some(1), ..Default::default() },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                progress_deadline_seconds: Some(600),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavail),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    fn rs(name: &str, replicas: i32, available: i32, created: i64, max_ann: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).expect("ts"))),
                annotations: max_ann.map(|m| [(MAX_REPLICAS.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec { replicas: Some(replicas), ..Default::default() }),
            status: Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn available_never_counts_pods_beyond_the_size() {
        let r = rs("old", 8, 10, 1, None);
        assert_eq!(rs_status(&r).2, 8, "two of the ten are being deleted");
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&deployment(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deployment(1, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            fenceposts(&deployment(10, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1),
            "both zero → one unavailable"
        );
        assert_eq!(fenceposts(&deployment(10, pct("0%"), pct("0%"))), (0, 1));
        assert_eq!(max_unavailable(&deployment(2, IntOrString::Int(0), IntOrString::Int(5))), 2, "capped at replicas");
    }

    #[test]
    fn hash_is_safe_encoded_decimal_and_changes_with_collision_count() {
        let t = PodTemplateSpec::default();
        let h = compute_hash(&t, None);
        assert!(h.len() <= 10 && !h.is_empty());
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
        assert_eq!(h, compute_hash(&t, None), "stable");
        assert_ne!(h, compute_hash(&t, Some(1)));
        assert_eq!(safe_encode("0123456789"), "456789bcdf", "digits map as upstream's (byte % 27)");
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(2_166_136_261, b""), 0x811c9dc5);
        assert_eq!(fnv32a(2_166_136_261, b"a"), 0xe40c292c);
        assert_eq!(fnv32a(2_166_136_261, b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn templates_equal_apart_from_the_hash_label() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta { labels: Some([("app".into(), "x".into())].into()), ..Default::default() }),
            spec: None,
        };
        let mut b = a.clone();
        if let Some(l) = b.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH.into(), "abc".into());
        }
        assert!(equal_ignore_hash(&a, &b));
        if let Some(l) = b.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert("app".into(), "y".into());
        }
        assert!(!equal_ignore_hash(&a, &b));
    }

    #[test]
    fn new_rs_grows_up_to_replicas_plus_surge() {
        let d = deployment(10, pct("25%"), pct("25%"));
        let old = rs("old", 10, 10, 1, None);
        let new = rs("new", 0, 0, 2, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3, "13 allowed, 10 exist");
        let old = rs("old", 8, 8, 1, None);
        let new = rs("new", 3, 0, 2, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 5);
    }

    #[test]
    fn revision_history_remembers_the_old_revision_on_rollback() {
        let d = deployment(1, pct("25%"), pct("25%"));
        let mut r = rs("a", 1, 1, 1, None);
        r.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        let a = r.metadata.annotations.clone().expect("annotations");
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut r, 5, true));
        let a = r.metadata.annotations.expect("annotations");
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
    }

    #[test]
    fn new_rs_annotations_carry_desired_and_max_replicas_and_copy_deployment_annotations() {
        let mut d = deployment(10, pct("25%"), pct("25%"));
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_string(), "v2".to_string()),
                ("kubectl.kubernetes.io/last-applied-configuration".to_string(), "{}".to_string()),
            ]
            .into(),
        );
        let mut r = rs("a", 0, 0, 1, None);
        r.metadata.annotations = None;
        set_new_rs_annotations(&d, &mut r, 1, false);
        let a = r.metadata.annotations.expect("annotations");
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("10"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("13"));
        assert_eq!(a.get("kubernetes.io/change-cause").map(String::as_str), Some("v2"));
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // upstream's example: 10 → 15 replicas while old has 8 and new has 5 (max 13).
        let d = deployment(15, pct("25%"), pct("25%"));
        let old = rs("old", 8, 8, 1, Some(13));
        let new = rs("new", 5, 0, 2, Some(13));
        let (sizes, op) = proportional_sizes(&d, &[&old, &new]);
        let total: i32 = sizes.iter().map(|s| s.1).sum();
        assert_eq!(op, "up");
        assert_eq!(total, 15 + 4, "replicas + maxSurge (4 = ceil(25% of 15))");
        assert_eq!(sizes, [("old".to_string(), 12), ("new".to_string(), 7)]);
    }

    #[test]
    fn status_sets_available_and_progressing_conditions() {
        let now = Timestamp::from_second(1000).expect("ts");
        let d = deployment(3, pct("25%"), pct("25%"));
        let new = rs("web-abc", 3, 3, 1, None);
        let st = rollout_status(&d, &[&new], Some(&new), now);
        let av = condition(&st, AVAILABLE).expect("available");
        assert_eq!((av.status.as_str(), av.reason.as_deref()), ("True", Some(MIN_AVAILABLE)));
        let pr = condition(&st, PROGRESSING).expect("progressing");
        assert_eq!(pr.reason.as_deref(), Some(NEW_RS_AVAILABLE));
        assert_eq!(pr.message.as_deref(), Some("ReplicaSet \"web-abc\" has successfully progressed."));
        assert_eq!((st.replicas, st.updated_replicas, st.available_replicas), (Some(3), Some(3), Some(3)));
    }

    #[test]
    fn a_stalled_rollout_times_out_after_the_deadline() {
        let mut d = deployment(3, pct("25%"), pct("25%"));
        let t0 = Timestamp::from_second(1000).expect("ts");
        let mut st = DeploymentStatus::default();
        set_condition(&mut st, new_condition(PROGRESSING, "True", RS_UPDATED, "x".into(), t0));
        d.status = Some(st.clone());
        assert!(!timed_out(&d, &st, Timestamp::from_second(1600).expect("ts")));
        assert!(timed_out(&d, &st, Timestamp::from_second(1601).expect("ts")));
        let new = rs("web-abc", 3, 0, 1, None);
        if let Some(s) = d.status.as_mut() {
            s.replicas = Some(3);
            s.updated_replicas = Some(3);
        }
        let st = rollout_status(&d, &[&new], Some(&new), Timestamp::from_second(1601).expect("ts"));
        let pr = condition(&st, PROGRESSING).expect("progressing");
        assert_eq!((pr.status.as_str(), pr.reason.as_deref()), ("False", Some(TIMED_OUT)));
        assert_eq!(pr.message.as_deref(), Some("ReplicaSet \"web-abc\" has timed out progressing."));
    }
}
