//! Pure change tracking, as upstream's `ServiceChangeTracker` + `EndpointsChangeTracker`
//! (pkg/proxy/servicechangetracker.go, endpointslicecache.go): Services and EndpointSlices go
//! in, a service-port → endpoints view comes out, and the set of services touched since the
//! last sync tells the renderer which per-service chains a partial sync must rewrite.
//!
//! No I/O here: the watch tasks feed objects in, the sync loop reads the view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// upstream `v1.EndpointsLastChangeTriggerTime`: when the change (a pod's readiness, a new
/// Service) that led the endpointslice controller to write the slice happened, RFC 3339.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The slice's trigger-time annotation, if present and readable (upstream ignores a bad one).
pub fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let v = slice.metadata.annotations.as_ref()?.get(LAST_CHANGE_TRIGGER_TIME)?;
    chrono::DateTime::parse_from_rfc3339(v).ok().map(SystemTime::from)
}

/// `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceKey { namespace: namespace.to_string(), name: name.to_string() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// upstream's `ServicePortName`: `ns/name:port`, or `ns/name` when the port has no name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub service: ServiceKey,
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lower-case name iptables and the chain-name hashes use.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service, with the fields the iptables rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: String,
    pub port: i32,
    pub protocol: Protocol,
    /// 0 when the port has no node port.
    pub node_port: i32,
    /// `Some(timeoutSeconds)` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<i32>,
    /// `externalTrafficPolicy: Local` on an externally reachable port.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
}

// upstream: v1.DefaultClientIPServiceAffinitySeconds
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

impl ServicePort {
    /// upstream: a port takes external traffic when it has a node port (or external IPs /
    /// load-balancer ingress, which rkube does not program).
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0
    }

    // upstream: UsesClusterEndpoints — even with eTP Local, external traffic from pods and
    // the node short-circuits to the cluster endpoints.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// The ports of a Service the proxy programs; empty for headless and ExternalName services
/// (upstream skips them too).
pub fn service_ports(svc: &Service) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = &svc.spec else { return Vec::new() };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" && ip.parse::<std::net::Ipv4Addr>().is_ok() => ip.to_string(),
        _ => return Vec::new(),
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else { continue };
        let node_port = match spec.type_.as_deref() {
            Some("NodePort") | Some("LoadBalancer") => p.node_port.unwrap_or(0),
            _ => 0,
        };
        let external_policy_local = node_port != 0 && spec.external_traffic_policy.as_deref() == Some("Local");
        out.push(ServicePort {
            name: ServicePortName { service: ServiceKey::new(ns, name), port: p.name.clone().unwrap_or_default() },
            cluster_ip: cluster_ip.clone(),
            port: p.port,
            protocol,
            node_port,
            affinity_timeout,
            external_policy_local,
            internal_policy_local,
        });
    }
    out
}

/// One endpoint of one service port, with the conditions upstream's `Endpoint` carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: String,
    pub port: i32,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
}

impl Endpoint {
    /// `ip:port`, the string upstream hashes into the KUBE-SEP name and sorts by.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn is_local(&self, node: &str) -> bool {
        self.node_name.as_deref() == Some(node)
    }
}

/// Orders two endpoints as their `ip:port` strings do, without building the strings.
fn cmp_addr(a: &Endpoint, b: &Endpoint) -> std::cmp::Ordering {
    let (ia, ib) = (a.ip.as_bytes(), b.ip.as_bytes());
    let common = ia.len().min(ib.len());
    match ia[..common].cmp(&ib[..common]) {
        std::cmp::Ordering::Equal => {}
        // The usual case: the addresses differ before either ends.
        unequal => return unequal,
    }
    let (mut pa, mut pb) = ([0u8; 11], [0u8; 11]);
    let (pa, pb) = (decimal(a.port, &mut pa), decimal(b.port, &mut pb));
    a.ip.bytes()
        .chain(std::iter::once(b':'))
        .chain(pa.iter().copied())
        .cmp(b.ip.bytes().chain(std::iter::once(b':')).chain(pb.iter().copied()))
}

