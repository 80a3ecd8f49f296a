//! `metadata.managedFields` entries and the two operations that change them: an apply by one
//! manager (with conflicts and removal of fields the manager stopped applying) and any other
//! write (create, update, patch), which gives the fields it changed to its manager.
//!
//! upstream: structured-merge-diff `merge.Updater` (`Apply`, `Update`, `prune`) and the
//! apiserver `fieldmanager` wrappers around it: `stripMeta`, `managedFieldsUpdater` (times and
//! grouping by manager), `lastAppliedManager`/`lastAppliedUpdater` (kubectl's client-side to
//! server-side apply upgrade), the conflict error of `internal/conflict.go` and the entry
//! encoding and ordering of `internal/managedfields.go`.

use std::borrow::Cow;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use super::fieldpath::{FieldSet, FieldsError, Path};
use super::typed::{self, FieldType};
use crate::status::{ApiError, Details};

/// `operation` of a managedFields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, as stored.
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// What makes two entries the same manager: name, operation, subresource, and the API version
/// for `Update` entries (upstream `BuildManagerIdentifier`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Identity {
    manager: String,
    operation: Operation,
    api_version: String,
    subresource: String,
}

impl ManagedFieldsEntry {
    fn identity(&self) -> Identity {
        identity(&self.manager, self.operation, &self.api_version, self.subresource.as_deref())
    }

    /// How a conflict names this manager (upstream `printManager`):
    /// `"kubectl-edit" with subresource "status" using apps/v1`.
    pub fn describe(&self) -> String {
        let mut s = Value::String(self.manager.clone()).to_string();
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {}", Value::String(sub.clone())));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }
}

fn identity(manager: &str, operation: Operation, api_version: &str, subresource: Option<&str>) -> Identity {
    Identity {
        manager: manager.to_string(),
        operation,
        api_version: if operation == Operation::Apply { String::new() } else { api_version.to_string() },
        subresource: subresource.unwrap_or_default().to_string(),
    }
}

/// The decoded `metadata.managedFields` of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields {
    pub entries: Vec<ManagedFieldsEntry>,
}

impl ManagedFields {
    /// Decodes a `metadata.managedFields` value (upstream `DecodeManagedFields`): every entry
    /// needs operation `Apply` or `Update`, an apiVersion and fieldsType `FieldsV1`. Entries of
    /// the same manager identity collapse, the later one winning. Null or absent is empty.
    pub fn decode(v: Option<&Value>) -> Result<Self, FieldsError> {
        let items = match v {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(items)) => items,
            Some(other) => return Err(FieldsError::BadEntry(0, format!("managedFields must be a list, got {other}"))),
        };
        let mut out = Self::default();
        for (i, e) in items.iter().enumerate() {
            let bad = |why: &str| FieldsError::BadEntry(i, why.to_string());
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
            let operation = match s("operation") {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err(bad("operation must be `Apply` or `Update`")),
            };
            if s("apiVersion").is_empty() {
                return Err(bad("apiVersion must not be empty"));
            }
            match s("fieldsType") {
                "FieldsV1" => {}
                "" => return Err(bad("missing fieldsType")),
                other => return Err(bad(&format!("invalid fieldsType {other:?}"))),
            }
            let fields = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(f) => FieldSet::from_fields_v1(f)?,
            };
            let entry = ManagedFieldsEntry {
                manager: s("manager").to_string(),
                operation,
                api_version: s("apiVersion").to_string(),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                subresource: Some(s("subresource")).filter(|x| !x.is_empty()).map(str::to_string),
                fields,
            };
            out.put(entry);
        }
        Ok(out)
    }

    /// The managedFields of `obj`.
    pub fn of(obj: &Value) -> Result<Self, FieldsError> {
        Self::decode(obj.pointer("/metadata/managedFields"))
    }

    /// Whether a client-sent value asks to clear managedFields: `[]` or `[{}]`
    /// (upstream `isResetManagedFields`).
    pub fn is_reset(v: &Value) -> bool {
        match v.as_array().map(Vec::as_slice) {
            Some([]) => true,
            Some([only]) => only.as_object().is_some_and(|m| {
                m.values().all(|x| x.is_null() || x.as_str() == Some("") || x.as_object().is_some_and(Map::is_empty))
            }),
            _ => false,
        }
    }

    /// The managers a write starts from (upstream `decodeLiveOrNew`): the ones the client sent
    /// if it sent any that decode, none if it sent a reset, else the live object's.
    pub fn requested_or_live(requested: Option<&Value>, live: ManagedFields) -> ManagedFields {
        match requested {
            Some(v) if Self::is_reset(v) => ManagedFields::default(),
            Some(v) if !v.is_null() => match Self::decode(Some(v)) {
                Ok(m) if !m.entries.is_empty() => m,
                _ => live,
            },
            _ => live,
        }
    }

    /// The entries, sorted as upstream stores them: `Apply` before `Update`, then by time,
    /// manager, apiVersion and subresource.
    pub fn encode(&self) -> Value {
        let mut entries: Vec<&ManagedFieldsEntry> = self.entries.iter().collect();
        let seconds = |e: &ManagedFieldsEntry| {
            e.time
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp())
                .unwrap_or(0)
        };
        entries.sort_by(|a, b| {
            (a.operation, seconds(a), &a.manager, &a.api_version, &a.subresource).cmp(&(
                b.operation,
                seconds(b),
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
        });
        Value::Array(entries.into_iter().map(ManagedFieldsEntry::encode).collect())
    }

    /// Stores the entries in `obj`'s metadata, removing `managedFields` when there are none.
    pub fn write_into(&self, obj: &mut Value) {
        let Some(o) = obj.as_object_mut() else { return };
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        let Some(m) = meta.as_object_mut() else { return };
        if self.entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), self.encode());
        }
    }

    fn position(&self, id: &Identity) -> Option<usize> {
        self.entries.iter().position(|e| e.identity() == *id)
    }

    /// Adds `entry`, replacing the entry of the same manager identity.
    fn put(&mut self, entry: ManagedFieldsEntry) {
        match self.position(&entry.identity()) {
            Some(i) => self.entries[i] = entry,
            None => self.entries.push(entry),
        }
    }

    /// Drops the fields no manager may own and the entries left empty.
    fn finish(&mut self) {
        let strip = stripped_paths();
        for e in &mut self.entries {
            e.fields = e.fields.difference(strip);
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }
}

