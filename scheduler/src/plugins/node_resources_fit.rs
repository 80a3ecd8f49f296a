//! NodeResourcesFit: Filter checks the pod's requests (init-container max rule and overhead
//! already applied in `PodInfo`) against what is left of the node's allocatable — cpu,
//! memory, ephemeral-storage, the pod count and extended resources; Score is upstream's
//! default LeastAllocated strategy on cpu and memory (weight 1 each), using the
//! non-zero-defaulted requests.

use super::Handle;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, Status, MAX_NODE_SCORE};

pub const NAME: &str = "NodeResourcesFit";

pub struct NodeResourcesFit;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(NodeResourcesFit)
}

/// upstream `fitsRequest`: the reasons the node is short ("Too many pods", "Insufficient cpu", ...).
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut out = Vec::new();
    let (req, alloc, used) = (&pod.requests, &node.allocatable, &node.requested);
    if node.pods.len() as i64 + 1 > alloc.allowed_pods {
        out.push("Too many pods".to_string());
    }
    if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        out.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && req.memory > alloc.memory - used.memory {
        out.push("Insufficient memory".to_string());
    }
    if req.ephemeral_storage > 0 && req.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage {
        out.push("Insufficient ephemeral-storage".to_string());
    }
    for (name, &q) in &req.scalar {
        if q > 0 && q > alloc.scalar(name) - used.scalar(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

/// upstream `leastRequestedScore`.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status { code: crate::framework::Code::Unschedulable, reasons }
        }
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let mut sum = 0;
        let mut weights = 0;
        for (alloc, req) in [
            (node.allocatable.milli_cpu, node.non_zero_cpu + pod.non_zero_cpu),
            (node.allocatable.memory, node.non_zero_memory + pod.non_zero_memory),
        ] {
            if alloc == 0 {
                continue;
            }
            sum += least_requested(req, alloc);
            weights += 1;
        }
        if weights == 0 {
            0
        } else {
            sum / weights
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn node_resources_fit_filter() {
        let mut gpu = pod("gpu", "", "");
        gpu.spec.as_mut().expect("spec").containers[0]
            .resources
            .as_mut()
            .expect("resources")
            .requests
            .as_mut()
            .expect("requests")
            .insert("example.com/gpu".into(), Quantity("1".into()));
        let mut full_pods = node("n", "4", "4Gi");
        full_pods
            .status
            .as_mut()
            .expect("status")
            .allocatable
            .as_mut()
            .expect("alloc")
            .insert("pods".into(), Quantity("1".into()));
        let cases: Vec<(&str, NodeInfo, PodInfo, Vec<&str>)> = vec![
            (
                "fits",
                node_info(node("n", "4", "4Gi"), vec![pod("a", "3", "3Gi")]),
                PodInfo::new(pod("p", "1", "1Gi")),
                vec![],
            ),
            (
                "insufficient cpu",
                node_info(node("n", "4", "4Gi"), vec![pod("a", "3", "")]),
                PodInfo::new(pod("p", "2", "")),
                vec!["Insufficient cpu"],
            ),
            (
                "insufficient cpu and memory",
                node_info(node("n", "1", "1Gi"), vec![]),
                PodInfo::new(pod("p", "2", "2Gi")),
                vec!["Insufficient cpu", "Insufficient memory"],
            ),
            (
                "too many pods",
                node_info(full_pods, vec![pod("a", "", "")]),
                PodInfo::new(pod("p", "", "")),
                vec!["Too many pods"],
            ),
            (
                "unknown extended resource",
                node_info(node("n", "4", "4Gi"), vec![]),
                PodInfo::new(gpu),
                vec!["Insufficient example.com/gpu"],
            ),
            (
                "zero request always fits",
                node_info(node("n", "1", "1Gi"), vec![pod("a", "1", "1Gi")]),
                PodInfo::new(pod("p", "", "")),
                vec![],
            ),
        ];
        for (name, ni, p, want) in cases {
            let st = NodeResourcesFit.filter(&CycleState::default(), &p, &ni);
            assert_eq!(st.reasons, want, "{name}");
        }
    }

    #[test]
    fn init_container_max_rule_and_overhead_decide_fit() {
        let mut p = pod("p", "1", "");
        let init = p.spec.as_ref().expect("spec").containers[0].clone();
        let mut big_init = init.clone();
        big_init
            .resources
            .as_mut()
            .expect("r")
            .requests
            .as_mut()
            .expect("q")
            .insert("cpu".into(), Quantity("3".into()));
        p.spec.as_mut().expect("spec").init_containers = Some(vec![big_init]);
        p.spec.as_mut().expect("spec").overhead = Some([("cpu".to_string(), Quantity("500m".into()))].into());
        let ni = node_info(node("n", "3", "4Gi"), vec![]);
        let st = NodeResourcesFit.filter(&CycleState::default(), &PodInfo::new(p), &ni);
        assert_eq!(st.reasons, ["Insufficient cpu"], "3 (init) + 0.5 (overhead) > 3");
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let p = PodInfo::new(pod("p", "1", "1Gi"));
        let empty = node_info(node("a", "4", "4Gi"), vec![]);
        let half = node_info(node("b", "4", "4Gi"), vec![pod("x", "1", "1Gi")]);
        assert_eq!(NodeResourcesFit.score(&CycleState::default(), &p, &empty), 75);
        assert_eq!(NodeResourcesFit.score(&CycleState::default(), &p, &half), 50);
        // upstream: a pod without requests counts as 100m / 200Mi.
        let be = PodInfo::new(pod("be", "", ""));
        assert_eq!(NodeResourcesFit.score(&CycleState::default(), &be, &empty), (97 + 95) / 2);
    }
}
