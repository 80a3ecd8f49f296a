//! Walks of JSON objects that know their schema: the set of fields a value sets, the comparison
//! of two values, the merge of an applied configuration into a live object, and removing or
//! extracting the fields of a set.
//!
//! upstream: structured-merge-diff `typed` (`ToFieldSet`, `Compare`, `Merge`, `RemoveItems`,
//! `ExtractItems`). The schema comes from [`crate::patch::meta`]: list types and map keys per
//! field, walked from the kind's root type. Lists the table does not describe are atomic, as
//! upstream treats lists without `x-kubernetes-list-type`; objects are granular unless listed
//! as atomic below.

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, PathElement};
use crate::patch::meta::{self, ListType, PatchStrategy};

/// How server-side apply treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

/// What the schema says about one position in an object.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FieldType {
    /// OpenAPI name of the object's type, or of the items' type for a list.
    type_name: Option<&'static str>,
    list: Option<ListKind>,
    /// `x-kubernetes-map-type: atomic` / `+structType=atomic`: owned as a whole.
    atomic_object: bool,
    /// A field Go always serializes (a struct value, a list without `omitempty`): it exists,
    /// possibly empty, in every object of its type, so upstream never records it as added or
    /// removed itself (no `"."` entry in an update's field set).
    always_present: bool,
}

/// upstream `+structType=atomic` fields reached through the patch metadata table (label
/// selectors of the workload kinds).
const ATOMIC_OBJECTS: &[(&str, &str)] = &[
    ("io.k8s.api.apps.v1.DeploymentSpec", "selector"),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", "selector"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "selector"),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "selector"),
    ("io.k8s.api.batch.v1.JobSpec", "selector"),
];

/// Struct-typed fields of the table that are pointers (`omitempty`) in Go.
const POINTER_FIELDS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.Volume", "ephemeral"),
    ("io.k8s.api.core.v1.EphemeralVolumeSource", "volumeClaimTemplate"),
    ("io.k8s.api.core.v1.PodSpec", "resources"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector"),
];

/// The defaults of list-map key fields, used when an item omits them (upstream reads them
/// from the OpenAPI `default`): `protocol` of container and service ports.
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// The type of the root object of a kind (`None` for kinds without patch metadata).
pub(crate) fn root(type_name: Option<&'static str>) -> FieldType {
    FieldType { type_name, ..FieldType::default() }
}

/// The type of field `name` of an object of type `parent`.
fn child(parent: &FieldType, name: &str, at_root: bool) -> FieldType {
    let Some(pt) = parent.type_name else { return FieldType::default() };
    let always_root = at_root && matches!(name, "spec" | "status");
    let Some(m) = meta::field(pt, name) else {
        return FieldType {
            atomic_object: ATOMIC_OBJECTS.contains(&(pt, name)),
            always_present: always_root,
            ..FieldType::default()
        };
    };
    let list = match m.list_type {
        Some(ListType::Atomic) => Some(ListKind::Atomic),
        Some(ListType::Set) => Some(ListKind::Set),
        Some(ListType::Map) if !m.map_keys.is_empty() => Some(ListKind::Map(m.map_keys)),
        // No list type: a merging list falls back to its merge key, or is a set of primitives.
        _ => match &m.merge_key {
            Some(key) => Some(ListKind::Map(std::slice::from_ref(key))),
            None if m.strategy.is_some_and(PatchStrategy::merges_lists) => Some(ListKind::Set),
            None => None,
        },
    };
    let is_struct = m.type_name.is_some() && m.list_type.is_none();
    FieldType {
        type_name: m.type_name,
        list,
        atomic_object: m.strategy == Some(PatchStrategy::Replace) || ATOMIC_OBJECTS.contains(&(pt, name)),
        always_present: always_root
            || (is_struct && !POINTER_FIELDS.contains(&(pt, name)))
            || (pt == "io.k8s.api.core.v1.PodSpec" && name == "containers"),
    }
}

