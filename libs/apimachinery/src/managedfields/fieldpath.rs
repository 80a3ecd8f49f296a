//! Field paths and sets of them, and their `FieldsV1` wire form.
//!
//! upstream: sigs.k8s.io/structured-merge-diff `fieldpath`. A path is a list of elements: a
//! field name (`f:replicas`), the key fields of a list-map item (`k:{"name":"nginx"}`), the
//! value of a set item (`v:"x"`) or a list index (`i:0`). A [`FieldSet`] is a tree: every node
//! may be a *member* (the path itself is in the set) and may have children. In `FieldsV1` a node
//! that is a member and has children carries a `"."` key.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// Why a `FieldsV1` document or a managedFields entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldsError {
    #[error("fieldsV1 must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("invalid path element {0:?}: {1}")]
    BadElement(String, String),
    #[error("invalid managed fields entry {0}: {1}")]
    BadEntry(usize, String),
}

/// One step of a path.
///
/// The order (`Field` < `Key` < `Value` < `Index`, then by content) is upstream's, so sets
/// serialize and iterate in the same order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object, or a key of a map.
    Field(String),
    /// A list-map item, as the compact JSON of its key fields sorted by name.
    Key(String),
    /// A set item, as its compact JSON (object keys sorted).
    Value(String),
    /// An item of a list addressed by position.
    Index(usize),
}

/// `v` with every object's keys sorted, recursively: the form keys and values are compared in.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), canonical(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

impl PathElement {
    pub fn field(name: impl Into<String>) -> Self {
        PathElement::Field(name.into())
    }

    /// A list-map item element from its key fields (in any order).
    pub fn key(fields: &[(&str, &Value)]) -> Self {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert((*k).to_string(), (*v).clone());
        }
        PathElement::Key(canonical(&Value::Object(m)).to_string())
    }

    /// A set item element.
    pub fn value(v: &Value) -> Self {
        PathElement::Value(canonical(v).to_string())
    }

    /// Parses one `FieldsV1` key (`f:`, `k:`, `v:` or `i:` prefixed).
    pub fn parse(s: &str) -> Result<Self, FieldsError> {
        let bad = |why: &str| FieldsError::BadElement(s.to_string(), why.to_string());
        let (prefix, rest) = s.split_at_checked(2).ok_or_else(|| bad("too short"))?;
        match prefix {
            "f:" => Ok(PathElement::Field(rest.to_string())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| bad(&e.to_string()))?;
                if !v.is_object() {
                    return Err(bad("key must be a JSON object"));
                }
                Ok(PathElement::Key(canonical(&v).to_string()))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).map_err(|e| bad(&e.to_string()))?;
                Ok(PathElement::value(&v))
            }
            "i:" => rest.parse().map(PathElement::Index).map_err(|_| bad("index must be a number")),
            _ => Err(bad("unknown prefix")),
        }
    }

    /// The `FieldsV1` key of this element.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }
}

/// upstream's path string: `.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(k) => match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(m)) => {
                    let parts: Vec<String> = m.iter().map(|(name, v)| format!("{name}={v}")).collect();
                    write!(f, "[{}]", parts.join(","))
                }
                _ => write!(f, "[{k}]"),
            },
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the root of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// The path of the field names in `names`, e.g. `Path::fields(&["spec", "replicas"])`.
    pub fn fields(names: &[&str]) -> Self {
        Path(names.iter().map(|n| PathElement::field(*n)).collect())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

impl Node {
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }
}

