//! Pure rendering of the `filter` and `nat` tables kube-proxy's iptables mode programs, as
//! `iptables-restore --noflush` input (upstream: `syncProxyRules` in
//! pkg/proxy/iptables/proxier.go). Chain names, rule order, comments and match order follow
//! upstream so `iptables-save` output reads like kube-proxy's.
//!
//! A full render writes every chain; a partial render (upstream since 1.28) still rewrites
//! the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, the filter table) but leaves out the
//! KUBE-SVC/SVL/EXT/SEP chains of services that did not change, which `--noflush` then leaves
//! untouched in the kernel. Chains that are no longer used are flushed and deleted (`-X`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::tracker::{Endpoint, ServiceKey, ServicePort, ServicePortName, Tracker};

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";

/// upstream: `--iptables-masquerade-bit` 14.
pub const MASQUERADE_MARK: &str = "0x4000";

/// Prefixes of the per-service chains; only chains with these prefixes are ever deleted.
const SERVICE_CHAIN_PREFIXES: [&str; 5] = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"];

pub fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A rule in a built-in chain that jumps to one of ours. These live outside the restore
/// input (which would otherwise have to own the built-in chains) and are ensured with `-C`/`-I`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    pub src_chain: &'static str,
    pub dst_chain: &'static str,
    pub comment: &'static str,
    pub extra: &'static [&'static str],
}

const NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];

/// upstream: `iptablesJumpChains` plus the KUBE-POSTROUTING jump (load-balancer firewall
/// jumps included so the chain exists, though rkube programs no load balancers).
pub const JUMP_RULES: &[JumpRule] = &[
    JumpRule {
        table: "filter",
        src_chain: "INPUT",
        dst_chain: KUBE_EXTERNAL_SERVICES,
        comment: "kubernetes externally-visible service portals",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "FORWARD",
        dst_chain: KUBE_EXTERNAL_SERVICES,
        comment: "kubernetes externally-visible service portals",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "INPUT",
        dst_chain: KUBE_NODEPORTS,
        comment: "kubernetes health check service ports",
        extra: &[],
    },
    JumpRule {
        table: "filter",
        src_chain: "FORWARD",
        dst_chain: KUBE_SERVICES,
        comment: "kubernetes service portals",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "OUTPUT",
        dst_chain: KUBE_SERVICES,
        comment: "kubernetes service portals",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "FORWARD",
        dst_chain: KUBE_FORWARD,
        comment: "kubernetes forwarding rules",
        extra: &[],
    },
    JumpRule {
        table: "filter",
        src_chain: "INPUT",
        dst_chain: KUBE_PROXY_FIREWALL,
        comment: "kubernetes load balancer firewall",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "OUTPUT",
        dst_chain: KUBE_PROXY_FIREWALL,
        comment: "kubernetes load balancer firewall",
        extra: NEW,
    },
    JumpRule {
        table: "filter",
        src_chain: "FORWARD",
        dst_chain: KUBE_PROXY_FIREWALL,
        comment: "kubernetes load balancer firewall",
        extra: NEW,
    },
    JumpRule {
        table: "nat",
        src_chain: "OUTPUT",
        dst_chain: KUBE_SERVICES,
        comment: "kubernetes service portals",
        extra: &[],
    },
    JumpRule {
        table: "nat",
        src_chain: "PREROUTING",
        dst_chain: KUBE_SERVICES,
        comment: "kubernetes service portals",
        extra: &[],
    },
    JumpRule {
        table: "nat",
        src_chain: "POSTROUTING",
        dst_chain: KUBE_POSTROUTING,
        comment: "kubernetes postrouting rules",
        extra: &[],
    },
];

impl JumpRule {
    /// The rule's arguments after `-A/-C/-I CHAIN`, as separate argv entries.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = self.extra.iter().map(|s| s.to_string()).collect();
        a.extend(["-m", "comment", "--comment", self.comment, "-j", self.dst_chain].map(String::from));
        a
    }
}

impl JumpRule {
    /// The rule as `iptables-save` prints it.
    pub fn saved_line(&self) -> String {
        let args: Vec<String> =
            self.args().into_iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a }).collect();
        format!("-A {} {}", self.src_chain, args.join(" "))
    }
}

/// The jump rules missing from a table's `iptables-save` output.
pub fn missing_jumps(table: &str, saved: &str) -> Vec<&'static JumpRule> {
    let mut missing: Vec<(&'static JumpRule, String)> =
        JUMP_RULES.iter().filter(|j| j.table == table).map(|j| (j, j.saved_line())).collect();
    // One pass over the saved lines (tens of thousands in a large cluster) for the handful of jumps.
    for line in saved.lines() {
        if missing.is_empty() {
            break;
        }
        missing.retain(|(_, jump)| jump != line);
    }
    missing.into_iter().map(|(j, _)| j).collect()
}

/// Adds `-I SRC 1 ...` lines for `jumps` at the end of their table's section, so a full sync
/// repairs missing jump rules in the same restore instead of one `iptables` run per rule.
/// Inserting in list order at position 1 leaves them in the order upstream's prepends do.
/// The sync does this inside [`Tables::finish`]; this whole-text form is the tests' reference.
#[cfg(test)]
pub fn with_jumps(text: &str, jumps: &[&JumpRule]) -> String {
    let mut out = String::with_capacity(text.len() + jumps.len() * 128);
    let mut table = "";
    for line in text.split_inclusive('\n') {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim_end();
        } else if line == "COMMIT\n" {
            write_jumps(&mut out, table, jumps);
        }
        out.push_str(line);
    }
    out
}

/// The `-I SRC 1 ...` lines of `table`'s `jumps`.
fn write_jumps(out: &mut String, table: &str, jumps: &[&JumpRule]) {
    for j in jumps.iter().filter(|j| j.table == table) {
        let args: Vec<String> =
            j.args().into_iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a }).collect();
        let _ = writeln!(out, "-I {} 1 {}", j.src_chain, args.join(" "));
    }
}

