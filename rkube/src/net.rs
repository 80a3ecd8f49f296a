//! The address plan of a cluster: which bridge subnet, node addresses, pod /24s and service
//! range it gets, all inside 198.18.0.0/15. Pure: `plan` decides from the cluster's index and
//! what else is already routed on the machine, so two clusters never overlap.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every address rkube assigns lives here (RFC 2544 benchmarking range).
pub const ALLOWED: Ipv4Net = Ipv4Net { addr: 0xC612_0000, prefix: 15 };
/// Cluster indexes 1..=MAX_INDEX; index 0 is left alone (198.19.0.0/24 is what the runtime
/// prototype and other tests on this machine use).
pub const MAX_INDEX: u8 = 15;
/// Node addresses are `.NODE_HOST_BASE + k` on the bridge subnet; `.1` is the host side.
const NODE_HOST_BASE: u32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("{0:?} is not an IPv4 CIDR (like 198.18.0.0/16)")]
    Parse(String),
    #[error("{0} has host bits set (did you mean {1}?)")]
    HostBits(String, Ipv4Net),
    #[error("{what} {net} is outside 198.18.0.0/15, the only range rkube assigns addresses from")]
    Outside { what: &'static str, net: Ipv4Net },
    #[error("{what} {net} must be a /24 or larger (one /24 per node)")]
    TooSmall { what: &'static str, net: Ipv4Net },
    #[error("podSubnet {pods} and serviceSubnet {services} overlap")]
    Overlap { pods: Ipv4Net, services: Ipv4Net },
    #[error("{net} overlaps {other}, which is already routed on this machine")]
    InUse { net: Ipv4Net, other: Ipv4Net },
    #[error("no free cluster range left in 198.18.0.0/15 (at most {MAX_INDEX} clusters)")]
    Exhausted,
    #[error("the pod subnet {0} has no /24 left for another node")]
    NoPodSubnet(Ipv4Net),
    #[error("the node network {0} has no address left for another node")]
    NoNodeAddress(Ipv4Net),
}

/// An IPv4 network in CIDR form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: u32,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, NetError> {
        let raw = u32::from(addr);
        if prefix > 32 {
            return Err(NetError::Parse(format!("{addr}/{prefix}")));
        }
        let net = Ipv4Net { addr: raw & mask(prefix), prefix };
        if raw != net.addr {
            return Err(NetError::HostBits(format!("{addr}/{prefix}"), net));
        }
        Ok(net)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The `n`th address of the network (`nth(1)` is the first host).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.addr.wrapping_add(n))
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    fn last(&self) -> u32 {
        self.addr | !mask(self.prefix)
    }

    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        self.prefix <= other.prefix && (other.addr & mask(self.prefix)) == self.addr
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.addr <= other.last() && other.addr <= self.last()
    }

    /// The `index`th /`prefix` subnet inside this network.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Ipv4Net> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let addr = u64::from(self.addr) + u64::from(index) * step;
        Some(Ipv4Net { addr: u32::try_from(addr).ok()?, prefix })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl fmt::Debug for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::Parse(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s.trim(), 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a cluster's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressPlan {
    /// Picks the default ranges and names the bridge; unique among the machine's clusters.
    pub index: u8,
    /// The bridge subnet: `.1` is the host side (apiserver, registry), nodes from `.2`.
    pub node_network: Ipv4Net,
    pub host_ip: Ipv4Addr,
    /// The cluster's pod range; node `k` gets its `k`th /24.
    pub pod_subnet: Ipv4Net,
    pub service_subnet: Ipv4Net,
    /// The `kubernetes` Service address (first of the service range).
    pub kubernetes_service_ip: Ipv4Addr,
    /// Where the cluster DNS Service will live (`.10`, as kubeadm and kind do).
    pub cluster_dns_ip: Ipv4Addr,
    /// Blackholed on the host, so a packet for an address the cluster does not use dies here.
    pub blackhole: Vec<Ipv4Net>,
    pub bridge: String,
    pub registry_port: u16,
    pub apiserver_port: u16,
}

/// What the user asked for; `None` means "derive from the index".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    pub pod_subnet: Option<Ipv4Net>,
    pub service_subnet: Option<Ipv4Net>,
}