/// A set of paths, stored as a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    nodes: BTreeMap<PathElement, Node>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of the given paths.
    pub fn from_paths(paths: &[Path]) -> Self {
        let mut s = Self::new();
        for p in paths {
            s.insert(&p.0);
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds `path`; the empty path (the object itself) is never a member.
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else { return };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        let Some((first, rest)) = path.split_first() else { return false };
        match self.nodes.get(first) {
            None => false,
            Some(n) if rest.is_empty() => n.member,
            Some(n) => n.children.has(rest),
        }
    }

    /// Whether the one-element path `pe` is a member.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.nodes.get(pe).is_some_and(|n| n.member)
    }

    /// The paths under `pe`, relative to it (upstream `WithPrefix`).
    pub fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.nodes.get(pe).map(|n| &n.children).filter(|c| !c.is_empty())
    }

    /// Number of member paths.
    pub fn len(&self) -> usize {
        self.nodes.values().map(|n| usize::from(n.member) + n.children.len()).sum()
    }

    /// Every member path, in upstream's order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for (pe, n) in &self.nodes {
            prefix.push(pe.clone());
            if n.member {
                out.push(Path(prefix.clone()));
            }
            n.children.collect(prefix, out);
            prefix.pop();
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        for (pe, n) in &other.nodes {
            let mine = out.nodes.entry(pe.clone()).or_default();
            mine.member |= n.member;
            mine.children = mine.children.union(&n.children);
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, n) in &self.nodes {
            let Some(o) = other.nodes.get(pe) else { continue };
            let node = Node { member: n.member && o.member, children: n.children.intersection(&o.children) };
            if !node.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, n) in &self.nodes {
            let node = match other.nodes.get(pe) {
                None => n.clone(),
                Some(o) => Node { member: n.member && !o.member, children: n.children.difference(&o.children) },
            };
            if !node.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// Removes every path that is in `other` or lies under a member of `other`.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, n) in &self.nodes {
            let node = match other.nodes.get(pe) {
                None => n.clone(),
                Some(o) if o.member => continue,
                Some(o) => Node { member: n.member, children: n.children.recursive_difference(&o.children) },
            };
            if !node.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// The set plus every ancestor that is reached through a field name, as a member.
    ///
    /// upstream: `EnsureNamedFieldsAreMembers`, which prune uses so that a field whose subtree
    /// nobody owns any more can be removed whole.
    pub(crate) fn with_field_ancestors(&self) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, n) in &self.nodes {
            let children = n.children.with_field_ancestors();
            let member = n.member || (matches!(pe, PathElement::Field(_)) && !children.is_empty());
            out.nodes.insert(pe.clone(), Node { member, children });
        }
        out
    }

    /// Reads a `FieldsV1` document.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldsError> {
        let Value::Object(m) = v else { return Err(FieldsError::NotAnObject(v.to_string())) };
        let mut out = FieldSet::new();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::parse(k)?;
            let Value::Object(cm) = child else { return Err(FieldsError::NotAnObject(child.to_string())) };
            let node =
                Node { member: cm.is_empty() || cm.contains_key("."), children: FieldSet::from_fields_v1(child)? };
            if !node.is_empty() {
                out.nodes.insert(pe, node);
            }
        }
        Ok(out)
    }

    /// The `FieldsV1` document of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (pe, n) in &self.nodes {
            let mut inner = Map::new();
            if n.member && !n.children.is_empty() {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            if let Value::Object(children) = n.children.to_fields_v1() {
                inner.extend(children);
            }
            m.insert(pe.to_fields_v1_key(), Value::Object(inner));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> PathElement {
        PathElement::field(n)
    }

    #[test]
    fn fields_v1_round_trips_upstream_documents() {
        let cases = [
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:replicas": {}}}),
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
            }}}}}),
            json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"kubernetes\"": {}}}}),
            json!({"f:items": {"i:0": {}}}),
            json!({}),
        ];
        for doc in cases {
            let set = FieldSet::from_fields_v1(&doc);
            assert!(set.is_ok(), "{doc}: {set:?}");
            let set = set.unwrap_or_default();
            assert_eq!(set.to_fields_v1(), doc);
        }
    }

    #[test]
    fn fields_v1_key_order_is_canonical() {
        let set = FieldSet::from_fields_v1(&json!({"f:ports": {"k:{\"protocol\":\"TCP\",\"containerPort\":80}": {}}}))
            .unwrap_or_default();
        assert_eq!(set.to_fields_v1(), json!({"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}));
    }

    #[test]
    fn fields_v1_rejects_bad_documents() {
        for bad in [json!([]), json!({"x:y": {}}), json!({"f:a": 1}), json!({"k:[1]": {}}), json!({"i:x": {}})] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_strings_match_upstream() {
        let p = Path(vec![
            f("spec"),
            f("containers"),
            PathElement::key(&[("name", &json!("nginx"))]),
            f("ports"),
            PathElement::key(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]),
        ]);
        assert_eq!(p.to_string(), r#".spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]"#);
        let p = Path(vec![f("metadata"), f("finalizers"), PathElement::value(&json!("x"))]);
        assert_eq!(p.to_string(), r#".metadata.finalizers[="x"]"#);
        assert_eq!(Path::fields(&["spec", "replicas"]).to_string(), ".spec.replicas");
    }

    #[test]
    fn set_operations() {
        let a = FieldSet::from_paths(&[Path::fields(&["a", "b"]), Path::fields(&["a", "c"]), Path::fields(&["d"])]);
        let b = FieldSet::from_paths(&[Path::fields(&["a", "c"]), Path::fields(&["e"])]);
        assert_eq!(a.union(&b).len(), 4);
        assert_eq!(a.intersection(&b).paths(), vec![Path::fields(&["a", "c"])]);
        assert_eq!(a.difference(&b).paths(), vec![Path::fields(&["a", "b"]), Path::fields(&["d"])]);
        let parent = FieldSet::from_paths(&[Path::fields(&["a"])]);
        assert_eq!(a.recursive_difference(&parent).paths(), vec![Path::fields(&["d"])]);
        assert_eq!(a.difference(&parent), a, "difference is exact, not recursive");
        assert!(a.has(&[f("a"), f("b")]) && !a.has(&[f("a")]));
        let expanded = a.with_field_ancestors();
        assert!(expanded.has(&[f("a")]));
    }
}
