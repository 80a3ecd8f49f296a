//! DefaultPreemption (PostFilter): when no node fits a pod, find the node where removing the
//! fewest, least important lower-priority pods lets it fit (upstream `SelectVictimsOnNode`
//! and `pickOneNodeForPreemption`), preferring victims whose PodDisruptionBudgets allow the
//! disruption. Pure: the scheduler deletes the victims and sets `nominatedNodeName`.
//!
//! Each simulated removal and reprieve goes through the plugins' AddPod/RemovePod
//! extensions, so preemption also finds room that only spreading or (anti-)affinity blocked,
//! and pods already nominated to a node keep the room preemption freed for them.

use std::collections::BTreeMap;
use std::sync::Arc;

use apimachinery::labels::Selector;

use crate::framework::cycle::{FitError, Framework};
use crate::framework::{Code, CycleState, PodInfo, Snapshot};

pub const NAME: &str = "DefaultPreemption";
const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A PodDisruptionBudget as preemption needs it.
#[derive(Debug, Clone)]
pub struct Pdb {
    pub namespace: String,
    pub selector: Selector,
    pub disruptions_allowed: i32,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// upstream `PodEligibleToPreemptOthers` (the preemptionPolicy part).
pub fn eligible(pod: &PodInfo) -> Result<(), String> {
    if pod.spec().preemption_policy.as_deref() == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    Ok(())
}

/// Splits `pods` into those whose eviction would violate a budget and those it would not,
/// spending each budget's allowance in order (upstream `filterPodsWithPDBViolation`).
fn split_by_pdb(pods: Vec<Arc<PodInfo>>, pdbs: &[Pdb]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violates = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.namespace != p.namespace || pdb.selector.is_empty() || !pdb.selector.matches(p.labels()) {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(p)
        } else {
            ok.push(p)
        }
    }
    (violating, ok)
}

/// Runs preemption for `pod` after `err`. Ok: the node to nominate and the pods to evict.
/// Err: upstream's PostFilter message for the FailedScheduling event.
pub fn preempt(
    fw: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    snap: &Snapshot,
    err: &FitError,
    pdbs: &[Pdb],
) -> Result<Candidate, String> {
    eligible(pod).map_err(|m| format!("preemption: {m}"))?;
    let n = snap.len();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut potential: Vec<usize> = Vec::new();
    match &err.diagnosis.pre_filter {
        Some(st) if st.code == Code::UnschedulableAndUnresolvable => {
            *reasons.entry(NOT_HELPFUL).or_default() += n;
        }
        Some(_) => potential.extend(0..n),
        None => {
            for (i, st) in &err.diagnosis.node_statuses {
                if st.code == Code::UnschedulableAndUnresolvable {
                    *reasons.entry(NOT_HELPFUL).or_default() += 1;
                } else {
                    potential.push(*i);
                }
            }
        }
    }
    let mut candidates = Vec::new();
    for i in potential {
        let node = &snap.nodes[i];
        let lower: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
        if lower.is_empty() {
            *reasons.entry(NO_VICTIMS).or_default() += 1;
            continue;
        }
        // The what-if runs on copies: the node without its lower-priority pods, and the
        // PreFilter state (spreading counts, affinity domains) told of each removal.
        let mut ni = (**node).clone();
        let mut st = state.clone();
        let skip = &err.diagnosis.skip;
        for p in &lower {
            ni.remove_pod(&p.uid);
            fw.run_remove_pod(&mut st, pod, p, &ni, skip);
        }
        let nominated = snap.nominated_to(&node.name);
        if fw.filter_node(&st, pod, &ni, skip, nominated).is_some() {
            *reasons.entry(NO_VICTIMS).or_default() += 1;
            continue;
        }
        let mut lower = lower;
        // Most important first: they are the first to be given back their place.
        lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| start_time(a).cmp(&start_time(b))));
        let (violating, ok) = split_by_pdb(lower, pdbs);
        let mut victims = Vec::new();
        let mut pdb_violations = 0;
        for (p, violates) in violating.into_iter().map(|p| (p, true)).chain(ok.into_iter().map(|p| (p, false))) {
            ni.add_pod(p.clone());
            fw.run_add_pod(&mut st, pod, &p, &ni, skip);
            if fw.filter_node(&st, pod, &ni, skip, nominated).is_some() {
                ni.remove_pod(&p.uid);
                fw.run_remove_pod(&mut st, pod, &p, &ni, skip);
                if violates {
                    pdb_violations += 1;
                }
                victims.push(p);
            }
        }
        candidates.push(Candidate { node: node.name.clone(), victims, pdb_violations });
    }
    if candidates.is_empty() {
        let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
        parts.sort();
        return Err(format!("preemption: 0/{n} nodes are available: {}.", parts.join(", ")));
    }
    // upstream pickOneNodeForPreemption: fewest budget violations, then the lowest highest
    // victim priority, the lowest priority sum, the fewest victims.
    candidates.sort_by_key(|c| {
        let top = c.victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = c.victims.iter().map(|v| v.priority as i64 + i32::MAX as i64 + 1).sum();
        (c.pdb_violations, top, sum, c.victims.len())
    });
    Ok(candidates.swap_remove(0))
}

