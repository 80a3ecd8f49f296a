//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerated;
use super::Handle;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Status};

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON: &str = "node(s) were unschedulable";

pub struct NodeUnschedulable;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(NodeUnschedulable)
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let cordoned = node.node.as_ref().and_then(|n| n.spec.as_ref()).and_then(|s| s.unschedulable).unwrap_or(false);
        if !cordoned {
            return Status::success();
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            value: None,
            time_added: None,
        };
        if tolerated(pod.spec().tolerations.as_deref().unwrap_or(&[]), &taint) {
            return Status::success();
        }
        Status::unresolvable(ERR_REASON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn node_unschedulable_rejects_unless_tolerated() {
        let mut cordoned = node("n", "1", "1Gi");
        cordoned.spec.get_or_insert_with(Default::default).unschedulable = Some(true);
        let mut tolerating = pod("t", "", "");
        tolerating.spec.as_mut().expect("spec").tolerations = Some(vec![Toleration {
            key: Some("node.kubernetes.io/unschedulable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        let cases = [
            ("schedulable node", node_info(node("n", "1", "1Gi"), vec![]), pod("p", "", ""), true),
            ("cordoned node", node_info(cordoned.clone(), vec![]), pod("p", "", ""), false),
            ("cordoned node, tolerating pod", node_info(cordoned, vec![]), tolerating, true),
        ];
        for (name, ni, p, ok) in cases {
            let st = NodeUnschedulable.filter(&CycleState::default(), &PodInfo::new(p), &ni);
            assert_eq!(st.is_success(), ok, "{name}");
            if !ok {
                assert_eq!(st, Status::unresolvable(ERR_REASON), "{name}");
            }
        }
    }
}
