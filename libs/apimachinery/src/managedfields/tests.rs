//! Server-side apply and managedFields behaviour, case by case, named after upstream's.

use serde_json::{json, Value};

use super::*;

const DEPLOYMENT: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");
const CONFIGMAP: Option<&str> = Some("io.k8s.api.core.v1.ConfigMap");
const NOW: &str = "2025-01-01T00:00:00Z";
const LATER: &str = "2025-01-01T00:01:00Z";

fn deployment(replicas: i64, labels: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}}
    })
}

fn req<'a>(manager: &'a str, force: bool, root: Option<&'a str>) -> ApplyRequest<'a> {
    ApplyRequest {
        manager,
        api_version: "apps/v1",
        subresource: None,
        force,
        now: NOW,
        root_type: root,
        reset: ResetFields::None,
    }
}

/// Applies `config` to `live` (managedFields inside it) and returns the stored object.
fn apply_as(live: &Value, manager: &str, config: &Value, force: bool, root: Option<&str>) -> Result<Value, ApplyError> {
    let managed = ManagedFields::of(live).unwrap_or_default();
    let out = apply(live, config, &managed, &req(manager, force, root))?;
    let mut obj = out.object;
    out.managed.write_into(&mut obj);
    Ok(obj)
}

/// A non-apply write by `manager` turning `old` into `new`.
fn update_as(old: &Value, new: &Value, manager: &str, root: Option<&str>) -> Value {
    let managed = ManagedFields::requested_or_live(
        new.pointer("/metadata/managedFields"),
        ManagedFields::of(old).unwrap_or_default(),
    );
    let r = UpdateRequest {
        manager,
        api_version: "apps/v1",
        subresource: None,
        now: LATER,
        root_type: root,
        reset: ResetFields::None,
    };
    let mf = update(old, new, &managed, &r);
    let mut obj = new.clone();
    mf.write_into(&mut obj);
    obj
}

fn owned(obj: &Value, manager: &str) -> Value {
    ManagedFields::of(obj)
        .unwrap_or_default()
        .entries
        .iter()
        .find(|e| e.manager == manager)
        .map(|e| e.fields.to_fields_v1())
        .unwrap_or(Value::Null)
}

fn managers(obj: &Value) -> Vec<(String, &'static str)> {
    ManagedFields::of(obj)
        .unwrap_or_default()
        .entries
        .iter()
        .map(|e| (e.manager.clone(), e.operation.as_str()))
        .collect()
}

fn conflict(r: Result<Value, ApplyError>) -> Conflicts {
    match r {
        Err(ApplyError::Conflicts(c)) => c,
        other => panic!("expected conflicts, got {other:?}"),
    }
}

fn created(manager: &str, config: &Value) -> Value {
    let r = apply_as(&json!({}), manager, config, false, DEPLOYMENT);
    assert!(r.is_ok(), "{r:?}");
    r.unwrap_or_default()
}

#[test]
fn apply_create_owns_exactly_the_applied_fields() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(
        owned(&obj, "a"),
        json!({"f:metadata": {"f:labels": {"f:app": {}}},
               "f:spec": {"f:replicas": {}, "f:selector": {},
                          "f:template": {"f:metadata": {"f:labels": {"f:app": {}}},
                                         "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
    );
    let mf = &obj["metadata"]["managedFields"][0];
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["apiVersion"], "apps/v1");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert_eq!(mf["time"], NOW);
}

#[test]
fn apply_conflict_with_update_manager_on_changed_field() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let mut scaled = obj.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scaled = update_as(&obj, &scaled, "scaler", DEPLOYMENT);
    assert_eq!(owned(&scaled, "scaler"), json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(owned(&scaled, "a")["f:spec"].get("f:replicas"), None, "the update took the field");

    let c = conflict(apply_as(&scaled, "a", &deployment(3, json!({"app": "web"})), false, DEPLOYMENT));
    assert_eq!(c.message(), r#"Apply failed with 1 conflict: conflict with "scaler" using apps/v1: .spec.replicas"#);
    let status = c.to_api_error().to_status();
    assert_eq!(status["code"], 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"scaler\" using apps/v1", "field": ".spec.replicas"}])
    );
}

#[test]
fn apply_conflict_between_appliers_names_the_applier_without_version() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let c = conflict(apply_as(&obj, "b", &deployment(2, json!({"app": "web"})), false, DEPLOYMENT));
    assert_eq!(c.message(), r#"Apply failed with 1 conflict: conflict with "a": .spec.replicas"#);
}

#[test]
fn apply_same_value_shares_ownership_without_conflict() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let r = apply_as(
        &obj,
        "b",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 1}}),
        false,
        DEPLOYMENT,
    );
    assert!(r.is_ok(), "{r:?}");
    let obj = r.unwrap_or_default();
    assert_eq!(owned(&obj, "b"), json!({"f:spec": {"f:replicas": {}}}));
    assert!(owned(&obj, "a")["f:spec"].get("f:replicas").is_some(), "both own it");
}

