//! The cluster's DNS data and the records a name has: pure, no I/O.
//!
//! Services and EndpointSlices go in (`apply_*` / `delete_*`, as the watches see them); a
//! lookup of one name and type comes out as an [`Outcome`]. The record shapes follow CoreDNS's
//! kubernetes plugin (the Kubernetes DNS specification): `<svc>.<ns>.svc.<domain>`,
//! `<endpoint>.<svc>.<ns>.svc.<domain>`, `_<port>._<proto>.<svc>.<ns>.svc.<domain>`,
//! `<a-b-c-d>.<ns>.pod.<domain>` (`pods insecure`), PTR records for ClusterIPs and endpoint
//! addresses, `dns-version.<domain>`.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

/// upstream CoreDNS kubernetes plugin: `ttl` defaults to 5 seconds, for answers and the SOA.
pub const TTL: u32 = 5;
/// The version of the Kubernetes DNS specification served at `dns-version.<domain>`.
pub const SPEC_VERSION: &str = "1.1.0";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneError {
    #[error("{0:?} is not a valid cluster domain")]
    Domain(String),
}

/// Namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Key {
        Key { namespace: namespace.to_owned(), name: name.to_owned() }
    }

    fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
        Some(Key { namespace: meta.namespace.clone()?, name: meta.name.clone()? })
    }
}

/// What a Service name answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A ClusterIP, NodePort or LoadBalancer service: its cluster IPs (empty while unallocated).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the addresses of its ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to the external name.
    ExternalName(String),
}

/// A named or unnamed port; the protocol is lowercase (`tcp`, `udp`, `sctp`) as SRV names use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub ready: bool,
}

