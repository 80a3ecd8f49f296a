//! Server-side application of a strategic merge patch (`application/strategic-merge-patch+json`),
//! with upstream's semantics (`k8s.io/apimachinery/pkg/util/strategicpatch`, apply half):
//!
//! - objects merge recursively and `null` deletes a key;
//! - a list whose field has patch strategy `merge` merges by its merge key (lists of
//!   primitives: union); lists without a strategy are replaced whole;
//! - `$patch: replace` / `$patch: delete` in an object replace it / empty it; in a list element
//!   they replace the whole list / delete the element with that merge key;
//! - `$setElementOrder/<list>` fixes the order of a merged list, `$retainKeys` drops the keys it
//!   does not name, `$deleteFromPrimitiveList/<list>` removes values from a primitive list;
//! - directives never reach the result.
//!
//! Order of merged lists follows upstream: the `$setElementOrder` list when there is one,
//! otherwise patch elements in patch order with the elements only the server has slotted in by
//! their old relative position (so an element the server did not have comes first).
//!
//! Deliberate differences from upstream, none of which kubectl relies on: `$patch: merge` in an
//! object is accepted as the default it is (upstream rejects it); `$deleteFromPrimitiveList` on a
//! list without a merge strategy deletes the values (upstream replaces the list with them);
//! directives and nulls inside values that are added or replaced whole are processed or dropped
//! instead of being stored.

use serde_json::{Map, Value};

use super::meta::{self, FieldMeta, PatchStrategy};
use super::{merge, PatchError};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Applies the strategic merge patch `patch` to `original`, an object of OpenAPI type
/// `root_type` (see [`meta::root_type`]). With `root_type == None` (a kind without patch
/// metadata, such as a custom resource) the patch is applied as a JSON merge patch.
pub fn apply(original: &Value, patch: &Value, root_type: Option<&str>) -> Result<Value, PatchError> {
    let Some(root) = root_type else {
        return Ok(merge::apply(original, patch));
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::bad_patch("invalid JSON document: a strategic merge patch must be an object"));
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::not_applicable("invalid JSON document: the object to patch is not an object")),
    };
    merge_map(original, patch.clone(), Some(root)).map(Value::Object)
}

fn lookup(type_name: Option<&str>, field: &str) -> Option<&'static FieldMeta> {
    meta::field(type_name?, field)
}

fn merges_lists(field: Option<&FieldMeta>) -> bool {
    field.and_then(|m| m.strategy).is_some_and(PatchStrategy::merges_lists)
}

/// `$setElementOrder/containers` -> `containers`.
fn directive_target<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, tail) = key.split_once('/')?;
    (head == prefix).then_some(tail)
}

/// Merges `patch` into `original`, both objects of type `type_name`.
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    type_name: Option<&str>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            // The patch minus the directive is the new value; applying it to nothing processes
            // any directives nested in it.
            Some("replace") => return merge_map(Map::new(), patch, type_name),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::bad_patch(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(patch)
                )))
            }
        }
    }

    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, type_name)?;

    for (raw_key, patch_value) in patch {
        let (key, delete_list) = if raw_key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let key = directive_target(&raw_key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or_else(|| PatchError::bad_patch(format!("invalid patch format of primitive list: {raw_key}")))?;
            (key.to_string(), true)
        } else {
            (raw_key, false)
        };
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let field = lookup(type_name, &key);
        let current = original.get_mut(&key).map(std::mem::take);
        let next = match current {
            None | Some(Value::Null) if delete_list => None,
            None | Some(Value::Null) => fresh(patch_value, field)?,
            Some(Value::Object(current)) => match patch_value {
                Value::Object(patch_value) => {
                    let sub_type = field.and_then(|m| m.type_name);
                    if field.and_then(|m| m.strategy) == Some(PatchStrategy::Replace) {
                        Some(Value::Object(merge_map(Map::new(), patch_value, sub_type)?))
                    } else {
                        Some(Value::Object(merge_map(current, patch_value, sub_type)?))
                    }
                }
                _ if delete_list => Some(Value::Object(current)),
                other => fresh(other, field)?,
            },
            Some(Value::Array(current)) => match patch_value {
                Value::Array(patch_value) if delete_list => {
                    Some(Value::Array(current.into_iter().filter(|v| !patch_value.contains(v)).collect()))
                }
                Value::Array(patch_value) if merges_lists(field) => Some(Value::Array(merge_list(
                    current,
                    patch_value,
                    field.and_then(|m| m.type_name),
                    field.and_then(|m| m.merge_key),
                )?)),
                _ if delete_list => Some(Value::Array(current)),
                other => fresh(other, field)?,
            },
            Some(scalar) if delete_list => Some(scalar),
            Some(_) => fresh(patch_value, field)?,
        };
        match next {
            Some(value) => {
                original.insert(key, value);
            }
            None => {
                original.shift_remove(&key);
            }
        }
    }
    Ok(original)
}