#[test]
fn force_apply_takes_ownership() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let config =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let r = apply_as(&obj, "b", &config, true, DEPLOYMENT);
    assert!(r.is_ok(), "{r:?}");
    let obj = r.unwrap_or_default();
    assert_eq!(obj["spec"]["replicas"], 2);
    assert_eq!(owned(&obj, "b"), json!({"f:spec": {"f:replicas": {}}}));
    assert_eq!(owned(&obj, "a")["f:spec"].get("f:replicas"), None);
    assert!(owned(&obj, "a")["f:spec"].get("f:selector").is_some(), "a keeps the rest");
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let obj = created("a", &deployment(1, json!({"app": "web", "tier": "x"})));
    let mut changed = deployment(2, json!({"app": "web", "tier": "y"}));
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let c = conflict(apply_as(&obj, "b", &changed, false, DEPLOYMENT));
    assert_eq!(
        c.message(),
        "Apply failed with 3 conflicts: conflicts with \"a\":\n- .metadata.labels.tier\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
    assert_eq!(c.to_api_error().details.map(|d| d.causes.len()), Some(3));
}

#[test]
fn reapply_without_field_removes_it() {
    let obj = created("a", &deployment(1, json!({"app": "web", "tier": "x"})));
    let r = apply_as(&obj, "a", &deployment(1, json!({"app": "web"})), false, DEPLOYMENT);
    assert!(r.is_ok(), "{r:?}");
    let obj = r.unwrap_or_default();
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(owned(&obj, "a")["f:metadata"], json!({"f:labels": {"f:app": {}}}));
}

#[test]
fn reapply_keeps_field_another_manager_owns() {
    let obj = created("a", &deployment(1, json!({"app": "web", "tier": "x"})));
    let shared =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"tier": "x"}}});
    let obj = apply_as(&obj, "b", &shared, false, DEPLOYMENT).unwrap_or_default();
    let r = apply_as(&obj, "a", &deployment(1, json!({"app": "web"})), false, DEPLOYMENT);
    let obj = r.unwrap_or_default();
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web", "tier": "x"}));
}

#[test]
fn reapply_without_list_item_removes_it() {
    // upstream TestApplyRemoveContainerPort.
    let mut with_port = deployment(3, json!({"app": "web"}));
    with_port["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
    let obj = created("apply_test", &with_port);
    let r = apply_as(&obj, "apply_test", &deployment(3, json!({"app": "web"})), false, DEPLOYMENT);
    let obj = r.unwrap_or_default();
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0].get("ports"), None, "{obj}");
    assert_eq!(obj["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
}

#[test]
fn update_moves_changed_fields_to_the_writer() {
    // upstream TestApplyManagedFields.
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "test-cm", "namespace": "default", "labels": {"test-label": "test"}},
        "data": {"key": "value"}});
    let obj = apply_as(&json!({}), "apply_test", &config, false, CONFIGMAP).unwrap_or_default();
    let mut next = obj.clone();
    next["data"]["new-key"] = json!("value");
    let obj = update_as(&obj, &next, "updater", CONFIGMAP);
    let mut next = obj.clone();
    next["data"]["key"] = json!("new value");
    let obj = update_as(&obj, &next, "updater", CONFIGMAP);
    assert_eq!(managers(&obj), vec![("apply_test".to_string(), "Apply"), ("updater".to_string(), "Update")]);
    assert_eq!(owned(&obj, "apply_test"), json!({"f:metadata": {"f:labels": {"f:test-label": {}}}}));
    assert_eq!(owned(&obj, "updater"), json!({"f:data": {"f:key": {}, "f:new-key": {}}}));
    assert_eq!(obj["metadata"]["managedFields"][1]["time"], LATER);
}

#[test]
fn update_without_changes_keeps_managers_and_times() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let same = update_as(&obj, &obj.clone(), "someone", DEPLOYMENT);
    assert_eq!(same["metadata"]["managedFields"], obj["metadata"]["managedFields"]);
}

#[test]
fn create_records_every_field_for_the_creator_with_dots_for_new_maps_and_items() {
    let new = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"}});
    let obj = update_as(&json!({}), &new, "kubectl-create", CONFIGMAP);
    assert_eq!(
        owned(&obj, "kubectl-create"),
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
}

#[test]
fn create_keeps_sent_managers_for_fields_it_does_not_set() {
    // upstream TestApplyConvertsManagedFieldsVersion: entries a create sends survive for the
    // fields the creator does not write itself.
    let mut new = deployment(1, json!({"app": "web"}));
    new["metadata"]["managedFields"] = json!([{
        "manager": "sidecar_controller", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:sidecar_version": {}, "f:app": {}}}}
    }]);
    let obj = update_as(&json!({}), &new, "creator", DEPLOYMENT);
    assert_eq!(owned(&obj, "sidecar_controller"), json!({"f:metadata": {"f:labels": {"f:sidecar_version": {}}}}));
    assert!(owned(&obj, "creator")["f:metadata"]["f:labels"].get("f:app").is_some());
}

#[test]
fn managed_fields_written_by_a_client_are_kept_and_reset_by_an_empty_list() {
    let obj = created("a", &deployment(1, json!({"app": "web"})));
    let migrated = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
        "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let mut next = obj.clone();
    next["metadata"]["managedFields"] = migrated.clone();
    let kept = update_as(&obj, &next, "kubectl", DEPLOYMENT);
    assert_eq!(kept["metadata"]["managedFields"], migrated);
    for reset in [json!([]), json!([{}])] {
        let mut next = obj.clone();
        next["metadata"]["managedFields"] = reset;
        let cleared = update_as(&obj, &next, "x", DEPLOYMENT);
        assert_eq!(cleared["metadata"].get("managedFields"), None);
    }
    // Entries that do not decode fall back to the live ones.
    let mut next = obj.clone();
    next["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Patch"}]);
    assert_eq!(update_as(&obj, &next, "x", DEPLOYMENT)["metadata"]["managedFields"], obj["metadata"]["managedFields"]);
}

