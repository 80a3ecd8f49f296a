//! The decision half of one StatefulSet sync, as upstream's `updateStatefulSet`
//! (`stateful_set_control.go`): from the set, its pods and claims and the current/update
//! revisions, the ordered steps to take and the status to report. Nothing here talks to the
//! API; `mod.rs` executes the steps in order.
//!
//! OrderedReady ("monotonic") stops at the first step that must wait: a pod is created only
//! when every lower ordinal is Running and Ready (and available), scale-down removes the
//! highest ordinal first and only when all others are healthy. Parallel does every replica's
//! step at once. Rolling updates delete pods at the old revision from the highest ordinal down
//! to `partition`, at most `maxUnavailable` unavailable at a time; the deleted pod comes back at
//! the update revision.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;

use super::utils::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The pod failed: recreated at its ordinal (event RecreatingFailedPod).
    Failed,
    /// The pod succeeded: recreated too (event RecreatingTerminatedPod).
    Succeeded,
    ScaleDown,
    Update,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create the pod's missing claims, then the pod, then set its claims' retention refs.
    Create(Box<Pod>),
    Delete(Arc<Pod>, DeleteReason),
    /// A Pending pod: create whichever of its claims are missing.
    CreateMissingClaims(Arc<Pod>),
    /// Restore identity/storage (pod update) and the claims' retention refs of a live pod.
    Update(Arc<Pod>),
    /// Set the claims' retention refs of a condemned pod before it goes.
    FixClaims(Arc<Pod>),
}

#[derive(Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: StatefulSetStatus,
}

/// What the decision reads.
pub struct Input<'a> {
    pub set: &'a StatefulSet,
    /// The pods the set controls (after claiming).
    pub pods: &'a [Arc<Pod>],
    /// The namespace's claims by name.
    pub claims: &'a BTreeMap<String, Arc<PersistentVolumeClaim>>,
    pub current: (&'a PodTemplateSpec, &'a str),
    pub update: (&'a PodTemplateSpec, &'a str),
    pub collision_count: i32,
    pub now: Timestamp,
    /// The MaxUnavailableStatefulSet feature gate (alpha, off by default in upstream 1.33).
    pub max_unavailable_gate: bool,
}

/// upstream processReplica: the step for the replica at slot `i`; true = stop here.
fn process_replica(input: &Input, monotonic: bool, replicas: &mut [Arc<Pod>], i: usize, steps: &mut Vec<Step>) -> bool {
    let set = input.set;
    let ord = start_ordinal(set) + i as i32;
    let min_ready = min_ready_seconds(set);
    // A finished pod already being deleted is waited for below like any terminating pod (upstream
    // deletes it again and fails the create on AlreadyExists until it is gone).
    let finished = is_failed(&replicas[i]) || is_succeeded(&replicas[i]);
    if is_created(&replicas[i]) && finished && !is_terminating(&replicas[i]) {
        let why = if is_failed(&replicas[i]) { DeleteReason::Failed } else { DeleteReason::Succeeded };
        steps.push(Step::Delete(replicas[i].clone(), why));
        replicas[i] = Arc::new(new_versioned_pod(set, input.current, input.update, ord));
    }
    let pod = replicas[i].clone();
    if !is_created(&pod) {
        if claim_is_stale(set, &pod, input.claims) {
            // The claim still belongs to a condemned predecessor; wait for it to go.
            return true;
        }
        steps.push(Step::Create(Box::new((*pod).clone())));
        // A new pod is neither running nor mismatched: OrderedReady waits for it, Parallel moves on.
        return monotonic;
    }
    if is_pending(&pod) && missing_claims(set, &pod, input.claims) {
        steps.push(Step::CreateMissingClaims(pod.clone()));
    }
    if monotonic
        && (is_terminating(&pod)
            || !is_running_and_ready(&pod)
            || !is_running_and_available(&pod, min_ready, input.now))
    {
        return true;
    }
    if is_terminating(&pod) {
        return false;
    }
    if !(identity_matches(set, &pod) && storage_matches(set, &pod) && claims_match_policy(set, &pod, input.claims)) {
        steps.push(Step::Update(pod));
    }
    false
}

fn missing_claims(set: &StatefulSet, pod: &Pod, claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>) -> bool {
    ordinal(pod).is_some_and(|o| {
        claims_for(set, o).iter().any(|(_, c)| !claims.contains_key(c.metadata.name.as_deref().unwrap_or_default()))
    })
}