/// The type of the items of a list of type `list`.
fn item(list: &FieldType) -> FieldType {
    FieldType { type_name: list.type_name, ..FieldType::default() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Leaf,
    Object,
    List(ListKind),
}

fn shape(v: &Value, t: &FieldType) -> Shape {
    match v {
        Value::Object(_) if t.atomic_object => Shape::Leaf,
        Value::Object(_) => Shape::Object,
        Value::Array(_) => match t.list.unwrap_or(ListKind::Atomic) {
            ListKind::Atomic => Shape::Leaf,
            k => Shape::List(k),
        },
        _ => Shape::Leaf,
    }
}

/// The path elements of a granular list's items, or `None` when an item cannot be addressed
/// (a list-map item that is not an object or lacks a key without default); such a list is
/// then handled atomically. Repeated elements keep their first item only.
fn elements(items: &[Value], kind: ListKind) -> Option<Vec<(PathElement, &Value)>> {
    let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
    for it in items {
        let pe = match kind {
            ListKind::Atomic => return None,
            ListKind::Set => PathElement::value(it),
            ListKind::Map(keys) => {
                let obj = it.as_object()?;
                let mut fields: Vec<(&str, Value)> = Vec::with_capacity(keys.len());
                for k in keys {
                    let v = match obj.get(*k).filter(|v| !v.is_null()) {
                        Some(v) => v.clone(),
                        None => key_default(k)?,
                    };
                    fields.push((k, v));
                }
                let refs: Vec<(&str, &Value)> = fields.iter().map(|(k, v)| (*k, v)).collect();
                PathElement::key(&refs)
            }
        };
        if !out.iter().any(|(seen, _)| *seen == pe) {
            out.push((pe, it));
        }
    }
    Some(out)
}

fn lookup<'a>(els: &[(PathElement, &'a Value)], pe: &PathElement) -> Option<&'a Value> {
    els.iter().find(|(p, _)| p == pe).map(|(_, v)| *v)
}

fn non_null(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

// ---- ToFieldSet ----

/// The fields `obj` sets: its leaves, atomic lists and objects, and the items of granular lists.
/// Empty granular objects and lists set nothing; nulls are ignored.
pub(crate) fn field_set(obj: &Value, t: &FieldType) -> FieldSet {
    let mut out = FieldSet::new();
    walk_set(obj, t, &mut Vec::new(), &mut out);
    out
}

fn walk_set(v: &Value, t: &FieldType, path: &mut Vec<PathElement>, out: &mut FieldSet) {
    match (shape(v, t), v) {
        (Shape::Object, Value::Object(m)) => {
            let at_root = path.is_empty();
            for (k, cv) in m {
                if cv.is_null() {
                    continue;
                }
                path.push(PathElement::field(k.as_str()));
                walk_set(cv, &child(t, k, at_root), path, out);
                path.pop();
            }
        }
        (Shape::List(kind), Value::Array(items)) => match elements(items, kind) {
            None => out.insert(path),
            Some(els) => {
                let it = item(t);
                for (pe, iv) in els {
                    path.push(pe);
                    if kind != ListKind::Set {
                        walk_set(iv, &it, path, out);
                    }
                    out.insert(path);
                    path.pop();
                }
            }
        },
        _ => out.insert(path),
    }
}

// ---- Compare ----

/// What changed between two versions of an object (upstream `typed.Comparison`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    /// Fields added or given a new value.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub(crate) fn compare(old: &Value, new: &Value, t: &FieldType) -> Comparison {
    let mut c = Comparison::default();
    walk_compare(Some(old), Some(new), t, &mut Vec::new(), &mut c);
    c
}

fn leaf(old: Option<&Value>, new: Option<&Value>, path: &[PathElement], c: &mut Comparison) {
    match (old, new) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    }
}

