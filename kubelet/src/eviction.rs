//! Node pressure: the eviction signals upstream's eviction manager watches (`memory.available`,
//! `nodefs.available`, `nodefs.inodesFree`, `imagefs.available`, `imagefs.inodesFree`,
//! `pid.available`), compared with the `--eviction-hard` thresholds, decide the Node's
//! MemoryPressure, DiskPressure and PIDPressure conditions.
//!
//! Deciding is pure ([`Thresholds::parse`], [`pressure`]); observing reads the machine
//! (root memory cgroup, `statvfs` of the kubelet's root dir, `/proc`). Only the conditions are
//! reported: pods are not evicted under pressure (upstream's eviction manager also ranks and
//! evicts pods; rkube does not yet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::nodestatus::NodeFacts;

/// upstream: the kubelet's default hard eviction thresholds on Linux.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%";

/// How often the signals are read (upstream: `--housekeeping-interval`, 10 s).
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    #[error("eviction threshold {0:?} must look like signal<value (e.g. memory.available<100Mi)")]
    Syntax(String),
    #[error("unknown eviction signal {0:?}")]
    Signal(String),
    #[error("eviction threshold {0:?} has an invalid quantity or percentage")]
    Value(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "memory.available" => Self::MemoryAvailable,
            "nodefs.available" => Self::NodefsAvailable,
            "nodefs.inodesFree" => Self::NodefsInodesFree,
            "imagefs.available" => Self::ImagefsAvailable,
            "imagefs.inodesFree" => Self::ImagefsInodesFree,
            "pid.available" => Self::PidAvailable,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Absolute(u64),
    /// A fraction of the signal's capacity, 0..=1.
    Percentage(f64),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds(pub Vec<(Signal, Value)>);

impl Thresholds {
    /// Parses `--eviction-hard` (`signal<value,...`); an empty string means no thresholds.
    pub fn parse(s: &str) -> Result<Self, ThresholdError> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (sig, val) = item.split_once('<').ok_or_else(|| ThresholdError::Syntax(item.to_string()))?;
            let signal = Signal::parse(sig.trim()).ok_or_else(|| ThresholdError::Signal(sig.trim().to_string()))?;
            let val = val.trim();
            let value = if let Some(p) = val.strip_suffix('%') {
                let pct: f64 = p.parse().map_err(|_| ThresholdError::Value(item.to_string()))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(ThresholdError::Value(item.to_string()));
                }
                Value::Percentage(pct / 100.0)
            } else {
                Value::Absolute(parse_quantity(val).ok_or_else(|| ThresholdError::Value(item.to_string()))?)
            };
            out.push((signal, value));
        }
        Ok(Self(out))
    }
}

/// A quantity like `100Mi`, `1G` or `2048` (binary and decimal suffixes, as resource quantities).
fn parse_quantity(s: &str) -> Option<u64> {
    let idx = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(idx);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// One reading of a signal: what is available out of what capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub available: u64,
    pub capacity: u64,
}

/// What the machine said at one housekeeping pass; `None` for a signal it could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    pub memory: Option<Reading>,
    pub nodefs: Option<Reading>,
    pub nodefs_inodes: Option<Reading>,
    /// The runtime's image filesystem; the kubelet's root dir's when they share one.
    pub imagefs: Option<Reading>,
    pub imagefs_inodes: Option<Reading>,
    pub pids: Option<Reading>,
}

/// The three pressure conditions, True when a threshold of theirs is crossed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

fn crossed(value: Value, r: Option<Reading>) -> bool {
    let Some(r) = r else { return false };
    let limit = match value {
        Value::Absolute(n) => n,
        Value::Percentage(p) => (r.capacity as f64 * p) as u64,
    };
    r.available < limit
}

/// upstream: a signal below its threshold puts the node under the matching pressure (memory
/// signals → MemoryPressure, filesystem signals → DiskPressure, pid → PIDPressure).
pub fn pressure(t: &Thresholds, o: &Observations) -> Pressure {
    let mut p = Pressure::default();
    for &(signal, value) in &t.0 {
        match signal {
            Signal::MemoryAvailable => p.memory |= crossed(value, o.memory),
            Signal::NodefsAvailable => p.disk |= crossed(value, o.nodefs),
            Signal::NodefsInodesFree => p.disk |= crossed(value, o.nodefs_inodes),
            Signal::ImagefsAvailable => p.disk |= crossed(value, o.imagefs),
            Signal::ImagefsInodesFree => p.disk |= crossed(value, o.imagefs_inodes),
            Signal::PidAvailable => p.pid |= crossed(value, o.pids),
        }
    }
    p
}

