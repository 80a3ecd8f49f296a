//! RFC 6902 JSON patch (`application/json-patch+json`): an ordered list of `add`, `remove`,
//! `replace`, `move`, `copy` and `test` operations addressed by RFC 6901 JSON pointers.
//! Application is atomic: if any operation fails the document is left as it was.
//!
//! Error messages follow the wording of the JSON patch library the upstream API server uses
//! (evanphx/json-patch), e.g. `testing value /x failed: test failed`, because kubectl prints
//! them verbatim. Like that library, negative array indices count from the end
//! (`/items/-1` is the last element), and testing a missing key against `null` succeeds.
//! Unlike its v4 line, `replace` of a missing key fails, as RFC 6902 requires.

use serde_json::Value;

use super::PatchError;

/// Applies the JSON patch `patch` (a JSON array of operations) to `doc`. On error `doc` is
/// unchanged.
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::bad_patch(format!(
            "json patch must be a list of operations, got {}",
            kind_name(patch)
        )));
    };
    let mut work = doc.clone();
    for op in ops {
        apply_op(&mut work, op)?;
    }
    *doc = work;
    Ok(())
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Reads a string member (`path`, `from`) of an operation.
fn member<'a>(op: &'a serde_json::Map<String, Value>, kind: &str, name: &str) -> Result<&'a str, PatchError> {
    match op.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => {
            Err(PatchError::bad_patch(format!("{kind} operation failed to decode {name}: {name} must be a string")))
        }
        None => Err(PatchError::bad_patch(format!(
            "{kind} operation failed to decode {name}: operation missing {name} field: missing value"
        ))),
    }
}

fn value_member<'a>(op: &'a serde_json::Map<String, Value>, kind: &str) -> Result<&'a Value, PatchError> {
    op.get("value").ok_or_else(|| {
        PatchError::bad_patch(format!(
            "{kind} operation failed to decode 'value': operation, missing value field: missing value"
        ))
    })
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), PatchError> {
    let Value::Object(op) = op else {
        return Err(PatchError::bad_patch(format!("json patch operation must be an object, got {}", kind_name(op))));
    };
    let kind = match op.get("op") {
        Some(Value::String(s)) => s.as_str(),
        _ => "unknown",
    };
    match kind {
        "add" => {
            let path = member(op, kind, "path")?;
            let value = value_member(op, kind)?.clone();
            add(doc, path, value)
        }
        "remove" => {
            let path = member(op, kind, "path")?;
            remove(doc, path).map(drop)
        }
        "replace" => {
            let path = member(op, kind, "path")?;
            let value = value_member(op, kind)?.clone();
            replace(doc, path, value)
        }
        "move" => {
            let from = member(op, kind, "from")?;
            let path = member(op, kind, "path")?;
            move_value(doc, from, path)
        }
        "copy" => {
            let from = member(op, kind, "from")?;
            let path = member(op, kind, "path")?;
            copy(doc, from, path)
        }
        "test" => {
            let path = member(op, kind, "path")?;
            let value = value_member(op, kind)?;
            test(doc, path, value)
        }
        other => Err(PatchError::bad_patch(format!("unexpected kind: {other}"))),
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens. `""` is the whole document.
fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError::bad_patch(format!(
            "invalid json pointer {path:?}: it must be empty or start with '/'"
        )));
    };
    rest.split('/').map(|token| unescape(token, path)).collect()
}

fn unescape(token: &str, path: &str) -> Result<String, PatchError> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(PatchError::bad_patch(format!(
                    "invalid json pointer {path:?}: '~' must be followed by '0' or '1'"
                )))
            }
        }
    }
    Ok(out)
}

/// The container that holds the last token of `tokens`, if every step to it exists and is an
/// object or an array.
fn parent_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let (_, walk) = tokens.split_last()?;
    let mut cur = doc;
    for token in walk {
        cur = match cur {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => {
                let idx = existing_index(token, items.len())?;
                items.get_mut(idx)?
            }
            _ => return None,
        };
    }
    matches!(cur, Value::Object(_) | Value::Array(_)).then_some(cur)
}

