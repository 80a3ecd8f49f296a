//! The kubelet's Node: registration, the status it reports (addresses, capacity, node info,
//! conditions) and the Lease in `kube-node-lease` it renews, as upstream's `nodestatus` and
//! `nodelease` do. What the node looks like comes from `NodeFacts` (read from the machine by
//! the caller); whether the runtime is healthy comes from a watch channel the runtime's
//! health loop feeds, so this module does no probing of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// upstream: the Lease lasts 40 s and is renewed every 10 s (a quarter of it).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What the node is, as the caller read it from the machine and its flags.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub internal_ip: String,
    pub kubelet_port: u16,
    pub pod_cidr: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Taints the Node registers with (`--register-with-taints`).
    pub taints: Vec<Taint>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub max_pods: u32,
    pub kernel_version: String,
    pub os_image: String,
    pub runtime_version: String,
    pub boot_id: String,
    pub machine_id: String,
    /// Images on the node (repo tags and digests, size in bytes), biggest first as upstream
    /// reports them; known once the runtime answers.
    pub images: Vec<NodeImage>,
    /// Pressure from the eviction signals (`crate::eviction`), known after the first
    /// housekeeping pass.
    pub pressure: crate::eviction::Pressure,
}

/// One entry of `status.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// upstream's `--node-status-max-images` default.
pub const MAX_IMAGES: usize = 50;

/// A taint as `--register-with-taints` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// The runtime's health as the kubelet last saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeHealth {
    Ready,
    /// The reason upstream gives in the Ready condition's message.
    Down(String),
}

fn quantity_cpu(millis: u64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

fn quantity_bytes(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// The Node object a kubelet registers.
pub fn node_object(f: &NodeFacts) -> Value {
    let mut labels: serde_json::Map<String, Value> =
        f.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    labels.insert("kubernetes.io/hostname".into(), json!(f.name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(arch()));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!(arch()));
    let mut spec = json!({});
    if let Some(cidr) = &f.pod_cidr {
        spec = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    if !f.taints.is_empty() {
        let taints: Vec<Value> = f
            .taints
            .iter()
            .map(|t| {
                let mut v = json!({"key": t.key, "effect": t.effect});
                if !t.value.is_empty() {
                    v["value"] = json!(t.value);
                }
                v
            })
            .collect();
        spec["taints"] = Value::Array(taints);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f.name, "labels": labels},
        "spec": spec,
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `status` of the Node: capacity, addresses, node info, and the four conditions.
pub fn node_status(f: &NodeFacts, health: &RuntimeHealth, now: &str, previous: Option<&Value>) -> Value {
    let capacity = json!({
        "cpu": quantity_cpu(f.cpu_millis),
        "memory": quantity_bytes(f.memory_bytes),
        "ephemeral-storage": quantity_bytes(f.ephemeral_storage_bytes),
        "pods": f.max_pods.to_string(),
    });
    let (ready, reason, message) = match health {
        RuntimeHealth::Ready => ("True", "KubeletReady", "kubelet is posting ready status".to_string()),
        RuntimeHealth::Down(why) => ("False", "KubeletNotReady", format!("container runtime is down: {why}")),
    };
    // A condition keeps its lastTransitionTime while its status stays the same.
    let transition = |t: &str, status: &str| -> String {
        previous
            .and_then(|p| p.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == status))
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .unwrap_or(now)
            .to_string()
    };
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": transition(t, status)})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": f.internal_ip}, {"type": "Hostname", "address": f.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": f.kubelet_port}},
        "nodeInfo": {
            "machineID": f.machine_id, "systemUUID": f.machine_id, "bootID": f.boot_id,
            "kernelVersion": f.kernel_version, "osImage": f.os_image,
            "containerRuntimeVersion": f.runtime_version,
            "kubeletVersion": crate::KUBELET_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": arch(),
        },
        "images": f.images.iter().take(MAX_IMAGES).map(|i| json!({"names": i.names, "sizeBytes": i.size_bytes})).collect::<Vec<_>>(),
        "conditions": [
            if f.pressure.memory {
                cond("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
            } else {
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
            },
            if f.pressure.disk {
                cond("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
            } else {
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            },
            if f.pressure.pid {
                cond("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
            } else {
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available")
            },
            cond("Ready", ready, reason, &message),
        ],
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro_now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Creates the Node, or takes over an existing one of the same name (a restarted kubelet).
pub async fn register(client: &kube::Client, f: &NodeFacts) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let obj: Node = serde_json::from_value(node_object(f)).map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &obj).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch =
                json!({"metadata": {"labels": node_object(f)["metadata"]["labels"]}, "spec": node_object(f)["spec"]});
            nodes.patch(&f.name, &PatchParams::default(), &Patch::Merge(&patch)).await
        }
        Err(e) => Err(e),
    }
}

/// Writes the Node's status now.
pub async fn update_status(client: &kube::Client, f: &NodeFacts, health: &RuntimeHealth) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let previous = nodes.get_status(&f.name).await?;
    let prev_status = serde_json::to_value(&previous.status).ok();
    let status = node_status(f, health, &now(), prev_status.as_ref());
    nodes.patch_status(&f.name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await
}

/// Creates or renews the node's Lease, owned by the Node so it goes with it.
pub async fn renew_lease(client: &kube::Client, node: &Node) -> Result<Lease, kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_now()},
    });
    let pp = PatchParams::apply("rkube-kubelet").force();
    leases.patch(&name, &pp, &Patch::Apply(&body)).await
}