/// The restore input that removes everything the proxy made (upstream: `CleanupLeftovers`):
/// the jump rules present in the saved tables (`-D`), then our chains, flushed by declaring
/// them and deleted with `-X`. Chains of other components are left alone.
pub fn cleanup(filter_saved: &str, nat_saved: &str) -> String {
    let mut out = String::new();
    for (table, saved, base) in [
        (
            "filter",
            filter_saved,
            &[KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL][..],
        ),
        ("nat", nat_saved, &[KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ][..]),
    ] {
        let lines: BTreeSet<&str> = saved.lines().collect();
        let chains: Vec<String> = crate::iptables::chains_in_save(saved)
            .into_iter()
            .filter(|c| base.contains(&c.as_str()) || is_service_chain(c))
            .collect();
        let _ = writeln!(out, "*{table}");
        for c in &chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for j in JUMP_RULES.iter().filter(|j| j.table == table) {
            let line = j.saved_line();
            if lines.contains(line.as_str()) {
                let _ = writeln!(out, "-D{}", &line[2..]);
            }
        }
        for c in &chains {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Node-level facts the rules depend on.
#[derive(Debug, Clone, Default)]
pub struct RenderConfig {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// `--cluster-cidr`: traffic from it is pod traffic (upstream's LocalDetector). `None`
    /// disables the rules that need to tell pod traffic apart.
    pub cluster_cidr: Option<String>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// Node IPs node ports answer on; `None` means every local address but loopback.
    pub nodeport_ips: Option<Vec<String>>,
}

/// One render: the restore input plus what the next sync needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// Every per-service nat chain the current state uses (skipped ones included).
    pub active_nat_chains: BTreeSet<String>,
    /// Rules in each table the kernel holds after this restore (upstream's
    /// `sync_proxy_rules_iptables_total` metric).
    pub nat_rules: usize,
    pub filter_rules: usize,
}

/// `base32(sha256(input))[..16]`, upstream's `portProtoHash` / `servicePortEndpointChainName`.
pub fn chain_hash(input: &str) -> String {
    Hash16::of(Sha256::new_with_prefix(input)).as_str().to_string()
}

/// The 16 base32 characters a chain name ends with.
#[derive(Clone, Copy)]
struct Hash16([u8; 16]);

impl Hash16 {
    /// Finishes `hasher`: 16 base32 characters are 80 bits, the first 10 bytes of the digest;
    /// no padding is involved.
    fn of(hasher: Sha256) -> Hash16 {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let digest = hasher.finalize();
        let mut out = [0u8; 16];
        for (chunk, chars) in digest[..10].chunks(5).zip(out.chunks_mut(8)) {
            let bits = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            for (i, c) in chars.iter_mut().enumerate() {
                *c = ALPHABET[((bits >> ((7 - i) * 5)) & 31) as usize];
            }
        }
        Hash16(out)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("the base32 alphabet is ASCII")
    }

    fn chain(&self, prefix: &str) -> String {
        let mut s = String::with_capacity(prefix.len() + 16);
        s.push_str(prefix);
        s.push_str(self.as_str());
        s
    }
}

/// The hasher state after `{spn}{protocol}`: the port chains' hash finishes it, each KUBE-SEP
/// hash continues it with the endpoint.
fn port_hasher(spn: &ServicePortName, protocol: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(&spn.service.namespace);
    h.update("/");
    h.update(&spn.service.name);
    if !spn.port.is_empty() {
        h.update(":");
        h.update(&spn.port);
    }
    h.update(protocol);
    h
}

fn sep_chain_from(port_hasher: &Sha256, endpoint: &str) -> String {
    Hash16::of(port_hasher.clone().chain_update(endpoint)).chain("KUBE-SEP-")
}

pub fn svc_chain(spn: &ServicePortName, protocol: &str) -> String {
    Hash16::of(port_hasher(spn, protocol)).chain("KUBE-SVC-")
}

pub fn svl_chain(spn: &ServicePortName, protocol: &str) -> String {
    Hash16::of(port_hasher(spn, protocol)).chain("KUBE-SVL-")
}

pub fn ext_chain(spn: &ServicePortName, protocol: &str) -> String {
    Hash16::of(port_hasher(spn, protocol)).chain("KUBE-EXT-")
}

pub fn sep_chain(spn: &ServicePortName, protocol: &str, endpoint: &str) -> String {
    sep_chain_from(&port_hasher(spn, protocol), endpoint)
}

/// upstream: `computeProbability`, `%0.10f` of 1/n (iptables-save prints it back with 11
/// digits, e.g. 0.33333333349, because the kernel stores it as a fraction of 2^32).
pub fn probability(n: usize) -> String {
    Probability(n).to_string()
}

/// [`probability`] written straight into the rule.
struct Probability(usize);

impl std::fmt::Display for Probability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.10}", 1.0 / self.0 as f64)
    }
}

/// Endpoints split by traffic policy, as upstream's `CategorizeEndpoints` (without topology
/// hints, which rkube does not implement).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Categorized<'a> {
    /// Every endpoint either list below uses, in the input's order: each gets a KUBE-SEP chain.
    pub reachable: Vec<&'a Endpoint>,
    /// The endpoints for cluster-wide traffic, as indices into `reachable`.
    pub cluster: Vec<usize>,
    /// The endpoints for traffic that must stay on this node, as indices into `reachable`.
    pub local: Vec<usize>,
    pub has_any: bool,
}

/// `endpoints` come as [`Tracker::endpoint_refs`] gives them, sorted by `ip:port` with one
/// entry per address, so the union of the cluster and local lists, sorted, is a filter of it.
pub fn categorize<'a>(endpoints: &[&'a Endpoint], sp: &ServicePort, node: &str) -> Categorized<'a> {
    let mut c = Categorized::default();
    let uses_cluster = sp.uses_cluster_endpoints();
    let uses_local = sp.uses_local_endpoints();
    // upstream: terminating-but-serving endpoints only when nothing is ready anywhere.
    let any_ready = endpoints.iter().any(|e| e.ready);
    let fallback = |e: &Endpoint| e.serving && e.terminating;
    let in_cluster = |e: &Endpoint| uses_cluster && if any_ready { e.ready } else { fallback(e) };
    let (mut local_ready, mut local_terminating) = (false, false);
    if uses_cluster {
        c.has_any = endpoints.iter().any(|&e| in_cluster(e));
    }
    if uses_local {
        for &e in endpoints {
            if e.ready {
                c.has_any = true;
                local_ready |= e.is_local(node);
            } else if fallback(e) {
                c.has_any = true;
                local_terminating |= e.is_local(node);
            }
        }
    }
    let in_local =
        |e: &Endpoint| e.is_local(node) && if local_ready { e.ready } else { local_terminating && fallback(e) };
    for &e in endpoints {
        let (cluster, local) = (in_cluster(e), in_local(e));
        if cluster || local {
            if cluster {
                c.cluster.push(c.reachable.len());
            }
            if local {
                c.local.push(c.reachable.len());
            }
            c.reachable.push(e);
        }
    }
    c
}

