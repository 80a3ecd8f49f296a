//! Query and body options of list, watch, write and delete requests, parsed once with
//! upstream's names and validation.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Value};

use apimachinery::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RvMatch {
    NotOlderThan,
    Exact,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label_selector: String,
    pub field_selector: String,
    pub resource_version: Option<String>,
    pub rv_match: Option<RvMatch>,
    pub limit: i64,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: Option<bool>,
}

/// Parses query pairs once; repeated keys keep every value.
pub fn query_map(query: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            m.entry(dec(k)).or_default().push(dec(v));
        }
    }
    m
}

pub fn first<'a>(q: &'a HashMap<String, Vec<String>>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.first()).map(String::as_str)
}

fn bool_param(q: &HashMap<String, Vec<String>>, k: &str) -> Result<Option<bool>, ApiError> {
    match first(q, k) {
        None => Ok(None),
        Some("true") | Some("1") | Some("") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(format!("invalid value for {k}: {v:?}: expected true or false"))),
    }
}

impl ListOptions {
    pub fn parse(q: &HashMap<String, Vec<String>>) -> Result<Self, ApiError> {
        let limit = match first(q, "limit") {
            None | Some("") => 0,
            Some(v) => v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {v:?}")))?.max(0),
        };
        let rv_match = match first(q, "resourceVersionMatch") {
            None | Some("") => None,
            Some("NotOlderThan") => Some(RvMatch::NotOlderThan),
            Some("Exact") => Some(RvMatch::Exact),
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {v:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        };
        let resource_version = first(q, "resourceVersion").filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(rv) = &resource_version {
            if rv.parse::<i64>().is_err() {
                return Err(ApiError::bad_request(format!("invalid resource version {rv:?}")));
            }
        }
        let send_initial_events = bool_param(q, "sendInitialEvents")?;
        if rv_match.is_some() && resource_version.is_none() && send_initial_events.is_none() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        let continue_token = first(q, "continue").filter(|s| !s.is_empty()).map(str::to_string);
        if continue_token.is_some() && resource_version.as_deref().is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        Ok(Self {
            label_selector: first(q, "labelSelector").unwrap_or("").to_string(),
            field_selector: first(q, "fieldSelector").unwrap_or("").to_string(),
            resource_version,
            rv_match,
            limit,
            continue_token,
            watch: bool_param(q, "watch")?.unwrap_or(false),
            allow_bookmarks: bool_param(q, "allowWatchBookmarks")?.unwrap_or(false),
            timeout_seconds: first(q, "timeoutSeconds").and_then(|v| v.parse().ok()),
            send_initial_events,
        })
    }

    pub fn rv(&self) -> Option<i64> {
        self.resource_version.as_deref().and_then(|s| s.parse().ok())
    }
}

/// The continue token: which revision the first page was read at, and the last key sent.
pub fn encode_continue(rev: i64, last_key: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": last_key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?.to_string();
    Ok((rev, start))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
}

impl WriteOptions {
    pub fn parse(q: &HashMap<String, Vec<String>>) -> Result<Self, ApiError> {
        let dry_run = match q.get("dryRun").map(Vec::as_slice) {
            None | Some([]) => false,
            Some(vals) => {
                for v in vals {
                    if v != "All" {
                        return Err(ApiError::bad_request(format!(
                            "dryRun: Unsupported value: {v:?}: supported values: \"All\""
                        )));
                    }
                }
                true
            }
        };
        let field_validation = match first(q, "fieldValidation") {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: {v:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                )))
            }
        };
        let field_manager = first(q, "fieldManager").filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(m) = &field_manager {
            if m.len() > 128 {
                return Err(ApiError::bad_request("fieldManager: Too long: must have at most 128 bytes"));
            }
        }
        Ok(Self { dry_run, field_manager, field_validation, force: bool_param(q, "force")?.unwrap_or(false) })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// From the body (JSON DeleteOptions, with or without TypeMeta, or empty) and the query.
    pub fn parse(body: Option<&Value>, q: &HashMap<String, Vec<String>>) -> Result<Self, ApiError> {
        let mut o = DeleteOptions::default();
        let prop = |s: &str| {
            match s {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
        };
        if let Some(b) = body.filter(|b| b.is_object()) {
            if let Some(k) = b.get("kind").and_then(Value::as_str) {
                if k != "DeleteOptions" {
                    return Err(ApiError::bad_request(format!("expected DeleteOptions, got {k}")));
                }
            }
            o.grace_period_seconds = b.get("gracePeriodSeconds").and_then(Value::as_i64);
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(prop(p)?);
            }
            if b.get("orphanDependents") == Some(&json!(true)) {
                o.propagation = Some(Propagation::Orphan);
            }
            o.precondition_uid = b.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string);
            o.precondition_rv = b.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string);
            if let Some(d) = b.get("dryRun").and_then(Value::as_array) {
                o.dry_run = d.iter().any(|v| v == "All");
            }
        }
        if let Some(g) = first(q, "gracePeriodSeconds") {
            o.grace_period_seconds =
                Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
        }
        if let Some(p) = first(q, "propagationPolicy") {
            o.propagation = Some(prop(p)?);
        }
        if q.get("dryRun").is_some_and(|v| v.iter().any(|d| d == "All")) {
            o.dry_run = true;
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            o.grace_period_seconds = Some(0);
        }
        Ok(o)
    }
}
