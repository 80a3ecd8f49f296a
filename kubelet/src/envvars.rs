//! A container's environment: upstream's `makeEnvironmentVariables`. `envFrom` first (each
//! source in order, keys optionally prefixed, invalid names skipped with a warning), then `env`
//! (values with `$(VAR)` expansion against what is defined so far, `configMapKeyRef`,
//! `secretKeyRef`, `fieldRef`, `resourceFieldRef`); a later definition of a name wins. Pure:
//! the objects come in as a [`PodObjects`] snapshot.
//! Service variables (`<SVC>_SERVICE_HOST`, docker-link style `<SVC>_PORT_...`) come last and
//! only fill names not defined otherwise, as upstream's do: [`service_env`] builds them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::objects::PodObjects;
use crate::qos::{milli_value, value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey { key: String, namespace: String, name: String },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey { key: String, namespace: String, name: String },
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource: {0}")]
    Resource(String),
    #[error("invalid quantity {0:?}")]
    Quantity(String),
}

/// What the environment of one container is built from besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    pub objects: &'a PodObjects,
    pub host_ips: &'a [String],
    pub pod_ips: &'a [String],
    /// The node's allocatable resources: the value of a `limits.*` reference without a limit.
    pub allocatable: &'a BTreeMap<String, Quantity>,
    /// Service variables ([`service_env`]), the lowest-priority definitions.
    pub service_env: &'a [(String, String)],
}

/// upstream's service environment (getServiceEnvVarMap + envvars.FromServices): the services of
/// the pod's namespace when `enableServiceLinks` (default true), and always the `kubernetes`
/// service of `default`; headless services are skipped.
pub fn service_env(pod: &Pod, services: &[Service]) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
        if svc_ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if svc_ns == ns && links {
            chosen.insert(name, svc);
        }
    }
    let mut out = Vec::new();
    for (name, svc) in chosen {
        let spec = svc.spec.clone().unwrap_or_default();
        let ip = spec.cluster_ip.unwrap_or_default();
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{prefix}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((base.clone(), format!("{}://{ip}:{}", pr.to_lowercase(), p.port)));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The result: the variables in order, and warnings to turn into events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub vars: Vec<(String, String)>,
    /// (reason, message) pairs, e.g. InvalidEnvironmentVariableNames.
    pub warnings: Vec<(String, String)>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(v) => v.1 = value,
            None => self.vars.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// upstream's IsEnvVarName: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    let valid = |c: char| c == '-' || c == '.' || c == '_' || c.is_ascii_alphabetic();
    match chars.next() {
        Some(c) if valid(c) => chars.all(|c| valid(c) || c.is_ascii_digit()),
        _ => false,
    }
}

/// upstream's `expansion.Expand`: `$(VAR)` becomes the value of VAR when `mapping` knows it and
/// stays as written otherwise; `$$` is an escaped `$`; an unclosed `$(` stays as written.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(end) => {
                        let name = &rest[1..end];
                        match mapping(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        end + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `$` then whatever char follows, unchanged.
                    let ch = rest.chars().next().map(char::len_utf8).unwrap_or(1);
                    out.push('$');
                    out.push_str(&rest[..ch]);
                    ch
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// upstream's podFieldSelectorRuntimeValue.
pub fn field_value(pod: &Pod, sel: &ObjectFieldSelector, ctx: &EnvContext<'_>) -> Result<String, EnvError> {
    let path = sel.field_path.as_str();
    let md = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .or_else(|| path.strip_prefix(&prefix.replace('\'', "\"")).and_then(|r| r.strip_suffix("\"]")))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" => ctx.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => ctx.host_ips.join(","),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        _ => {
            if let Some(k) = subscript("metadata.labels['") {
                md.labels.as_ref().and_then(|l| l.get(&k)).cloned().unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations['") {
                md.annotations.as_ref().and_then(|a| a.get(&k)).cloned().unwrap_or_default()
            } else {
                return Err(EnvError::FieldPath(path.into()));
            }
        }
    })
}

