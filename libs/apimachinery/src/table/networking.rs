//! Printers for `networking.k8s.io` (ingresses, ingress classes, network policies) and
//! `discovery.k8s.io` (endpoint slices).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::core_v1::load_balancer_addresses;
use super::format::{age, arr_at, format_label_selector, get, list_with_more, name, opt_int, opt_str, str_at};
use super::{col, Printer, AGE, NAME};

pub(super) const INGRESSES: Printer = Printer {
    columns: &[
        NAME,
        col("Class", "string", "Ingress class that should implement the ingress."),
        col("Hosts", "string", "Hosts the rules match requests against, the first three shown."),
        col("Address", "string", "Addresses of the load balancer serving the ingress."),
        col("Ports", "string", "Ports the ingress is served on: 80, plus 443 with TLS."),
        AGE,
    ],
    cells: ingress_cells,
};

/// upstream `formatHosts`: the first three non-empty hosts, `*` when there are none; once
/// three are listed, any further rule adds `+ N more...` (N counting rules, not hosts).
fn ingress_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
            break;
        }
        let host = str_at(rule, &["host"]);
        if !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_string();
    }
    let joined = hosts.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - MAX)
    } else {
        joined
    }
}

fn ingress_cells(ing: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if arr_at(ing, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
    vec![
        name(ing),
        Value::from(opt_str(ing, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        Value::from(ingress_hosts(arr_at(ing, &["spec", "rules"]))),
        Value::from(load_balancer_addresses(arr_at(ing, &["status", "loadBalancer", "ingress"]))),
        Value::from(ports),
        age(ing, now),
    ]
}

pub(super) const INGRESS_CLASSES: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "Controller that implements ingresses of this class."),
        col("Parameters", "string", "Object holding the class's extra configuration, as kind.group/name."),
        AGE,
    ],
    cells: ingress_class_cells,
};

fn ingress_class_cells(ic: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(ic, &["spec", "parameters"]) {
        Some(p) if p.is_object() => {
            let kind = str_at(p, &["kind"]);
            let group = match opt_str(p, &["apiGroup"]) {
                Some(g) => format!(".{g}"),
                None => String::new(),
            };
            format!("{kind}{group}/{}", str_at(p, &["name"]))
        }
        _ => "<none>".to_string(),
    };
    vec![name(ic), Value::from(str_at(ic, &["spec", "controller"])), Value::from(parameters), age(ic, now)]
}

pub(super) const NETWORK_POLICIES: Printer = Printer {
    columns: &[NAME, col("Pod-Selector", "string", "Label selector of the pods the policy applies to."), AGE],
    cells: network_policy_cells,
};

fn network_policy_cells(np: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(np), Value::from(format_label_selector(get(np, &["spec", "podSelector"]))), age(np, now)]
}

pub(super) const ENDPOINT_SLICES: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", "Type of the addresses in the slice: IPv4, IPv6 or FQDN."),
        col("Ports", "string", "Ports of the slice, the first three shown."),
        col("Endpoints", "string", "Addresses of the endpoints, the first three shown."),
        AGE,
    ],
    cells: endpoint_slice_cells,
};

fn endpoint_slice_cells(es: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let ports = arr_at(es, &["ports"]);
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| match opt_int(p, &["port"]) {
            Some(n) => n.to_string(),
            None => opt_str(p, &["name"]).unwrap_or("*").to_string(),
        })
        .collect();
    let addresses: Vec<&Value> = arr_at(es, &["endpoints"]).iter().flat_map(|e| arr_at(e, &["addresses"])).collect();
    let address_list: Vec<String> = addresses.iter().take(MAX).map(|a| a.as_str().unwrap_or("").to_string()).collect();
    vec![
        name(es),
        Value::from(str_at(es, &["addressType"])),
        Value::from(list_with_more(&port_list, ports.len(), MAX)),
        Value::from(list_with_more(&address_list, addresses.len(), MAX)),
        age(es, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn ingress_row_shows_class_hosts_address_and_tls_ports() {
        let ing = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}},
        });
        assert_eq!(
            ingress_cells(&ing, now()),
            vec![
                json!("web"),
                json!("nginx"),
                json!("a.example.com,b.example.com"),
                json!("203.0.113.7"),
                json!("80, 443"),
                json!("60m"),
            ]
        );
        let bare = ingress_cells(&json!({}), now());
        assert_eq!(bare[1..5].to_vec(), vec![json!("<none>"), json!("*"), json!(""), json!("80")]);
    }

    #[test]
    fn ingress_hosts_show_first_three() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([{}]), "*"),
            (json!([{"host": "a"}, {}, {"host": "c"}]), "a,c"),
            (json!([{"host": "a"}, {}, {"host": "c"}, {"host": "d"}]), "a,c,d"),
            (json!([{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]), "a,b,c + 2 more..."),
        ];
        for (rules, want) in cases {
            let rules = rules.as_array().cloned().unwrap_or_default();
            assert_eq!(ingress_hosts(&rules), want);
        }
    }

    #[test]
    fn ingress_class_parameters() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"controller": "k8s.io/ingress-nginx"}), "<none>"),
            (
                json!({"parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                                      "name": "external-lb"}}),
                "IngressParameters.k8s.example.com/external-lb",
            ),
            (json!({"parameters": {"kind": "ConfigMap", "name": "cfg"}}), "ConfigMap/cfg"),
        ];
        for (spec, want) in cases {
            let ic = json!({"metadata": {"name": "nginx"}, "spec": spec});
            assert_eq!(ingress_class_cells(&ic, now())[2], json!(want));
        }
    }

    #[test]
    fn network_policy_pod_selector() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "<none>"),
            (json!({"podSelector": {}}), "<none>"),
            (json!({"podSelector": {"matchLabels": {"role": "db"}}}), "role=db"),
            (
                json!({"podSelector": {"matchExpressions": [
                    {"key": "tier", "operator": "NotIn", "values": ["web"]},
                    {"key": "app", "operator": "Exists"},
                    {"key": "legacy", "operator": "DoesNotExist"}]}}),
                "app,!legacy,tier notin (web)",
            ),
            (json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}), "<error>"),
        ];
        for (spec, want) in cases {
            let np = json!({"metadata": {"name": "np"}, "spec": spec});
            assert_eq!(network_policy_cells(&np, now())[1], json!(want), "{spec}");
        }
    }

    #[test]
    fn endpoint_slice_ports_and_endpoints() {
        let es = json!({
            "metadata": {"name": "web-abc"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80}, {"name": "named"}, {}, {"port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}],
        });
        let cells = endpoint_slice_cells(&es, now());
        assert_eq!(cells[1], json!("IPv4"));
        assert_eq!(cells[2], json!("80,named,* + 1 more..."));
        assert_eq!(cells[3], json!("10.0.0.1,10.0.0.2,10.0.0.3"));
        let empty = endpoint_slice_cells(&json!({}), now());
        assert_eq!(empty[2], json!("<unset>"));
        assert_eq!(empty[3], json!("<unset>"));
    }
}
