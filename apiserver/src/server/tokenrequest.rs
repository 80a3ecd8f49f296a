//! `POST …/serviceaccounts/{name}/token`: the TokenRequest subresource (upstream's
//! `pkg/registry/core/serviceaccount/storage/token.go`). It writes nothing; it signs a token for
//! a service account that exists, optionally bound to a Pod, Secret or Node whose UID must
//! match, and answers 201 with the TokenRequest and its `status`.

use apimachinery::status::ApiError;
use apimachinery::validation::FieldError;
use http::StatusCode;
use serde_json::{json, Value};

use crate::registry::store::Store;
use crate::server::negotiation::{respond, Output};
use crate::serviceaccount::{self, Claims, KubernetesClaims, Ref, Tokens};

const GROUP: &str = "authentication.k8s.io";
/// upstream: TokenRequestSpec defaulting.
const DEFAULT_EXPIRATION: i64 = 3600;
/// upstream: validation of `spec.expirationSeconds`.
const MIN_EXPIRATION: i64 = 10 * 60;
const MAX_EXPIRATION: i64 = 1 << 32;

pub async fn create(
    store: &Store,
    tokens: &Tokens,
    ns: &str,
    name: &str,
    body: &Value,
    output: Output,
) -> Result<axum::response::Response, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    let mut errs = Vec::new();
    if expiration < MIN_EXPIRATION {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(GROUP, "TokenRequest", name, &errs));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => tokens.api_audiences.clone(),
    };

    let sa_kind = kind(store, "serviceaccounts")?;
    let sa = store.get(&sa_kind, Some(ns), name, None).await?;
    // The token is checked against the watch cache: make sure it already knows what the token
    // names, or a token used at once after its service account was made would be refused.
    store.wait_cached(&sa_kind, &sa).await;
    let mut claims = KubernetesClaims {
        namespace: ns.to_string(),
        serviceaccount: Ref { name: name.to_string(), uid: uid(&sa) },
        pod: None,
        secret: None,
        node: None,
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null()).cloned();
    if let Some(r) = &bound {
        let bkind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = r.get("name").and_then(Value::as_str).unwrap_or("");
        let (plural, bns) = match bkind {
            "Pod" => ("pods", Some(ns)),
            "Secret" => ("secrets", Some(ns)),
            "Node" => ("nodes", None),
            other => return Err(ApiError::bad_request(format!("cannot bind token for object of kind {other:?}"))),
        };
        let bound_kind = kind(store, plural)?;
        let obj = store.get(&bound_kind, bns, bname, None).await?;
        store.wait_cached(&bound_kind, &obj).await;
        let actual = uid(&obj);
        if let Some(want) = r.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != actual {
                return Err(ApiError::conflict(
                    "",
                    plural,
                    bname,
                    &format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
        }
        let reference = Some(Ref { name: bname.to_string(), uid: actual });
        match bkind {
            "Pod" => claims.pod = reference,
            "Secret" => claims.secret = reference,
            _ => claims.node = reference,
        }
    }

    let now = serviceaccount::now_unix();
    let exp = now + expiration;
    let token = tokens.issue(&Claims {
        iss: tokens.issuer.clone(),
        sub: serviceaccount::username(ns, name),
        aud: audiences.clone(),
        exp,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: claims,
    });
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(r) = bound {
        out_spec["boundObjectRef"] = r;
    }
    let expires = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let resp = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    let out = if matches!(output, Output::Yaml) { Output::Yaml } else { Output::Json };
    Ok(respond(StatusCode::CREATED, out, &resp))
}

fn kind(store: &Store, plural: &str) -> Result<std::sync::Arc<crate::registry::Kind>, ApiError> {
    store.registry.get("", plural).ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn uid(obj: &Value) -> String {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string()
}
