//! Every integration test of this crate, linked into one binary: a binary per file cost a
//! link and ~170 MB of disk each, which CI's disk and two cores could not afford.

mod cri;
mod e2e;
mod features;
mod node;
mod pod_startup_bench;
mod pods;
mod support;
