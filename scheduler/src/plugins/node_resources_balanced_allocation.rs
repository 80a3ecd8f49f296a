//! NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory would be used in
//! similar fractions after placing the pod (1 − standard deviation of the fractions).

use super::Handle;
use crate::framework::{CycleState, NodeInfo, Plugin, PodInfo, MAX_NODE_SCORE};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

pub fn new(_: &Handle) -> Box<dyn Plugin> {
    Box::new(BalancedAllocation)
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        // upstream: this plugin counts the requests as written (no non-zero defaults).
        let mut fractions = [0f64; 2];
        let mut n = 0;
        for (alloc, req) in [
            (node.allocatable.milli_cpu, node.requested.milli_cpu + pod.requests.milli_cpu),
            (node.allocatable.memory, node.requested.memory + pod.requests.memory),
        ] {
            if alloc == 0 {
                continue;
            }
            fractions[n] = (req as f64 / alloc as f64).min(1.0);
            n += 1;
        }
        let std = if n == 2 { ((fractions[0] - fractions[1]) / 2.0).abs() } else { 0.0 };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, node_info, pod};

    #[test]
    fn balanced_allocation_scores_by_fraction_difference() {
        let cases = [
            ("equal fractions", pod("p", "2", "2Gi"), 100),
            ("cpu half, memory none", pod("p", "2", ""), 75),
            ("cpu all, memory none", pod("p", "4", ""), 50),
            ("over capacity caps at 1", pod("p", "8", ""), 50),
        ];
        for (name, p, want) in cases {
            let ni = node_info(node("n", "4", "4Gi"), vec![]);
            assert_eq!(BalancedAllocation.score(&CycleState::default(), &PodInfo::new(p), &ni), want, "{name}");
        }
    }
}
