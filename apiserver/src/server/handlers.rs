//! Resource requests: maps method + path onto the store, and the store's results onto
//! responses (JSON, YAML, Table, watch streams).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use apimachinery::labels::Selector;
use apimachinery::managedfields::{self, ApplyRequest, ManagedFields, ResetFields};
use apimachinery::patch;
use apimachinery::status::{success_status, ApiError};

use super::negotiation::{add_warnings, choose_output, content_type, decode_body, error_response, respond, Output};
use super::path::ApiPath;
use super::table::{partial_metadata, partial_metadata_list, to_table, IncludeObject};
use super::App;
use crate::registry::options::{first, DeleteOptions, FieldValidation, ListOptions, WriteOptions};
use crate::registry::store::{Store, WatchItem, Written};
use crate::registry::Kind;

pub struct Req<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: HashMap<String, Vec<String>>,
    pub body: Bytes,
}

fn with_kind(mut v: Value, kind: &Kind) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), json!(kind.info.kind));
        o.insert("apiVersion".into(), json!(kind.info.api_version()));
    }
    v
}

fn single(status: StatusCode, output: Output, kind: &Kind, obj: Value, include: IncludeObject) -> Response {
    let obj = with_kind(obj, kind);
    match output {
        Output::Table { v1beta1 } => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
            respond(status, output, &to_table(kind.info, &[&obj], json!({"resourceVersion": rv}), include, v1beta1))
        }
        Output::PartialMetadata { v1beta1 } => respond(status, Output::Json, &partial_metadata(&obj, v1beta1)),
        _ => respond(status, output, &obj),
    }
}

/// Duplicate keys in a JSON body, per `fieldValidation`: Strict rejects them, Warn returns
/// them as warnings, Ignore drops them.
fn duplicates(req: &Req<'_>, opts: &WriteOptions) -> Result<Vec<String>, ApiError> {
    let ct = content_type(req.headers);
    if opts.field_validation == FieldValidation::Ignore || !(ct.is_empty() || ct.ends_with("json")) {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = super::negotiation::duplicate_fields(&req.body)
        .into_iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect();
    if opts.field_validation == FieldValidation::Strict && !msgs.is_empty() {
        return Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", "))));
    }
    Ok(msgs)
}

fn with_warnings(mut w: Written, extra: Vec<String>) -> Written {
    w.warnings.extend(extra);
    w
}

fn written(status: StatusCode, output: Output, kind: &Kind, w: Written) -> Response {
    let mut r = single(status, output, kind, w.object, IncludeObject::Metadata);
    add_warnings(&mut r, &w.warnings);
    r
}

/// Every request on a resource path.
pub async fn resource(app: &Arc<App>, p: ApiPath, req: Req<'_>) -> Result<Response, ApiError> {
    let store = &app.store;
    let kind = store.registry.get(&p.group, &p.plural).filter(|k| k.info.version == p.version);
    let Some(kind) = kind else {
        // `bindings` is a create-only resource with no storage of its own.
        if p.group.is_empty() && p.plural == "bindings" && *req.method == Method::POST {
            return binding(app, p.namespace.as_deref(), None, &req).await;
        }
        return Err(ApiError::not_found_path());
    };
    let kind = kind.as_ref();
    if kind.info.namespaced && p.name.is_some() && p.namespace.is_none() {
        return Err(ApiError::not_found_path());
    }
    let ns = if kind.info.namespaced { p.namespace.as_deref() } else { None };
    if !kind.info.namespaced && p.namespace.is_some() {
        return Err(ApiError::not_found_path());
    }
    let table_ok = *req.method == Method::GET;
    let output = choose_output(req.headers, table_ok)?;
    let include = IncludeObject::parse(first(&req.query, "includeObject"));
    match (&p.name, &p.subresource) {
        (None, _) => collection(app, kind, ns, &p, req, output, include).await,
        (Some(name), None) => object(store, kind, ns, name, req, output, include).await,
        (Some(name), Some(sub)) => {
            if kind.info.subresource(sub).is_none() {
                return Err(ApiError::not_found_path());
            }
            subresource(app, kind, ns, name, sub, req, output, include).await
        }
    }
}