/// upstream: `memory.available` is capacity minus the root cgroup's working set (usage less
/// inactive file pages), not `free`'s view. Falls back to `MemAvailable` without cgroup v1
/// memory accounting.
pub fn memory_reading(capacity: u64, usage: Option<u64>, memory_stat: Option<&str>, meminfo: &str) -> Option<Reading> {
    if let (Some(usage), Some(stat)) = (usage, memory_stat) {
        let inactive = stat_value(stat, "total_inactive_file").unwrap_or(0);
        let working_set = usage.saturating_sub(inactive);
        return Some(Reading { available: capacity.saturating_sub(working_set), capacity });
    }
    let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().trim_end_matches("kB").trim();
    Some(Reading { available: kb.parse::<u64>().ok()? * 1024, capacity })
}

fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `pid.available`: pid_max less the tasks that exist now.
pub fn pid_reading(pid_max: &str, loadavg: &str) -> Option<Reading> {
    let capacity: u64 = pid_max.trim().parse().ok()?;
    // /proc/loadavg's fourth field is running/total scheduling entities (threads included).
    let total: u64 = loadavg.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()?;
    Some(Reading { available: capacity.saturating_sub(total), capacity })
}

/// Where the signals are read from.
#[derive(Debug, Clone)]
pub struct Sources {
    pub root_dir: PathBuf,
    /// The runtime's image store (containerd's root), if known and on another filesystem.
    pub image_dir: Option<PathBuf>,
    pub memory_capacity: u64,
}

/// Reads every signal once (blocking file reads: call from `spawn_blocking`).
pub fn observe(src: &Sources) -> Observations {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let usage = read("/sys/fs/cgroup/memory/memory.usage_in_bytes").and_then(|s| s.trim().parse().ok());
    let stat = read("/sys/fs/cgroup/memory/memory.stat");
    let meminfo = read("/proc/meminfo").unwrap_or_default();
    let (nodefs, nodefs_inodes) = fs_readings(&src.root_dir);
    let (imagefs, imagefs_inodes) = match &src.image_dir {
        Some(d) => fs_readings(d),
        None => (nodefs, nodefs_inodes),
    };
    Observations {
        memory: memory_reading(src.memory_capacity, usage, stat.as_deref(), &meminfo),
        nodefs,
        nodefs_inodes,
        imagefs,
        imagefs_inodes,
        pids: pid_reading(
            &read("/proc/sys/kernel/pid_max").unwrap_or_default(),
            &read("/proc/loadavg").unwrap_or_default(),
        ),
    }
}

/// Bytes and inodes available (to unprivileged users, as upstream's cadvisor reports) on the
/// filesystem of `path`, or of its nearest existing ancestor.
fn fs_readings(path: &Path) -> (Option<Reading>, Option<Reading>) {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => return (None, None),
        }
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return (None, None) };
    #[allow(unsafe_code)]
    // SAFETY: statvfs only writes into the zeroed struct we own, and reads the NUL-terminated path.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return (None, None);
        }
        st
    };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let (frsize, blocks, bavail, files, favail) = (
        u64::from(st.f_frsize),
        u64::from(st.f_blocks),
        u64::from(st.f_bavail),
        u64::from(st.f_files),
        u64::from(st.f_favail),
    );
    let bytes = Reading { available: bavail.saturating_mul(frsize), capacity: blocks.saturating_mul(frsize) };
    // A filesystem without inode accounting (files == 0) cannot run out of inodes.
    let inodes = (files > 0).then_some(Reading { available: favail, capacity: files });
    (Some(bytes), inodes)
}

