//! The scheduling framework (upstream `pkg/scheduler/framework`): the plugin interface and
//! its statuses, the per-cycle state, the scheduling queue, the cache and its snapshot, and
//! one scheduling cycle (PreFilter → Filter → PostFilter → PreScore → Score →
//! NormalizeScore; Reserve and Bind are done by `crate::scheduler`).

pub mod cache;
pub mod cycle;
pub mod queue;
pub mod resource;
pub mod types;

use std::any::Any;
use std::sync::Arc;

pub use cache::{Cache, Snapshot};
pub use types::{NodeInfo, PodInfo};

/// upstream `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// upstream `framework.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The node does not fit now; preempting pods on it might help.
    Unschedulable,
    /// The node does not fit and preemption cannot change that.
    UnschedulableAndUnresolvable,
    Error,
    /// PreFilter/PreScore: this plugin has nothing to check for this pod.
    Skip,
}

/// A plugin's verdict with upstream's reason strings (they end up in FailedScheduling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
}

impl Status {
    pub const fn success() -> Self {
        Status { code: Code::Success, reasons: Vec::new() }
    }
    pub const fn skip() -> Self {
        Status { code: Code::Skip, reasons: Vec::new() }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Status { code: Code::Unschedulable, reasons: vec![reason.into()] }
    }
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Status { code: Code::UnschedulableAndUnresolvable, reasons: vec![reason.into()] }
    }
    pub fn error(reason: impl Into<String>) -> Self {
        Status { code: Code::Error, reasons: vec![reason.into()] }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn is_rejection(&self) -> bool {
        matches!(self.code, Code::Unschedulable | Code::UnschedulableAndUnresolvable)
    }
    /// upstream `Status.Message`: the reasons joined by ", ".
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// Data plugins compute in PreFilter/PreScore and read back per node (upstream
/// `framework.CycleState`). Cloning is cheap (values are shared): preemption and nominated
/// pods clone it and let the plugins replace their entry in the copy (`add_pod`/`remove_pod`).
#[derive(Default, Clone)]
pub struct CycleState {
    data: Vec<(&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.retain(|(k, _)| *k != key);
        self.data.push((key, Arc::new(value)));
    }
    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.downcast_ref())
    }
}

/// A scheduling plugin. Every method has a do-nothing default; a plugin implements the
/// extension points it takes part in and the registry (`crate::plugins::REGISTRY`) says
/// which points those are.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Computes what Filter needs once per pod. A rejection here rejects every node; Skip
    /// means Filter has nothing to check for this pod and is not called.
    fn pre_filter(&self, _state: &mut CycleState, _pod: &PodInfo, _snap: &Snapshot) -> Status {
        Status::success()
    }

    fn filter(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }

    /// upstream PreFilterExtensions.AddPod: updates this plugin's PreFilter state as if
    /// `added` ran on `node` (preemption's reprieves, nominated pods). Plugins whose Filter
    /// reads only the NodeInfo need nothing here.
    fn add_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _added: &PodInfo, _node: &NodeInfo) {}

    /// upstream PreFilterExtensions.RemovePod: the state as if `removed` left `node`.
    fn remove_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _removed: &PodInfo, _node: &NodeInfo) {}

    /// Computes what Score needs once per pod, over the nodes that passed Filter; Skip means
    /// Score has nothing to say for this pod and is not called.
    fn pre_score(&self, _state: &mut CycleState, _pod: &PodInfo, _snap: &Snapshot, _nodes: &[&NodeInfo]) -> Status {
        Status::success()
    }

    fn score(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> i64 {
        0
    }

    /// Maps raw scores onto 0..=MAX_NODE_SCORE (upstream NormalizeScore).
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

/// upstream `helper.DefaultNormalizeScore`: scales so the best node gets 100 (or, reversed,
/// the worst gets 0 and the best 100).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}
