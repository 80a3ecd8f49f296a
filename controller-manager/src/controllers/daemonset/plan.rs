//! The DaemonSet controller's decisions, pure: which nodes get a pod and which pods go
//! (upstream `podsShouldBeOnNode`), how far a rolling update may go (upstream `rollingUpdate`
//! with and without surge), and the status counts. The controller feeds them the nodes, the
//! claimed pods keyed by target node, and the current revision's hash, then does what they say.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use super::eligibility::Fit;
use crate::controllers::deployment::util::scaled_value;
use crate::controllers::owner::{is_available, is_ready};

/// upstream `apps.DefaultDaemonSetUniqueLabelKey` (= ControllerRevisionHashLabelKey).
pub const HASH_LABEL: &str = "controller-revision-hash";

pub type NodePods = BTreeMap<String, Vec<Arc<Pod>>>;

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref()?.get(HASH_LABEL).map(String::as_str)
}

/// upstream `util.IsPodUpdated` (the template-generation half is for DaemonSets from before
/// ControllerRevisions and is not carried).
pub fn is_updated(p: &Pod, hash: &str) -> bool {
    !hash.is_empty() && hash_of(p) == Some(hash)
}

fn scheduled(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

/// upstream `podByCreationTimestampAndPhase`: scheduled first, then oldest, then by name.
pub fn sort_pods(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        scheduled(b).cmp(&scheduled(a)).then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
    });
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

/// What `manage` should do on each node.
#[derive(Debug, Default)]
pub struct ManagePlan {
    /// Nodes that need a daemon pod.
    pub create_on: Vec<String>,
    /// Pods to delete outright (extra, misscheduled, on a node that is gone).
    pub delete: Vec<Arc<Pod>>,
    /// Failed daemon pods (with their node): deleted unless the node's backoff says wait.
    pub failed: Vec<(String, Arc<Pod>)>,
}

/// upstream `manage` over all nodes: `podsShouldBeOnNode` per node, then unscheduled pods
/// pinned to nodes that no longer exist (the scheduler will never place them, pod GC never
/// sees them). `allows_surge` is upstream `util.AllowsSurge`.
pub fn manage(
    fits: &[(String, Fit)],
    node_pods: &NodePods,
    hash: &str,
    allows_surge: bool,
    min_ready_seconds: i32,
    now: Timestamp,
) -> ManagePlan {
    let mut plan = ManagePlan::default();
    for (node, fit) in fits {
        let pods = node_pods.get(node).map(Vec::as_slice).unwrap_or(&[]);
        let exists = !pods.is_empty();
        if fit.should_run && !exists {
            plan.create_on.push(node.clone());
        } else if fit.should_continue_running {
            let mut running = Vec::new();
            for p in pods {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if phase(p) == Some("Failed") {
                    plan.failed.push((node.clone(), p.clone()));
                } else {
                    running.push(p.clone());
                }
            }
            if running.len() <= 1 {
                continue;
            }
            sort_pods(&mut running);
            if !allows_surge {
                // Keep the oldest, as upstream.
                plan.delete.extend(running.into_iter().skip(1));
                continue;
            }
            // With surge a node may hold one old and one new pod while the new one comes up;
            // anything beyond the oldest of each goes.
            let (mut oldest_new, mut oldest_old) = (None, None);
            for p in running {
                let slot = if is_updated(&p, hash) { &mut oldest_new } else { &mut oldest_old };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(p);
                }
            }
            if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                if !is_ready(&old) || is_available(&new, min_ready_seconds, now) {
                    plan.delete.push(old);
                }
            }
        } else if exists {
            plan.delete.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).cloned());
        }
    }
    // upstream getUnscheduledPodsWithoutNode
    for (node, pods) in node_pods {
        if !fits.iter().any(|(n, _)| n == node) {
            plan.delete.extend(pods.iter().filter(|p| !scheduled(p)).cloned());
        }
    }
    plan
}

/// upstream `util.UnavailableCount` and `util.SurgeCount` for `desired` nodes; both round up.
/// Zero when the strategy is not RollingUpdate.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let Some(strategy) = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()) else { return (0, 0) };
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return (0, 0);
    }
    let Some(ru) = strategy.rolling_update.as_ref() else { return (0, 0) };
    let scaled = |v: Option<&IntOrString>| v.map(|v| scaled_value(v, desired, true).max(0)).unwrap_or(0);
    let (surge, unavailable) = (scaled(ru.max_surge.as_ref()), scaled(ru.max_unavailable.as_ref()));
    // upstream updatedDesiredNodeCounts: an impossible 0/0 means one may be unavailable.
    if desired > 0 && surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// upstream `findUpdatedPodsOnNode`: the node's one new and one old pod, or `None` when it has
