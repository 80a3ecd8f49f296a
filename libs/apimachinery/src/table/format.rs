//! Reading fields out of an object's JSON and formatting them the way upstream's printers do:
//! human durations, label maps, label selectors, container lists, quantities.
//!
//! Every reader is total: a missing field, `null` or a value of the wrong JSON type reads as
//! "absent", so a malformed object yields odd cells, never a panic.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// Prints a duration with two to three significant figures, as upstream's
/// `duration.HumanDuration` does: `45s`, `119s`, `2m30s`, `9m`, `12m`, `3h15m`, `30h`, `3d4h`,
/// `45d`, `2y30d`, `9y`. Up to one second in the future reads as `0s` (clock skew); further in
/// the future is `<invalid>`.
pub fn human_duration(d: Duration) -> String {
    // upstream: the seconds are truncated towards zero before the skew check.
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `"{major}{major_unit}"`, plus `"{minor}{minor_unit}"` when the remainder is not zero.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// The value at `path` inside `v`, if every step is an object holding the next key.
pub(super) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.as_object()?.get(*key))
}

/// The string at `path`, or `None` when absent or not a string.
pub(super) fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The string at `path`, or `""` when absent (Go's zero value).
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    opt_str(v, path).unwrap_or("")
}

/// The integer at `path`; integral floats are accepted too.
pub(super) fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    let n = get(v, path)?;
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.is_finite()).map(|f| f as i64))
}

/// The integer at `path`, or `0` when absent (Go's zero value).
pub(super) fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int(v, path).unwrap_or(0)
}

/// The boolean at `path`, or `None` when absent or not a boolean.
pub(super) fn opt_bool(v: &Value, path: &[&str]) -> Option<bool> {
    get(v, path).and_then(Value::as_bool)
}

/// The array at `path`, or an empty slice when absent or not an array.
pub(super) fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The object at `path`, or `None` when absent or not an object.
pub(super) fn map_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(v, path).and_then(Value::as_object)
}

/// Number of entries of the object (or elements of the array) at `path`.
pub(super) fn len_at(v: &Value, path: &[&str]) -> i64 {
    let n = match get(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The RFC 3339 timestamp at `path` (`metav1.Time` or `metav1.MicroTime`), in UTC.
pub(super) fn time_at(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let s = opt_str(v, path)?;
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Human time elapsed since `t`, or `<unknown>` for a zero (absent) time.
pub(super) fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".to_string(),
    }
}

/// `metadata.name` as a cell.
pub(super) fn name(obj: &Value) -> Value {
    Value::from(str_at(obj, &["metadata", "name"]))
}

/// The `Age` cell: time since `metadata.creationTimestamp`.
pub(super) fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    Value::from(since(time_at(obj, &["metadata", "creationTimestamp"]), now))
}

/// `true` when `metadata.deletionTimestamp` is set.
pub(super) fn is_deleting(obj: &Value) -> bool {
    get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|t| !t.is_null())
}

/// A label map as `k1=v1,k2=v2` sorted by key, `<none>` when empty (upstream
/// `labels.FormatLabels`).
pub(super) fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<(&str, &str)> =
        labels.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))).collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort_unstable();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Why a `metav1.LabelSelector` cannot be turned into a selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum SelectorError {
    #[error("label selector operator {0:?} is not valid")]
    InvalidOperator(String),
    #[error("values must be empty for operator {0}")]
    UnexpectedValues(String),
    #[error("values must be non-empty for operator {0}")]
    MissingValues(String),
    #[error("label selector is not an object")]
    NotAnObject,
}

/// The string form of a `metav1.LabelSelector` (upstream `LabelSelectorAsSelector(..).String()`):
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, joined by `,`.
/// An absent or empty selector gives `""`.
pub(super) fn label_selector_string(sel: Option<&Value>) -> Result<String, SelectorError> {
    let sel = match sel {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(SelectorError::NotAnObject),
    };
    // (key, rendered requirement)
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(Value::Object(labels)) = sel.get("matchLabels") {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(Value::Array(exprs)) = sel.get("matchExpressions") {
        for expr in exprs {
            let key = str_at(expr, &["key"]);
            let op = str_at(expr, &["operator"]);
            let mut values: Vec<&str> = arr_at(expr, &["values"]).iter().map(|v| v.as_str().unwrap_or("")).collect();
            let rendered = match op {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(SelectorError::MissingValues(op.to_string()));
                    }
                    values.sort_unstable();
                    let word = if op == "In" { "in" } else { "notin" };
                    format!("{key} {word} ({})", values.join(","))
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(SelectorError::UnexpectedValues(op.to_string()));
                    }
                    if op == "Exists" {
                        key.to_string()
                    } else {
                        format!("!{key}")
                    }
                }
                other => return Err(SelectorError::InvalidOperator(other.to_string())),
            };
            reqs.push((key.to_string(), rendered));
        }
    }
    // upstream: Selector.Add sorts requirements by key.
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// Upstream `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub(super) fn format_label_selector(sel: Option<&Value>) -> String {
    match label_selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(_) => "<error>".to_string(),
    }
}

/// Container names and images, each joined by `,` (upstream `layoutContainerCells`).
pub(super) fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

/// The string form of an IntOrString (`2`, `50%`), or `None` when absent.
pub(super) fn int_or_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A resource quantity as printed by upstream (`Quantity.String()`); the JSON form is already
/// canonical. A missing quantity is the zero quantity, `0`.
pub(super) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// `a,b,c + N more...` once more than `max` items were seen, `<unset>` when there were none
/// (upstream `listWithMoreString`).
pub(super) fn list_with_more(list: &[String], count: usize, max: usize) -> String {
    let joined = list.join(",");
    if count > max {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        return "<unset>".to_string();
    }
    joined
}

/// `host:port`, with brackets around IPv6 hosts (Go's `net.JoinHostPort`).
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `True`, `False`, or `<unset>` (upstream `printBoolPtr`).
pub(super) fn bool_ptr(b: Option<bool>) -> String {
    match b {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

/// Access modes in upstream's fixed order `RWO,ROX,RWX,RWOP`, duplicates dropped.
pub(super) fn access_modes(modes: &[Value]) -> String {
    const ORDER: [(&str, &str); 4] =
        [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")];
    ORDER
        .iter()
        .filter(|(mode, _)| modes.iter().any(|m| m.as_str() == Some(mode)))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}