async fn collection(
    app: &Arc<App>,
    kind: &Kind,
    ns: Option<&str>,
    p: &ApiPath,
    req: Req<'_>,
    output: Output,
    include: IncludeObject,
) -> Result<Response, ApiError> {
    let store = &app.store;
    let m = req.method.clone();
    if m == Method::GET {
        let opts = ListOptions::parse(&req.query)?;
        if opts.watch || p.watch_prefix {
            let guard = app.metrics.watch_started(kind.info.plural);
            return watch(store, kind, ns, &opts, output, include, guard).await;
        }
        let list = store.list(kind, ns, &opts).await?;
        let mut list_meta = json!({"resourceVersion": list.rev.to_string()});
        if let Some(c) = &list.continue_token {
            list_meta["continue"] = json!(c);
        }
        if let Some(r) = list.remaining {
            list_meta["remainingItemCount"] = json!(r);
        }
        if output == Output::Json {
            return Ok(json_list(kind, list_meta, &list.items));
        }
        let items: Vec<&Value> = list.items.iter().map(|a| a.value()).collect();
        let body = match output {
            Output::Table { v1beta1 } => to_table(kind.info, &items, list_meta, include, v1beta1),
            Output::PartialMetadata { v1beta1 } => partial_metadata_list(&items, list_meta, v1beta1),
            _ => json!({
                "kind": format!("{}List", kind.info.kind),
                "apiVersion": kind.info.api_version(),
                "metadata": list_meta,
                "items": items,
            }),
        };
        let out = if matches!(output, Output::PartialMetadata { .. }) { Output::Json } else { output };
        return Ok(respond(StatusCode::OK, out, &body));
    }
    if m == Method::POST {
        if !kind.info.verbs.contains(&"create") {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let opts = write_options(&req)?;
        let dups = duplicates(&req, &opts)?;
        let body = decode_body(&content_type(req.headers), &req.body)?;
        let w = store.create(kind, ns, body, &opts).await?;
        return Ok(written(StatusCode::CREATED, output, kind, with_warnings(w, dups)));
    }
    if m == Method::DELETE {
        if !kind.info.verbs.contains(&"deletecollection") {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let lo = ListOptions::parse(&req.query)?;
        let body = if req.body.is_empty() { None } else { Some(decode_body(&content_type(req.headers), &req.body)?) };
        let dopts = DeleteOptions::parse(body.as_ref(), &req.query)?;
        let items = store.delete_collection(kind, ns, &lo, &dopts).await?;
        let list = json!({
            "kind": format!("{}List", kind.info.kind),
            "apiVersion": kind.info.api_version(),
            "metadata": {},
            "items": items,
        });
        return Ok(respond(StatusCode::OK, Output::Json, &list));
    }
    Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"))
}

async fn object(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    req: Req<'_>,
    output: Output,
    include: IncludeObject,
) -> Result<Response, ApiError> {
    let m = req.method.clone();
    if m == Method::GET {
        let obj = store.get(kind, ns, name, first(&req.query, "resourceVersion")).await?;
        return Ok(single(StatusCode::OK, output, kind, obj, include));
    }
    if m == Method::PUT {
        let opts = write_options(&req)?;
        let dups = duplicates(&req, &opts)?;
        let body = decode_body(&content_type(req.headers), &req.body)?;
        let w = store.update(kind, ns, name, None, body, &opts).await?;
        return Ok(written(StatusCode::OK, output, kind, with_warnings(w, dups)));
    }
    if m == Method::PATCH {
        return patch_request(store, kind, ns, name, None, &req, output).await;
    }
    if m == Method::DELETE {
        let body = if req.body.is_empty() { None } else { Some(decode_body(&content_type(req.headers), &req.body)?) };
        let dopts = DeleteOptions::parse(body.as_ref(), &req.query)?;
        let d = store.delete(kind, ns, name, &dopts).await?;
        let status = StatusCode::OK;
        if d.gone && kind.info.plural == "namespaces" {
            let uid = d.object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            return Ok(respond(status, Output::Json, &success_status(kind.info.group, kind.info.plural, name, uid)));
        }
        return Ok(single(status, output, kind, d.object, include));
    }
    Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"))
}

/// A plain JSON list, assembled from each object's cached serialization.
fn json_list(kind: &Kind, list_meta: Value, items: &[Arc<crate::storage::cache::Obj>]) -> Response {
    let head = json!({"kind": format!("{}List", kind.info.kind), "apiVersion": kind.info.api_version(), "metadata": list_meta});
    let mut buf = serde_json::to_vec(&head).expect("a serde_json::Value always serializes");
    // Reopen the head object to append the items.
    buf.pop();
    let size: usize = items.iter().map(|o| o.json().len() + 1).sum();
    buf.reserve(size + 16);
    buf.extend_from_slice(b",\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(o.json());
    }
    buf.extend_from_slice(b"]}");
    let mut r = Response::new(Body::from(buf));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// Applies a patch of any of the four types to `old`.
pub fn apply_patch(kind: &Kind, ct: &str, patch_body: &Value, old: &Value) -> Result<Value, ApiError> {
    let unprocessable = |e: patch::PatchError| ApiError::new(422, "Invalid", e.to_string());
    match ct {
        "application/json-patch+json" => {
            let mut doc = old.clone();
            if !patch_body.is_array() {
                return Err(ApiError::bad_request("json patch must be a JSON array of operations"));
            }
            patch::json_patch::apply(&mut doc, patch_body).map_err(unprocessable)?;
            Ok(doc)
        }
        "application/merge-patch+json" => {
            if !patch_body.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            Ok(patch::merge::apply(old, patch_body))
        }
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            let root = patch::meta::root_type(&kind.info.api_version(), kind.info.kind);
            if !patch_body.is_object() {
                return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
            }
            patch::strategic::apply(old, patch_body, root).map_err(|e| match e {
                patch::PatchError::BadPatch(_) => ApiError::bad_request(e.to_string()),
                other => unprocessable(other),
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

async fn patch_request(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    req: &Req<'_>,
    output: Output,
) -> Result<Response, ApiError> {
    let ct = content_type(req.headers);
    let mut opts = WriteOptions::parse(&req.query)?;
    let is_apply = ct == "application/apply-patch+yaml";
    if !matches!(
        ct.as_str(),
        "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/apply-patch+yaml"
    ) {
        return Err(ApiError::unsupported_media_type(&ct));
    }
    let patch_body = decode_body(&ct, &req.body)?;
    if is_apply {
        if opts.field_manager.is_none() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
            ));
        }
        return apply_request(store, kind, ns, name, sub, patch_body, opts, output).await;
    }
    if opts.field_manager.is_none() {
        opts.field_manager = Some(default_manager(req.headers));
    }
    // A resourceVersion inside the patch is a precondition (kubectl's CSA→SSA migration).
    let precondition = match ct.as_str() {
        "application/json-patch+json" => patch_body.as_array().and_then(|ops| {
            ops.iter().find_map(|op| {
                (op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion"))
                    .then(|| op.get("value").and_then(Value::as_str).map(str::to_string))
                    .flatten()
            })
        }),
        _ => patch_body.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string),
    };
    let w = store
        .update_with(kind, ns, name, sub, &opts, "Update", precondition, |old| {
            let mut new = apply_patch(kind, &ct, &patch_body, old)?;
            // The patch result's resourceVersion must not turn into an unwanted precondition.
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(new)
        })
        .await?;
    Ok(written(StatusCode::OK, output, kind, w))
}

/// Write options, with upstream's default manager: the client's user agent.
fn write_options(req: &Req<'_>) -> Result<WriteOptions, ApiError> {
    let mut opts = WriteOptions::parse(&req.query)?;
    if opts.field_manager.is_none() {
        opts.field_manager = Some(default_manager(req.headers));
    }
    Ok(opts)
}

/// upstream: a write without fieldManager is attributed to the client's user agent.
fn default_manager(headers: &HeaderMap) -> String {
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").chars().take(128).collect()
}

/// Server-side apply: merges the applied configuration into the live object (an empty one
/// when the object does not exist yet, which the apply then creates) and records the manager's
/// `Apply` entry, failing with 409 on fields other managers own unless `force=true`.
///
/// The managedFields are computed here, against the object read inside the store's
/// read-modify-write loop, and handed to the store as they are (it records nothing itself for
/// an `Apply` write or a write without a manager).
#[allow(clippy::too_many_arguments)]
async fn apply_request(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    applied: Value,
    opts: WriteOptions,
    output: Output,
) -> Result<Response, ApiError> {
    let Some(manager) = opts.field_manager.clone() else {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requests require fieldManager to be set",
        ));
    };
    let api_version = kind.info.api_version();
    let reset = match sub {
        None if kind.strategy.status_subresource() => ResetFields::Status,
        Some("status") => ResetFields::AllButStatus,
        _ => ResetFields::None,
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let req = ApplyRequest {
        manager: &manager,
        api_version: &api_version,
        subresource: sub,
        force: opts.force,
        now: &now,
        root_type: patch::meta::root_type(&api_version, kind.info.kind),
        reset,
    };
    // A resourceVersion in the configuration is a precondition, as for any other patch.
    let precondition = applied
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let run = |live: &Value| -> Result<Value, ApiError> {
        let managed = ManagedFields::of(live).unwrap_or_default();
        let out = managedfields::apply(live, &applied, &managed, &req).map_err(|e| e.to_api_error())?;
        let mut obj = out.object;
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            // Explicit, even when empty: an empty list tells the store the apply cleared them.
            m.insert("managedFields".into(), out.managed.encode());
        }
        Ok(obj)
    };
    let mut store_opts = opts.clone();
    store_opts.field_manager = None;
    if sub.is_none() && precondition.is_none() {
        match store.get(kind, ns, name, None).await {
            Err(e) if e.code == 404 => {
                let mut body = run(&json!({}))?;
                if body.pointer("/metadata/name").is_none() {
                    body["metadata"]["name"] = json!(name);
                }
                match store.create(kind, ns, body, &store_opts).await {
                    Ok(w) => return Ok(written(StatusCode::CREATED, output, kind, w)),
                    // Created meanwhile: apply to it instead.
                    Err(e) if e.reason == "AlreadyExists" => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    let w = store.update_with(kind, ns, name, sub, &store_opts, "Apply", precondition, run).await?;
    Ok(written(StatusCode::OK, output, kind, w))
}

#[allow(clippy::too_many_arguments)]
async fn subresource(
    app: &Arc<App>,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    req: Req<'_>,
    output: Output,
    include: IncludeObject,
) -> Result<Response, ApiError> {
    let store = &app.store;
    let m = req.method.clone();
    match sub {
        "status" | "finalize" => {
            if m == Method::GET && sub == "status" {
                let obj = store.get(kind, ns, name, None).await?;
                return Ok(single(StatusCode::OK, output, kind, obj, include));
            }
            if m == Method::PUT {
                let opts = write_options(&req)?;
                let body = decode_body(&content_type(req.headers), &req.body)?;
                let w = store.update(kind, ns, name, Some(sub), body, &opts).await?;
                return Ok(written(StatusCode::OK, output, kind, w));
            }
            if m == Method::PATCH && sub == "status" {
                return patch_request(store, kind, ns, name, Some(sub), &req, output).await;
            }
            Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"))
        }
        "scale" => scale(store, kind, ns, name, req, output).await,
        "binding" if m == Method::POST => binding(app, ns, Some(name), &req).await,
        "eviction" if m == Method::POST => eviction(store, kind, ns, name, &req).await,
        "token" if m == Method::POST && kind.info.plural == "serviceaccounts" => {
            let tokens = app
                .auth
                .service_account_tokens()
                .ok_or_else(|| ApiError::service_unavailable("service account tokens are not configured"))?;
            let body = decode_body(&content_type(req.headers), &req.body)?;
            super::tokenrequest::create(store, tokens, ns.unwrap_or("default"), name, &body, output).await
        }
        "proxy" => Err(ApiError::service_unavailable(format!("{}/proxy is not served yet", kind.info.plural))),
        _ => Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource")),
    }
}

fn scale_of(kind: &Kind, obj: &Value) -> Result<Value, ApiError> {
    let selector = obj.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let sel = Selector::from_label_selector(&selector).map(|s| s.to_string()).unwrap_or_default();
    let meta = &obj["metadata"];
    let _ = kind;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": sel},
    }))
}

async fn scale(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    req: Req<'_>,
    output: Output,
) -> Result<Response, ApiError> {
    let m = req.method.clone();
    let out = if matches!(output, Output::Yaml) { Output::Yaml } else { Output::Json };
    if m == Method::GET {
        let obj = store.get(kind, ns, name, None).await?;
        return Ok(respond(StatusCode::OK, out, &scale_of(kind, &obj)?));
    }
    let opts = write_options(&req)?;
    let ct = content_type(req.headers);
    let body = decode_body(&ct, &req.body)?;
    let is_put = m == Method::PUT;
    if !is_put && m != Method::PATCH {
        return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
    }
    let precondition =
        body.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let w = store
        .update_with(kind, ns, name, None, &opts, "Update", precondition, |old| {
            let current = scale_of(kind, old)?;
            let new_scale = if is_put {
                body.clone()
            } else {
                match ct.as_str() {
                    "application/json-patch+json" => {
                        let mut d = current.clone();
                        patch::json_patch::apply(&mut d, &body)
                            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                        d
                    }
                    _ => patch::merge::apply(&current, &body),
                }
            };
            let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    &vec![apimachinery::validation::FieldError::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(new)
        })
        .await?;
    Ok(respond(StatusCode::OK, out, &scale_of(kind, &w.object)?))
}

/// `pods/binding` and `bindings`: sets `spec.nodeName` once.
async fn binding(app: &Arc<App>, ns: Option<&str>, name: Option<&str>, req: &Req<'_>) -> Result<Response, ApiError> {
    let store = &app.store;
    let body = decode_body(&content_type(req.headers), &req.body)?;
    let pod_name = body.pointer("/metadata/name").and_then(Value::as_str).or(name).unwrap_or("").to_string();
    if let Some(n) = name {
        if n != pod_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({pod_name}) does not match the name on the URL ({n})"
            )));
        }
    }
    let target = body.pointer("/target/name").and_then(Value::as_str).unwrap_or("").to_string();
    if target.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &pod_name,
            &vec![apimachinery::validation::FieldError::required("target.name", "")],
        ));
    }
    let pods = store.registry.get("", "pods").ok_or_else(ApiError::not_found_path)?;
    let opts = write_options(req)?;
    store
        .update_with(&pods, ns, &pod_name, Some("binding"), &opts, "Update", None, |old| {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::conflict("", "pods", &pod_name, "pod is being deleted, cannot be assigned to a host"));
            }
            if let Some(n) = old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict("", "pods/binding", &pod_name, &format!("pod {pod_name} is already assigned to node \"{n}\"")));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(target);
            let conds = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
            new["status"]["conditions"] = json!(conds);
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(new)
        })
        .await
        .map_err(|e| if e.code == 404 { ApiError::not_found("", "pods", &pod_name) } else { e })?;
    // The binding writes status as well as spec, which the main resource would drop.
    Ok(respond(
        StatusCode::CREATED,
        Output::Json,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// upstream: how often the eviction re-reads a budget whose status write lost a race.
const EVICTION_RETRIES: usize = 20;
/// upstream: MaxDisruptedPodSize, the evictions a budget may have in flight.
const MAX_DISRUPTED_PODS: usize = 2000;
const EVICTION_REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn budget_refusal(retry_after: u64, cause: String) -> ApiError {
    let mut e = ApiError::too_many_requests(EVICTION_REFUSED, retry_after);
    e.details = Some(Box::new(apimachinery::status::Details {
        causes: vec![("DisruptionBudget".into(), cause, String::new())],
        ..Default::default()
    }));
    e
}

/// upstream `canIgnorePDB`: a pod that is finished, not started or already going needs no budget.
fn eviction_ignores_budgets(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed" | "Pending"))
        || pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

fn pod_is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// upstream `checkAndDecrement`: the budget with one disruption taken for `pod`, or why not.
fn take_disruption(pdb: &Value, pod: &str, now: &str) -> Result<Value, ApiError> {
    let name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    if int("/status/observedGeneration") < int("/metadata/generation") {
        return Err(budget_refusal(
            10,
            format!("The disruption budget {name} is still being processed by the server."),
        ));
    }
    let allowed = int("/status/disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: pdb disruptions allowed is negative"
        )));
    }
    let disrupted = pdb.pointer("/status/disruptedPods").and_then(Value::as_object).map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(format!(
            "poddisruptionbudgets.policy \"{name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
        )));
    }
    if allowed == 0 {
        return Err(budget_refusal(
            0,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                int("/status/desiredHealthy"),
                int("/status/currentHealthy")
            ),
        ));
    }
    let mut new = pdb.clone();
    let st = &mut new["status"];
    st["disruptionsAllowed"] = json!(allowed - 1);
    if !st["disruptedPods"].is_object() {
        st["disruptedPods"] = json!({});
    }
    st["disruptedPods"][pod] = json!(now);
    if allowed - 1 == 0 {
        // upstream UpdateDisruptionAllowedCondition
        let generation = st["observedGeneration"].clone();
        let mut conds: Vec<Value> = st["conditions"].as_array().cloned().unwrap_or_default();
        match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
            Some(c) => {
                if c["status"] != "False" {
                    c["status"] = json!("False");
                    c["lastTransitionTime"] = json!(now);
                }
                c["reason"] = json!("InsufficientPods");
                c["observedGeneration"] = generation;
            }
            None => conds.push(json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods",
                                      "message": "", "observedGeneration": generation, "lastTransitionTime": now})),
        }
        st["conditions"] = json!(conds);
    }
    Ok(new)
}

