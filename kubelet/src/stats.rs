//! `/stats/summary`: upstream's Summary API (`stats.k8s.io/v1alpha1` `Summary`) with what
//! `kubectl top` and metrics-server read: node CPU and memory from `/proc`, and per pod and
//! container CPU and memory from the runtime (CRI `ListContainerStats`), pods summing their
//! containers. Building the JSON is pure; reading `/proc` and the runtime is the thin part.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::pod_workers::sync::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
use crate::runtime::{api, ContainerRuntime, RuntimeError};

/// The node's own usage, from `/proc`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeSample {
    pub cpu_usage_core_nanos: u64,
    pub memory_total: u64,
    pub memory_available: u64,
    pub memory_free: u64,
    pub memory_inactive_file: u64,
}

/// Cumulative busy CPU time from the `cpu` line of `/proc/stat`, in nanoseconds (USER_HZ = 100).
pub fn parse_proc_stat_cpu(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait
    let busy: u64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4 && *i < 8).map(|(_, v)| v).sum();
    busy.checked_mul(10_000_000)
}

fn meminfo_field(meminfo: &str, name: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
        .unwrap_or(0)
}

pub fn parse_meminfo(meminfo: &str) -> NodeSample {
    NodeSample {
        cpu_usage_core_nanos: 0,
        memory_total: meminfo_field(meminfo, "MemTotal"),
        memory_available: meminfo_field(meminfo, "MemAvailable"),
        memory_free: meminfo_field(meminfo, "MemFree"),
        memory_inactive_file: meminfo_field(meminfo, "Inactive(file)"),
    }
}

