//! Content negotiation: request bodies in JSON, YAML (and protobuf where decoded), responses
//! in JSON, YAML, `meta.k8s.io` Table or PartialObjectMetadata, chosen from `Accept` in the
//! client's order of preference.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use apimachinery::status::ApiError;

/// The largest request body upstream accepts (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// Table of `meta.k8s.io` v1 or v1beta1.
    Table {
        v1beta1: bool,
    },
    PartialMetadata {
        v1beta1: bool,
    },
}

/// One media range of an Accept header, with its parameters.
struct MediaRange<'a> {
    essence: &'a str,
    params: Vec<(&'a str, &'a str)>,
}

fn parse_accept(accept: &str) -> Vec<MediaRange<'_>> {
    accept
        .split(',')
        .map(|part| {
            let mut it = part.split(';').map(str::trim);
            let essence = it.next().unwrap_or("");
            let params =
                it.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim().trim_matches('"'))).collect();
            MediaRange { essence, params }
        })
        .collect()
}

/// Picks the response form. `table_ok` is false where a Table makes no sense (writes).
pub fn choose_output(headers: &HeaderMap, table_ok: bool) -> Result<Output, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Output::Json);
    }
    for mr in parse_accept(accept) {
        let param = |k: &str| mr.params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match mr.essence {
            "application/json" | "*/*" | "application/*" => match (param("as"), param("g"), param("v")) {
                (None, _, _) => return Ok(Output::Json),
                (Some("Table"), Some("meta.k8s.io"), Some(v @ ("v1" | "v1beta1"))) if table_ok => {
                    return Ok(Output::Table { v1beta1: v == "v1beta1" })
                }
                (
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                    Some("meta.k8s.io"),
                    Some(v @ ("v1" | "v1beta1")),
                ) => return Ok(Output::PartialMetadata { v1beta1: v == "v1beta1" }),
                _ => continue,
            },
            "application/yaml" => return Ok(Output::Yaml),
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    ))
}

/// The media type of a request body, lowercased and without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a JSON or YAML body.
pub fn decode_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    match ct {
        ""
        | "application/json"
        | "*/*"
        | "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))),
        "application/yaml" | "application/apply-patch+yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => crate::server::protobuf::decode(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Paths of keys that appear twice in the same JSON object (`metadata.name`,
/// `spec.containers[0].image`): what `fieldValidation` reports as duplicate fields.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::cell::RefCell;
    use std::fmt::Write;

    // Every request body is walked, so the walk allocates nothing per key: keys are borrowed
    // from the body (unless escaped) and one path buffer grows and shrinks as it descends.
    struct Walker<'a> {
        path: &'a RefCell<String>,
        out: &'a RefCell<Vec<String>>,
    }
    struct Key;
    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string key")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Owned(v.to_string()))
        }
    }
    impl<'de> DeserializeSeed<'de> for Walker<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walker<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            let len = self.path.borrow().len();
            while let Some(k) = map.next_key_seed(Key)? {
                {
                    let mut p = self.path.borrow_mut();
                    if len > 0 {
                        p.push('.');
                    }
                    p.push_str(&k);
                }
                if !seen.insert(k) {
                    self.out.borrow_mut().push(self.path.borrow().clone());
                }
                map.next_value_seed(Walker { path: self.path, out: self.out })?;
                self.path.borrow_mut().truncate(len);
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let len = self.path.borrow().len();
            let mut i = 0;
            loop {
                let _ = write!(self.path.borrow_mut(), "[{i}]");
                let more = seq.next_element_seed(Walker { path: self.path, out: self.out })?.is_some();
                self.path.borrow_mut().truncate(len);
                if !more {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let out = RefCell::new(Vec::new());
    let path = RefCell::new(String::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    // Malformed JSON is reported by the decoder proper.
    let _ = Walker { path: &path, out: &out }.deserialize(&mut de);
    out.into_inner()
}

fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    // JSON is YAML; parse it as JSON first so numbers and strings keep their exact form.
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let y: serde_yaml::Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}")))?;
    serde_json::to_value(y).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Encodes a single object or list in the chosen form.
pub fn respond(status: StatusCode, output: Output, value: &Value) -> Response {
    match output {
        Output::Yaml => match serde_yaml::to_string(value) {
            Ok(s) => (status, [(header::CONTENT_TYPE, "application/yaml")], s).into_response(),
            Err(e) => error_response(&ApiError::internal(e.to_string())),
        },
        Output::Table { v1beta1 } => {
            let ct = if v1beta1 {
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
            } else {
                "application/json;as=Table;v=v1;g=meta.k8s.io"
            };
            json_response(status, value, ct)
        }
        _ => json_response(status, value, "application/json"),
    }
}

pub fn json_response(status: StatusCode, value: &Value, ct: &'static str) -> Response {
    let body = serde_json::to_vec(value).expect("a serde_json::Value always serializes");
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// Every error becomes a `metav1.Status` with its code.
pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &e.to_status(), "application/json");
    if let Some(s) = e.retry_after_seconds {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

/// Adds `Warning: 299 - "..."` headers.
pub fn add_warnings(r: &mut Response, warnings: &[String]) {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(s).expect("valid header"));
        h
    }

    #[test]
    fn kubectl_get_accept_picks_table_v1() {
        let h = accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json");
        assert_eq!(choose_output(&h, true).ok(), Some(Output::Table { v1beta1: false }));
        assert_eq!(choose_output(&h, false).ok(), Some(Output::Json));
    }

    #[test]
    fn protobuf_first_falls_back_to_json() {
        let h = accept("application/vnd.kubernetes.protobuf,application/json");
        assert_eq!(choose_output(&h, true).ok(), Some(Output::Json));
    }

    #[test]
    fn duplicate_fields_are_found_with_their_paths() {
        let body = br#"{"metadata":{"name":"a","name":"b"},"spec":{"containers":[{"image":"x","image":"y"}]}}"#;
        assert_eq!(duplicate_fields(body), ["metadata.name", "spec.containers[0].image"]);
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
        let nested = br#"{"items":[{"a":1},{"a":1,"a":2}],"m":{"x":{"k":1,"k":2}},"e\u0041":1,"eA":2}"#;
        assert_eq!(duplicate_fields(nested), ["items[1].a", "m.x.k", "eA"]);
    }

    #[test]
    fn only_protobuf_is_not_acceptable() {
        let h = accept("application/vnd.kubernetes.protobuf");
        assert_eq!(choose_output(&h, true).err().map(|e| e.code), Some(406));
    }
}
