//! Which pods a ReplicaSet deletes first when it scales down: upstream's
//! `ActivePodsWithRanks` ordering with LogarithmicScaleDown and PodDeletionCost (both on by
//! default), so the same pods go as they would under kube-controller-manager:
//! 1. unscheduled before scheduled;
//! 2. Pending before Unknown before Running;
//! 3. not ready before ready;
//! 4. lower `controller.kubernetes.io/pod-deletion-cost` first;
//! 5. pods doubled up on a node (more related pods there) first;
//! 6. ready for less time first (compared on a log2 scale of age; ties broken by UID);
//! 7. more container restarts first;
//! 8. newer first (log2 scale again; ties by UID).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::controllers::owner::{is_active, is_ready, ready_condition, PodView};

pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_ordinal<P: PodView>(p: &P) -> u8 {
    match p.phase() {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost<P: PodView>(p: &P) -> i32 {
    p.pod_meta().annotations.as_ref().and_then(|a| a.get(DELETION_COST)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn node<P: PodView>(p: &P) -> &str {
    p.node_name().unwrap_or_default()
}

fn ready_time<P: PodView>(p: &P) -> Option<Timestamp> {
    ready_condition(p).filter(|(r, _)| *r).and_then(|(_, t)| t)
}

/// upstream `logarithmicRankDiff`'s bucket: floor(log2(age in ns)); a missing time sorts
/// first (upstream `afterOrZero`), a future one next.
fn age_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    match t {
        None => -2,
        Some(t) => {
            let d = now.as_nanosecond() - t.as_nanosecond();
            if d > 0 {
                (d as f64).log2() as i64
            } else {
                -1
            }
        }
    }
}

/// The deletion order as one sort key, smallest first. Upstream's `Less` falls back to UIDs
/// inside a criterion, which is not a total order (Go's sort tolerates that, Rust's does not);
/// here each criterion compares buckets only and the UID breaks the final tie, so the order
/// is total and otherwise upstream's.
fn sort_key<P: PodView>(
    p: &P,
    rank: usize,
    now: Timestamp,
) -> (bool, u8, bool, i32, std::cmp::Reverse<usize>, i64, std::cmp::Reverse<i32>, i64, String) {
    let ready = is_ready(p);
    (
        !node(p).is_empty(),
        phase_ordinal(p),
        ready,
        deletion_cost(p),
        std::cmp::Reverse(rank),
        if ready { age_bucket(ready_time(p), now) } else { 0 },
        std::cmp::Reverse(p.max_restarts()),
        age_bucket(p.pod_meta().creation_timestamp.as_ref().map(|t| t.0), now),
        p.pod_meta().uid.clone().unwrap_or_default(),
    )
}

/// The `n` pods of `pods` to delete first. `related` are the active pods of every ReplicaSet
/// with the same controller (the Deployment's), used for the doubled-up rank.
pub fn pods_to_delete<P: PodView>(pods: &[Arc<P>], related: &[Arc<P>], n: usize, now: Timestamp) -> Vec<Arc<P>> {
    if n >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(is_active) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<&Arc<P>> = pods.iter().collect();
    ranked.sort_by_cached_key(|p| sort_key(p, on_node.get(node(p)).copied().unwrap_or(0), now));
    ranked.into_iter().take(n).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::podcache::CachedPod;
    use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const NOW: i64 = 1_000_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[derive(Clone, Default)]
    struct P {
        name: &'static str,
        node: &'static str,
        phase: &'static str,
        ready_since: Option<i64>,
        restarts: i32,
        created: i64,
        cost: Option<&'static str>,
    }

    fn pod(p: P) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(p.name.into()),
                uid: Some(p.name.into()),
                creation_timestamp: Some(Time(ts(p.created))),
                annotations: p.cost.map(|c| [(DELETION_COST.to_string(), c.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: (!p.node.is_empty()).then(|| p.node.to_string()), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(p.phase.into()),
                conditions: p.ready_since.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(ts(t))),
                        ..Default::default()
                    }]
                }),
                container_statuses: Some(vec![ContainerStatus { restart_count: p.restarts, ..Default::default() }]),
                ..Default::default()
            }),
        })
    }

    /// The deletion order, checked to be the same over the informer's cached pods.
    fn order(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let typed: Vec<String> = pods_to_delete(&pods, &pods, pods.len() - 1, ts(NOW))
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        let cached: Vec<Arc<CachedPod>> = pods.iter().map(|p| Arc::new(CachedPod::new(p))).collect();
        let from_cache: Vec<String> = pods_to_delete(&cached, &cached, cached.len() - 1, ts(NOW))
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(from_cache, typed, "the cached pods rank as the typed ones");
        typed
    }

    fn running(name: &'static str, node: &'static str) -> P {
        P { name, node, phase: "Running", ready_since: Some(NOW - 5000), created: NOW - 6000, ..Default::default() }
    }

    #[test]
    fn unscheduled_then_pending_then_unknown_then_not_ready_go_first() {
        let pods = vec![
            pod(running("ready", "n1")),
            pod(P { ready_since: None, ..running("not-ready", "n2") }),
            pod(P { phase: "Unknown", ready_since: None, ..running("unknown", "n3") }),
            pod(P { phase: "Pending", ready_since: None, ..running("pending", "n4") }),
            pod(P { node: "", phase: "Pending", ready_since: None, ..running("unscheduled", "") }),
            pod(running("ready-2", "n5")),
        ];
        assert_eq!(order(pods), ["unscheduled", "pending", "unknown", "not-ready", "ready"]);
    }

    #[test]
    fn lower_deletion_cost_goes_first() {
        let pods = vec![
            pod(P { cost: Some("10"), ..running("expensive", "n1") }),
            pod(P { cost: Some("-5"), ..running("cheap", "n2") }),
            pod(running("default", "n3")),
        ];
        assert_eq!(order(pods), ["cheap", "default"]);
    }

    #[test]
    fn doubled_up_pods_go_first() {
        let pods = vec![pod(running("alone", "n1")), pod(running("a", "n2")), pod(running("b", "n2"))];
        assert_eq!(order(pods), ["a", "b"]);
    }

    #[test]
    fn more_restarts_then_newer_go_first() {
        let pods = vec![
            pod(running("old", "n1")),
            pod(P { restarts: 3, ..running("restarty", "n2") }),
            pod(P { created: NOW - 10, ready_since: Some(NOW - 5000), ..running("new", "n3") }),
        ];
        assert_eq!(order(pods), ["restarty", "new"]);
    }

    #[test]
    fn recently_ready_goes_before_long_ready() {
        let pods = vec![pod(running("long", "n1")), pod(P { ready_since: Some(NOW - 3), ..running("recent", "n2") })];
        assert_eq!(order(pods), ["recent"]);
    }

    #[test]
    fn the_order_is_total_over_many_similar_pods() {
        // Upstream's comparator is not transitive on equal times; this must not panic.
        let pods: Vec<Arc<Pod>> = (0..200)
            .map(|i| {
                let name: &'static str = Box::leak(format!("p{i:03}").into_boxed_str());
                pod(P {
                    created: NOW - 5000 - (i % 3),
                    ready_since: Some(NOW - 4000 - (i % 2)),
                    restarts: (i % 4) as i32,
                    ..running(name, if i % 5 == 0 { "" } else { "n1" })
                })
            })
            .collect();
        assert_eq!(pods_to_delete(&pods, &pods, 150, ts(NOW)).len(), 150);
    }

    #[test]
    fn times_in_the_same_log2_bucket_tie_break_by_uid() {
        // 5000 s and 5001 s old are in the same bucket: the UID decides, not the exact time.
        let pods = vec![
            pod(P { created: NOW - 5000, ..running("b", "n1") }),
            pod(P { created: NOW - 5001, ..running("a", "n2") }),
        ];
        assert_eq!(order(pods), ["a"]);
    }
}