/// Lines of one table section, with rule counting. A `Buf` that does not `write` only counts:
/// it stands for the chains a partial sync leaves alone, whose rules the kernel still holds.
struct Buf {
    chains: String,
    rules: String,
    rule_count: usize,
    write: bool,
}

impl Buf {
    fn new(rules_capacity: usize) -> Self {
        Buf { chains: String::new(), rules: String::with_capacity(rules_capacity), rule_count: 0, write: true }
    }

    fn counting() -> Self {
        Buf { chains: String::new(), rules: String::new(), rule_count: 0, write: false }
    }

    fn chain(&mut self, name: &str) {
        if self.write {
            self.chains.push(':');
            self.chains.push_str(name);
            self.chains.push_str(" - [0:0]\n");
        }
    }

    /// One rule, formatted straight into the buffer (and not at all when only counting).
    fn rule(&mut self, rule: std::fmt::Arguments<'_>) {
        self.rule_count += 1;
        if self.write {
            // Writing into a String cannot fail.
            let _ = self.rules.write_fmt(rule);
            self.rules.push('\n');
        }
    }
}

/// Renders both tables. `changed` is `None` for a full sync, or the services whose chains a
/// partial sync rewrites. `existing_nat_chains` are the nat chains the kernel has (from
/// `iptables-save` on a full sync, or the previous render's `active_nat_chains`): those of
/// ours no longer in use are deleted.
pub fn render(
    cfg: &RenderConfig,
    tracker: &Tracker,
    changed: Option<&BTreeSet<ServiceKey>>,
    existing_nat_chains: &BTreeSet<String>,
) -> Rendered {
    render_tables(cfg, tracker, changed).finish(&[existing_nat_chains], &[])
}

/// A render up to what depends on the tables the kernel holds: the stale chains to delete and
/// the missing jump rules. A full sync renders this while its `iptables-save` runs are under way.
pub struct Tables {
    filter: Buf,
    nat: Buf,
    /// The last rules of KUBE-SERVICES; the chain deletes go before them.
    nat_tail: String,
    /// Rules of unchanged services in a partial sync: counted, never written.
    skipped_rules: usize,
    active_nat_chains: BTreeSet<String>,
}

