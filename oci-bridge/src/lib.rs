//! Linux containers for skiff: OCI images pulled from a registry and run by
//! `runc`, behind the same [`skiff_sdk::runtime::Runtime`] trait as the wasm
//! runtime, so the node agent drives both alike.
//!
//! - [`image`]: pull (the sdk's registry client), verify, apply the layers
//!   into a root filesystem per image.
//! - [`spec`]: the OCI runtime spec of a container (pure).
//! - [`runtime`]: [`OciRuntime`], bundles on overlayfs, `runc run`, logs,
//!   stop with grace, OOM and deadline reasons, exec.
//! - [`attach`]: a container's own stdin, terminal and live output, for
//!   `kubectl attach` and `kubectl run -i`.
//! - [`exec`]: interactive exec, streams connected as they flow, on a
//!   pseudo-terminal if asked.

pub mod attach;
pub mod exec;
pub mod image;
pub mod runtime;
pub mod spec;

pub use exec::{ExecOptions, ExecSession};
pub use runtime::{OciConfig, OciRuntime, find_runc, host_supports_containers, kube_arch};
