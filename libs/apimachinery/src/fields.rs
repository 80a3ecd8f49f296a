//! Field selectors, as upstream's `k8s.io/apimachinery/pkg/fields`: `f=v`, `f==v`, `f!=v`
//! joined by `,` (AND), with `\,` `\=` `\\` escapes in values. Which fields a kind supports is
//! the kind's business: the server lists [`FieldSelector::requirements`] and rejects the rest
//! with [`FieldSelectorError::UnsupportedField`] (400 `field label not supported: <name>`),
//! then matches with values read by [`object_field`] (or computed by the kind's strategy).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Why a field selector could not be parsed or used. Messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term with no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Syntax { selector: String, term: String },
    /// A backslash not followed by `\`, `,` or `=` (or at the end of a value).
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscapeSequence(String),
    /// A bare `,` or `=` inside a value. Upstream prints the character's code point as a
    /// number (`61` for `=`), and so do we.
    #[error("invalid field selector: unescaped character in value: {}", *.0 as u32)]
    UnescapedRune(char),
    /// A field this kind cannot select on.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// The operator of one term. `==` parses to `Equals`, as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field op value` term, value unescaped (upstream `fields.Requirement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

impl FieldRequirement {
    /// A missing field reads as `""`, as in upstream's field sets.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let actual = actual.unwrap_or("");
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_value(&self.value))
    }
}

/// A field selector: the AND of its terms; no terms selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Selects everything (what `""` parses to).
    pub fn everything() -> Self {
        Self::default()
    }

    /// `field=value` (upstream `OneTermEqualSelector`).
    pub fn one_term_equal(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            requirements: vec![FieldRequirement {
                field: field.into(),
                operator: FieldOperator::Equals,
                value: value.into(),
            }],
        }
    }

    /// upstream `fields.ParseSelector`: split on unescaped `,`, skip empty terms, sort the
    /// terms, split each at the first `!=`, `==` or `=` (the field is taken literally, the
    /// value unescaped). No whitespace is trimmed.
    pub fn parse(selector: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::with_capacity(terms.len());
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(FieldSelectorError::Syntax { selector: selector.to_string(), term: term.to_string() });
            };
            let value = unescape_value(raw)?;
            requirements.push(FieldRequirement { field: field.to_string(), operator, value });
        }
        Ok(Self { requirements })
    }

    /// The terms, in parse order (sorted), for checking the field names a kind supports.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when the selector restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when every term holds; `get` returns a field's value, `None` reading as `""`.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| r.matches(get(&r.field).as_deref()))
    }

    /// The value an `=` term demands for `field` (upstream `RequiresExactMatch`), e.g. to
    /// serve `metadata.name=x` with a single get.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Rejects the first field not in `supported` with `field label not supported: <name>`.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), FieldSelectorError> {
        match self.requirements.iter().find(|r| !supported.contains(&r.field.as_str())) {
            Some(r) => Err(FieldSelectorError::UnsupportedField(r.field.clone())),
            None => Ok(()),
        }
    }

    /// upstream `Transform`: rewrite every (field, value), e.g. a kind's field-label
    /// conversion; a term rewritten to an empty field and value is dropped.
    pub fn transform<E>(self, mut f: impl FnMut(&str, &str) -> Result<(String, String), E>) -> Result<Self, E> {
        let mut requirements = Vec::with_capacity(self.requirements.len());
        for r in self.requirements {
            let (field, value) = f(&r.field, &r.value)?;
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement { field, operator: r.operator, value });
        }
        Ok(Self { requirements })
    }
}

