//! NodeAffinity: Filter applies `spec.nodeSelector` and the required node affinity terms
//! (ORed terms of ANDed requirements; In, NotIn, Exists, DoesNotExist, Gt, Lt; matchFields on
//! `metadata.name`); Score sums the weights of the preferred terms a node matches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use super::Handle;
use crate::framework::{default_normalize, CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(NodeAffinity)
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // upstream: Gt/Lt need exactly one integer value and an integer label.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else { return false };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else { return false };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// upstream `nodeaffinity.NodeSelectorTerm` matching: every expression on labels and every
/// field (only `metadata.name`) must match; an empty term matches nothing.
pub fn term_matches(t: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// A node selector (ORed terms) against a node.
pub fn node_selector_matches(sel: &NodeSelector, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    sel.node_selector_terms.iter().any(|t| term_matches(t, labels, node_name))
}

/// upstream `RequiredNodeAffinity.Match`: nodeSelector and required affinity both hold.
pub fn pod_matches_node(pod: &PodInfo, node: &NodeInfo) -> bool {
    let spec = pod.spec();
    let labels = node.labels();
    if let Some(sel) = spec.node_selector.as_ref() {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    match spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    {
        Some(req) => node_selector_matches(req, labels, &node.name),
        None => true,
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        let spec = pod.spec();
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
        if spec.node_selector.as_ref().is_none_or(|s| s.is_empty()) && required.is_none() {
            return Status::skip();
        }
        Status::success()
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod_matches_node(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }

    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot, _: &[&NodeInfo]) -> Status {
        let has_preferred = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .is_some_and(|p| !p.is_empty());
        if has_preferred {
            Status::success()
        } else {
            Status::skip()
        }
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(pref) = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
        else {
            return 0;
        };
        pref.iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, node.labels(), &node.name))
            .map(|p| p.weight as i64)
            .sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod, with_labels};
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity as NA, PreferredSchedulingTerm};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> PodInfo {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").affinity = Some(Affinity {
            node_affinity: Some(NA {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector { node_selector_terms: terms }),
                ..Default::default()
            }),
            ..Default::default()
        });
        PodInfo::new(p)
    }

    fn exprs(r: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm { match_expressions: Some(r), match_fields: None }
    }

    #[test]
    fn node_affinity_filter_operators() {
        let n = node_info(with_labels(node("n1", "1", "1Gi"), &[("zone", "a"), ("gen", "5")]), vec![]);
        let cases = [
            ("In matches", with_required(vec![exprs(vec![req("zone", "In", &["a", "b"])])]), true),
            ("In misses", with_required(vec![exprs(vec![req("zone", "In", &["b"])])]), false),
            ("NotIn on absent label", with_required(vec![exprs(vec![req("rack", "NotIn", &["x"])])]), true),
            ("Exists", with_required(vec![exprs(vec![req("zone", "Exists", &[])])]), true),
            ("DoesNotExist", with_required(vec![exprs(vec![req("zone", "DoesNotExist", &[])])]), false),
            ("Gt", with_required(vec![exprs(vec![req("gen", "Gt", &["4"])])]), true),
            ("Lt", with_required(vec![exprs(vec![req("gen", "Lt", &["5"])])]), false),
            ("Gt on a non-integer label", with_required(vec![exprs(vec![req("zone", "Gt", &["1"])])]), false),
            (
                "terms are ORed",
                with_required(vec![exprs(vec![req("zone", "In", &["b"])]), exprs(vec![req("zone", "In", &["a"])])]),
                true,
            ),
            (
                "requirements are ANDed",
                with_required(vec![exprs(vec![req("zone", "In", &["a"]), req("gen", "In", &["4"])])]),
                false,
            ),
            ("empty term matches nothing", with_required(vec![NodeSelectorTerm::default()]), false),
            (
                "matchFields metadata.name",
                with_required(vec![NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
                }]),
                true,
            ),
        ];
        for (name, p, ok) in cases {
            let st = NodeAffinity.filter(&CycleState::default(), &p, &n);
            assert_eq!(st.is_success(), ok, "{name}");
            if !ok {
                assert_eq!(st, Status::unresolvable(ERR_REASON_POD));
            }
        }
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let n = node_info(with_labels(node("n1", "1", "1Gi"), &[("disk", "ssd")]), vec![]);
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
        assert!(NodeAffinity.filter(&CycleState::default(), &PodInfo::new(p.clone()), &n).is_success());
        p.spec.as_mut().expect("spec").node_selector = Some([("disk".to_string(), "hdd".to_string())].into());
        assert!(!NodeAffinity.filter(&CycleState::default(), &PodInfo::new(p), &n).is_success());
    }

    #[test]
    fn preferred_terms_score_by_weight_normalized_to_100() {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").affinity = Some(Affinity {
            node_affinity: Some(NA {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm { weight: 10, preference: exprs(vec![req("zone", "In", &["a"])]) },
                    PreferredSchedulingTerm { weight: 30, preference: exprs(vec![req("disk", "In", &["ssd"])]) },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = PodInfo::new(p);
        let nodes = [
            node_info(with_labels(node("a", "1", "1Gi"), &[("zone", "a")]), vec![]),
            node_info(with_labels(node("b", "1", "1Gi"), &[("zone", "a"), ("disk", "ssd")]), vec![]),
            node_info(node("c", "1", "1Gi"), vec![]),
        ];
        let mut s: Vec<i64> = nodes.iter().map(|n| NodeAffinity.score(&CycleState::default(), &p, n)).collect();
        assert_eq!(s, [10, 40, 0]);
        NodeAffinity.normalize(&CycleState::default(), &p, &mut s);
        assert_eq!(s, [25, 100, 0]);
    }
}
