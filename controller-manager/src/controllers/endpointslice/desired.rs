//! The pure half shared by the EndpointSlice and Endpoints controllers: which pods a Service
//! lists, with which conditions, and which ports (named targetPorts resolved per pod).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::owner::{is_ready, is_terminated};

/// Endpoints keyed by pod name, per port set.
type ByPorts = BTreeMap<String, (Vec<EndpointPort>, Vec<(String, Endpoint)>)>;
/// Ready and not-ready addresses, per port set.
type SubsetsByPorts = BTreeMap<
    String,
    (
        Vec<EndpointPort>,
        Vec<k8s_openapi::api::core::v1::EndpointAddress>,
        Vec<k8s_openapi::api::core::v1::EndpointAddress>,
    ),
>;

/// One port set and its endpoints, split into slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub ports: Vec<EndpointPort>,
    pub chunks: Vec<Vec<Endpoint>>,
}

/// upstream `podutil.FindPort`: a number is itself; a name is the pod's container port of
/// that name and protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            }),
        },
    }
}

/// The key a port set is grouped and matched by.
pub fn port_key(ports: &[EndpointPort]) -> String {
    let mut v: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}",
                p.name.as_deref().unwrap_or_default(),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.port.unwrap_or(0)
            )
        })
        .collect();
    v.sort();
    v.join(",")
}

fn pod_ipv4(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    let ips = st.pod_ips.iter().flatten().map(|i| i.ip.clone());
    std::iter::once(st.pod_ip.clone().unwrap_or_default())
        .chain(ips)
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
}

/// upstream `ShouldPodBeInEndpoints` for slices (terminating pods included, marked).
pub fn listed(p: &Pod) -> bool {
    !is_terminated(p) && pod_ipv4(p).is_some()
}

/// upstream `endpointutil.ShouldSetHostname`: a pod with a hostname whose subdomain names
/// the Service (same namespace) is published under that hostname, so cluster DNS serves
/// `<hostname>.<svc>.<ns>.svc.<domain>` (StatefulSet pods, pods with hostname + subdomain).
pub fn hostname(p: &Pod, svc: &Service) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same = spec.subdomain.is_some()
        && spec.subdomain == svc.metadata.name
        && p.metadata.namespace == svc.metadata.namespace;
    same.then(|| hostname.to_owned())
}

/// The endpoint of `p` (its IPv4 address, conditions, hostname, node, zone, targetRef).
pub fn endpoint(p: &Pod, svc: &Service, publish_not_ready: bool, zones: &HashMap<String, String>) -> Option<Endpoint> {
    let ip = pod_ipv4(p)?;
    let terminating = p.metadata.deletion_timestamp.is_some();
    let ready = is_ready(p);
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            // upstream: publishNotReadyAddresses makes every endpoint ready.
            ready: Some(publish_not_ready || (ready && !terminating)),
            serving: Some(publish_not_ready || ready),
            terminating: Some(terminating),
        }),
        hostname: hostname(p, svc),
        node_name: node.clone(),
        zone: node.and_then(|n| zones.get(&n).cloned()),
        target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Pod".into()),
            namespace: p.metadata.namespace.clone(),
            name: p.metadata.name.clone(),
            uid: p.metadata.uid.clone(),
            ..Default::default()
        }),
        deprecated_topology: None,
        hints: None,
    })
}