fn rfc3339(nanos: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn cpu_json(time: i64, usage_core_nanos: Option<u64>, usage_nano_cores: Option<u64>) -> Value {
    let mut v = json!({"time": rfc3339(time)});
    if let Some(n) = usage_core_nanos {
        v["usageCoreNanoSeconds"] = json!(n);
    }
    if let Some(n) = usage_nano_cores {
        v["usageNanoCores"] = json!(n);
    }
    v
}

fn memory_json(time: i64, m: &api::MemoryUsage) -> Value {
    let mut v = json!({"time": rfc3339(time)});
    for (k, f) in [
        ("workingSetBytes", &m.working_set_bytes),
        ("usageBytes", &m.usage_bytes),
        ("rssBytes", &m.rss_bytes),
        ("availableBytes", &m.available_bytes),
        ("pageFaults", &m.page_faults),
        ("majorPageFaults", &m.major_page_faults),
    ] {
        if let Some(x) = f {
            v[k] = json!(x.value);
        }
    }
    v
}

#[derive(Default)]
struct PodSum {
    name: String,
    namespace: String,
    time: i64,
    cpu_core_nanos: Option<u64>,
    cpu_nano_cores: Option<u64>,
    working_set: Option<u64>,
    usage: Option<u64>,
    containers: Vec<Value>,
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

/// The Summary for `node_name` at `now` (nanoseconds), from the node's sample and the runtime's
/// container stats.
pub fn build_summary(node_name: &str, now: i64, node: &NodeSample, stats: &[api::ContainerStats]) -> Value {
    let mut pods: BTreeMap<String, PodSum> = BTreeMap::new();
    for s in stats {
        let Some(attrs) = &s.attributes else { continue };
        // Exited containers (finished init containers) come without usage: not running, not listed.
        if s.cpu.is_none() && s.memory.is_none() {
            continue;
        }
        let Some(uid) = attrs.labels.get(POD_UID) else { continue };
        let pod = pods.entry(uid.clone()).or_default();
        pod.name = attrs.labels.get(POD_NAME).cloned().unwrap_or_default();
        pod.namespace = attrs.labels.get(POD_NAMESPACE).cloned().unwrap_or_default();
        let name = attrs
            .labels
            .get(CONTAINER_NAME)
            .cloned()
            .or_else(|| attrs.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        let mut c = json!({"name": name});
        if let Some(cpu) = &s.cpu {
            let core_nanos = cpu.usage_core_nano_seconds.as_ref().map(|v| v.value);
            let nano_cores = cpu.usage_nano_cores.as_ref().map(|v| v.value);
            c["cpu"] = cpu_json(cpu.timestamp, core_nanos, nano_cores);
            pod.cpu_core_nanos = add(pod.cpu_core_nanos, core_nanos);
            pod.cpu_nano_cores = add(pod.cpu_nano_cores, nano_cores);
            pod.time = pod.time.max(cpu.timestamp);
        }
        if let Some(mem) = &s.memory {
            c["memory"] = memory_json(mem.timestamp, mem);
            pod.working_set = add(pod.working_set, mem.working_set_bytes.as_ref().map(|v| v.value));
            pod.usage = add(pod.usage, mem.usage_bytes.as_ref().map(|v| v.value));
            pod.time = pod.time.max(mem.timestamp);
        }
        pod.containers.push(c);
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|(uid, p)| {
            let time = if p.time == 0 { now } else { p.time };
            let mut memory = json!({"time": rfc3339(time)});
            if let Some(w) = p.working_set {
                memory["workingSetBytes"] = json!(w);
            }
            if let Some(u) = p.usage {
                memory["usageBytes"] = json!(u);
            }
            json!({
                "podRef": {"name": p.name, "namespace": p.namespace, "uid": uid},
                "containers": p.containers,
                "cpu": cpu_json(time, p.cpu_core_nanos, p.cpu_nano_cores),
                "memory": memory,
            })
        })
        .collect();
    let usage = node.memory_total.saturating_sub(node.memory_free);
    json!({
        "node": {
            "nodeName": node_name,
            "cpu": cpu_json(now, Some(node.cpu_usage_core_nanos), None),
            "memory": {
                "time": rfc3339(now),
                "availableBytes": node.memory_available,
                "usageBytes": usage,
                "workingSetBytes": usage.saturating_sub(node.memory_inactive_file),
            },
        },
        "pods": pods,
    })
}

/// Reads the node's `/proc` and the runtime's stats and builds the Summary.
pub async fn summary(rt: &dyn ContainerRuntime, node_name: &str) -> Result<Value, RuntimeError> {
    let stats = rt.list_container_stats(None).await?;
    let mut node = parse_meminfo(&tokio::fs::read_to_string("/proc/meminfo").await.unwrap_or_default());
    node.cpu_usage_core_nanos =
        parse_proc_stat_cpu(&tokio::fs::read_to_string("/proc/stat").await.unwrap_or_default()).unwrap_or(0);
    let now = i64::try_from(k8s_openapi::jiff::Timestamp::now().as_nanosecond()).unwrap_or(0);
    Ok(build_summary(node_name, now, &node, &stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn stat(uid: &str, pod: &str, container: &str, cpu: u64, mem: u64) -> api::ContainerStats {
        let labels = HashMap::from([
            (POD_UID.to_string(), uid.to_string()),
            (POD_NAME.to_string(), pod.to_string()),
            (POD_NAMESPACE.to_string(), "default".to_string()),
            (CONTAINER_NAME.to_string(), container.to_string()),
        ]);
        api::ContainerStats {
            attributes: Some(api::ContainerAttributes {
                id: format!("{pod}-{container}"),
                labels,
                ..Default::default()
            }),
            cpu: Some(api::CpuUsage {
                timestamp: 1_700_000_000_000_000_000,
                usage_core_nano_seconds: Some(api::UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(api::MemoryUsage {
                timestamp: 1_700_000_000_000_000_000,
                working_set_bytes: Some(api::UInt64Value { value: mem }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_sum_their_containers() {
        let node = NodeSample {
            cpu_usage_core_nanos: 5,
            memory_total: 1000,
            memory_available: 600,
            memory_free: 300,
            memory_inactive_file: 100,
        };
        let s = build_summary(
            "node-1",
            1_700_000_000_000_000_000,
            &node,
            &[
                stat("u1", "web", "a", 10, 100),
                stat("u1", "web", "b", 5, 50),
                stat("u2", "db", "c", 1, 7),
                api::ContainerStats { cpu: None, memory: None, ..stat("u1", "web", "init", 0, 0) },
            ],
        );
        assert_eq!(s["node"]["nodeName"], "node-1");
        assert_eq!(s["node"]["memory"]["usageBytes"], 700);
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 600);
        let pods = s["pods"].as_array().expect("pods");
        assert_eq!(pods.len(), 2);
        let web = pods.iter().find(|p| p["podRef"]["name"] == "web").expect("web");
        assert_eq!(web["podRef"]["uid"], "u1");
        assert_eq!(web["cpu"]["usageCoreNanoSeconds"], 15);
        assert_eq!(web["memory"]["workingSetBytes"], 150);
        assert_eq!(web["containers"].as_array().map(Vec::len), Some(2));
        assert_eq!(web["containers"][0]["memory"]["workingSetBytes"], 100);
        assert_eq!(web["cpu"]["time"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn proc_parsing() {
        assert_eq!(parse_proc_stat_cpu("cpu  10 1 5 100 7 2 3 4 0 0\ncpu0 1 1 1 1\n"), Some(25 * 10_000_000));
        let m = parse_meminfo("MemTotal: 2 kB\nMemFree: 1 kB\nMemAvailable: 1 kB\nInactive(file): 0 kB\n");
        assert_eq!((m.memory_total, m.memory_free), (2048, 1024));
    }
}
