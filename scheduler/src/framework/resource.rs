//! Resource amounts as the scheduler counts them (upstream `framework.Resource`): milli-CPU,
//! bytes of memory and ephemeral storage, a pod count, and extended resources by name, plus
//! the quantity parsing they need.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// upstream: pods without a cpu/memory request count as 100m / 200Mi when spreading load
/// (`schedutil.DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    /// Extended and hugepage resources (anything but cpu, memory, ephemeral-storage, pods).
    pub scalar: BTreeMap<String, i64>,
}

/// The value of a quantity in units of 10^-3 (`MilliValue`) or 1 (`Value`), rounded up as
/// upstream rounds. Malformed quantities count as zero: the apiserver validates them, and
/// the scheduler must not fail on one bad object.
pub fn parse_quantity(q: &str, milli: bool) -> i64 {
    parse_scaled(q.trim(), if milli { 3 } else { 0 }).unwrap_or(0)
}

fn parse_scaled(s: &str, extra_pow10: i32) -> Option<i64> {
    let (num, suffix) = split_suffix(s);
    let (mut mantissa, mut pow10): (i128, i32) = parse_decimal(num)?;
    let mut pow2: u32 = 0;
    match suffix {
        "" => {}
        "n" => pow10 -= 9,
        "u" => pow10 -= 6,
        "m" => pow10 -= 3,
        "k" => pow10 += 3,
        "M" => pow10 += 6,
        "G" => pow10 += 9,
        "T" => pow10 += 12,
        "P" => pow10 += 15,
        "E" => pow10 += 18,
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        e if e.starts_with(['e', 'E']) => pow10 += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    pow10 += extra_pow10;
    mantissa = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
    while pow10 > 0 {
        mantissa = mantissa.checked_mul(10)?;
        pow10 -= 1;
    }
    let mut rem = false;
    while pow10 < 0 {
        rem |= mantissa % 10 != 0;
        mantissa /= 10;
        pow10 += 1;
    }
    if rem && mantissa >= 0 {
        mantissa += 1;
    }
    Some(mantissa.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

fn split_suffix(s: &str) -> (&str, &str) {
    let idx = s
        .char_indices()
        .find(|&(i, c)| {
            c.is_ascii_alphabetic()
                && !((c == 'e' || c == 'E')
                    && s[i + 1..].starts_with(|d: char| d.is_ascii_digit() || d == '-' || d == '+'))
        })
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    // An exponent is part of the suffix in upstream's grammar.
    if let Some(e) = s[..idx].find(['e', 'E']) {
        return (&s[..e], &s[e..]);
    }
    (&s[..idx], &s[idx..])
}

fn parse_decimal(s: &str) -> Option<(i128, i32)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if s.is_empty() {
        return None;
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let digits = if digits.len() > 30 { &digits[..30] } else { &digits[..] };
    let v: i128 = digits.parse().ok()?;
    let pow = -(frac.len().min(30) as i32) + (int.len() + frac.len()).saturating_sub(30) as i32;
    Some((if neg { -v } else { v }, pow))
}

fn q(q: &Quantity, milli: bool) -> i64 {
    parse_quantity(&q.0, milli)
}

impl Resource {
    /// Adds one `name: quantity` entry of a resource list.
    pub fn add_named(&mut self, name: &str, quantity: &Quantity) {
        match name {
            "cpu" => self.milli_cpu += q(quantity, true),
            "memory" => self.memory += q(quantity, false),
            "ephemeral-storage" => self.ephemeral_storage += q(quantity, false),
            "pods" => self.allowed_pods += q(quantity, false),
            other => *self.scalar.entry(other.to_string()).or_default() += q(quantity, false),
        }
    }

    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resource::default();
        for (k, v) in list.into_iter().flatten() {
            r.add_named(k, v);
        }
        r
    }

    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each field set to the larger of the two (the init-container rule).
    pub fn set_max(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }
}

fn requests(c: &Container) -> Resource {
    Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// A sidecar is an init container with `restartPolicy: Always`: it keeps running beside the
/// app containers.
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// What a pod asks of a node (upstream `resourcehelper.PodRequests`): the sum over app
/// containers and sidecars, or the largest init container's request plus the sidecars
/// started before it if that is larger, plus the pod's overhead. `non_zero` applies the
/// default cpu/memory requests per container first (used for scoring, not for fitting).
pub fn pod_requests(spec: &PodSpec, non_zero: bool) -> Resource {
    let one = |c: &Container| {
        let mut r = requests(c);
        if non_zero {
            if !c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some_and(|m| m.contains_key("cpu")) {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if !c.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some_and(|m| m.contains_key("memory")) {
                r.memory = DEFAULT_MEMORY_REQUEST;
            }
        }
        r
    };
    let mut sum = Resource::default();
    for c in &spec.containers {
        sum.add(&one(c));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = one(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            // upstream: a regular init container runs beside the sidecars started before it.
            let mut during = r;
            during.add(&sidecars);
            init_max.set_max(&during);
        }
    }
    sum.set_max(&init_max);
    if let Some(o) = spec.overhead.as_ref() {
        sum.add(&Resource::from_list(Some(o)));
    }
    sum
}

/// Whether the pod is finished (its resources are free again).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn quantities_parse_as_upstream_rounds_them() {
        let cases = [
            ("1", true, 1000),
            ("100m", true, 100),
            ("0.5", true, 500),
            ("1.0001", true, 1001),
            ("1Ki", false, 1024),
            ("1Mi", false, 1 << 20),
            ("1G", false, 1_000_000_000),
            ("1e3", false, 1000),
            ("1.5Gi", false, 3 << 29),
            ("500n", true, 1),
            ("garbage", true, 0),
        ];
        for (s, milli, want) in cases {
            assert_eq!(parse_quantity(s, milli), want, "{s}");
        }
    }

    fn container(cpu: &str, mem: &str, restart: Option<&str>) -> Container {
        let mut req = BTreeMap::new();
        if !cpu.is_empty() {
            req.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !mem.is_empty() {
            req.insert("memory".to_string(), Quantity(mem.into()));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements { requests: Some(req), ..Default::default() }),
            restart_policy: restart.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_take_the_larger_of_containers_and_init_max_plus_overhead() {
        let spec = PodSpec {
            containers: vec![container("1", "1Gi", None), container("1", "", None)],
            init_containers: Some(vec![container("3", "500Mi", None)]),
            overhead: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
            ..Default::default()
        };
        let r = pod_requests(&spec, false);
        assert_eq!((r.milli_cpu, r.memory), (3250, 1 << 30));
        let nz = pod_requests(&spec, true);
        assert_eq!(nz.memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let spec = PodSpec {
            containers: vec![container("1", "", None)],
            init_containers: Some(vec![container("1", "", Some("Always")), container("2", "", None)]),
            ..Default::default()
        };
        // 1 (app) + 1 (sidecar) running, against 2 (init) + 1 (sidecar started before it).
        assert_eq!(pod_requests(&spec, false).milli_cpu, 3000);
    }
}