fn start_time(p: &PodInfo) -> i64 {
    p.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.as_microsecond()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::{default_framework, Handle, NoListers};
    use crate::testutil::{node, node_info, pod, pod_labels};
    use k8s_openapi::api::core::v1::Pod;
    use rand::SeedableRng;

    fn prio(mut p: Pod, priority: i32) -> Pod {
        p.spec.as_mut().expect("spec").priority = Some(priority);
        p
    }

    fn run(nodes: Vec<crate::framework::NodeInfo>, incoming: Pod, pdbs: &[Pdb]) -> Result<Candidate, String> {
        run_snap(Snapshot::from_nodes(nodes), incoming, pdbs)
    }

    fn run_snap(snap: Snapshot, incoming: Pod, pdbs: &[Pdb]) -> Result<Candidate, String> {
        let fw = default_framework(&Handle { listers: Arc::new(NoListers) }, 0);
        let p = PodInfo::new(incoming);
        let mut state = CycleState::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let err = fw.schedule_pod(&mut state, &p, &snap, &mut 0, &mut rng, None).expect_err("fits nowhere");
        preempt(&fw, &state, &p, &snap, &err, pdbs)
    }

    #[test]
    fn preemption_picks_the_node_with_the_fewest_lowest_priority_victims() {
        let nodes = vec![
            node_info(node("a", "2", "4Gi"), vec![prio(pod("a1", "1", ""), 5), prio(pod("a2", "1", ""), 5)]),
            node_info(node("b", "2", "4Gi"), vec![prio(pod("b1", "1", ""), 1), prio(pod("b2", "1", ""), 100)]),
            node_info(node("c", "2", "4Gi"), vec![prio(pod("c1", "1", ""), 3), prio(pod("c2", "1", ""), 3)]),
        ];
        let c = run(nodes, prio(pod("big", "1", ""), 10), &[]).expect("a candidate");
        assert_eq!(c.node, "b");
        assert_eq!(c.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["b1"]);
    }

    #[test]
    fn preemption_evicts_only_as_many_as_needed() {
        let nodes = vec![node_info(
            node("a", "3", "4Gi"),
            vec![prio(pod("a1", "1", ""), 1), prio(pod("a2", "1", ""), 2), prio(pod("a3", "1", ""), 3)],
        )];
        let c = run(nodes, prio(pod("p", "2", ""), 10), &[]).expect("a candidate");
        let mut names: Vec<&str> = c.victims.iter().map(|v| v.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["a1", "a2"], "the highest-priority pod is reprieved");
    }

    #[test]
    fn preemption_prefers_nodes_without_pdb_violations() {
        let nodes = vec![
            node_info(node("a", "1", "4Gi"), vec![prio(pod_labels(pod("a1", "1", ""), &[("app", "db")]), 1)]),
            node_info(node("b", "1", "4Gi"), vec![prio(pod("b1", "1", ""), 2)]),
        ];
        let pdb = Pdb {
            namespace: "default".into(),
            selector: Selector::parse("app=db").expect("valid"),
            disruptions_allowed: 0,
        };
        let c = run(nodes, prio(pod("p", "1", ""), 10), &[pdb]).expect("a candidate");
        assert_eq!(c.node, "b");
        assert_eq!(c.pdb_violations, 0);
    }

    #[test]
    fn preemption_reports_why_it_cannot_help() {
        let mut tainted = node("t", "4", "4Gi");
        tainted.spec.get_or_insert_with(Default::default).taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "k".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        }]);
        let nodes =
            vec![node_info(tainted, vec![]), node_info(node("a", "1", "4Gi"), vec![prio(pod("a1", "1", ""), 50)])];
        let err = run(nodes, prio(pod("p", "1", ""), 10), &[]).expect_err("no candidate");
        assert_eq!(
            err,
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, \
             1 Preemption is not helpful for scheduling."
        );
        let never = {
            let mut p = prio(pod("p", "8", ""), 10);
            p.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
            p
        };
        let err = run(vec![node_info(node("a", "1", "4Gi"), vec![])], never, &[]).expect_err("ineligible");
        assert_eq!(err, "preemption: not eligible due to preemptionPolicy=Never.");
    }

    fn victim_names(c: &Candidate) -> Vec<&str> {
        let mut names: Vec<&str> = c.victims.iter().map(|v| v.name.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn preemption_finds_room_that_only_topology_spread_blocked() {
        use k8s_openapi::api::core::v1::TopologySpreadConstraint;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let x = |name: &str, p: i32| prio(pod_labels(pod(name, "1", ""), &[("app", "x")]), p);
        // a holds two low-priority x pods; b is filled by an important pod that is not an x.
        let nodes = vec![
            node_info(node("a", "4", "4Gi"), vec![x("x1", 1), x("x2", 1)]),
            node_info(node("b", "2", "4Gi"), vec![prio(pod("y1", "2", ""), 100)]),
        ];
        let mut incoming = x("new", 10);
        incoming.spec.as_mut().expect("spec").topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        // On a, the skew would be 3 against b's 0; evicting one x still leaves 2 > 1.
        let c = run(nodes, incoming, &[]).expect("a candidate");
        assert_eq!(c.node, "a");
        assert_eq!(victim_names(&c), ["x1", "x2"]);
    }

    #[test]
    fn preemption_evicts_the_pod_the_incoming_pods_anti_affinity_rejects() {
        use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let nodes = vec![node_info(
            node("a", "4", "4Gi"),
            vec![prio(pod_labels(pod("db", "1", ""), &[("app", "db")]), 1), prio(pod("other", "1", ""), 1)],
        )];
        let mut incoming = prio(pod("p", "1", ""), 10);
        incoming.spec.as_mut().expect("spec").affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some([("app".to_string(), "db".to_string())].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = run(nodes, incoming, &[]).expect("a candidate");
        assert_eq!(victim_names(&c), ["db"], "only the pod the anti-affinity names goes");
    }

    #[test]
    fn room_nominated_to_a_more_important_pod_is_not_taken() {
        let mut snap = Snapshot::from_nodes(vec![node_info(node("a", "2", "4Gi"), vec![])]);
        let nominee = Arc::new(PodInfo::new(prio(pod("nominee", "2", ""), 100)));
        snap.nominated = Arc::new([("a".to_string(), vec![nominee])].into());
        let fw = default_framework(&Handle { listers: Arc::new(NoListers) }, 0);
        let rng = rand::rngs::StdRng::seed_from_u64(0);
        let schedule = |p: Pod| {
            let p = PodInfo::new(p);
            let mut state = CycleState::default();
            fw.schedule_pod(&mut state, &p, &snap, &mut 0, &mut rng.clone(), None).map(|r| r.node)
        };
        let err = schedule(prio(pod("low", "1", ""), 1)).expect_err("the room is the nominee's");
        assert!(err.to_string().contains("Insufficient cpu"), "{err}");
        assert_eq!(schedule(prio(pod("high", "1", ""), 200)).expect("fits"), "a", "a more important pod may");
        let err = run_snap(snap.clone(), prio(pod("x", "1", ""), 1), &[]).expect_err("no lower-priority pods");
        assert!(err.contains("No preemption victims"), "{err}");
    }
}
