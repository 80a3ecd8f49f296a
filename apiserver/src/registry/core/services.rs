//! core/v1 Service: defaulting, validation, and ClusterIP / NodePort allocation. Each
//! allocated IP or port is a key in etcd (`/ranges/serviceips/<ip>`,
//! `/ranges/servicenodeports/<port>`) created in the same transaction as the Service, so two
//! concurrent creates can never get the same one, and a failed create leaks nothing.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use futures::future::BoxFuture;
use rand::Rng;
use serde_json::{json, Value};

use apimachinery::status::ApiError;
use apimachinery::validation::{FieldError, FieldErrors, NameValidator};

use crate::registry::{SideEffects, Strategy};
use crate::storage::Etcd;

const IP_PREFIX: &str = "/ranges/serviceips/";
const PORT_PREFIX: &str = "/ranges/servicenodeports/";

/// An IPv4 CIDR range.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    pub base: u32,
    pub bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let bits: u8 = bits.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Self { base: u32::from(ip) & mask, bits })
    }
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.bits)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.bits);
        u32::from(ip) & mask == self.base
    }
    /// The n-th address of the range (1 = the `kubernetes` service, 10 = cluster DNS).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }
}

pub struct ServiceStrategy {
    pub etcd: Option<Etcd>,
    pub cidr: Cidr,
    pub node_ports: (u16, u16),
}

fn is_headless(obj: &Value) -> bool {
    obj["spec"].get("clusterIP").and_then(Value::as_str) == Some("None")
}

