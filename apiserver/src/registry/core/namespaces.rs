//! core/v1 Namespace: the `kubernetes` finalizer and the Active/Terminating phase.

use serde_json::{json, Value};

use apimachinery::validation::NameValidator;

use crate::registry::Strategy;

pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn name_validator(&self) -> NameValidator {
        NameValidator::Dns1123Label
    }
    fn default(&self, obj: &mut Value) {
        // upstream: every namespace carries the `kubernetes` finalizer the namespace
        // controller removes once the namespace is empty.
        let spec = &mut obj["spec"];
        if spec.get("finalizers").is_none() {
            *spec = json!({"finalizers": ["kubernetes"]});
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // Only /finalize changes spec.finalizers.
        new["spec"] = old["spec"].clone();
    }
    fn subresource_update(&self, sub: &str, new: &Value, old: &Value) -> Option<Value> {
        let mut out = old.clone();
        match sub {
            "status" => out["status"] = new["status"].clone(),
            "finalize" => out["spec"]["finalizers"] = new["spec"].get("finalizers").cloned().unwrap_or(json!([])),
            _ => return None,
        }
        Some(out)
    }
    fn deletion_blocked(&self, obj: &mut Value) -> bool {
        let pending = obj["spec"].get("finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if pending {
            obj["status"]["phase"] = json!("Terminating");
        }
        pending
    }
}