/// upstream processCondemned; true = stop (OrderedReady deletes one condemned pod per sync).
fn process_condemned(
    input: &Input,
    monotonic: bool,
    first_unhealthy: Option<&Arc<Pod>>,
    pod: &Arc<Pod>,
    steps: &mut Vec<Step>,
) -> bool {
    if is_terminating(pod) {
        return monotonic;
    }
    let is_first_unhealthy = first_unhealthy.is_some_and(|u| Arc::ptr_eq(u, pod));
    let min_ready = min_ready_seconds(input.set);
    if monotonic
        && !is_first_unhealthy
        && (!is_running_and_ready(pod) || !is_running_and_available(pod, min_ready, input.now))
    {
        return true;
    }
    steps.push(Step::Delete(pod.clone(), DeleteReason::ScaleDown));
    monotonic
}

fn status_of(input: &Input, replicas: &[Arc<Pod>], condemned: &[Arc<Pod>]) -> StatefulSetStatus {
    let mut st = StatefulSetStatus {
        observed_generation: input.set.metadata.generation,
        current_revision: Some(input.current.1.to_string()),
        update_revision: Some(input.update.1.to_string()),
        collision_count: Some(input.collision_count),
        ..Default::default()
    };
    let all: Vec<&Arc<Pod>> = replicas.iter().chain(condemned).collect();
    count_status(&mut st, &all, min_ready_seconds(input.set), input.current.1, input.update.1, input.now);
    st
}