/// more than one of either (the manage loop sorts that out first).
#[allow(clippy::type_complexity)]
fn updated_and_old(pods: &[Arc<Pod>], hash: &str) -> Option<(Option<Arc<Pod>>, Option<Arc<Pod>>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let slot = if is_updated(p, hash) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.clone());
    }
    Some((new, old))
}

/// What one rolling-update step does.
#[derive(Debug, Default, PartialEq)]
pub struct RollingStep {
    /// Old pods to delete (names).
    pub delete: Vec<String>,
    /// Nodes that get a new pod next to their old one (surge only).
    pub create_on: Vec<String>,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// upstream `rollingUpdate`. `node_pods` has an entry (maybe empty) for every node that
/// should run a pod, plus the nodes holding pods; `should_run` answers for a node name.
#[allow(clippy::too_many_arguments)]
pub fn rolling_update(
    node_pods: &NodePods,
    should_run: &dyn Fn(&str) -> bool,
    hash: &str,
    max_surge: i32,
    max_unavailable: i32,
    desired: i32,
    min_ready_seconds: i32,
    now: Timestamp,
) -> RollingStep {
    let available = |p: &Pod| is_available(p, min_ready_seconds, now);
    let mut step = RollingStep::default();
    if max_surge == 0 {
        // Delete just enough old pods to stay within maxUnavailable.
        let mut unavailable = 0;
        let mut must_replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in node_pods.values() {
            match updated_and_old(pods, hash) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(&old) {
                        // An old pod that is down anyway is replaced without counting.
                        must_replace.push(name(&old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name(&old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        step.delete = must_replace;
        step.delete.extend(candidates.into_iter().take(room));
        return step;
    }
    // Surge: a new pod is created next to an old one, and the old one goes when the new one is
    // available; at most maxSurge old available pods are being replaced at once.
    let mut surging = 0;
    let mut num_available = 0;
    let mut should_not_run = Vec::new();
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in node_pods {
        let Some((new, old)) = updated_and_old(pods, hash) else {
            surging += 1;
            continue;
        };
        if old.as_deref().is_some_and(available) || new.as_deref().is_some_and(available) {
            num_available += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(&old) {
                    if !should_run(node) {
                        should_not_run.push(name(&old));
                        continue;
                    }
                    allowed.push(node.clone());
                } else if surging < max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if !available(&new) {
                    surging += 1;
                    continue;
                }
                step.delete.push(name(&old));
            }
        }
    }
    // Pods on nodes that no longer want one go only while enough others stay available.
    let deletable = (num_available - desired).clamp(0, should_not_run.len() as i32) as usize;
    step.delete.extend(should_not_run.into_iter().take(deletable));
    let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
    step.create_on = allowed;
    step.create_on.extend(candidates.into_iter().take(room));
    step
}

/// upstream `updateDaemonSetStatus`'s counting. `node_pods` holds the claimed pods by target
/// node (terminal pods being deleted left out); the oldest pod of a node is the one counted.
pub fn status(
    ds: &DaemonSet,
    fits: &[(String, Fit)],
    node_pods: &NodePods,
    hash: &str,
    observe_generation: bool,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let mut st = ds.status.clone().unwrap_or_default();
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
    for (node, fit) in fits {
        let mut pods = node_pods.get(node).cloned().unwrap_or_default();
        if !fit.should_run {
            if !pods.is_empty() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        if pods.is_empty() {
            continue;
        }
        current += 1;
        sort_pods(&mut pods);
        let p = &pods[0];
        if is_ready(p) {
            ready += 1;
            if is_available(p, min_ready, now) {
                available += 1;
            }
        }
        if is_updated(p, hash) {
            updated += 1;
        }
    }
    st.desired_number_scheduled = desired;
    st.current_number_scheduled = current;
    st.number_misscheduled = misscheduled;
    st.number_ready = ready;
    st.number_available = Some(available);
    st.updated_number_scheduled = Some(updated);
    st.number_unavailable = Some(desired - available);
    if observe_generation {
        st.observed_generation = ds.metadata.generation;
    }
    st
}

/// The nodes in `nodes` with their fit for `spec`.
pub fn fits(nodes: &[Arc<Node>], spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, Fit)> {
    nodes
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), super::eligibility::node_should_run(spec, n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 10_000;

    /// A daemon pod on `node` with revision `hash`, created at `created`; ready since 0 or not.
    fn pod(name: &str, node: &str, hash: &str, created: i64, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {HASH_LABEL: hash},
                             "creationTimestamp": Timestamp::from_second(created).expect("ts").to_string()},
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                           "lastTransitionTime": "1970-01-01T00:00:00Z"}]},
            }))
            .expect("pod"),
        )
    }

    fn failed(name: &str, node: &str) -> Arc<Pod> {
        let mut p = (*pod(name, node, "h1", 1, false)).clone();
        p.status.as_mut().expect("status").phase = Some("Failed".into());
        Arc::new(p)
    }

    const RUN: Fit = Fit { should_run: true, should_continue_running: true };
    const STAY: Fit = Fit { should_run: false, should_continue_running: true };
    const NO: Fit = Fit { should_run: false, should_continue_running: false };

    fn names(v: &[Arc<Pod>]) -> Vec<String> {
        v.iter().map(|p| name(p)).collect()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).expect("ts")
    }

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "ds", "generation": 4},
            "spec": {"selector": {}, "template": {}, "updateStrategy": strategy}}))
        .expect("ds")
    }

    #[test]
    fn manage_creates_where_missing_and_removes_where_unwanted() {
        let fits = vec![("a".into(), RUN), ("b".into(), RUN), ("c".into(), STAY), ("d".into(), NO)];
        let mut np = NodePods::new();
        np.insert("b".into(), vec![pod("b1", "b", "h1", 1, true)]);
        np.insert("c".into(), vec![pod("c1", "c", "h1", 1, true)]);
        np.insert("d".into(), vec![pod("d1", "d", "h1", 1, true)]);
        let mut pinned = (*pod("gone1", "", "h1", 1, false)).clone();
        pinned.spec.as_mut().expect("spec").node_name = None;
        np.insert("gone".into(), vec![Arc::new(pinned), pod("gone2", "gone", "h1", 1, true)]);
        let plan = manage(&fits, &np, "h1", false, 0, now());
        assert_eq!(plan.create_on, ["a"]);
        assert_eq!(names(&plan.delete), ["d1", "gone1"], "the bound pod on a gone node is pod GC's");
        assert!(plan.failed.is_empty());
    }

    #[test]
    fn manage_keeps_the_oldest_of_duplicates_and_reports_failed_pods() {
        let fits = vec![("a".into(), RUN), ("b".into(), RUN)];
        let mut np = NodePods::new();
        np.insert("a".into(), vec![pod("young", "a", "h1", 5, true), pod("old", "a", "h1", 2, true)]);
        np.insert("b".into(), vec![failed("bf", "b")]);
        let plan = manage(&fits, &np, "h1", false, 0, now());
        assert_eq!(names(&plan.delete), ["young"]);
        assert_eq!(plan.failed.iter().map(|(n, p)| (n.as_str(), name(p))).collect::<Vec<_>>(), [("b", "bf".into())]);
        assert!(plan.create_on.is_empty(), "the failed pod is replaced once it is deleted");
    }

    #[test]
    fn manage_with_surge_keeps_old_until_new_is_available() {
        let fits = vec![("a".into(), RUN)];
        let mut np = NodePods::new();
        np.insert("a".into(), vec![pod("old", "a", "h1", 1, true), pod("new", "a", "h2", 2, false)]);
        assert!(manage(&fits, &np, "h2", true, 0, now()).delete.is_empty());
        np.insert("a".into(), vec![pod("old", "a", "h1", 1, true), pod("new", "a", "h2", 2, true)]);
        assert_eq!(names(&manage(&fits, &np, "h2", true, 0, now()).delete), ["old"]);
        np.insert("a".into(), vec![pod("old", "a", "h1", 1, false), pod("new", "a", "h2", 2, false)]);
        assert_eq!(names(&manage(&fits, &np, "h2", true, 0, now()).delete), ["old"], "an unready old pod goes");
    }

    #[test]
    fn surge_and_unavailable_scale_percentages_up_and_default_to_one_unavailable() {
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}));
        assert_eq!(surge_and_unavailable(&d, 15), (0, 2));
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}));
        assert_eq!(surge_and_unavailable(&d, 5), (2, 0));
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}));
        assert_eq!(surge_and_unavailable(&d, 3), (0, 1));
        let d = ds(json!({"type": "OnDelete"}));
        assert_eq!(surge_and_unavailable(&d, 3), (0, 0));
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 3}}));
        assert_eq!(surge_and_unavailable(&d, 5), (0, 3));
    }

    fn four_old(ready: [bool; 4]) -> NodePods {
        ["a", "b", "c", "d"]
            .iter()
            .zip(ready)
            .map(|(n, r)| (n.to_string(), vec![pod(&format!("{n}-old"), n, "h1", 1, r)]))
            .collect()
    }

    #[test]
    fn rolling_update_deletes_up_to_max_unavailable_old_pods() {
        let np = four_old([true; 4]);
        let step = rolling_update(&np, &|_| true, "h2", 0, 2, 4, 0, now());
        assert_eq!(step, RollingStep { delete: vec!["a-old".into(), "b-old".into()], create_on: vec![] });
    }

    #[test]
    fn rolling_update_counts_missing_and_unready_new_pods_against_max_unavailable() {
        let mut np = four_old([true; 4]);
        np.insert("a".into(), vec![pod("a-new", "a", "h2", 5, false)]);
        np.insert("e".into(), vec![]);
        let step = rolling_update(&np, &|_| true, "h2", 0, 2, 5, 0, now());
        assert!(step.delete.is_empty(), "two unavailable already: {step:?}");
        np.insert("a".into(), vec![pod("a-new", "a", "h2", 5, true)]);
        let step = rolling_update(&np, &|_| true, "h2", 0, 2, 5, 0, now());
        assert_eq!(step.delete, ["b-old"]);
    }

    #[test]
    fn rolling_update_replaces_unavailable_old_pods_regardless() {
        let np = four_old([true, false, true, false]);
        let step = rolling_update(&np, &|_| true, "h2", 0, 1, 4, 0, now());
        assert_eq!(step.delete, ["b-old", "d-old", "a-old"]);
    }

    #[test]
    fn rolling_update_waits_for_min_ready_seconds() {
        let mut np = NodePods::new();
        np.insert("a".into(), vec![pod("a-new", "a", "h2", 5, true)]);
        np.insert("b".into(), vec![pod("b-old", "b", "h1", 1, true)]);
        // The new pod has been ready for 5 s, the old one since 0.
        let mut fresh = (*np["a"][0]).clone();
        let cond = &mut fresh.status.as_mut().and_then(|s| s.conditions.as_mut()).expect("conditions")[0];
        cond.last_transition_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::from_second(NOW - 5).expect("ts")));
        np.insert("a".into(), vec![Arc::new(fresh)]);
        assert!(rolling_update(&np, &|_| true, "h2", 0, 1, 2, 10, now()).delete.is_empty());
        assert_eq!(rolling_update(&np, &|_| true, "h2", 0, 1, 2, 5, now()).delete, ["b-old"]);
    }

    #[test]
    fn surge_creates_up_to_max_surge_and_deletes_old_once_new_is_available() {
        let mut np = four_old([true; 4]);
        let step = rolling_update(&np, &|_| true, "h2", 2, 0, 4, 0, now());
        assert_eq!(step, RollingStep { delete: vec![], create_on: vec!["a".into(), "b".into()] });
        np.get_mut("a").expect("a").push(pod("a-new", "a", "h2", 5, true));
        np.get_mut("b").expect("b").push(pod("b-new", "b", "h2", 5, false));
        let step = rolling_update(&np, &|_| true, "h2", 2, 0, 4, 0, now());
        assert_eq!(step, RollingStep { delete: vec!["a-old".into()], create_on: vec!["c".into()] });
    }

    #[test]
    fn surge_replaces_an_unavailable_old_pod_at_once_and_drops_it_where_unwanted() {
        let np = four_old([false, true, true, true]);
        let step = rolling_update(&np, &|_| true, "h2", 1, 0, 4, 0, now());
        assert_eq!(step.create_on, ["a", "b"]);
        // The unwanted node's pod goes only while enough pods elsewhere are available.
        let step = rolling_update(&np, &|n| n != "a", "h2", 1, 0, 3, 0, now());
        assert_eq!(step, RollingStep { delete: vec![], create_on: vec!["b".into()] });
        let step = rolling_update(&np, &|n| n != "a", "h2", 1, 0, 2, 0, now());
        assert_eq!(step, RollingStep { delete: vec!["a-old".into()], create_on: vec!["b".into()] });
    }

    #[test]
    fn status_counts_as_kubectl_rollout_status_reads_them() {
        let d = ds(json!({"type": "RollingUpdate"}));
        let fits = vec![("a".into(), RUN), ("b".into(), RUN), ("c".into(), RUN), ("d".into(), NO)];
        let mut np = NodePods::new();
        np.insert("a".into(), vec![pod("a1", "a", "h2", 1, true)]);
        np.insert("b".into(), vec![pod("b1", "b", "h1", 1, true), pod("b2", "b", "h2", 3, false)]);
        np.insert("d".into(), vec![pod("d1", "d", "h2", 1, true)]);
        let st = status(&d, &fits, &np, "h2", true, now());
        assert_eq!(
            (st.desired_number_scheduled, st.current_number_scheduled, st.number_misscheduled, st.number_ready),
            (3, 2, 1, 2)
        );
        assert_eq!(
            (st.number_available, st.updated_number_scheduled, st.number_unavailable),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(st.observed_generation, Some(4));
        assert_eq!(status(&d, &fits, &np, "h2", false, now()).observed_generation, None);
    }
}
