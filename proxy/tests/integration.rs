//! Every integration test of this crate, linked into one binary: a binary per file cost a
//! link and ~170 MB of disk each, which CI's disk and two cores could not afford.

mod netns;
mod support;
mod sync_bench;
mod watch;
