//! The three PATCH formats the API server accepts, applied to objects as JSON values: RFC 6902
//! JSON patch (`application/json-patch+json`), RFC 7386 JSON merge patch
//! (`application/merge-patch+json`) and Kubernetes strategic merge patch
//! (`application/strategic-merge-patch+json`), plus [`meta`], the one table of patch metadata
//! (patch strategies, merge keys, list types) of the built-in kinds. They live together
//! because they share the error type and because the strategic merge patch must agree field by
//! field with what kubectl computes from its compiled-in types; the same table feeds the
//! `x-kubernetes-patch-*` and `x-kubernetes-list-*` extensions of our OpenAPI documents.
//! Everything here is pure: values in, values (or a [`PatchError`]) out.

pub mod json_patch;
pub mod merge;
pub mod meta;
pub mod strategic;

/// Why a patch could not be applied. The message is what the client should see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is not a valid patch of its type: not a list of operations,
    /// an unknown `op`, a strategic patch that is not an object, an unknown `$patch` directive,
    /// a list element without its merge key. Upstream answers 400 Bad Request.
    #[error("{0}")]
    BadPatch(String),
    /// The patch is well formed but does not apply to this object: a JSON patch path that does
    /// not exist, a failed `test` operation, a live list whose elements cannot be merged.
    /// Upstream answers 422 Unprocessable Entity for JSON patches.
    #[error("{0}")]
    NotApplicable(String),
}

impl PatchError {
    pub(crate) fn bad_patch(message: impl Into<String>) -> Self {
        PatchError::BadPatch(message.into())
    }

    pub(crate) fn not_applicable(message: impl Into<String>) -> Self {
        PatchError::NotApplicable(message.into())
    }

    /// The message alone, as it goes into `metav1.Status.message`.
    pub fn message(&self) -> &str {
        match self {
            PatchError::BadPatch(m) | PatchError::NotApplicable(m) => m,
        }
    }
}