impl Endpoint {
    /// upstream CoreDNS `endpointHostname`: the endpoint's hostname, else its address with
    /// dashes (`198-18-1-5`, `fd00--1`).
    fn label(&self, addr: &IpAddr) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.to_lowercase(),
            _ => match addr {
                IpAddr::V4(a) => a.to_string().replace('.', "-"),
                IpAddr::V6(a) => a.to_string().replace(':', "-"),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The Service this slice belongs to (same namespace).
    pub service: String,
    pub ports: Vec<Port>,
    pub endpoints: Vec<Endpoint>,
}

/// A Service as DNS sees it; `None` when it has no namespace or name.
pub fn service_from_api(s: &core::Service) -> Option<(Key, Service)> {
    let key = Key::of(&s.metadata)?;
    let spec = s.spec.as_ref();
    let kind = match spec {
        Some(sp) if sp.type_.as_deref() == Some("ExternalName") => {
            Kind::ExternalName(sp.external_name.clone().unwrap_or_default())
        }
        Some(sp) if sp.cluster_ip.as_deref() == Some("None") => Kind::Headless,
        Some(sp) => {
            let ips =
                sp.cluster_ips.clone().filter(|v| !v.is_empty()).or_else(|| sp.cluster_ip.clone().map(|i| vec![i]));
            Kind::ClusterIp(ips.unwrap_or_default().iter().filter_map(|i| i.parse().ok()).collect())
        }
        None => Kind::ClusterIp(Vec::new()),
    };
    let ports = spec
        .and_then(|sp| sp.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default().to_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some((key, Service { kind, ports }))
}

/// An EndpointSlice as DNS sees it (keyed by the slice's own name); `None` for slices of no
/// Service and FQDN slices.
pub fn slice_from_api(s: &discovery::EndpointSlice) -> Option<(Key, Slice)> {
    let key = Key::of(&s.metadata)?;
    let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    if s.address_type == "FQDN" {
        return None;
    }
    let ports = s
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default().to_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let endpoints = s
        .endpoints
        .iter()
        .map(|e| Endpoint {
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
            hostname: e.hostname.clone(),
            // upstream: a nil ready condition means ready
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
        })
        .collect();
    Some((key, Slice { service, ports, endpoints }))
}

/// The answer to one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The name has records of the type asked (additionals: addresses of SRV/NS targets).
    Found {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of that type.
    NoData,
    NxDomain,
}

/// Everything the server answers from, kept up to date by the watches.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
    domain_text: String,
    services: HashMap<Key, Service>,
    slices: HashMap<Key, Slice>,
    slices_of: HashMap<Key, BTreeSet<String>>,
    namespaces: HashMap<String, usize>,
    /// address → the names whose PTR records point at it, rebuilt per Service on each change
    reverse: HashMap<IpAddr, BTreeSet<String>>,
    reverse_of: HashMap<Key, Vec<(IpAddr, String)>>,
    serial: u32,
    synced: bool,
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`); `serial` starts the SOA serial
    /// (the caller passes the time, as CoreDNS's serial is its last-change time).
    pub fn new(domain: &str, serial: u32) -> Result<Zone, ZoneError> {
        let text = domain.trim().trim_end_matches('.').to_lowercase();
        if text.is_empty() {
            return Err(ZoneError::Domain(domain.to_owned()));
        }
        let domain_name =
            Name::from_ascii(format!("{text}.")).map_err(|_| ZoneError::Domain(domain.to_owned()))?.to_lowercase();
        Ok(Zone {
            domain: domain_name,
            domain_text: format!("{text}."),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            namespaces: HashMap::new(),
            reverse: HashMap::new(),
            reverse_of: HashMap::new(),
            serial,
            synced: false,
        })
    }

    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The domain as text with the trailing dot (`cluster.local.`).
    pub fn domain_text(&self) -> &str {
        &self.domain_text
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Whether both watches have listed everything once; before that in-zone names are not
    /// answered (a negative answer would be cached by clients).
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn mark_synced(&mut self) {
        self.synced = true;
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    fn changed(&mut self) {
        self.serial = self.serial.wrapping_add(1);
    }

    pub fn apply_service(&mut self, key: Key, svc: Service) {
        if self.services.get(&key) == Some(&svc) {
            return;
        }
        if self.services.insert(key.clone(), svc).is_none() {
            *self.namespaces.entry(key.namespace.clone()).or_default() += 1;
        }
        self.reindex(&key);
        self.changed();
    }

    pub fn delete_service(&mut self, key: &Key) {
        if self.services.remove(key).is_none() {
            return;
        }
        if let Some(n) = self.namespaces.get_mut(&key.namespace) {
            *n -= 1;
            if *n == 0 {
                self.namespaces.remove(&key.namespace);
            }
        }
        self.reindex(key);
        self.changed();
    }

    pub fn service_keys(&self) -> Vec<Key> {
        self.services.keys().cloned().collect()
    }

    pub fn slice_keys(&self) -> Vec<Key> {
        self.slices.keys().cloned().collect()
    }

    /// `key` is the slice's own namespace and name.
    pub fn apply_slice(&mut self, key: Key, slice: Slice) {
        if self.slices.get(&key) == Some(&slice) {
            return;
        }
        let svc = Key::new(&key.namespace, &slice.service);
        let old = self.slices.insert(key.clone(), slice);
        if let Some(old) = old.filter(|o| o.service != svc.name) {
            let before = Key::new(&key.namespace, &old.service);
            self.unlink(&before, &key.name);
            self.reindex(&before);
        }
        self.slices_of.entry(svc.clone()).or_default().insert(key.name.clone());
        self.reindex(&svc);
        self.changed();
    }

    pub fn delete_slice(&mut self, key: &Key) {
        let Some(old) = self.slices.remove(key) else { return };
        let svc = Key::new(&key.namespace, &old.service);
        self.unlink(&svc, &key.name);
        self.reindex(&svc);
        self.changed();
    }

    fn unlink(&mut self, svc: &Key, slice: &str) {
        if let Some(set) = self.slices_of.get_mut(svc) {
            set.remove(slice);
            if set.is_empty() {
                self.slices_of.remove(svc);
            }
        }
    }

    /// The ready endpoints of a Service with the ports of their slice.
    fn endpoints<'a>(&'a self, svc: &'a Key) -> impl Iterator<Item = (&'a Endpoint, &'a [Port])> + 'a {
        let slices = self.slices_of.get(svc).into_iter().flatten();
        slices
            .filter_map(move |s| self.slices.get(&Key::new(&svc.namespace, s)))
            .flat_map(|s| s.endpoints.iter().filter(|e| e.ready).map(move |e| (e, s.ports.as_slice())))
    }

    fn service_fqdn(&self, svc: &Key) -> String {
        format!("{}.{}.svc.{}", svc.name, svc.namespace, self.domain_text)
    }

    /// Rebuilds the PTR entries that `svc` owns (its cluster IPs, its ready endpoints).
    fn reindex(&mut self, svc: &Key) {
        for (ip, name) in self.reverse_of.remove(svc).unwrap_or_default() {
            if let Some(set) = self.reverse.get_mut(&ip) {
                set.remove(&name);
                if set.is_empty() {
                    self.reverse.remove(&ip);
                }
            }
        }
        let Some(service) = self.services.get(svc) else { return };
        let fqdn = self.service_fqdn(svc);
        let mut owned = Vec::new();
        if let Kind::ClusterIp(ips) = &service.kind {
            owned.extend(ips.iter().map(|ip| (*ip, fqdn.clone())));
        }
        if !matches!(service.kind, Kind::ExternalName(_)) {
            for (ep, _) in self.endpoints(svc) {
                owned.extend(ep.addresses.iter().map(|a| (*a, format!("{}.{fqdn}", ep.label(a)))));
            }
        }
        for (ip, name) in &owned {
            self.reverse.entry(*ip).or_default().insert(name.clone());
        }
        if !owned.is_empty() {
            self.reverse_of.insert(svc.clone(), owned);
        }
    }

    /// Whether `name` is the cluster domain or below it.
    pub fn in_domain(&self, name: &Name) -> bool {
        self.domain.zone_of(name)
    }

    /// The zone's SOA record (upstream CoreDNS: `ns.dns.<zone>`, `hostmaster.<zone>`, refresh
    /// 7200, retry 1800, expire 86400, minimum = TTL).
    pub fn soa(&self) -> Record {
        let ns = name(&format!("ns.dns.{}", self.domain_text));
        let mbox = name(&format!("hostmaster.{}", self.domain_text));
        let soa = SOA::new(ns, mbox, self.serial, 7200, 1800, 86400, TTL);
        Record::from_rdata(self.domain.clone(), TTL, RData::SOA(soa))
    }

    /// The records of `qname` (inside the domain) of type `qtype`.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let lower = qname.to_lowercase();
        let extra = usize::from(lower.num_labels()).saturating_sub(usize::from(self.domain.num_labels()));
        let mut labels = Vec::with_capacity(extra);
        for l in lower.iter().take(extra) {
            match std::str::from_utf8(l) {
                Ok(s) => labels.push(s),
                Err(_) => return Outcome::NxDomain,
            }
        }
        match labels.as_slice() {
            [] => self.apex(qtype),
            ["dns-version"] => found_if(qtype, RecordType::TXT, || {
                vec![Record::from_rdata(qname.clone(), TTL, RData::TXT(TXT::new(vec![SPEC_VERSION.to_owned()])))]
            }),
            ["ns", "dns"] => {
                let dns = self.services.get(&Key::new("kube-system", "kube-dns"));
                match dns.map(|s| &s.kind) {
                    Some(Kind::ClusterIp(ips)) => address_records(qname, qtype, ips.iter()),
                    _ => Outcome::NxDomain,
                }
            }
            ["dns"] | ["svc"] | ["pod"] => Outcome::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains_key(*ns) {
                    Outcome::NoData
                } else {
                    Outcome::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(qname, qtype, &Key::new(ns, svc)),
            [proto, svc, ns, "svc"] if proto.starts_with('_') => {
                let key = Key::new(ns, svc);
                let known = self
                    .services
                    .get(&key)
                    .is_some_and(|s| s.ports.iter().any(|p| !p.name.is_empty() && p.protocol == proto[1..]));
                if known {
                    Outcome::NoData
                } else {
                    Outcome::NxDomain
                }
            }
            [ep, svc, ns, "svc"] => self.endpoint(qname, qtype, &Key::new(ns, svc), ep),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(qname, qtype, &Key::new(ns, svc), &port[1..], &proto[1..])
            }
            // upstream `pods insecure`: the address is read from the name, never checked
            [ip, _ns, "pod"] => pod_records(qname, qtype, ip),
            _ => Outcome::NxDomain,
        }
    }

    fn apex(&self, qtype: RecordType) -> Outcome {
        match qtype {
            RecordType::SOA => Outcome::Found { answers: vec![self.soa()], additionals: Vec::new() },
            RecordType::NS => {
                let ns = name(&format!("ns.dns.{}", self.domain_text));
                let glue = match self.lookup(&ns, RecordType::A) {
                    Outcome::Found { answers, .. } => answers,
                    _ => Vec::new(),
                };
                let answers = vec![Record::from_rdata(self.domain.clone(), TTL, RData::NS(NS(ns)))];
                Outcome::Found { answers, additionals: glue }
            }
            _ => Outcome::NoData,
        }
    }

    fn service(&self, qname: &Name, qtype: RecordType, key: &Key) -> Outcome {
        let Some(svc) = self.services.get(key) else { return Outcome::NxDomain };
        match &svc.kind {
            Kind::ExternalName(target) => match Name::from_ascii(fqdn(target)) {
                Ok(t) => Outcome::Found {
                    answers: vec![Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(t)))],
                    additionals: Vec::new(),
                },
                Err(_) => Outcome::NxDomain,
            },
            Kind::ClusterIp(ips) if qtype == RecordType::SRV => {
                let target = name(&self.service_fqdn(key));
                let named: Vec<&Port> = svc.ports.iter().filter(|p| !p.name.is_empty()).collect();
                let answers = srv_records(qname, named.iter().map(|p| (p.port, target.clone())));
                let additionals = ips.iter().filter_map(|ip| address_record(&target, ip)).collect();
                found_or_nodata(answers, additionals)
            }
            Kind::ClusterIp(ips) => address_records(qname, qtype, ips.iter()),
            Kind::Headless => {
                let mut eps = self.endpoints(key).peekable();
                // upstream CoreDNS: a headless service without ready endpoints is NXDOMAIN
                if eps.peek().is_none() {
                    return Outcome::NxDomain;
                }
                if qtype == RecordType::SRV {
                    let mut targets = Vec::new();
                    let mut additionals = Vec::new();
                    for (ep, ports) in eps {
                        for a in &ep.addresses {
                            let target = name(&format!("{}.{}", ep.label(a), self.service_fqdn(key)));
                            for p in ports.iter().filter(|p| !p.name.is_empty()) {
                                targets.push((p.port, target.clone()));
                            }
                            additionals.extend(address_record(&target, a));
                        }
                    }
                    return found_or_nodata(srv_records(qname, targets.into_iter()), additionals);
                }
                let addrs: BTreeSet<IpAddr> = eps.flat_map(|(e, _)| e.addresses.iter().copied()).collect();
                address_records(qname, qtype, addrs.iter())
            }
        }
    }

    fn endpoint(&self, qname: &Name, qtype: RecordType, key: &Key, label: &str) -> Outcome {
        match self.services.get(key).map(|s| &s.kind) {
            None | Some(Kind::ExternalName(_)) => return Outcome::NxDomain,
            Some(_) => {}
        }
        let addrs: BTreeSet<IpAddr> = self
            .endpoints(key)
            .flat_map(|(e, _)| e.addresses.iter().filter(move |a| e.label(a) == label).copied())
            .collect();
        if addrs.is_empty() {
            return Outcome::NxDomain;
        }
        address_records(qname, qtype, addrs.iter())
    }

    fn srv(&self, qname: &Name, qtype: RecordType, key: &Key, port: &str, proto: &str) -> Outcome {
        let Some(svc) = self.services.get(key) else { return Outcome::NxDomain };
        let Some(sp) = svc.ports.iter().find(|p| !p.name.is_empty() && p.name == port && p.protocol == proto) else {
            return Outcome::NxDomain;
        };
        if qtype != RecordType::SRV && qtype != RecordType::ANY {
            return Outcome::NoData;
        }
        let mut targets = Vec::new();
        let mut additionals = Vec::new();
        match &svc.kind {
            Kind::ExternalName(_) => return Outcome::NxDomain,
            Kind::ClusterIp(ips) => {
                let target = name(&self.service_fqdn(key));
                additionals.extend(ips.iter().filter_map(|ip| address_record(&target, ip)));
                targets.push((sp.port, target));
            }
            Kind::Headless => {
                for (ep, ports) in self.endpoints(key) {
                    let Some(p) = ports.iter().find(|p| p.name == port && p.protocol == proto) else { continue };
                    for a in &ep.addresses {
                        let target = name(&format!("{}.{}", ep.label(a), self.service_fqdn(key)));
                        additionals.extend(address_record(&target, a));
                        targets.push((p.port, target));
                    }
                }
            }
        }
        if targets.is_empty() {
            return Outcome::NxDomain;
        }
        found_or_nodata(srv_records(qname, targets.into_iter()), additionals)
    }

    /// PTR records of a reverse name (`d.c.b.a.in-addr.arpa.`, nibbles under `ip6.arpa.`) for
    /// addresses the zone knows; `None` for any other name.
    pub fn reverse(&self, qname: &Name, qtype: RecordType) -> Option<Outcome> {
        let net = qname.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let names = self.reverse.get(&net.addr())?;
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return Some(Outcome::NoData);
        }
        let answers = names
            .iter()
            .filter_map(|n| Name::from_ascii(n).ok())
            .map(|n| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(n))))
            .collect();
        Some(Outcome::Found { answers, additionals: Vec::new() })
    }
}

/// A name built from parts that are already valid DNS names (Kubernetes names are DNS-1123
/// labels); an invalid one becomes the root, which no answer ever uses as a target.
fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_owned()
    } else {
        format!("{s}.")
    }
}

fn found_if(qtype: RecordType, has: RecordType, records: impl FnOnce() -> Vec<Record>) -> Outcome {
    if qtype == has || qtype == RecordType::ANY {
        Outcome::Found { answers: records(), additionals: Vec::new() }
    } else {
        Outcome::NoData
    }
}

fn found_or_nodata(answers: Vec<Record>, additionals: Vec<Record>) -> Outcome {
    if answers.is_empty() {
        Outcome::NoData
    } else {
        Outcome::Found { answers, additionals }
    }
}

fn address_record(owner: &Name, ip: &IpAddr) -> Option<Record> {
    Some(match ip {
        IpAddr::V4(a) => Record::from_rdata(owner.clone(), TTL, RData::A(A(*a))),
        IpAddr::V6(a) => Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(*a))),
    })
}

/// A records for A queries, AAAA for AAAA, both for ANY; NODATA when none fits.
fn address_records<'a>(owner: &Name, qtype: RecordType, ips: impl Iterator<Item = &'a IpAddr>) -> Outcome {
    let answers: Vec<Record> = ips
        .filter(|ip| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        })
        .filter_map(|ip| address_record(owner, ip))
        .collect();
    found_or_nodata(answers, Vec::new())
}

/// upstream CoreDNS: priority 0, the weight split evenly (100 / number of records).
fn srv_records(owner: &Name, targets: impl ExactSizeIterator<Item = (u16, Name)>) -> Vec<Record> {
    let n = targets.len().max(1);
    let weight = u16::try_from(100 / n).unwrap_or(1).max(1);
    targets.map(|(port, t)| Record::from_rdata(owner.clone(), TTL, RData::SRV(SRV::new(0, weight, port, t)))).collect()
}

/// `a-b-c-d` (IPv4) or `fd00--1` (IPv6, dashes for colons).
fn pod_records(owner: &Name, qtype: RecordType, label: &str) -> Outcome {
    let ip: IpAddr = if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        v4.into()
    } else if let Ok(v6) = label.replace('-', ":").parse::<Ipv6Addr>() {
        v6.into()
    } else {
        return Outcome::NxDomain;
    };
    address_records(owner, qtype, std::iter::once(&ip))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> (Key, Service) {
        service_from_api(&serde_json::from_value(v).expect("service")).expect("named")
    }

    fn slice(v: serde_json::Value) -> (Key, Slice) {
        slice_from_api(&serde_json::from_value(v).expect("slice")).expect("a slice of a service")
    }

    /// nginx (ClusterIP), web (headless, StatefulSet-style hostnames), ext (ExternalName),
    /// dual (IPv4 + IPv6), empty (headless, no endpoints), kube-system/kube-dns.
    pub(crate) fn sample() -> Zone {
        let mut z = Zone::new("cluster.local", 100).expect("zone");
        for s in [
            json!({"metadata": {"name": "nginx", "namespace": "default"},
                   "spec": {"clusterIP": "198.19.17.20", "clusterIPs": ["198.19.17.20"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}}),
            json!({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "db.example.org"}}),
            json!({"metadata": {"name": "dual", "namespace": "default"},
                   "spec": {"clusterIP": "198.19.17.30", "clusterIPs": ["198.19.17.30", "fd00::30"], "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {"clusterIP": "None"}}),
            json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                   "spec": {"clusterIP": "198.19.17.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
        ] {
            let (k, s) = svc(s);
            z.apply_service(k, s);
        }
        for s in [
            json!({"metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["198.18.16.5"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["198.18.17.6"], "hostname": "web-1"},
                {"addresses": ["198.18.18.7"], "conditions": {"ready": false}},
            ]}),
            json!({"metadata": {"name": "web-def", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                   "addressType": "IPv4", "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
                   "endpoints": [{"addresses": ["198.18.18.8"], "conditions": {"ready": true}}]}),
            json!({"metadata": {"name": "nginx-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "nginx"}},
                   "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                   "endpoints": [{"addresses": ["198.18.16.9"], "conditions": {"ready": true}}]}),
        ] {
            let (k, s) = slice(s);
            z.apply_slice(k, s);
        }
        z.mark_synced();
        z
    }

    pub(crate) fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    /// The answer records as text (`name type data`), in order, for comparing.
    fn texts(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect()
    }

    fn answers(z: &Zone, name: &str, t: RecordType) -> Vec<String> {
        match z.lookup(&n(name), t) {
            Outcome::Found { answers, .. } => texts(&answers),
            other => panic!("{name} {t}: {other:?}"),
        }
    }

    fn found(z: &Zone, name: &str, t: RecordType) -> (Vec<String>, Vec<String>) {
        match z.lookup(&n(name), t) {
            Outcome::Found { answers, additionals } => (texts(&answers), texts(&additionals)),
            other => panic!("{name} {t}: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_service_has_an_a_record_and_nodata_for_other_types() {
        let z = sample();
        assert_eq!(
            answers(&z, "nginx.default.svc.cluster.local.", RecordType::A),
            ["nginx.default.svc.cluster.local. A 198.19.17.20"]
        );
        assert_eq!(z.lookup(&n("nginx.default.svc.cluster.local."), RecordType::AAAA), Outcome::NoData);
        assert_eq!(z.lookup(&n("nginx.default.svc.cluster.local."), RecordType::TXT), Outcome::NoData);
        // the answer's owner is the name as asked; matching ignores case
        assert_eq!(
            answers(&z, "NGINX.Default.svc.cluster.local.", RecordType::A),
            ["NGINX.Default.svc.cluster.local. A 198.19.17.20"]
        );
        // an endpoint of a ClusterIP service has a name too (upstream: endpoint queries work
        // for every service)
        assert_eq!(
            answers(&z, "198-18-16-9.nginx.default.svc.cluster.local.", RecordType::A),
            ["198-18-16-9.nginx.default.svc.cluster.local. A 198.18.16.9"]
        );
    }

    #[test]
    fn dual_stack_service_answers_a_and_aaaa() {
        let z = sample();
        assert_eq!(
            answers(&z, "dual.default.svc.cluster.local.", RecordType::A),
            ["dual.default.svc.cluster.local. A 198.19.17.30"]
        );
        assert_eq!(
            answers(&z, "dual.default.svc.cluster.local.", RecordType::AAAA),
            ["dual.default.svc.cluster.local. AAAA fd00::30"]
        );
        assert_eq!(answers(&z, "dual.default.svc.cluster.local.", RecordType::ANY).len(), 2);
    }

    #[test]
    fn headless_service_answers_each_ready_endpoint_and_nxdomain_without_any() {
        let z = sample();
        assert_eq!(
            answers(&z, "web.default.svc.cluster.local.", RecordType::A),
            [
                "web.default.svc.cluster.local. A 198.18.16.5",
                "web.default.svc.cluster.local. A 198.18.17.6",
                "web.default.svc.cluster.local. A 198.18.18.8",
            ],
            "the not-ready endpoint is left out; a nil ready condition counts as ready"
        );
        assert_eq!(z.lookup(&n("web.default.svc.cluster.local."), RecordType::AAAA), Outcome::NoData);
        // upstream CoreDNS: a headless service with no ready endpoint does not exist
        assert_eq!(z.lookup(&n("empty.default.svc.cluster.local."), RecordType::A), Outcome::NxDomain);
    }

    #[test]
    fn endpoint_hostnames_resolve_statefulset_style_and_others_by_dashed_address() {
        let z = sample();
        assert_eq!(
            answers(&z, "web-0.web.default.svc.cluster.local.", RecordType::A),
            ["web-0.web.default.svc.cluster.local. A 198.18.16.5"]
        );
        assert_eq!(
            answers(&z, "198-18-18-8.web.default.svc.cluster.local.", RecordType::A),
            ["198-18-18-8.web.default.svc.cluster.local. A 198.18.18.8"]
        );
        for missing in [
            "web-9.web.default.svc.cluster.local.",
            // not ready: no name
            "198-18-18-7.web.default.svc.cluster.local.",
            "web-0.nope.default.svc.cluster.local.",
            "web-0.ext.default.svc.cluster.local.",
        ] {
            assert_eq!(z.lookup(&n(missing), RecordType::A), Outcome::NxDomain, "{missing}");
        }
    }

    #[test]
    fn srv_records_for_named_ports() {
        let z = sample();
        let (a, extra) = found(&z, "_http._tcp.nginx.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(a, ["_http._tcp.nginx.default.svc.cluster.local. SRV 0 100 80 nginx.default.svc.cluster.local."]);
        assert_eq!(extra, ["nginx.default.svc.cluster.local. A 198.19.17.20"]);
        let (a, _) = found(&z, "_dns._udp.nginx.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(a, ["_dns._udp.nginx.default.svc.cluster.local. SRV 0 100 53 nginx.default.svc.cluster.local."]);
        // headless: one per ready endpoint, the endpoint's port, the endpoint's name as target
        let (a, extra) = found(&z, "_web._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            a,
            [
                "_web._tcp.web.default.svc.cluster.local. SRV 0 33 8080 web-0.web.default.svc.cluster.local.",
                "_web._tcp.web.default.svc.cluster.local. SRV 0 33 8080 web-1.web.default.svc.cluster.local.",
                "_web._tcp.web.default.svc.cluster.local. SRV 0 33 8080 198-18-18-8.web.default.svc.cluster.local.",
            ]
        );
        assert_eq!(extra[0], "web-0.web.default.svc.cluster.local. A 198.18.16.5");
        // SRV on the service name itself lists every named port
        let (a, _) = found(&z, "nginx.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(a.len(), 2);
        // wrong protocol, unknown port, unnamed port: no such name; A on an SRV name: no data
        for missing in [
            "_http._udp.nginx.default.svc.cluster.local.",
            "_nope._tcp.nginx.default.svc.cluster.local.",
            "_80._tcp.dual.default.svc.cluster.local.",
        ] {
            assert_eq!(z.lookup(&n(missing), RecordType::SRV), Outcome::NxDomain, "{missing}");
        }
        assert_eq!(z.lookup(&n("_http._tcp.nginx.default.svc.cluster.local."), RecordType::A), Outcome::NoData);
        // `_tcp.<svc>` is an empty non-terminal
        assert_eq!(z.lookup(&n("_tcp.nginx.default.svc.cluster.local."), RecordType::SRV), Outcome::NoData);
    }

    #[test]
    fn ptr_records_for_cluster_ips_and_endpoints() {
        let mut z = sample();
        let ptr = |z: &Zone, ip: &str| match z.reverse(&Name::from(ip.parse::<IpAddr>().expect("ip")), RecordType::PTR)
        {
            Some(Outcome::Found { answers, .. }) => answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(),
            other => panic!("{ip}: {other:?}"),
        };
        assert_eq!(ptr(&z, "198.19.17.20"), ["nginx.default.svc.cluster.local."]);
        assert_eq!(ptr(&z, "fd00::30"), ["dual.default.svc.cluster.local."]);
        assert_eq!(ptr(&z, "198.18.16.5"), ["web-0.web.default.svc.cluster.local."]);
        assert_eq!(ptr(&z, "198.18.18.8"), ["198-18-18-8.web.default.svc.cluster.local."]);
        assert_eq!(z.reverse(&Name::from("198.18.18.7".parse::<IpAddr>().unwrap()), RecordType::PTR), None);
        assert_eq!(z.reverse(&n("17.19.198.in-addr.arpa."), RecordType::PTR), None, "not a whole address");
        assert_eq!(z.reverse(&n("nginx.default.svc.cluster.local."), RecordType::PTR), None);
        // deleting the slice and the service takes their PTR records along
        z.delete_slice(&Key::new("default", "web-abc"));
        assert_eq!(z.reverse(&Name::from("198.18.16.5".parse::<IpAddr>().unwrap()), RecordType::PTR), None);
        z.delete_service(&Key::new("default", "nginx"));
        assert_eq!(z.reverse(&Name::from("198.19.17.20".parse::<IpAddr>().unwrap()), RecordType::PTR), None);
        assert_eq!(z.reverse(&Name::from("198.18.16.9".parse::<IpAddr>().unwrap()), RecordType::PTR), None);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_known_parents_nodata() {
        let z = sample();
        for (name, want) in [
            ("nope.default.svc.cluster.local.", Outcome::NxDomain),
            ("nginx.other.svc.cluster.local.", Outcome::NxDomain),
            // search-path expansions of names outside the cluster
            ("example.com.default.svc.cluster.local.", Outcome::NxDomain),
            ("example.com.svc.cluster.local.", Outcome::NxDomain),
            ("example.com.cluster.local.", Outcome::NxDomain),
            ("a.b.c.d.e.nginx.default.svc.cluster.local.", Outcome::NxDomain),
            ("default.svc.cluster.local.", Outcome::NoData),
            ("nosuchns.svc.cluster.local.", Outcome::NxDomain),
            ("svc.cluster.local.", Outcome::NoData),
            ("pod.cluster.local.", Outcome::NoData),
            ("cluster.local.", Outcome::NoData),
        ] {
            assert_eq!(z.lookup(&n(name), RecordType::A), want, "{name}");
        }
    }

    #[test]
    fn pod_names_read_the_address_from_the_name_as_pods_insecure() {
        let z = sample();
        assert_eq!(
            answers(&z, "198-18-16-44.default.pod.cluster.local.", RecordType::A),
            ["198-18-16-44.default.pod.cluster.local. A 198.18.16.44"]
        );
        assert_eq!(
            answers(&z, "fd00--44.anyns.pod.cluster.local.", RecordType::AAAA),
            ["fd00--44.anyns.pod.cluster.local. AAAA fd00::44"]
        );
        assert_eq!(z.lookup(&n("198-18-16-44.default.pod.cluster.local."), RecordType::AAAA), Outcome::NoData);
        assert_eq!(z.lookup(&n("not-an-ip.default.pod.cluster.local."), RecordType::A), Outcome::NxDomain);
    }

    #[test]
    fn external_name_is_a_cname_for_every_type() {
        let z = sample();
        for t in [RecordType::A, RecordType::AAAA] {
            assert_eq!(
                answers(&z, "ext.default.svc.cluster.local.", t),
                ["ext.default.svc.cluster.local. CNAME db.example.org."]
            );
        }
    }

    #[test]
    fn apex_has_soa_and_ns_and_the_spec_version() {
        let z = sample();
        let soa = answers(&z, "cluster.local.", RecordType::SOA);
        assert_eq!(
            soa,
            [format!(
                "cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. {} 7200 1800 86400 5",
                z.serial()
            )]
        );
        let (ns, glue) = found(&z, "cluster.local.", RecordType::NS);
        assert_eq!(ns, ["cluster.local. NS ns.dns.cluster.local."]);
        assert_eq!(glue, ["ns.dns.cluster.local. A 198.19.17.10"]);
        assert_eq!(
            answers(&z, "dns-version.cluster.local.", RecordType::TXT),
            ["dns-version.cluster.local. TXT 1.1.0"]
        );
    }

    #[test]
    fn changes_update_the_records_and_the_serial() {
        let mut z = sample();
        let serial = z.serial();
        // the same object again changes nothing
        let (k, s) = svc(json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {"clusterIP": "None"}}));
        z.apply_service(k, s);
        assert_eq!(z.serial(), serial);
        // a slice for a service that does not exist yet counts once the service comes
        let (k, s) = slice(
            json!({"metadata": {"name": "late-1", "namespace": "team", "labels": {"kubernetes.io/service-name": "late"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["198.18.20.1"]}]}),
        );
        z.apply_slice(k, s);
        assert_eq!(z.lookup(&n("late.team.svc.cluster.local."), RecordType::A), Outcome::NxDomain);
        let (k, s) = svc(json!({"metadata": {"name": "late", "namespace": "team"}, "spec": {"clusterIP": "None"}}));
        z.apply_service(k, s);
        assert_eq!(
            answers(&z, "late.team.svc.cluster.local.", RecordType::A),
            ["late.team.svc.cluster.local. A 198.18.20.1"]
        );
        assert!(z.serial() > serial);
        assert_eq!(z.lookup(&n("team.svc.cluster.local."), RecordType::A), Outcome::NoData);
        // the slice moves to another service
        let (k, s) = slice(
            json!({"metadata": {"name": "late-1", "namespace": "team", "labels": {"kubernetes.io/service-name": "other"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["198.18.20.1"]}]}),
        );
        z.apply_slice(k, s);
        assert_eq!(z.lookup(&n("late.team.svc.cluster.local."), RecordType::A), Outcome::NxDomain);
        z.delete_service(&Key::new("team", "late"));
        assert_eq!(z.lookup(&n("team.svc.cluster.local."), RecordType::A), Outcome::NxDomain, "namespace gone");
        // FQDN slices and slices without a service label are not DNS data
        let fqdn: discovery::EndpointSlice = serde_json::from_value(json!({"metadata": {"name": "f", "namespace": "x",
            "labels": {"kubernetes.io/service-name": "f"}}, "addressType": "FQDN", "endpoints": []}))
        .unwrap();
        assert!(slice_from_api(&fqdn).is_none());
    }

    #[test]
    fn a_domain_is_required() {
        assert_eq!(Zone::new(" . ", 1).err(), Some(ZoneError::Domain(" . ".into())));
        assert_eq!(Zone::new("Cluster.Local.", 1).expect("zone").domain_text(), "cluster.local.");
    }
}
