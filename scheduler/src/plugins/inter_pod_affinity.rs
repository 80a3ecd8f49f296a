//! InterPodAffinity: Filter enforces the pod's required affinity and anti-affinity terms and
//! the required anti-affinity of pods already placed; Score adds the weights of preferred
//! terms both ways (and existing pods' required affinity at upstream's
//! `hardPodAffinityWeight` 1) per topology domain.

use std::collections::HashMap;

use super::Handle;
use crate::framework::types::AffinityTerm;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status, MAX_NODE_SCORE};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(InterPodAffinity)
}

type Counts = HashMap<(String, String), i64>;

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

#[derive(Default, Clone)]
struct PreFilterState {
    /// Domains where a placed pod's required anti-affinity selects the incoming pod.
    existing_anti: Counts,
    /// Per domain, placed pods matching all / any of the incoming pod's required affinity /
    /// anti-affinity terms.
    affinity: Counts,
    anti_affinity: Counts,
}

fn add(counts: &mut Counts, term: &AffinityTerm, node: &NodeInfo, n: i64) {
    if let Some(v) = node.labels().get(&term.topology_key) {
        *counts.entry((term.topology_key.clone(), v.clone())).or_default() += n;
    }
}

fn in_domain(counts: &Counts, key: &str, node: &NodeInfo) -> i64 {
    node.labels().get(key).and_then(|v| counts.get(&(key.to_string(), v.clone()))).copied().unwrap_or(0)
}

/// Counts `other` on `node` into (n = 1) or out of (n = -1) the PreFilter state, as pre_filter
/// counted the placed pods.
fn update(s: &mut PreFilterState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, n: i64) {
    for t in &other.required_anti_affinity {
        if t.matches(pod) {
            add(&mut s.existing_anti, t, node, n);
        }
    }
    if !pod.required_affinity.is_empty() && pod.required_affinity.iter().all(|t| t.matches(other)) {
        for t in &pod.required_affinity {
            add(&mut s.affinity, t, node, n);
        }
    }
    for t in &pod.required_anti_affinity {
        if t.matches(other) {
            add(&mut s.anti_affinity, t, node, n);
        }
    }
}

