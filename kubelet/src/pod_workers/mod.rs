//! Pod workers: for each pod bound to this node, a plan is computed from the pod's spec and
//! what the runtime has (`plan`), then executed against the `ContainerRuntime`. Deciding is
//! pure and unit-tested by comparing plans; doing lives with the executor.

pub mod backoff;
pub mod manager;
pub mod plan;
pub mod sync;