impl FromStr for FieldSelector {
    type Err = FieldSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// upstream `String()`: terms joined by `,`, values escaped, `==` shown as `=`.
impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// upstream `EscapeValue`: `\` → `\\`, `,` → `\,`, `=` → `\=`.
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// upstream `UnescapeValue`: undo [`escape_value`]; other escapes and bare `,`/`=` are errors.
pub fn unescape_value(s: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldSelectorError::InvalidEscapeSequence(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(FieldSelectorError::UnescapedRune(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(FieldSelectorError::InvalidEscapeSequence("\\".to_string()));
    }
    Ok(out)
}

/// Splits on commas not preceded by a backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits at the first operator; at one position `!=` wins over `==`, which wins over `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in
            [("!=", FieldOperator::NotEquals), ("==", FieldOperator::Equals), ("=", FieldOperator::Equals)]
        {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Reads a dotted path (`metadata.name`, `spec.nodeName`, `status.phase`,
/// `involvedObject.kind`) from an object as a field-selector value: strings as they are,
/// numbers and booleans in their JSON spelling, and `""` when the field (or any object on the
/// way) is absent or null, like upstream's field sets, which hold every supported field.
/// `None` when the path ends at, or runs through, an array, object or scalar that is not
/// the field itself.
pub fn object_field(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        match cur {
            Value::Object(m) => match m.get(part) {
                Some(v) => cur = v,
                None => return Some(String::new()),
            },
            Value::Null => return Some(String::new()),
            _ => return None,
        }
    }
    match cur {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(field: &str, operator: FieldOperator, value: &str) -> FieldRequirement {
        FieldRequirement { field: field.to_string(), operator, value: value.to_string() }
    }

    #[test]
    fn field_selector_parse_table() {
        use FieldOperator::{Equals, NotEquals};
        let cases = [
            ("", vec![]),
            (",", vec![]),
            ("metadata.name=x", vec![req("metadata.name", Equals, "x")]),
            ("metadata.name==x", vec![req("metadata.name", Equals, "x")]),
            ("status.phase!=Failed", vec![req("status.phase", NotEquals, "Failed")]),
            ("spec.nodeName=", vec![req("spec.nodeName", Equals, "")]),
            ("b=1,,a=2", vec![req("a", Equals, "2"), req("b", Equals, "1")]),
            (" a = b", vec![req(" a ", Equals, " b")]),
        ];
        for (input, want) in cases {
            let sel = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.requirements(), want.as_slice(), "{input:?}");
            assert_eq!(sel.is_empty(), want.is_empty(), "{input:?}");
        }
    }

    #[test]
    fn field_selector_string_form_sorted_and_escaped() {
        let cases = [
            ("metadata.name==x", "metadata.name=x"),
            ("b=1,a!=2", "a!=2,b=1"),
            (r"a=x\,y\=z\\w", r"a=x\,y\=z\\w"),
            ("", ""),
        ];
        for (input, want) in cases {
            let sel: FieldSelector = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.to_string(), want, "{input:?}");
            assert_eq!(FieldSelector::parse(&sel.to_string()).expect("canonical form parses"), sel);
        }
    }

    #[test]
    fn field_selector_escaped_comma() {
        let sel = FieldSelector::parse(r"involvedObject.name=a\,b,involvedObject.kind=Pod").expect("parses");
        assert_eq!(
            sel.requirements(),
            &[
                req("involvedObject.kind", FieldOperator::Equals, "Pod"),
                req("involvedObject.name", FieldOperator::Equals, "a,b")
            ]
        );
    }

    #[test]
    fn field_selector_escaped_equals_and_backslash() {
        let sel = FieldSelector::parse(r"a=x\=y\\z").expect("parses");
        assert_eq!(sel.requirements(), &[req("a", FieldOperator::Equals, r"x=y\z")]);
        assert_eq!(escape_value(r"x=y\z,"), r"x\=y\\z\,");
        assert_eq!(unescape_value(r"x\=y\\z\,").expect("valid"), r"x=y\z,");
    }

    #[test]
    fn field_selector_errors_use_upstream_wording() {
        let cases = [
            ("foo", "invalid selector: 'foo'; can't understand 'foo'"),
            ("a=b,foo", "invalid selector: 'a=b,foo'; can't understand 'foo'"),
            (r"a=\x", r"invalid field selector: invalid escape sequence: \x"),
            (r"a=b\", r"invalid field selector: invalid escape sequence: \"),
            ("a=b=c", "invalid field selector: unescaped character in value: 61"),
            ("a!==b", "invalid field selector: unescaped character in value: 61"),
        ];
        for (input, want) in cases {
            let err = FieldSelector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn field_selector_missing_field_reads_as_empty() {
        let cases = [
            ("spec.nodeName=", true),
            ("spec.nodeName=n1", false),
            ("status.phase!=Failed", true),
            ("status.phase!=", false),
        ];
        for (input, want) in cases {
            let sel = FieldSelector::parse(input).expect(input);
            assert_eq!(sel.matches(|_| None), want, "{input:?}");
        }
    }

    #[test]
    fn field_selector_describe_node_pod_query() {
        // kubectl describe node: pods on the node that have not finished
        let sel =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed").expect("parses");
        let cases = [
            (json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}), true),
            (json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Failed"}}), false),
            (json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}}), false),
            (json!({"spec": {"nodeName": "n2"}, "status": {"phase": "Running"}}), false),
            (json!({"spec": {"nodeName": "n1"}}), true),
        ];
        for (pod, want) in cases {
            assert_eq!(sel.matches(|f| object_field(&pod, f)), want, "{pod}");
        }
    }

    #[test]
    fn field_selector_events_for_object() {
        let sel = FieldSelector::parse(
            "involvedObject.uid=u1,involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Pod",
        )
        .expect("parses");
        let event = json!({"involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u1"}});
        assert!(sel.matches(|f| object_field(&event, f)));
        let other = json!({"involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "uid": "u2"}});
        assert!(!sel.matches(|f| object_field(&other, f)));
        // `involvedObject.namespace=` (empty) selects cluster-scoped objects' events
        let node_events = FieldSelector::parse("involvedObject.namespace=,involvedObject.uid=n1").expect("parses");
        assert!(node_events.matches(|f| object_field(&json!({"involvedObject": {"uid": "n1"}}), f)));
    }

    #[test]
    fn field_selector_unsupported_field_rejected() {
        let sel = FieldSelector::parse("metadata.name=x,spec.foo=y").expect("parses");
        let fields: Vec<&str> = sel.requirements().iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "spec.foo"]);
        let err = sel.check_supported(&["metadata.name", "metadata.namespace"]).expect_err("spec.foo");
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
        assert!(sel.check_supported(&["metadata.name", "spec.foo"]).is_ok());
    }

    #[test]
    fn field_selector_requires_exact_match() {
        let sel = FieldSelector::parse("metadata.name=x,status.phase!=Failed").expect("parses");
        assert_eq!(sel.requires_exact_match("metadata.name"), Some("x"));
        assert_eq!(sel.requires_exact_match("status.phase"), None);
        assert_eq!(FieldSelector::one_term_equal("metadata.name", "a,b").to_string(), r"metadata.name=a\,b");
    }

    #[test]
    fn field_selector_transform_drops_emptied_terms() {
        let sel = FieldSelector::parse("a=1,b=2").expect("parses");
        let out = sel
            .transform(|f, v| -> Result<_, FieldSelectorError> {
                Ok(if f == "a" { (String::new(), String::new()) } else { (format!("x.{f}"), v.to_string()) })
            })
            .expect("no error");
        assert_eq!(out.to_string(), "x.b=2");
        let err = FieldSelector::parse("spec.foo=1")
            .expect("parses")
            .transform(|f, _| Err::<(String, String), _>(FieldSelectorError::UnsupportedField(f.to_string())))
            .expect_err("rejected");
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
    }

    #[test]
    fn object_field_reads_dotted_paths() {
        let obj = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": null, "unschedulable": true, "replicas": 3, "containers": [{"name": "c"}]},
            "status": {"phase": "Running"},
            "reason": "Started",
        });
        let cases = [
            ("metadata.name", Some("web")),
            ("metadata.namespace", Some("default")),
            ("status.phase", Some("Running")),
            ("reason", Some("Started")),
            ("spec.nodeName", Some("")),
            ("spec.schedulerName", Some("")),
            ("involvedObject.kind", Some("")),
            ("spec.unschedulable", Some("true")),
            ("spec.replicas", Some("3")),
            ("spec.containers", None),
            ("spec", None),
            ("reason.x", None),
        ];
        for (path, want) in cases {
            assert_eq!(object_field(&obj, path).as_deref(), want, "{path}");
        }
    }
}