/// Reads the signals every housekeeping interval and puts the resulting pressure into the
/// Node's facts (the status loop reports a change at once).
pub async fn run(src: Sources, thresholds: Thresholds, facts: watch::Sender<NodeFacts>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = src.clone();
        let Ok(obs) = tokio::task::spawn_blocking(move || observe(&s)).await else { continue };
        let p = pressure(&thresholds, &obs);
        facts.send_if_modified(|f| {
            if f.pressure == p {
                return false;
            }
            tracing::info!(node = %f.name, memory = p.memory, disk = p.disk, pid = p.pid, "node pressure changed");
            f.pressure = p;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    fn r(available: u64, capacity: u64) -> Option<Reading> {
        Some(Reading { available, capacity })
    }

    #[test]
    fn default_eviction_hard_parses_as_upstream_defaults() {
        let t = Thresholds::parse(DEFAULT_EVICTION_HARD).expect("parses");
        assert_eq!(
            t.0,
            vec![
                (Signal::MemoryAvailable, Value::Absolute(100 * MI)),
                (Signal::NodefsAvailable, Value::Percentage(0.10)),
                (Signal::NodefsInodesFree, Value::Percentage(0.05)),
                (Signal::ImagefsAvailable, Value::Percentage(0.15)),
            ]
        );
        assert_eq!(Thresholds::parse("").expect("empty"), Thresholds::default());
    }

    #[test]
    fn bad_eviction_thresholds_are_named() {
        assert_eq!(
            Thresholds::parse("memory.available=1Gi"),
            Err(ThresholdError::Syntax("memory.available=1Gi".into()))
        );
        assert_eq!(Thresholds::parse("cpu.available<1"), Err(ThresholdError::Signal("cpu.available".into())));
        assert_eq!(
            Thresholds::parse("nodefs.available<120%"),
            Err(ThresholdError::Value("nodefs.available<120%".into()))
        );
        assert_eq!(
            Thresholds::parse("memory.available<1Qi"),
            Err(ThresholdError::Value("memory.available<1Qi".into()))
        );
    }

    #[test]
    fn each_signal_sets_its_condition() {
        let t = Thresholds::parse(&format!("{DEFAULT_EVICTION_HARD},pid.available<10%")).expect("parses");
        let fine = Observations {
            memory: r(8000 * MI, 16000 * MI),
            nodefs: r(50, 100),
            nodefs_inodes: r(50, 100),
            imagefs: r(50, 100),
            imagefs_inodes: None,
            pids: r(4_000_000, 4_194_304),
        };
        assert_eq!(pressure(&t, &fine), Pressure::default());
        let low_memory = Observations { memory: r(99 * MI, 16000 * MI), ..fine.clone() };
        assert_eq!(pressure(&t, &low_memory), Pressure { memory: true, disk: false, pid: false });
        let full_disk = Observations { nodefs: r(9, 100), ..fine.clone() };
        assert_eq!(pressure(&t, &full_disk), Pressure { memory: false, disk: true, pid: false });
        let no_inodes = Observations { nodefs_inodes: r(4, 100), ..fine.clone() };
        assert!(pressure(&t, &no_inodes).disk);
        let image_store_full = Observations { imagefs: r(14, 100), ..fine.clone() };
        assert!(pressure(&t, &image_store_full).disk);
        let fork_bomb = Observations { pids: r(1000, 4_194_304), ..fine.clone() };
        assert_eq!(pressure(&t, &fork_bomb), Pressure { memory: false, disk: false, pid: true });
        // A signal that could not be read never raises pressure.
        assert_eq!(pressure(&t, &Observations::default()), Pressure::default());
    }

    #[test]
    fn pid_pressure_needs_a_threshold_as_upstream() {
        let t = Thresholds::parse(DEFAULT_EVICTION_HARD).expect("parses");
        let o = Observations { pids: r(0, 32768), ..Observations::default() };
        assert!(!pressure(&t, &o).pid);
    }

    #[test]
    fn memory_available_is_capacity_minus_working_set() {
        let stat = "cache 10\ntotal_inactive_file 300\ntotal_active_file 5\n";
        assert_eq!(memory_reading(1000, Some(500), Some(stat), ""), r(800, 1000));
        // Without cgroup accounting, MemAvailable.
        assert_eq!(memory_reading(4096, None, None, "MemTotal: 4 kB\nMemAvailable:       2 kB\n"), r(2048, 4096));
        assert_eq!(memory_reading(4096, None, None, ""), None);
    }

    #[test]
    fn pid_available_is_pid_max_less_tasks() {
        assert_eq!(pid_reading("32768\n", "0.50 0.40 0.30 2/768 12345\n"), r(32000, 32768));
        assert_eq!(pid_reading("x", "0 0 0 1/2 3"), None);
    }

    #[test]
    fn root_filesystem_is_observed() {
        let o = observe(&Sources { root_dir: "/".into(), image_dir: None, memory_capacity: 1 << 30 });
        let fs = o.nodefs.expect("statvfs of /");
        assert!(fs.capacity > 0 && fs.available <= fs.capacity, "{fs:?}");
        assert_eq!(o.imagefs, o.nodefs);
        assert!(o.pids.is_some_and(|p| p.available < p.capacity));
    }
}
