//! Resources and QoS: a pod's QoS class (upstream's `GetPodQOS`), the CRI Linux resources of a
//! container (upstream's `generateLinuxContainerResources`: CPU shares from requests, CFS quota
//! from limits, the memory limit, the OOM score adjustment per QoS class) and the pod's cgroup
//! parent in the QoS tiers. Pure.
//!
//! The OOM score adjustments are upstream's (-997 Guaranteed, 1000 BestEffort, in between for
//! Burstable). A containerd started with `restrict_oom_score_adj = true` (needed where root lacks
//! CAP_SYS_RESOURCE, see the node runtime notes) clamps negative values to its own score.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::runtime::api;

/// upstream's MinShares / MaxShares / SharesPerCPU.
pub const MIN_SHARES: i64 = 2;
pub const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
/// upstream's QuotaPeriod (100 ms in µs) and MinQuotaPeriod.
pub const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA_PERIOD: i64 = 1000;

pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
pub const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A quantity as an exact fraction `num / den`, from the Kubernetes quantity syntax
/// (`100m`, `1.5`, `128Mi`, `1e3`, `2G`). `None` when it does not parse.
fn parse_fraction(s: &str) -> Option<(i128, i128)> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 18 || int.len() > 24 {
        return None;
    }
    let mut num: i128 = format!("{int}{frac}").parse().ok()?;
    let mut den: i128 = 10i128.checked_pow(frac.len() as u32)?;
    let pow10 = |e: i32| 10i128.checked_pow(e.unsigned_abs());
    let (mul, div): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, pow10(9)?),
        "u" => (1, pow10(6)?),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (pow10(6)?, 1),
        "G" => (pow10(9)?, 1),
        "T" => (pow10(12)?, 1),
        "P" => (pow10(15)?, 1),
        "E" => (pow10(18)?, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp >= 0 {
                (pow10(exp)?, 1)
            } else {
                (1, pow10(exp)?)
            }
        }
        _ => return None,
    };
    num = num.checked_mul(mul)?;
    den = den.checked_mul(div)?;
    Some((if negative { -num } else { num }, den))
}

fn ceil_div(num: i128, den: i128) -> i128 {
    let q = num / den;
    if num % den != 0 && (num > 0) == (den > 0) {
        q + 1
    } else {
        q
    }
}

/// The quantity in thousandths, rounded up (upstream's `MilliValue`).
pub fn milli_value(q: &Quantity) -> Option<i64> {
    let (num, den) = parse_fraction(&q.0)?;
    i64::try_from(ceil_div(num.checked_mul(1000)?, den)).ok()
}

/// The quantity as a whole number, rounded up (upstream's `Value`).
pub fn value(q: &Quantity) -> Option<i64> {
    let (num, den) = parse_fraction(&q.0)?;
    i64::try_from(ceil_div(num, den)).ok()
}

/// upstream's MilliCPUToShares.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu == 0 {
        return MIN_SHARES;
    }
    (milli_cpu * SHARES_PER_CPU / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// upstream's MilliCPUToQuota: 0 means no limit.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu * period / 1000).max(MIN_QUOTA_PERIOD)
}

fn get<'a>(m: Option<&'a BTreeMap<String, Quantity>>, key: &str) -> Option<&'a Quantity> {
    m.and_then(|m| m.get(key))
}

fn nonzero(q: Option<&Quantity>) -> Option<&Quantity> {
    q.filter(|q| milli_value(q).is_some_and(|v| v != 0))
}

