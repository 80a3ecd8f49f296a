//! Server-side apply and `metadata.managedFields`: which manager owns which field of an
//! object, how an apply merges a configuration and detects conflicts, and how every other
//! write moves ownership.
//!
//! upstream: sigs.k8s.io/structured-merge-diff (`fieldpath`, `typed`, `merge`) and
//! `k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager`. The pieces:
//! - [`fieldpath`]: paths, [`FieldSet`] and its `FieldsV1` JSON form;
//! - the schema-aware walks below ([`fields_of`], [`compare`], [`merge`], [`extract`],
//!   [`remove`]), which read list types, map keys and merge keys from
//!   [`crate::patch::meta`], starting at a kind's root type;
//! - [`managers`]: the entries, [`apply`] and [`update`].
//!
//! Everything is pure: objects in, objects and sets out. The apiserver decides when to call
//! what (create, update, patch, apply) and stores the result.

pub mod fieldpath;
pub mod managers;
mod typed;

use serde_json::Value;

pub use fieldpath::{FieldSet, FieldsError, Path, PathElement};
pub use managers::{
    apply, update, Applied, ApplyError, ApplyRequest, Conflict, Conflicts, ManagedFields, ManagedFieldsEntry,
    Operation, ResetFields, UpdateRequest, LAST_APPLIED_ANNOTATION,
};
pub use typed::Comparison;

/// The fields `obj` sets, for an object of OpenAPI type `root_type` (`None` for kinds without
/// patch metadata): leaves, atomic lists and objects, and the items of granular lists.
pub fn fields_of(obj: &Value, root_type: Option<&str>) -> FieldSet {
    typed::field_set(obj, &managers::root_of(root_type))
}

/// The fields added, modified and removed from `old` to `new`.
pub fn compare(old: &Value, new: &Value, root_type: Option<&str>) -> Comparison {
    typed::compare(old, new, &managers::root_of(root_type))
}

/// `config` merged into `live` the way an apply merges (lists by their map keys).
pub fn merge(live: &Value, config: &Value, root_type: Option<&str>) -> Value {
    typed::merge(live, config, &managers::root_of(root_type))
}

/// Only the fields of `set` in `obj`.
pub fn extract(obj: &Value, set: &FieldSet, root_type: Option<&str>) -> Value {
    typed::extract(obj, set, &managers::root_of(root_type))
}

/// `obj` without the fields of `set`.
pub fn remove(obj: &Value, set: &FieldSet, root_type: Option<&str>) -> Value {
    typed::remove(obj, set, &managers::root_of(root_type))
}

#[cfg(test)]
mod tests;
