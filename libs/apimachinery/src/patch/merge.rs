//! RFC 7386 JSON merge patch (`application/merge-patch+json`): objects merge recursively, `null`
//! deletes a key, anything else (arrays included) replaces the target value whole. This is also
//! what a strategic merge patch degrades to for kinds without patch metadata.

use serde_json::{Map, Value};

/// Applies `patch` to `doc` and returns the result. Every JSON value is a valid merge patch, so
/// this cannot fail.
pub fn apply(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    merge_into(&mut out, patch);
    out
}

fn merge_into(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.shift_remove(key);
            } else {
                merge_into(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_cases() {
        // (name, target, patch, result): the examples of RFC 7386 appendix A plus ours.
        let cases = [
            ("replace_scalar", json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            ("add_key", json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            ("null_deletes_key", json!({"a": "b"}), json!({"a": null}), json!({})),
            ("null_deletes_only_that_key", json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            ("array_replaces_scalar", json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            ("scalar_replaces_array", json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                "nested_merge_and_delete",
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            ("arrays_replaced_whole", json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            ("non_object_patch_replaces", json!({"a": "foo"}), json!(["c"]), json!(["c"])),
            ("null_patch_yields_null", json!({"a": "foo"}), json!(null), json!(null)),
            ("object_patch_on_scalar", json!("foo"), json!({"a": 1}), json!({"a": 1})),
            (
                "nulls_dropped_from_new_objects",
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
            ("nulls_inside_arrays_kept", json!({"e": null}), json!({"a": [null]}), json!({"e": null, "a": [null]})),
        ];
        for (name, target, patch, want) in cases {
            assert_eq!(apply(&target, &patch), want, "case {name}");
        }
    }

    #[test]
    fn merge_patch_null_deletes_key() {
        // kubectl label pod x k- sends exactly this.
        let pod = json!({"metadata": {"name": "x", "labels": {"k": "v", "app": "web"}}});
        let patch = json!({"metadata": {"labels": {"k": null}}});
        assert_eq!(apply(&pod, &patch), json!({"metadata": {"name": "x", "labels": {"app": "web"}}}));
    }

    #[test]
    fn merge_patch_keeps_key_order() {
        let doc = json!({"a": 1, "b": 2, "c": 3});
        let out = apply(&doc, &json!({"b": null, "d": 4, "a": 5}));
        let keys: Vec<&str> = out.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys, ["a", "c", "d"]);
    }

    #[test]
    fn merge_patch_scale_replicas() {
        // kubectl scale sends a merge patch to the scale subresource.
        let scale = json!({"spec": {"replicas": 3}, "status": {"replicas": 3}});
        assert_eq!(
            apply(&scale, &json!({"spec": {"replicas": 5}})),
            json!({"spec": {"replicas": 5}, "status": {"replicas": 3}})
        );
    }
}
