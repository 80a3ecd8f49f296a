//! The table of built-in resources: group, version, kind, names, scope, verbs, subresources.
//! Discovery, routing, OpenAPI and the clients all read this one list, so a resource exists
//! everywhere or nowhere.

/// The verbs of an ordinary read-write resource.
pub const RW: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
/// Namespaces have no deletecollection upstream.
const NS_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const CREATE: &[&str] = &["create"];
const GET: &[&str] = &["get"];
const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// Group/version/kind of the subresource's body when it differs from the parent's.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified plural used in messages: `pods`, `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// etcd key prefix upstream uses for this resource (`/registry/<resource>/`).
    /// A few resources keep historical storage names upstream; we follow them.
    pub fn storage_name(&self) -> &'static str {
        match (self.group, self.plural) {
            ("", "services") => "services/specs",
            ("", "endpoints") => "services/endpoints",
            ("", "nodes") => "minions",
            ("events.k8s.io", "events") => "events",
            ("", "persistentvolumes") => "persistentvolumes",
            ("networking.k8s.io", "ingresses") => "ingress",
            ("discovery.k8s.io", "endpointslices") => "endpointslices",
            ("coordination.k8s.io", "leases") => "leases",
            ("storage.k8s.io", "storageclasses") => "storageclasses",
            ("policy", "poddisruptionbudgets") => "poddisruptionbudgets",
            (_, plural) => plural,
        }
    }
}

const fn sub(name: &'static str, verbs: &'static [&'static str]) -> Subresource {
    Subresource { name, group: "", version: "", kind: "", verbs }
}
const fn sub_kind(
    name: &'static str,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    verbs: &'static [&'static str],
) -> Subresource {
    Subresource { name, group, version, kind, verbs }
}

const STATUS: Subresource = sub("status", GET_PATCH_UPDATE);
const SCALE: Subresource = sub_kind("scale", "autoscaling", "v1", "Scale", GET_PATCH_UPDATE);

#[allow(clippy::too_many_arguments)]
const fn r(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    verbs: &'static [&'static str],
    subresources: &'static [Subresource],
) -> ResourceInfo {
    ResourceInfo { group, version, kind, plural, singular, namespaced, short_names, categories, verbs, subresources }
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every built-in resource the apiserver serves, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    // core/v1
    r("", "v1", "Binding", "bindings", "binding", true, NONE, NONE, CREATE, &[]),
    r("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], NONE, RW, &[]),
    r("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], NONE, RW, &[]),
    r("", "v1", "Event", "events", "event", true, &["ev"], NONE, RW, &[]),
    r("", "v1", "LimitRange", "limitranges", "limitrange", true, &["limits"], NONE, RW, &[]),
    r(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        NONE,
        NS_VERBS,
        &[sub("finalize", &["update"]), STATUS],
    ),
    r(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        NONE,
        RW,
        &[sub_kind("proxy", "", "v1", "NodeProxyOptions", PROXY), STATUS],
    ),
    r(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        NONE,
        RW,
        &[STATUS],
    ),
    r("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, &["pv"], NONE, RW, &[STATUS]),
    r(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        RW,
        &[
            sub_kind("attach", "", "v1", "PodAttachOptions", &["create", "get"]),
            sub_kind("binding", "", "v1", "Binding", CREATE),
            sub_kind("eviction", "policy", "v1", "Eviction", CREATE),
            sub_kind("exec", "", "v1", "PodExecOptions", &["create", "get"]),
            sub_kind("log", "", "v1", "Pod", GET),
            sub_kind("portforward", "", "v1", "PodPortForwardOptions", &["create", "get"]),
            sub_kind("proxy", "", "v1", "PodProxyOptions", PROXY),
            STATUS,
        ],
    ),
    r("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, NONE, NONE, RW, &[]),
    r(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        &["rc"],
        ALL,
        RW,
        &[SCALE, STATUS],
    ),
    r("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, &["quota"], NONE, RW, &[STATUS]),
    r("", "v1", "Secret", "secrets", "secret", true, NONE, NONE, RW, &[]),
    r(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        NONE,
        RW,
        &[sub_kind("token", "authentication.k8s.io", "v1", "TokenRequest", CREATE)],
    ),
    r(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        RW,
        &[sub_kind("proxy", "", "v1", "ServiceProxyOptions", PROXY), STATUS],
    ),
    // apps/v1
    r("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, NONE, NONE, RW, &[]),
    r("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], ALL, RW, &[STATUS]),
    r("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, RW, &[SCALE, STATUS]),
    r("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, RW, &[SCALE, STATUS]),
    r("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, RW, &[SCALE, STATUS]),
    // batch/v1
    r("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], ALL, RW, &[STATUS]),
    r("batch", "v1", "Job", "jobs", "job", true, NONE, ALL, RW, &[STATUS]),
    // coordination.k8s.io/v1
    r("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, NONE, NONE, RW, &[]),
    // discovery.k8s.io/v1
    r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, NONE, NONE, RW, &[]),
    // events.k8s.io/v1
    r("events.k8s.io", "v1", "Event", "events", "event", true, &["ev"], NONE, RW, &[]),
    // networking.k8s.io/v1
    r("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, NONE, NONE, RW, &[]),
    r("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], NONE, RW, &[STATUS]),
    // policy/v1
    r(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        NONE,
        RW,
        &[STATUS],
    ),
    // storage.k8s.io/v1
    r("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, &["sc"], NONE, RW, &[]),
];

/// Groups in discovery order, each with its one served version.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind (any served version).
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_by_group_and_plural() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(!(a.group == b.group && a.plural == b.plural), "{} twice", a.plural);
            }
        }
    }

    #[test]
    fn get_all_category_matches_upstream() {
        let mut all: Vec<_> = RESOURCES.iter().filter(|r| r.categories.contains(&"all")).map(|r| r.plural).collect();
        all.sort();
        assert_eq!(
            all,
            [
                "cronjobs",
                "daemonsets",
                "deployments",
                "jobs",
                "pods",
                "replicasets",
                "replicationcontrollers",
                "services",
                "statefulsets"
            ]
        );
    }

    #[test]
    fn pods_eviction_is_policy_v1() {
        let pods = find("", "v1", "pods").expect("pods are served");
        let ev = pods.subresource("eviction").expect("eviction is served");
        assert_eq!((ev.group, ev.version, ev.kind), ("policy", "v1", "Eviction"));
    }
}
