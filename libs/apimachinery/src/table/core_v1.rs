//! Printers for the core (`v1`) group, except pods (`pod.rs`) and events (`event.rs`).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{
    access_modes, age, arr_at, container_cells, format_labels, get, int_at, is_deleting, join_host_port, len_at,
    map_at, name, opt_int, opt_str, quantity, str_at,
};
use super::{col, wide, Printer, AGE, CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION, NAME};

pub(super) const POD_TEMPLATES: Printer = Printer {
    columns: &[
        NAME,
        col("Containers", "string", CONTAINERS_DESCRIPTION),
        col("Images", "string", IMAGES_DESCRIPTION),
        col("Pod Labels", "string", "Labels of the pod template."),
    ],
    cells: pod_template_cells,
};

fn pod_template_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(obj, &["template", "spec", "containers"]));
    vec![name(obj), names, images, Value::from(format_labels(map_at(obj, &["template", "metadata", "labels"])))]
}

pub(super) const SERVICES: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName."),
        col("Cluster-IP", "string", "Virtual IP of the service inside the cluster; None for headless services."),
        col("External-IP", "string", "Addresses outside the cluster at which the service is reachable."),
        col("Port(s)", "string", "Ports the service exposes, as port[:nodePort]/protocol."),
        AGE,
        wide("Selector", "string", "Labels of the pods traffic is routed to."),
    ],
    cells: service_cells,
};

/// Sorted, de-duplicated IPs (or hostnames when there is no IP) of load-balancer ingress
/// points. upstream cuts this to 16 characters only in non-wide output; the server always
/// prints wide, so nothing is cut.
pub(super) fn load_balancer_addresses(ingress: &[Value]) -> String {
    let mut addrs: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, &["ip"]);
            let host = str_at(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.join(",")
}

fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external_ips: Vec<&str> = arr_at(svc, &["spec", "externalIPs"]).iter().filter_map(Value::as_str).collect();
    match type_ {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_addresses(arr_at(svc, &["status", "loadBalancer", "ingress"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = lb.split(',').filter(|s| !s.is_empty()).collect();
                all.extend(external_ips);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            // upstream: defaulting sets the protocol to TCP.
            let protocol = opt_str(p, &["protocol"]).unwrap_or("TCP");
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // upstream: defaulting sets the type to ClusterIP.
    let type_ = opt_str(svc, &["spec", "type"]).unwrap_or("ClusterIP");
    // upstream: spec.clusterIPs[0]; v1 conversion fills clusterIPs from clusterIP.
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(svc, &["spec", "clusterIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    vec![
        name(svc),
        Value::from(type_),
        Value::from(cluster_ip),
        Value::from(service_external_ip(svc, type_)),
        Value::from(service_ports(svc)),
        age(svc, now),
        Value::from(format_labels(map_at(svc, &["spec", "selector"]))),
    ]
}

pub(super) const ENDPOINTS: Printer = Printer {
    columns: &[NAME, col("Endpoints", "string", "Addresses and ports of the endpoints, the first three shown."), AGE],
    cells: endpoints_cells,
};

/// upstream `formatEndpoints`: up to three `ip:port` (or bare IPs for port-less subsets),
/// then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses.iter().take(MAX.saturating_sub(list.len())) {
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses.iter().take(MAX.saturating_sub(list.len())) {
                list.push(join_host_port(str_at(a, &["ip"]), int_at(port, &["port"])));
            }
        }
    }
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_cells(ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(ep), Value::from(format_endpoints(ep)), age(ep, now)]
}

pub(super) const CONFIG_MAPS: Printer = Printer {
    columns: &[NAME, col("Data", "string", "Number of keys in data and binaryData."), AGE],
    cells: config_map_cells,
};

fn config_map_cells(cm: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let keys = len_at(cm, &["data"]) + len_at(cm, &["binaryData"]);
    vec![name(cm), Value::from(keys), age(cm, now)]
}

pub(super) const SECRETS: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", "Type of the secret, which says what keys data holds."),
        col("Data", "string", "Number of keys in data."),
        AGE,
    ],
    cells: secret_cells,
};

