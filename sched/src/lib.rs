#![doc = include_str!("../README.md")]

pub mod bench;
mod compiled;
mod filter;
mod intern;
pub mod model;
mod preempt;
pub mod quantity;
mod scheduler;
mod score;
mod snapshot;

pub use filter::Reason;
pub use model::{
    InclusionPolicy, LabelSelector, ModelError, Namespaces, NodeInfo, NodeSelectorTerm, Operator,
    Platform, PodAffinityTerm, PodInfo, PreemptionPolicy, PreferredNodeTerm, Readiness,
    Requirement, Resources, SpreadConstraint, Taint, TaintEffect, Toleration, TolerationOperator,
    WASM_RUNTIME_CLASS, WeightedPodAffinityTerm, WhenUnsatisfiable,
};
pub use preempt::{DisruptionBudget, Preemption};
pub use quantity::{Quantity, QuantityError};
pub use scheduler::{Config, FitError, NodeFailure, NodeScore, Placement, Scheduler};
pub use score::{MAX_NODE_SCORE, ScoringStrategy, Weights};
pub use snapshot::{NodeUsage, Snapshot, SnapshotError};

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}
