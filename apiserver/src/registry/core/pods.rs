//! core/v1 Pod: defaulting, validation, the Pending status on create, QoS class, the spec
//! fields that may change after creation, and graceful deletion.

use std::collections::HashSet;

use serde_json::{json, Value};

use apimachinery::validation::{is_dns1123_label, FieldError, FieldErrors};

use crate::registry::{defaults, Strategy};

pub struct PodStrategy;

/// upstream: Guaranteed when every container has equal cpu and memory requests and limits,
/// BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(res));
            // A limit without a request defaults the request to the limit.
            let r = req.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn validate_containers(spec: &Value, list: &str, required: bool, errs: &mut FieldErrors, names: &mut HashSet<String>) {
    let cs = spec.get(list).and_then(Value::as_array);
    if required && cs.is_none_or(Vec::is_empty) {
        errs.push(FieldError::required(format!("spec.{list}"), ""));
        return;
    }
    for (i, c) in cs.into_iter().flatten().enumerate() {
        let path = format!("spec.{list}[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("{path}.name"), "")),
            Some(n) => {
                for msg in is_dns1123_label(n) {
                    errs.push(FieldError::invalid(format!("{path}.name"), n, msg));
                }
                if !names.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("{path}.name"), n));
                }
            }
        }
        if c.get("image").and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
            errs.push(FieldError::required(format!("{path}.image"), ""));
        }
        if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
            if !["Always", "IfNotPresent", "Never"].contains(&p) {
                errs.push(FieldError::not_supported(
                    format!("{path}.imagePullPolicy"),
                    p,
                    &["Always", "IfNotPresent", "Never"],
                ));
            }
        }
        for (j, port) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let cp = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&cp) {
                errs.push(FieldError::invalid(
                    format!("{path}.ports[{j}].containerPort"),
                    cp,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// Validates a pod spec at `spec`; shared with the workload kinds' templates.
pub fn validate_pod_spec(spec: &Value, prefix: &str) -> FieldErrors {
    let mut errs = Vec::new();
    let mut names = HashSet::new();
    validate_containers(spec, "initContainers", false, &mut errs, &mut names);
    validate_containers(spec, "containers", true, &mut errs, &mut names);
    if let Some(p) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            errs.push(FieldError::not_supported("spec.restartPolicy", p, &["Always", "OnFailure", "Never"]));
        }
    }
    if let Some(p) = spec.get("dnsPolicy").and_then(Value::as_str) {
        let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
        if !ok.contains(&p) {
            errs.push(FieldError::not_supported("spec.dnsPolicy", p, &ok));
        }
    }
    let mut vol_names = HashSet::new();
    for (i, v) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match v.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("spec.volumes[{i}].name"), "")),
            Some(n) => {
                if !vol_names.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("spec.volumes[{i}].name"), n));
                }
            }
        }
    }
    if !prefix.is_empty() {
        for e in &mut errs {
            e.field = format!("{prefix}{}", e.field.trim_start_matches("spec"));
        }
    }
    errs
}

/// The spec with the fields a pod update may change blanked out.
fn immutable_view(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("activeDeadlineSeconds");
        o.remove("tolerations");
        o.remove("terminationGracePeriodSeconds");
        o.remove("schedulingGates");
        for list in ["containers", "initContainers"] {
            if let Some(cs) = o.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    s
}

impl Strategy for PodStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            defaults::pod_spec(spec);
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        let qos = qos_class(&obj["spec"]);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_pod_spec(&obj["spec"], "")
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(new);
        // nodeName is set once, by binding.
        let old_node = old["spec"].get("nodeName");
        if immutable_view(&new["spec"]) != immutable_view(&old["spec"])
            && !(old_node.is_none() && {
                let mut o = immutable_view(&old["spec"]);
                o["nodeName"] = new["spec"]["nodeName"].clone();
                o == immutable_view(&new["spec"])
            })
        {
            errs.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errs
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }
    fn subresource_update(&self, sub: &str, new: &Value, old: &Value) -> Option<Value> {
        match sub {
            "status" => {
                let mut out = old.clone();
                out["status"] = new.get("status").cloned().unwrap_or(json!({}));
                Some(out)
            }
            // pods/binding sets spec.nodeName and the PodScheduled condition in one write.
            "binding" => {
                let mut out = old.clone();
                out["spec"]["nodeName"] = new["spec"]["nodeName"].clone();
                out["status"] = new["status"].clone();
                Some(out)
            }
            _ => None,
        }
    }
    fn graceful_deletion(&self, obj: &Value) -> Option<i64> {
        // upstream: a pod never bound to a node, or already finished, goes at once.
        let bound = obj["spec"].get("nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        let phase = obj["status"].get("phase").and_then(Value::as_str).unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return Some(0);
        }
        Some(obj["spec"].get("terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_guaranteed_when_requests_equal_limits() {
        let spec = json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&spec), "Guaranteed");
    }

    #[test]
    fn qos_best_effort_without_resources() {
        assert_eq!(qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
    }

    #[test]
    fn qos_burstable_with_only_requests() {
        let spec = json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&spec), "Burstable");
    }

    #[test]
    fn pod_update_may_change_image_only() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        let ok = json!({"spec": {"containers": [{"name": "a", "image": "y"}]}});
        let bad = json!({"spec": {"containers": [{"name": "b", "image": "y"}]}});
        assert!(PodStrategy.validate_update(&ok, &old).is_empty());
        assert_eq!(PodStrategy.validate_update(&bad, &old)[0].field, "spec");
    }
}
