//! PodTopologySpread: hard constraints (`whenUnsatisfiable: DoNotSchedule`) filter nodes whose
//! domain would exceed `maxSkew` over the least-loaded domain; soft ones (`ScheduleAnyway`),
//! or upstream's default system constraints (hostname maxSkew 3, zone maxSkew 5) with the
//! selector of the pod's Services/controllers when the pod has none, score nodes in
//! less-loaded domains higher. Only nodes that match the pod's node affinity count
//! (`nodeAffinityPolicy: Honor`, the default); taints are ignored (`nodeTaintsPolicy: Ignore`).

use std::collections::HashMap;

use apimachinery::labels::{Operator, Requirement, Selector};
use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node_affinity::pod_matches_node;
use super::{Handle, Listers};
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status, MAX_NODE_SCORE};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

pub struct PodTopologySpread {
    listers: std::sync::Arc<dyn Listers>,
}

pub fn new(h: &Handle) -> Box<dyn Plugin> {
    Box::new(PodTopologySpread { listers: h.listers.clone() })
}

#[derive(Clone)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: Selector,
    min_domains: i64,
}

fn parse(c: &TopologySpreadConstraint, pod: &PodInfo) -> Constraint {
    let mut selector = c
        .label_selector
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| Selector::from_label_selector(&v).ok())
        .unwrap_or_else(Selector::nothing);
    // upstream matchLabelKeys: the pod's own values for these keys join the selector.
    for k in c.match_label_keys.iter().flatten() {
        if let Some(v) = pod.labels().get(k) {
            if let Ok(r) = Requirement::new(k.as_str(), Operator::In, vec![v.clone()]) {
                selector = selector.with_requirement(r);
            }
        }
    }
    Constraint {
        max_skew: c.max_skew as i64,
        topology_key: c.topology_key.clone(),
        selector,
        min_domains: c.min_domains.unwrap_or(1) as i64,
    }
}

fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.spec()
        .topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| parse(c, pod))
        .collect()
}

/// Pods on `node` in the pod's namespace that `sel` selects (terminating ones excluded, as
/// upstream's `countPodsMatchSelector`).
fn count_matching(node: &NodeInfo, namespace: &str, sel: &Selector) -> i64 {
    node.pods
        .iter()
        .filter(|p| p.namespace == namespace && p.pod.metadata.deletion_timestamp.is_none() && sel.matches(p.labels()))
        .count() as i64
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.labels().contains_key(&c.topology_key))
}

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

#[derive(Clone)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Matching pods per (constraint index, domain value).
    counts: HashMap<(usize, String), i64>,
    /// Per constraint: the smallest count over its domains, and how many domains there are.
    min: Vec<i64>,
    domains: Vec<usize>,
}

struct PreScoreState {
    constraints: Vec<Constraint>,
    counts: HashMap<(usize, String), i64>,
    weights: Vec<f64>,
}