/// upstream updateStatefulSet, rolling updates with or without the MaxUnavailableStatefulSet gate.
pub fn plan(input: &Input) -> Plan {
    let set = input.set;
    let start = start_ordinal(set);
    let count = replicas(set).max(0) as usize;
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count];
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for p in input.pods {
        match ordinal(p) {
            Some(_) if in_ordinal_range(set, p) => {
                let idx = (ordinal(p).unwrap_or(start) - start) as usize;
                slots[idx] = Some(p.clone());
            }
            Some(_) => condemned.push(p.clone()),
            None => {}
        }
    }
    let mut replicas: Vec<Arc<Pod>> = slots
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.unwrap_or_else(|| Arc::new(new_versioned_pod(set, input.current, input.update, start + i as i32)))
        })
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(p).unwrap_or(0)));
    let first_unhealthy = replicas.iter().chain(condemned.iter()).find(|p| !is_healthy(p)).cloned();

    let mut steps = Vec::new();
    if set.metadata.deletion_timestamp.is_some() {
        let status = status_of(input, &replicas, &condemned);
        return Plan { steps, status };
    }
    let monotonic = !allows_burst(set);

    for i in 0..replicas.len() {
        if process_replica(input, monotonic, &mut replicas, i, &mut steps) {
            let status = status_of(input, &replicas, &condemned);
            return Plan { steps, status };
        }
    }
    for p in &condemned {
        if !claims_match_policy(set, p, input.claims) {
            steps.push(Step::FixClaims(p.clone()));
        }
    }
    for p in &condemned {
        if process_condemned(input, monotonic, first_unhealthy.as_ref(), p, &mut steps) {
            let status = status_of(input, &replicas, &condemned);
            return Plan { steps, status };
        }
    }
    let mut status = status_of(input, &replicas, &condemned);
    if is_on_delete(set) {
        return Plan { steps, status };
    }

    let update_min = partition(set).max(0) as usize;
    if !input.max_unavailable_gate {
        // Without the gate, upstream replaces one pod at a time from the top ordinal down to
        // the partition, and waits while the pod it reached is unhealthy.
        for target in (update_min..replicas.len()).rev() {
            let p = &replicas[target];
            if pod_revision(p) != input.update.1 && !is_terminating(p) {
                steps.push(Step::Delete(p.clone(), DeleteReason::Update));
                status.current_replicas = Some(status.current_replicas.unwrap_or(0) - 1);
                break;
            }
            if !is_healthy(p) {
                break;
            }
        }
        return Plan { steps, status };
    }

    // Rolling update: count what is unavailable across all replicas, then delete old-revision
    // pods from the top ordinal down to the partition, up to maxUnavailable.
    let min_ready = min_ready_seconds(set);
    let unavailable =
        replicas.iter().filter(|p| !is_healthy(p) || !is_running_and_available(p, min_ready, input.now)).count() as i32;
    let max_unavailable = max_unavailable(set);
    if unavailable >= max_unavailable {
        return Plan { steps, status };
    }
    let mut to_delete = max_unavailable - unavailable;
    for target in (update_min..replicas.len()).rev() {
        if to_delete == 0 {
            break;
        }
        let p = &replicas[target];
        if pod_revision(p) != input.update.1 && !is_terminating(p) {
            steps.push(Step::Delete(p.clone(), DeleteReason::Update));
            status.current_replicas = Some(status.current_replicas.unwrap_or(0) - 1);
            to_delete -= 1;
        }
    }
    Plan { steps, status }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn set(replicas: i32, extra: serde_json::Value) -> StatefulSet {
        let mut spec = json!({
            "replicas": replicas, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid", "generation": 2},
            "spec": spec,
        }))
        .expect("set")
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "c", "image": image}]}}))
        .expect("template")
    }

    /// A pod as the store holds it: `phase`, ready or not, at `revision`.
    fn pod(s: &StatefulSet, ord: i32, phase: &str, ready: bool, revision: &str) -> Arc<Pod> {
        let mut p = new_pod(s, &template("v1"), ord);
        p.metadata.uid = Some(format!("pod-uid-{ord}"));
        p.metadata.labels.get_or_insert_with(Default::default).insert(REVISION_LABEL.into(), revision.into());
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(Timestamp::from_second(0).expect("ts"))),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn terminating(p: Arc<Pod>) -> Arc<Pod> {
        let mut p = (*p).clone();
        p.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).expect("ts")));
        Arc::new(p)
    }

    fn run(s: &StatefulSet, pods: &[Arc<Pod>]) -> Plan {
        run_with(s, pods, &BTreeMap::new())
    }

    fn run_with(s: &StatefulSet, pods: &[Arc<Pod>], claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>) -> Plan {
        run_gated(s, pods, claims, true)
    }

    fn run_gated(
        s: &StatefulSet,
        pods: &[Arc<Pod>],
        claims: &BTreeMap<String, Arc<PersistentVolumeClaim>>,
        max_unavailable_gate: bool,
    ) -> Plan {
        let (cur, upd) = (template("v1"), template("v2"));
        plan(&Input {
            set: s,
            pods,
            claims,
            current: (&cur, "web-v1"),
            update: (&upd, "web-v2"),
            collision_count: 0,
            now: Timestamp::from_second(100).expect("ts"),
            max_unavailable_gate,
        })
    }

    /// Steps as short strings: `create web-0@web-v2`, `delete web-2 (ScaleDown)`, ...
    fn show(p: &Plan) -> Vec<String> {
        let n = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        p.steps
            .iter()
            .map(|s| match s {
                Step::Create(p) => format!("create {}@{}", n(p), pod_revision(p)),
                Step::Delete(p, why) => format!("delete {} ({why:?})", n(p)),
                Step::CreateMissingClaims(p) => format!("claims {}", n(p)),
                Step::Update(p) => format!("update {}", n(p)),
                Step::FixClaims(p) => format!("fix-claims {}", n(p)),
            })
            .collect()
    }

    #[test]
    fn parent_and_ordinal_parse_the_trailing_number() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time_in_ordinal_order() {
        let s = set(3, json!({}));
        assert_eq!(show(&run(&s, &[])), ["create web-0@web-v2"]);
        let p0 = pod(&s, 0, "Pending", false, "web-v2");
        assert!(show(&run(&s, &[p0])).is_empty(), "web-0 not ready yet: wait");
        let p0 = pod(&s, 0, "Running", true, "web-v2");
        assert_eq!(show(&run(&s, std::slice::from_ref(&p0))), ["create web-1@web-v2"]);
        let p1 = pod(&s, 1, "Running", true, "web-v2");
        assert_eq!(show(&run(&s, &[p0, p1])), ["create web-2@web-v2"]);
    }

    #[test]
    fn parallel_creates_every_missing_pod_at_once() {
        let s = set(3, json!({"podManagementPolicy": "Parallel"}));
        let p1 = pod(&s, 1, "Pending", false, "web-v2");
        assert_eq!(show(&run(&s, &[p1])), ["create web-0@web-v2", "create web-2@web-v2"]);
    }

    #[test]
    fn ordinals_start_honours_spec_ordinals_start() {
        let s = set(2, json!({"ordinals": {"start": 5}}));
        let p = run(&s, &[]);
        assert_eq!(show(&p), ["create web-5@web-v2"]);
        let Step::Create(pod) = &p.steps[0] else { panic!("a create") };
        assert_eq!(pod.metadata.labels.as_ref().expect("labels")[POD_INDEX_LABEL], "5");
    }

    #[test]
    fn new_pods_have_a_stable_identity_and_their_claims_as_volumes() {
        let s = set(
            1,
            json!({"volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}),
        );
        let p = new_pod(&s, &template("v1"), 0);
        assert_eq!(p.metadata.name.as_deref(), Some("web-0"));
        let l = p.metadata.labels.clone().expect("labels");
        assert_eq!((l[POD_NAME_LABEL].as_str(), l[POD_INDEX_LABEL].as_str()), ("web-0", "0"));
        let spec = p.spec.clone().expect("spec");
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-0"), Some("web")));
        let v = &spec.volumes.expect("volumes")[0];
        assert_eq!(v.name, "data");
        assert_eq!(v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()), Some("data-web-0"));
        assert!(identity_matches(&s, &p) && storage_matches(&s, &p));
        let claims = claims_for(&s, 3);
        assert_eq!(claims[0].1.metadata.name.as_deref(), Some("data-web-3"));
        assert_eq!(claims[0].1.metadata.labels.as_ref().expect("labels")["app"], "web", "selector labels");
        let o = &p.metadata.owner_references.expect("owner")[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str(), o.controller), ("StatefulSet", "set-uid", Some(true)));
    }

    #[test]
    fn scale_down_deletes_the_highest_ordinal_first_one_at_a_time() {
        let s = set(1, json!({}));
        let pods: Vec<_> = (0..3).map(|i| pod(&s, i, "Running", true, "web-v2")).collect();
        assert_eq!(show(&run(&s, &pods)), ["delete web-2 (ScaleDown)"]);
        let pods = [pods[0].clone(), pods[1].clone(), terminating(pods[2].clone())];
        assert!(show(&run(&s, &pods)).is_empty(), "waits for web-2 to terminate");
        let s = set(1, json!({"podManagementPolicy": "Parallel"}));
        let pods: Vec<_> = (0..3).map(|i| pod(&s, i, "Running", true, "web-v2")).collect();
        assert_eq!(show(&run(&s, &pods)), ["delete web-2 (ScaleDown)", "delete web-1 (ScaleDown)"]);
    }

    #[test]
    fn ordered_scale_down_waits_for_unhealthy_replicas_but_removes_an_unhealthy_top_pod() {
        let s = set(1, json!({}));
        let pods = [pod(&s, 0, "Running", false, "web-v2"), pod(&s, 1, "Running", true, "web-v2")];
        assert!(show(&run(&s, &pods)).is_empty(), "web-0 is not ready: nothing is removed");
        let pods = [
            pod(&s, 0, "Running", true, "web-v2"),
            pod(&s, 1, "Running", false, "web-v2"),
            pod(&s, 2, "Pending", false, "web-v2"),
        ];
        assert_eq!(show(&run(&s, &pods)), ["delete web-2 (ScaleDown)"], "the first unhealthy condemned pod may go");
    }

    #[test]
    fn a_failed_pod_is_deleted_and_recreated_with_the_same_name() {
        let s = set(2, json!({}));
        let pods = [pod(&s, 0, "Running", true, "web-v2"), pod(&s, 1, "Failed", false, "web-v2")];
        assert_eq!(show(&run(&s, &pods)), ["delete web-1 (Failed)", "create web-1@web-v2"]);
        let pods = [pods[0].clone(), terminating(pods[1].clone())];
        assert!(show(&run(&s, &pods)).is_empty(), "waits for the failed pod to be gone");
    }

    #[test]
    fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let s = set(3, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
        let old: Vec<_> = (0..3).map(|i| pod(&s, i, "Running", true, "web-v1")).collect();
        let p = run(&s, &old);
        assert_eq!(show(&p), ["delete web-2 (Update)"]);
        assert_eq!(p.status.current_replicas, Some(2));
        // web-2 back at v2 but not ready: wait.
        let pods = [old[0].clone(), old[1].clone(), pod(&s, 2, "Running", false, "web-v2")];
        assert!(show(&run(&s, &pods)).is_empty());
        // web-2 ready: web-1 next; web-0 stays below the partition.
        let pods = [old[0].clone(), old[1].clone(), pod(&s, 2, "Running", true, "web-v2")];
        assert_eq!(show(&run(&s, &pods)), ["delete web-1 (Update)"]);
        let pods = [old[0].clone(), pod(&s, 1, "Running", true, "web-v2"), pod(&s, 2, "Running", true, "web-v2")];
        let p = run(&s, &pods);
        assert!(show(&p).is_empty());
        assert_eq!((p.status.updated_replicas, p.status.current_replicas), (Some(2), Some(1)));
    }

    #[test]
    fn a_missing_pod_below_the_partition_is_made_from_the_current_revision() {
        let s = set(2, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
        assert_eq!(show(&run(&s, &[])), ["create web-0@web-v1"]);
    }

    #[test]
    fn max_unavailable_deletes_several_at_once_counting_the_unavailable() {
        let s = set(4, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}));
        let old: Vec<_> = (0..4).map(|i| pod(&s, i, "Running", true, "web-v1")).collect();
        assert_eq!(show(&run(&s, &old)), ["delete web-3 (Update)", "delete web-2 (Update)"]);
        let s = set(
            4,
            json!({"podManagementPolicy": "Parallel",
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}),
        );
        let pods = [old[0].clone(), old[1].clone(), old[2].clone(), pod(&s, 3, "Running", false, "web-v2")];
        assert_eq!(show(&run(&s, &pods)), ["delete web-2 (Update)"], "one already unavailable");
    }

    #[test]
    fn without_the_gate_max_unavailable_is_ignored_and_one_pod_goes_at_a_time() {
        let s = set(4, json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}));
        let old: Vec<_> = (0..4).map(|i| pod(&s, i, "Running", true, "web-v1")).collect();
        let none = BTreeMap::new();
        let p = run_gated(&s, &old, &none, false);
        assert_eq!(show(&p), ["delete web-3 (Update)"]);
        assert_eq!(p.status.current_replicas, Some(3));
        // The replaced top pod is back but not ready yet: the update waits for it.
        let mut pods = old.clone();
        pods[3] = pod(&s, 3, "Running", false, "web-v2");
        assert!(show(&run_gated(&s, &pods, &none, false)).is_empty());
        // Ready now: the next one down goes.
        pods[3] = pod(&s, 3, "Running", true, "web-v2");
        assert_eq!(show(&run_gated(&s, &pods, &none, false)), ["delete web-2 (Update)"]);
    }

    #[test]
    fn on_delete_never_deletes_for_an_update() {
        let s = set(2, json!({"updateStrategy": {"type": "OnDelete"}}));
        let old: Vec<_> = (0..2).map(|i| pod(&s, i, "Running", true, "web-v1")).collect();
        let p = run(&s, &old);
        assert!(show(&p).is_empty());
        assert_eq!((p.status.current_replicas, p.status.updated_replicas), (Some(2), Some(0)));
        assert_eq!(show(&run(&s, &old[..1])), ["create web-1@web-v2"], "a deleted pod comes back updated");
    }

    #[test]
    fn status_counts_ready_available_current_and_updated() {
        let s = set(3, json!({"minReadySeconds": 1000}));
        let pods = [
            pod(&s, 0, "Running", true, "web-v1"),
            pod(&s, 1, "Running", true, "web-v2"),
            pod(&s, 2, "Pending", false, "web-v2"),
        ];
        let st = run(&s, &pods).status;
        assert_eq!(st.replicas, 3);
        assert_eq!((st.ready_replicas, st.available_replicas), (Some(2), Some(0)), "minReadySeconds not reached");
        assert_eq!((st.current_replicas, st.updated_replicas), (Some(1), Some(2)));
        assert_eq!((st.current_revision.as_deref(), st.update_revision.as_deref()), (Some("web-v1"), Some("web-v2")));
        assert_eq!((st.observed_generation, st.collision_count), (Some(2), Some(0)));
        let mut st = st;
        complete_rolling_update(&s, &mut st);
        assert_eq!(st.current_revision.as_deref(), Some("web-v1"), "not all updated");
        let mut done = StatefulSetStatus {
            replicas: 3,
            ready_replicas: Some(3),
            updated_replicas: Some(3),
            current_replicas: Some(0),
            current_revision: Some("web-v1".into()),
            update_revision: Some("web-v2".into()),
            ..Default::default()
        };
        complete_rolling_update(&s, &mut done);
        assert_eq!((done.current_revision.as_deref(), done.current_replicas), (Some("web-v2"), Some(3)));
    }

    fn claim(name: &str, owners: &[(&str, &str, &str)]) -> Arc<PersistentVolumeClaim> {
        let refs: Vec<_> = owners
            .iter()
            .map(|(kind, name, uid)| {
                json!({"apiVersion": if *kind == "Pod" { "v1" } else { "apps/v1" }, "kind": kind, "name": name,
                       "uid": uid, "controller": true, "blockOwnerDeletion": true})
            })
            .collect();
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}}))
                .expect("claim"),
        )
    }

    fn with_claims(policy: serde_json::Value, replicas: i32) -> StatefulSet {
        set(
            replicas,
            json!({"persistentVolumeClaimRetentionPolicy": policy,
                   "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}),
        )
    }

    fn owner_kinds(refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]) -> Vec<&str> {
        refs.iter().map(|r| r.kind.as_str()).collect()
    }

    #[test]
    fn retention_refs_follow_the_policy() {
        let s = with_claims(json!({"whenDeleted": "Delete", "whenScaled": "Retain"}), 2);
        let p0 = pod(&s, 0, "Running", true, "web-v2");
        let bare = claim("data-web-0", &[]);
        assert!(!claim_owner_up_to_date(&bare, &s, &p0));
        assert_eq!(owner_kinds(&claim_refs_for_policy(&bare, &s, &p0)), ["StatefulSet"]);
        assert!(claim_owner_up_to_date(&claim("data-web-0", &[("StatefulSet", "web", "set-uid")]), &s, &p0));

        let s = with_claims(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}), 1);
        let p1 = pod(&s, 1, "Running", true, "web-v2");
        assert!(!claim_owner_up_to_date(&claim("data-web-1", &[]), &s, &p1), "scaled away: needs the pod ref");
        assert_eq!(owner_kinds(&claim_refs_for_policy(&claim("data-web-1", &[]), &s, &p1)), ["Pod"]);
        assert!(claim_owner_up_to_date(&claim("data-web-0", &[]), &s, &p0), "in range: no refs");

        let s = with_claims(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}), 1);
        let owned = claim("data-web-0", &[("StatefulSet", "web", "set-uid")]);
        assert!(!claim_owner_up_to_date(&owned, &s, &p0), "Retain drops our refs");
        assert!(claim_refs_for_policy(&owned, &s, &p0).is_empty());
    }

    #[test]
    fn scale_down_under_when_scaled_delete_fixes_claims_before_deleting() {
        let s = with_claims(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}), 1);
        let pods = [pod(&s, 0, "Running", true, "web-v2"), pod(&s, 1, "Running", true, "web-v2")];
        let claims: BTreeMap<_, _> = [
            ("data-web-0".to_string(), claim("data-web-0", &[])),
            ("data-web-1".to_string(), claim("data-web-1", &[])),
        ]
        .into();
        assert_eq!(show(&run_with(&s, &pods, &claims)), ["fix-claims web-1", "delete web-1 (ScaleDown)"]);
    }

    #[test]
    fn a_claim_still_owned_by_a_condemned_pod_blocks_recreation() {
        let s = with_claims(json!({"whenDeleted": "Retain", "whenScaled": "Delete"}), 2);
        let pods = [pod(&s, 0, "Running", true, "web-v2")];
        let claims: BTreeMap<_, _> =
            [("data-web-1".to_string(), claim("data-web-1", &[("Pod", "web-1", "old-uid")]))].into();
        assert!(show(&run_with(&s, &pods, &claims)).is_empty());
        assert_eq!(show(&run(&s, &pods)), ["create web-1@web-v2"]);
    }

    #[test]
    fn a_deleted_set_does_nothing() {
        let mut s = set(2, json!({}));
        s.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).expect("ts")));
        assert!(run(&s, &[]).steps.is_empty());
    }
}
