//! Every integration test of this crate, linked into one binary: a binary per file cost a
//! link and ~170 MB of disk each, which CI's disk and two cores could not afford.

mod apply;
mod bad_input;
mod crash;
mod feature_gates;
mod kubectl;
mod kubelet_proxy;
mod limits;
mod openapi;
mod reads;
mod security;
mod semantics;
mod serviceaccount_admission;
mod serviceaccount_tokens;
mod storage;
mod support;
mod watch_consistency;