/// upstream `updateWithPod`: `other` joins (n = 1) or leaves (n = -1) `node`; counts and
/// each constraint's minimum follow. Domains stay: they come from the nodes, not the pods.
fn update_state(state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, n: i64) {
    let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else { return };
    if other.namespace != pod.namespace
        || other.pod.metadata.deletion_timestamp.is_some()
        || !pod_matches_node(pod, node)
        || !has_all_keys(node, &s.constraints)
    {
        return;
    }
    let mut s = s.clone();
    for (i, c) in s.constraints.iter().enumerate() {
        if c.selector.matches(other.labels()) {
            *s.counts.entry((i, node.labels()[&c.topology_key].clone())).or_default() += n;
        }
    }
    for (i, m) in s.min.iter_mut().enumerate() {
        *m = s.counts.iter().filter(|((ci, _), _)| *ci == i).map(|(_, v)| *v).min().unwrap_or(0);
    }
    state.write(PRE_FILTER_KEY, s);
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot) -> Status {
        let cs = constraints(pod, "DoNotSchedule");
        if cs.is_empty() {
            return Status::skip();
        }
        let mut counts: HashMap<(usize, String), i64> = HashMap::new();
        for ni in &snap.nodes {
            if !pod_matches_node(pod, ni) || !has_all_keys(ni, &cs) {
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                let v = ni.labels()[&c.topology_key].clone();
                *counts.entry((i, v)).or_default() += count_matching(ni, &pod.namespace, &c.selector);
            }
        }
        let mut min = vec![i64::MAX; cs.len()];
        let mut domains = vec![0usize; cs.len()];
        for ((i, _), n) in &counts {
            min[*i] = min[*i].min(*n);
            domains[*i] += 1;
        }
        for m in &mut min {
            if *m == i64::MAX {
                *m = 0;
            }
        }
        state.write(PRE_FILTER_KEY, PreFilterState { constraints: cs, counts, min, domains });
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
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels().get(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let self_match = i64::from(c.selector.matches(pod.labels()));
            let matching = s.counts.get(&(i, value.clone())).copied().unwrap_or(0);
            // upstream minDomains: with fewer domains than asked for, the global minimum is 0.
            let min = if (s.domains[i] as i64) < c.min_domains { 0 } else { s.min[i] };
            if matching + self_match - min > c.max_skew {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }

    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snap: &Snapshot, nodes: &[&NodeInfo]) -> Status {
        let mut cs = constraints(pod, "ScheduleAnyway");
        if cs.is_empty() && pod.spec().topology_spread_constraints.as_ref().is_none_or(|c| c.is_empty()) {
            // upstream's default system constraints, with the selector of whatever selects the pod.
            let Some(sel) = self.listers.default_selector(&pod.pod) else { return Status::skip() };
            cs = vec![
                Constraint { max_skew: 3, topology_key: HOSTNAME.into(), selector: sel.clone(), min_domains: 1 },
                Constraint { max_skew: 5, topology_key: ZONE.into(), selector: sel, min_domains: 1 },
            ];
            // upstream: a system default only applies to nodes that have its key at all.
            cs.retain(|c| nodes.iter().any(|n| n.labels().contains_key(&c.topology_key)));
        }
        if cs.is_empty() {
            return Status::skip();
        }
        let mut counts: HashMap<(usize, String), i64> = HashMap::new();
        let mut domain_sets: Vec<std::collections::HashSet<&str>> = vec![Default::default(); cs.len()];
        for n in nodes.iter().filter(|n| has_all_keys(n, &cs)) {
            for (i, c) in cs.iter().enumerate() {
                domain_sets[i].insert(n.labels()[&c.topology_key].as_str());
            }
        }
        for ni in &snap.nodes {
            if !pod_matches_node(pod, ni) || !has_all_keys(ni, &cs) {
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                // upstream: hostname domains are counted per candidate node in Score instead.
                if c.topology_key == HOSTNAME {
                    continue;
                }
                let v = &ni.labels()[&c.topology_key];
                if domain_sets[i].contains(v.as_str()) {
                    *counts.entry((i, v.clone())).or_default() += count_matching(ni, &pod.namespace, &c.selector);
                }
            }
        }
        let weights = domain_sets.iter().map(|d| ((d.len() + 2) as f64).ln()).collect();
        state.write(PRE_SCORE_KEY, PreScoreState { constraints: cs, counts, weights });
        Status::success()
    }

    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else { return 0 };
        if !has_all_keys(node, &s.constraints) {
            return -1;
        }
        let mut score = 0f64;
        for (i, c) in s.constraints.iter().enumerate() {
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(node, &pod.namespace, &c.selector)
            } else {
                s.counts.get(&(i, node.labels()[&c.topology_key].clone())).copied().unwrap_or(0)
            };
            score += (cnt + c.max_skew - 1) as f64 * s.weights[i];
        }
        score.round() as i64
    }

    /// upstream: fewer matching pods is better; nodes without the keys (scored -1 above) get 0.
    fn normalize(&self, state: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        if state.read::<PreScoreState>(PRE_SCORE_KEY).is_none() {
            return;
        }
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            if *s < 0 {
                *s = 0;
            } else if max == 0 {
                *s = MAX_NODE_SCORE;
            } else {
                *s = MAX_NODE_SCORE * (max + min - *s) / max;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::NoListers;
    use crate::testutil::{node, node_info, pod, pod_labels, with_labels};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spread(key: &str, skew: i32, when: &str) -> PodInfo {
        let mut p = pod_labels(pod("new", "", ""), &[("app", "web")]);
        p.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        PodInfo::new(p)
    }

    fn web(n: usize) -> Vec<k8s_openapi::api::core::v1::Pod> {
        (0..n).map(|i| pod_labels(pod(&format!("w{i}"), "", ""), &[("app", "web")])).collect()
    }

    fn zone_node(name: &str, zone: &str, pods: usize) -> NodeInfo {
        node_info(with_labels(node(name, "4", "4Gi"), &[(ZONE, zone)]), web(pods))
    }

    fn plugin() -> PodTopologySpread {
        PodTopologySpread { listers: std::sync::Arc::new(NoListers) }
    }

    #[test]
    fn hard_constraint_filters_domains_over_max_skew() {
        let snap =
            Snapshot::from_nodes(vec![zone_node("a1", "a", 2), zone_node("a2", "a", 0), zone_node("b1", "b", 1)]);
        let p = spread(ZONE, 1, "DoNotSchedule");
        let mut st = CycleState::default();
        assert!(plugin().pre_filter(&mut st, &p, &snap).is_success());
        let verdict = |n: &str| plugin().filter(&st, &p, snap.get(n).expect("node"));
        assert_eq!(verdict("a1"), Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH), "zone a: 2+1-1 > 1");
        assert_eq!(verdict("a2"), Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH), "same zone");
        assert!(verdict("b1").is_success(), "zone b: 1+1-1 <= 1");
    }

    #[test]
    fn node_without_the_topology_key_is_unresolvable() {
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", 0), node_info(node("bare", "4", "4Gi"), vec![])]);
        let p = spread(ZONE, 1, "DoNotSchedule");
        let mut st = CycleState::default();
        plugin().pre_filter(&mut st, &p, &snap);
        assert_eq!(
            plugin().filter(&st, &p, snap.get("bare").expect("node")),
            Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
        );
    }

    #[test]
    fn pod_without_constraints_skips_the_filter() {
        let snap = Snapshot::from_nodes(vec![zone_node("a1", "a", 0)]);
        assert_eq!(
            plugin().pre_filter(&mut CycleState::default(), &PodInfo::new(pod("p", "", "")), &snap),
            Status::skip()
        );
    }

    #[test]
    fn soft_constraint_scores_emptier_domains_higher() {
        let snap =
            Snapshot::from_nodes(vec![zone_node("a1", "a", 3), zone_node("b1", "b", 0), zone_node("c1", "c", 1)]);
        let p = spread(ZONE, 1, "ScheduleAnyway");
        let nodes: Vec<&NodeInfo> = snap.nodes.iter().map(|n| &**n).collect();
        let mut st = CycleState::default();
        assert!(plugin().pre_score(&mut st, &p, &snap, &nodes).is_success());
        let mut s: Vec<i64> = nodes.iter().map(|n| plugin().score(&st, &p, n)).collect();
        plugin().normalize(&st, &p, &mut s);
        assert!(s[1] > s[2] && s[2] > s[0], "fewer matching pods, higher score: {s:?}");
        assert_eq!(s[1], 100);
    }
}