/// The value to store for a field that the patch sets without merging into an existing value:
/// nulls dropped, directives processed. `None` means the field is not to be stored (an object
/// carrying `$patch: delete`).
fn fresh(value: Value, field: Option<&FieldMeta>) -> Result<Option<Value>, PatchError> {
    let type_name = field.and_then(|m| m.type_name);
    match value {
        Value::Object(map) => {
            if map.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return Ok(None);
            }
            Ok(Some(Value::Object(merge_map(Map::new(), map, type_name)?)))
        }
        Value::Array(items) if merges_lists(field) => {
            Ok(Some(Value::Array(merge_list(Vec::new(), items, type_name, field.and_then(|m| m.merge_key))?)))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    // upstream: elements carrying a directive are dropped from replaced lists.
                    Value::Object(map) if map.contains_key(DIRECTIVE) => {}
                    Value::Object(map) => out.push(Value::Object(merge_map(Map::new(), map, type_name)?)),
                    other => out.push(other),
                }
            }
            Ok(Some(Value::Array(out)))
        }
        other => Ok(Some(other)),
    }
}

/// `$retainKeys`: every key the patch sets must be listed, and the original keeps only the
/// listed keys.
fn apply_retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::bad_patch("invalid patch format of retainKeys: $retainKeys must be a list"));
    };
    let listed = |key: &str| retain.iter().any(|r| r.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null() || key.starts_with(DELETE_FROM_PRIMITIVE_LIST) || key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        if !listed(key) {
            return Err(PatchError::bad_patch(format!(
                "invalid patch format of retainKeys: {key} is set but not listed in $retainKeys"
            )));
        }
    }
    original.retain(|key, _| listed(key));
    Ok(())
}

/// `$setElementOrder/<list>`: merges `<list>` (if the patch has it) and orders the result by the
/// directive's list, keeping elements only the server has at their relative place.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    type_name: Option<&str>,
) -> Result<(), PatchError> {
    let directives: Vec<String> = patch.keys().filter(|k| k.starts_with(SET_ELEMENT_ORDER)).cloned().collect();
    for directive in directives {
        let Some(order) = patch.shift_remove(&directive) else {
            continue;
        };
        let bad_format = || PatchError::bad_patch(format!("invalid patch format of setElementOrder list: {directive}"));
        let Value::Array(order) = order else {
            return Err(bad_format());
        };
        let key = directive_target(&directive, SET_ELEMENT_ORDER).ok_or_else(bad_format)?;
        let field = lookup(type_name, key);
        let merge_key = field.and_then(|m| m.merge_key);

        let original_list = match original.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => {
                return Err(PatchError::not_applicable(format!(
                    "{directive} applies to {key}, which is not a list: {other}"
                )))
            }
        };
        let patch_list = match patch.get(key) {
            None => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => {
                return Err(PatchError::bad_patch(format!(
                    "{directive} is given but {key} is not a list in the patch: {other}"
                )))
            }
        };
        validate_patch_order(patch_list.as_deref(), &order, merge_key)?;

        let merged = match (original_list.clone(), patch_list) {
            (None, None) => continue,
            (Some(current), None) => current,
            (current, Some(patch_items)) => {
                let current = current.unwrap_or_default();
                if merges_lists(field) {
                    merge_list(current, patch_items, field.and_then(|m| m.type_name), merge_key)?
                } else {
                    match fresh(Value::Array(patch_items), field)? {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    }
                }
            }
        };
        patch.shift_remove(key);

        let order_keys = order.iter().map(|item| order_key(item, merge_key).cloned()).collect::<Result<Vec<_>, _>>()?;
        let server_keys: Vec<Value> =
            original_list.unwrap_or_default().iter().filter_map(|item| element_key(item, merge_key).cloned()).collect();
        let ordered = order_merged(merged, &order_keys, &server_keys, merge_key)?;
        original.insert(key.to_string(), Value::Array(ordered));
    }
    Ok(())
}