fn svc_type(obj: &Value) -> &str {
    obj["spec"].get("type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn wants_node_ports(obj: &Value) -> bool {
    matches!(svc_type(obj), "NodePort" | "LoadBalancer")
}

impl ServiceStrategy {
    async fn used(&self, prefix: &str) -> Result<HashSet<String>, ApiError> {
        let Some(etcd) = &self.etcd else { return Ok(HashSet::new()) };
        let page = etcd.list(prefix, 0, None, 0).await.map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(page.items.into_iter().map(|kv| kv.key.trim_start_matches(prefix).to_string()).collect())
    }

    async fn allocate_ip(&self, obj: &mut Value, fx: &mut SideEffects) -> Result<(), ApiError> {
        if is_headless(obj) || svc_type(obj) == "ExternalName" {
            return Ok(());
        }
        let requested = obj["spec"].get("clusterIP").and_then(Value::as_str).unwrap_or("").to_string();
        let ip = if requested.is_empty() {
            let used = self.used(IP_PREFIX).await?;
            // Skip the network address and .1 (the `kubernetes` service's), and the last.
            let size = self.cidr.size();
            let free: Vec<u32> = (2..size - 1).filter(|n| !used.contains(&self.cidr.nth(*n).to_string())).collect();
            if free.is_empty() {
                return Err(ApiError::internal("failed to allocate a serviceIP: range is full"));
            }
            let pick = free[rand::rng().random_range(0..free.len())];
            self.cidr.nth(pick).to_string()
        } else {
            requested.clone()
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
        fx.creates.push((format!("{IP_PREFIX}{ip}"), b"{}".to_vec()));
        Ok(())
    }

    async fn allocate_node_ports(
        &self,
        obj: &mut Value,
        fx: &mut SideEffects,
        keep: &HashSet<i64>,
    ) -> Result<(), ApiError> {
        if !wants_node_ports(obj) {
            return Ok(());
        }
        let used = self.used(PORT_PREFIX).await?;
        let mut taken: HashSet<i64> = used.iter().filter_map(|s| s.parse().ok()).collect();
        let (lo, hi) = self.node_ports;
        let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) else { return Ok(()) };
        for p in ports.iter_mut() {
            let existing = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            if existing != 0 {
                if !keep.contains(&existing) {
                    fx.creates.push((format!("{PORT_PREFIX}{existing}"), b"{}".to_vec()));
                    taken.insert(existing);
                }
                continue;
            }
            let free: Vec<i64> = (lo as i64..=hi as i64).filter(|n| !taken.contains(n)).collect();
            if free.is_empty() {
                return Err(ApiError::internal("failed to allocate a nodePort: range is full"));
            }
            let port = free[rand::rng().random_range(0..free.len())];
            taken.insert(port);
            p["nodePort"] = json!(port);
            fx.creates.push((format!("{PORT_PREFIX}{port}"), b"{}".to_vec()));
        }
        Ok(())
    }
}

fn node_ports_of(obj: &Value) -> HashSet<i64> {
    obj["spec"]
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .filter(|p| *p != 0)
        .collect()
}

impl Strategy for ServiceStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn name_validator(&self) -> NameValidator {
        NameValidator::Dns1035Label
    }
    fn default(&self, obj: &mut Value) {
        let spec = &mut obj["spec"];
        if spec.get("type").is_none() {
            spec["type"] = json!("ClusterIP");
        }
        if spec.get("sessionAffinity").is_none() {
            spec["sessionAffinity"] = json!("None");
        }
        if spec.get("internalTrafficPolicy").is_none() && spec["type"] != "ExternalName" {
            spec["internalTrafficPolicy"] = json!("Cluster");
        }
        if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"))
            && spec.get("externalTrafficPolicy").is_none()
        {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        if spec["type"] != "ExternalName" {
            if spec.get("ipFamilies").is_none() {
                spec["ipFamilies"] = json!(["IPv4"]);
            }
            if spec.get("ipFamilyPolicy").is_none() {
                spec["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
                }
            }
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let t = svc_type(obj);
        let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !types.contains(&t) {
            errs.push(FieldError::not_supported("spec.type", t, &types));
        }
        let ports = obj["spec"].get("ports").and_then(Value::as_array);
        if t != "ExternalName" && !is_headless(obj) && ports.is_none_or(Vec::is_empty) {
            errs.push(FieldError::required("spec.ports", ""));
        }
        let ports = ports.cloned().unwrap_or_default();
        let mut names = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].port"),
                    port,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
            }
            if !name.is_empty() && !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("spec.ports[{i}].name"), name));
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                let (lo, hi) = self.node_ports;
                if np != 0 && !(lo as i64..=hi as i64).contains(&np) {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        np,
                        format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                    ));
                }
            }
        }
        if let Some(ip) = obj["spec"].get("clusterIP").and_then(Value::as_str) {
            if !ip.is_empty() && ip != "None" {
                match ip.parse::<Ipv4Addr>() {
                    Ok(a) if self.cidr.contains(a) => {}
                    _ => errs.push(FieldError::invalid(
                        "spec.clusterIPs[0]",
                        ip,
                        "failed to allocate IP: the provided IP is not in the valid range",
                    )),
                }
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(new);
        let old_ip = old["spec"].get("clusterIP");
        let new_ip = new["spec"].get("clusterIP");
        if old_ip.is_some() && new_ip != old_ip && svc_type(new) != "ExternalName" {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                new_ip.cloned().unwrap_or(Value::Null),
                "may not change once set",
            ));
        }
        errs
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // upstream: an update that leaves clusterIP out keeps the allocated one.
        if new["spec"].get("clusterIP").is_none_or(|v| v.as_str() == Some("")) {
            if let Some(ip) = old["spec"].get("clusterIP") {
                new["spec"]["clusterIP"] = ip.clone();
            }
            if let Some(ips) = old["spec"].get("clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        }
        // Node ports left out of an update keep their allocation, port by port.
        if wants_node_ports(new) && wants_node_ports(old) {
            let olds: Vec<Value> = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
            if let Some(ports) = new["spec"].get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut() {
                    if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        if let Some(o) = olds.iter().find(|o| o.get("port") == p.get("port")) {
                            if let Some(np) = o.get("nodePort") {
                                p["nodePort"] = np.clone();
                            }
                        }
                    }
                }
            }
        }
    }
    fn allocate<'a>(
        &'a self,
        new: &'a mut Value,
        old: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<SideEffects, ApiError>> {
        Box::pin(async move {
            let mut fx = SideEffects::default();
            match old {
                None => {
                    self.allocate_ip(new, &mut fx).await?;
                    self.allocate_node_ports(new, &mut fx, &HashSet::new()).await?;
                }
                Some(old) => {
                    let kept = node_ports_of(old);
                    self.allocate_node_ports(new, &mut fx, &kept).await?;
                    let now = if wants_node_ports(new) { node_ports_of(new) } else { HashSet::new() };
                    for p in kept.difference(&now) {
                        fx.deletes.push(format!("{PORT_PREFIX}{p}"));
                    }
                }
            }
            Ok(fx)
        })
    }
    fn release(&self, obj: &Value) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(ip) = obj["spec"].get("clusterIP").and_then(Value::as_str) {
            if !ip.is_empty() && ip != "None" {
                keys.push(format!("{IP_PREFIX}{ip}"));
            }
        }
        if wants_node_ports(obj) {
            keys.extend(node_ports_of(obj).into_iter().map(|p| format!("{PORT_PREFIX}{p}")));
        }
        keys
    }
}
