//! Every integration test of this crate, linked into one binary: a binary per file cost a
//! link and ~170 MB of disk each, which CI's disk and two cores could not afford.

mod cluster;
mod daemonset;
mod jobs;
mod rollout;
mod services;
mod statefulset;
mod statefulset_storage;
mod storage;
