//! Admission plugins: what `--enable-admission-plugins` / `--disable-admission-plugins` choose
//! from, and the ServiceAccount plugin's pod mutation.
//!
//! upstream's ServiceAccount plugin (on by default): a pod created without a service account
//! gets `default`; the service account must exist (the `default` one is looked for a little
//! longer, since the controller-manager creates it just after its namespace); unless the pod or
//! its service account opts out with `automountServiceAccountToken: false`, every container
//! mounts a projected `kube-api-access-<random>` volume (a bound token, the cluster CA from the
//! `kube-root-ca.crt` ConfigMap, the namespace) at the in-cluster client's path; and a pod
//! without imagePullSecrets takes its service account's.
//!
//! Namespace lifecycle is not a plugin here: it is always on, in the store.

use apimachinery::status::{ApiError, Details};
use serde_json::{json, Value};

pub const SERVICE_ACCOUNT: &str = "ServiceAccount";

/// Where in-cluster clients read the token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
/// upstream: the bound token's lifetime in the projected volume (one hour and seven seconds,
/// the seven marking tokens that are only warned about once expired).
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// Marks a kubelet's mirror of a static pod, which the plugin leaves alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The plugins in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plugins {
    pub service_account: bool,
}

impl Default for Plugins {
    fn default() -> Self {
        Self { service_account: true }
    }
}

impl Plugins {
    /// The defaults with `enable` added and `disable` removed. Unknown names, and a name in
    /// both lists, are refused so that a typo cannot silently leave a plugin on or off.
    pub fn from_flags(enable: &[String], disable: &[String]) -> Result<Self, String> {
        let mut out = Self::default();
        for (names, on) in [(enable, true), (disable, false)] {
            for name in names.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
                match name {
                    SERVICE_ACCOUNT => out.service_account = on,
                    other => {
                        return Err(format!(
                            "unknown admission plugin {other:?}; rkube-apiserver has: {SERVICE_ACCOUNT}"
                        ))
                    }
                }
            }
        }
        if let Some(both) = enable.iter().find(|e| disable.iter().any(|d| d.trim() == e.trim())) {
            return Err(format!(
                "admission plugin {:?} is in both --enable-admission-plugins and --disable-admission-plugins",
                both.trim()
            ));
        }
        Ok(out)
    }
}

/// Whether the ServiceAccount plugin leaves this pod alone.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// The service account a new pod runs as: `serviceAccountName`, else the deprecated
/// `serviceAccount`, else `default`.
pub fn service_account_name(pod: &Value) -> String {
    ["serviceAccountName", "serviceAccount"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string()
}

/// upstream's Forbidden for a pod whose service account does not exist.
pub fn service_account_not_found(pod_name: &str, ns: &str, sa: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "pods \"{pod_name}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
    ));
    e.details = Some(Box::new(Details { name: pod_name.to_string(), kind: "pods".into(), ..Default::default() }));
    e
}

/// Mutates a new (defaulted) pod for service account `sa`; `suffix` names the token volume
/// if the pod has none yet.
pub fn mutate_pod(pod: &mut Value, sa: &Value, suffix: &str) {
    let sa_name = sa.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("default").to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.insert("serviceAccountName".into(), json!(sa_name));
    // The deprecated field mirrors the new one, as upstream's v1 conversion writes it.
    spec.insert("serviceAccount".into(), json!(sa_name));

    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if automount {
        mount_token(spec, suffix);
    }

    let has_pull_secrets = spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if !has_pull_secrets {
        let from_sa: Vec<Value> = sa
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .map(|n| json!({"name": n}))
            .collect();
        if !from_sa.is_empty() {
            spec.insert("imagePullSecrets".into(), Value::Array(from_sa));
        }
    }
}