/// The ports of `svc` as `p` serves them; `None` if a named targetPort is missing on it.
pub fn endpoint_ports(svc: &Service, p: &Pod) -> Vec<EndpointPort> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    ports
        .iter()
        .filter_map(|sp| {
            let n = find_port(p, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(n),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// The pods `svc`'s selector matches (none for a Service without a selector).
pub fn selected<'a>(svc: &Service, pods: &'a [Arc<Pod>]) -> Vec<&'a Arc<Pod>> {
    pods.iter().filter(|p| selects(svc, p.metadata.labels.as_ref())).collect()
}

/// Whether the Service's selector selects a pod with these labels; an empty or missing
/// selector selects nothing (such a Service's endpoints are managed by hand).
pub fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else {
        return false;
    };
    sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The slices `svc` should have: endpoints grouped by their resolved ports, sorted by pod
/// name, split into chunks of `max`.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>], zones: &HashMap<String, String>, max: usize) -> Vec<Group> {
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut groups: ByPorts = BTreeMap::new();
    for p in selected(svc, pods).into_iter().filter(|p| listed(p)) {
        let Some(ep) = endpoint(p, svc, publish, zones) else { continue };
        let ports = endpoint_ports(svc, p);
        let g = groups.entry(port_key(&ports)).or_insert_with(|| (ports, Vec::new()));
        g.1.push((p.metadata.name.clone().unwrap_or_default(), ep));
    }
    groups
        .into_values()
        .map(|(ports, mut eps)| {
            eps.sort_by(|a, b| a.0.cmp(&b.0));
            let eps: Vec<Endpoint> = eps.into_iter().map(|(_, e)| e).collect();
            Group { ports, chunks: eps.chunks(max.max(1)).map(|c| c.to_vec()).collect() }
        })
        .collect()
}