/// Fields never recorded in managedFields (upstream `stripMetaManager`). Built once: every
/// write consults it, and building it was a tenth of a create's managedFields work.
fn stripped_paths() -> &'static FieldSet {
    static PATHS: LazyLock<FieldSet> = LazyLock::new(|| {
        let mut s = FieldSet::from_paths(&[
            Path::fields(&["apiVersion"]),
            Path::fields(&["kind"]),
            Path::fields(&["metadata"]),
        ]);
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            s.insert(&Path::fields(&["metadata", f]).0);
        }
        s
    });
    &PATHS
}

/// Top-level fields a write through one endpoint does not own: the fields its strategy resets
/// (upstream `ResetFieldsStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetFields {
    #[default]
    None,
    /// The main resource of a kind with a status subresource: `status` is not written there.
    Status,
    /// The status subresource: only `status` (and metadata) is written there.
    AllButStatus,
}

impl ResetFields {
    /// `obj` without the reset fields.
    pub fn strip(self, obj: &Value) -> Value {
        self.view(obj).into_owned()
    }

    /// `obj` without the reset fields, copied only when it has some.
    fn view(self, obj: &Value) -> Cow<'_, Value> {
        let kept = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata" | "status");
        let untouched = match (self, obj.as_object()) {
            (_, None) | (ResetFields::None, _) => true,
            (ResetFields::Status, Some(m)) => !m.contains_key("status"),
            (ResetFields::AllButStatus, Some(m)) => m.keys().all(|k| kept(k)),
        };
        if untouched {
            return Cow::Borrowed(obj);
        }
        let mut v = obj.clone();
        if let Some(m) = v.as_object_mut() {
            match self {
                ResetFields::None => {}
                ResetFields::Status => {
                    m.remove("status");
                }
                ResetFields::AllButStatus => m.retain(|k, _| kept(k)),
            }
        }
        Cow::Owned(v)
    }
}

