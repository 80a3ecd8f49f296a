//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl
//! 1.32+ sends for its typed-client writes (`create deployment|configmap|secret|...`,
//! `create token`, `auth can-i`, `auth whoami`, drain's eviction and DELETE).
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` envelope {1: typeMeta {1: apiVersion,
//! 2: kind}, 2: raw, 3: contentEncoding, 4: contentType}, where `raw` is the object encoded
//! with its message from `k8s.io/api/<group>/<version>/generated.proto`. [`decode`] returns
//! the JSON object the same client sends when it speaks JSON (kubectl 1.27–1.31), so the rest
//! of the server sees one form.
//!
//! The decoder is generic: it walks the wire format along the message table in [`schema`]
//! (generated from the upstream `.proto` files) and maps each field to its JSON name. The
//! apimachinery types whose JSON is not an object of their fields are rendered as upstream's
//! `MarshalJSON` does: `Time` as RFC 3339 seconds (`null` when zero), `MicroTime` with
//! microseconds, `Quantity` as its string, `IntOrString` as an int or a string, `FieldsV1` and
//! `RawExtension` as the embedded JSON; `bytes` become base64 and the `ExtraValue` wrappers
//! plain string lists.
//!
//! Go's JSON and gogo-protobuf disagree on empty values: gogo writes every non-pointer field,
//! zero or not, while kubectl's JSON omits the `omitempty` ones. To hand the server what
//! kubectl ≤1.31 sends, a singular empty string or bytes, `false` or `0` is dropped, except for
//! the fields in [`KEEP_ZERO`] and [`KEEP_EMPTY`] (Go pointers, or fields without `omitempty`)
//! where the zero is a choice the client made (`replicas: 0`, `gracePeriodSeconds: 0`, ...).
//! Fields the table does not know are skipped, as upstream skips unknown fields.

use base64::Engine;
use chrono::Datelike;
use serde_json::{Map, Value};

use apimachinery::status::ApiError;

mod schema;

const MAGIC: &[u8] = b"k8s\0";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// Nesting limit for messages, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// The kinds a body may carry, as `<package>.<version>.<Kind>`: the roots of [`schema`], the same
/// list as `ROOTS` in `hack/gen-protobuf-schema.py`.
const KINDS: &[&str] = &[
    "core.v1.ConfigMap",
    "core.v1.Secret",
    "core.v1.Namespace",
    "core.v1.Service",
    "core.v1.ServiceAccount",
    "core.v1.Pod",
    "core.v1.ResourceQuota",
    "core.v1.LimitRange",
    "core.v1.PersistentVolumeClaim",
    "core.v1.Binding",
    "core.v1.Endpoints",
    "core.v1.PodTemplate",
    "core.v1.ReplicationController",
    "core.v1.Event",
    "meta.v1.DeleteOptions",
    "apps.v1.Deployment",
    "apps.v1.ReplicaSet",
    "apps.v1.StatefulSet",
    "apps.v1.DaemonSet",
    "batch.v1.Job",
    "batch.v1.CronJob",
    "rbac.v1.Role",
    "rbac.v1.RoleBinding",
    "rbac.v1.ClusterRole",
    "rbac.v1.ClusterRoleBinding",
    "policy.v1.PodDisruptionBudget",
    "policy.v1.Eviction",
    "scheduling.v1.PriorityClass",
    "networking.v1.Ingress",
    "networking.v1.IngressClass",
    "networking.v1.NetworkPolicy",
    "authentication.v1.TokenRequest",
    "authentication.v1.TokenReview",
    "authentication.v1.SelfSubjectReview",
    "authorization.v1.SelfSubjectAccessReview",
    "authorization.v1.SelfSubjectRulesReview",
    "authorization.v1.SubjectAccessReview",
    "authorization.v1.LocalSubjectAccessReview",
    "certificates.v1.CertificateSigningRequest",
    "autoscaling.v1.HorizontalPodAutoscaler",
    "autoscaling.v1.Scale",
    "autoscaling.v2.HorizontalPodAutoscaler",
    "coordination.v1.Lease",
];

/// API group -> proto package of its messages in [`schema`].
const GROUPS: &[(&str, &str)] = &[
    ("", "core"),
    ("apps", "apps"),
    ("batch", "batch"),
    ("autoscaling", "autoscaling"),
    ("policy", "policy"),
    ("meta.k8s.io", "meta"),
    ("rbac.authorization.k8s.io", "rbac"),
    ("authentication.k8s.io", "authentication"),
    ("authorization.k8s.io", "authorization"),
    ("certificates.k8s.io", "certificates"),
    ("coordination.k8s.io", "coordination"),
    ("networking.k8s.io", "networking"),
    ("scheduling.k8s.io", "scheduling"),
];

/// Singular `bool`/integer fields whose `false`/`0` is kept: Go pointers (`*int32`, `*bool`)
/// and fields without `omitempty`. Matched by JSON name in any message.
const KEEP_ZERO: &[&str] = &[
    // meta.v1
    "gracePeriodSeconds",
    "orphanDependents",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "deletionGracePeriodSeconds",
    "controller",
    "blockOwnerDeletion",
    // core.v1
    "activeDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "shareProcessNamespace",
    "setHostnameAsFQDN",
    "hostUsers",
    "priority",
    "privileged",
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "hostProcess",
    "defaultMode",
    "mode",
    "optional",
    "immutable",
    "expirationSeconds",
    "tolerationSeconds",
    "minDomains",
    "maxSkew",
    "weight",
    "allocateLoadBalancerNodePorts",
    "containerPort",
    "port",
    "seconds",
    "lun",
    // apps.v1, batch.v1, autoscaling
    "replicas",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "partition",
    "parallelism",
    "completions",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "ttlSecondsAfterFinished",
    "manualSelector",
    "suspend",
    "succeededCount",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "minReplicas",
    "maxReplicas",
    "targetCPUUtilizationPercentage",
    "averageUtilization",
    "stabilizationWindowSeconds",
    // networking.v1, scheduling.v1, coordination.v1, authorization.v1
    "endPort",
    "value",
    "leaseDurationSeconds",
    "leaseTransitions",
    "allowed",
];

/// Singular string fields whose `""` is kept (Go `*string` where empty means something).
const KEEP_EMPTY: &[&str] = &["storageClassName"];

/// A field's value type in [`schema`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    /// A `+protobuf.nullable` wrapper (`ExtraValue`) whose JSON is its `items` string list.
    StrList,
    /// A message, by its name in [`schema::MESSAGES`] or one of the special apimachinery types.
    Msg(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    One,
    Rep,
    /// `map<string, ty>`.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields belong to the enclosing object.
    Inline,
}

#[derive(Debug)]
struct Field {
    number: u32,
    name: &'static str,
    ty: Type,
    card: Card,
}

const fn one(number: u32, name: &'static str, ty: Type) -> Field {
    Field { number, name, ty, card: Card::One }
}
const fn rep(number: u32, name: &'static str, ty: Type) -> Field {
    Field { number, name, ty, card: Card::Rep }
}
const fn map(number: u32, name: &'static str, ty: Type) -> Field {
    Field { number, name, ty, card: Card::Map }
}
const fn inline(number: u32, message: &'static str) -> Field {
    Field { number, name: "", ty: Type::Msg(message), card: Card::Inline }
}

#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("the body does not start with the magic prefix k8s\\0")]
    NoMagic,
    #[error("unexpected end of data")]
    Truncated,
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("invalid field number {0}")]
    FieldNumber(u64),
    #[error("unsupported wire type {0}")]
    WireType(u64),
    #[error("wire type {got}, want {want}")]
    WrongWireType { got: &'static str, want: &'static str },
    #[error("objects nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("the object has no kind")]
    NoKind,
    #[error("no protobuf schema for kind {kind:?} in version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("unsupported content encoding {0:?}")]
    ContentEncoding(String),
    #[error("unsupported content type {0:?} of the embedded object")]
    ContentType(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    At {
        path: String,
        #[source]
        source: Box<DecodeError>,
    },
}

impl DecodeError {
    /// Prefixes the JSON path of the field being decoded, innermost last.
    fn at(self, segment: &str) -> Self {
        match self {
            DecodeError::At { path, source } => {
                let sep = if path.starts_with('[') { "" } else { "." };
                DecodeError::At { path: format!("{segment}{sep}{path}"), source }
            }
            other => DecodeError::At { path: segment.to_string(), source: Box::new(other) },
        }
    }
}

/// Decodes a `k8s\0`-prefixed protobuf body into the object's JSON form, with `apiVersion`
/// and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    envelope(body, 0).map_err(|e| ApiError::bad_request(format!("unable to decode protobuf body: {e}")))
}

/// The proto message of a kind, if the body may carry it.
fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    // upstream: DeleteOptions is registered in every group version, always as meta.k8s.io's.
    if kind == "DeleteOptions" {
        return Some("meta.v1.DeleteOptions");
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = GROUPS.iter().find(|(g, _)| *g == group)?.1;
    let name = format!("{package}.{version}.{kind}");
    KINDS.iter().copied().find(|k| *k == name)
}

fn lookup(message: &str) -> Option<&'static [Field]> {
    let i = schema::MESSAGES.binary_search_by(|(name, _)| name.cmp(&message)).ok()?;
    schema::MESSAGES.get(i).map(|(_, fields)| *fields)
}

fn is_special(message: &str) -> bool {
    matches!(
        message,
        "meta.v1.Time"
            | "meta.v1.MicroTime"
            | "meta.v1.FieldsV1"
            | "resource.Quantity"
            | "intstr.IntOrString"
            | "runtime.RawExtension"
    )
}

/// One field as read off the wire.
#[derive(Debug, Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
}

impl Wire<'_> {
    fn name(&self) -> &'static str {
        match self {
            Wire::Varint(_) => "varint",
            Wire::Fixed64 => "fixed64",
            Wire::Bytes(_) => "length-delimited",
            Wire::Fixed32 => "fixed32",
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError::Truncated)?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok().filter(|n| *n != 0).ok_or(DecodeError::FieldNumber(key >> 3))?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = self.varint()?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => return Err(DecodeError::WireType(other)),
        };
        Ok(Some((number, wire)))
    }
}

fn wrong_wire(want: &'static str, got: Wire<'_>) -> DecodeError {
    DecodeError::WrongWireType { got: got.name(), want }
}

fn bytes_of(wire: Wire<'_>) -> Result<&[u8], DecodeError> {
    match wire {
        Wire::Bytes(b) => Ok(b),
        other => Err(wrong_wire("length-delimited", other)),
    }
}

fn varint_of(wire: Wire<'_>) -> Result<u64, DecodeError> {
    match wire {
        Wire::Varint(v) => Ok(v),
        other => Err(wrong_wire("varint", other)),
    }
}

fn string_of(wire: Wire<'_>) -> Result<String, DecodeError> {
    // Go strings need not be UTF-8; Go's JSON encoder replaces invalid bytes the same way.
    Ok(String::from_utf8_lossy(bytes_of(wire)?).into_owned())
}

/// The `runtime.Unknown` envelope after the magic prefix.
fn envelope(body: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let rest = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let (mut raw, mut encoding, mut content_type): (&[u8], String, String) = (&[], String::new(), String::new());
    let mut r = Reader::new(rest);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => {
                let mut tm = Reader::new(bytes_of(wire)?);
                while let Some((n, w)) = tm.field()? {
                    match n {
                        1 => api_version = string_of(w)?,
                        2 => kind = string_of(w)?,
                        _ => {}
                    }
                }
            }
            2 => raw = bytes_of(wire)?,
            3 => encoding = string_of(wire)?,
            4 => content_type = string_of(wire)?,
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(DecodeError::ContentEncoding(encoding));
    }
    let fields = match content_type.as_str() {
        "" | PROTOBUF => {
            if kind.is_empty() {
                return Err(DecodeError::NoKind);
            }
            let message = message_for(&api_version, &kind)
                .ok_or_else(|| DecodeError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
            message_value(message, raw, depth + 1)?
        }
        "application/json" => {
            serde_json::from_slice(raw).map_err(|e| DecodeError::Invalid(format!("embedded JSON object: {e}")))?
        }
        other => return Err(DecodeError::ContentType(other.to_string())),
    };
    let Value::Object(fields) = fields else {
        return Err(DecodeError::Invalid("the embedded object is not an object".to_string()));
    };
    let mut object = Map::new();
    if !api_version.is_empty() {
        object.insert("apiVersion".to_string(), Value::String(api_version));
    }
    if !kind.is_empty() {
        object.insert("kind".to_string(), Value::String(kind));
    }
    for (k, v) in fields {
        object.entry(k).or_insert(v);
    }
    Ok(Value::Object(object))
}

/// A message's JSON value.
fn message_value(message: &str, buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    match message {
        "meta.v1.Time" => time(buf, false),
        "meta.v1.MicroTime" => time(buf, true),
        "meta.v1.FieldsV1" | "runtime.RawExtension" => embedded_json(buf, depth),
        "resource.Quantity" => quantity(buf),
        "intstr.IntOrString" => int_or_string(buf),
        _ => {
            let mut object = Map::new();
            object_into(message, buf, depth, &mut object)?;
            Ok(Value::Object(object))
        }
    }
}

/// Decodes a message's fields into `object` (merging, as protobuf merges repeated messages).
fn object_into(message: &str, buf: &[u8], depth: usize, object: &mut Map<String, Value>) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let fields = lookup(message).ok_or_else(|| DecodeError::Invalid(format!("no schema for message {message}")))?;
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        let Some(field) = fields.iter().find(|f| f.number == number) else {
            continue;
        };
        match field.card {
            Card::Inline => match field.ty {
                Type::Msg(inner) => object_into(inner, bytes_of(wire)?, depth + 1, object)?,
                _ => return Err(DecodeError::Invalid(format!("inline field {number} of {message} is not a message"))),
            },
            Card::One => singular(field, wire, depth, object).map_err(|e| e.at(field.name))?,
            Card::Rep => repeated(field, wire, depth, object)?,
            Card::Map => map_entry(field, wire, depth, object)?,
        }
    }
    Ok(())
}

fn singular(field: &Field, wire: Wire<'_>, depth: usize, object: &mut Map<String, Value>) -> Result<(), DecodeError> {
    if let (Type::Msg(inner), Wire::Bytes(b)) = (field.ty, wire) {
        if !is_special(inner) {
            let slot = object.entry(field.name).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner_object) = slot {
                object_into(inner, b, depth + 1, inner_object)?;
            }
            return Ok(());
        }
    }
    let value = value(field.ty, wire, depth)?;
    if is_omitted_zero(field, &value) {
        object.remove(field.name);
    } else {
        object.insert(field.name.to_string(), value);
    }
    Ok(())
}

/// Whether Go's JSON would omit this singular value (see the module docs).
fn is_omitted_zero(field: &Field, value: &Value) -> bool {
    match field.ty {
        Type::Str | Type::Bytes => value.as_str() == Some("") && !KEEP_EMPTY.contains(&field.name),
        Type::Bool => value.as_bool() == Some(false) && !KEEP_ZERO.contains(&field.name),
        Type::I32 | Type::I64 => value.as_i64() == Some(0) && !KEEP_ZERO.contains(&field.name),
        Type::StrList | Type::Msg(_) => false,
    }
}

fn repeated(field: &Field, wire: Wire<'_>, depth: usize, object: &mut Map<String, Value>) -> Result<(), DecodeError> {
    let slot = object.entry(field.name).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    let Value::Array(items) = slot else {
        return Ok(());
    };
    match (field.ty, wire) {
        // Packed scalars: proto2 encoders may pack, and decoders must accept both forms.
        (Type::Bool | Type::I32 | Type::I64, Wire::Bytes(packed)) => {
            let mut r = Reader::new(packed);
            while !r.buf.is_empty() {
                let v = r.varint().map_err(|e| e.at(field.name))?;
                items.push(scalar(field.ty, v));
            }
        }
        _ => {
            let index = items.len();
            let v = value(field.ty, wire, depth).map_err(|e| e.at(&format!("[{index}]")).at(field.name))?;
            items.push(v);
        }
    }
    Ok(())
}

fn map_entry(field: &Field, wire: Wire<'_>, depth: usize, object: &mut Map<String, Value>) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes_of(wire).map_err(|e| e.at(field.name))?);
    let (mut key, mut value_wire) = (String::new(), None);
    while let Some((number, w)) = r.field().map_err(|e| e.at(field.name))? {
        match number {
            1 => key = string_of(w).map_err(|e| e.at(field.name))?,
            2 => value_wire = Some(w),
            _ => {}
        }
    }
    let v = match value_wire {
        Some(w) => value(field.ty, w, depth),
        None => default_value(field.ty, depth),
    }
    .map_err(|e| e.at(&format!("[{key:?}]")).at(field.name))?;
    let slot = object.entry(field.name).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(entries) = slot {
        entries.insert(key, v);
    }
    Ok(())
}

fn scalar(ty: Type, v: u64) -> Value {
    match ty {
        Type::Bool => Value::Bool(v != 0),
        // int32 travels sign-extended to 64 bits; the low 32 bits are the value.
        Type::I32 => Value::from(v as u32 as i32),
        _ => Value::from(v as i64),
    }
}

/// The JSON value of one field occurrence of type `ty`.
fn value(ty: Type, wire: Wire<'_>, depth: usize) -> Result<Value, DecodeError> {
    match ty {
        Type::Str => Ok(Value::String(string_of(wire)?)),
        Type::Bytes => Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(bytes_of(wire)?))),
        Type::Bool | Type::I32 | Type::I64 => Ok(scalar(ty, varint_of(wire)?)),
        Type::StrList => string_list(bytes_of(wire)?),
        Type::Msg(message) => message_value(message, bytes_of(wire)?, depth + 1),
    }
}

/// A map value that is absent on the wire is the type's zero value.
fn default_value(ty: Type, depth: usize) -> Result<Value, DecodeError> {
    match ty {
        Type::Str | Type::Bytes => Ok(Value::String(String::new())),
        Type::Bool => Ok(Value::Bool(false)),
        Type::I32 | Type::I64 => Ok(Value::from(0)),
        Type::StrList => Ok(Value::Array(Vec::new())),
        Type::Msg(message) => message_value(message, &[], depth + 1),
    }
}

/// `ExtraValue`-style wrappers: `repeated string items = 1`, JSON a plain list.
fn string_list(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut items = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        if number == 1 {
            items.push(Value::String(string_of(wire)?));
        }
    }
    Ok(Value::Array(items))
}

/// `meta.v1.Time` {1: seconds, 2: nanos}: RFC 3339 in UTC, seconds only (upstream
/// `Time.MarshalJSON`), or microseconds for `MicroTime`. A zero time is sent as no bytes and
/// is JSON `null`.
fn time(buf: &[u8], micro: bool) -> Result<Value, DecodeError> {
    if buf.is_empty() {
        return Ok(Value::Null);
    }
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => seconds = varint_of(wire)? as i64,
            2 => nanos = i64::from(varint_of(wire)? as u32 as i32),
            _ => {}
        }
    }
    let nanos = u32::try_from(nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| DecodeError::Invalid(format!("time nanos {nanos} out of range")))?;
    let t = chrono::DateTime::from_timestamp(seconds, nanos)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| DecodeError::Invalid(format!("time {seconds}s out of range")))?;
    let format = if micro { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
    Ok(Value::String(t.format(format).to_string()))
}

/// `resource.Quantity` {1: string}.
fn quantity(buf: &[u8]) -> Result<Value, DecodeError> {
    let mut s = None;
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        if number == 1 {
            s = Some(string_of(wire)?);
        }
    }
    Ok(Value::String(s.unwrap_or_else(|| "0".to_string())))
}

/// `intstr.IntOrString` {1: type (0 int, 1 string), 2: intVal, 3: strVal}.
fn int_or_string(buf: &[u8]) -> Result<Value, DecodeError> {
    let (mut kind, mut int_val, mut str_val) = (0u64, 0i32, String::new());
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        match number {
            1 => kind = varint_of(wire)?,
            2 => int_val = varint_of(wire)? as u32 as i32,
            3 => str_val = string_of(wire)?,
            _ => {}
        }
    }
    Ok(if kind == 1 { Value::String(str_val) } else { Value::from(int_val) })
}

/// `FieldsV1` {1: Raw} and `RawExtension` {1: raw}: the embedded JSON (or, for a
/// `RawExtension`, an embedded protobuf object), `null` when empty.
fn embedded_json(buf: &[u8], depth: usize) -> Result<Value, DecodeError> {
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(buf);
    while let Some((number, wire)) = r.field()? {
        if number == 1 {
            raw = bytes_of(wire)?;
        }
    }
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        return envelope(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| DecodeError::Invalid(format!("embedded JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A tiny encoder, writing fields the way gogo-protobuf does.
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn key(number: u32, wire: u8) -> Vec<u8> {
        varint(u64::from(number) << 3 | u64::from(wire))
    }
    /// A length-delimited field (string, bytes, message, map entry).
    fn ld(number: u32, payload: &[u8]) -> Vec<u8> {
        [key(number, 2), varint(payload.len() as u64), payload.to_vec()].concat()
    }
    fn s(number: u32, v: &str) -> Vec<u8> {
        ld(number, v.as_bytes())
    }
    fn int(number: u32, v: i64) -> Vec<u8> {
        [key(number, 0), varint(v as u64)].concat()
    }
    fn m(number: u32, fields: &[Vec<u8>]) -> Vec<u8> {
        ld(number, &fields.concat())
    }
    /// A `map<string, string>` entry.
    fn kv(number: u32, k: &str, v: &str) -> Vec<u8> {
        m(number, &[s(1, k), s(2, v)])
    }
    fn quantity(number: u32, k: &str, q: &str) -> Vec<u8> {
        m(number, &[s(1, k), m(2, &[s(1, q)])])
    }
    fn envelope(api_version: &str, kind: &str, raw: &[Vec<u8>]) -> Vec<u8> {
        let unknown = [m(1, &[s(1, api_version), s(2, kind)]), ld(2, &raw.concat()), s(3, ""), s(4, "")].concat();
        [MAGIC.to_vec(), unknown].concat()
    }
    /// ObjectMeta as gogo writes a fresh one: every non-pointer field, zero or not.
    fn meta(name: &str, extra: &[Vec<u8>]) -> Vec<u8> {
        let mut fields = vec![s(1, name), s(2, ""), s(3, ""), s(4, ""), s(5, ""), s(6, ""), int(7, 0), m(8, &[])];
        fields.extend_from_slice(extra);
        m(1, &fields)
    }
    fn decoded(body: &[u8]) -> Value {
        match decode(body) {
            Ok(v) => v,
            Err(e) => panic!("decode failed: {e}"),
        }
    }
    fn error_of(body: &[u8]) -> ApiError {
        match decode(body) {
            Ok(v) => panic!("decoded {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn protobuf_configmap_from_kubectl_132_decodes() {
        let body = envelope(
            "v1",
            "ConfigMap",
            &[meta("my-config", &[]), kv(2, "key", "value"), kv(2, "empty", ""), m(3, &[s(1, "bin"), ld(2, &[0, 1])])],
        );
        // The envelope kubectl 1.32 sends: k8s\0 0a0f 0a02"v1" 12 09"ConfigMap" 12 <len> ...
        assert!(body.starts_with(b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12"));
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "my-config", "creationTimestamp": null},
                "data": {"key": "value", "empty": ""},
                "binaryData": {"bin": "AAE="},
            })
        );
    }

    #[test]
    fn protobuf_secret_binary_data_is_base64() {
        let body = envelope(
            "v1",
            "Secret",
            &[
                meta("s", &[s(3, "default"), kv(11, "app", "web")]),
                m(2, &[s(1, "key"), ld(2, &[0x00, 0x01, 0x02, 0xff])]),
                m(2, &[s(1, "none")]),
                s(3, "Opaque"),
            ],
        );
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s", "namespace": "default", "creationTimestamp": null, "labels": {"app": "web"}},
                "data": {"key": "AAEC/w==", "none": ""},
                "type": "Opaque",
            })
        );
    }

    fn container(name: &str, image: &str) -> Vec<u8> {
        let resources = m(8, &[quantity(1, "cpu", "500m"), quantity(1, "memory", "128Mi"), quantity(2, "cpu", "250m")]);
        // Non-pointer strings and bools gogo writes even when empty.
        m(2, &[s(1, name), s(2, image), s(5, ""), resources, s(13, ""), s(14, ""), int(16, 0), int(18, 0)])
    }

    #[test]
    fn protobuf_deployment_from_kubectl_create_decodes() {
        let labels = kv(11, "app", "web");
        let selector = m(2, &[kv(1, "app", "web")]);
        let template = m(
            3,
            &[meta("", std::slice::from_ref(&labels)), m(2, &[container("nginx", "nginx:1.27"), s(3, ""), s(6, "")])],
        );
        let strategy = m(
            4,
            &[
                s(1, "RollingUpdate"),
                m(2, &[m(1, &[int(1, 0), int(2, 1), s(3, "")]), m(2, &[int(1, 1), int(2, 0), s(3, "25%")])]),
            ],
        );
        let spec = m(2, &[int(1, 3), selector, template, strategy, int(5, 0), int(7, 0)]);
        let status = m(3, &[int(1, 0), int(2, 0), int(3, 0)]);
        let body = envelope("apps/v1", "Deployment", &[meta("web", &[labels]), spec, status]);
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                        "spec": {"containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                        }]},
                    },
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                },
                "status": {"replicas": 0},
            })
        );
    }

    #[test]
    fn protobuf_zero_replicas_and_zero_grace_period_are_kept() {
        let body = envelope("apps/v1", "Deployment", &[meta("web", &[]), m(2, &[int(1, 0), int(5, 0), int(7, 0)])]);
        assert_eq!(decoded(&body)["spec"], json!({"replicas": 0}));

        let body = envelope("v1", "Pod", &[meta("p", &[]), m(2, &[int(4, 0), int(21, 0), int(11, 0), int(12, 0)])]);
        // terminationGracePeriodSeconds (*int64) and automountServiceAccountToken (*bool)
        // survive; hostNetwork (bool) does not.
        assert_eq!(
            decoded(&body)["spec"],
            json!({"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false})
        );
    }

    #[test]
    fn protobuf_namespace_decodes() {
        let body = envelope("v1", "Namespace", &[meta("team-a", &[]), m(2, &[]), m(3, &[s(1, "")])]);
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "team-a", "creationTimestamp": null},
                "spec": {},
                "status": {},
            })
        );
    }

    #[test]
    fn protobuf_delete_options_keep_propagation_policy_and_zero_grace() {
        for api_version in ["v1", "meta.k8s.io/v1"] {
            let body = envelope(api_version, "DeleteOptions", &[int(1, 0), s(4, "Background"), s(5, "All")]);
            assert_eq!(
                decoded(&body),
                json!({
                    "apiVersion": api_version,
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "propagationPolicy": "Background",
                    "dryRun": ["All"],
                })
            );
        }
    }

    #[test]
    fn protobuf_eviction_carries_delete_options() {
        let body = envelope("policy/v1", "Eviction", &[meta("p", &[s(3, "ns")]), m(2, &[int(1, 30)])]);
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": null},
                "deleteOptions": {"gracePeriodSeconds": 30},
            })
        );
    }

    #[test]
    fn protobuf_self_subject_access_review_from_auth_can_i_decodes() {
        let attributes = m(1, &[s(1, "default"), s(2, "get"), s(3, ""), s(4, ""), s(5, "pods"), s(6, ""), s(7, "")]);
        let body = envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &[meta("", &[]), m(2, &[attributes]), m(3, &[int(1, 0), s(2, ""), s(3, ""), int(4, 0)])],
        );
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {"creationTimestamp": null},
                "spec": {"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}},
                "status": {"allowed": false},
            })
        );
    }

    #[test]
    fn protobuf_self_subject_review_and_token_request_decode() {
        let body = envelope("authentication.k8s.io/v1", "SelfSubjectReview", &[meta("", &[]), m(2, &[m(1, &[])])]);
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "SelfSubjectReview",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": {}},
            })
        );

        let user =
            m(1, &[s(1, "alice"), s(3, "system:authenticated"), m(4, &[s(1, "scope"), m(2, &[s(1, "a"), s(1, "b")])])]);
        let body = envelope("authentication.k8s.io/v1", "SelfSubjectReview", &[m(2, &[user])]);
        assert_eq!(
            decoded(&body)["status"],
            json!({"userInfo": {
                "username": "alice",
                "groups": ["system:authenticated"],
                "extra": {"scope": ["a", "b"]},
            }})
        );

        let spec = m(
            2,
            &[
                s(1, "https://kubernetes.default.svc"),
                int(4, 3600),
                m(3, &[s(1, "Pod"), s(2, "v1"), s(3, "p"), s(4, "uid-1")]),
            ],
        );
        let body = envelope("authentication.k8s.io/v1", "TokenRequest", &[meta("default", &[s(3, "ns")]), spec]);
        assert_eq!(
            decoded(&body)["spec"],
            json!({
                "audiences": ["https://kubernetes.default.svc"],
                "expirationSeconds": 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "uid-1"},
            })
        );
    }

    #[test]
    fn protobuf_inline_structs_flatten_into_their_parent() {
        // Volume embeds VolumeSource, ConfigMapVolumeSource embeds LocalObjectReference and
        // Probe embeds ProbeHandler, all with `json:",inline"`.
        let volume = m(1, &[s(1, "cfg"), m(2, &[m(19, &[m(1, &[s(1, "app-config")]), int(3, 420)])])]);
        let probe = m(10, &[m(1, &[m(2, &[s(1, "/healthz"), m(2, &[int(1, 0), int(2, 8080), s(3, "")])])]), int(2, 5)]);
        let containers = m(2, &[s(1, "app"), s(2, "app:1"), probe]);
        let body = envelope("v1", "Pod", &[meta("p", &[]), m(2, &[volume, containers])]);
        assert_eq!(
            decoded(&body)["spec"],
            json!({
                "volumes": [{"name": "cfg", "configMap": {"name": "app-config", "defaultMode": 420}}],
                "containers": [{
                    "name": "app",
                    "image": "app:1",
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 5},
                }],
            })
        );
    }

    #[test]
    fn protobuf_times_render_like_upstream_json() {
        let created = m(8, &[int(1, 1_700_000_000), int(2, 5)]);
        let managed = m(17, &[s(1, "kubectl"), s(2, "Update"), s(6, "FieldsV1"), m(7, &[ld(1, br#"{"f:data":{}}"#)])]);
        let spec = m(2, &[s(1, "holder"), int(2, 15), m(4, &[int(1, 1_700_000_000), int(2, 123_456_789)])]);
        let body = envelope("coordination.k8s.io/v1", "Lease", &[m(1, &[s(1, "l"), created, managed]), spec]);
        assert_eq!(
            decoded(&body),
            json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": "l",
                    "creationTimestamp": "2023-11-14T22:13:20Z",
                    "managedFields": [{
                        "manager": "kubectl",
                        "operation": "Update",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:data": {}},
                    }],
                },
                "spec": {
                    "holderIdentity": "holder",
                    "leaseDurationSeconds": 15,
                    "renewTime": "2023-11-14T22:13:20.123456Z",
                },
            })
        );
    }

    #[test]
    fn protobuf_service_ports_decode_with_int_or_string_target() {
        let port =
            m(1, &[s(1, "http"), s(2, "TCP"), int(3, 80), m(4, &[int(1, 1), int(2, 0), s(3, "web")]), int(5, 0)]);
        let body = envelope(
            "v1",
            "Service",
            &[meta("svc", &[]), m(2, &[port, kv(2, "app", "web"), s(3, ""), s(4, "NodePort")])],
        );
        assert_eq!(
            decoded(&body)["spec"],
            json!({
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"}],
                "selector": {"app": "web"},
                "type": "NodePort",
            })
        );
    }

    #[test]
    fn protobuf_packed_and_unpacked_repeated_ints_both_decode() {
        let packed = m(2, &[m(14, &[ld(4, &[varint(1000), varint(2000)].concat())])]);
        let unpacked = m(2, &[m(14, &[int(4, 1000), int(4, 2000)])]);
        for spec in [packed, unpacked] {
            let body = envelope("v1", "Pod", &[spec]);
            assert_eq!(decoded(&body)["spec"], json!({"securityContext": {"supplementalGroups": [1000, 2000]}}));
        }
    }

    #[test]
    fn protobuf_unknown_fields_are_skipped() {
        let body = envelope(
            "v1",
            "ConfigMap",
            &[meta("c", &[int(99, 7)]), kv(2, "k", "v"), s(120, "future"), [key(121, 5), vec![0; 4]].concat()],
        );
        assert_eq!(decoded(&body)["data"], json!({"k": "v"}));
        assert_eq!(decoded(&body)["metadata"], json!({"name": "c", "creationTimestamp": null}));
    }

    #[test]
    fn protobuf_embedded_json_content_type_is_accepted() {
        let unknown =
            [m(1, &[s(1, "v1"), s(2, "ConfigMap")]), ld(2, br#"{"data":{"a":"b"}}"#), s(4, "application/json")]
                .concat();
        let body = [MAGIC.to_vec(), unknown].concat();
        assert_eq!(decoded(&body), json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}));
    }

    #[test]
    fn protobuf_raw_extension_holds_json_or_a_nested_object() {
        let nested = envelope("v1", "ConfigMap", &[kv(2, "a", "b")]);
        assert_eq!(
            message_value("runtime.RawExtension", &ld(1, &nested), 0).ok(),
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}))
        );
        assert_eq!(message_value("runtime.RawExtension", &ld(1, b"[1]"), 0).ok(), Some(json!([1])));
        assert_eq!(message_value("runtime.RawExtension", &[], 0).ok(), Some(Value::Null));
        assert!(message_value("runtime.RawExtension", &ld(1, b"{nope"), 0).is_err());
    }

    #[test]
    fn protobuf_body_without_magic_is_bad_request() {
        for body in [&b"{\"kind\":\"ConfigMap\"}"[..], b"", b"k8s"] {
            let e = error_of(body);
            assert_eq!((e.code, e.reason), (400, "BadRequest"));
            assert!(e.message.starts_with("unable to decode protobuf body: "), "{}", e.message);
        }
    }

    #[test]
    fn protobuf_unknown_kind_is_bad_request() {
        for (api_version, kind) in
            [("example.com/v1", "Widget"), ("v1", "PodSpec"), ("apps/v2", "Deployment"), ("v1", "")]
        {
            let e = error_of(&envelope(api_version, kind, &[]));
            assert_eq!(e.code, 400, "{api_version} {kind}");
        }
        let e = error_of(&envelope("example.com/v1", "Widget", &[]));
        assert_eq!(
            e.message,
            "unable to decode protobuf body: no protobuf schema for kind \"Widget\" in version \"example.com/v1\""
        );
    }

    #[test]
    fn protobuf_malformed_bytes_are_bad_request_with_the_field_path() {
        // spec.template.spec.containers[0].name is a varint instead of a string.
        let template = m(3, &[m(2, &[m(2, &[int(1, 7)])])]);
        let e = error_of(&envelope("apps/v1", "Deployment", &[m(2, &[template])]));
        assert_eq!(
            e.message,
            "unable to decode protobuf body: spec.template.spec.containers[0].name: \
             wire type varint, want length-delimited"
        );
        // A length prefix past the end.
        let e = error_of(&[MAGIC, &[0x12, 0x40, 0x0a]].concat());
        assert_eq!(e.message, "unable to decode protobuf body: unexpected end of data");
        // An 11-byte varint.
        let e = error_of(&[MAGIC, &[0x08], &[0xff; 11]].concat());
        assert_eq!(e.message, "unable to decode protobuf body: varint longer than 64 bits");
        // Field number 0 and the deprecated group wire types.
        assert_eq!(error_of(&[MAGIC, &[0x00, 0x00]].concat()).code, 400);
        assert_eq!(error_of(&[MAGIC, &[0x0b]].concat()).code, 400);
        // A compressed envelope.
        let gz = [MAGIC.to_vec(), m(1, &[s(1, "v1"), s(2, "ConfigMap")]), s(3, "gzip")].concat();
        assert_eq!(error_of(&gz).message, "unable to decode protobuf body: unsupported content encoding \"gzip\"");
        // A time beyond what RFC 3339 can say.
        let far = envelope("v1", "ConfigMap", &[m(1, &[m(8, &[int(1, i64::MAX)])])]);
        assert_eq!(error_of(&far).code, 400);
    }

    #[test]
    fn protobuf_truncated_or_garbled_bodies_never_panic() {
        let body = envelope(
            "apps/v1",
            "Deployment",
            &[meta("web", &[kv(11, "app", "web")]), m(2, &[int(1, 3), m(3, &[m(2, &[container("c", "i")])])])],
        );
        for end in 0..body.len() {
            let _ = decode(&body[..end]);
        }
        // Flip every bit of the body in turn, then some pseudo-random bodies.
        for i in MAGIC.len()..body.len() {
            for bit in 0..8 {
                let mut garbled = body.clone();
                garbled[i] ^= 1 << bit;
                let _ = decode(&garbled);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut garbled = body.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = MAGIC.len() + (seed as usize) % (body.len() - MAGIC.len());
                garbled[i] = (seed >> 32) as u8;
            }
            let _ = decode(&garbled);
        }
    }

    #[test]
    fn protobuf_nesting_is_bounded() {
        assert!(matches!(message_value("core.v1.Pod", &[], MAX_DEPTH + 1), Err(DecodeError::TooDeep)));
    }

    #[test]
    fn protobuf_schema_is_sorted_and_every_reference_resolves() {
        let names: Vec<&str> = schema::MESSAGES.iter().map(|(n, _)| *n).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "schema::MESSAGES must be sorted and unique");
        for kind in KINDS {
            assert!(lookup(kind).is_some(), "kind {kind} has no schema");
        }
        for (name, fields) in schema::MESSAGES {
            for field in *fields {
                if let Type::Msg(inner) = field.ty {
                    let known = lookup(inner).is_some() || (is_special(inner) && field.card != Card::Inline);
                    assert!(known, "{name}.{} refers to unknown message {inner}", field.name);
                }
                assert!(
                    field.card == Card::Inline || !field.name.is_empty(),
                    "{name} field {} has no name",
                    field.number
                );
            }
            let mut numbers: Vec<u32> = fields.iter().map(|f| f.number).collect();
            numbers.dedup();
            assert_eq!(numbers.len(), fields.len(), "{name} repeats a field number");
        }
    }

    #[test]
    fn protobuf_every_kind_resolves_from_its_api_version() {
        for kind in KINDS {
            let (package, rest) = kind.split_once('.').unwrap_or_default();
            let (version, name) = rest.split_once('.').unwrap_or_default();
            let group = GROUPS.iter().find(|(_, p)| *p == package).map(|(g, _)| *g).unwrap_or_default();
            let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
            assert_eq!(message_for(&api_version, name), Some(*kind), "{api_version} {name}");
        }
    }
}