/// upstream's ExtractContainerResourceValue, with limits defaulted to the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    current: &Container,
    sel: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let container = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => current,
        Some(n) => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == n))
            .unwrap_or(current),
    };
    let (kind, name) = sel.resource.split_once('.').ok_or_else(|| EnvError::Resource(sel.resource.clone()))?;
    let res = container.resources.as_ref();
    let q = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(name)).or_else(|| allocatable.get(name)),
        "requests" => res.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(name)),
        _ => return Err(EnvError::Resource(sel.resource.clone())),
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        return Err(EnvError::Resource(sel.resource.clone()));
    }
    let divisor = sel.divisor.clone().unwrap_or_else(|| Quantity("1".into()));
    let bad = |q: &Quantity| EnvError::Quantity(q.0.clone());
    let zero = Quantity("0".into());
    let q = q.unwrap_or(&zero);
    let out = if name == "cpu" {
        let d = milli_value(&divisor).filter(|d| *d != 0).ok_or_else(|| bad(&divisor))?;
        let v = milli_value(q).ok_or_else(|| bad(q))?;
        (v + d - 1).div_euclid(d)
    } else {
        let d = value(&divisor).filter(|d| *d != 0).ok_or_else(|| bad(&divisor))?;
        let v = value(q).ok_or_else(|| bad(q))?;
        (v + d - 1).div_euclid(d)
    };
    Ok(out.to_string())
}

