//! A pod's DNS and identity: the CRI `DNSConfig` from `dnsPolicy` and `dnsConfig` (upstream's
//! `pkg/kubelet/network/dns`), the sandbox hostname and domain (`GeneratePodHostNameAndDomain`)
//! and the kubelet-managed `/etc/hosts` (`managedHostsFileContent`). Pure.

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::api;

/// upstream's limits on the search list (glibc 2.28+ and musl).
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// The longest hostname (a DNS label).
const MAX_HOSTNAME_LEN: usize = 63;

/// The kubelet's DNS settings (flags `--cluster-dns`, `--cluster-domain`, `--resolv-conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The node's resolver config (the contents of `--resolv-conf`), for `dnsPolicy: Default`.
    pub host: HostResolv,
}

/// What a resolv.conf says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResolv {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Parses resolv.conf text (upstream's parseResolvConf: the last `search` line wins).
pub fn parse_resolv_conf(text: &str) -> HostResolv {
    let mut out = HostResolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => out.nameservers.extend(fields.next().map(str::to_string)),
            Some("search") => {
                out.searches = fields.map(|s| s.trim_end_matches('.').to_string()).filter(|s| !s.is_empty()).collect()
            }
            Some("options") => out.options.extend(fields.map(str::to_string)),
            _ => {}
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Cluster,
    Host,
}

/// upstream's getPodDNSType. The bool says the cluster DNS was wanted but not configured
/// (upstream's MissingClusterDNS event).
fn dns_kind(pod: &Pod, settings: &DnsSettings) -> (Kind, bool) {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster = match spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst") {
        "None" => return (Kind::None, false),
        "ClusterFirstWithHostNet" => true,
        "Default" => false,
        // ClusterFirst: a host-network pod falls back to the node's resolver.
        _ => !host_network,
    };
    if !cluster {
        return (Kind::Host, false);
    }
    if settings.cluster_dns.is_empty() {
        return (Kind::Host, true);
    }
    (Kind::Cluster, false)
}

fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Options merge by name: a later `name[:value]` replaces an earlier one.
fn merge_options(base: Vec<String>, extra: Vec<(String, Option<String>)>) -> Vec<String> {
    let mut out: Vec<(String, Option<String>)> = base
        .into_iter()
        .map(|o| match o.split_once(':') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (o, None),
        })
        .collect();
    for (name, value) in extra {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(o) => o.1 = value,
            None => out.push((name, value)),
        }
    }
    out.into_iter().map(|(n, v)| v.map(|v| format!("{n}:{v}")).unwrap_or(n)).collect()
}

/// Trims the search list to what resolvers accept.
fn fit_searches(searches: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = 0;
    for s in searches.into_iter().take(MAX_DNS_SEARCH_PATHS) {
        let add = s.len() + usize::from(!out.is_empty());
        if chars + add > MAX_DNS_SEARCH_LIST_CHARS {
            break;
        }
        chars += add;
        out.push(s);
    }
    out
}

/// upstream's GetPodDNS: the CRI DNSConfig for `pod`, and whether the MissingClusterDNS event
/// applies.
pub fn pod_dns_config(pod: &Pod, settings: &DnsSettings) -> (api::DnsConfig, bool) {
    let (kind, missing_cluster_dns) = dns_kind(pod, settings);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = settings.cluster_domain.trim_end_matches('.');
    let (mut servers, mut searches, mut options) = match kind {
        Kind::None => (vec![], vec![], vec![]),
        Kind::Host => {
            (settings.host.nameservers.clone(), settings.host.searches.clone(), settings.host.options.clone())
        }
        Kind::Cluster => {
            let mut searches = Vec::new();
            if !domain.is_empty() {
                searches = vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.to_string()];
            }
            searches.extend(settings.host.searches.iter().cloned());
            (settings.cluster_dns.clone(), searches, vec!["ndots:5".to_string()])
        }
    };
    if let Some(extra) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        servers.extend(extra.nameservers.iter().flatten().cloned());
        searches.extend(extra.searches.iter().flatten().cloned());
        let opts: Vec<(String, Option<String>)> =
            extra.options.iter().flatten().filter_map(|o| o.name.clone().map(|n| (n, o.value.clone()))).collect();
        options = merge_options(options, opts);
    }
    let config =
        api::DnsConfig { servers: dedup(servers), searches: fit_searches(dedup(searches)), options: dedup(options) };
    (config, missing_cluster_dns)
}

/// upstream's GeneratePodHostNameAndDomain: the hostname (spec.hostname or the pod name, cut
/// to 63 characters without a trailing `-` or `.`) and the domain
/// `<subdomain>.<namespace>.svc.<cluster domain>` when a subdomain is set.
pub fn hostname_and_domain(pod: &Pod, cluster_domain: &str) -> (String, String) {
    let spec = pod.spec.as_ref();
    let mut hostname = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    if hostname.len() > MAX_HOSTNAME_LEN {
        hostname.truncate(MAX_HOSTNAME_LEN);
        while hostname.ends_with(['-', '.']) {
            hostname.pop();
        }
    }
    let domain = match spec.and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(sub) => format!(
            "{sub}.{}.svc.{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            cluster_domain.trim_end_matches('.')
        ),
        None => String::new(),
    };
    (hostname, domain)
}

