//! The PodDisruptionBudget arithmetic, pure, as upstream's disruption controller: how many
//! pods are expected (the pods themselves for an integer minAvailable, else the scale of their
//! controllers), how many must stay healthy, how many are healthy (ready, not being deleted,
//! not recently evicted), and the resulting status with the DisruptionAllowed condition.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::controllers::owner::{controller_of, is_ready};

/// upstream: DeletionTimeout, how long an evicted pod is not counted as healthy while its
/// deletion is expected.
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(2 * 60);

/// upstream policyv1 condition type and reasons.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

/// upstream `intstr.GetScaledValueFromIntOrPercent`, strict: a string must be a percentage.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let prod = pct * i64::from(total);
            Ok((if round_up { (prod + 99).div_euclid(100) } else { prod.div_euclid(100) }) as i32)
        }
    }
}

/// The scale of a pod's controller, as upstream's finders answer it: the controller's uid and
/// its `spec.replicas`, or `None` when no known controller (ReplicaSet, the Deployment owning
/// it, StatefulSet) is found.
pub type ScaleOf<'a> = dyn Fn(&Pod) -> Option<(String, i32)> + 'a;

/// upstream `getExpectedPodCount`: (expectedCount, desiredHealthy, unmanaged pod names).
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale_of: &ScaleOf<'_>,
) -> Result<(i32, i32, Vec<String>), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let expected_scale = || -> Result<(i32, Vec<String>), String> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut unmanaged = Vec::new();
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let Some(cref) = controller_of(&p.metadata) else {
                unmanaged.push(name);
                continue;
            };
            if scales.contains_key(&cref.uid) {
                continue;
            }
            let (uid, scale) = scale_of(p).ok_or_else(|| format!("found no controllers for pod {name:?}"))?;
            scales.insert(uid, scale);
        }
        Ok((scales.values().sum(), unmanaged))
    };
    if let Some(max_unavailable) = spec.max_unavailable.as_ref() {
        let (expected, unmanaged) = expected_scale()?;
        let m = scaled(max_unavailable, expected, true)?;
        return Ok((expected, (expected - m).max(0), unmanaged));
    }
    match spec.min_available.as_ref() {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n, Vec::new())),
        Some(v @ IntOrString::String(_)) => {
            let (expected, unmanaged) = expected_scale()?;
            Ok((expected, scaled(v, expected, true)?, unmanaged))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// upstream `buildDisruptedPodMap`: the evictions still expected to turn into deletions, the
/// earliest time one of them expires (to look again then), and the pods whose deletion
/// never came (upstream records a NotDeleted event for each).
pub fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let mut not_deleted = Vec::new();
    let Some(recorded) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (out, recheck, not_deleted);
    };
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = p.metadata.name.clone().unwrap_or_default();
        let Some(at) = recorded.get(&name) else { continue };
        let expected_deletion = at.0.checked_add(DELETION_TIMEOUT).unwrap_or(at.0);
        if expected_deletion < now {
            not_deleted.push(name);
        } else {
            recheck = Some(recheck.map_or(expected_deletion, |r| r.min(expected_deletion)));
            out.insert(name, at.clone());
        }
    }
    (out, recheck, not_deleted)
}

/// upstream `countHealthyPods`: ready, not being deleted, not evicted within the timeout.
pub fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            disrupted.get(name).is_none_or(|at| at.0.checked_add(DELETION_TIMEOUT).unwrap_or(at.0) <= now)
        })
        .filter(is_ready)
        .count() as i32
}

/// upstream `meta.SetStatusCondition`: the transition time moves only when the status does.
pub fn set_condition(conditions: &mut Vec<Condition>, mut c: Condition) {
    match conditions.iter_mut().find(|x| x.type_ == c.type_) {
        Some(existing) => {
            if existing.status != c.status {
                existing.status = c.status;
                existing.last_transition_time = c.last_transition_time;
            }
            existing.reason = c.reason;
            existing.message = std::mem::take(&mut c.message);
            existing.observed_generation = c.observed_generation;
        }
        None => conditions.push(c),
    }
}

/// upstream `UpdateDisruptionAllowedCondition`.
pub fn update_allowed_condition(st: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    let (status, reason) =
        if st.disruptions_allowed > 0 { ("True", SUFFICIENT_PODS) } else { ("False", INSUFFICIENT_PODS) };
    let mut conds = st.conditions.take().unwrap_or_default();
    set_condition(
        &mut conds,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: st.observed_generation,
            last_transition_time: Time(now),
        },
    );
    st.conditions = Some(conds);
}

/// upstream `updatePdbStatus`: no disruption is allowed while nothing is expected (a budget
/// whose first pods just appeared is safe before this controller has counted them).
pub fn status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected: i32,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let old = pdb.status.clone().unwrap_or_default();
    let mut st = PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: pdb.metadata.generation,
        conditions: old.conditions,
    };
    update_allowed_condition(&mut st, now);
    st
}