/// `n` in decimal, in `buf` (an i32 takes at most 11 bytes).
fn decimal(n: i32, buf: &mut [u8; 11]) -> &[u8] {
    let mut rest = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut rest, format_args!("{n}"));
    let len = 11 - rest.len();
    &buf[..len]
}

/// One EndpointSlice reduced to port name → endpoints. Named target ports are resolved per
/// slice (each slice carries its own port numbers), so two slices may map the same port
/// name to different numbers.
type SliceView = BTreeMap<String, Vec<Endpoint>>;

fn slice_view(slice: &EndpointSlice) -> SliceView {
    let mut out = SliceView::new();
    if slice.address_type != "IPv4" {
        return out;
    }
    for port in slice.ports.iter().flatten() {
        // A port without a number is how the EndpointSlice controller says the pods have no
        // such named port: no endpoints for it (so the Service port answers REJECT).
        let Some(number) = port.port else { continue };
        let eps = out.entry(port.name.clone().unwrap_or_default()).or_default();
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            // upstream: ready defaults to true, serving to ready, terminating to false.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let Some(ip) = ep.addresses.first() else { continue };
            eps.push(Endpoint {
                ip: ip.clone(),
                port: number,
                ready,
                serving,
                terminating,
                node_name: ep.node_name.clone(),
            });
        }
    }
    out
}

/// The service and endpoint state the proxy programs, plus the services changed since the
/// last `take_changed` and the trigger times of those changes.
#[derive(Debug)]
pub struct Tracker {
    services: BTreeMap<ServiceKey, Vec<ServicePort>>,
    slices: BTreeMap<ServiceKey, BTreeMap<String, SliceView>>,
    /// Which service each slice belongs to, so a delete (or a relabel) finds the old entry.
    slice_owner: BTreeMap<(String, String), ServiceKey>,
    changed: BTreeSet<ServiceKey>,
    /// upstream `lastChangeTriggerTimes`: per service, the trigger times of the slice changes
    /// not yet synced.
    trigger_times: BTreeMap<ServiceKey, Vec<SystemTime>>,
    /// upstream `trackerStartTime`: annotations from before the proxy started describe changes
    /// some earlier proxy programmed (the initial list), not this one's latency.
    started: SystemTime,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Self {
        Tracker::started_at(SystemTime::now())
    }

    /// A tracker that counts trigger times after `started` only.
    pub fn started_at(started: SystemTime) -> Self {
        Tracker {
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            changed: BTreeSet::new(),
            trigger_times: BTreeMap::new(),
            started,
        }
    }

    /// Adds or updates a Service. Only a change in what the rules depend on marks it changed.
    pub fn apply_service(&mut self, svc: &Service) {
        let key = ServiceKey::new(
            svc.metadata.namespace.as_deref().unwrap_or_default(),
            svc.metadata.name.as_deref().unwrap_or_default(),
        );
        let ports = service_ports(svc);
        let old = if ports.is_empty() { self.services.remove(&key) } else { self.services.insert(key.clone(), ports) };
        if old.as_ref() != self.services.get(&key) {
            self.changed.insert(key);
        }
    }

    pub fn delete_service(&mut self, key: &ServiceKey) {
        if self.services.remove(key).is_some() {
            self.changed.insert(key.clone());
        }
    }

