//! The three patch formats of `kubectl patch` and `kubectl apply`, as pure
//! functions over JSON values.
//!
//! | content type                              | function                   |
//! |-------------------------------------------|----------------------------|
//! | `application/json-patch+json`             | [`json_patch`]             |
//! | `application/merge-patch+json`            | [`merge_patch`]            |
//! | `application/strategic-merge-patch+json`  | [`strategic_merge_patch`]  |
//!
//! `three_way_patch` (feature `apply`) builds the patch client-side
//! `kubectl apply` sends.
//!
//! A strategic merge patch needs to know which lists merge and on what key:
//! [`meta::for_kind`] gives that for the built-in kinds.
//!
//! ```
//! use serde_json::json;
//! use skiff_sdk::patch::{meta, strategic_merge_patch};
//!
//! let live = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "web", "image": "web:1"},
//!     {"name": "log", "image": "log:1"},
//! ]}}}});
//! // What `kubectl set image deployment/d web=web:2` sends.
//! let patch = json!({"spec": {"template": {"spec": {"containers": [
//!     {"name": "web", "image": "web:2"},
//! ]}}}});
//! let schema = meta::for_kind("apps/v1", "Deployment").unwrap();
//! let patched = strategic_merge_patch(&live, &patch, schema).unwrap();
//! assert_eq!(patched["spec"]["template"]["spec"]["containers"], json!([
//!     {"name": "web", "image": "web:2"},
//!     {"name": "log", "image": "log:1"},
//! ]));
//! ```

pub mod json_patch;
pub mod merge_patch;
pub mod meta;
pub mod strategic;
#[cfg(feature = "apply")]
pub mod three_way;

pub use json_patch::{JsonPatchError, json_patch};
pub use merge_patch::merge_patch;
pub use meta::{PatchSchema, PatchStrategy};
pub use strategic::{SmpError, SmpErrorKind, strategic_merge_patch};
#[cfg(feature = "apply")]
pub use three_way::three_way_patch;

/// Any patch error, for callers that handle all three formats in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Json(#[from] JsonPatchError),
    #[error(transparent)]
    Strategic(#[from] SmpError),
}