/// The identity of a list element: its merge-key value, or the element itself for lists
/// merged by value.
fn element_key<'a>(item: &'a Value, merge_key: Option<&str>) -> Option<&'a Value> {
    match merge_key {
        Some(key) => item.as_object()?.get(key),
        None => Some(item),
    }
}

fn missing_merge_key(item: &Value, merge_key: &str) -> String {
    format!("map: {item} does not contain declared merge key: {merge_key}")
}

/// The key of an element of a `$setElementOrder` list (or of a patch list): it must have one.
fn order_key<'a>(item: &'a Value, merge_key: Option<&str>) -> Result<&'a Value, PatchError> {
    element_key(item, merge_key)
        .ok_or_else(|| PatchError::bad_patch(missing_merge_key(item, merge_key.unwrap_or_default())))
}

fn is_delete_element(item: &Value) -> bool {
    item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// upstream: the patch list's elements must appear in the `$setElementOrder` list, in the same
/// relative order.
fn validate_patch_order(
    patch_list: Option<&[Value]>,
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let Some(patch_list) = patch_list else {
        return Ok(());
    };
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let items: Vec<&Value> = match merge_key {
        Some(_) => patch_list.iter().filter(|item| !is_delete_element(item)).collect(),
        None => patch_list.iter().collect(),
    };
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if order_key(items[p], merge_key)? == order_key(&order[o], merge_key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(PatchError::bad_patch(format!(
            "the order in patch list: {} doesn't match {SET_ELEMENT_ORDER} list: {}",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Object,
    String,
    Number,
    Bool,
    Null,
}

/// The one kind of element of the lists to merge.
fn element_kind(lists: [&[Value]; 2]) -> Result<Option<ElementKind>, PatchError> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let this = match item {
            Value::Object(_) => ElementKind::Object,
            Value::String(_) => ElementKind::String,
            Value::Number(_) => ElementKind::Number,
            Value::Bool(_) => ElementKind::Bool,
            Value::Null => ElementKind::Null,
            Value::Array(_) => return Err(PatchError::not_applicable("lists of lists are not supported")),
        };
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(PatchError::not_applicable(format!(
                    "list element types are not identical: {} and {}",
                    Value::Array(lists[0].to_vec()),
                    Value::Array(lists[1].to_vec())
                )))
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges a list with patch strategy `merge`.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem_type: Option<&str>,
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match element_kind([&original, &patch])? {
        Some(ElementKind::Object) => merge_object_list(original, patch, elem_type, merge_key),
        _ => {
            // Primitives: union, then the patch's order.
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(patch.iter()) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            order_merged(merged, &patch, &original, None)
        }
    }
}

fn merge_object_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem_type: Option<&str>,
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let Some(key) = merge_key else {
        return Err(PatchError::not_applicable(format!(
            "cannot merge lists without merge key for {}",
            elem_type.unwrap_or("objects")
        )));
    };
    // Special elements first: `$patch: delete` removes by key, `$patch: replace` makes the rest
    // of the patch the whole list.
    let mut original = original;
    let mut rest: Vec<Map<String, Value>> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = item else {
            continue; // element_kind saw only objects
        };
        let Some(directive) = map.get(DIRECTIVE) else {
            rest.push(map);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(value) = map.get(key) else {
                    return Err(PatchError::bad_patch(missing_merge_key(&Value::Object(map), key)));
                };
                original.retain(|o| o.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::bad_patch("merging lists cannot yet be specified in the patch")),
            _ => {
                return Err(PatchError::bad_patch(format!(
                    "unknown patch type: {directive} in map: {}",
                    Value::Object(map.clone())
                )))
            }
        }
    }
    if replace {
        original = rest
            .into_iter()
            .map(|m| merge_map(Map::new(), m, elem_type).map(Value::Object))
            .collect::<Result<_, _>>()?;
        rest = Vec::new();
    }

    let server_keys: Vec<Value> = original.iter().filter_map(|o| o.get(key).cloned()).collect();
    let mut patch_keys: Vec<Value> = Vec::with_capacity(rest.len());
    let mut merged = original;
    for item in rest {
        let Some(value) = item.get(key).cloned() else {
            return Err(PatchError::bad_patch(missing_merge_key(&Value::Object(item), key)));
        };
        match merged.iter().position(|o| o.get(key) == Some(&value)) {
            Some(i) => {
                let current = match std::mem::take(&mut merged[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(), // element_kind saw only objects
                };
                merged[i] = Value::Object(merge_map(current, item, elem_type)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), item, elem_type)?)),
        }
        patch_keys.push(value);
    }
    order_merged(merged, &patch_keys, &server_keys, Some(key))
}

/// upstream's order normalisation: elements named by `patch_order` come in that order; the
/// others (server-only) keep their order and are slotted in before a patch element they
/// preceded on the server.
fn order_merged(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    let mut patch_items = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let Some(k) = element_key(&item, merge_key) else {
            return Err(PatchError::not_applicable(missing_merge_key(&item, merge_key.unwrap_or_default())));
        };
        if patch_order.contains(k) {
            patch_items.push(item);
        } else {
            server_only.push(item);
        }
    }
    let position = |order: &[Value], item: &Value| -> Option<usize> {
        let k = element_key(item, merge_key)?;
        order.iter().position(|o| o == k)
    };
    patch_items.sort_by_key(|item| position(patch_order, item).unwrap_or(usize::MAX));
    server_only.sort_by_key(|item| position(server_order, item).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l), position(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POD: &str = "io.k8s.api.core.v1.Pod";
    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    fn smp(original: Value, patch: Value, root: &str) -> Result<Value, PatchError> {
        apply(&original, &patch, Some(root))
    }

    /// (name, root type, original, patch, expected result)
    type Case = (&'static str, &'static str, Value, Value, Value);

    fn check(cases: Vec<Case>) {
        for (name, root, original, patch, want) in cases {
            assert_eq!(smp(original, patch, root), Ok(want), "case {name}");
        }
    }

    #[test]
    fn strategic_merge_containers_merge_by_name() {
        check(vec![
            (
                "change_image_keeps_other_fields_and_containers",
                POD,
                json!({"spec": {"containers": [
                    {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
                    {"name": "b", "image": "b:1"}
                ]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
                json!({"spec": {"containers": [
                    {"name": "a", "image": "a:1", "ports": [{"containerPort": 80}]},
                    {"name": "b", "image": "b:2"}
                ]}}),
            ),
            (
                "new_container_without_order_goes_first",
                // upstream (and kubectl's docs): an element the server did not have is placed
                // before the server-only ones.
                POD,
                json!({"spec": {"containers": [{"name": "a", "image": "a:1"}]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "b:1"}]}}),
                json!({"spec": {"containers": [{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:1"}]}}),
            ),
            (
                "env_merges_by_name_inside_container",
                POD,
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}]}]}}),
            ),
            (
                "container_ports_merge_by_container_port",
                POD,
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}]}}),
            ),
            (
                "volume_mounts_merge_by_mount_path",
                POD,
                json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"mountPath": "/x", "name": "v1"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"mountPath": "/y", "name": "v2"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"mountPath": "/y", "name": "v2"}, {"mountPath": "/x", "name": "v1"}]}]}}),
            ),
            (
                "init_containers_merge_through_deployment_template",
                DEPLOYMENT,
                json!({"spec": {"template": {"spec": {"initContainers": [{"name": "i", "image": "i:1"}], "containers": [{"name": "m", "image": "m:1"}]}}}}),
                json!({"spec": {"template": {"spec": {"initContainers": [{"name": "i", "image": "i:2"}]}}}}),
                json!({"spec": {"template": {"spec": {"initContainers": [{"name": "i", "image": "i:2"}], "containers": [{"name": "m", "image": "m:1"}]}}}}),
            ),
            (
                "cronjob_containers_merge_through_job_template",
                "io.k8s.api.batch.v1.CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "m:1", "args": ["x"]}]}}}}}}),
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "m:2"}]}}}}}}),
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "m", "image": "m:2", "args": ["x"]}]}}}}}}),
            ),
        ]);
    }

    #[test]
    fn strategic_merge_keyed_lists_of_other_kinds() {
        check(vec![
            (
                "service_ports_merge_by_port",
                "io.k8s.api.core.v1.Service",
                json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
                json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
                json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
            ),
            (
                "owner_references_merge_by_uid",
                "io.k8s.api.core.v1.ConfigMap",
                json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a", "controller": true}]}}),
            ),
            (
                "pod_conditions_merge_by_type",
                POD,
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}}),
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}}),
            ),
            (
                "node_addresses_merge_by_type",
                "io.k8s.api.core.v1.Node",
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]}}),
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}}),
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}]}}),
            ),
            (
                "deployment_conditions_merge_by_type",
                DEPLOYMENT,
                json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}}),
                json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}]}}),
                json!({"status": {"conditions": [{"type": "Progressing", "status": "True"}, {"type": "Available", "status": "True"}]}}),
            ),
        ]);
    }

    #[test]
    fn strategic_lists_without_strategy_are_replaced() {
        check(vec![
            (
                "tolerations_replaced",
                POD,
                json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
                json!({"spec": {"tolerations": [{"key": "c"}]}}),
                json!({"spec": {"tolerations": [{"key": "c"}]}}),
            ),
            (
                "args_replaced",
                POD,
                json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
                json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
            ),
            (
                "env_from_replaced",
                POD,
                json!({"spec": {"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "x"}}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "y"}}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "y"}}]}]}}),
            ),
            (
                "unknown_field_list_replaced",
                POD,
                json!({"spec": {"somethingNew": [1, 2]}}),
                json!({"spec": {"somethingNew": [3]}}),
                json!({"spec": {"somethingNew": [3]}}),
            ),
        ]);
    }

    #[test]
    fn strategic_merge_primitive_lists() {
        check(vec![
            (
                "finalizers_union_new_first",
                POD,
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {"finalizers": ["c"]}}),
                json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
            ),
            (
                "finalizers_union_keeps_relative_order",
                POD,
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {"finalizers": ["b", "c"]}}),
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            ),
            (
                "empty_list_does_not_clear_a_merge_list",
                POD,
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": []}}),
                json!({"metadata": {"finalizers": ["a"]}}),
            ),
            (
                "null_clears_a_merge_list",
                POD,
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": null}}),
                json!({"metadata": {}}),
            ),
            (
                "pod_cidrs_union",
                "io.k8s.api.core.v1.Node",
                json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}}),
                json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}}),
                json!({"spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"]}}),
            ),
        ]);
    }

    #[test]
    fn strategic_delete_from_primitive_list() {
        check(vec![
            (
                "removes_listed_values",
                POD,
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "x"]}}),
                json!({"metadata": {"finalizers": ["a", "c"]}}),
            ),
            (
                "with_additions_and_order",
                POD,
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
                json!({"metadata": {
                    "$setElementOrder/finalizers": ["c", "d", "a"],
                    "$deleteFromPrimitiveList/finalizers": ["b"],
                    "finalizers": ["d"]
                }}),
                json!({"metadata": {"finalizers": ["c", "d", "a"]}}),
            ),
            (
                "absent_list_is_left_absent",
                POD,
                json!({"metadata": {"name": "x"}}),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
                json!({"metadata": {"name": "x"}}),
            ),
        ]);
    }

    #[test]
    fn strategic_set_element_order_reorders() {
        check(vec![
            (
                "order_only",
                POD,
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
            ),
            (
                "new_element_placed_by_order",
                POD,
                json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "c", "image": "c:1"}]}}),
                json!({"spec": {
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                    "containers": [{"name": "b", "image": "b:1"}]
                }}),
                json!({"spec": {"containers": [
                    {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}, {"name": "c", "image": "c:1"}
                ]}}),
            ),
            (
                // upstream's best effort: sidecar preceded b on the server, so it stays before b.
                "server_only_elements_keep_their_place",
                POD,
                json!({"spec": {"containers": [{"name": "a"}, {"name": "sidecar"}, {"name": "b"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
                json!({"spec": {"containers": [{"name": "sidecar"}, {"name": "b"}, {"name": "a"}]}}),
            ),
            (
                "server_only_element_after_the_patch_ones",
                POD,
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "sidecar"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
                json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}, {"name": "sidecar"}]}}),
            ),
            (
                "env_order_inside_a_merged_container",
                POD,
                json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Z", "value": "0"}]}]}}),
                json!({"spec": {"containers": [{"name": "a",
                    "$setElementOrder/env": [{"name": "X"}, {"name": "Z"}, {"name": "Y"}],
                    "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "env": [
                    {"name": "X", "value": "1"}, {"name": "Z", "value": "0"}, {"name": "Y", "value": "2"}
                ]}]}}),
            ),
        ]);
    }

    #[test]
    fn strategic_kubectl_patches_from_the_contract() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 1, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}], "terminationMessagePath": "/dev/termination-log"}]}
            }}
        });
        let with_spec = |replicas: u64, image: &str, template_meta: Value| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "spec": {"replicas": replicas, "template": {
                    "metadata": template_meta,
                    "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80, "protocol": "TCP"}], "terminationMessagePath": "/dev/termination-log"}]}
                }}
            })
        };
        check(vec![
            (
                // contract §6.3, the exact shape kubectl apply sends.
                "kubectl_apply",
                DEPLOYMENT,
                live.clone(),
                json!({"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"new\":true}\n"}},"spec":{"replicas":3,"template":{"spec":{"$setElementOrder/containers":[{"name":"main"}],"containers":[{"image":"nginx:1.26","name":"main","ports":[{"containerPort":80}]}]}}}}),
                {
                    let mut want = with_spec(3, "nginx:1.26", json!({"labels": {"app": "web"}}));
                    want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
                        json!("{\"new\":true}\n");
                    want
                },
            ),
            (
                // kubectl apply after a container was removed from the manifest.
                "kubectl_apply_removes_container",
                POD,
                json!({"spec": {"containers": [{"name": "main", "image": "m"}, {"name": "old", "image": "o"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "main"}], "containers": [{"$patch": "delete", "name": "old"}]}}),
                json!({"spec": {"containers": [{"name": "main", "image": "m"}]}}),
            ),
            (
                // contract §6.9, kubectl set image.
                "kubectl_set_image",
                DEPLOYMENT,
                live.clone(),
                json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"main"}],"containers":[{"image":"nginx:1.28","name":"main"}]}}}}),
                with_spec(1, "nginx:1.28", json!({"labels": {"app": "web"}})),
            ),
            (
                // contract §7.4, kubectl rollout restart.
                "kubectl_rollout_restart",
                DEPLOYMENT,
                live.clone(),
                json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-01-01T00:00:00Z"}}}}}),
                with_spec(
                    1,
                    "nginx:1.25",
                    json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}),
                ),
            ),
            (
                "kubectl_rollout_pause_then_resume",
                DEPLOYMENT,
                smp(live.clone(), json!({"spec":{"paused":true}}), DEPLOYMENT).unwrap_or_default(),
                json!({"spec":{"paused":null}}),
                live.clone(),
            ),
            (
                // contract §8, kubectl cordon.
                "kubectl_cordon",
                "io.k8s.api.core.v1.Node",
                json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}}),
                json!({"spec":{"unschedulable":true}}),
                json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24", "unschedulable": true}}),
            ),
            (
                "kubectl_uncordon",
                "io.k8s.api.core.v1.Node",
                json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24", "unschedulable": true}}),
                json!({"spec":{"unschedulable":null}}),
                json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}}),
            ),
            (
                // contract §7.3: rollout undo of a StatefulSet sends the ControllerRevision data.
                "controller_revision_undo_replaces_template",
                "io.k8s.api.apps.v1.StatefulSet",
                json!({"spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"x": "y"}}, "spec": {"containers": [{"name": "db", "image": "db:2"}, {"name": "extra", "image": "e:1"}]}}}}),
                json!({"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}),
                json!({"spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}),
            ),
        ]);
    }

    #[test]
    fn strategic_patch_directives() {
        check(vec![
            (
                "delete_element_by_merge_key",
                POD,
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
                json!({"spec": {"containers": [{"name": "b"}]}}),
            ),
            (
                "replace_whole_merge_list",
                POD,
                json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b"}]}}),
                json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
                json!({"spec": {"containers": [{"name": "c"}]}}),
            ),
            (
                "replace_map",
                POD,
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
                json!({"metadata": {"labels": {"c": "3"}}}),
            ),
            (
                "delete_map_leaves_it_empty",
                POD,
                json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}}),
                json!({"metadata": {"labels": {"$patch": "delete"}}}),
                json!({"metadata": {"labels": {}}, "spec": {"x": 1}}),
            ),
            (
                "delete_map_not_present_adds_nothing",
                POD,
                json!({"metadata": {"name": "p"}}),
                json!({"metadata": {"labels": {"$patch": "delete"}}}),
                json!({"metadata": {"name": "p"}}),
            ),
            (
                "explicit_merge_in_map_is_the_default",
                POD,
                json!({"metadata": {"labels": {"a": "1"}}}),
                json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            ),
            (
                "null_deletes_key",
                POD,
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
                json!({"metadata": {"labels": {"a": null, "zz": null}}}),
                json!({"metadata": {"labels": {"b": "2"}}}),
            ),
            (
                "pdb_selector_is_replaced_not_merged",
                "io.k8s.api.policy.v1.PodDisruptionBudget",
                json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "minAvailable": 1}}),
                json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}}),
                json!({"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "minAvailable": 1}}),
            ),
        ]);
    }

    #[test]
    fn strategic_retain_keys_clears_unlisted() {
        check(vec![
            (
                "deployment_strategy_switch_to_recreate",
                DEPLOYMENT,
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
            ),
            (
                "volume_source_switch",
                POD,
                json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}]}}),
                json!({"spec": {
                    "$setElementOrder/volumes": [{"name": "v"}, {"name": "w"}],
                    "volumes": [{"$retainKeys": ["configMap", "name"], "name": "v", "configMap": {"name": "cm"}}]
                }}),
                json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "emptyDir": {}}]}}),
            ),
            (
                "nulls_need_not_be_listed",
                DEPLOYMENT,
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
            ),
        ]);
    }

    #[test]
    fn strategic_directives_never_leak() {
        check(vec![
            (
                "new_subtree_with_directives",
                DEPLOYMENT,
                json!({"metadata": {"name": "web"}}),
                json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "b", "image": "b"}, {"name": "gone", "$patch": "delete"}, {"name": "a", "image": "a", "env": null}],
                    "volumes": [{"$retainKeys": ["name"], "name": "v"}]
                }, "metadata": {"labels": {"$patch": "replace", "app": "web", "x": null}}}}}),
                json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
                    "containers": [{"name": "b", "image": "b"}, {"name": "a", "image": "a"}],
                    "volumes": [{"name": "v"}]
                }, "metadata": {"labels": {"app": "web"}}}}}),
            ),
            (
                "replaced_list_elements_cleaned",
                POD,
                json!({"spec": {"tolerations": [{"key": "a"}]}}),
                json!({"spec": {"tolerations": [{"key": "b", "value": null}, {"$patch": "delete", "key": "a"}]}}),
                json!({"spec": {"tolerations": [{"key": "b"}]}}),
            ),
            (
                "type_change_takes_patch_value",
                POD,
                json!({"spec": {"nodeSelector": "oops"}}),
                json!({"spec": {"nodeSelector": {"disk": "ssd", "x": null}}}),
                json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
            ),
        ]);
    }

    #[test]
    fn strategic_unknown_kind_is_merge_patch() {
        let cr = json!({"spec": {"items": [{"name": "a"}], "keep": 1}});
        let patch = json!({"spec": {"items": [{"name": "b"}], "$patch": "x"}});
        assert_eq!(apply(&cr, &patch, None), Ok(json!({"spec": {"items": [{"name": "b"}], "keep": 1, "$patch": "x"}})));
    }

    #[test]
    fn strategic_invalid_patches_rejected() {
        // (name, original, patch, expected error kind and message)
        let cases = [
            (
                "element_missing_merge_key",
                json!({"spec": {"containers": [{"name": "a"}]}}),
                json!({"spec": {"containers": [{"image": "x"}]}}),
                PatchError::BadPatch("map: {\"image\":\"x\"} does not contain declared merge key: name".into()),
            ),
            (
                "delete_element_missing_merge_key",
                json!({"spec": {"containers": [{"name": "a"}]}}),
                json!({"spec": {"containers": [{"$patch": "delete"}]}}),
                PatchError::BadPatch("map: {\"$patch\":\"delete\"} does not contain declared merge key: name".into()),
            ),
            (
                "unknown_patch_directive_in_map",
                json!({"metadata": {}}),
                json!({"metadata": {"$patch": "frobnicate"}}),
                PatchError::BadPatch("unknown patch type: \"frobnicate\" in map: {}".into()),
            ),
            (
                "merge_directive_in_list",
                json!({"spec": {"containers": [{"name": "a"}]}}),
                json!({"spec": {"containers": [{"$patch": "merge"}]}}),
                PatchError::BadPatch("merging lists cannot yet be specified in the patch".into()),
            ),
            (
                "retain_keys_not_a_list",
                json!({"spec": {}}),
                json!({"spec": {"$retainKeys": "type"}}),
                PatchError::BadPatch("invalid patch format of retainKeys: $retainKeys must be a list".into()),
            ),
            (
                "retain_keys_missing_a_set_key",
                json!({"spec": {}}),
                json!({"spec": {"$retainKeys": ["type"], "rollingUpdate": {}}}),
                PatchError::BadPatch("invalid patch format of retainKeys: rollingUpdate is set but not listed in $retainKeys".into()),
            ),
            (
                "set_element_order_contradicts_patch",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b"}, {"name": "a"}]}}),
                PatchError::BadPatch("the order in patch list: [{\"name\":\"b\"},{\"name\":\"a\"}] doesn't match $setElementOrder list: [{\"name\":\"a\"},{\"name\":\"b\"}]".into()),
            ),
            (
                "set_element_order_not_a_list",
                json!({"spec": {}}),
                json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
                PatchError::BadPatch("invalid patch format of setElementOrder list: $setElementOrder/containers".into()),
            ),
            (
                "bad_delete_list_key",
                json!({"metadata": {}}),
                json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
                PatchError::BadPatch("invalid patch format of primitive list: $deleteFromPrimitiveListfinalizers".into()),
            ),
            (
                "list_of_lists",
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": [["b"]]}}),
                PatchError::NotApplicable("lists of lists are not supported".into()),
            ),
            (
                "mixed_element_types",
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": [{"name": "b"}]}}),
                PatchError::NotApplicable("list element types are not identical: [\"a\"] and [{\"name\":\"b\"}]".into()),
            ),
        ];
        for (name, original, patch, want) in cases {
            assert_eq!(smp(original, patch, POD), Err(want), "case {name}");
        }
        assert_eq!(
            apply(&json!({}), &json!([1]), Some(POD)),
            Err(PatchError::BadPatch("invalid JSON document: a strategic merge patch must be an object".into()))
        );
    }
}