    /// Adds or updates an EndpointSlice; a slice without the service-name label is ignored.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        let name = slice.metadata.name.clone().unwrap_or_default();
        let owner =
            slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)).map(|s| ServiceKey::new(&ns, s));
        let id = (ns, name.clone());
        if let Some(prev) = self.slice_owner.get(&id).cloned() {
            if Some(&prev) != owner.as_ref() {
                self.delete_slice(&id.0, &id.1);
            }
        }
        let Some(owner) = owner else { return };
        let view = slice_view(slice);
        let by_name = self.slices.entry(owner.clone()).or_default();
        if by_name.get(&name) != Some(&view) {
            by_name.insert(name, view);
            self.changed.insert(owner.clone());
            // upstream: only a slice update that changes what is programmed carries its trigger
            // time into the network programming latency.
            if let Some(t) = trigger_time(slice).filter(|t| *t > self.started) {
                self.trigger_times.entry(owner.clone()).or_default().push(t);
            }
        }
        self.slice_owner.insert(id, owner);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let Some(owner) = self.slice_owner.remove(&(namespace.to_string(), name.to_string())) else { return };
        if let Some(by_name) = self.slices.get_mut(&owner) {
            if by_name.remove(name).is_some() {
                self.changed.insert(owner.clone());
                // upstream: a deleted slice's annotation dates from its last update, not from the
                // deletion, so the service's pending trigger times are dropped, not reported.
                self.trigger_times.remove(&owner);
            }
            if by_name.is_empty() {
                self.slices.remove(&owner);
            }
        }
    }

    /// Keys of every Service known, for a relist to find the ones that vanished.
    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().cloned().collect()
    }

    /// `(namespace, name)` of every slice known.
    pub fn slice_ids(&self) -> Vec<(String, String)> {
        self.slice_owner.keys().cloned().collect()
    }

    /// The services whose rules may differ from the last sync; clears the set.
    pub fn take_changed(&mut self) -> BTreeSet<ServiceKey> {
        std::mem::take(&mut self.changed)
    }

    /// upstream `checkoutTriggerTimes`: the trigger times of the slice changes since the last
    /// call, per service; clears them. The sync that takes them reports them once it committed.
    pub fn take_trigger_times(&mut self) -> BTreeMap<ServiceKey, Vec<SystemTime>> {
        std::mem::take(&mut self.trigger_times)
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Every programmed service port, in a stable order.
    pub fn service_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.services.values().flatten()
    }

    /// The endpoints of one service port across all its slices, deduplicated and sorted by
    /// `ip:port` as upstream's EndpointSliceCache does. When two slices list the same
    /// address, the first (by slice name) wins.
    pub fn endpoints(&self, spn: &ServicePortName) -> Vec<Endpoint> {
        self.endpoint_refs(spn).into_iter().cloned().collect()
    }

    /// [`Tracker::endpoints`] without copying them (the renderer's view).
    pub fn endpoint_refs(&self, spn: &ServicePortName) -> Vec<&Endpoint> {
        let mut eps: Vec<&Endpoint> = self
            .slices
            .get(&spn.service)
            .into_iter()
            .flat_map(|by_name| by_name.values())
            .flat_map(|view| view.get(&spn.port).into_iter().flatten())
            .collect();
        // upstream sorts by the endpoint string. The sort is stable, so of two entries with the
        // same address the one from the first slice stays.
        eps.sort_by(|a, b| cmp_addr(a, b));
        eps.dedup_by(|later, kept| cmp_addr(later, kept).is_eq());
        eps
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for Services and EndpointSlices shared by the tracker and renderer tests.
    use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub fn service(ns: &str, name: &str, ip: &str, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| K8sServicePort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// `(ip, node, ready, serving, terminating)` endpoints, one port.
    pub fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        port: (&str, Option<i32>),
        eps: &[(&str, &str, bool, bool, bool)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([(super::SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: (!port.0.is_empty()).then(|| port.0.to_string()),
                port: port.1,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            endpoints: eps
                .iter()
                .map(|(ip, node, ready, serving, terminating)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: (!node.is_empty()).then(|| node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*terminating),
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName { service: ServiceKey::new(ns, name), port: port.into() }
    }

    #[test]
    fn service_port_name_formats_as_upstream() {
        assert_eq!(spn("ns1", "svc1", "p80").to_string(), "ns1/svc1:p80");
        assert_eq!(spn("ns1", "svc1", "").to_string(), "ns1/svc1");
    }

    #[test]
    fn headless_and_external_name_services_are_not_programmed() {
        let mut t = Tracker::new();
        t.apply_service(&service("ns", "headless", "None", &[("", 80)]));
        let mut ext = service("ns", "ext", "", &[("", 80)]);
        ext.spec.as_mut().expect("spec").type_ = Some("ExternalName".into());
        t.apply_service(&ext);
        assert_eq!(t.service_ports().count(), 0);
        assert!(!t.has_changes());
    }

    #[test]
    fn endpoints_merge_across_slices_sorted_and_deduplicated() {
        let mut t = Tracker::new();
        t.apply_slice(&slice("ns", "s-b", "svc", ("p", Some(80)), &[("10.0.0.3", "n1", true, true, false)]));
        t.apply_slice(&slice(
            "ns",
            "s-a",
            "svc",
            ("p", Some(80)),
            &[("10.0.0.2", "n2", true, true, false), ("10.0.0.3", "n1", true, true, false)],
        ));
        let eps: Vec<_> = t.endpoints(&spn("ns", "svc", "p")).iter().map(Endpoint::addr).collect();
        assert_eq!(eps, ["10.0.0.2:80", "10.0.0.3:80"]);
    }

    #[test]
    fn endpoints_sort_as_ip_port_strings_and_the_first_slice_wins() {
        let mut t = Tracker::new();
        let ep = |ip, node| (ip, node, true, true, false);
        t.apply_slice(&slice("ns", "s-c", "svc", ("p", Some(80)), &[ep("10.0.0.1", "c")]));
        t.apply_slice(&slice("ns", "s-b", "svc", ("p", Some(8080)), &[ep("10.0.0.1", "b")]));
        t.apply_slice(&slice("ns", "s-a", "svc", ("p", Some(80)), &[ep("10.0.0.1", "a"), ep("10.0.0.10", "a")]));
        let eps = t.endpoint_refs(&spn("ns", "svc", "p"));
        let got: Vec<(String, Option<&str>)> = eps.iter().map(|e| (e.addr(), e.node_name.as_deref())).collect();
        // As strings, "10.0.0.10:80" < "10.0.0.1:80" ('0' < ':') < "10.0.0.1:8080".
        assert_eq!(
            got,
            [
                ("10.0.0.10:80".to_string(), Some("a")),
                ("10.0.0.1:80".to_string(), Some("a")),
                ("10.0.0.1:8080".to_string(), Some("b"))
            ]
        );
    }

    #[test]
    fn named_port_resolves_per_slice() {
        let mut t = Tracker::new();
        t.apply_slice(&slice("ns", "s1", "svc", ("http", Some(8080)), &[("10.0.0.1", "", true, true, false)]));
        t.apply_slice(&slice("ns", "s2", "svc", ("http", Some(9090)), &[("10.0.0.2", "", true, true, false)]));
        let eps: Vec<_> = t.endpoints(&spn("ns", "svc", "http")).iter().map(Endpoint::addr).collect();
        assert_eq!(eps, ["10.0.0.1:8080", "10.0.0.2:9090"]);
    }

    #[test]
    fn named_port_without_number_has_no_endpoints() {
        let mut t = Tracker::new();
        t.apply_slice(&slice("ns", "s1", "svc", ("http", None), &[("10.0.0.1", "", true, true, false)]));
        assert!(t.endpoints(&spn("ns", "svc", "http")).is_empty());
    }

    #[test]
    fn conditions_default_as_upstream() {
        let mut s = slice("ns", "s1", "svc", ("", Some(80)), &[("10.0.0.1", "", true, true, false)]);
        s.endpoints[0].conditions = None;
        let mut t = Tracker::new();
        t.apply_slice(&s);
        let ep = &t.endpoints(&spn("ns", "svc", ""))[0];
        assert!(ep.ready && ep.serving && !ep.terminating);
    }

    #[test]
    fn only_real_changes_mark_a_service_changed() {
        let mut t = Tracker::new();
        let svc = service("ns", "svc", "10.96.0.10", &[("p", 80)]);
        t.apply_service(&svc);
        let s = slice("ns", "s1", "svc", ("p", Some(80)), &[("10.0.0.1", "", true, true, false)]);
        t.apply_slice(&s);
        assert_eq!(t.take_changed(), BTreeSet::from([ServiceKey::new("ns", "svc")]));
        // The same content again (a resync, a status-only update) changes nothing.
        t.apply_service(&svc);
        t.apply_slice(&s);
        assert!(!t.has_changes());
        t.delete_slice("ns", "s1");
        assert_eq!(t.take_changed(), BTreeSet::from([ServiceKey::new("ns", "svc")]));
        t.delete_service(&ServiceKey::new("ns", "svc"));
        assert_eq!(t.take_changed(), BTreeSet::from([ServiceKey::new("ns", "svc")]));
        assert_eq!(t.service_ports().count(), 0);
    }

    #[test]
    fn relabelled_slice_moves_to_its_new_service() {
        let mut t = Tracker::new();
        t.apply_slice(&slice("ns", "s1", "a", ("", Some(80)), &[("10.0.0.1", "", true, true, false)]));
        t.take_changed();
        t.apply_slice(&slice("ns", "s1", "b", ("", Some(80)), &[("10.0.0.1", "", true, true, false)]));
        assert_eq!(t.take_changed(), BTreeSet::from([ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")]));
        assert!(t.endpoints(&spn("ns", "a", "")).is_empty());
        assert_eq!(t.endpoints(&spn("ns", "b", "")).len(), 1);
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    /// A one-endpoint slice of `svc` for `ip`, annotated with `trigger` when given.
    fn annotated(name: &str, svc: &str, ip: &str, trigger: Option<&str>) -> EndpointSlice {
        let mut s = slice("ns", name, svc, ("p", Some(80)), &[(ip, "", true, true, false)]);
        s.metadata.annotations = trigger.map(|t| [(LAST_CHANGE_TRIGGER_TIME.to_string(), t.to_string())].into());
        s
    }

    #[test]
    fn trigger_time_reads_rfc3339_with_nanoseconds_and_ignores_garbage() {
        let t = |v: Option<&str>| trigger_time(&annotated("s", "svc", "10.0.0.1", v));
        let base = at(1_795_000_000);
        assert_eq!(t(Some("2026-11-18T11:06:40Z")), Some(base));
        assert_eq!(
            t(Some("2026-11-18T11:06:40.123456789Z")),
            Some(base + std::time::Duration::from_nanos(123_456_789))
        );
        assert_eq!(t(Some("2026-11-18T12:06:40+01:00")), Some(base));
        assert_eq!(t(Some("yesterday")), None);
        assert_eq!(t(None), None);
    }

    #[test]
    fn trigger_times_of_slice_changes_are_reported_once_per_change() {
        // started 2026-11-18T11:06:40Z
        let mut t = Tracker::started_at(at(1_795_000_000));
        let svc = ServiceKey::new("ns", "svc");
        // A slice from before the tracker started (the initial list) reports nothing.
        t.apply_slice(&annotated("s1", "svc", "10.0.0.1", Some("2026-11-18T11:06:39Z")));
        assert!(t.take_trigger_times().is_empty());
        // Two changes before the sync: both times, in order.
        t.apply_slice(&annotated("s1", "svc", "10.0.0.2", Some("2026-11-18T11:06:41Z")));
        t.apply_slice(&annotated("s2", "svc", "10.0.0.3", Some("2026-11-18T11:06:42Z")));
        assert_eq!(t.take_trigger_times(), BTreeMap::from([(svc.clone(), vec![at(1_795_000_001), at(1_795_000_002)])]));
        assert!(t.take_trigger_times().is_empty(), "taken once");
        // An update that changes nothing programmed (same endpoints, new annotation) reports nothing.
        t.apply_slice(&annotated("s1", "svc", "10.0.0.2", Some("2026-11-18T11:06:43Z")));
        assert!(t.take_trigger_times().is_empty());
        // A change without the annotation (a slice someone else wrote) reports nothing.
        t.apply_slice(&annotated("s1", "svc", "10.0.0.4", None));
        assert!(t.take_trigger_times().is_empty());
        // A deletion drops the service's pending times: the annotation is from an older update.
        t.apply_slice(&annotated("s1", "svc", "10.0.0.5", Some("2026-11-18T11:06:44Z")));
        t.apply_slice(&annotated("o1", "other", "10.0.0.6", Some("2026-11-18T11:06:45Z")));
        t.delete_slice("ns", "s2");
        assert_eq!(t.take_trigger_times(), BTreeMap::from([(ServiceKey::new("ns", "other"), vec![at(1_795_000_005)])]));
    }
}