#[test]
fn apply_of_identity_only_drops_the_empty_entry() {
    // upstream TestApplyRemovesEmptyManagedFields.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-cm", "namespace": "default"}});
    let obj = apply_as(&json!({}), "apply_test", &cm, false, CONFIGMAP).unwrap_or_default();
    let obj = apply_as(&obj, "apply_test", &cm, false, CONFIGMAP).unwrap_or_default();
    assert_eq!(obj["metadata"].get("managedFields"), None);
}

#[test]
fn apply_rejects_managed_fields_in_the_configuration() {
    let mut config = deployment(1, json!({}));
    config["metadata"]["managedFields"] = json!([]);
    let r = apply_as(&json!({}), "a", &config, false, DEPLOYMENT);
    assert_eq!(r, Err(ApplyError::BadRequest("metadata.managedFields must be nil".into())));
}

#[test]
fn kubectl_takes_over_fields_matching_the_last_applied_annotation() {
    // A client-side apply created the object and owns everything; its annotation records
    // replicas 1. kubectl's server-side apply may change replicas, another manager may not.
    let mut live = deployment(1, json!({"app": "web"}));
    let last = deployment(1, json!({"app": "web"}));
    live["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: format!("{last}\n")});
    let live = update_as(&json!({}), &live, "kubectl-client-side-apply", DEPLOYMENT);
    let config = deployment(4, json!({"app": "web"}));
    let r = apply_as(&live, "kubectl", &config, false, DEPLOYMENT);
    assert!(r.is_ok(), "{r:?}");
    let obj = r.unwrap_or_default();
    assert_eq!(obj["spec"]["replicas"], 4);
    let annotation = obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str().unwrap_or_default();
    assert_eq!(serde_json::from_str::<Value>(annotation).ok(), Some(config.clone()), "annotation follows the apply");
    let c = conflict(apply_as(&live, "other", &config, false, DEPLOYMENT));
    assert!(c.message().contains(r#"conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#));
}

#[test]
fn status_is_not_owned_through_the_main_resource() {
    let mut config = deployment(1, json!({"app": "web"}));
    config["status"] = json!({"replicas": 7});
    let managed = ManagedFields::default();
    let mut r = req("a", false, DEPLOYMENT);
    r.reset = ResetFields::Status;
    let out = apply(&json!({"status": {"replicas": 1}}), &config, &managed, &r);
    assert!(out.is_ok(), "{out:?}");
    let out = out.unwrap_or_else(|_| Applied { object: json!({}), managed: ManagedFields::default() });
    assert_eq!(out.object["status"], json!({"replicas": 1}));
    assert!(out.managed.entries[0].fields.to_fields_v1().get("f:status").is_none());
}

#[test]
fn subresource_managers_are_described_with_their_subresource() {
    let e = ManagedFieldsEntry {
        manager: "kubectl".into(),
        operation: Operation::Update,
        api_version: "apps/v1".into(),
        time: None,
        subresource: Some("scale".into()),
        fields: FieldSet::new(),
    };
    assert_eq!(e.describe(), r#""kubectl" with subresource "scale" using apps/v1"#);
}

#[test]
fn encode_sorts_apply_before_update_then_by_time() {
    let entry = |m: &str, op, t: &str| ManagedFieldsEntry {
        manager: m.into(),
        operation: op,
        api_version: "v1".into(),
        time: Some(t.into()),
        subresource: None,
        fields: FieldSet::from_paths(&[Path::fields(&["data"])]),
    };
    let mf = ManagedFields {
        entries: vec![
            entry("z", Operation::Update, NOW),
            entry("b", Operation::Update, "2024-01-01T00:00:00Z"),
            entry("y", Operation::Apply, LATER),
        ],
    };
    let names: Vec<Value> = mf.encode().as_array().into_iter().flatten().map(|e| e["manager"].clone()).collect();
    assert_eq!(names, vec![json!("y"), json!("b"), json!("z")]);
    let mut decoded = ManagedFields::decode(Some(&mf.encode())).unwrap_or_default().entries;
    decoded.sort_by_key(|x| x.manager.clone());
    let mut original = mf.entries.clone();
    original.sort_by_key(|x| x.manager.clone());
    assert_eq!(decoded, original);
}