/// The default ranges of cluster `index`: bridge 198.19.(16i).0/24, services 198.19.(16i+1).0/24,
/// pods 198.18.(16i).0/20 (16 nodes, one /24 each).
pub fn default_ranges(index: u8) -> (Ipv4Net, Ipv4Net, Ipv4Net) {
    let i = u32::from(index) * 16;
    let base19 = 0xC613_0000u32;
    let base18 = 0xC612_0000u32;
    let node = Ipv4Net { addr: base19 | (i << 8), prefix: 24 };
    let svc = Ipv4Net { addr: base19 | ((i + 1) << 8), prefix: 24 };
    let pods = Ipv4Net { addr: base18 | (i << 8), prefix: 20 };
    (node, svc, pods)
}

/// Builds the plan for `index`, checking the user's ranges.
pub fn plan_for(index: u8, req: &Requested) -> Result<AddressPlan, NetError> {
    let (node_network, default_svc, default_pods) = default_ranges(index);
    let pod_subnet = req.pod_subnet.unwrap_or(default_pods);
    let service_subnet = req.service_subnet.unwrap_or(default_svc);
    for (what, net) in [("podSubnet", pod_subnet), ("serviceSubnet", service_subnet)] {
        if !ALLOWED.contains_net(&net) {
            return Err(NetError::Outside { what, net });
        }
        if net.prefix > 24 {
            return Err(NetError::TooSmall { what, net });
        }
    }
    if pod_subnet.overlaps(&service_subnet) {
        return Err(NetError::Overlap { pods: pod_subnet, services: service_subnet });
    }
    let own_block = Ipv4Net { addr: node_network.addr, prefix: 20 };
    let mut blackhole = vec![own_block];
    for net in [pod_subnet, service_subnet] {
        if !blackhole.iter().any(|b| b.contains_net(&net)) {
            blackhole.push(net);
        }
    }
    Ok(AddressPlan {
        index,
        node_network,
        host_ip: node_network.nth(1),
        pod_subnet,
        service_subnet,
        kubernetes_service_ip: service_subnet.nth(1),
        cluster_dns_ip: service_subnet.nth(10),
        blackhole,
        bridge: format!("rkube{index}"),
        registry_port: 5000,
        apiserver_port: 6443,
    })
}

/// The lowest index whose ranges overlap nothing in `in_use` (routes on the machine and
/// other clusters' ranges).
pub fn pick(req: &Requested, in_use: &[Ipv4Net]) -> Result<AddressPlan, NetError> {
    let mut last_err = NetError::Exhausted;
    for index in 1..=MAX_INDEX {
        let plan = plan_for(index, req)?;
        match plan.blackhole.iter().find_map(|net| in_use.iter().find(|u| u.overlaps(net)).map(|u| (*net, *u))) {
            None => return Ok(plan),
            Some((net, other)) => {
                // a user-chosen range that is taken will not become free at another index
                let user_chosen = [req.pod_subnet, req.service_subnet].contains(&Some(net));
                if user_chosen {
                    return Err(NetError::InUse { net, other });
                }
                last_err = NetError::Exhausted;
            }
        }
    }
    Err(last_err)
}

/// Node `slot`'s address and pod /24.
pub fn node_addresses(plan: &AddressPlan, slot: u32) -> Result<(Ipv4Addr, Ipv4Net), NetError> {
    let pods = plan.pod_subnet.subnet(24, slot).ok_or(NetError::NoPodSubnet(plan.pod_subnet))?;
    let host = NODE_HOST_BASE + slot;
    if u64::from(host) >= plan.node_network.size() - 1 {
        return Err(NetError::NoNodeAddress(plan.node_network));
    }
    Ok((plan.node_network.nth(host), pods))
}