fn secret_cells(secret: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // upstream: defaulting sets the type to Opaque.
    let type_ = opt_str(secret, &["type"]).filter(|t| !t.is_empty()).unwrap_or("Opaque");
    vec![name(secret), Value::from(type_), Value::from(len_at(secret, &["data"])), age(secret, now)]
}

pub(super) const SERVICE_ACCOUNTS: Printer = Printer {
    columns: &[NAME, col("Secrets", "string", "Number of secrets listed in the service account."), AGE],
    cells: service_account_cells,
};

fn service_account_cells(sa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(sa), Value::from(len_at(sa, &["secrets"])), age(sa, now)]
}

pub(super) const NODES: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Readiness of the node, and whether it is cordoned."),
        col("Roles", "string", "Roles of the node, from its node-role.kubernetes.io/<role> labels."),
        AGE,
        col("Version", "string", "Version of the kubelet on the node."),
        wide("Internal-IP", "string", "First InternalIP address of the node."),
        wide("External-IP", "string", "First ExternalIP address of the node."),
        wide("OS-Image", "string", "Operating system image reported by the node."),
        wide("Kernel-Version", "string", "Kernel version reported by the node."),
        wide("Container-Runtime", "string", "Container runtime and version reported by the node."),
    ],
    cells: node_cells,
};

const LABEL_NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const LABEL_NODE_ROLE: &str = "kubernetes.io/role";

/// upstream `findNodeRoles`: `node-role.kubernetes.io/<role>` label keys and the value of a
/// `kubernetes.io/role` label, sorted and de-duplicated.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = map_at(node, &["metadata", "labels"])
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix(LABEL_NODE_ROLE_PREFIX) {
                (!role.is_empty()).then(|| role.to_string())
            } else if k == LABEL_NODE_ROLE {
                v.as_str().filter(|r| !r.is_empty()).map(str::to_string)
            } else {
                None
            }
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    roles
}