fn walk_compare(
    old: Option<&Value>,
    new: Option<&Value>,
    t: &FieldType,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
) {
    let (old, new) = (non_null(old), non_null(new));
    let shape_of = |v: Option<&Value>| v.map(|v| shape(v, t));
    let sh = match (shape_of(old), shape_of(new)) {
        (None, None) => return,
        (Some(a), Some(b)) if a != b => Shape::Leaf,
        (a, b) => b.or(a).unwrap_or(Shape::Leaf),
    };
    if sh == Shape::Leaf || (is_empty_container(old) && is_empty_container(new)) {
        leaf(old, new, path, c);
        return;
    }
    match sh {
        Shape::Object => {
            let empty = Map::new();
            let om = old.and_then(Value::as_object).unwrap_or(&empty);
            let nm = new.and_then(Value::as_object).unwrap_or(&empty);
            let at_root = path.is_empty();
            for k in om.keys().chain(nm.keys().filter(|k| !om.contains_key(*k))) {
                path.push(PathElement::field(k.as_str()));
                walk_compare(om.get(k), nm.get(k), &child(t, k, at_root), path, c);
                path.pop();
            }
        }
        Shape::List(kind) => {
            let none: Vec<Value> = Vec::new();
            let oi = old.and_then(Value::as_array).unwrap_or(&none);
            let ni = new.and_then(Value::as_array).unwrap_or(&none);
            let (Some(oe), Some(ne)) = (elements(oi, kind), elements(ni, kind)) else {
                leaf(old, new, path, c);
                return;
            };
            let it = item(t);
            let mut order: Vec<&PathElement> = oe.iter().map(|(p, _)| p).collect();
            order.extend(ne.iter().map(|(p, _)| p).filter(|p| lookup(&oe, p).is_none()));
            for pe in order {
                path.push(pe.clone());
                let (a, b) = (lookup(&oe, pe), lookup(&ne, pe));
                if kind == ListKind::Set {
                    leaf(a, b, path, c);
                } else {
                    walk_compare(a, b, &it, path, c);
                }
                path.pop();
            }
        }
        Shape::Leaf => {}
    }
    if !path.is_empty() && !t.always_present {
        match (old, new) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            _ => {}
        }
    }
}

// ---- Merge ----

/// `config` merged into `live`: leaves and atomic values from `config`, objects key by key,
/// granular lists item by item (upstream `TypedValue.Merge`). Nulls in `config` are ignored.
pub(crate) fn merge(live: &Value, config: &Value, t: &FieldType) -> Value {
    merge_value(Some(live), config, t)
}

fn merge_value(live: Option<&Value>, config: &Value, t: &FieldType) -> Value {
    let Some(live) = non_null(live) else { return strip_nulls(config) };
    if config.is_null() {
        return live.clone();
    }
    let sh = shape(config, t);
    if sh != shape(live, t) {
        return strip_nulls(config);
    }
    match (sh, live, config) {
        (Shape::Object, Value::Object(lm), Value::Object(cm)) => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                if cv.is_null() {
                    continue;
                }
                let merged = merge_value(lm.get(k), cv, &child(t, k, false));
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::List(kind), Value::Array(li), Value::Array(ci)) => {
            let (Some(le), Some(ce)) = (elements(li, kind), elements(ci, kind)) else {
                return strip_nulls(config);
            };
            let it = item(t);
            let merged = merge_order(&le, &ce);
            Value::Array(
                merged
                    .into_iter()
                    .map(|(l, c)| match (l, c) {
                        (Some(l), Some(c)) if kind != ListKind::Set => merge_value(Some(l), c, &it),
                        (_, Some(c)) => strip_nulls(c),
                        (Some(l), None) => l.clone(),
                        (None, None) => Value::Null,
                    })
                    .collect(),
            )
        }
        _ => strip_nulls(config),
    }
}

