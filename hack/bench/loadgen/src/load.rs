//! The closed-loop driver every throughput measurement uses: N tasks, each issuing one
//! operation after another, until a deadline or an operation budget runs out.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::stats::Summary;

/// What one closed-loop run did.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Operations that succeeded.
    pub ops: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Summary,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        crate::stats::rate(self.ops, self.elapsed)
    }
}

/// Runs `op(task, i)` from `tasks` concurrent tasks, `i` counting up from 0 across all tasks,
/// until `max_ops` were started or `duration` passed.
pub async fn closed_loop<F, Fut>(tasks: usize, duration: Duration, max_ops: usize, op: F) -> Throughput
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut set = JoinSet::new();
    for task in 0..tasks {
        let (next, op) = (next.clone(), op.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut first_error) = (0, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match op(task, i).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut all = Vec::new();
    let mut out = Throughput::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((latencies, errors, first_error)) => {
                all.extend(latencies);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("load task failed: {e}"));
            }
        }
    }
    out.elapsed = started.elapsed();
    out.ops = all.len();
    out.latency = Summary::of(all);
    out
}