/// Keeps the Node registered, its status current and its Lease renewed until `cancel`.
pub async fn run(
    client: kube::Client,
    mut facts_rx: watch::Receiver<NodeFacts>,
    mut health: watch::Receiver<RuntimeHealth>,
    status_every: Duration,
    lease_every: Duration,
    cancel: CancellationToken,
) {
    let mut facts = facts_rx.borrow_and_update().clone();
    let mut node = loop {
        match register(&client, &facts).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(node = %facts.name, error = %e, "registering the node failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(node = %facts.name, "node registered");
    let mut status_tick = tokio::time::interval(status_every);
    let mut lease_tick = tokio::time::interval(lease_every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = status_tick.tick() => {}
            // A health change is reported at once, not at the next tick.
            r = health.changed() => if r.is_err() { return },
            // So is a change of the facts (the runtime's version, known once it answers).
            r = facts_rx.changed() => {
                if r.is_err() { return }
                facts = facts_rx.borrow_and_update().clone();
            }
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&client, &node).await {
                    tracing::warn!(node = %facts.name, error = %e, "renewing the node lease failed");
                }
                continue;
            }
        }
        let h = health.borrow().clone();
        match update_status(&client, &facts, &h).await {
            Ok(n) => node = n,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // The Node was deleted under us: register again.
                if let Ok(n) = register(&client, &facts).await {
                    node = n;
                }
            }
            Err(e) => tracing::warn!(node = %facts.name, error = %e, "updating the node status failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node-1".into(),
            internal_ip: "198.19.0.2".into(),
            kubelet_port: 10250,
            pod_cidr: Some("198.18.1.0/24".into()),
            labels: BTreeMap::from([("node-role.kubernetes.io/worker".into(), String::new())]),
            taints: vec![Taint { key: "dedicated".into(), value: String::new(), effect: "NoSchedule".into() }],
            cpu_millis: 2000,
            memory_bytes: 24 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 100 * 1024 * 1024 * 1024,
            max_pods: 110,
            kernel_version: "6.18".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            runtime_version: "containerd://1.6.20".into(),
            boot_id: "b".into(),
            machine_id: "m".into(),
            images: vec![NodeImage { names: vec!["docker.io/library/busybox:1.36".into()], size_bytes: 1_000_000 }],
            pressure: Default::default(),
        }
    }

    #[test]
    fn node_object_carries_well_known_labels_and_pod_cidr() {
        let n = node_object(&facts());
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "node-1");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/worker"], "");
        assert_eq!(n["spec"]["podCIDRs"][0], "198.18.1.0/24");
        assert_eq!(n["spec"]["taints"], json!([{"key": "dedicated", "effect": "NoSchedule"}]));
    }

    #[test]
    fn ready_condition_follows_runtime_health() {
        let s = node_status(&facts(), &RuntimeHealth::Ready, "t0", None);
        assert_eq!(s["conditions"][3]["status"], "True");
        assert_eq!(s["capacity"]["cpu"], "2");
        assert_eq!(s["capacity"]["memory"], "25165824Ki");
        assert_eq!(s["images"], json!([{"names": ["docker.io/library/busybox:1.36"], "sizeBytes": 1_000_000}]));
        let down = node_status(&facts(), &RuntimeHealth::Down("connection refused".into()), "t1", Some(&s));
        assert_eq!(down["conditions"][3]["status"], "False");
        assert_eq!(down["conditions"][3]["reason"], "KubeletNotReady");
        assert_eq!(down["conditions"][3]["lastTransitionTime"], "t1");
        // Unchanged conditions keep their transition time.
        assert_eq!(down["conditions"][0]["lastTransitionTime"], "t0");
    }

    #[test]
    fn pressure_conditions_follow_the_eviction_signals() {
        let calm = node_status(&facts(), &RuntimeHealth::Ready, "t0", None);
        let mut f = facts();
        f.pressure = crate::eviction::Pressure { memory: true, disk: true, pid: false };
        let s = node_status(&f, &RuntimeHealth::Ready, "t1", Some(&calm));
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][0]["reason"], "KubeletHasInsufficientMemory");
        assert_eq!(s["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(s["conditions"][1]["reason"], "KubeletHasDiskPressure");
        assert_eq!(s["conditions"][2]["status"], "False");
        assert_eq!(s["conditions"][2]["lastTransitionTime"], "t0");
    }
}
