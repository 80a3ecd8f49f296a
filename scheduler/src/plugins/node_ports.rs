//! NodePorts: a pod's `hostPort`s must be free on the node (same protocol and port conflict
//! when either address is the wildcard or both are equal).

use super::Handle;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(NodePorts)
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Snapshot) -> Status {
        if pod.host_ports.is_empty() {
            Status::skip()
        } else {
            Status::success()
        }
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let clash = pod.host_ports.iter().any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if clash {
            Status::unschedulable(ERR_REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};
    use k8s_openapi::api::core::v1::{ContainerPort, Pod};

    fn with_port(name: &str, proto: &str, ip: &str, port: i32) -> Pod {
        let mut p = pod(name, "", "");
        p.spec.as_mut().expect("spec").containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(port),
            host_ip: Some(ip.into()).filter(|i: &String| !i.is_empty()),
            protocol: Some(proto.into()),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn node_ports_conflicts() {
        let cases = [
            ("same port, both wildcard", with_port("a", "TCP", "", 8080), with_port("b", "TCP", "", 8080), false),
            ("same port, other protocol", with_port("a", "UDP", "", 8080), with_port("b", "TCP", "", 8080), true),
            (
                "same port, different IPs",
                with_port("a", "TCP", "127.0.0.1", 8080),
                with_port("b", "TCP", "127.0.0.2", 8080),
                true,
            ),
            (
                "same port, wildcard vs IP",
                with_port("a", "TCP", "0.0.0.0", 8080),
                with_port("b", "TCP", "127.0.0.2", 8080),
                false,
            ),
            ("other port", with_port("a", "TCP", "", 8080), with_port("b", "TCP", "", 8081), true),
        ];
        for (name, existing, incoming, ok) in cases {
            let ni = node_info(node("n", "1", "1Gi"), vec![existing]);
            let st = NodePorts.filter(&CycleState::default(), &PodInfo::new(incoming), &ni);
            assert_eq!(st.is_success(), ok, "{name}");
        }
    }
}