/// The item order of a merged list (upstream's): live-only items stay where they were, items
/// the config names follow the config's order, and config-only items go where the config puts
/// them relative to the shared ones.
fn merge_order<'a>(
    live: &[(PathElement, &'a Value)],
    config: &[(PathElement, &'a Value)],
) -> Vec<(Option<&'a Value>, Option<&'a Value>)> {
    let in_live = |pe: &PathElement| lookup(live, pe);
    let in_config = |pe: &PathElement| lookup(config, pe);
    let shared: Vec<&PathElement> = config.iter().map(|(p, _)| p).filter(|p| in_live(p).is_some()).collect();
    let mut next_shared = 0usize;
    let mut out = Vec::with_capacity(live.len() + config.len());
    let (mut li, mut ci) = (0usize, 0usize);
    while li < live.len() || ci < config.len() {
        if li < live.len() && ci < config.len() {
            let pe = &live[li].0;
            if *pe == config[ci].0 {
                out.push((Some(live[li].1), Some(config[ci].1)));
                li += 1;
                ci += 1;
                next_shared += 1;
                continue;
            }
            if in_config(pe).is_some() && shared.get(next_shared).is_some_and(|s| *s != pe) {
                li += 1;
                continue;
            }
        }
        if li < live.len() && in_config(&live[li].0).is_none() {
            out.push((Some(live[li].1), None));
            li += 1;
            continue;
        }
        if ci < config.len() {
            let pe = &config[ci].0;
            out.push((in_live(pe), Some(config[ci].1)));
            ci += 1;
            if shared.get(next_shared).is_some_and(|s| *s == pe) {
                next_shared += 1;
            }
        } else {
            // Only shared live items remain, already emitted through the config.
            li += 1;
        }
    }
    out
}

/// `v` without null values in objects (an applied `null` means "not set").
pub(crate) fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, x)| !x.is_null()).map(|(k, x)| (k.clone(), strip_nulls(x))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

// ---- RemoveItems / ExtractItems ----

/// `obj` without the fields of `set`; objects and lists emptied by the removal go too.
pub(crate) fn remove(obj: &Value, set: &FieldSet, t: &FieldType) -> Value {
    if set.is_empty() {
        return obj.clone();
    }
    walk_filter(obj, set, t, true, true).unwrap_or_else(|| Value::Object(Map::new()))
}

/// Only the fields of `set` in `obj` (upstream `ExtractItems`).
pub(crate) fn extract(obj: &Value, set: &FieldSet, t: &FieldType) -> Value {
    walk_filter(obj, set, t, false, true).unwrap_or_else(|| Value::Object(Map::new()))
}

/// Shared walk of remove (`removing`) and extract. Returns `None` for a value that ends empty.
fn walk_filter(v: &Value, set: &FieldSet, t: &FieldType, removing: bool, at_root: bool) -> Option<Value> {
    match (shape(v, t), v) {
        (Shape::Object, Value::Object(m)) => {
            let mut out = Map::new();
            for (k, cv) in m {
                let pe = PathElement::field(k.as_str());
                if set.has_member(&pe) {
                    if !removing {
                        out.insert(k.clone(), cv.clone());
                    }
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        if let Some(x) = walk_filter(cv, sub, &child(t, k, at_root), removing, false) {
                            out.insert(k.clone(), x);
                        }
                    }
                    None if removing => {
                        out.insert(k.clone(), cv.clone());
                    }
                    None => {}
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Shape::List(kind), Value::Array(items)) => {
            let Some(els) = elements(items, kind) else { return Some(v.clone()) };
            let it = item(t);
            let mut out = Vec::new();
            for (pe, iv) in els {
                if set.has_member(&pe) {
                    if !removing {
                        out.push(iv.clone());
                    }
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) if kind != ListKind::Set => {
                        if let Some(x) = walk_filter(iv, sub, &it, removing, false) {
                            out.push(x);
                        }
                    }
                    _ if removing => out.push(iv.clone()),
                    _ => {}
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => Some(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managedfields::fieldpath::Path;
    use serde_json::json;

    const DEPLOYMENT: Option<&str> = Some("io.k8s.api.apps.v1.Deployment");

    fn fv1(set: &FieldSet) -> Value {
        set.to_fields_v1()
    }

    #[test]
    fn list_map_items_keyed_by_map_keys() {
        let obj = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]
        }]}}}});
        let set = field_set(&obj, &root(DEPLOYMENT));
        assert_eq!(
            fv1(&set),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                ".": {}, "f:image": {}, "f:name": {},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
            }}}}}})
        );
    }

    #[test]
    fn atomic_lists_and_selectors_are_leaves() {
        let obj = json!({"spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "c", "args": ["a", "b"]}], "tolerations": [{"key": "k"}]}}
        }});
        let set = field_set(&obj, &root(DEPLOYMENT));
        assert_eq!(
            fv1(&set),
            json!({"f:spec": {"f:selector": {}, "f:template": {"f:spec": {
                "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:args": {}, "f:name": {}}},
                "f:tolerations": {}
            }}}})
        );
    }

    #[test]
    fn set_lists_own_their_values_and_unknown_kinds_are_granular_maps() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}}, "spec": {"list": [1, 2]}});
        let set = field_set(&obj, &root(Some("io.k8s.api.core.v1.ConfigMap")));
        assert_eq!(
            fv1(&set),
            json!({"f:metadata": {"f:finalizers": {"v:\"a\"": {}, "v:\"b\"": {}}, "f:labels": {"f:x": {}}},
                   "f:spec": {"f:list": {}}})
        );
        let cr = field_set(&json!({"spec": {"a": {"b": 1}, "empty": {}}}), &root(None));
        assert_eq!(fv1(&cr), json!({"f:spec": {"f:a": {"f:b": {}}}}));
    }

    #[test]
    fn compare_reports_added_modified_removed_with_dot_for_new_maps() {
        let old = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1, "paused": true}, "data": {"a": "1"}});
        let new =
            json!({"metadata": {"name": "x", "labels": {"app": "web"}}, "spec": {"replicas": 2}, "data": {"a": "1"}});
        let c = compare(&old, &new, &root(DEPLOYMENT));
        assert_eq!(fv1(&c.modified), json!({"f:spec": {"f:replicas": {}}}));
        assert_eq!(fv1(&c.removed), json!({"f:spec": {"f:paused": {}}}));
        assert_eq!(fv1(&c.added), json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}));
    }

    #[test]
    fn compare_of_a_create_does_not_mark_struct_fields_but_marks_items() {
        let new = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let c = compare(&json!({}), &new, &root(DEPLOYMENT));
        assert_eq!(
            fv1(&c.added),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                ".": {}, "f:image": {}, "f:name": {}
            }}}}}})
        );
        let cm = compare(&json!({}), &json!({"data": {"k": "v"}}), &root(Some("io.k8s.api.core.v1.ConfigMap")));
        assert_eq!(fv1(&cm.added), json!({"f:data": {".": {}, "f:k": {}}}));
    }

    #[test]
    fn merge_keeps_live_fields_and_merges_list_items_by_key() {
        let live = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "terminationMessagePath": "/dev/x"},
            {"name": "b", "image": "b:1"}
        ]}}}});
        let config = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "c", "image": "c:1"}, {"name": "a", "image": "a:2"}
        ]}}}});
        let out = merge(&live, &config, &root(DEPLOYMENT));
        assert_eq!(
            out,
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "c", "image": "c:1"},
                {"name": "a", "image": "a:2", "terminationMessagePath": "/dev/x"},
                {"name": "b", "image": "b:1"}
            ]}}}})
        );
        // Atomic lists and selectors are replaced whole.
        let live = json!({"spec": {"selector": {"matchLabels": {"a": "1", "b": "2"}}, "template": {"spec": {"tolerations": [{"key": "x"}]}}}});
        let config = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "template": {"spec": {"tolerations": [{"key": "y"}]}}}});
        assert_eq!(merge(&live, &config, &root(DEPLOYMENT)), config);
    }

    #[test]
    fn remove_and_extract_follow_the_set() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}
        ]}}}});
        let t = root(DEPLOYMENT);
        let set = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"b\"}": {}}}}}}))
        .unwrap_or_default();
        assert_eq!(
            remove(&obj, &set, &t),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}})
        );
        assert_eq!(
            extract(&obj, &set, &t),
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"template": {"spec": {"containers": [
                {"name": "b", "image": "b"}
            ]}}}})
        );
        let only_image = FieldSet::from_paths(&[Path::fields(&["spec", "template"])]);
        assert_eq!(extract(&obj, &only_image, &t), json!({"spec": obj["spec"].clone()}));
    }
}