/// upstream's makeEnvironmentVariables for container `c` of `pod`.
pub fn make_environment(pod: &Pod, c: &Container, ctx: &EnvContext<'_>) -> Result<Env, EnvError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = Env::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, data): (&str, String, BTreeMap<String, String>) = if let Some(r) = &from.config_map_ref {
            match ctx.objects.config_map(&r.name) {
                Some(cm) => ("configMap", r.name.clone(), cm.data.clone().unwrap_or_default()),
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        } else if let Some(r) = &from.secret_ref {
            match ctx.objects.secret(&r.name) {
                Some(s) => {
                    let data = s.data.clone().unwrap_or_default();
                    let data = data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect();
                    ("secret", r.name.clone(), data)
                }
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let key = format!("{prefix}{k}");
            if !is_env_var_name(&key) {
                invalid.push(key);
                continue;
            }
            env.set(key, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            env.warnings.push((
                "InvalidEnvironmentVariableNames".into(),
                format!(
                    "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            ));
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match ctx.objects.config_map(&r.name) {
                    None if optional => continue,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKey {
                                key: r.key.clone(),
                                namespace: ns.clone(),
                                name: r.name.clone(),
                            })
                        }
                    },
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match ctx.objects.secret(&r.name) {
                    None if optional => continue,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKey {
                                key: r.key.clone(),
                                namespace: ns.clone(),
                                name: r.name.clone(),
                            })
                        }
                    },
                }
            } else if let Some(f) = &from.field_ref {
                field_value(pod, f, ctx)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(pod, c, r, ctx.allocatable)?
            } else {
                String::new()
            }
        } else {
            let raw = e.value.clone().unwrap_or_default();
            expand(&raw, |name| {
                env.get(name)
                    .map(str::to_string)
                    .or_else(|| ctx.service_env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            })
        };
        env.set(e.name.clone(), value);
    }
    for (k, v) in ctx.service_env {
        if env.get(k).is_none() {
            env.vars.push((k.clone(), v.clone()));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "web"}, "annotations": {"team": "a"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "sa", "containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]},
        }))
        .expect("pod")
    }

    fn objects() -> PodObjects {
        let mut o = PodObjects::default();
        o.config_maps.insert(
            "cfg".into(),
            Some(
                serde_json::from_value(json!({"metadata": {"name": "cfg"},
                    "data": {"MODE": "fast", "1BAD": "x", "good.key": "y", "LEVEL": "3"}}))
                .expect("cm"),
            ),
        );
        o.config_maps.insert("gone".into(), None);
        o.secrets.insert(
            "creds".into(),
            Some(
                serde_json::from_value(json!({"metadata": {"name": "creds"}, "data": {"PASSWORD": "czNjcjN0"}}))
                    .expect("secret"),
            ),
        );
        o
    }

    fn run(c: serde_json::Value) -> Result<Env, EnvError> {
        let p = pod();
        let c: Container = serde_json::from_value(c).expect("container");
        let objs = objects();
        let alloc =
            BTreeMap::from([("cpu".to_string(), Quantity("2".into())), ("memory".to_string(), Quantity("4Gi".into()))]);
        let ctx = EnvContext {
            objects: &objs,
            host_ips: &["198.19.0.2".into()],
            pod_ips: &["198.18.1.5".into()],
            allocatable: &alloc,
            service_env: &[
                ("WEB_SERVICE_HOST".to_string(), "198.19.1.10".to_string()),
                ("A".to_string(), "svc".to_string()),
            ],
        };
        make_environment(&p, &c, &ctx)
    }

    fn get<'a>(env: &'a Env, name: &str) -> Option<&'a str> {
        env.get(name)
    }

    #[test]
    fn expansion_follows_upstream_expand() {
        let vars = |n: &str| match n {
            "A" => Some("a".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (input, want) in [
            ("$(A)", "a"),
            ("x-$(A)-y", "x-a-y"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$(A", "$(A"),
            ("$A", "$A"),
            ("a$", "a$"),
            ("$(EMPTY)z", "z"),
            ("$()", "$()"),
            ("héllo $(A)", "héllo a"),
        ] {
            assert_eq!(expand(input, vars), want, "{input}");
        }
    }

    #[test]
    fn service_env_follows_upstream_from_services() {
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip, "ports": ports}}),
            )
            .expect("service")
        };
        let services = [
            svc("default", "kubernetes", "198.19.1.1", json!([{"name": "https", "port": 443}])),
            svc(
                "ns",
                "my-web",
                "198.19.1.10",
                json!([{"name": "http-alt", "port": 8080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
            ),
            svc("ns", "headless", "None", json!([{"port": 80}])),
            svc("other", "elsewhere", "198.19.1.11", json!([{"port": 80}])),
        ];
        let env = service_env(&pod(), &services);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("198.19.1.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://198.19.1.1:443"));
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("198.19.1.10"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_HTTP_ALT"), Some("8080"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://198.19.1.10:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_WEB_PORT_8080_TCP_ADDR"), Some("198.19.1.10"));
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None, "headless services have no variables");
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None, "only the pod's namespace");

        let mut no_links = pod();
        no_links.spec.as_mut().expect("spec").enable_service_links = Some(false);
        let env = service_env(&no_links, &services);
        assert!(env.iter().all(|(k, _)| k.starts_with("KUBERNETES_")), "only the master service: {env:?}");
    }

    #[test]
    fn service_variables_fill_only_undefined_names_and_expand() {
        let env = run(json!({"name": "app", "env": [{"name": "A", "value": "mine"}, {"name": "U", "value": "$(WEB_SERVICE_HOST)"}]}))
            .expect("env");
        assert_eq!(get(&env, "A"), Some("mine"), "the container's own definition wins");
        assert_eq!(get(&env, "U"), Some("198.19.1.10"), "service variables expand");
        assert_eq!(get(&env, "WEB_SERVICE_HOST"), Some("198.19.1.10"));
    }

    #[test]
    fn env_var_names_are_checked_as_upstream() {
        for (n, ok) in [("A", true), ("_a.b-c", true), ("1A", false), ("", false), ("A B", false), ("a=b", false)] {
            assert_eq!(is_env_var_name(n), ok, "{n:?}");
        }
    }

    #[test]
    fn value_expands_earlier_variables_and_env_overrides_env_from() {
        let env = run(json!({"name": "app", "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-$(CFG_MODE)-$(C)"}, {"name": "C", "value": "3"},
                    {"name": "CFG_LEVEL", "value": "override"}]}))
        .expect("env");
        assert_eq!(get(&env, "B"), Some("1-fast-$(C)"), "only variables defined before are expanded");
        assert_eq!(get(&env, "CFG_LEVEL"), Some("override"));
        assert_eq!(get(&env, "CFG_good.key"), Some("y"));
        assert_eq!(get(&env, "CFG_1BAD"), Some("x"), "the prefix makes the name valid");
    }

    #[test]
    fn env_from_skips_invalid_names_with_a_warning() {
        let env = run(json!({"name": "app", "envFrom": [{"configMapRef": {"name": "cfg"}}]})).expect("env");
        assert_eq!(get(&env, "1BAD"), None);
        assert_eq!(get(&env, "MODE"), Some("fast"));
        assert_eq!(
            env.warnings,
            [(
                "InvalidEnvironmentVariableNames".to_string(),
                "Keys [1BAD] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names.".to_string()
            )]
        );
    }

    #[test]
    fn key_refs_and_optional_handling() {
        let ok = run(json!({"name": "app", "env": [
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "OPTKEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
        ], "envFrom": [{"secretRef": {"name": "missing", "optional": true}}]}))
        .expect("env");
        assert_eq!(get(&ok, "MODE"), Some("fast"));
        assert_eq!(get(&ok, "PW"), Some("s3cr3t"));
        assert_eq!(get(&ok, "OPT"), None, "an optional reference to a missing object sets nothing");
        assert_eq!(get(&ok, "OPTKEY"), None);

        let cases = [
            (json!({"configMapKeyRef": {"name": "gone", "key": "k"}}), "configmap \"gone\" not found"),
            (json!({"configMapKeyRef": {"name": "cfg", "key": "nope"}}), "couldn't find key nope in ConfigMap ns/cfg"),
            (json!({"secretKeyRef": {"name": "other", "key": "k"}}), "secret \"other\" not found"),
            (json!({"secretKeyRef": {"name": "creds", "key": "nope"}}), "couldn't find key nope in Secret ns/creds"),
        ];
        for (from, want) in cases {
            let err = run(json!({"name": "app", "env": [{"name": "X", "valueFrom": from}]})).expect_err("missing");
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn field_refs_resolve_like_upstream() {
        let fields = [
            ("metadata.name", "web"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.annotations['team']", "a"),
            ("metadata.labels['missing']", ""),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "sa"),
            ("status.hostIP", "198.19.0.2"),
            ("status.hostIPs", "198.19.0.2"),
            ("status.podIP", "198.18.1.5"),
            ("status.podIPs", "198.18.1.5"),
        ];
        for (path, want) in fields {
            let env =
                run(json!({"name": "app", "env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}))
                    .expect("env");
            assert_eq!(get(&env, "F"), Some(want), "{path}");
        }
        let err =
            run(json!({"name": "app", "env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]}));
        assert_eq!(err, Err(EnvError::FieldPath("spec.nope".into())));
    }

    #[test]
    fn resource_field_refs_round_up_by_divisor_and_default_limits_to_allocatable() {
        for (resource, divisor, want) in [
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("1m"), "250"),
            ("limits.cpu", None, "2"),
            ("limits.cpu", Some("1m"), "2000"),
            ("requests.memory", Some("1Mi"), "64"),
            ("limits.memory", None, "134217728"),
            ("limits.memory", Some("1Mi"), "128"),
            ("requests.ephemeral-storage", None, "0"),
        ] {
            let mut sel = json!({"resource": resource});
            if let Some(d) = divisor {
                sel["divisor"] = json!(d);
            }
            let env = run(json!({"name": "app", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "env": [{"name": "R", "valueFrom": {"resourceFieldRef": sel}}]}))
            .expect("env");
            assert_eq!(get(&env, "R"), Some(want), "{resource} / {divisor:?}");
        }
    }
}