/// `obj` without `metadata.managedFields`, copied only when it has them.
fn without_managed_fields(obj: Cow<'_, Value>) -> Cow<'_, Value> {
    // Not `pointer`: it copies its path apart on every call, and this runs on every write.
    if obj.get("metadata").and_then(|m| m.get("managedFields")).is_none() {
        return obj;
    }
    let mut v = obj.into_owned();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    Cow::Owned(v)
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, as [`ManagedFieldsEntry::describe`] prints it.
    pub manager: String,
    pub path: Path,
}

/// The conflicts that fail an apply without `force`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// upstream `getConflictMessage`: one conflict on one line, several grouped by manager.
    pub fn message(&self) -> String {
        if let [only] = self.0.as_slice() {
            return format!("Apply failed with 1 conflict: conflict with {}: {}", only.manager, only.path);
        }
        let mut lines: Vec<String> = Vec::new();
        let mut current: Option<&str> = None;
        for c in &self.0 {
            if current != Some(c.manager.as_str()) {
                lines.push(format!("conflicts with {}:", c.manager));
                current = Some(c.manager.as_str());
            }
            lines.push(format!("- {}", c.path));
        }
        format!("Apply failed with {} conflicts: {}", self.0.len(), lines.join("\n"))
    }

    /// The 409 a client sees: reason `Conflict`, one `FieldManagerConflict` cause per field.
    pub fn to_api_error(&self) -> ApiError {
        let mut e = ApiError::new(409, "Conflict", self.message());
        e.details = Some(Box::new(Details {
            causes: self
                .0
                .iter()
                .map(|c| ("FieldManagerConflict".into(), format!("conflict with {}", c.manager), c.path.to_string()))
                .collect(),
            ..Default::default()
        }));
        e
    }
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Conflicts(#[from] Conflicts),
    /// The applied configuration is not acceptable (upstream answers 400).
    #[error("{0}")]
    BadRequest(String),
}

impl ApplyError {
    pub fn to_api_error(&self) -> ApiError {
        match self {
            ApplyError::Conflicts(c) => c.to_api_error(),
            ApplyError::BadRequest(m) => ApiError::bad_request(m.clone()),
        }
    }
}

/// Who applies, and how.
#[derive(Debug, Clone, Copy)]
pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    /// The apiVersion the configuration was applied at.
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    /// `force=true`: take the conflicting fields instead of failing.
    pub force: bool,
    /// The time recorded in the manager's entry (RFC 3339).
    pub now: &'a str,
    /// OpenAPI type of the object, from `patch::meta::root_type`.
    pub root_type: Option<&'a str>,
    pub reset: ResetFields,
}

/// Who writes, for a create, update or patch.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub now: &'a str,
    pub root_type: Option<&'a str>,
    pub reset: ResetFields,
}

/// The result of an apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The new object, without `metadata.managedFields`.
    pub object: Value,
    pub managed: ManagedFields,
}

pub(crate) fn root_of(root_type: Option<&str>) -> FieldType {
    typed::root(root_type.and_then(crate::patch::meta::type_meta).map(|t| t.name))
}

/// The annotation kubectl's client-side apply keeps its last configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager whose applies upgrade from client-side apply (upstream: exactly `kubectl`).
const KUBECTL: &str = "kubectl";

/// Server-side apply of `config` by `req.manager` to `live` (an empty object for a create).
///
/// upstream semantics:
/// - the result is `live` with `config` merged in, minus the fields the manager applied last
///   time, does not apply now, and no other manager owns;
/// - a field that changes value and that another manager owns is a conflict; without `force`
///   the apply fails, with `force` the field moves to this manager;
/// - the manager's `Apply` entry becomes exactly the fields of `config`; other managers lose the
///   fields this apply changed or removed; empty entries are dropped;
/// - `kubectl` may take fields from the client-side apply manager whose values still match
///   its last-applied annotation, and keeps that annotation in step with the configuration.
pub fn apply(live: &Value, config: &Value, managed: &ManagedFields, req: &ApplyRequest) -> Result<Applied, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::BadRequest("the applied configuration must be an object".into()));
    }
    if config.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
        return Err(ApplyError::BadRequest("metadata.managedFields must be nil".into()));
    }
    let t = root_of(req.root_type);
    let live = without_managed_fields(Cow::Borrowed(live));
    let cfg = typed::strip_nulls(&req.reset.view(config));
    let mut applied = match apply_once(&live, &cfg, managed, req, req.force, &t) {
        Err(conflicts) if req.manager == KUBECTL && !req.force => {
            // upstream lastAppliedManager: fields whose value still matches the client-side
            // apply annotation may be taken over without a conflict.
            let allowed = allowed_from_last_applied(&live, &t);
            let remaining: Vec<Conflict> = conflicts.0.into_iter().filter(|c| !allowed.has(&c.path.0)).collect();
            if !remaining.is_empty() {
                return Err(Conflicts(remaining).into());
            }
            apply_once(&live, &cfg, managed, req, true, &t)?
        }
        other => other?,
    };
    if req.manager == KUBECTL && last_applied(&applied.object).is_some_and(|s| !s.is_empty()) {
        set_last_applied(&mut applied.object, &build_last_applied(config));
    }
    Ok(applied)
}