fn mount_token(spec: &mut serde_json::Map<String, Value>, suffix: &str) {
    // A pod that already has a token volume (one copied from another pod, say) keeps it.
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            // A container mounting something else at the path keeps its own.
            let taken = c.get("volumeMounts").and_then(Value::as_array).is_some_and(|ms| {
                ms.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH))
            });
            if taken {
                continue;
            }
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(ms) = mounts.as_array_mut() {
                ms.push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
                needed = true;
            }
        }
    }
    if existing.is_none() && needed {
        let vols = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(vs) = vols.as_array_mut() {
            vs.push(json!({
                "name": volume,
                "projected": {
                    "defaultMode": 0o644,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]}},
                    ],
                },
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    fn sa(extra: Value) -> Value {
        let mut s = json!({"metadata": {"name": "default", "namespace": "ns"}});
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        s
    }

    #[test]
    fn flags_pick_plugins_and_refuse_unknown_or_contradictory_names() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(Plugins::from_flags(&[], &[]), Ok(Plugins { service_account: true }));
        assert_eq!(Plugins::from_flags(&[], &s(&["ServiceAccount"])), Ok(Plugins { service_account: false }));
        assert_eq!(Plugins::from_flags(&s(&["ServiceAccount"]), &[]), Ok(Plugins { service_account: true }));
        let unknown = Plugins::from_flags(&s(&["NodeRestriction"]), &[]).unwrap_err();
        assert!(unknown.contains("\"NodeRestriction\""), "{unknown}");
        let both = Plugins::from_flags(&s(&["ServiceAccount"]), &s(&["ServiceAccount"])).unwrap_err();
        assert!(both.contains("both"), "{both}");
    }

    #[test]
    fn a_pod_without_a_service_account_gets_default_and_a_token_volume_in_every_container() {
        let mut p = pod(json!({
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }));
        assert_eq!(service_account_name(&p), "default");
        mutate_pod(&mut p, &sa(json!({})), "abcde");
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][1], mount);
        let vols = p["spec"]["volumes"].as_array().expect("volumes");
        assert_eq!(vols.len(), 2);
        assert_eq!(vols[1]["name"], "kube-api-access-abcde");
        let sources = &vols[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"], json!({"expirationSeconds": 3607, "path": "token"}));
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"], "metadata.namespace");
        assert_eq!(vols[1]["projected"]["defaultMode"], 420);
    }

    #[test]
    fn the_deprecated_field_names_the_account_when_the_new_one_is_empty() {
        assert_eq!(service_account_name(&pod(json!({"serviceAccount": "old"}))), "old");
        assert_eq!(service_account_name(&pod(json!({"serviceAccountName": "new", "serviceAccount": "old"}))), "new");
    }

    #[test]
    fn automount_false_on_the_pod_or_the_account_mounts_nothing_and_the_pod_wins() {
        let containers = json!([{"name": "a", "image": "x"}]);
        let mut off = pod(json!({"automountServiceAccountToken": false, "containers": containers}));
        mutate_pod(&mut off, &sa(json!({})), "abcde");
        assert!(off["spec"].get("volumes").is_none() && off["spec"]["containers"][0].get("volumeMounts").is_none());

        let mut sa_off = pod(json!({"containers": containers}));
        mutate_pod(&mut sa_off, &sa(json!({"automountServiceAccountToken": false})), "abcde");
        assert!(sa_off["spec"].get("volumes").is_none());

        let mut pod_on = pod(json!({"automountServiceAccountToken": true, "containers": containers}));
        mutate_pod(&mut pod_on, &sa(json!({"automountServiceAccountToken": false})), "abcde");
        assert_eq!(pod_on["spec"]["volumes"][0]["name"], "kube-api-access-abcde");
    }

    #[test]
    fn an_existing_mount_at_the_path_or_token_volume_is_kept() {
        let mut p = pod(json!({
            "containers": [
                {"name": "own", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
                {"name": "b", "image": "x"},
            ],
            "volumes": [{"name": "mine", "emptyDir": {}}, {"name": "kube-api-access-zzzzz", "projected": {"sources": []}}],
        }));
        mutate_pod(&mut p, &sa(json!({})), "abcde");
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"].as_array().map(Vec::len), Some(1));
        assert_eq!(p["spec"]["containers"][1]["volumeMounts"][0]["name"], "kube-api-access-zzzzz");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(2));

        // No container needs it: no volume is added.
        let mut all_own = pod(json!({
            "containers": [{"name": "own", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}],
            "volumes": [{"name": "mine", "emptyDir": {}}],
        }));
        mutate_pod(&mut all_own, &sa(json!({})), "abcde");
        assert_eq!(all_own["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn image_pull_secrets_come_from_the_account_only_when_the_pod_has_none() {
        let account = sa(json!({"imagePullSecrets": [{"name": "reg"}]}));
        let mut none = pod(json!({"containers": [{"name": "a", "image": "x"}]}));
        mutate_pod(&mut none, &account, "abcde");
        assert_eq!(none["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
        let mut own = pod(json!({"imagePullSecrets": [{"name": "mine"}], "containers": [{"name": "a", "image": "x"}]}));
        mutate_pod(&mut own, &account, "abcde");
        assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn mirror_pods_are_recognised_and_the_error_reads_as_upstreams() {
        assert!(is_mirror_pod(&json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}})));
        assert!(!is_mirror_pod(&pod(json!({}))));
        let e = service_account_not_found("web", "ns", "default");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"web\" is forbidden: error looking up service account ns/default: serviceaccount \"default\" not found"
        );
    }
}
