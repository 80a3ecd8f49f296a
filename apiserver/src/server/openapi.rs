//! OpenAPI documents. `/openapi/v2` answers an empty gnostic Document (a valid, empty
//! protobuf message): kubectl 1.27/1.28 need it to exist before they write, and it leaves
//! client-side validation to the server. `/openapi/v3` has one document per group-version,
//! built from our resource table, whose PATCH operations declare `fieldValidation` so kubectl
//! validates on the server.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use apimachinery::resources::{ResourceInfo, RESOURCES};

pub struct V3 {
    /// "api/v1" or "apis/apps/v1" → (document bytes, hash)
    pub docs: BTreeMap<String, (Vec<u8>, String)>,
}

fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn gv_doc(gv_path: &str, resources: &[&ResourceInfo]) -> Value {
    let mut paths = serde_json::Map::new();
    let field_validation =
        json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let dry_run = json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let field_manager =
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for r in resources {
        if r.plural == "bindings" {
            continue;
        }
        let base = if r.namespaced {
            format!("/{gv_path}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{gv_path}/{}", r.plural)
        };
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk(r),
                "parameters": [dry_run.clone(), field_manager.clone(), field_validation.clone()],
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::server::version::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

pub fn v3() -> &'static V3 {
    static DOCS: OnceLock<V3> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut by_gv: BTreeMap<String, Vec<&ResourceInfo>> = BTreeMap::new();
        for r in RESOURCES {
            let key = if r.group.is_empty() { "api/v1".to_string() } else { format!("apis/{}/{}", r.group, r.version) };
            by_gv.entry(key).or_default().push(r);
        }
        let docs = by_gv
            .into_iter()
            .map(|(gv, rs)| {
                let bytes = serde_json::to_vec(&gv_doc(&gv, &rs)).expect("a serde_json::Value always serializes");
                // upstream: the hash is the uppercase hex SHA-512 of the document.
                let hash = hex::encode_upper(Sha512::digest(&bytes));
                (gv, (bytes, hash))
            })
            .collect();
        V3 { docs }
    })
}

/// `GET /openapi/v3`.
pub fn v3_root() -> Value {
    let paths: serde_json::Map<String, Value> = v3()
        .docs
        .iter()
        .map(|(gv, (_, hash))| (gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")})))
        .collect();
    json!({"paths": paths})
}