/// upstream `failSafe`: when the budget cannot be computed, nothing may be disrupted.
pub fn fail_safe(pdb: &PodDisruptionBudget, err: &str, now: Timestamp) -> PodDisruptionBudgetStatus {
    let mut st = pdb.status.clone().unwrap_or_default();
    st.disruptions_allowed = 0;
    let mut conds = st.conditions.take().unwrap_or_default();
    set_condition(
        &mut conds,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: "False".into(),
            reason: SYNC_FAILED.into(),
            message: err.to_string(),
            observed_generation: st.observed_generation,
            last_transition_time: Time(now),
        },
    );
    st.conditions = Some(conds);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pdb(spec: serde_json::Value, status: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b", "generation": 2}, "spec": spec, "status": status}))
            .expect("pdb")
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool) -> Arc<Pod> {
        let refs = owner
            .map(|o| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o, "uid": o, "controller": true}]));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "ownerReferences": refs},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .expect("pod"),
        )
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    /// Every controller is a ReplicaSet of 5 here.
    fn five(p: &Pod) -> Option<(String, i32)> {
        controller_of(&p.metadata).map(|c| (c.uid.clone(), 5))
    }

    #[test]
    fn percentages_round_up_and_must_be_percentages() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 5, true), Ok(3));
        assert_eq!(scaled(&IntOrString::String("50%".into()), 5, false), Ok(2));
        assert_eq!(scaled(&IntOrString::Int(2), 5, true), Ok(2));
        assert!(scaled(&IntOrString::String("half".into()), 5, true).is_err());
    }

    #[test]
    fn integer_min_available_counts_the_pods_themselves() {
        let pods = [pod("a", Some("rs"), true), pod("b", None, true)];
        let b = pdb(json!({"minAvailable": 1}), json!({}));
        assert_eq!(expected_and_desired(&b, &pods, &five), Ok((2, 1, vec![])));
    }

    #[test]
    fn percent_min_available_and_max_unavailable_use_the_controllers_scale() {
        let pods = [pod("a", Some("rs"), true), pod("b", Some("rs"), true), pod("c", Some("rs2"), true)];
        let b = pdb(json!({"minAvailable": "50%"}), json!({}));
        assert_eq!(expected_and_desired(&b, &pods, &five), Ok((10, 5, vec![])));
        let b = pdb(json!({"maxUnavailable": "25%"}), json!({}));
        assert_eq!(expected_and_desired(&b, &pods, &five), Ok((10, 7, vec![])), "10 - ceil(2.5)");
        let b = pdb(json!({"maxUnavailable": 20}), json!({}));
        assert_eq!(expected_and_desired(&b, &pods, &five), Ok((10, 0, vec![])), "never below zero");
    }

    #[test]
    fn unmanaged_pods_are_reported_and_unknown_controllers_fail() {
        let pods = [pod("a", Some("rs"), true), pod("bare", None, true)];
        let b = pdb(json!({"maxUnavailable": 1}), json!({}));
        assert_eq!(expected_and_desired(&b, &pods, &five), Ok((5, 4, vec!["bare".into()])));
        let none = |_: &Pod| None;
        let err = expected_and_desired(&b, &pods, &none).expect_err("no controller found");
        assert_eq!(err, "found no controllers for pod \"a\"");
    }

    #[test]
    fn healthy_excludes_unready_deleting_and_recently_evicted_pods() {
        let mut deleting = (*pod("d", Some("rs"), true)).clone();
        deleting.metadata.deletion_timestamp = Some(Time(at(0)));
        let pods =
            [pod("a", Some("rs"), true), pod("b", Some("rs"), false), Arc::new(deleting), pod("e", Some("rs"), true)];
        let b = pdb(json!({}), json!({"disruptedPods": {"e": at(1000).to_string(), "gone": at(1000).to_string()}}));
        let (map, recheck, late) = disrupted_pods(&b, &pods, at(1060));
        assert_eq!(map.keys().collect::<Vec<_>>(), ["e"]);
        assert_eq!(recheck, Some(at(1120)));
        assert!(late.is_empty());
        assert_eq!(count_healthy(&pods, &map, at(1060)), 1);
        let (map, recheck, late) = disrupted_pods(&b, &pods, at(1200));
        assert!(map.is_empty() && recheck.is_none());
        assert_eq!(late, ["e"], "an eviction that did not delete the pod expires");
        assert_eq!(count_healthy(&pods, &map, at(1200)), 2);
    }

    #[test]
    fn status_allows_the_surplus_and_sets_the_condition() {
        let b = pdb(json!({"minAvailable": 2}), json!({}));
        let st = status(&b, 3, 2, 3, BTreeMap::new(), at(5));
        assert_eq!((st.disruptions_allowed, st.expected_pods, st.observed_generation), (1, 3, Some(2)));
        let c = &st.conditions.clone().expect("conditions")[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
        let b = PodDisruptionBudget { status: Some(st), ..b };
        let st = status(&b, 2, 2, 3, BTreeMap::new(), at(9));
        let c = &st.conditions.clone().expect("conditions")[0];
        assert_eq!((st.disruptions_allowed, c.status.as_str(), c.reason.as_str()), (0, "False", "InsufficientPods"));
        assert_eq!(c.last_transition_time, Time(at(9)));
        assert_eq!(
            status(&b, 5, 0, 0, BTreeMap::new(), at(9)).disruptions_allowed,
            0,
            "nothing expected, nothing allowed"
        );
    }

    #[test]
    fn fail_safe_allows_nothing() {
        let b = pdb(json!({"maxUnavailable": 1}), json!({"disruptionsAllowed": 3, "currentHealthy": 4}));
        let st = fail_safe(&b, "found no controllers for pod \"a\"", at(1));
        assert_eq!(st.disruptions_allowed, 0);
        let c = &st.conditions.expect("conditions")[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "SyncFailed"));
        assert_eq!(c.message, "found no controllers for pod \"a\"");
    }
}
