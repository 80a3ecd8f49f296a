//! TaintToleration: Filter rejects nodes with a NoSchedule/NoExecute taint the pod does not
//! tolerate; Score prefers nodes with fewer untolerated PreferNoSchedule taints.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::Handle;
use crate::framework::{default_normalize, CycleState, NodeInfo, Plugin, PodInfo, Status};

pub const NAME: &str = "TaintToleration";

pub struct TaintToleration;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(TaintToleration)
}

/// upstream `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref() {
        Some("Exists") => true,
        Some("Equal") | Some("") | None => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        Some(_) => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tols = pod.spec().tolerations.as_deref().unwrap_or(&[]);
        for taint in node.taints() {
            if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !tolerated(tols, taint) {
                return Status::unresolvable(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.as_deref().unwrap_or("")
                ));
            }
        }
        Status::success()
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        // upstream: only tolerations with an empty or PreferNoSchedule effect count here.
        let tols: Vec<&Toleration> = pod
            .spec()
            .tolerations
            .iter()
            .flatten()
            .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
            .collect();
        node.taints()
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t)))
            .count() as i64
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod, with_taint};

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()).filter(|k: &String| !k.is_empty()),
            operator: Some(op.into()),
            value: Some(value.into()).filter(|v: &String| !v.is_empty()),
            effect: Some(effect.into()).filter(|e: &String| !e.is_empty()),
            ..Default::default()
        }
    }

    fn with_tols(t: Vec<Toleration>) -> PodInfo {
        let mut p = pod("p", "", "");
        p.spec.as_mut().expect("spec").tolerations = Some(t);
        PodInfo::new(p)
    }

    #[test]
    fn taint_toleration_filter() {
        let tainted = || node_info(with_taint(node("n", "1", "1Gi"), "dedicated", "gpu", "NoSchedule"), vec![]);
        let cases = [
            ("untolerated NoSchedule taint", with_tols(vec![]), false),
            ("Equal toleration with the value", with_tols(vec![tol("dedicated", "Equal", "gpu", "NoSchedule")]), true),
            ("Equal toleration, other value", with_tols(vec![tol("dedicated", "Equal", "cpu", "NoSchedule")]), false),
            ("Exists toleration for the key", with_tols(vec![tol("dedicated", "Exists", "", "")]), true),
            ("empty key Exists tolerates everything", with_tols(vec![tol("", "Exists", "", "")]), true),
            ("toleration for another effect", with_tols(vec![tol("dedicated", "Exists", "", "NoExecute")]), false),
        ];
        for (name, p, ok) in cases {
            let st = TaintToleration.filter(&CycleState::default(), &p, &tainted());
            assert_eq!(st.is_success(), ok, "{name}");
            if !ok {
                assert_eq!(st.reasons, ["node(s) had untolerated taint {dedicated: gpu}"], "{name}");
            }
        }
    }

    #[test]
    fn prefer_no_schedule_taints_only_lower_the_score() {
        let clean = node_info(node("a", "1", "1Gi"), vec![]);
        let one = node_info(with_taint(node("b", "1", "1Gi"), "k", "v", "PreferNoSchedule"), vec![]);
        let two = node_info(
            with_taint(with_taint(node("c", "1", "1Gi"), "k", "v", "PreferNoSchedule"), "j", "", "PreferNoSchedule"),
            vec![],
        );
        let p = with_tols(vec![]);
        assert!(TaintToleration.filter(&CycleState::default(), &p, &two).is_success());
        let mut s: Vec<i64> =
            [&clean, &one, &two].iter().map(|n| TaintToleration.score(&CycleState::default(), &p, n)).collect();
        TaintToleration.normalize(&CycleState::default(), &p, &mut s);
        assert_eq!(s, [100, 50, 0]);
        let tolerant = with_tols(vec![tol("k", "Exists", "", "PreferNoSchedule")]);
        assert_eq!(TaintToleration.score(&CycleState::default(), &tolerant, &two), 1);
    }
}