fn update_state(state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, n: i64) {
    if let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) {
        let mut s = s.clone();
        update(&mut s, pod, other, node, n);
        state.write(PRE_FILTER_KEY, s);
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        let mut s = PreFilterState::default();
        let own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        for ni in &snap.nodes {
            if ni.pods_with_required_anti_affinity == 0 && !own {
                continue;
            }
            for existing in &ni.pods {
                for t in &existing.required_anti_affinity {
                    if t.matches(pod) {
                        add(&mut s.existing_anti, t, ni, 1);
                    }
                }
                if !pod.required_affinity.is_empty() && pod.required_affinity.iter().all(|t| t.matches(existing)) {
                    for t in &pod.required_affinity {
                        add(&mut s.affinity, t, ni, 1);
                    }
                }
                for t in &pod.required_anti_affinity {
                    if t.matches(existing) {
                        add(&mut s.anti_affinity, t, ni, 1);
                    }
                }
            }
        }
        if !own && s.existing_anti.is_empty() {
            return Status::skip();
        }
        state.write(PRE_FILTER_KEY, s);
        Status::success()
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, added: &PodInfo, node: &NodeInfo) {
        update_state(state, pod, added, node, 1);
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, removed: &PodInfo, node: &NodeInfo) {
        update_state(state, pod, removed, node, -1);
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else { return Status::success() };
        let labels = node.labels();
        // upstream's order: the pod's affinity, its anti-affinity, then existing pods' anti-affinity.
        if !pod.required_affinity.is_empty() {
            let all = pod.required_affinity.iter().all(|t| in_domain(&s.affinity, &t.topology_key, node) > 0);
            if !all {
                // upstream: the first pod of a group that selects itself may go anywhere its
                // terms' topology keys exist.
                let first_of_group = s.affinity.is_empty()
                    && pod.required_affinity.iter().all(|t| t.matches(pod) && labels.contains_key(&t.topology_key));
                if !first_of_group {
                    return Status::unresolvable(ERR_REASON_AFFINITY);
                }
            }
        }
        if pod.required_anti_affinity.iter().any(|t| in_domain(&s.anti_affinity, &t.topology_key, node) > 0) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
        if s.existing_anti.iter().any(|((k, v), n)| *n > 0 && labels.get(k) == Some(v)) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }

    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot, _: &[&NodeInfo]) -> Status {
        let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        let mut scores: Counts = HashMap::new();
        for ni in &snap.nodes {
            if !own && ni.pods_with_affinity == 0 {
                continue;
            }
            for existing in &ni.pods {
                for w in &pod.preferred_affinity {
                    if w.term.matches(existing) {
                        add(&mut scores, &w.term, ni, w.weight as i64);
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if w.term.matches(existing) {
                        add(&mut scores, &w.term, ni, -(w.weight as i64));
                    }
                }
                for t in &existing.required_affinity {
                    if t.matches(pod) {
                        add(&mut scores, t, ni, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for w in &existing.preferred_affinity {
                    if w.term.matches(pod) {
                        add(&mut scores, &w.term, ni, w.weight as i64);
                    }
                }
                for w in &existing.preferred_anti_affinity {
                    if w.term.matches(pod) {
                        add(&mut scores, &w.term, ni, -(w.weight as i64));
                    }
                }
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, scores);
        Status::success()
    }

    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<Counts>(PRE_SCORE_KEY) else { return 0 };
        let labels = node.labels();
        s.iter().filter(|((k, v), _)| labels.get(k) == Some(v)).map(|(_, n)| *n).sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let (min, max) = scores.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 { MAX_NODE_SCORE * (*s - min) / diff } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod, pod_labels, with_labels};
    use k8s_openapi::api::core::v1::{
        Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_affinity(mut p: Pod, aff: Option<PodAffinityTerm>, anti: Option<PodAffinityTerm>) -> Pod {
        p.spec.as_mut().expect("spec").affinity = Some(Affinity {
            pod_affinity: aff.map(|t| PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![t]),
                ..Default::default()
            }),
            pod_anti_affinity: anti.map(|t| PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![t]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn zone_node(name: &str, zone: &str, pods: Vec<Pod>) -> NodeInfo {
        node_info(with_labels(node(name, "4", "4Gi"), &[(ZONE, zone)]), pods)
    }

    fn verdicts(snap: &Snapshot, p: &PodInfo) -> Vec<Status> {
        let mut st = CycleState::default();
        let pre = InterPodAffinity.pre_filter(&mut st, p, snap);
        if pre.code == crate::framework::Code::Skip {
            return snap.nodes.iter().map(|_| Status::success()).collect();
        }
        snap.nodes.iter().map(|n| InterPodAffinity.filter(&st, p, n)).collect()
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_in_the_domain() {
        let db = pod_labels(pod("db", "", ""), &[("app", "db")]);
        let snap = Snapshot::from_nodes(vec![
            zone_node("a1", "a", vec![db]),
            zone_node("a2", "a", vec![]),
            zone_node("b1", "b", vec![]),
        ]);
        let p = PodInfo::new(with_affinity(pod("web", "", ""), Some(term("db", ZONE)), None));
        let v = verdicts(&snap, &p);
        assert!(v[0].is_success() && v[1].is_success(), "zone a has a db pod: {v:?}");
        assert_eq!(v[2], Status::unresolvable(ERR_REASON_AFFINITY));
    }

    #[test]
    fn first_pod_of_a_self_selecting_group_may_go_anywhere() {
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", vec![])]);
        let p = PodInfo::new(with_affinity(
            pod_labels(pod("web", "", ""), &[("app", "web")]),
            Some(term("web", ZONE)),
            None,
        ));
        assert!(verdicts(&snap, &p)[0].is_success());
    }

    #[test]
    fn required_anti_affinity_avoids_domains_with_matching_pods() {
        let web = pod_labels(pod("w0", "", ""), &[("app", "web")]);
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", vec![web]), zone_node("b1", "b", vec![])]);
        let p = PodInfo::new(with_affinity(
            pod_labels(pod("w1", "", ""), &[("app", "web")]),
            None,
            Some(term("web", ZONE)),
        ));
        let v = verdicts(&snap, &p);
        assert_eq!(v[0], Status::unschedulable(ERR_REASON_ANTI_AFFINITY));
        assert!(v[1].is_success());
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_the_incoming_pod_away() {
        let loner = with_affinity(pod_labels(pod("loner", "", ""), &[("app", "loner")]), None, Some(term("web", ZONE)));
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", vec![loner]), zone_node("b1", "b", vec![])]);
        let p = PodInfo::new(pod_labels(pod("w", "", ""), &[("app", "web")]));
        let v = verdicts(&snap, &p);
        assert_eq!(v[0], Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY));
        assert!(v[1].is_success());
    }

    #[test]
    fn preferred_affinity_scores_domains_with_matching_pods() {
        let db = pod_labels(pod("db", "", ""), &[("app", "db")]);
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", vec![db]), zone_node("b1", "b", vec![])]);
        let mut p = pod("web", "", "");
        p.spec.as_mut().expect("spec").affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 5,
                    pod_affinity_term: term("db", ZONE),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = PodInfo::new(p);
        let mut st = CycleState::default();
        assert!(InterPodAffinity.pre_score(&mut st, &p, &snap, &[]).is_success());
        let mut s: Vec<i64> = snap.nodes.iter().map(|n| InterPodAffinity.score(&st, &p, n)).collect();
        InterPodAffinity.normalize(&st, &p, &mut s);
        assert_eq!(s, [100, 0]);
    }
}