/// The legacy Endpoints subsets: per port set, ready addresses and not-ready ones (upstream's
/// endpoints controller leaves terminating pods out unless publishNotReadyAddresses).
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<k8s_openapi::api::core::v1::EndpointSubset> {
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, EndpointSubset};
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let mut groups: SubsetsByPorts = BTreeMap::new();
    for p in selected(svc, pods).into_iter().filter(|p| listed(p)) {
        if p.metadata.deletion_timestamp.is_some() && !publish {
            continue;
        }
        let Some(ip) = pod_ipv4(p) else { continue };
        let addr = EndpointAddress {
            ip,
            hostname: hostname(p, svc),
            node_name: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let ports = endpoint_ports(svc, p);
        let g = groups.entry(port_key(&ports)).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || is_ready(p) {
            g.1.push(addr);
        } else {
            g.2.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|p| CorePort {
                            name: p.name.filter(|n| !n.is_empty()),
                            port: p.port.unwrap_or(0),
                            protocol: p.protocol,
                            app_protocol: p.app_protocol,
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(publish: bool) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": publish,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090, "targetPort": 9090}]},
        }))
        .expect("service")
    }

    fn pod(name: &str, ip: &str, http_port: i32, ready: bool, terminating: bool) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-0", "containers": [{"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": http_port}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn zones() -> HashMap<String, String> {
        [("node-0".to_string(), "zone-a".to_string())].into()
    }

    #[test]
    fn a_selector_selects_pods_with_all_its_labels_and_an_empty_one_selects_none() {
        let labels = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let web = svc(false);
        assert!(selects(&web, Some(&labels(&[("app", "web"), ("tier", "x")]))));
        assert!(!selects(&web, Some(&labels(&[("app", "db")]))));
        assert!(!selects(&web, None));
        let mut bare = svc(false);
        bare.spec.as_mut().expect("spec").selector = Some(BTreeMap::new());
        assert!(!selects(&bare, Some(&labels(&[("app", "web")]))));
        bare.spec.as_mut().expect("spec").selector = None;
        assert!(!selects(&bare, Some(&labels(&[("app", "web")]))));
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_group_pods() {
        let pods = [pod("a", "198.18.0.1", 8080, true, false), pod("b", "198.18.0.2", 8081, true, false)];
        let groups = desired_slices(&svc(false), &pods, &zones(), 100);
        assert_eq!(groups.len(), 2, "two port sets");
        let ports: Vec<Vec<i32>> =
            groups.iter().map(|g| g.ports.iter().filter_map(|p| p.port).collect::<Vec<_>>()).collect();
        assert!(ports.contains(&vec![8080, 9090]) && ports.contains(&vec![8081, 9090]), "{ports:?}");
        let ep = &groups[0].chunks[0][0];
        assert_eq!(ep.zone.as_deref(), Some("zone-a"));
        assert_eq!(ep.node_name.as_deref(), Some("node-0"));
    }

    #[test]
    fn conditions_follow_readiness_termination_and_publish_not_ready() {
        let pods = [
            pod("ready", "198.18.0.1", 8080, true, false),
            pod("unready", "198.18.0.2", 8080, false, false),
            pod("leaving", "198.18.0.3", 8080, true, true),
        ];
        let g = &desired_slices(&svc(false), &pods, &zones(), 100)[0];
        let cond = |i: usize| {
            let c = g.chunks[0][i].conditions.clone().expect("conditions");
            (c.ready, c.serving, c.terminating)
        };
        assert_eq!(cond(0), (Some(false), Some(true), Some(true)), "leaving: serving but not ready");
        assert_eq!(cond(1), (Some(true), Some(true), Some(false)));
        assert_eq!(cond(2), (Some(false), Some(false), Some(false)));
        let g = &desired_slices(&svc(true), &pods, &zones(), 100)[0];
        assert!(g.chunks[0].iter().all(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true)));
    }

    #[test]
    fn at_most_max_endpoints_per_slice() {
        let pods: Vec<Arc<Pod>> =
            (0..250).map(|i| pod(&format!("p{i:03}"), &format!("198.18.1.{}", i % 250), 8080, true, false)).collect();
        let g = &desired_slices(&svc(false), &pods, &zones(), 100)[0];
        assert_eq!(g.chunks.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_drop_terminating() {
        let pods = [
            pod("ready", "198.18.0.1", 8080, true, false),
            pod("unready", "198.18.0.2", 8080, false, false),
            pod("leaving", "198.18.0.3", 8080, true, true),
        ];
        let subsets = desired_subsets(&svc(false), &pods);
        assert_eq!(subsets.len(), 1);
        let ips = |v: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            v.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&subsets[0].addresses), ["198.18.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["198.18.0.2"]);
        let ports: Vec<i32> = subsets[0].ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [8080, 9090]);
    }

    #[test]
    fn hostname_is_set_when_the_pods_subdomain_names_the_service() {
        let with = |hostname: Option<&str>, subdomain: Option<&str>, ns: &str| {
            let mut p = (*pod("web-0", "198.18.0.1", 8080, true, false)).clone();
            let spec = p.spec.as_mut().expect("spec");
            spec.hostname = hostname.map(str::to_owned);
            spec.subdomain = subdomain.map(str::to_owned);
            p.metadata.namespace = Some(ns.to_owned());
            Arc::new(p)
        };
        let host = |p: Arc<Pod>| {
            let slice = desired_slices(&svc(false), std::slice::from_ref(&p), &zones(), 100);
            let subsets = desired_subsets(&svc(false), &[p]);
            let from_slice = slice.first().and_then(|g| g.chunks[0][0].hostname.clone());
            let from_subset = subsets.first().and_then(|s| s.addresses.as_ref()?[0].hostname.clone());
            assert_eq!(from_slice, from_subset, "EndpointSlice and Endpoints agree");
            from_slice
        };
        assert_eq!(host(with(Some("web-0"), Some("web"), "default")), Some("web-0".to_owned()));
        assert_eq!(host(with(Some("web-0"), Some("other"), "default")), None, "another service's subdomain");
        assert_eq!(host(with(Some("web-0"), None, "default")), None, "no subdomain");
        assert_eq!(host(with(None, Some("web"), "default")), None, "no hostname");
    }

    #[test]
    fn a_service_without_a_selector_lists_nothing() {
        let mut s = svc(false);
        s.spec.as_mut().expect("spec").selector = None;
        assert!(desired_slices(&s, &[pod("a", "198.18.0.1", 8080, true, false)], &zones(), 100).is_empty());
    }
}
