//! Builders for unit tests: nodes and pods with just the fields a test cares about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::framework::{NodeInfo, PodInfo};

pub fn node(name: &str, cpu: &str, mem: &str) -> Node {
    let alloc: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(mem.into())),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]
    .into();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus { allocatable: Some(alloc.clone()), capacity: Some(alloc), ..Default::default() }),
    }
}

pub fn with_labels(mut n: Node, labels: &[(&str, &str)]) -> Node {
    let m = n.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        m.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn with_taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
    n.spec.get_or_insert_with(Default::default).taints.get_or_insert_with(Vec::new).push(Taint {
        key: key.into(),
        value: Some(value.into()).filter(|v: &String| !v.is_empty()),
        effect: effect.into(),
        time_added: None,
    });
    n
}

pub fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
    let mut req = BTreeMap::new();
    if !cpu.is_empty() {
        req.insert("cpu".to_string(), Quantity(cpu.into()));
    }
    if !mem.is_empty() {
        req.insert("memory".to_string(), Quantity(mem.into()));
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                resources: Some(ResourceRequirements { requests: Some(req), ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

pub fn pod_labels(mut p: Pod, labels: &[(&str, &str)]) -> Pod {
    let m = p.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        m.insert(k.to_string(), v.to_string());
    }
    p
}

/// A NodeInfo for `n` with `pods` on it.
pub fn node_info(n: Node, pods: Vec<Pod>) -> NodeInfo {
    let name = n.metadata.name.clone().unwrap_or_default();
    let mut ni = NodeInfo::new(&name);
    ni.set_node(n);
    for p in pods {
        ni.add_pod(std::sync::Arc::new(PodInfo::new(p)));
    }
    ni
}