/// [`render`] without the stale chains; see [`Tables::finish`].
pub fn render_tables(cfg: &RenderConfig, tracker: &Tracker, changed: Option<&BTreeSet<ServiceKey>>) -> Tables {
    let mut ports: Vec<&ServicePort> = tracker.service_ports().collect();
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    // A full render of a ClusterIP service with two endpoints is about 1.2 kB of nat rules;
    // reserving that much per port saves the buffer's repeated doubling.
    let mut filter = Buf::new(1024);
    let mut nat = Buf::new(if changed.is_none() { ports.len() * 1280 } else { 16 * 1024 });
    let mut skipped = Buf::counting();
    let mut active = Vec::new();

    for c in [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL] {
        filter.chain(c);
    }
    for c in [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ] {
        nat.chain(c);
    }
    const M: &str = MASQUERADE_MARK;
    nat.rule(format_args!("-A {KUBE_POSTROUTING} -m mark ! --mark {M}/{M} -j RETURN"));
    // Clearing the mark keeps a packet that re-traverses the stack from being masqueraded twice.
    nat.rule(format_args!("-A {KUBE_POSTROUTING} -j MARK --xor-mark {M}"));
    nat.rule(format_args!(
        "-A {KUBE_POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    ));
    nat.rule(format_args!("-A {KUBE_MARK_MASQ} -j MARK --or-mark {M}"));

    for sp in ports {
        let endpoints = tracker.endpoint_refs(&sp.name);
        let write_chains = changed.is_none_or(|c| c.contains(&sp.name.service));
        render_service(cfg, sp, &endpoints, &mut filter, &mut nat, &mut skipped, write_chains, &mut active);
    }

    // The tail is written apart so the chain deletes can go before it.
    let mut tail = Buf::new(256);
    let comment = "\"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &cfg.nodeport_ips {
        // upstream with --iptables-localhost-nodeports=false: rkube does not set
        // route_localnet, so node ports on 127.0.0.1 could not work anyway.
        None => tail.rule(format_args!(
            "-A {KUBE_SERVICES} -m comment --comment {comment} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {KUBE_NODEPORTS}"
        )),
        Some(ips) => {
            for ip in ips {
                tail.rule(format_args!("-A {KUBE_SERVICES} -m comment --comment {comment} -d {ip} -j {KUBE_NODEPORTS}"));
            }
        }
    }
    nat.rule_count += tail.rule_count;

    // upstream drops INVALID packets unless nf_conntrack_tcp_be_liberal is set (kubernetes#74839).
    filter.rule(format_args!("-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP"));
    filter.rule(format_args!(
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {M}/{M} -j ACCEPT"
    ));
    filter.rule(format_args!(
        "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));

    Tables {
        filter,
        nat,
        nat_tail: tail.rules,
        skipped_rules: skipped.rule_count,
        active_nat_chains: active.into_iter().collect(),
    }
}

impl Tables {
    /// The restore input. Of the `existing_nat_chains` (what the kernel may hold: the chains
    /// `iptables-save` listed, those the last restore wrote), ours that are no longer in use
    /// are flushed and deleted; `jumps` are inserted at the end of their table (`-I SRC 1`).
    pub fn finish(self, existing_nat_chains: &[&BTreeSet<String>], jumps: &[&JumpRule]) -> Rendered {
        let Tables { filter, mut nat, nat_tail, skipped_rules, active_nat_chains: active } = self;
        let mut stale: Vec<&str> = existing_nat_chains
            .iter()
            .flat_map(|set| set.difference(&active))
            .filter(|c| is_service_chain(c))
            .map(String::as_str)
            .collect();
        stale.sort_unstable();
        stale.dedup();
        for c in &stale {
            // Declaring the chain flushes it, so the delete cannot fail on a non-empty chain.
            nat.chain(c);
        }
        let mut text = String::with_capacity(
            filter.chains.len()
                + filter.rules.len()
                + nat.chains.len()
                + nat.rules.len()
                + stale.len() * 32
                + nat_tail.len()
                + jumps.len() * 160
                + 32,
        );
        text.push_str("*filter\n");
        text.push_str(&filter.chains);
        text.push_str(&filter.rules);
        write_jumps(&mut text, "filter", jumps);
        text.push_str("COMMIT\n*nat\n");
        text.push_str(&nat.chains);
        text.push_str(&nat.rules);
        for c in &stale {
            let _ = writeln!(text, "-X {c}");
        }
        text.push_str(&nat_tail);
        write_jumps(&mut text, "nat", jumps);
        text.push_str("COMMIT\n");
        Rendered {
            text,
            active_nat_chains: active,
            nat_rules: nat.rule_count + skipped_rules,
            filter_rules: filter.rule_count,
        }
    }
}

/// A KUBE-SEP chain and the `ip:port` it sends to.
struct Sep {
    addr: String,
    chain: String,
}

#[allow(clippy::too_many_arguments)]
fn render_service(
    cfg: &RenderConfig,
    sp: &ServicePort,
    endpoints: &[&Endpoint],
    filter: &mut Buf,
    nat: &mut Buf,
    skipped: &mut Buf,
    write_chains: bool,
    active: &mut Vec<String>,
) {
    let proto = sp.protocol.lower();
    let name = sp.name.to_string();
    let cat = categorize(endpoints, sp, &cfg.node_name);
    // KUBE-SVC, KUBE-SVL and KUBE-EXT hash the same `{spn}{protocol}`; KUBE-SEP hashes go on
    // from there with the endpoint.
    let hasher = port_hasher(&sp.name, proto);
    let port_hash = Hash16::of(hasher.clone());
    let cluster_chain = port_hash.chain("KUBE-SVC-");
    let local_chain = port_hash.chain("KUBE-SVL-");
    let ext = port_hash.chain("KUBE-EXT-");
    let uses_cluster_chain = !cat.cluster.is_empty() && sp.uses_cluster_endpoints();
    let uses_local_chain = !cat.local.is_empty() && sp.uses_local_endpoints();

    let (internal_chain, has_internal) = if sp.internal_policy_local {
        (&local_chain, cat.has_any && !cat.local.is_empty())
    } else {
        (&cluster_chain, cat.has_any)
    };
    let (external_policy_chain, has_external) = if sp.external_policy_local {
        (&local_chain, cat.has_any && !cat.local.is_empty())
    } else {
        (&cluster_chain, cat.has_any)
    };
    // The EXT chain also carries the short-circuit rules for pod and node traffic, so it is
    // needed even when no endpoint takes external traffic.
    let uses_ext_chain = cat.has_any && sp.externally_accessible();

    // (target, what the comment says after the name)
    let (internal_filter, external_filter) = if !cat.has_any {
        (Some(("REJECT", "has no endpoints")), Some(("REJECT", "has no endpoints")))
    } else {
        let c = "has no local endpoints";
        ((!has_internal).then_some(("DROP", c)), (!has_external).then_some(("DROP", c)))
    };

    let (ip, port) = (&sp.cluster_ip, sp.port);
    if has_internal {
        nat.rule(format_args!(
            "-A {KUBE_SERVICES} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {ip} --dport {port} -j {internal_chain}"
        ));
    } else if let Some((target, what)) = internal_filter {
        filter.rule(format_args!(
            "-A {KUBE_SERVICES} -m comment --comment \"{name} {what}\" -m {proto} -p {proto} -d {ip} --dport {port} -j {target}"
        ));
    }

    if sp.node_port != 0 {
        let node_port = sp.node_port;
        if cat.has_any {
            nat.rule(format_args!(
                "-A {KUBE_NODEPORTS} -m comment --comment {name} -m {proto} -p {proto} --dport {node_port} -j {ext}"
            ));
        }
        if let Some((target, what)) = external_filter {
            filter.rule(format_args!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment \"{name} {what}\" -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {node_port} -j {target}"
            ));
        }
    }

    let out: &mut Buf = if write_chains { nat } else { skipped };

    if uses_ext_chain {
        out.chain(&ext);
        if !sp.external_policy_local {
            out.rule(format_args!(
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j {KUBE_MARK_MASQ}"
            ));
        } else {
            if let Some(cidr) = &cfg.cluster_cidr {
                // Pod traffic to an external destination is treated as if it went out to a
                // load balancer and came back: no traffic policy applies.
                out.rule(format_args!(
                    "-A {ext} -m comment --comment \"pod traffic for {name} external destinations\" -s {cidr} -j {cluster_chain}"
                ));
            }
            // The node's own traffic has a local source address, so it must be masqueraded
            // and may use any endpoint.
            out.rule(format_args!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            ));
            out.rule(format_args!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {cluster_chain}"
            ));
        }
        if has_external {
            out.rule(format_args!("-A {ext} -j {external_policy_chain}"));
        }
    }

    if uses_cluster_chain {
        out.chain(&cluster_chain);
    }
    if uses_local_chain {
        out.chain(&local_chain);
    }
    if has_internal {
        if cfg.masquerade_all {
            out.rule(format_args!(
                "-A {internal_chain} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {ip} --dport {port} -j {KUBE_MARK_MASQ}"
            ));
        } else if let Some(cidr) = &cfg.cluster_cidr {
            // Off-cluster traffic to a service IP (someone routed the service range to this
            // node) may be answered from another node, so it is masqueraded.
            out.rule(format_args!(
                "-A {internal_chain} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {ip} --dport {port} ! -s {cidr} -j {KUBE_MARK_MASQ}"
            ));
        }
    }

    let seps: Vec<Sep> = cat
        .reachable
        .iter()
        .map(|ep| {
            let addr = ep.addr();
            let chain = sep_chain_from(&hasher, &addr);
            Sep { addr, chain }
        })
        .collect();
    if uses_cluster_chain {
        endpoint_jumps(out, &name, sp, &cluster_chain, cat.cluster.iter().map(|&i| &seps[i]));
    }
    if uses_local_chain {
        endpoint_jumps(out, &name, sp, &local_chain, cat.local.iter().map(|&i| &seps[i]));
    }

    for (ep, sep) in cat.reachable.iter().zip(&seps) {
        let (chain, addr, ep_ip) = (&sep.chain, &sep.addr, &ep.ip);
        out.chain(chain);
        // Hairpin: a pod reaching itself through the service must be masqueraded or its reply
        // would bypass the DNAT.
        out.rule(format_args!("-A {chain} -m comment --comment {name} -s {ep_ip} -j {KUBE_MARK_MASQ}"));
        if sp.affinity_timeout.is_some() {
            out.rule(format_args!(
                "-A {chain} -m comment --comment {name} -m recent --name {chain} --set -m {proto} -p {proto} -j DNAT --to-destination {addr}"
            ));
        } else {
            out.rule(format_args!(
                "-A {chain} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {addr}"
            ));
        }
    }

    if uses_ext_chain {
        active.push(ext);
    }
    if uses_cluster_chain {
        active.push(cluster_chain);
    }
    if uses_local_chain {
        active.push(local_chain);
    }
    active.extend(seps.into_iter().map(|s| s.chain));
}