/// Like [`parent_mut`], read-only.
fn parent<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let (_, walk) = tokens.split_last()?;
    get(doc, walk).filter(|v| matches!(v, Value::Object(_) | Value::Array(_)))
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(existing_index(token, items.len())?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// An index into an array of `len` elements that must already exist. Negative indices count
/// from the end, as in evanphx/json-patch.
fn existing_index(token: &str, len: usize) -> Option<usize> {
    let idx: i64 = token.parse().ok()?;
    let len = i64::try_from(len).ok()?;
    let idx = if idx < 0 { idx + len } else { idx };
    (0..len).contains(&idx).then(|| usize::try_from(idx).ok()).flatten()
}

fn invalid_index(token: &str) -> String {
    format!("unable to access invalid index: {token}: invalid index referenced")
}

/// Inserts `value` at `key` of `container` (the `add` semantics).
fn insert(container: &mut Value, key: &str, value: Value) -> Result<(), String> {
    match container {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
            Ok(())
        }
        Value::Array(items) => {
            if key == "-" {
                items.push(value);
                return Ok(());
            }
            let idx: i64 = key.parse().map_err(|_| format!("value was not a proper array index: '{key}'"))?;
            // Inserting may address one past the end.
            let len = i64::try_from(items.len() + 1).map_err(|_| invalid_index(key))?;
            let idx = if idx < 0 { idx + len } else { idx };
            if !(0..len).contains(&idx) {
                return Err(invalid_index(key));
            }
            let idx = usize::try_from(idx).map_err(|_| invalid_index(key))?;
            items.insert(idx, value);
            Ok(())
        }
        _ => Err("cannot add to a scalar".to_string()),
    }
}

fn take(container: &mut Value, key: &str) -> Result<Value, String> {
    match container {
        Value::Object(map) => {
            map.shift_remove(key).ok_or_else(|| format!("unable to remove nonexistent key: {key}: missing value"))
        }
        Value::Array(items) => {
            let idx = existing_index(key, items.len()).ok_or_else(|| invalid_index(key))?;
            Ok(items.remove(idx))
        }
        _ => Err(format!("unable to remove nonexistent key: {key}: missing value")),
    }
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    let Some(key) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, &tokens).ok_or_else(|| {
        PatchError::not_applicable(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    })?;
    insert(parent, key, value).map_err(|e| PatchError::not_applicable(format!("error in add for path: '{path}': {e}")))
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = parse_pointer(path)?;
    let missing = || {
        PatchError::not_applicable(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let key = tokens.last().ok_or_else(missing)?;
    let parent = parent_mut(doc, &tokens).ok_or_else(missing)?;
    take(parent, key).map_err(|e| PatchError::not_applicable(format!("error in remove for path: '{path}': {e}")))
}

fn replace(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    let Some(key) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, &tokens).ok_or_else(|| {
        PatchError::not_applicable(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ))
    })?;
    let slot = match parent {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => existing_index(key, items.len()).and_then(|idx| items.get_mut(idx)),
        _ => None,
    };
    let slot = slot.ok_or_else(|| {
        PatchError::not_applicable(format!(
            "replace operation does not apply: doc is missing key: {path}: missing value"
        ))
    })?;
    *slot = value;
    Ok(())
}

fn move_value(doc: &mut Value, from: &str, path: &str) -> Result<(), PatchError> {
    let from_tokens = parse_pointer(from)?;
    let Some(from_key) = from_tokens.last() else {
        return Err(PatchError::not_applicable(
            "unable to move entire document to another path: invalid state detected",
        ));
    };
    let parent = parent_mut(doc, &from_tokens).ok_or_else(|| {
        PatchError::not_applicable(format!(
            "move operation does not apply: doc is missing from path: {from}: missing value"
        ))
    })?;
    let value = take(parent, from_key)
        .map_err(|e| PatchError::not_applicable(format!("error in move for path: '{from_key}': {e}")))?;
    // With the value taken out first, moving a value into its own child finds no
    // destination, as RFC 6902 requires.
    let tokens = parse_pointer(path)?;
    let Some(key) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, &tokens).ok_or_else(|| {
        PatchError::not_applicable(format!(
            "move operation does not apply: doc is missing destination path: {path}: missing value"
        ))
    })?;
    insert(parent, key, value).map_err(|e| PatchError::not_applicable(format!("error in move for path: '{path}': {e}")))
}