/// The IPv4 destinations routed on the machine, from `ip -4 route show table all` output;
/// `default` and unparsable lines are skipped (a default route overlaps everything and
/// does not make a range busy).
pub fn routed_destinations(ip_route_output: &str) -> Vec<Ipv4Net> {
    ip_route_output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut first = words.next()?;
            if matches!(first, "blackhole" | "unreachable" | "prohibit" | "local" | "broadcast" | "unicast") {
                first = words.next()?;
            }
            let net: Ipv4Net = first.parse().ok()?;
            // local/broadcast entries of loopback and the like are not in our range anyway
            ALLOWED.overlaps(&net).then_some(net)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(n("198.18.0.0/16").to_string(), "198.18.0.0/16");
        assert_eq!(n("198.18.1.7").to_string(), "198.18.1.7/32");
        assert_eq!(
            "198.18.1.7/24".parse::<Ipv4Net>(),
            Err(NetError::HostBits("198.18.1.7/24".into(), n("198.18.1.0/24")))
        );
        assert!(matches!("nope/8".parse::<Ipv4Net>(), Err(NetError::Parse(_))));
        assert!(matches!("1.2.3.0/33".parse::<Ipv4Net>(), Err(NetError::Parse(_))));
    }

    #[test]
    fn overlap_and_contains() {
        assert!(n("198.18.0.0/15").contains_net(&n("198.19.4.0/24")));
        assert!(!n("198.19.4.0/24").contains_net(&n("198.18.0.0/15")));
        assert!(n("198.19.0.0/20").overlaps(&n("198.19.15.0/24")));
        assert!(!n("198.19.0.0/20").overlaps(&n("198.19.16.0/24")));
        assert_eq!(n("198.18.16.0/20").subnet(24, 3), Some(n("198.18.19.0/24")));
        assert_eq!(n("198.18.16.0/20").subnet(24, 16), None);
    }

    #[test]
    fn default_plan_of_index_one() {
        let p = plan_for(1, &Requested::default()).unwrap();
        assert_eq!(p.node_network, n("198.19.16.0/24"));
        assert_eq!(p.host_ip, Ipv4Addr::new(198, 19, 16, 1));
        assert_eq!(p.service_subnet, n("198.19.17.0/24"));
        assert_eq!(p.kubernetes_service_ip, Ipv4Addr::new(198, 19, 17, 1));
        assert_eq!(p.cluster_dns_ip, Ipv4Addr::new(198, 19, 17, 10));
        assert_eq!(p.pod_subnet, n("198.18.16.0/20"));
        assert_eq!(p.blackhole, vec![n("198.19.16.0/20"), n("198.18.16.0/20")]);
        assert_eq!(p.bridge, "rkube1");
        assert_eq!(node_addresses(&p, 0).unwrap(), (Ipv4Addr::new(198, 19, 16, 2), n("198.18.16.0/24")));
        assert_eq!(node_addresses(&p, 2).unwrap(), (Ipv4Addr::new(198, 19, 16, 4), n("198.18.18.0/24")));
        assert_eq!(node_addresses(&p, 16), Err(NetError::NoPodSubnet(n("198.18.16.0/20"))));
    }

    #[test]
    fn pick_skips_ranges_in_use() {
        // another cluster (or anything else) holds index 1's bridge subnet and index 2's pods
        let used = vec![n("198.19.16.0/24"), n("198.18.32.0/24"), n("10.0.0.0/8")];
        let p = pick(&Requested::default(), &used).unwrap();
        assert_eq!(p.index, 3);
        assert_eq!(p.node_network, n("198.19.48.0/24"));
        // the runtime prototype's ranges (index 0) never block index 1
        let p = pick(&Requested::default(), &[n("198.19.0.0/24"), n("198.18.1.0/24"), n("198.18.2.0/24")]).unwrap();
        assert_eq!(p.index, 1);
    }

    #[test]
    fn user_ranges_are_checked() {
        let outside = Requested { pod_subnet: Some(n("10.244.0.0/16")), service_subnet: None };
        assert!(matches!(plan_for(1, &outside), Err(NetError::Outside { what: "podSubnet", .. })));
        let small = Requested { pod_subnet: None, service_subnet: Some(n("198.18.200.0/25")) };
        assert!(matches!(plan_for(1, &small), Err(NetError::TooSmall { what: "serviceSubnet", .. })));
        let overlap = Requested { pod_subnet: Some(n("198.18.0.0/16")), service_subnet: Some(n("198.18.5.0/24")) };
        assert!(matches!(plan_for(1, &overlap), Err(NetError::Overlap { .. })));
        let taken = Requested { pod_subnet: Some(n("198.18.128.0/17")), service_subnet: None };
        assert!(matches!(pick(&taken, &[n("198.18.200.0/24")]), Err(NetError::InUse { .. })));
        let custom = plan_for(2, &taken).unwrap();
        assert_eq!(custom.blackhole, vec![n("198.19.32.0/20"), n("198.18.128.0/17")]);
    }

    #[test]
    fn routes_from_ip_output() {
        let out = "default via 10.0.2.2 dev eth0\n198.19.0.0/24 dev knbr0 proto kernel scope link src 198.19.0.1\n\
                   blackhole 198.18.16.0/20\n10.0.2.0/24 dev eth0\nlocal 198.19.0.1 dev knbr0 table local\n";
        assert_eq!(routed_destinations(out), vec![n("198.19.0.0/24"), n("198.18.16.0/20"), n("198.19.0.1/32")]);
    }
}
