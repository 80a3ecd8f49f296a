//! Pure API machinery that more than one rkube binary needs: the resource table, label and
//! field selectors, patches (JSON, merge, strategic merge), field ownership for server-side
//! apply (managedFields), name and label validation, the API error type and its
//! `metav1.Status` form, and server-side Table printing. Nothing here
//! does I/O, so everything is tested by comparing values.

pub mod fields;
pub mod labels;
pub mod managedfields;
pub mod patch;
pub mod resources;
pub mod status;
pub mod table;
pub mod validation;