fn copy(doc: &mut Value, from: &str, path: &str) -> Result<(), PatchError> {
    let from_tokens = parse_pointer(from)?;
    let value = if from_tokens.is_empty() {
        doc.clone()
    } else {
        if parent(doc, &from_tokens).is_none() {
            return Err(PatchError::not_applicable(format!(
                "copy operation does not apply: doc is missing from path: \"{from}\": missing value"
            )));
        }
        get(doc, &from_tokens).cloned().ok_or_else(|| {
            PatchError::not_applicable(format!(
                "error in copy for from: '{from}': unable to get nonexistent key: {}: missing value",
                from_tokens.last().map(String::as_str).unwrap_or_default()
            ))
        })?
    };
    let tokens = parse_pointer(path)?;
    let Some(key) = tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let parent = parent_mut(doc, &tokens).ok_or_else(|| {
        PatchError::not_applicable(format!(
            "copy operation does not apply: doc is missing destination path: {path}: missing value"
        ))
    })?;
    insert(parent, key, value)
        .map_err(|e| PatchError::not_applicable(format!("error while adding value during copy: {e}")))
}

fn test(doc: &Value, path: &str, want: &Value) -> Result<(), PatchError> {
    let tokens = parse_pointer(path)?;
    let failed = || PatchError::not_applicable(format!("testing value {path} failed: test failed"));
    if tokens.is_empty() {
        return if doc == want { Ok(()) } else { Err(failed()) };
    }
    if parent(doc, &tokens).is_none() {
        return Err(PatchError::not_applicable(format!(
            "test operation does not apply: is missing path: {path}: missing value"
        )));
    }
    match get(doc, &tokens) {
        Some(have) if have == want => Ok(()),
        // upstream: a missing key tests equal to null.
        None if want.is_null() => Ok(()),
        _ => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(doc: Value, patch: Value) -> Result<Value, PatchError> {
        let mut doc = doc;
        apply(&mut doc, &patch).map(|()| doc)
    }

    #[test]
    fn json_patch_operations_apply() {
        // (name, doc, patch, result)
        let cases = [
            (
                "add_object_member",
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                json!({"foo": "bar", "baz": "qux"}),
            ),
            (
                "add_replaces_existing_member",
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/foo", "value": 1}]),
                json!({"foo": 1}),
            ),
            (
                "add_array_element_inserts",
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                json!({"foo": ["bar", "qux", "baz"]}),
            ),
            (
                "add_dash_appends",
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc"]}]),
                json!({"foo": ["bar", ["abc"]]}),
            ),
            (
                "add_at_end_index",
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "x"}]),
                json!({"foo": ["bar", "x"]}),
            ),
            (
                "add_root_replaces_document",
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "", "value": {"a": 1}}]),
                json!({"a": 1}),
            ),
            (
                "remove_member",
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                json!({"foo": "bar"}),
            ),
            (
                "remove_array_element",
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                json!({"foo": ["bar", "baz"]}),
            ),
            (
                "remove_negative_index_counts_from_end",
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/-1"}]),
                json!({"foo": ["bar", "qux"]}),
            ),
            (
                "replace_member",
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                json!({"baz": "boo", "foo": "bar"}),
            ),
            (
                "move_member",
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
            ),
            (
                "move_array_element",
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                json!({"foo": ["all", "cows", "eat", "grass"]}),
            ),
            (
                "copy_member",
                json!({"foo": {"bar": 1}}),
                json!([{"op": "copy", "from": "/foo", "path": "/baz"}]),
                json!({"foo": {"bar": 1}, "baz": {"bar": 1}}),
            ),
            (
                "test_then_replace",
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2},
                    {"op": "replace", "path": "/baz", "value": "x"}
                ]),
                json!({"baz": "x", "foo": ["a", 2, "c"]}),
            ),
            (
                "test_missing_key_equals_null",
                json!({"a": 1}),
                json!([{"op": "test", "path": "/b", "value": null}]),
                json!({"a": 1}),
            ),
            (
                "pointer_escapes",
                json!({"metadata": {"labels": {"app.kubernetes.io/name": "x", "a~b": "y"}}}),
                json!([
                    {"op": "replace", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "z"},
                    {"op": "remove", "path": "/metadata/labels/a~0b"}
                ]),
                json!({"metadata": {"labels": {"app.kubernetes.io/name": "z"}}}),
            ),
            ("empty_patch_is_noop", json!({"a": 1}), json!([]), json!({"a": 1})),
        ];
        for (name, doc, patch, want) in cases {
            assert_eq!(run(doc, patch), Ok(want), "case {name}");
        }
    }

    #[test]
    fn json_patch_errors_read_like_upstream() {
        // (name, doc, patch, expected error)
        let cases = [
            (
                "replace_missing_key",
                json!({"spec": {}}),
                json!([{"op": "replace", "path": "/spec/foo", "value": 1}]),
                PatchError::NotApplicable(
                    "replace operation does not apply: doc is missing key: /spec/foo: missing value".into(),
                ),
            ),
            (
                "replace_missing_parent",
                json!({}),
                json!([{"op": "replace", "path": "/spec/foo", "value": 1}]),
                PatchError::NotApplicable(
                    "replace operation does not apply: doc is missing path: /spec/foo: missing value".into(),
                ),
            ),
            (
                "add_missing_parent",
                json!({}),
                json!([{"op": "add", "path": "/a/b", "value": 1}]),
                PatchError::NotApplicable(
                    "add operation does not apply: doc is missing path: \"/a/b\": missing value".into(),
                ),
            ),
            (
                "add_index_out_of_range",
                json!({"a": [1]}),
                json!([{"op": "add", "path": "/a/5", "value": 1}]),
                PatchError::NotApplicable(
                    "error in add for path: '/a/5': unable to access invalid index: 5: invalid index referenced".into(),
                ),
            ),
            (
                "remove_missing_key",
                json!({"a": {}}),
                json!([{"op": "remove", "path": "/a/b"}]),
                PatchError::NotApplicable(
                    "error in remove for path: '/a/b': unable to remove nonexistent key: b: missing value".into(),
                ),
            ),
            (
                "test_fails",
                json!({"x": 1}),
                json!([{"op": "test", "path": "/x", "value": 2}]),
                PatchError::NotApplicable("testing value /x failed: test failed".into()),
            ),
            (
                "move_into_own_child",
                json!({"a": {"b": {}}}),
                json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
                PatchError::NotApplicable(
                    "move operation does not apply: doc is missing destination path: /a/b/c: missing value".into(),
                ),
            ),
            (
                "unknown_op",
                json!({}),
                json!([{"op": "frobnicate", "path": "/a"}]),
                PatchError::BadPatch("unexpected kind: frobnicate".into()),
            ),
            (
                "missing_path",
                json!({}),
                json!([{"op": "add", "value": 1}]),
                PatchError::BadPatch(
                    "add operation failed to decode path: operation missing path field: missing value".into(),
                ),
            ),
            (
                "patch_not_a_list",
                json!({}),
                json!({"op": "add"}),
                PatchError::BadPatch("json patch must be a list of operations, got an object".into()),
            ),
            (
                "bad_pointer",
                json!({}),
                json!([{"op": "add", "path": "a", "value": 1}]),
                PatchError::BadPatch("invalid json pointer \"a\": it must be empty or start with '/'".into()),
            ),
        ];
        for (name, doc, patch, want) in cases {
            assert_eq!(run(doc, patch), Err(want), "case {name}");
        }
    }

    #[test]
    fn json_patch_test_op_fails_leaves_doc_unchanged() {
        let original = json!({"metadata": {"resourceVersion": "5"}, "spec": {"replicas": 1}});
        let mut doc = original.clone();
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/paused", "value": true},
            {"op": "test", "path": "/metadata/resourceVersion", "value": "4"}
        ]);
        let err = apply(&mut doc, &patch);
        assert_eq!(
            err,
            Err(PatchError::NotApplicable("testing value /metadata/resourceVersion failed: test failed".into()))
        );
        assert_eq!(doc, original);
    }

    #[test]
    fn json_patch_rollout_undo_shape() {
        // kubectl rollout undo (deployment) replaces the template and the annotations.
        let deploy = json!({
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:1.26"}]}}}
        });
        let patch = json!([
            {"op": "replace", "path": "/spec/template", "value": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}},
            {"op": "replace", "path": "/metadata/annotations", "value": {"deployment.kubernetes.io/revision": "1"}}
        ]);
        let out = run(deploy, patch);
        assert_eq!(
            out,
            Ok(json!({
                "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "1"}},
                "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "main", "image": "nginx:1.25"}]}}}
            }))
        );
    }

    #[test]
    fn json_patch_csa_to_ssa_upgrade_shape() {
        // kubectl apply --server-side on a client-side-applied object (contract §6.4).
        let obj =
            json!({"metadata": {"resourceVersion": "7", "managedFields": [{"manager": "kubectl-client-side-apply"}]}});
        let patch = json!([
            {"op": "replace", "path": "/metadata/managedFields", "value": [{"manager": "kubectl", "operation": "Apply"}]},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
        ]);
        assert_eq!(
            run(obj, patch),
            Ok(
                json!({"metadata": {"resourceVersion": "7", "managedFields": [{"manager": "kubectl", "operation": "Apply"}]}})
            )
        );
    }
}
