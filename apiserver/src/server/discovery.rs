//! Discovery documents, legacy (`/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`) and
//! aggregated (`apidiscovery.k8s.io` v2 and v2beta1), all generated from the resource table.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use apimachinery::resources::{groups, ResourceInfo, RESOURCES};

fn storage_version_hash(r: &ResourceInfo) -> String {
    use base64::Engine;
    let digest = Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn resources_of(group: &str) -> impl Iterator<Item = &'static ResourceInfo> + '_ {
    RESOURCES.iter().filter(move |r| r.group == group)
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_json(g: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let gs: Vec<Value> = groups().into_iter().map(group_json).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// `GET /apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut g = group_json(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

/// `GET /api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if version != "v1" || (!group.is_empty() && !groups().contains(&group)) {
        return None;
    }
    let mut out = Vec::new();
    for r in resources_of(group) {
        let mut res = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            res["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            res["categories"] = json!(r.categories);
        }
        if r.plural != "bindings" {
            res["storageVersionHash"] = json!(storage_version_hash(r));
        }
        out.push(res);
        for s in r.subresources {
            let mut sr = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if s.kind.is_empty() { r.kind } else { s.kind },
                "verbs": s.verbs,
            });
            if !s.group.is_empty() || (!s.kind.is_empty() && s.version != r.version) {
                sr["group"] = json!(s.group);
                sr["version"] = json!(s.version);
            }
            out.push(sr);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}))
}

fn aggregated_group(group: &str) -> Value {
    let resources: Vec<Value> = resources_of(group)
        .filter(|r| r.plural != "bindings")
        .map(|r| {
            let mut res = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": r.verbs,
            });
            if !r.short_names.is_empty() {
                res["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                res["categories"] = json!(r.categories);
            }
            let subs: Vec<Value> = r
                .subresources
                .iter()
                .map(|s| {
                    let (g, v, k) = if s.kind.is_empty() { (r.group, r.version, r.kind) } else { (s.group, s.version, s.kind) };
                    json!({"subresource": s.name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs})
                })
                .collect();
            if !subs.is_empty() {
                res["subresources"] = Value::Array(subs);
            }
            res
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    })
}

/// The aggregated document for `/api` (core) or `/apis` (all named groups).
pub fn aggregated(core: bool, version: &str) -> Value {
    let items: Vec<Value> =
        if core { vec![aggregated_group("")] } else { groups().into_iter().map(aggregated_group).collect() };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// Which aggregated version the Accept header asks for first, if any.
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.starts_with("application/json")
            && p.contains("g=apidiscovery.k8s.io")
            && p.contains("as=APIGroupDiscoveryList")
        {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
        if p.starts_with("application/json") && !p.contains("as=") {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_130_accept_prefers_v2() {
        let a = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(a), Some("v2"));
    }

    #[test]
    fn legacy_accept_gets_legacy() {
        assert_eq!(wants_aggregated("application/json, */*"), None);
    }

    #[test]
    fn core_v1_lists_pods_eviction_in_policy() {
        let l = resource_list("", "v1").expect("core/v1 is served");
        let ev =
            l["resources"].as_array().expect("list").iter().find(|r| r["name"] == "pods/eviction").expect("eviction");
        assert_eq!(ev["group"], "policy");
        assert_eq!(ev["kind"], "Eviction");
    }
}
