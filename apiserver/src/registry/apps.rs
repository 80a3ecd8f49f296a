//! apps/v1 workloads: Deployment, ReplicaSet, StatefulSet, DaemonSet. Defaulting as upstream,
//! an immutable selector that must match the template's labels, and the pod template checks.

use serde_json::{json, Value};

use apimachinery::labels::Selector;
use apimachinery::validation::{FieldError, FieldErrors};

use super::core::pods::validate_pod_spec;
use super::{defaults, Strategy};

fn set_if_missing(obj: &mut Value, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = v;
    }
}

/// The checks every workload with `spec.selector` + `spec.template` shares.
pub fn validate_selector_and_template(obj: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) else {
        errs.push(FieldError::required("spec.selector", ""));
        return errs;
    };
    match Selector::from_label_selector(sel) {
        Err(e) => errs.push(FieldError::invalid("spec.selector", sel.clone(), e.to_string())),
        Ok(s) => {
            if s.is_empty() {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel.clone(),
                    "empty selector is invalid for deployment",
                ));
            }
            let labels =
                spec.pointer("/template/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default();
            if !s.matches(&labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    Value::Object(labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = spec.get("replicas").and_then(Value::as_i64) {
        if r < 0 {
            errs.push(FieldError::invalid("spec.replicas", r, "must be greater than or equal to 0"));
        }
    }
    errs.extend(validate_pod_spec(&spec["template"]["spec"], "spec.template.spec"));
    errs
}

fn selector_immutable(new: &Value, old: &Value, errs: &mut FieldErrors) {
    if new["spec"].get("selector") != old["spec"].get("selector") {
        errs.push(FieldError::invalid(
            "spec.selector",
            new["spec"].get("selector").cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
}

/// A workload's status is written through `/status` only.
fn drop_status(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// The checks of a created workload plus the immutable selector.
fn validate_workload_update(new: &Value, old: &Value) -> FieldErrors {
    let mut errs = validate_selector_and_template(new);
    selector_immutable(new, old, &mut errs);
    errs
}

macro_rules! workload {
    ($name:ident, $default:expr) => {
        pub struct $name;
        impl Strategy for $name {
            fn status_subresource(&self) -> bool {
                true
            }
            fn tracks_generation(&self) -> bool {
                true
            }
            fn default(&self, obj: &mut Value) {
                let f: fn(&mut Value) = $default;
                f(&mut obj["spec"]);
                defaults::pod_template_in(obj, &["spec", "template"]);
            }
            fn prepare_for_create(&self, obj: &mut Value) {
                drop_status(obj);
            }
            fn validate(&self, obj: &Value) -> FieldErrors {
                validate_selector_and_template(obj)
            }
            fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
                validate_workload_update(new, old)
            }
        }
    };
}

workload!(DeploymentStrategy, |spec| {
    set_if_missing(spec, "replicas", json!(1));
    set_if_missing(spec, "revisionHistoryLimit", json!(10));
    set_if_missing(spec, "progressDeadlineSeconds", json!(600));
    set_if_missing(spec, "strategy", json!({"type": "RollingUpdate"}));
    if spec["strategy"]["type"] == "RollingUpdate" {
        let ru = &mut spec["strategy"]["rollingUpdate"];
        if ru.is_null() {
            *ru = json!({});
        }
        set_if_missing(ru, "maxUnavailable", json!("25%"));
        set_if_missing(ru, "maxSurge", json!("25%"));
    }
});

workload!(ReplicaSetStrategy, |spec| {
    set_if_missing(spec, "replicas", json!(1));
});

/// StatefulSets: the workload behaviour plus the MaxUnavailableStatefulSet feature gate.
pub struct StatefulSetStrategy {
    /// The gate: with it off, `updateStrategy.rollingUpdate.maxUnavailable` is dropped on
    /// writes unless the stored object already uses it, and is not defaulted (as upstream).
    pub max_unavailable: bool,
}

fn statefulset_defaults(spec: &mut Value, max_unavailable: bool) {
    set_if_missing(spec, "replicas", json!(1));
    set_if_missing(spec, "podManagementPolicy", json!("OrderedReady"));
    set_if_missing(spec, "revisionHistoryLimit", json!(10));
    set_if_missing(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        let ru = &mut spec["updateStrategy"]["rollingUpdate"];
        if ru.is_null() {
            *ru = json!({});
        }
        set_if_missing(ru, "partition", json!(0));
        if max_unavailable {
            set_if_missing(ru, "maxUnavailable", json!(1));
        }
    }
    set_if_missing(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    if let Some(tpls) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
        for t in tpls {
            set_if_missing(&mut t["spec"], "volumeMode", json!("Filesystem"));
        }
    }
}

fn max_unavailable_of(obj: &Value) -> Option<&Value> {
    obj.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable").filter(|v| !v.is_null())
}

impl StatefulSetStrategy {
    /// upstream `dropStatefulSetDisabledFields`.
    fn drop_disabled_fields(&self, new: &mut Value, old: Option<&Value>) {
        if self.max_unavailable || old.and_then(max_unavailable_of).is_some() {
            return;
        }
        if let Some(ru) = new.pointer_mut("/spec/updateStrategy/rollingUpdate").and_then(Value::as_object_mut) {
            ru.remove("maxUnavailable");
        }
    }
}

impl Strategy for StatefulSetStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        statefulset_defaults(&mut obj["spec"], self.max_unavailable);
        defaults::pod_template_in(obj, &["spec", "template"]);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        drop_status(obj);
        self.drop_disabled_fields(obj, None);
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        self.drop_disabled_fields(new, Some(old));
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_selector_and_template(obj)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_workload_update(new, old)
    }
}

workload!(DaemonSetStrategy, |spec| {
    set_if_missing(spec, "revisionHistoryLimit", json!(10));
    set_if_missing(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        let ru = &mut spec["updateStrategy"]["rollingUpdate"];
        if ru.is_null() {
            *ru = json!({});
        }
        set_if_missing(ru, "maxUnavailable", json!(1));
        set_if_missing(ru, "maxSurge", json!(0));
    }
});
