//! NodeName: a pod that names a node (`spec.nodeName`) fits only that node.

use super::Handle;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(NodeName)
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        match pod.spec().node_name.as_deref() {
            Some(n) if !n.is_empty() => Status::success(),
            _ => Status::skip(),
        }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.spec().node_name.as_deref() {
            Some(n) if !n.is_empty() && n != node.name => Status::unresolvable(ERR_REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};

    #[test]
    fn node_name_matches_only_the_named_node() {
        let ni = node_info(node("n1", "1", "1Gi"), vec![]);
        let named = |n: &str| {
            let mut p = pod("p", "", "");
            p.spec.as_mut().expect("spec").node_name = Some(n.into());
            PodInfo::new(p)
        };
        let cases = [
            ("no node name", PodInfo::new(pod("p", "", "")), true),
            ("same", named("n1"), true),
            ("other", named("n2"), false),
        ];
        for (name, p, ok) in cases {
            assert_eq!(NodeName.filter(&CycleState::default(), &p, &ni).is_success(), ok, "{name}");
        }
    }
}