/// `pods/eviction`, as upstream's eviction REST: a pod covered by a PodDisruptionBudget is
/// deleted only after one disruption has been taken from the budget's status with a
/// compare-and-swap write (so two evictions cannot spend the same disruption), and the pod
/// is recorded in `disruptedPods` so the disruption controller does not count it healthy
/// while it goes.
async fn eviction(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    req: &Req<'_>,
) -> Result<Response, ApiError> {
    let body = decode_body(&content_type(req.headers), &req.body)?;
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        if n != name {
            return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
        }
    }
    let mut dopts = DeleteOptions::parse(body.get("deleteOptions").filter(|v| !v.is_null()), &req.query)?;
    let pod = store.get(kind, ns, name, None).await?;
    if !eviction_ignores_budgets(&pod) {
        let pdbs = store.registry.get("policy", "poddisruptionbudgets").ok_or_else(ApiError::not_found_path)?;
        let list = store.list(&pdbs, ns, &ListOptions::default()).await?;
        let labels = pod.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
        // policy/v1: an empty selector selects every pod, a missing one none.
        let matching: Vec<&Value> = list
            .items
            .iter()
            .map(|o| o.value())
            .filter(|pdb| {
                let sel = pdb.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
                Selector::from_label_selector(&sel).is_ok_and(|s| s.matches(&labels))
            })
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = matching.first() {
            let pdb_name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
            let ready = pod_is_ready(&pod);
            let always_allow =
                pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
            // An unready pod is not counted healthy, so evicting it spends nothing; the
            // delete is then conditional on the pod being the one that was judged.
            let pin_pod = |dopts: &mut DeleteOptions| {
                if dopts.precondition_rv.is_none() {
                    dopts.precondition_rv =
                        pod.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
                }
            };
            if !ready && always_allow {
                pin_pod(&mut dopts);
            } else {
                let wopts = WriteOptions::parse(&req.query)?;
                let mut pdb = (*pdb).clone();
                let mut taken = false;
                for attempt in 0..EVICTION_RETRIES {
                    if attempt > 0 {
                        pdb = store.get(&pdbs, ns, &pdb_name, None).await?;
                    }
                    let int = |p: &str| pdb.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                    if !ready
                        && int("/status/currentHealthy") >= int("/status/desiredHealthy")
                        && int("/status/desiredHealthy") > 0
                    {
                        pin_pod(&mut dopts);
                        taken = true;
                        break;
                    }
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let new = take_disruption(&pdb, name, &now)?;
                    if wopts.dry_run {
                        taken = true;
                        break;
                    }
                    let rv = pdb.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string);
                    match store
                        .update_with(&pdbs, ns, &pdb_name, Some("status"), &wopts, "Update", rv, |_| Ok(new.clone()))
                        .await
                    {
                        Ok(_) => {
                            taken = true;
                            break;
                        }
                        Err(e) if e.code == 409 => continue,
                        Err(e) => return Err(e),
                    }
                }
                if !taken {
                    return Err(ApiError::modified_conflict("policy", "poddisruptionbudgets", &pdb_name));
                }
            }
        }
    }
    dopts.dry_run |= WriteOptions::parse(&req.query)?.dry_run;
    store.delete(kind, ns, name, &dopts).await?;
    Ok(respond(
        StatusCode::CREATED,
        Output::Json,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn watch(
    store: &Store,
    kind: &Kind,
    ns: Option<&str>,
    opts: &ListOptions,
    output: Output,
    include: IncludeObject,
    guard: super::metrics::WatchGuard,
) -> Result<Response, ApiError> {
    let stream = store.watch(kind, ns, opts).await?;
    let timeout =
        std::time::Duration::from_secs(opts.timeout_seconds.unwrap_or_else(|| 1800 + rand::random::<u64>() % 1800));
    let info = kind.info;
    let kind_owned: &'static apimachinery::resources::ResourceInfo = info;
    let deadline = tokio::time::sleep(timeout);
    let body_stream = stream
        .take_until(deadline)
        .map(move |item| {
            let _counted = &guard;
            let (t, obj) = match item {
                // The common case: the stored JSON (which carries kind and apiVersion) as it is,
                // serialized once for every watcher.
                WatchItem::Event(t, obj)
                    if output == Output::Json && obj.get("kind").is_some() && obj.get("apiVersion").is_some() =>
                {
                    let json = obj.json();
                    let mut line = Vec::with_capacity(json.len() + 32);
                    line.extend_from_slice(b"{\"type\":\"");
                    line.extend_from_slice(t.as_str().as_bytes());
                    line.extend_from_slice(b"\",\"object\":");
                    line.extend_from_slice(json);
                    line.extend_from_slice(b"}\n");
                    return Ok::<Bytes, Infallible>(Bytes::from(line));
                }
                WatchItem::Event(t, obj) => {
                    let mut o = obj.value().clone();
                    if let Some(m) = o.as_object_mut() {
                        m.insert("kind".into(), json!(kind_owned.kind));
                        m.insert("apiVersion".into(), json!(kind_owned.api_version()));
                    }
                    let o = match output {
                        Output::Table { v1beta1 } => to_table(kind_owned, &[&o], json!({"resourceVersion": o.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}), include, v1beta1),
                        Output::PartialMetadata { v1beta1 } => partial_metadata(&o, v1beta1),
                        _ => o,
                    };
                    (t.as_str(), o)
                }
                WatchItem::Bookmark { rev, initial_end } => {
                    let mut meta = json!({"resourceVersion": rev.to_string()});
                    if initial_end {
                        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    }
                    ("BOOKMARK", json!({"kind": kind_owned.kind, "apiVersion": kind_owned.api_version(), "metadata": meta}))
                }
                WatchItem::Error(e) => ("ERROR", e.to_status()),
            };
            let mut line = serde_json::to_vec(&json!({"type": t, "object": obj})).expect("a serde_json::Value always serializes");
            line.push(b'\n');
            Ok::<Bytes, Infallible>(Bytes::from(line))
        });
    let ct = match output {
        Output::Table { v1beta1: false } => "application/json;as=Table;v=v1;g=meta.k8s.io",
        Output::Table { v1beta1: true } => "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        _ => "application/json",
    };
    let mut r = Response::new(Body::from_stream(body_stream));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(r)
}

/// Turns any handler result into a response.
pub fn finish(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| error_response(&e))
}