/// The kubelet-managed `/etc/hosts` for a pod with its own network namespace: localhost
/// entries, the pod's IPs with its FQDN and hostname, then `hostAliases`.
pub fn managed_hosts_file(pod: &Pod, pod_ips: &[String], cluster_domain: &str) -> String {
    let (hostname, domain) = hostname_and_domain(pod, cluster_domain);
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        if domain.is_empty() {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// The node's own hosts file plus `hostAliases`, for a host-network pod.
pub fn host_network_hosts_file(pod: &Pod, node_hosts: &str) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
    out.push_str(node_hosts);
    if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&host_aliases(pod));
    out
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.clone()).unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.unwrap_or_default().join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "a", "image": "x"}]);
        serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec})).expect("pod")
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["198.19.1.53".into()],
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf("# host\nnameserver 198.19.0.1\nsearch corp.example.\noptions timeout:2\n"),
        }
    }

    #[test]
    fn resolv_conf_parses_nameservers_search_and_options() {
        let r = parse_resolv_conf("nameserver 1.1.1.1 # x\nsearch a b\nsearch c.\n; comment\noptions ndots:2 rotate\n");
        assert_eq!(r.nameservers, ["1.1.1.1"]);
        assert_eq!(r.searches, ["c"], "the last search line wins");
        assert_eq!(r.options, ["ndots:2", "rotate"]);
    }

    #[test]
    fn dns_policy_picks_the_resolver_as_upstream() {
        let cluster = api::DnsConfig {
            servers: vec!["198.19.1.53".into()],
            searches: vec![
                "shop.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
                "corp.example".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        let host = api::DnsConfig {
            servers: vec!["198.19.0.1".into()],
            searches: vec!["corp.example".into()],
            options: vec!["timeout:2".into()],
        };
        let cases = [
            ("default policy is ClusterFirst", json!({}), cluster.clone()),
            ("ClusterFirst", json!({"dnsPolicy": "ClusterFirst"}), cluster.clone()),
            (
                "ClusterFirst on the host network falls back",
                json!({"dnsPolicy": "ClusterFirst", "hostNetwork": true}),
                host.clone(),
            ),
            (
                "ClusterFirstWithHostNet",
                json!({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true}),
                cluster.clone(),
            ),
            ("Default", json!({"dnsPolicy": "Default"}), host.clone()),
            ("None without dnsConfig", json!({"dnsPolicy": "None"}), api::DnsConfig::default()),
            (
                "None with dnsConfig",
                json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["198.19.1.10"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
                api::DnsConfig {
                    servers: vec!["198.19.1.10".into()],
                    searches: vec!["a.b".into()],
                    options: vec!["ndots:2".into(), "edns0".into()],
                },
            ),
        ];
        for (what, spec, want) in cases {
            let (got, missing) = pod_dns_config(&pod(spec), &settings());
            assert_eq!(got, want, "{what}");
            assert!(!missing, "{what}");
        }
    }

    #[test]
    fn dns_config_merges_into_cluster_first() {
        let p = pod(
            json!({"dnsConfig": {"nameservers": ["198.19.1.53", "198.19.1.54"], "searches": ["svc.cluster.local", "extra"],
            "options": [{"name": "ndots", "value": "1"}]}}),
        );
        let (got, _) = pod_dns_config(&p, &settings());
        assert_eq!(got.servers, ["198.19.1.53", "198.19.1.54"], "duplicates dropped");
        assert_eq!(got.searches.last().map(String::as_str), Some("extra"));
        assert_eq!(got.searches.iter().filter(|s| *s == "svc.cluster.local").count(), 1);
        assert_eq!(got.options, ["ndots:1"], "a pod option overrides the kubelet's");
    }

    #[test]
    fn cluster_first_without_cluster_dns_uses_the_host_and_warns() {
        let s = DnsSettings { cluster_dns: vec![], ..settings() };
        let (got, missing) = pod_dns_config(&pod(json!({})), &s);
        assert_eq!(got.servers, ["198.19.0.1"]);
        assert!(missing);
    }

    #[test]
    fn search_list_is_cut_to_resolver_limits() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
        assert_eq!(fit_searches(many).len(), MAX_DNS_SEARCH_PATHS);
        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(299))).collect();
        let fit = fit_searches(long);
        assert_eq!(fit.len(), 6, "6 × 300 + 5 separators fit in 2048 characters, 7 do not");
    }

    #[test]
    fn hostname_and_subdomain_as_upstream() {
        assert_eq!(hostname_and_domain(&pod(json!({})), "cluster.local"), ("web-0".into(), String::new()));
        assert_eq!(
            hostname_and_domain(&pod(json!({"hostname": "db", "subdomain": "backend"})), "cluster.local."),
            ("db".into(), "backend.shop.svc.cluster.local".into())
        );
        let long = format!("{}-{}", "a".repeat(62), "b");
        let (h, _) = hostname_and_domain(&pod(json!({"hostname": long})), "cluster.local");
        assert_eq!(h, "a".repeat(62), "cut to 63 characters, then the trailing '-' goes");
    }

    #[test]
    fn managed_hosts_file_has_the_pod_entry_and_host_aliases() {
        let p = pod(json!({"hostname": "db", "subdomain": "backend",
            "hostAliases": [{"ip": "198.19.1.9", "hostnames": ["foo.local", "bar.local"]}]}));
        let text = managed_hosts_file(&p, &["198.18.1.7".into()], "cluster.local");
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{text}");
        assert!(text.contains("198.18.1.7\tdb.backend.shop.svc.cluster.local\tdb\n"), "{text}");
        assert!(text.ends_with("\n# Entries added by HostAliases.\n198.19.1.9\tfoo.local\tbar.local\n"), "{text}");
        let plain = managed_hosts_file(&pod(json!({})), &["198.18.1.8".into()], "cluster.local");
        assert!(plain.contains("198.18.1.8\tweb-0\n"), "{plain}");
        let hn = host_network_hosts_file(&pod(json!({"hostNetwork": true})), "127.0.0.1 localhost");
        assert!(hn.contains("127.0.0.1 localhost\n"), "{hn}");
    }
}
