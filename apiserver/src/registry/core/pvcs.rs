//! core/v1 PersistentVolumeClaim: the spec is immutable once created, except a storage request
//! increase.

use serde_json::{json, Value};

use apimachinery::validation::{FieldError, FieldErrors};

use crate::registry::Strategy;

pub struct PvcStrategy;

impl Strategy for PvcStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        if obj["spec"].get("volumeMode").is_none() {
            obj["spec"]["volumeMode"] = json!("Filesystem");
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        if spec.get("accessModes").and_then(Value::as_array).is_none_or(Vec::is_empty) {
            errs.push(FieldError::required("spec.accessModes", "at least 1 access mode is required"));
        }
        if spec.pointer("/resources/requests/storage").is_none() {
            errs.push(FieldError::required("spec.resources[storage]", ""));
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(new);
        let strip = |v: &Value| {
            let mut s = v["spec"].clone();
            if let Some(o) = s.as_object_mut() {
                o.remove("resources");
                o.remove("volumeAttributesClassName");
                // The binder fills volumeName in.
                if old["spec"].get("volumeName").is_none() {
                    o.remove("volumeName");
                }
                // upstream RetroactiveDefaultStorageClass: a claim without a class may get one.
                if old["spec"].get("storageClassName").is_none_or(Value::is_null) {
                    o.remove("storageClassName");
                }
            }
            s
        };
        if strip(new) != strip(old) {
            errs.push(FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(class: Option<&str>) -> Value {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(c) = class {
            spec["storageClassName"] = json!(c);
        }
        json!({"spec": spec})
    }

    #[test]
    fn retroactive_default_class_sets_a_missing_class_but_never_changes_one() {
        assert!(PvcStrategy.validate_update(&claim(Some("standard")), &claim(None)).is_empty());
        assert!(!PvcStrategy.validate_update(&claim(Some("other")), &claim(Some("standard"))).is_empty());
    }
}
