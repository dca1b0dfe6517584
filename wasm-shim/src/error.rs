//! The crate's errors. Guest misbehaviour is not among them: it becomes a
//! container's termination (see `outcome.rs`).

use std::path::PathBuf;

use skiff_sdk::registry::RegistryError;
use skiff_sdk::runtime::{ContainerId, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the wasmtime engine: {0}")]
    Engine(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compile cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The bytes are not a module or component this runtime can run.
    #[error("{image}: {message}")]
    InvalidWasm { image: String, message: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("container {0} is not an http handler")]
    NotHttpHandler(ContainerId),
    #[error("container {0} is not running")]
    NotRunning(ContainerId),
    #[error("starting the wasm worker threads: {0}")]
    Threads(std::io::Error),
}

impl From<Error> for RuntimeError {
    fn from(e: Error) -> RuntimeError {
        match e {
            Error::Runtime(e) => e,
            Error::Registry(e) => RuntimeError::Pull {
                image: String::new(),
                message: e.to_string(),
            },
            Error::InvalidWasm { image, message } => RuntimeError::InvalidImage { image, message },
            Error::Read { path, source } => RuntimeError::Io {
                context: format!("reading {}", path.display()),
                source,
            },
            Error::NotHttpHandler(id) => RuntimeError::InvalidSpec {
                id,
                field: "workload",
                message: "not an http handler".into(),
            },
            Error::NotRunning(id) => RuntimeError::InvalidSpec {
                id,
                field: "state",
                message: "not running".into(),
            },
            other => RuntimeError::Internal(other.to_string()),
        }
    }
}
