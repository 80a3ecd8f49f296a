//! Strategies for kinds with no behaviour of their own beyond the spec/status split.

use super::Strategy;

/// No status subresource, no generation (ConfigMap, Lease, …).
pub struct Plain;
impl Strategy for Plain {}

/// A status subresource but no spec generation (PersistentVolume, ResourceQuota).
pub struct WithStatus;
impl Strategy for WithStatus {
    fn status_subresource(&self) -> bool {
        true
    }
}

/// Spec + status with generation tracking (Ingress, PodDisruptionBudget, …).
pub struct SpecAndStatus;
impl Strategy for SpecAndStatus {
    fn status_subresource(&self) -> bool {
        true
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn prepare_for_create(&self, obj: &mut serde_json::Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
}