fn node_status(node: &Value) -> String {
    let mut status: Vec<&str> = Vec::new();
    // upstream: only the Ready condition is summarised; the last one of that type wins.
    if let Some(ready) = arr_at(node, &["status", "conditions"]).iter().rev().find(|c| str_at(c, &["type"]) == "Ready")
    {
        status.push(if str_at(ready, &["status"]) == "True" { "Ready" } else { "NotReady" });
    } else {
        status.push("Unknown");
    }
    if get(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == type_)
        .map(|a| str_at(a, &["address"]).to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let roles = node_roles(node);
    let info = |field: &str| match str_at(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    vec![
        name(node),
        Value::from(node_status(node)),
        Value::from(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        age(node, now),
        Value::from(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(node_address(node, "InternalIP")),
        Value::from(node_address(node, "ExternalIP")),
        Value::from(info("osImage")),
        Value::from(info("kernelVersion")),
        Value::from(info("containerRuntimeVersion")),
    ]
}

pub(super) const NAMESPACES: Printer = Printer {
    columns: &[NAME, col("Status", "string", "Phase of the namespace: Active or Terminating."), AGE],
    cells: namespace_cells,
};

fn namespace_cells(ns: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // upstream: defaulting sets the phase to Active.
    let phase = opt_str(ns, &["status", "phase"]).filter(|p| !p.is_empty()).unwrap_or("Active");
    vec![name(ns), Value::from(phase), age(ns, now)]
}

pub(super) const PERSISTENT_VOLUMES: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", "Storage capacity of the volume."),
        col("Access Modes", "string", "Ways the volume can be mounted: RWO, ROX, RWX, RWOP."),
        col(
            "Reclaim Policy",
            "string",
            "What happens to the volume when its claim is released: Retain, Delete or Recycle.",
        ),
        col("Status", "string", "Phase of the volume."),
        col("Claim", "string", "Claim bound to the volume, as namespace/name."),
        col("StorageClass", "string", "Storage class of the volume."),
        col("VolumeAttributesClass", "string", "Volume attributes class of the volume."),
        col("Reason", "string", "Short reason explaining why the volume is in its phase."),
        AGE,
        wide("VolumeMode", "string", "Filesystem or Block."),
    ],
    cells: persistent_volume_cells,
};

/// upstream: the beta storage-class annotation takes precedence over the spec field.
const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

fn storage_class(obj: &Value) -> String {
    if let Some(class) = opt_str(obj, &["metadata", "annotations", BETA_STORAGE_CLASS_ANNOTATION]) {
        return class.to_string();
    }
    str_at(obj, &["spec", "storageClassName"]).to_string()
}

fn volume_mode(obj: &Value) -> &str {
    // upstream: defaulting sets the volume mode to Filesystem.
    opt_str(obj, &["spec", "volumeMode"]).unwrap_or("Filesystem")
}

fn phase_or_terminating<'a>(obj: &'a Value, default: &'a str) -> &'a str {
    if is_deleting(obj) {
        "Terminating"
    } else {
        opt_str(obj, &["status", "phase"]).filter(|p| !p.is_empty()).unwrap_or(default)
    }
}

fn persistent_volume_cells(pv: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match get(pv, &["spec", "claimRef"]) {
        Some(r) if r.is_object() => {
            format!("{}/{}", str_at(r, &["namespace"]), str_at(r, &["name"]))
        }
        _ => String::new(),
    };
    // upstream: defaulting sets the reclaim policy to Retain and the phase to Pending.
    let reclaim = opt_str(pv, &["spec", "persistentVolumeReclaimPolicy"]).unwrap_or("Retain");
    vec![
        name(pv),
        Value::from(quantity(get(pv, &["spec", "capacity", "storage"]))),
        Value::from(access_modes(arr_at(pv, &["spec", "accessModes"]))),
        Value::from(reclaim),
        Value::from(phase_or_terminating(pv, "Pending")),
        Value::from(claim),
        Value::from(storage_class(pv)),
        Value::from(opt_str(pv, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        Value::from(str_at(pv, &["status", "reason"])),
        age(pv, now),
        Value::from(volume_mode(pv)),
    ]
}

pub(super) const PERSISTENT_VOLUME_CLAIMS: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Phase of the claim."),
        col("Volume", "string", "Volume bound to the claim."),
        col("Capacity", "string", "Storage capacity of the bound volume."),
        col("Access Modes", "string", "Access modes of the bound volume: RWO, ROX, RWX, RWOP."),
        col("StorageClass", "string", "Storage class requested by the claim."),
        col("VolumeAttributesClass", "string", "Volume attributes class requested by the claim."),
        AGE,
        wide("VolumeMode", "string", "Filesystem or Block."),
    ],
    cells: persistent_volume_claim_cells,
};

fn persistent_volume_claim_cells(pvc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let volume = str_at(pvc, &["spec", "volumeName"]);
    // upstream: capacity and access modes are shown once the claim is bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (quantity(get(pvc, &["status", "capacity", "storage"])), access_modes(arr_at(pvc, &["status", "accessModes"])))
    };
    vec![
        name(pvc),
        Value::from(phase_or_terminating(pvc, "Pending")),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(pvc)),
        Value::from(opt_str(pvc, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        age(pvc, now),
        Value::from(volume_mode(pvc)),
    ]
}

pub(super) const RESOURCE_QUOTAS: Printer = Printer {
    columns: &[
        NAME,
        col("Request", "string", "Used out of hard quota for every resource that is not a limit."),
        col("Limit", "string", "Used out of hard quota for every limits.* resource."),
        AGE,
    ],
    cells: resource_quota_cells,
};

fn resource_quota_cells(quota: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut resources: Vec<&String> =
        map_at(quota, &["status", "hard"]).map(|m| m.keys().collect()).unwrap_or_default();
    resources.sort_unstable();
    let mut requests: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    for resource in resources {
        let used = quantity(get(quota, &["status", "used", resource]));
        let hard = quantity(get(quota, &["status", "hard", resource]));
        let entry = format!("{resource}: {used}/{hard}");
        // upstream: resources named limits.<x> go to the Limit column.
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![name(quota), Value::from(requests.join(", ")), Value::from(limits.join(", ")), age(quota, now)]
}

pub(super) const REPLICATION_CONTROLLERS: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Number of replicas wanted."),
        col("Current", "integer", "Number of replicas observed."),
        col("Ready", "integer", "Number of ready replicas."),
        AGE,
        wide("Containers", "string", CONTAINERS_DESCRIPTION),
        wide("Images", "string", IMAGES_DESCRIPTION),
        wide("Selector", "string", "Labels of the pods the controller manages."),
    ],
    cells: replication_controller_cells,
};

fn replication_controller_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(rc, &["spec", "template", "spec", "containers"]));
    vec![
        name(rc),
        // upstream: defaulting sets replicas to 1.
        Value::from(opt_int(rc, &["spec", "replicas"]).unwrap_or(1)),
        Value::from(int_at(rc, &["status", "replicas"])),
        Value::from(int_at(rc, &["status", "readyReplicas"])),
        age(rc, now),
        names,
        images,
        Value::from(format_labels(map_at(rc, &["spec", "selector"]))),
    ]
}

