//! Every integration test of this crate, linked into one binary: a binary per file cost a
//! link and ~170 MB of disk each, which CI's disk and two cores could not afford.

mod common;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod gc_and_namespace;
mod informer_cache;
mod job;
mod kubectl_delete;
mod leader_election;
mod namespace_defaults;
mod namespace_many_kinds;
mod node_lifecycle;
mod persistentvolume;
mod replicaset;
mod statefulset;