fn apply_once(
    live: &Value,
    cfg: &Value,
    managed: &ManagedFields,
    req: &ApplyRequest,
    force: bool,
    t: &FieldType,
) -> Result<Applied, Conflicts> {
    let me = identity(req.manager, Operation::Apply, req.api_version, req.subresource);
    let applied_set = typed::field_set(cfg, t);
    let merged = typed::merge(live, cfg, t);
    let previous = managed.position(&me).map(|i| &managed.entries[i]);

    // prune: what this manager applied last time and nobody claims any more.
    let object = match previous.filter(|p| !p.fields.is_empty()) {
        Some(prev) => {
            let mut owned = applied_set.clone();
            for e in managed.entries.iter().filter(|e| e.identity() != me) {
                owned = owned.union(&e.fields);
            }
            let gone = prev
                .fields
                .with_field_ancestors()
                .difference(&owned.with_field_ancestors())
                .difference(stripped_paths());
            typed::remove(&merged, &gone, t)
        }
        None => merged,
    };

    let cmp = typed::compare(live, &object, t);
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    let mut out = ManagedFields::default();
    let mut others: Vec<&ManagedFieldsEntry> = managed.entries.iter().filter(|e| e.identity() != me).collect();
    others.sort_by_key(|e| e.identity());
    for e in others {
        let taken = e.fields.intersection(&changed);
        for p in taken.paths() {
            conflicts.push(Conflict { manager: e.describe(), path: p });
        }
        let mut kept = e.clone();
        kept.fields = e.fields.difference(&taken).difference(&cmp.removed);
        out.entries.push(kept);
    }
    if !force && !conflicts.is_empty() {
        return Err(Conflicts(conflicts));
    }
    let object_changed = object != *live;
    let time = match previous {
        Some(p) if !object_changed => p.time.clone(),
        _ => Some(req.now.to_string()),
    };
    out.put(ManagedFieldsEntry {
        manager: req.manager.to_string(),
        operation: Operation::Apply,
        api_version: req.api_version.to_string(),
        time,
        subresource: req.subresource.map(str::to_string),
        fields: applied_set,
    });
    out.finish();
    Ok(Applied { object, managed: out })
}

/// The managers after a non-apply write turned `old` into `new` (for a create, `old` is an
/// empty object): the fields the write added or changed move to `req.manager`'s `Update`
/// entry, every manager loses the fields the write removed, and the writer's entry gets a new
/// time only when it took fields.
pub fn update(old: &Value, new: &Value, managed: &ManagedFields, req: &UpdateRequest) -> ManagedFields {
    let t = root_of(req.root_type);
    let old = without_managed_fields(req.reset.view(old));
    let new = without_managed_fields(req.reset.view(new));
    let cmp = typed::compare(&old, &new, &t);
    let changed = cmp.changed();
    let strip = stripped_paths();
    let mine = changed.difference(&cmp.removed).difference(strip);
    let mut out = managed.clone();
    for e in &mut out.entries {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    if !mine.is_empty() {
        let me = identity(req.manager, Operation::Update, req.api_version, req.subresource);
        let previous = out.position(&me).map(|i| out.entries[i].fields.clone()).unwrap_or_default();
        out.put(ManagedFieldsEntry {
            manager: req.manager.to_string(),
            operation: Operation::Update,
            api_version: req.api_version.to_string(),
            time: Some(req.now.to_string()),
            subresource: req.subresource.map(str::to_string),
            fields: previous.union(&mine),
        });
    }
    out.finish();
    out
}

fn last_applied(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations")?.get(LAST_APPLIED_ANNOTATION)?.as_str()
}

fn set_last_applied(obj: &mut Value, value: &str) {
    if let Some(a) = obj.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.insert(LAST_APPLIED_ANNOTATION.into(), json!(value));
    }
}

/// upstream `buildLastApplied`: the applied configuration without the annotation itself.
fn build_last_applied(config: &Value) -> String {
    let mut c = config.clone();
    if let Some(a) = c.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    format!("{c}\n")
}

/// The fields of the last-applied annotation whose values the live object still has.
fn allowed_from_last_applied(live: &Value, t: &FieldType) -> FieldSet {
    let Some(text) = last_applied(live).filter(|s| !s.is_empty()) else { return FieldSet::new() };
    let Ok(last) = serde_json::from_str::<Value>(text) else { return FieldSet::new() };
    let last = typed::strip_nulls(&last);
    let cmp = typed::compare(&last, live, t);
    typed::field_set(&last, t).difference(&cmp.modified).difference(&cmp.added).difference(&cmp.removed)
}