pub(super) const COMPONENT_STATUSES: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Healthy, Unhealthy or Unknown."),
        col("Message", "string", "Message of the Healthy condition."),
        col("Error", "string", "Error of the Healthy condition."),
    ],
    cells: component_status_cells,
};

fn component_status_cells(cs: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let healthy = arr_at(cs, &["conditions"]).iter().find(|c| str_at(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if str_at(c, &["status"]) == "True" { "Healthy" } else { "Unhealthy" },
            str_at(c, &["message"]),
            str_at(c, &["error"]),
        ),
        None => ("Unknown", "", ""),
    };
    vec![name(cs), Value::from(status), Value::from(message), Value::from(error)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "creationTimestamp": "2024-04-28T12:00:00Z"})
    }

    #[test]
    fn service_ports_show_nodeport() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "<none>"),
            (json!([{"port": 80, "protocol": "TCP"}]), "80/TCP"),
            (json!([{"port": 80}]), "80/TCP"),
            (
                json!([{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                       {"port": 53, "protocol": "UDP"}]),
                "80:30080/TCP,53/UDP",
            ),
        ];
        for (ports, want) in cases {
            let svc = json!({"metadata": meta("s"), "spec": {"ports": ports}});
            assert_eq!(service_cells(&svc, now())[4], json!(want), "{ports}");
        }
    }

    #[test]
    fn service_external_ip_by_type() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("cluster ip", json!({"spec": {"type": "ClusterIP"}}), "<none>"),
            (
                "cluster ip with external ips",
                json!({"spec": {"type": "ClusterIP", "externalIPs": ["1.2.3.4", "5.6.7.8"]}}),
                "1.2.3.4,5.6.7.8",
            ),
            ("node port", json!({"spec": {"type": "NodePort"}}), "<none>"),
            ("load balancer pending", json!({"spec": {"type": "LoadBalancer"}}), "<pending>"),
            (
                "load balancer ingress sorted, hostname when no ip",
                json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [
                    {"ip": "9.9.9.9"}, {"hostname": "lb.example.com"}, {"ip": "1.1.1.1"}]}}}),
                "1.1.1.1,9.9.9.9,lb.example.com",
            ),
            (
                "load balancer ingress then external ips",
                json!({"spec": {"type": "LoadBalancer", "externalIPs": ["5.5.5.5"]},
                       "status": {"loadBalancer": {"ingress": [{"ip": "1.1.1.1"}]}}}),
                "1.1.1.1,5.5.5.5",
            ),
            (
                "external name",
                json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                "db.example.com",
            ),
            ("unknown type", json!({"spec": {"type": "Weird"}}), "<unknown>"),
        ];
        for (case, svc, want) in cases {
            assert_eq!(service_cells(&svc, now())[3], json!(want), "{case}");
        }
    }

    #[test]
    fn service_cells_full_row() {
        let svc = json!({
            "metadata": meta("web"),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
                     "selector": {"app": "web", "tier": "fe"}},
        });
        assert_eq!(
            service_cells(&svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP"),
                json!("3d"),
                json!("app=web,tier=fe"),
            ]
        );
        let headless = json!({"spec": {"clusterIP": "None"}});
        assert_eq!(service_cells(&headless, now())[1], json!("ClusterIP"));
        assert_eq!(service_cells(&headless, now())[2], json!("None"));
        assert_eq!(service_cells(&json!({}), now())[2], json!("<none>"));
        assert_eq!(service_cells(&json!({}), now())[6], json!("<none>"));
    }

    #[test]
    fn endpoints_show_first_three_addresses() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "<none>"),
            (json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]), "10.0.0.1,10.0.0.2"),
            (
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                        "ports": [{"port": 8080}]}]),
                "10.0.0.1:8080,[fd00::1]:8080",
            ),
            (
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}]),
                "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
            ),
            (json!([{"notReadyAddresses": [{"ip": "10.0.0.1"}]}]), ""),
        ];
        for (subsets, want) in cases {
            let ep = json!({"metadata": meta("e"), "subsets": subsets});
            assert_eq!(endpoints_cells(&ep, now())[1], json!(want), "{subsets}");
        }
    }

    #[test]
    fn node_roles_from_labels() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "<none>"),
            (
                json!({"node-role.kubernetes.io/control-plane": "",
                       "node-role.kubernetes.io/master": ""}),
                "control-plane,master",
            ),
            (json!({"kubernetes.io/role": "worker", "node-role.kubernetes.io/worker": "x"}), "worker"),
            (json!({"node-role.kubernetes.io/": "", "kubernetes.io/role": ""}), "<none>"),
        ];
        for (labels, want) in cases {
            let node = json!({"metadata": {"name": "n", "labels": labels}});
            assert_eq!(node_cells(&node, now())[2], json!(want), "{labels}");
        }
    }

    #[test]
    fn node_status_shows_ready_and_scheduling_disabled() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "Unknown"),
            (json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}), "Ready"),
            (
                json!({"status": {"conditions": [
                    {"type": "MemoryPressure", "status": "True"},
                    {"type": "Ready", "status": "Unknown"}]}}),
                "NotReady",
            ),
            (
                json!({"spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                "Ready,SchedulingDisabled",
            ),
            (json!({"spec": {"unschedulable": true}}), "Unknown,SchedulingDisabled"),
        ];
        for (node, want) in cases {
            assert_eq!(node_cells(&node, now())[1], json!(want), "{node}");
        }
    }

    #[test]
    fn node_wide_columns() {
        let node = json!({
            "metadata": meta("n1"),
            "status": {
                "addresses": [{"type": "Hostname", "address": "n1"},
                              {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"},
            },
        });
        assert_eq!(
            node_cells(&node, now())[3..].to_vec(),
            vec![
                json!("3d"),
                json!("v1.33.1"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("containerd://1.7.0"),
            ]
        );
        let bare = node_cells(&json!({}), now());
        assert_eq!(bare[7], json!("<unknown>"));
        assert_eq!(bare[4], json!(""));
    }

    #[test]
    fn config_map_secret_and_service_account_counts() {
        let cm = json!({"metadata": meta("c"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
        assert_eq!(config_map_cells(&cm, now()), vec![json!("c"), json!(3), json!("3d")]);
        let secret = json!({"metadata": meta("s"), "type": "kubernetes.io/tls",
                            "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(secret_cells(&secret, now()), vec![json!("s"), json!("kubernetes.io/tls"), json!(2), json!("3d")]);
        assert_eq!(secret_cells(&json!({}), now())[1], json!("Opaque"));
        let sa = json!({"metadata": meta("default"), "secrets": [{"name": "t"}]});
        assert_eq!(service_account_cells(&sa, now()), vec![json!("default"), json!(1), json!("3d")]);
    }

    #[test]
    fn namespace_status_is_phase() {
        let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Terminating"}});
        assert_eq!(namespace_cells(&ns, now()), vec![json!("kube-system"), json!("Terminating"), json!("3d")]);
        assert_eq!(namespace_cells(&json!({}), now())[1], json!("Active"));
        assert_eq!(namespace_cells(&json!({}), now())[2], json!("<unknown>"));
    }

    #[test]
    fn persistent_volume_row() {
        let pv = json!({
            "metadata": meta("pv1"),
            "spec": {"capacity": {"storage": "10Gi"},
                     "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete",
                     "claimRef": {"namespace": "default", "name": "data"},
                     "storageClassName": "standard"},
            "status": {"phase": "Bound"},
        });
        assert_eq!(
            persistent_volume_cells(&pv, now()),
            vec![
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("standard"),
                json!("<unset>"),
                json!(""),
                json!("3d"),
                json!("Filesystem"),
            ]
        );
        let mut deleting = pv.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:00:00Z");
        deleting["metadata"]["annotations"] = json!({"volume.beta.kubernetes.io/storage-class": "legacy"});
        let cells = persistent_volume_cells(&deleting, now());
        assert_eq!(cells[4], json!("Terminating"));
        assert_eq!(cells[6], json!("legacy"));
    }

    #[test]
    fn persistent_volume_claim_shows_capacity_once_bound() {
        let pending = json!({"metadata": meta("data"),
                             "spec": {"resources": {"requests": {"storage": "1Gi"}},
                                      "storageClassName": "standard"},
                             "status": {"phase": "Pending"}});
        assert_eq!(
            persistent_volume_claim_cells(&pending, now()),
            vec![
                json!("data"),
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("standard"),
                json!("<unset>"),
                json!("3d"),
                json!("Filesystem"),
            ]
        );
        let bound = json!({"metadata": meta("data"),
                           "spec": {"volumeName": "pv1", "volumeMode": "Block"},
                           "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                                      "accessModes": ["ReadWriteOncePod"]}});
        let cells = persistent_volume_claim_cells(&bound, now());
        assert_eq!(cells[1..5].to_vec(), vec![json!("Bound"), json!("pv1"), json!("10Gi"), json!("RWOP")]);
        assert_eq!(cells[5], json!(""));
        assert_eq!(cells[8], json!("Block"));
    }

    #[test]
    fn resource_quota_splits_requests_and_limits() {
        let quota = json!({
            "metadata": meta("q"),
            "status": {
                "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi", "limits.cpu": "4"},
                "used": {"pods": "3", "requests.cpu": "500m", "limits.cpu": "1"},
            },
        });
        assert_eq!(
            resource_quota_cells(&quota, now()),
            vec![
                json!("q"),
                json!("pods: 3/10, requests.cpu: 500m/2"),
                json!("limits.cpu: 1/4, limits.memory: 0/4Gi"),
                json!("3d"),
            ]
        );
    }

    #[test]
    fn replication_controller_and_pod_template_rows() {
        let rc = json!({
            "metadata": meta("rc"),
            "spec": {"selector": {"app": "web"},
                     "template": {"spec": {"containers": [
                         {"name": "a", "image": "nginx:1"}, {"name": "b", "image": "busybox"}]}}},
            "status": {"replicas": 1},
        });
        assert_eq!(
            replication_controller_cells(&rc, now()),
            vec![
                json!("rc"),
                json!(1),
                json!(1),
                json!(0),
                json!("3d"),
                json!("a,b"),
                json!("nginx:1,busybox"),
                json!("app=web"),
            ]
        );
        let pt = json!({"metadata": meta("pt"),
                        "template": {"metadata": {"labels": {"b": "2", "a": "1"}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}});
        assert_eq!(pod_template_cells(&pt, now()), vec![json!("pt"), json!("c"), json!("i"), json!("a=1,b=2")]);
    }

    #[test]
    fn component_status_from_healthy_condition() {
        let cs = json!({"metadata": {"name": "etcd-0"},
                        "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]});
        assert_eq!(component_status_cells(&cs, now()), vec![json!("etcd-0"), json!("Healthy"), json!("ok"), json!("")]);
        assert_eq!(component_status_cells(&json!({}), now())[1], json!("Unknown"));
    }
}
