//! core/v1 Node: cluster-scoped, status written by the kubelet (kept on create).

use crate::registry::Strategy;

pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
}
