//! upstream `TriggerTimeTracker` (pkg/controller/util/endpoint/trigger_time_tracker.go): the
//! time of the change that made a sync rewrite a Service's slices, exported as the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation so kube-proxy can observe the
//! network programming latency (trigger → rules in the kernel).
//!
//! A pod's trigger time is its Ready condition's last transition; a Service's is its creation.
//! A sync reports the earliest of the trigger times that moved since the previous sync of the
//! same Service, or the Service's creation the first time the Service is seen.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;

use crate::controllers::owner::ready_condition;

/// upstream `v1.EndpointsLastChangeTriggerTime`.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// What the previous sync of one Service saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceState {
    pod_trigger_times: HashMap<String, Timestamp>,
    service_trigger_time: Option<Timestamp>,
}

/// The deciding half: given the previous sync's state (`None` for a Service not seen before),
/// the Service and its selected pods, the trigger time to export (`None`: no annotation) and
/// the state for the next sync.
pub fn compute(prev: Option<&ServiceState>, svc: &Service, pods: &[&Pod]) -> (Option<Timestamp>, ServiceState) {
    let mut min_changed: Option<Timestamp> = None;
    let mut earliest = |t: Timestamp| min_changed = Some(min_changed.map_or(t, |m| m.min(t)));
    let mut next = ServiceState::default();
    for p in pods {
        let Some(t) = ready_condition(p).and_then(|(_, t)| t) else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        if prev.and_then(|s| s.pod_trigger_times.get(&name)).is_none_or(|last| t > *last) {
            earliest(t);
        }
        next.pod_trigger_times.insert(name, t);
    }
    let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if let Some(t) = created {
        if prev.and_then(|s| s.service_trigger_time).is_none_or(|last| t > last) {
            earliest(t);
        }
    }
    next.service_trigger_time = created;
    match prev {
        // upstream: a Service seen for the first time reports its creation.
        None => (created, next),
        Some(_) => (min_changed, next),
    }
}

/// The per-Service states behind [`compute`], shared by the controller's workers. The queue
/// never hands one key to two workers at once, so only the map needs the lock.
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    states: Mutex<HashMap<String, ServiceState>>,
}

impl TriggerTimeTracker {
    /// The trigger time for this sync of `key` (`namespace/name`); remembers what it saw.
    pub fn compute(&self, key: &str, svc: &Service, pods: &[&Pod]) -> Option<Timestamp> {
        let prev = self.states.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned();
        let (t, next) = compute(prev.as_ref(), svc, pods);
        self.states.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), next);
        t
    }

    /// Forgets a deleted Service.
    pub fn delete_service(&self, key: &str) {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(created: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": created},
            "spec": {"selector": {"app": "web"}},
        }))
        .expect("service")
    }

    fn pod(name: &str, ready_since: Option<&str>) -> Pod {
        let mut v = json!({"metadata": {"name": name, "namespace": "default"}, "status": {"conditions": []}});
        if let Some(t) = ready_since {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]);
        }
        serde_json::from_value(v).expect("pod")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_new_service_reports_its_creation() {
        let s = svc("2026-11-23T00:00:00Z");
        let a = pod("a", Some("2026-11-23T00:00:05Z"));
        let (t, _) = compute(None, &s, &[&a]);
        assert_eq!(t, Some(ts("2026-11-23T00:00:00Z")));
    }

    #[test]
    fn the_earliest_changed_pod_transition_is_reported_and_unchanged_ones_are_not() {
        let s = svc("2026-11-23T00:00:00Z");
        let (a, b) = (pod("a", Some("2026-11-23T00:00:05Z")), pod("b", Some("2026-11-23T00:00:06Z")));
        let (_, state) = compute(None, &s, &[&a, &b]);
        // Nothing moved since the last sync (a resync): no trigger time, so no annotation.
        let (t, state) = compute(Some(&state), &s, &[&a, &b]);
        assert_eq!(t, None);
        // Both pods changed readiness: the earlier transition is the trigger.
        let (a2, b2) = (pod("a", Some("2026-11-23T00:01:09Z")), pod("b", Some("2026-11-23T00:01:07Z")));
        let (t, state) = compute(Some(&state), &s, &[&a2, &b2]);
        assert_eq!(t, Some(ts("2026-11-23T00:01:07Z")));
        // A new pod counts as changed; a pod without a Ready condition has no trigger time.
        let (c, d) = (pod("c", Some("2026-11-23T00:02:00Z")), pod("d", None));
        let (t, _) = compute(Some(&state), &s, &[&a2, &b2, &c, &d]);
        assert_eq!(t, Some(ts("2026-11-23T00:02:00Z")));
    }

    #[test]
    fn a_deleted_service_is_new_again() {
        let tracker = TriggerTimeTracker::default();
        let s = svc("2026-11-23T00:00:00Z");
        assert_eq!(tracker.compute("default/web", &s, &[]), Some(ts("2026-11-23T00:00:00Z")));
        assert_eq!(tracker.compute("default/web", &s, &[]), None);
        tracker.delete_service("default/web");
        let again = svc("2026-11-23T00:05:00Z");
        assert_eq!(tracker.compute("default/web", &again, &[]), Some(ts("2026-11-23T00:05:00Z")));
    }
}
