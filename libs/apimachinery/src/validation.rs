//! Name, label and annotation validation with upstream's messages, and the field error type
//! every validator returns (it becomes `details.causes` of a 422 `Invalid` Status).

use std::fmt;

use serde_json::{Map, Value};

/// Upstream's `field.ErrorType`: the `reason` of a Status cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
    TypeInvalid,
    Internal,
}

impl FieldErrorKind {
    /// The cause `reason` upstream sends (`FieldValueRequired`, …).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::Internal => "InternalError",
        }
    }
}

/// One invalid field. `message()` renders it as upstream does, e.g.
/// `Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist of …`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// Path in upstream's notation: `metadata.name`, `spec.containers[0].image`,
    /// `metadata.labels[app]`.
    pub field: String,
    /// The offending value, rendered into the message for `Invalid`, `NotSupported`, …
    pub value: Option<serde_json::Value>,
    pub detail: String,
}

pub type FieldErrors = Vec<FieldError>;

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { kind: FieldErrorKind::Required, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn invalid(field: impl Into<String>, value: impl Into<serde_json::Value>, detail: impl Into<String>) -> Self {
        Self { kind: FieldErrorKind::Invalid, field: field.into(), value: Some(value.into()), detail: detail.into() }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { kind: FieldErrorKind::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn not_supported(field: impl Into<String>, value: impl Into<serde_json::Value>, supported: &[&str]) -> Self {
        let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {list}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        Self { kind: FieldErrorKind::Duplicate, field: field.into(), value: Some(value.into()), detail: String::new() }
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            value: None,
            detail: format!("must have at most {max} bytes"),
        }
    }

    /// The cause message without the field, as upstream's `ErrorBody`.
    pub fn message(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::Internal => "Internal error",
        };
        let mut s = head.to_string();
        if let Some(v) = &self.value {
            let rendered = match v {
                serde_json::Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            s.push_str(": ");
            s.push_str(&rendered);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

// ---------------------------------------------------------------------------------------------
// String formats (upstream `k8s.io/apimachinery/pkg/util/validation`). Each `is_*` returns the
// list of upstream messages describing what is wrong; an empty list means the value is valid.
// ---------------------------------------------------------------------------------------------

/// Longest DNS-1123 label (and DNS-1035 label).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest name part of a qualified name (label or annotation key).
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Total size of all annotation keys and values (upstream `TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: usize = 256 * 1024;
/// upstream `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// upstream `MaxLenError`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} bytes")
}

/// upstream `EmptyError`.
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

/// upstream `RegexError`: the message, the examples and the regex the value must match.
pub fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{re}')");
    }
    let examples = examples.iter().map(|e| format!("'{e}', ")).collect::<Vec<_>>().join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{re}')")
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` (`first_alpha`: the first byte must be `[a-z]`).
fn matches_dns_label(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    let lower_alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let first_ok = if first_alpha { first.is_ascii_lowercase() } else { lower_alnum(first) };
    first_ok && lower_alnum(last) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|part| matches_dns_label(part, false))
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn matches_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// upstream `IsDNS1123Label`: lowercase RFC 1123 label, at most 63 bytes.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns_label(value, false) {
        if matches_dns1123_subdomain(value) {
            // upstream: a valid subdomain that is not a label can only be wrong by its dots
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(DNS1123_LABEL_ERR_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// upstream `IsDNS1123Subdomain`: lowercase RFC 1123 subdomain, at most 253 bytes.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(DNS1123_SUBDOMAIN_ERR_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

/// upstream `IsDNS1035Label`: RFC 1035 label (starts with a letter), at most 63 bytes.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns_label(value, true) {
        errs.push(regex_error(DNS1035_LABEL_ERR_MSG, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    errs
}

/// upstream `IsQualifiedName`: a label or annotation key, `[prefix/]name` where the prefix is
/// a DNS-1123 subdomain and the name at most 63 bytes of `[-A-Za-z0-9_.]`.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(is_dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX_LENGTH)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// upstream `IsValidLabelValue`: empty, or at most 63 bytes of `[-A-Za-z0-9_.]` starting and
/// ending with an alphanumeric character.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errs.push(regex_error(LABEL_VALUE_ERR_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

/// upstream `IsValidPathSegmentName`: the name can be one segment of a URL path or etcd key.
pub fn is_valid_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    is_valid_path_segment_prefix(name)
}

/// upstream `IsValidPathSegmentPrefix`: as [`is_valid_path_segment_name`] without the exact
/// `.`/`..` check, since a generated suffix follows.
pub fn is_valid_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"].iter().filter(|c| name.contains(**c)).map(|c| format!("may not contain '{c}'")).collect()
}

/// How a kind's `metadata.name` is validated (upstream `ValidateNameFunc`).
#[derive(Debug, Clone, Copy)]
pub enum NameValidator {
    /// `NameIsDNSSubdomain`: most kinds (pods, deployments, configmaps, …).
    Dns1123Subdomain,
    /// `NameIsDNSLabel`: namespaces, …
    Dns1123Label,
    /// `NameIsDNS1035Label`: services, …
    Dns1035Label,
    /// `ValidatePathSegmentName`: RBAC roles and bindings, …: no `/` or `%`, not `.` or `..`.
    PathSegment,
    /// Anything else: `(name, is_generate_name_prefix) -> messages`.
    Custom(fn(&str, bool) -> Vec<String>),
}

impl NameValidator {
    /// Messages for `name`; `prefix` is true when it is a `generateName`, which may end in `-`.
    pub fn validate(&self, name: &str, prefix: bool) -> Vec<String> {
        let masked;
        let name = if prefix && !matches!(self, Self::PathSegment | Self::Custom(_)) {
            masked = mask_trailing_dash(name);
            masked.as_str()
        } else {
            name
        };
        match self {
            Self::Dns1123Subdomain => is_dns1123_subdomain(name),
            Self::Dns1123Label => is_dns1123_label(name),
            Self::Dns1035Label => is_dns1035_label(name),
            Self::PathSegment if prefix => is_valid_path_segment_prefix(name),
            Self::PathSegment => is_valid_path_segment_name(name),
            Self::Custom(f) => f(name, prefix),
        }
    }
}

/// upstream `maskTrailingDash`: a generateName may end in `-`; replace the last two bytes with
/// `a` so the DNS checks accept it (upstream's exact arithmetic, kept for identical messages).
fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(_) => {
            let cut = name.len().saturating_sub(2);
            let head = name.get(..cut).unwrap_or("");
            format!("{head}a")
        }
        None => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Labels, annotations, selectors (upstream `pkg/apis/meta/v1/validation`)
// ---------------------------------------------------------------------------------------------

fn type_invalid(field: &str, value: &Value, detail: &str) -> FieldError {
    FieldError {
        kind: FieldErrorKind::TypeInvalid,
        field: field.to_string(),
        value: Some(value.clone()),
        detail: detail.to_string(),
    }
}

/// upstream `ValidateLabelName`: one `Invalid` per message of [`is_qualified_name`].
pub fn validate_label_name(name: &str, field_path: &str) -> FieldErrors {
    is_qualified_name(name).into_iter().map(|m| FieldError::invalid(field_path, name, m)).collect()
}

/// upstream `ValidateLabels`: every key a qualified name and every value a valid label value.
/// Errors carry `field_path` itself (e.g. `metadata.labels`), as upstream does.
pub fn validate_labels(labels: &Map<String, Value>, field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (k, v) in labels {
        errs.extend(validate_label_name(k, field_path));
        match v {
            Value::String(v) => {
                errs.extend(is_valid_label_value(v).into_iter().map(|m| FieldError::invalid(field_path, v.as_str(), m)))
            }
            other => errs.push(type_invalid(&format!("{field_path}[{k}]"), other, "must be of type string")),
        }
    }
    errs
}

/// Labels given as any JSON value: absent/null is empty, a non-object is a type error.
fn validate_labels_value(labels: Option<&Value>, field_path: &str) -> FieldErrors {
    match labels {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => validate_labels(m, field_path),
        Some(other) => vec![type_invalid(field_path, other, "must be of type object")],
    }
}

/// upstream `ValidateAnnotations`: keys are qualified names once lowercased, and all keys and
/// values together are at most 256 KiB (`Too long: must have at most 262144 bytes`).
pub fn validate_annotations(annotations: &Map<String, Value>, field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        // upstream: the rule is QualifiedName except that case does not matter
        errs.extend(
            is_qualified_name(&k.to_lowercase()).into_iter().map(|m| FieldError::invalid(field_path, k.as_str(), m)),
        );
        total += k.len();
        match v {
            Value::String(s) => total += s.len(),
            other => errs.push(type_invalid(&format!("{field_path}[{k}]"), other, "must be of type string")),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES {
        errs.push(FieldError::too_long(field_path, TOTAL_ANNOTATION_SIZE_LIMIT_BYTES));
    }
    errs
}

fn validate_annotations_value(annotations: Option<&Value>, field_path: &str) -> FieldErrors {
    match annotations {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => validate_annotations(m, field_path),
        Some(other) => vec![type_invalid(field_path, other, "must be of type object")],
    }
}

/// upstream `ValidateLabelSelector` (with label values in expressions validated, as upstream
/// does for new objects): `matchLabels` as labels, each `matchExpressions[i]` with a valid
/// operator, values present for `In`/`NotIn` and absent for `Exists`/`DoesNotExist`, and a
/// qualified-name key. Absent/null selectors are valid here (kinds that require one check that).
pub fn validate_label_selector(selector: &Value, field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let sel = match selector {
        Value::Null => return errs,
        Value::Object(m) => m,
        other => return vec![type_invalid(field_path, other, "must be of type object")],
    };
    errs.extend(validate_labels_value(sel.get("matchLabels"), &format!("{field_path}.matchLabels")));
    let exprs = match sel.get("matchExpressions") {
        None | Some(Value::Null) => return errs,
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.push(type_invalid(&format!("{field_path}.matchExpressions"), other, "must be of type array"));
            return errs;
        }
    };
    for (i, expr) in exprs.iter().enumerate() {
        let path = format!("{field_path}.matchExpressions[{i}]");
        let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&Value> = match expr.get("values") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => Vec::new(),
        };
        match operator {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(format!("{path}.operator"), operator, "not a valid selector operator")),
        }
        let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
        errs.extend(validate_label_name(key, &format!("{path}.key")));
        for (j, v) in values.iter().enumerate() {
            let vpath = format!("{path}.values[{j}]");
            match v {
                Value::String(s) => errs.extend(
                    is_valid_label_value(s).into_iter().map(|m| FieldError::invalid(vpath.as_str(), s.as_str(), m)),
                ),
                other => errs.push(type_invalid(&vpath, other, "must be of type string")),
            }
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// ObjectMeta (upstream `k8s.io/apimachinery/pkg/api/validation/objectmeta.go`)
// ---------------------------------------------------------------------------------------------

fn str_field<'a>(meta: &'a Value, key: &str) -> &'a str {
    meta.get(key).and_then(Value::as_str).unwrap_or("")
}

/// upstream `schema.FromAPIVersionAndKind(...).Group/Version`: `v1` → ("", "v1"),
/// `apps/v1` → ("apps", "v1"); more than one `/` gives an empty group and version.
fn parse_group_version(api_version: &str) -> (&str, &str) {
    if api_version.is_empty() || api_version == "/" {
        return ("", "");
    }
    match api_version.matches('/').count() {
        0 => ("", api_version),
        1 => api_version.split_once('/').unwrap_or(("", "")),
        _ => ("", ""),
    }
}

/// upstream `ValidateOwnerReferences`: apiVersion (with a version), kind, name and uid present,
/// Events may not own anything, at most one reference with `controller: true`. Upstream reports
/// these on `metadata.ownerReferences.<field>`, without an index.
pub fn validate_owner_references(refs: &[Value], field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = str_field(r, "apiVersion");
        let kind = str_field(r, "kind");
        let name = str_field(r, "name");
        let (group, version) = parse_group_version(api_version);
        if version.is_empty() {
            errs.push(FieldError::invalid(
                format!("{field_path}.apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        if kind.is_empty() {
            errs.push(FieldError::invalid(format!("{field_path}.kind"), kind, "must not be empty"));
        }
        if name.is_empty() {
            errs.push(FieldError::invalid(format!("{field_path}.name"), name, "must not be empty"));
        }
        let uid = str_field(r, "uid");
        if uid.is_empty() {
            errs.push(FieldError::invalid(format!("{field_path}.uid"), uid, "must not be empty"));
        }
        // upstream BannedOwners: core/v1 Event
        if group.is_empty() && version == "v1" && kind == "Event" {
            errs.push(FieldError::invalid(field_path, r.clone(), "/v1, Kind=Event is disallowed from being an owner"));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{kind}/{name}");
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    field_path,
                    Value::Array(refs.to_vec()),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    ),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// upstream `ValidateFinalizers`: every finalizer a qualified name, and not both `orphan` and
/// `foregroundDeletion`. Errors are on `field_path` itself (no index), as upstream.
pub fn validate_finalizers(finalizers: &[Value], field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for f in finalizers {
        match f {
            Value::String(s) => {
                errs.extend(is_qualified_name(s).into_iter().map(|m| FieldError::invalid(field_path, s.as_str(), m)))
            }
            other => errs.push(type_invalid(field_path, other, "must be of type string")),
        }
    }
    let has = |name: &str| finalizers.iter().any(|f| f.as_str() == Some(name));
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            field_path,
            Value::Array(finalizers.to_vec()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// Go's `unicode.IsPrint`, close enough: no control characters and no whitespace but ' '.
fn is_print(c: char) -> bool {
    !(c.is_control() || (c.is_whitespace() && c != ' '))
}

/// upstream `ValidateManagedFields`: operation `Apply` or `Update`, fieldsType `FieldsV1`,
/// a printable manager of at most 128 bytes, a subresource of at most 256 bytes.
fn validate_managed_fields(entries: &[Value], field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (i, e) in entries.iter().enumerate() {
        let path = format!("{field_path}[{i}]");
        let operation = str_field(e, "operation");
        if operation != "Apply" && operation != "Update" {
            errs.push(FieldError::invalid(format!("{path}.operation"), operation, "must be `Apply` or `Update`"));
        }
        let fields_type = str_field(e, "fieldsType");
        if !fields_type.is_empty() && fields_type != "FieldsV1" {
            errs.push(FieldError::invalid(format!("{path}.fieldsType"), fields_type, "must be `FieldsV1`"));
        }
        let manager = str_field(e, "manager");
        if manager.len() > 128 {
            errs.push(FieldError::too_long(format!("{path}.manager"), 128));
        }
        for (pos, c) in manager.char_indices() {
            if !is_print(c) {
                errs.push(FieldError::invalid(
                    format!("{path}.manager"),
                    manager,
                    format!("invalid character U+{:04X} (at position {pos})", c as u32),
                ));
            }
        }
        if str_field(e, "subresource").len() > 256 {
            errs.push(FieldError::too_long(format!("{path}.subresource"), 256));
        }
    }
    errs
}

fn array_field<'a>(meta: &'a Value, key: &str, field_path: &str, errs: &mut FieldErrors) -> &'a [Value] {
    match meta.get(key) {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => &[],
        Some(other) => {
            errs.push(type_invalid(&format!("{field_path}.{key}"), other, "must be of type array"));
            &[]
        }
    }
}

/// The checks create and update share: labels, annotations, ownerReferences, managedFields.
fn validate_meta_maps(meta: &Value, field_path: &str, errs: &mut FieldErrors) {
    errs.extend(validate_labels_value(meta.get("labels"), &format!("{field_path}.labels")));
    errs.extend(validate_annotations_value(meta.get("annotations"), &format!("{field_path}.annotations")));
    let refs = array_field(meta, "ownerReferences", field_path, errs);
    errs.extend(validate_owner_references(refs, &format!("{field_path}.ownerReferences")));
}

/// upstream `ValidateObjectMeta` on create, for the `metadata` object of a new object:
/// generateName and name by `name_validator` (name is required unless a generateName is set,
/// i.e. when validating before name generation), namespace required (and a DNS-1123 label) for
/// namespaced kinds and forbidden for cluster-scoped ones, generation not negative, labels,
/// annotations, ownerReferences, finalizers, managedFields. Paths start with `metadata`.
pub fn validate_object_meta(meta: &Value, namespaced: bool, name_validator: NameValidator) -> FieldErrors {
    validate_object_meta_at(meta, namespaced, name_validator, "metadata")
}

/// [`validate_object_meta`] for metadata found at `field_path` (e.g. `spec.template.metadata`).
pub fn validate_object_meta_at(
    meta: &Value,
    namespaced: bool,
    name_validator: NameValidator,
    field_path: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let generate_name = str_field(meta, "generateName");
    if !generate_name.is_empty() {
        errs.extend(
            name_validator
                .validate(generate_name, true)
                .into_iter()
                .map(|m| FieldError::invalid(format!("{field_path}.generateName"), generate_name, m)),
        );
    }
    let name = str_field(meta, "name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(format!("{field_path}.name"), "name or generateName is required"));
        }
    } else {
        errs.extend(
            name_validator
                .validate(name, false)
                .into_iter()
                .map(|m| FieldError::invalid(format!("{field_path}.name"), name, m)),
        );
    }

    let namespace = str_field(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(format!("{field_path}.namespace"), ""));
        } else {
            errs.extend(
                is_dns1123_label(namespace)
                    .into_iter()
                    .map(|m| FieldError::invalid(format!("{field_path}.namespace"), namespace, m)),
            );
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(format!("{field_path}.namespace"), "not allowed on this type"));
    }

    if let Some(generation) = meta.get("generation").and_then(Value::as_i64) {
        if generation < 0 {
            errs.push(FieldError::invalid(
                format!("{field_path}.generation"),
                generation,
                "must be greater than or equal to 0",
            ));
        }
    }
    validate_meta_maps(meta, field_path, &mut errs);
    let finalizers = array_field(meta, "finalizers", field_path, &mut errs);
    errs.extend(validate_finalizers(finalizers, &format!("{field_path}.finalizers")));
    let managed = array_field(meta, "managedFields", field_path, &mut errs);
    errs.extend(validate_managed_fields(managed, &format!("{field_path}.managedFields")));
    errs
}

/// upstream `ValidateImmutableField` for JSON values: absent and null are the same value.
pub fn validate_immutable_field(new: Option<&Value>, old: Option<&Value>, field_path: &str) -> FieldErrors {
    let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
    let (new, old) = (norm(new), norm(old));
    if new == old {
        return Vec::new();
    }
    vec![FieldError::invalid(field_path, new.unwrap_or(Value::Null), FIELD_IMMUTABLE_ERROR_MSG)]
}

/// Timestamps compare by instant (upstream's semantic equality), not by spelling.
fn same_time(new: Option<&Value>, old: Option<&Value>) -> bool {
    let parse = |v: Option<&Value>| -> Option<Result<chrono::DateTime<chrono::FixedOffset>, String>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(chrono::DateTime::parse_from_rfc3339(s).map_err(|_| s.clone())),
            Some(other) => Some(Err(other.to_string())),
        }
    };
    parse(new) == parse(old)
}

fn immutable_time(new_meta: &Value, old_meta: &Value, key: &str, field_path: &str, errs: &mut FieldErrors) {
    let (new, old) = (new_meta.get(key), old_meta.get(key));
    if !same_time(new, old) {
        errs.push(FieldError::invalid(
            format!("{field_path}.{key}"),
            new.cloned().unwrap_or(Value::Null),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
}

/// upstream `ValidateObjectMetaUpdate`, for the `metadata` of the new and the stored object.
///
/// As upstream, this expects the store to have run `BeforeUpdate` first: uid, creationTimestamp,
/// deletionTimestamp and deletionGracePeriodSeconds copied from the old object when the new
/// one omits them, and resourceVersion filled in for unconditional updates. It then checks: no
/// new finalizers once deletion started, resourceVersion present, generation not decremented,
/// name/namespace/uid/creationTimestamp/deletionTimestamp/deletionGracePeriodSeconds
/// unchanged (`field is immutable`), and labels, annotations, ownerReferences, managedFields.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> FieldErrors {
    validate_object_meta_update_at(new, old, "metadata")
}

/// [`validate_object_meta_update`] for metadata found at `field_path`.
pub fn validate_object_meta_update_at(new: &Value, old: &Value, field_path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut ignored = FieldErrors::new();

    if old.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
        let new_finalizers = array_field(new, "finalizers", field_path, &mut ignored);
        let old_finalizers = array_field(old, "finalizers", field_path, &mut ignored);
        let mut extra: Vec<&str> =
            new_finalizers.iter().filter(|f| !old_finalizers.contains(f)).filter_map(Value::as_str).collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let list = extra.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
            errs.push(FieldError::forbidden(
                format!("{field_path}.finalizers"),
                format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
            ));
        }
    }

    let rv = str_field(new, "resourceVersion");
    if rv.is_empty() {
        errs.push(FieldError::invalid(format!("{field_path}.resourceVersion"), rv, "must be specified for an update"));
    }

    let generation = |m: &Value| m.get("generation").and_then(Value::as_i64).unwrap_or(0);
    if generation(new) < generation(old) {
        errs.push(FieldError::invalid(format!("{field_path}.generation"), generation(new), "must not be decremented"));
    }

    for key in ["name", "namespace", "uid"] {
        // upstream compares the strings, so absent and "" are the same
        let (n, o) = (str_field(new, key), str_field(old, key));
        if n != o {
            errs.push(FieldError::invalid(format!("{field_path}.{key}"), n, FIELD_IMMUTABLE_ERROR_MSG));
        }
    }
    immutable_time(new, old, "creationTimestamp", field_path, &mut errs);
    immutable_time(new, old, "deletionTimestamp", field_path, &mut errs);
    errs.extend(validate_immutable_field(
        new.get("deletionGracePeriodSeconds"),
        old.get("deletionGracePeriodSeconds"),
        &format!("{field_path}.deletionGracePeriodSeconds"),
    ));

    validate_meta_maps(new, field_path, &mut errs);
    let managed = array_field(new, "managedFields", field_path, &mut errs);
    errs.extend(validate_managed_fields(managed, &format!("{field_path}.managedFields")));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    const NAME_PART_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    fn messages(errs: &FieldErrors) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dns1123_subdomain_rejects_uppercase_with_upstream_message() {
        assert_eq!(is_dns1123_subdomain("Foo"), vec![SUBDOMAIN_MSG.to_string()]);
        let e = FieldError::invalid("metadata.name", "Foo", SUBDOMAIN_MSG);
        assert_eq!(e.to_string(), format!("metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}"));
    }

    #[test]
    fn dns1123_subdomain_table() {
        let long = "a".repeat(254);
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("a", vec![]),
            ("a.b-c.d0", vec![]),
            ("0.1.2", vec![]),
            (&long[..253], vec![]),
            (&long, vec!["must be no more than 253 bytes".to_string()]),
            ("", vec![SUBDOMAIN_MSG.to_string()]),
            ("a..b", vec![SUBDOMAIN_MSG.to_string()]),
            ("-a", vec![SUBDOMAIN_MSG.to_string()]),
            ("a.", vec![SUBDOMAIN_MSG.to_string()]),
            ("a_b", vec![SUBDOMAIN_MSG.to_string()]),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1123_subdomain(input), want, "{input:?}");
        }
    }

    #[test]
    fn dns1123_label_table() {
        let long = "a".repeat(64);
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("my-name", vec![]),
            ("123-abc", vec![]),
            (&long[..63], vec![]),
            ("a.b", vec!["must not contain dots".to_string()]),
            ("Foo", vec![LABEL_MSG.to_string()]),
            ("", vec![LABEL_MSG.to_string()]),
            ("a-", vec![LABEL_MSG.to_string()]),
            (&long, vec!["must be no more than 63 bytes".to_string()]),
        ];
        for (input, want) in cases {
            assert_eq!(is_dns1123_label(input), want, "{input:?}");
        }
    }

    #[test]
    fn dns1035_label_rejects_leading_digit() {
        assert!(is_dns1035_label("my-svc").is_empty());
        assert_eq!(is_dns1035_label("1svc"), vec![DNS1035_MSG.to_string()]);
        assert_eq!(is_dns1035_label("a.b"), vec![DNS1035_MSG.to_string()]);
    }

    #[test]
    fn qualified_name_table() {
        let long = "a".repeat(64);
        let prefixed_long = format!("example.com/{long}");
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("app", vec![]),
            ("MyName", vec![]),
            ("my.name_1-x", vec![]),
            ("example.com/MyName", vec![]),
            ("kubernetes.io/cluster-service", vec![]),
            ("", vec!["name part must be non-empty".to_string(), NAME_PART_MSG.to_string()]),
            ("Foo_", vec![NAME_PART_MSG.to_string()]),
            ("/a", vec!["prefix part must be non-empty".to_string()]),
            ("a/", vec!["name part must be non-empty".to_string(), NAME_PART_MSG.to_string()]),
            ("Example.com/a", vec![format!("prefix part {SUBDOMAIN_MSG}")]),
            (&prefixed_long, vec!["name part must be no more than 63 bytes".to_string()]),
            (
                "a/b/c",
                vec!["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string()],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(is_qualified_name(input), want, "{input:?}");
        }
    }

    #[test]
    fn label_value_table() {
        let long = "a".repeat(64);
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("", vec![]),
            ("MyValue", vec![]),
            ("my_value.1-x", vec![]),
            ("-a", vec![LABEL_VALUE_MSG.to_string()]),
            ("a b", vec![LABEL_VALUE_MSG.to_string()]),
            ("a/b", vec![LABEL_VALUE_MSG.to_string()]),
            (&long, vec!["must be no more than 63 bytes".to_string()]),
        ];
        for (input, want) in cases {
            assert_eq!(is_valid_label_value(input), want, "{input:?}");
        }
    }

    #[test]
    fn path_segment_name_table() {
        let cases: Vec<(&str, bool, Vec<&str>)> = vec![
            ("system:admin", false, vec![]),
            ("Foo_Bar", false, vec![]),
            (".", false, vec!["may not be '.'"]),
            ("..", false, vec!["may not be '..'"]),
            ("..", true, vec![]),
            ("a/b", false, vec!["may not contain '/'"]),
            ("a/%", false, vec!["may not contain '/'", "may not contain '%'"]),
            ("a%", true, vec!["may not contain '%'"]),
        ];
        for (input, prefix, want) in cases {
            assert_eq!(NameValidator::PathSegment.validate(input, prefix), want, "{input:?} prefix={prefix}");
        }
    }

    #[test]
    fn generate_name_may_end_with_dash() {
        assert!(NameValidator::Dns1123Subdomain.validate("web-", true).is_empty());
        assert!(NameValidator::Dns1123Label.validate("web-", true).is_empty());
        assert!(NameValidator::Dns1035Label.validate("web-", true).is_empty());
        assert_eq!(NameValidator::Dns1123Subdomain.validate("web-", false), vec![SUBDOMAIN_MSG.to_string()]);
        assert_eq!(NameValidator::Dns1123Subdomain.validate("Web-", true), vec![SUBDOMAIN_MSG.to_string()]);
        assert!(NameValidator::Dns1123Subdomain.validate("-", true).is_empty());
        let custom = NameValidator::Custom(|n, _| if n == "ok" { vec![] } else { vec!["nope".to_string()] });
        assert_eq!(custom.validate("no", false), vec!["nope".to_string()]);
    }

    #[test]
    fn labels_errors_on_metadata_labels_path() {
        let labels = json!({"app": "web", "Foo_": "ok", "tier": "b_"});
        let errs = validate_labels(labels.as_object().expect("object"), "metadata.labels");
        assert_eq!(
            messages(&errs),
            vec![
                format!("metadata.labels: Invalid value: \"Foo_\": {NAME_PART_MSG}"),
                format!("metadata.labels: Invalid value: \"b_\": {LABEL_VALUE_MSG}"),
            ]
        );
        assert!(errs.iter().all(|e| e.kind == FieldErrorKind::Invalid));
    }

    #[test]
    fn annotations_over_256k_too_long() {
        let at_limit = json!({"a": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES - 1)});
        assert!(validate_annotations(at_limit.as_object().expect("object"), "metadata.annotations").is_empty());
        let over = json!({"a": "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_BYTES)});
        let errs = validate_annotations(over.as_object().expect("object"), "metadata.annotations");
        assert_eq!(messages(&errs), vec!["metadata.annotations: Too long: must have at most 262144 bytes"]);
        assert_eq!(errs[0].kind, FieldErrorKind::TooLong);
        assert_eq!(errs[0].kind.reason(), "FieldValueTooLong");
    }

    #[test]
    fn annotation_keys_are_checked_case_insensitively() {
        let ok = json!({"Example.com/Foo": "anything at all, even spaces"});
        assert!(validate_annotations(ok.as_object().expect("object"), "metadata.annotations").is_empty());
        let bad = json!({"a b": ""});
        let errs = validate_annotations(bad.as_object().expect("object"), "metadata.annotations");
        assert_eq!(messages(&errs), vec![format!("metadata.annotations: Invalid value: \"a b\": {NAME_PART_MSG}")]);
    }

    #[test]
    fn label_selector_validation_table() {
        let cases = [
            (json!(null), vec![]),
            (json!({"matchLabels": {"app": "web"}}), vec![]),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                vec!["spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'".to_string()],
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                vec!["spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'".to_string()],
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}),
                vec!["spec.selector.matchExpressions[0].operator: Invalid value: \"Equals\": not a valid selector operator".to_string()],
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b_"]}]}),
                vec![format!("spec.selector.matchExpressions[0].values[0]: Invalid value: \"b_\": {LABEL_VALUE_MSG}")],
            ),
            (
                json!({"matchLabels": {"Foo_": "x"}}),
                vec![format!("spec.selector.matchLabels: Invalid value: \"Foo_\": {NAME_PART_MSG}")],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(messages(&validate_label_selector(&input, "spec.selector")), want, "{input}");
        }
    }

    #[test]
    fn object_meta_create_table() {
        use NameValidator::*;
        let cases = [
            (json!({"name": "web", "namespace": "default"}), true, Dns1123Subdomain, vec![]),
            (json!({"name": "web"}), false, Dns1123Subdomain, vec![]),
            (json!({"generateName": "web-", "namespace": "default"}), true, Dns1123Subdomain, vec![]),
            (
                json!({"namespace": "default"}),
                true,
                Dns1123Subdomain,
                vec!["metadata.name: Required value: name or generateName is required".to_string()],
            ),
            (json!(null), false, Dns1123Subdomain, vec!["metadata.name: Required value: name or generateName is required".to_string()]),
            (
                json!({"name": "Foo", "namespace": "default"}),
                true,
                Dns1123Subdomain,
                vec![format!("metadata.name: Invalid value: \"Foo\": {SUBDOMAIN_MSG}")],
            ),
            (
                json!({"generateName": "Web-", "name": "Web-x1z2q", "namespace": "default"}),
                true,
                Dns1123Subdomain,
                vec![
                    format!("metadata.generateName: Invalid value: \"Web-\": {SUBDOMAIN_MSG}"),
                    format!("metadata.name: Invalid value: \"Web-x1z2q\": {SUBDOMAIN_MSG}"),
                ],
            ),
            (json!({"name": "a.b"}), false, Dns1123Label, vec!["metadata.name: Invalid value: \"a.b\": must not contain dots".to_string()]),
            (json!({"name": "1svc", "namespace": "ns"}), true, Dns1035Label, vec![format!("metadata.name: Invalid value: \"1svc\": {DNS1035_MSG}")]),
            (json!({"name": "system:node:a"}), false, PathSegment, vec![]),
            (json!({"name": "web"}), true, Dns1123Subdomain, vec!["metadata.namespace: Required value".to_string()]),
            (
                json!({"name": "web", "namespace": "Bad.NS"}),
                true,
                Dns1123Subdomain,
                vec![format!("metadata.namespace: Invalid value: \"Bad.NS\": {LABEL_MSG}")],
            ),
            (
                json!({"name": "web", "namespace": "default"}),
                false,
                Dns1123Subdomain,
                vec!["metadata.namespace: Forbidden: not allowed on this type".to_string()],
            ),
            (
                json!({"name": "web", "generation": -1}),
                false,
                Dns1123Subdomain,
                vec!["metadata.generation: Invalid value: -1: must be greater than or equal to 0".to_string()],
            ),
            (
                json!({"name": "web", "labels": {"a": "b_"}}),
                false,
                Dns1123Subdomain,
                vec![format!("metadata.labels: Invalid value: \"b_\": {LABEL_VALUE_MSG}")],
            ),
            (
                json!({"name": "web", "finalizers": ["example.com/f", "a/b/c"]}),
                false,
                Dns1123Subdomain,
                vec!["metadata.finalizers: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string()],
            ),
            (
                json!({"name": "web", "managedFields": [{"manager": "kubectl", "operation": "Patch"}]}),
                false,
                Dns1123Subdomain,
                vec!["metadata.managedFields[0].operation: Invalid value: \"Patch\": must be `Apply` or `Update`".to_string()],
            ),
        ];
        for (meta, namespaced, validator, want) in cases {
            assert_eq!(messages(&validate_object_meta(&meta, namespaced, validator)), want, "{meta}");
        }
    }

    #[test]
    fn object_meta_annotations_over_256k_too_long() {
        let meta = json!({"name": "web", "annotations": {"big": "x".repeat(300 * 1024)}});
        assert_eq!(
            messages(&validate_object_meta(&meta, false, NameValidator::Dns1123Subdomain)),
            vec!["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
    }

    #[test]
    fn object_meta_owner_references_table() {
        let cases = [
            (
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]),
                vec![],
            ),
            (
                json!([{"apiVersion": "apps/", "kind": "", "name": "", "uid": ""}]),
                vec![
                    "metadata.ownerReferences.apiVersion: Invalid value: \"apps/\": version must not be empty",
                    "metadata.ownerReferences.kind: Invalid value: \"\": must not be empty",
                    "metadata.ownerReferences.name: Invalid value: \"\": must not be empty",
                    "metadata.ownerReferences.uid: Invalid value: \"\": must not be empty",
                ],
            ),
            (
                json!([{"apiVersion": "a/b/c", "kind": "K", "name": "n", "uid": "u"}]),
                vec!["metadata.ownerReferences.apiVersion: Invalid value: \"a/b/c\": version must not be empty"],
            ),
        ];
        for (refs, want) in cases {
            let meta = json!({"name": "web", "ownerReferences": refs});
            assert_eq!(messages(&validate_object_meta(&meta, false, NameValidator::Dns1123Subdomain)), want, "{refs}");
        }
    }

    #[test]
    fn owner_references_event_owner_and_two_controllers_rejected() {
        let refs = json!([
            {"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "u1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "u2", "controller": true},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "u3", "controller": true},
        ]);
        let errs = validate_owner_references(refs.as_array().expect("array"), "metadata.ownerReferences");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].field, "metadata.ownerReferences");
        assert_eq!(errs[0].detail, "/v1, Kind=Event is disallowed from being an owner");
        assert_eq!(
            errs[1].detail,
            "Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"
        );
    }

    #[test]
    fn finalizers_orphan_and_foreground_conflict() {
        let f = json!(["orphan", "foregroundDeletion"]);
        let errs = validate_finalizers(f.as_array().expect("array"), "metadata.finalizers");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].detail, "finalizer orphan and foregroundDeletion cannot be both set");
    }

    #[test]
    fn object_meta_update_table() {
        let old = json!({
            "name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5", "generation": 2,
            "creationTimestamp": "2024-01-01T00:00:00Z",
        });
        let with = |patch: Value| {
            let mut m = old.clone();
            if let (Some(m), Some(p)) = (m.as_object_mut(), patch.as_object()) {
                for (k, v) in p {
                    m.insert(k.clone(), v.clone());
                }
            }
            m
        };
        let cases = [
            (with(json!({})), vec![]),
            (with(json!({"labels": {"a": "b"}, "generation": 3})), vec![]),
            (with(json!({"creationTimestamp": "2024-01-01T00:00:00+00:00"})), vec![]),
            (
                with(json!({"name": "other"})),
                vec!["metadata.name: Invalid value: \"other\": field is immutable".to_string()],
            ),
            (
                with(json!({"namespace": "kube-system"})),
                vec!["metadata.namespace: Invalid value: \"kube-system\": field is immutable".to_string()],
            ),
            (with(json!({"uid": "u2"})), vec!["metadata.uid: Invalid value: \"u2\": field is immutable".to_string()]),
            (
                with(json!({"creationTimestamp": "2024-01-02T00:00:00Z"})),
                vec!["metadata.creationTimestamp: Invalid value: \"2024-01-02T00:00:00Z\": field is immutable"
                    .to_string()],
            ),
            (
                with(json!({"deletionTimestamp": "2024-01-02T00:00:00Z"})),
                vec!["metadata.deletionTimestamp: Invalid value: \"2024-01-02T00:00:00Z\": field is immutable"
                    .to_string()],
            ),
            (
                with(json!({"deletionGracePeriodSeconds": 30})),
                vec!["metadata.deletionGracePeriodSeconds: Invalid value: 30: field is immutable".to_string()],
            ),
            (
                with(json!({"resourceVersion": ""})),
                vec!["metadata.resourceVersion: Invalid value: \"\": must be specified for an update".to_string()],
            ),
            (
                with(json!({"generation": 1})),
                vec!["metadata.generation: Invalid value: 1: must not be decremented".to_string()],
            ),
            (
                with(json!({"labels": {"a": "b_"}})),
                vec![format!("metadata.labels: Invalid value: \"b_\": {LABEL_VALUE_MSG}")],
            ),
        ];
        for (new, want) in cases {
            assert_eq!(messages(&validate_object_meta_update(&new, &old)), want, "{new}");
        }
    }

    #[test]
    fn object_meta_update_no_new_finalizers_while_deleting() {
        let old = json!({"name": "web", "resourceVersion": "5", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a/x"]});
        let mut new = old.clone();
        new["finalizers"] = json!(["a/x", "b/y", "a/z"]);
        assert_eq!(
            messages(&validate_object_meta_update(&new, &old)),
            vec!["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"a/z\", \"b/y\"}"]
        );
        new["finalizers"] = json!([]);
        assert!(validate_object_meta_update(&new, &old).is_empty());
    }

    #[test]
    fn immutable_field_treats_absent_as_null() {
        assert!(validate_immutable_field(None, Some(&Value::Null), "spec.x").is_empty());
        let errs = validate_immutable_field(Some(&json!({"a": 1})), None, "spec.selector");
        assert_eq!(messages(&errs), vec!["spec.selector: Invalid value: {\"a\":1}: field is immutable"]);
    }
}