/// upstream: `writeServiceToEndpointRules` — affinity checks first, then the random spread
/// where rule i matches with probability 1/(n-i) so every endpoint gets 1/n.
fn endpoint_jumps<'s>(
    out: &mut Buf,
    name: &str,
    sp: &ServicePort,
    chain: &str,
    seps: impl ExactSizeIterator<Item = &'s Sep> + Clone,
) {
    if let Some(timeout) = sp.affinity_timeout {
        for Sep { addr, chain: sep } in seps.clone() {
            out.rule(format_args!(
                "-A {chain} -m comment --comment \"{name} -> {addr}\" -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}"
            ));
        }
    }
    let n = seps.len();
    for (i, Sep { addr, chain: sep }) in seps.enumerate() {
        if i + 1 < n {
            let p = Probability(n - i);
            out.rule(format_args!(
                "-A {chain} -m comment --comment \"{name} -> {addr}\" -m statistic --mode random --probability {p} -j {sep}"
            ));
        } else {
            out.rule(format_args!("-A {chain} -m comment --comment \"{name} -> {addr}\" -j {sep}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::ServiceKey;

    fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName { service: ServiceKey::new(ns, name), port: port.into() }
    }

    #[test]
    fn chain_names_hash_as_upstream() {
        assert_eq!(svc_chain(&spn("ns1", "svc1", "p80"), "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(svc_chain(&spn("ns2", "svc2", "p80"), "tcp"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT");
        assert_eq!(sep_chain(&spn("ns1", "svc1", "p80"), "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ");
    }
}

#[cfg(test)]
mod cases {
    use super::*;
    use crate::tracker::testutil::{service, slice};
    use crate::tracker::Tracker;

    fn cfg() -> RenderConfig {
        RenderConfig { node_name: "node1".into(), cluster_cidr: Some("10.0.0.0/8".into()), ..Default::default() }
    }

    /// The rendered lines that are not in the render of an empty cluster, each prefixed with
    /// its table, so a case lists only what its service adds.
    fn service_lines(r: &Rendered) -> Vec<String> {
        let base = render(&cfg(), &Tracker::new(), None, &BTreeSet::new()).text;
        let base: BTreeSet<&str> = base.lines().collect();
        let mut table = "";
        let mut out = Vec::new();
        for l in r.text.lines() {
            if let Some(t) = l.strip_prefix('*') {
                table = t;
            } else if !base.contains(l) {
                out.push(format!("{table}: {l}"));
            }
        }
        out
    }

    fn nodeport(
        mut svc: k8s_openapi::api::core::v1::Service,
        node_port: i32,
        etp: &str,
    ) -> k8s_openapi::api::core::v1::Service {
        let spec = svc.spec.as_mut().expect("spec");
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some(etp.into());
        for p in spec.ports.iter_mut().flatten() {
            p.node_port = Some(node_port);
        }
        svc
    }

    /// One case: the objects and the lines they add to the empty render.
    fn case(objects: impl FnOnce(&mut Tracker)) -> Vec<String> {
        let mut t = Tracker::new();
        objects(&mut t);
        service_lines(&render(&cfg(), &t, None, &BTreeSet::new()))
    }

    #[test]
    fn clusterip_three_endpoints_spread_with_statistic() {
        let got = case(|t| {
            t.apply_service(&service("ns1", "svc1", "172.30.0.41", &[("p80", 80)]));
            t.apply_slice(&slice(
                "ns1",
                "svc1-a",
                "svc1",
                ("p80", Some(80)),
                &[
                    ("10.180.0.1", "node1", true, true, false),
                    ("10.180.0.2", "node2", true, true, false),
                    ("10.180.0.3", "node3", true, true, false),
                ],
            ));
        });
        let want = [
            r#"nat: :KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]"#,
            r#"nat: :KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]"#,
            r#"nat: :KUBE-SEP-LXVODXWDISEETFEF - [0:0]"#,
            r#"nat: :KUBE-SEP-ICDUIKC33SFI6ZPR - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
            r#"nat: -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-SXIVWICOYRO3J4NJ"#,
            r#"nat: -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LXVODXWDISEETFEF"#,
            r#"nat: -A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j KUBE-SEP-ICDUIKC33SFI6ZPR"#,
            r#"nat: -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80"#,
            r#"nat: -A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80"#,
            r#"nat: -A KUBE-SEP-ICDUIKC33SFI6ZPR -m comment --comment ns1/svc1:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-ICDUIKC33SFI6ZPR -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn nodeport_jumps_to_ext_chain_that_masquerades() {
        let got = case(|t| {
            t.apply_service(&nodeport(service("ns2", "svc2", "172.30.0.42", &[("p80", 80)]), 3001, "Cluster"));
            t.apply_slice(&slice(
                "ns2",
                "svc2-a",
                "svc2",
                ("p80", Some(80)),
                &[("10.180.0.2", "node2", true, true, false)],
            ));
        });
        let want = [
            r#"nat: :KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]"#,
            r#"nat: :KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]"#,
            r#"nat: :KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT"#,
            r#"nat: -A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT"#,
            r#"nat: -A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade traffic for ns2/svc2:p80 external destinations" -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVC-GNZBNJ2PO5MGZ6GT"#,
            r#"nat: -A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ"#,
            r#"nat: -A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn external_traffic_policy_local_uses_only_local_endpoints_for_external_traffic() {
        let got = case(|t| {
            t.apply_service(&nodeport(service("ns3", "svc3", "172.30.0.43", &[("p80", 80)]), 3003, "Local"));
            t.apply_slice(&slice(
                "ns3",
                "svc3-a",
                "svc3",
                ("p80", Some(80)),
                &[("10.180.0.3", "node1", true, true, false), ("10.180.1.3", "node2", true, true, false)],
            ));
        });
        let want = [
            r#"nat: :KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]"#,
            r#"nat: :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]"#,
            r#"nat: :KUBE-SVL-X27LE4BHSL4DOUIK - [0:0]"#,
            r#"nat: :KUBE-SEP-OYPFS5VJICHGATKP - [0:0]"#,
            r#"nat: :KUBE-SEP-3PCRBPAMK2XLAIHQ - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "pod traffic for ns3/svc3:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "route LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVL-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-OYPFS5VJICHGATKP"#,
            r#"nat: -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.1.3:80" -j KUBE-SEP-3PCRBPAMK2XLAIHQ"#,
            r#"nat: -A KUBE-SVL-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP"#,
            r#"nat: -A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80"#,
            r#"nat: -A KUBE-SEP-3PCRBPAMK2XLAIHQ -m comment --comment ns3/svc3:p80 -s 10.180.1.3 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-3PCRBPAMK2XLAIHQ -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.3:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn external_traffic_policy_local_without_local_endpoints_drops_external_traffic() {
        let got = case(|t| {
            t.apply_service(&nodeport(service("ns3", "svc3", "172.30.0.43", &[("p80", 80)]), 3003, "Local"));
            t.apply_slice(&slice(
                "ns3",
                "svc3-a",
                "svc3",
                ("p80", Some(80)),
                &[("10.180.1.3", "node2", true, true, false)],
            ));
        });
        let want = [
            r#"filter: -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns3/svc3:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3003 -j DROP"#,
            r#"nat: :KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]"#,
            r#"nat: :KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]"#,
            r#"nat: :KUBE-SEP-3PCRBPAMK2XLAIHQ - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "pod traffic for ns3/svc3:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "route LOCAL traffic for ns3/svc3:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-X27LE4BHSL4DOUIK"#,
            r#"nat: -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.1.3:80" -j KUBE-SEP-3PCRBPAMK2XLAIHQ"#,
            r#"nat: -A KUBE-SEP-3PCRBPAMK2XLAIHQ -m comment --comment ns3/svc3:p80 -s 10.180.1.3 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-3PCRBPAMK2XLAIHQ -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.1.3:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn session_affinity_client_ip_uses_recent_module() {
        let got = case(|t| {
            let mut s = service("ns4", "svc4", "172.30.0.44", &[("p80", 80)]);
            s.spec.as_mut().expect("spec").session_affinity = Some("ClientIP".into());
            t.apply_service(&s);
            t.apply_slice(&slice(
                "ns4",
                "svc4-a",
                "svc4",
                ("p80", Some(80)),
                &[("10.180.0.4", "node1", true, true, false), ("10.180.0.5", "node2", true, true, false)],
            ));
        });
        let want = [
            r#"nat: :KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]"#,
            r#"nat: :KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]"#,
            r#"nat: :KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK"#,
            r#"nat: -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m recent --name KUBE-SEP-UKSFD7AGPMPPLUHC --rcheck --seconds 10800 --reap -j KUBE-SEP-UKSFD7AGPMPPLUHC"#,
            r#"nat: -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -m recent --name KUBE-SEP-C6EBXVWJJZMIWKLZ --rcheck --seconds 10800 --reap -j KUBE-SEP-C6EBXVWJJZMIWKLZ"#,
            r#"nat: -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC"#,
            r#"nat: -A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ"#,
            r#"nat: -A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m recent --name KUBE-SEP-UKSFD7AGPMPPLUHC --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80"#,
            r#"nat: -A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m recent --name KUBE-SEP-C6EBXVWJJZMIWKLZ --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn service_without_endpoints_rejects() {
        let got = case(|t| {
            t.apply_service(&nodeport(service("ns5", "svc5", "172.30.0.45", &[("p80", 80)]), 3005, "Cluster"));
        });
        let want = [
            r#"filter: -A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j REJECT"#,
            r#"filter: -A KUBE-EXTERNAL-SERVICES -m comment --comment "ns5/svc5:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3005 -j REJECT"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn terminating_serving_endpoints_are_a_fallback() {
        let got = case(|t| {
            t.apply_service(&service("ns6", "svc6", "172.30.0.46", &[("p80", 80)]));
            t.apply_slice(&slice(
                "ns6",
                "svc6-a",
                "svc6",
                ("p80", Some(80)),
                &[("10.180.0.6", "node1", false, true, true), ("10.180.0.7", "node2", false, false, true)],
            ));
        });
        let want = [
            r#"nat: :KUBE-SVC-NDY5GL2HU4YWCI7Q - [0:0]"#,
            r#"nat: :KUBE-SEP-FT5NGXB5V2KSXRGF - [0:0]"#,
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 cluster IP" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j KUBE-SVC-NDY5GL2HU4YWCI7Q"#,
            r#"nat: -A KUBE-SVC-NDY5GL2HU4YWCI7Q -m comment --comment "ns6/svc6:p80 cluster IP" -m tcp -p tcp -d 172.30.0.46 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SVC-NDY5GL2HU4YWCI7Q -m comment --comment "ns6/svc6:p80 -> 10.180.0.6:80" -j KUBE-SEP-FT5NGXB5V2KSXRGF"#,
            r#"nat: -A KUBE-SEP-FT5NGXB5V2KSXRGF -m comment --comment ns6/svc6:p80 -s 10.180.0.6 -j KUBE-MARK-MASQ"#,
            r#"nat: -A KUBE-SEP-FT5NGXB5V2KSXRGF -m comment --comment ns6/svc6:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.6:80"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn named_target_port_no_endpoint_has_rejects() {
        let got = case(|t| {
            t.apply_service(&service("ns7", "svc7", "172.30.0.47", &[("http", 80)]));
            t.apply_slice(&slice(
                "ns7",
                "svc7-a",
                "svc7",
                ("http", None),
                &[("10.180.0.8", "node1", true, true, false)],
            ));
        });
        let want = [
            r#"filter: -A KUBE-SERVICES -m comment --comment "ns7/svc7:http has no endpoints" -m tcp -p tcp -d 172.30.0.47 --dport 80 -j REJECT"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn clusterip_one_endpoint_full_text() {
        let mut t = Tracker::new();
        t.apply_service(&service("ns1", "svc1", "172.30.0.41", &[("p80", 80)]));
        t.apply_slice(&slice(
            "ns1",
            "svc1-a",
            "svc1",
            ("p80", Some(80)),
            &[("10.180.0.1", "node1", true, true, false)],
        ));
        let r = render(&cfg(), &t, None, &BTreeSet::new());
        let want = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
COMMIT
"#;
        assert_eq!(r.text, want, "\n{}", r.text);
        assert_eq!((r.filter_rules, r.nat_rules), (3, 10));
        let active: Vec<&str> = r.active_nat_chains.iter().map(String::as_str).collect();
        assert_eq!(active, ["KUBE-SEP-SXIVWICOYRO3J4NJ", "KUBE-SVC-XPGD46QRK7WJZT7O"]);
    }

    #[test]
    fn ready_endpoints_win_over_terminating_ones() {
        let mut t = Tracker::new();
        t.apply_service(&service("ns6", "svc6", "172.30.0.46", &[("p80", 80)]));
        t.apply_slice(&slice(
            "ns6",
            "svc6-a",
            "svc6",
            ("p80", Some(80)),
            &[("10.180.0.6", "node1", false, true, true), ("10.180.0.9", "node2", true, true, false)],
        ));
        let text = render(&cfg(), &t, None, &BTreeSet::new()).text;
        assert!(text.contains("--to-destination 10.180.0.9:80"), "{text}");
        assert!(!text.contains("10.180.0.6"), "{text}");
    }

    #[test]
    fn masquerade_all_marks_every_cluster_ip_packet() {
        let mut t = Tracker::new();
        t.apply_service(&service("ns1", "svc1", "172.30.0.41", &[("p80", 80)]));
        t.apply_slice(&slice(
            "ns1",
            "svc1-a",
            "svc1",
            ("p80", Some(80)),
            &[("10.180.0.1", "node1", true, true, false)],
        ));
        let cfg = RenderConfig { masquerade_all: true, ..cfg() };
        let text = render(&cfg, &t, None, &BTreeSet::new()).text;
        assert!(text.contains("-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ\n"), "{text}");
    }

    fn two_services() -> Tracker {
        let mut t = Tracker::new();
        t.apply_service(&service("ns1", "svc1", "172.30.0.41", &[("p80", 80)]));
        t.apply_slice(&slice(
            "ns1",
            "svc1-a",
            "svc1",
            ("p80", Some(80)),
            &[("10.180.0.1", "node1", true, true, false)],
        ));
        t.apply_service(&service("ns2", "svc2", "172.30.0.42", &[("p80", 80)]));
        t.apply_slice(&slice(
            "ns2",
            "svc2-a",
            "svc2",
            ("p80", Some(80)),
            &[("10.180.0.2", "node2", true, true, false)],
        ));
        t.take_changed();
        t
    }

    #[test]
    fn partial_sync_rewrites_only_changed_services_chains() {
        let mut t = two_services();
        let full = render(&cfg(), &t, None, &BTreeSet::new());
        t.apply_slice(&slice(
            "ns2",
            "svc2-a",
            "svc2",
            ("p80", Some(80)),
            &[("10.180.0.2", "node2", true, true, false), ("10.180.0.3", "node2", true, true, false)],
        ));
        let changed = t.take_changed();
        let partial = render(&cfg(), &t, Some(&changed), &full.active_nat_chains);
        let nat: Vec<&str> = partial.text.split("*nat\n").nth(1).expect("nat table").lines().collect();
        // svc1's chains are neither declared (which would flush them) nor rewritten ...
        assert!(
            !nat.iter()
                .any(|l| l.starts_with(":KUBE-SVC-XPGD46QRK7WJZT7O") || l.starts_with("-A KUBE-SVC-XPGD46QRK7WJZT7O")),
            "{}",
            partial.text
        );
        assert!(!nat.iter().any(|l| l.contains("KUBE-SEP-SXIVWICOYRO3J4NJ -")), "{}", partial.text);
        // ... but KUBE-SERVICES, which is always rewritten, still jumps to them.
        assert!(nat.iter().any(|l| l.starts_with("-A KUBE-SERVICES") && l.ends_with("-j KUBE-SVC-XPGD46QRK7WJZT7O")));
        assert!(nat.contains(&":KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]"));
        assert!(nat.iter().any(|l| l.contains("--to-destination 10.180.0.3:80")));
        // Nothing is deleted, and the rule count covers the skipped chains too.
        assert!(!partial.text.contains("-X "));
        assert!(full.active_nat_chains.is_subset(&partial.active_nat_chains));
        assert_eq!(partial.nat_rules, full.nat_rules + 3);
    }

    #[test]
    fn deleted_service_chains_are_removed_in_a_partial_sync() {
        let mut t = two_services();
        let full = render(&cfg(), &t, None, &BTreeSet::new());
        t.delete_service(&ServiceKey::new("ns2", "svc2"));
        let changed = t.take_changed();
        let partial = render(&cfg(), &t, Some(&changed), &full.active_nat_chains);
        let got = service_lines(&partial);
        let want = [
            // svc1 is unchanged: only its always-rewritten KUBE-SERVICES jump appears.
            r#"nat: -A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O"#,
            "nat: :KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]",
            "nat: :KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]",
            "nat: -X KUBE-SEP-RS4RBKLTHTF2IUXJ",
            "nat: -X KUBE-SVC-GNZBNJ2PO5MGZ6GT",
        ];
        // Chain declarations come before all rules in a table section.
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|l| !l.starts_with("nat: :"));
        assert_eq!(got_sorted, got);
        let mut want_sorted: Vec<&str> = want.to_vec();
        want_sorted.sort();
        let mut got_s: Vec<&str> = got.iter().map(String::as_str).collect();
        got_s.sort();
        assert_eq!(got_s, want_sorted, "\n{}", got.join("\n"));
        assert!(!partial
            .active_nat_chains
            .iter()
            .any(|c| c.contains("GNZBNJ2PO5MGZ6GT") || c.contains("RS4RBKLTHTF2IUXJ")));
    }

    #[test]
    fn chains_that_are_not_ours_are_never_deleted() {
        let existing = BTreeSet::from([
            "CNI-FOO".to_string(),
            "KUBE-MARK-DROP".to_string(),
            "KUBE-SVC-AAAAAAAAAAAAAAAA".to_string(),
        ]);
        let r = render(&cfg(), &Tracker::new(), None, &existing);
        assert!(r.text.contains("-X KUBE-SVC-AAAAAAAAAAAAAAAA\n"));
        assert!(!r.text.contains("CNI-FOO") && !r.text.contains("KUBE-MARK-DROP"));
    }

    #[test]
    fn nodeport_addresses_list_one_rule_per_node_ip() {
        let cfg = RenderConfig { nodeport_ips: Some(vec!["198.19.0.2".into()]), ..cfg() };
        let text = render(&cfg, &Tracker::new(), None, &BTreeSet::new()).text;
        assert!(text.contains("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -d 198.19.0.2 -j KUBE-NODEPORTS\n"), "{text}");
        assert!(!text.contains("addrtype --dst-type LOCAL ! -d"));
    }

    #[test]
    fn missing_jump_rules_are_inserted_in_the_same_restore() {
        let nat_saved = "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n";
        let missing: Vec<&str> = missing_jumps("nat", nat_saved).iter().map(|j| j.src_chain).collect();
        assert_eq!(missing, ["PREROUTING", "POSTROUTING"]);
        let text = "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n";
        let got = with_jumps(text, &missing_jumps("nat", nat_saved));
        assert_eq!(
            got,
            "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n\
             -I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\nCOMMIT\n"
        );
        assert_eq!(missing_jumps("filter", "").len(), 9);
    }

    #[test]
    fn finish_matches_a_render_with_the_union_of_existing_chains_plus_jumps() {
        let t = two_services();
        let saved: BTreeSet<String> =
            ["KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-SXIVWICOYRO3J4NJ", "PREROUTING"].map(String::from).into();
        let previous: BTreeSet<String> =
            ["KUBE-SEP-BBBBBBBBBBBBBBBB", "KUBE-SVC-AAAAAAAAAAAAAAAA"].map(String::from).into();
        let union: BTreeSet<String> = saved.union(&previous).cloned().collect();
        let jumps: Vec<&JumpRule> = missing_jumps("filter", "").into_iter().chain(missing_jumps("nat", "")).collect();
        let got = render_tables(&cfg(), &t, None).finish(&[&saved, &previous], &jumps);
        let want = render(&cfg(), &t, None, &union);
        assert_eq!(got.text, with_jumps(&want.text, &jumps));
        assert!(got.text.contains("-X KUBE-SEP-BBBBBBBBBBBBBBBB\n-X KUBE-SVC-AAAAAAAAAAAAAAAA\n"), "{}", got.text);
        assert_eq!(
            (got.nat_rules, got.filter_rules, &got.active_nat_chains),
            (want.nat_rules, want.filter_rules, &want.active_nat_chains)
        );
    }

    fn internal_local(mut svc: k8s_openapi::api::core::v1::Service) -> k8s_openapi::api::core::v1::Service {
        svc.spec.as_mut().expect("spec").internal_traffic_policy = Some("Local".into());
        svc
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_local_endpoints() {
        let got = case(|t| {
            t.apply_service(&internal_local(service("ns8", "svc8", "172.30.0.48", &[("p80", 80)])));
            t.apply_slice(&slice(
                "ns8",
                "svc8-a",
                "svc8",
                ("p80", Some(80)),
                &[("10.180.0.10", "node1", true, true, false), ("10.180.1.10", "node2", true, true, false)],
            ));
        });
        let svl = svl_chain(&ServicePortName { service: ServiceKey::new("ns8", "svc8"), port: "p80".into() }, "tcp");
        let sep = sep_chain(
            &ServicePortName { service: ServiceKey::new("ns8", "svc8"), port: "p80".into() },
            "tcp",
            "10.180.0.10:80",
        );
        let want = [
            format!("nat: :{svl} - [0:0]"),
            format!("nat: :{sep} - [0:0]"),
            format!(
                r#"nat: -A KUBE-SERVICES -m comment --comment "ns8/svc8:p80 cluster IP" -m tcp -p tcp -d 172.30.0.48 --dport 80 -j {svl}"#
            ),
            format!(
                r#"nat: -A {svl} -m comment --comment "ns8/svc8:p80 cluster IP" -m tcp -p tcp -d 172.30.0.48 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"#
            ),
            format!(r#"nat: -A {svl} -m comment --comment "ns8/svc8:p80 -> 10.180.0.10:80" -j {sep}"#),
            format!("nat: -A {sep} -m comment --comment ns8/svc8:p80 -s 10.180.0.10 -j KUBE-MARK-MASQ"),
            format!(
                "nat: -A {sep} -m comment --comment ns8/svc8:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.10:80"
            ),
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn internal_traffic_policy_local_without_local_endpoints_drops() {
        let got = case(|t| {
            t.apply_service(&internal_local(service("ns8", "svc8", "172.30.0.48", &[("p80", 80)])));
            t.apply_slice(&slice(
                "ns8",
                "svc8-a",
                "svc8",
                ("p80", Some(80)),
                &[("10.180.1.10", "node2", true, true, false)],
            ));
        });
        let want = [
            r#"filter: -A KUBE-SERVICES -m comment --comment "ns8/svc8:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.48 --dport 80 -j DROP"#,
        ];
        assert_eq!(got, want, "\n{}", got.join("\n"));
    }

    #[test]
    fn cleanup_removes_our_jumps_and_chains_only() {
        let nat = "*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n:CNI-Y - [0:0]\n\
                   -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
                   -A OUTPUT -j CNI-Y\nCOMMIT\n";
        let got = cleanup("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", nat);
        assert_eq!(
            got,
            "*filter\nCOMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n\
             -D OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -X KUBE-SERVICES\n-X KUBE-SVC-X\nCOMMIT\n"
        );
    }
}