/// upstream's GetPodQOS over init and regular containers (cpu and memory only).
pub fn pod_qos(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else { return QosClass::BestEffort };
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        let mut found_limits = 0;
        for name in ["cpu", "memory"] {
            // A limit without a request means request = limit (the API's defaulting).
            if let Some(q) = nonzero(get(req, name)).or_else(|| nonzero(get(lim, name))) {
                *requests.entry(name).or_default() += milli_value(q).unwrap_or(0);
            }
            if let Some(q) = nonzero(get(lim, name)) {
                found_limits += 1;
                *limits.entry(name).or_default() += milli_value(q).unwrap_or(0);
            }
        }
        if found_limits < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests == limits {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// upstream's GetContainerOOMScoreAdjust (without the node-critical special case).
pub fn oom_score_adj(qos: QosClass, memory_request: i64, memory_capacity: i64) -> i64 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            if memory_capacity <= 0 {
                return BEST_EFFORT_OOM_SCORE_ADJ - 1;
            }
            let adj = 1000 - (1000 * memory_request) / memory_capacity;
            // Burstable stays above Guaranteed and below BestEffort.
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

/// upstream's generateLinuxContainerResources (cgroupfs, no swap, no hugepages).
pub fn container_resources(qos: QosClass, c: &Container, memory_capacity: i64) -> api::LinuxContainerResources {
    let res = c.resources.as_ref();
    let req = res.and_then(|r| r.requests.as_ref());
    let lim = res.and_then(|r| r.limits.as_ref());
    let milli = |q: Option<&Quantity>| q.and_then(milli_value).unwrap_or(0);
    let cpu_limit = milli(get(lim, "cpu"));
    let mut cpu_request = milli(get(req, "cpu"));
    if cpu_request == 0 && cpu_limit != 0 {
        cpu_request = cpu_limit;
    }
    let memory_limit = get(lim, "memory").and_then(value).unwrap_or(0);
    let memory_request = get(req, "memory").and_then(value).unwrap_or(memory_limit);
    let mut out = api::LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(cpu_request),
        memory_limit_in_bytes: memory_limit,
        oom_score_adj: oom_score_adj(qos, memory_request, memory_capacity),
        ..Default::default()
    };
    if cpu_limit != 0 {
        out.cpu_period = QUOTA_PERIOD;
        out.cpu_quota = milli_cpu_to_quota(cpu_limit, QUOTA_PERIOD);
    }
    out
}

/// The pod's cgroup under `cgroup_root`, in upstream's QoS tiers: Guaranteed pods directly in
/// the root, the others in `burstable/` or `besteffort/`.
pub fn pod_cgroup_parent(cgroup_root: &str, qos: QosClass, pod_uid: &str) -> String {
    let root = cgroup_root.trim_end_matches('/');
    match qos {
        QosClass::Guaranteed => format!("{root}/pod{pod_uid}"),
        QosClass::Burstable => format!("{root}/burstable/pod{pod_uid}"),
        QosClass::BestEffort => format!("{root}/besteffort/pod{pod_uid}"),
    }
}

/// Removes the pod's (empty) cgroup directories, in every QoS tier and every hierarchy mounted
/// under `cgroup_fs` (`/sys/fs/cgroup`): runc removes each container's cgroup but not the pod's
/// parent. Blocking; returns what was removed. A directory that still has processes or
/// children stays (rmdir refuses).
pub fn remove_pod_cgroups(cgroup_fs: &std::path::Path, cgroup_root: &str, pod_uid: &str) -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    if pod_uid.is_empty() || pod_uid.contains('/') {
        return removed;
    }
    let mut hierarchies = vec![cgroup_fs.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(cgroup_fs) {
        hierarchies.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for h in hierarchies {
        for qos in [QosClass::Guaranteed, QosClass::Burstable, QosClass::BestEffort] {
            let rel = pod_cgroup_parent(cgroup_root, qos, pod_uid);
            let dir = h.join(rel.trim_start_matches('/'));
            if std::fs::remove_dir(&dir).is_ok() {
                removed.push(dir);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_cgroups_are_removed_in_every_hierarchy_when_empty() {
        let fs = tempfile::tempdir().expect("tempdir");
        let memory = fs.path().join("memory/n1/kubepods/burstable/podu1");
        let cpu = fs.path().join("cpu/n1/kubepods/burstable/podu1");
        let busy = fs.path().join("pids/n1/kubepods/burstable/podu1/still-here");
        for d in [&memory, &cpu, &busy] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let mut removed = remove_pod_cgroups(fs.path(), "/n1/kubepods", "u1");
        removed.sort();
        assert_eq!(removed, [cpu.clone(), memory.clone()]);
        assert!(busy.exists(), "a cgroup with children stays");
        assert!(fs.path().join("memory/n1/kubepods/burstable").exists(), "only the pod's own directory goes");
        assert!(remove_pod_cgroups(fs.path(), "/n1/kubepods", "../x").is_empty());
    }

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_parse_like_upstream() {
        for (s, milli) in [
            ("100m", Some(100)),
            ("1", Some(1000)),
            ("1.5", Some(1500)),
            ("0.1", Some(100)),
            ("2k", Some(2_000_000)),
            ("1Ki", Some(1_024_000)),
            ("1e3", Some(1_000_000)),
            ("1n", Some(1)),
            ("abc", None),
            ("1Xi", None),
        ] {
            assert_eq!(milli_value(&q(s)), milli, "{s}");
        }
        assert_eq!(value(&q("128Mi")), Some(128 << 20));
        assert_eq!(value(&q("20M")), Some(20_000_000));
        assert_eq!(value(&q("100m")), Some(1), "Value rounds up");
        assert_eq!(value(&q("1Gi")), Some(1 << 30));
    }

    #[test]
    fn milli_cpu_to_shares_has_a_minimum_of_two() {
        for (milli, shares) in [(0, 2), (1, 2), (10, 10), (100, 102), (250, 256), (1000, 1024), (500_000, MAX_SHARES)] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
    }

    #[test]
    fn milli_cpu_to_quota_has_a_minimum_period() {
        for (milli, quota) in [(0, 0), (1, 1000), (5, 1000), (100, 10_000), (1500, 150_000)] {
            assert_eq!(milli_cpu_to_quota(milli, QUOTA_PERIOD), quota, "{milli}m");
        }
    }

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})).expect("pod")
    }

    #[test]
    fn pod_qos_follows_upstream_get_pod_qos() {
        let cases = [
            ("no resources", json!([{"name": "a"}]), QosClass::BestEffort),
            (
                "requests equal limits",
                json!([{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}}]),
                QosClass::Guaranteed,
            ),
            (
                "limits only (requests default to them)",
                json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
                QosClass::Guaranteed,
            ),
            ("requests only", json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]), QosClass::Burstable),
            (
                "memory limit only",
                json!([{"name": "a", "resources": {"limits": {"memory": "20Mi"}}}]),
                QosClass::Burstable,
            ),
            (
                "one container without resources",
                json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}, {"name": "b"}]),
                QosClass::Burstable,
            ),
            (
                "zero requests count as none",
                json!([{"name": "a", "resources": {"requests": {"cpu": "0"}}}]),
                QosClass::BestEffort,
            ),
        ];
        for (what, containers, want) in cases {
            assert_eq!(pod_qos(&pod(containers)), want, "{what}");
        }
    }

    #[test]
    fn oom_score_adj_per_qos_class() {
        let gi = 1 << 30;
        assert_eq!(oom_score_adj(QosClass::Guaranteed, gi, 4 * gi), -997);
        assert_eq!(oom_score_adj(QosClass::BestEffort, 0, 4 * gi), 1000);
        assert_eq!(oom_score_adj(QosClass::Burstable, gi, 4 * gi), 750);
        assert_eq!(oom_score_adj(QosClass::Burstable, 0, 4 * gi), 999, "never equal to BestEffort");
        assert_eq!(oom_score_adj(QosClass::Burstable, 4 * gi, 4 * gi), 3, "never below Guaranteed + 1000");
    }

    #[test]
    fn container_resources_from_requests_and_limits() {
        let p = pod(json!([{"name": "a", "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}}}]));
        let r = container_resources(QosClass::Burstable, &p.spec.as_ref().expect("spec").containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!((r.cpu_quota, r.cpu_period), (50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, 1000 - (1000 * (64 << 20)) / (1 << 30));

        let cpu_limit_only = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "2"}}}]));
        let r = container_resources(QosClass::Burstable, &cpu_limit_only.spec.expect("spec").containers[0], 1 << 30);
        assert_eq!(r.cpu_shares, 2048, "the request defaults to the limit");
        assert_eq!(r.memory_limit_in_bytes, 0);

        let none = pod(json!([{"name": "a"}]));
        let r = container_resources(QosClass::BestEffort, &none.spec.expect("spec").containers[0], 1 << 30);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period, r.oom_score_adj), (2, 0, 0, 1000));
    }

    #[test]
    fn pod_cgroup_sits_in_its_qos_tier() {
        assert_eq!(pod_cgroup_parent("/n1/kubepods/", QosClass::Guaranteed, "u"), "/n1/kubepods/podu");
        assert_eq!(pod_cgroup_parent("/n1/kubepods", QosClass::Burstable, "u"), "/n1/kubepods/burstable/podu");
        assert_eq!(pod_cgroup_parent("/n1/kubepods", QosClass::BestEffort, "u"), "/n1/kubepods/besteffort/podu");
    }
}
