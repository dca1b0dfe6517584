//! The store's errors, and their one conversion to the etcd wire.
//!
//! The messages of errors that etcd clients see are etcd's own
//! (`etcdserver: ...`), because clients — etcdctl among them — match on them.

use thiserror::Error;

/// Everything the store can fail with.
#[derive(Debug, Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("data directory {dir}: {why}")]
    DataDir { dir: String, why: String },
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("{0}")]
    InvalidArgument(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => Code::OutOfRange,
            Error::RequestTooLarge
            | Error::EmptyKey
            | Error::KeyNotFound
            | Error::DuplicateKey
            | Error::TooManyOps
            | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::LeaseNotFound | Error::MemberNotFound => Code::NotFound,
            Error::LeaseExists
            | Error::MemberExists
            | Error::PeerUrlExists
            | Error::NotEnoughStartedMembers
            | Error::MemberNotLearner => Code::FailedPrecondition,
            Error::NoLeader | Error::LeaderChanged | Error::Timeout | Error::Stopped => {
                Code::Unavailable
            }
            Error::Storage(_) | Error::Raft(_) | Error::DataDir { .. } | Error::Corrupt(_) => {
                Code::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}
