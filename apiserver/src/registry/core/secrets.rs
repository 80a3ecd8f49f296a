//! core/v1 Secret: `stringData` folds into `data`; the type defaults to Opaque and is immutable.

use base64::Engine;
use serde_json::{json, Value};

use apimachinery::validation::{FieldError, FieldErrors};

use crate::registry::Strategy;

pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn default(&self, obj: &mut Value) {
        if obj.get("type").is_none_or(Value::is_null) {
            obj["type"] = json!("Opaque");
        }
        // upstream: stringData is write-only; its entries overwrite data's.
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
            if !obj.get("data").is_some_and(Value::is_object) {
                obj["data"] = json!({});
            }
            for (k, v) in sd {
                let s = v.as_str().unwrap_or_default();
                obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
            }
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        if let Some(data) = obj.get("data").and_then(Value::as_object) {
            let total: usize = data.values().filter_map(Value::as_str).map(|s| s.len() * 3 / 4).sum();
            if total > 1024 * 1024 {
                errs.push(FieldError::too_long("data", 1024 * 1024));
            }
            for k in data.keys() {
                if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
                    errs.push(FieldError::invalid(
                        format!("data[{k}]"),
                        k.as_str(),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(new);
        if new.get("type") != old.get("type") {
            errs.push(FieldError::invalid(
                "type",
                new.get("type").cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
        if old.get("immutable") == Some(&json!(true)) && (new.get("data") != old.get("data")) {
            errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
        }
        errs
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["type"]
    }
}
