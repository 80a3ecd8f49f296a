//! Where the CPU went during each phase: the whole machine (`/proc/stat`) and the apiserver,
//! etcd and the load generator (`/proc/<pid>/stat`), in cores. On a small machine the three
//! share the cores, so this is what explains a throughput number; "other" is everything else
//! running at the time (a concurrent build skews the numbers, and shows up here).

use std::time::{Duration, Instant};

use anyhow::Context;

/// Clock ticks per second in /proc (USER_HZ, 100 on every Linux architecture we run on).
const TICKS_PER_SECOND: f64 = 100.0;

pub struct Probe {
    pids: [u32; 3],
    cores: usize,
}

#[derive(Clone)]
pub struct Snapshot {
    at: Instant,
    busy: u64,
    total: u64,
    procs: [u64; 3],
}

/// Average cores in use over one phase.
#[derive(Debug, Clone)]
pub struct Usage {
    pub phase: String,
    pub wall: Duration,
    pub machine: f64,
    pub apiserver: f64,
    pub etcd: f64,
    pub loadgen: f64,
}

impl Usage {
    pub fn other(&self) -> f64 {
        (self.machine - self.apiserver - self.etcd - self.loadgen).max(0.0)
    }

    /// CPU time each process spent per operation over the phase, in microseconds: unlike a
    /// rate, this barely moves when other work shares the cores, so it measures the cost of a
    /// request rather than the machine's mood.
    pub fn per_op(&self, ops: usize) -> PerOp {
        let us = |cores: f64| cores * self.wall.as_secs_f64() * 1e6 / (ops.max(1) as f64);
        PerOp { apiserver_us: us(self.apiserver), etcd_us: us(self.etcd), loadgen_us: us(self.loadgen) }
    }
}

/// CPU microseconds per operation, by process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerOp {
    pub apiserver_us: f64,
    pub etcd_us: f64,
    pub loadgen_us: f64,
}

impl Probe {
    pub fn new(apiserver: u32, etcd: u32) -> anyhow::Result<Probe> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let cores = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count().max(1);
        Ok(Probe { pids: [apiserver, etcd, std::process::id()], cores })
    }

    pub fn cores(&self) -> usize {
        self.cores
    }

    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let stat = tokio::fs::read_to_string("/proc/stat").await.context("reading /proc/stat")?;
        let line = stat.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no cpu line")?;
        let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
        let total = busy + at(3) + at(4);
        let mut procs = [0; 3];
        for (slot, pid) in procs.iter_mut().zip(self.pids) {
            *slot = process_ticks(pid).await?;
        }
        Ok(Snapshot { at: Instant::now(), busy, total, procs })
    }

    pub fn usage(&self, phase: &str, a: &Snapshot, b: &Snapshot) -> Usage {
        let wall = b.at.duration_since(a.at);
        let secs = wall.as_secs_f64().max(1e-3);
        let share = (b.busy - a.busy) as f64 / ((b.total - a.total) as f64).max(1.0);
        let cores = |i: usize| (b.procs[i] - a.procs[i]) as f64 / TICKS_PER_SECOND / secs;
        Usage {
            phase: phase.to_string(),
            wall,
            machine: share * self.cores as f64,
            apiserver: cores(0),
            etcd: cores(1),
            loadgen: cores(2),
        }
    }
}

/// utime + stime of a process, in ticks.
async fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = tokio::fs::read_to_string(&path).await.with_context(|| format!("reading {path}"))?;
    // The command name is in parentheses and may hold spaces; fields count from after it.
    let rest = text.rsplit_once(')').map(|(_, r)| r).with_context(|| format!("parsing {path}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")" come state (field 3) onwards; utime and stime are fields 14 and 15.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(field(14) + field(15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_process_is_measured() {
        let p = Probe::new(std::process::id(), std::process::id()).expect("probe");
        let a = p.snapshot().await.expect("snapshot");
        let b = p.snapshot().await.expect("snapshot");
        let u = p.usage("x", &a, &b);
        assert!(u.machine >= 0.0 && u.machine <= p.cores() as f64 + 0.01);
        assert!(u.other() >= 0.0);
    }

    #[test]
    fn per_op_divides_cpu_time_by_operations() {
        let u = Usage {
            phase: "x".into(),
            wall: Duration::from_secs(2),
            machine: 1.5,
            apiserver: 0.5,
            etcd: 0.75,
            loadgen: 0.25,
        };
        // 0.5 cores for 2 s is 1 s of CPU; over 10,000 creates, 100 µs each.
        let p = u.per_op(10_000);
        assert_eq!(p, PerOp { apiserver_us: 100.0, etcd_us: 150.0, loadgen_us: 50.0 });
    }
}
