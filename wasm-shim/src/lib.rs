#![doc = include_str!("../README.md")]

pub mod bench;
mod engine;
mod error;
mod host;
mod http;
mod runtime;

pub use engine::{CompileSource, EngineConfig, WasmKind};
pub use error::Error;
pub use host::{ClusterNames, NameResolver};
pub use http::serve;
pub use runtime::{IdleInstances, RuntimeConfig, WasmRuntime};
