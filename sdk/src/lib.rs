//! skiff's SDK: the types without IO that the node, the scheduler and the
//! runtimes share, and (behind features) the clients that do IO.

pub mod patch;
pub mod runtime;
pub mod selector;

#[cfg(feature = "registry")]
pub mod registry;

#[cfg(feature = "client")]
pub mod client;
