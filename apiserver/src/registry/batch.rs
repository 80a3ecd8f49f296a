//! batch/v1 Job and CronJob: defaulting as upstream, the generated job selector, validation.

use serde_json::{json, Value};

use apimachinery::validation::{FieldError, FieldErrors};

use super::core::pods::validate_pod_spec;
use super::{defaults, Strategy};

fn set_if_missing(obj: &mut Value, key: &str, v: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj[key] = v;
    }
}

fn default_job_spec(spec: &mut Value) {
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_if_missing(spec, "parallelism", json!(1));
    set_if_missing(spec, "backoffLimit", json!(6));
    set_if_missing(spec, "completionMode", json!("NonIndexed"));
    set_if_missing(spec, "suspend", json!(false));
    set_if_missing(spec, "manualSelector", Value::Null);
    if spec.get("manualSelector") == Some(&Value::Null) {
        if let Some(o) = spec.as_object_mut() {
            o.remove("manualSelector");
        }
    }
    set_if_missing(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
}

fn validate_job_template(spec: &Value, prefix: &str, errs: &mut FieldErrors) {
    let rp = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if rp != "OnFailure" && rp != "Never" {
        errs.push(FieldError::not_supported(
            format!("{prefix}.template.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
    errs.extend(validate_pod_spec(&spec["template"]["spec"], &format!("{prefix}.template.spec")));
}

pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn default(&self, obj: &mut Value) {
        default_job_spec(&mut obj["spec"]);
        defaults::pod_template_in(obj, &["spec", "template"]);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
        // upstream: unless manualSelector, the job selects its pods by its own uid.
        if obj["spec"].get("manualSelector") != Some(&json!(true)) {
            let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_string();
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
            if labels.is_null() {
                *labels = json!({});
            }
            labels["batch.kubernetes.io/controller-uid"] = json!(uid);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["controller-uid"] = json!(uid);
            labels["job-name"] = json!(name);
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_job_template(&obj["spec"], "spec", &mut errs);
        for f in ["parallelism", "completions", "backoffLimit"] {
            if let Some(n) = obj["spec"].get(f).and_then(Value::as_i64) {
                if n < 0 {
                    errs.push(FieldError::invalid(format!("spec.{f}"), n, "must be greater than or equal to 0"));
                }
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(new);
        if new["spec"].get("selector") != old["spec"].get("selector") {
            errs.push(FieldError::invalid("spec.selector", new["spec"]["selector"].clone(), "field is immutable"));
        }
        let strip = |v: &Value| {
            let mut t = v["spec"]["template"].clone();
            if let Some(o) = t.as_object_mut() {
                o.remove("metadata");
            }
            t
        };
        if strip(new) != strip(old) && new["spec"]["suspend"] != json!(true) {
            errs.push(FieldError::invalid("spec.template", new["spec"]["template"].clone(), "field is immutable"));
        }
        errs
    }
}

pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn status_subresource(&self) -> bool {
        true
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn name_validator(&self) -> apimachinery::validation::NameValidator {
        apimachinery::validation::NameValidator::Dns1123Subdomain
    }
    fn default(&self, obj: &mut Value) {
        let spec = &mut obj["spec"];
        set_if_missing(spec, "concurrencyPolicy", json!("Allow"));
        set_if_missing(spec, "suspend", json!(false));
        set_if_missing(spec, "successfulJobsHistoryLimit", json!(3));
        set_if_missing(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(js) = spec.pointer_mut("/jobTemplate/spec") {
            default_job_spec(js);
        }
        defaults::pod_template_in(obj, &["spec", "jobTemplate", "spec", "template"]);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let schedule = obj["spec"].get("schedule").and_then(Value::as_str).unwrap_or("");
        if schedule.is_empty() {
            errs.push(FieldError::required("spec.schedule", ""));
        } else if !schedule.starts_with('@') && schedule.split_whitespace().count() != 5 {
            errs.push(FieldError::invalid(
                "spec.schedule",
                schedule,
                format!("expected exactly 5 fields, found {}: {schedule}", schedule.split_whitespace().count()),
            ));
        }
        if let Some(cp) = obj["spec"].get("concurrencyPolicy").and_then(Value::as_str) {
            if !["Allow", "Forbid", "Replace"].contains(&cp) {
                errs.push(FieldError::not_supported("spec.concurrencyPolicy", cp, &["Allow", "Forbid", "Replace"]));
            }
        }
        validate_job_template(&obj["spec"]["jobTemplate"]["spec"], "spec.jobTemplate.spec", &mut errs);
        if obj["metadata"]["name"].as_str().is_some_and(|n| n.len() > 52) {
            errs.push(FieldError::invalid(
                "metadata.name",
                obj["metadata"]["name"].clone(),
                "must be no more than 52 characters",
            ));
        }
        errs
    }
}
