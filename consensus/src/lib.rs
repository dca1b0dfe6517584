//! skiff's replicated store.
//!
//! A Raft-replicated ([raft-rs](raft)), RocksDB-backed, MVCC key-value store
//! with etcd's data model, served over the etcd v3 gRPC API so that `etcdctl`
//! and every etcd client work against it. It is the Kubernetes API server's
//! storage, in place of etcd. Nothing in this crate knows about Kubernetes.
//!
//! - [`mvcc`]: the state machine (revisions, ranges, txns, leases, compaction);
//! - [`raftlog`]: the Raft log and hard state in RocksDB;
//! - [`member`]: one Raft member, a clock-free core the server and the
//!   simulation tests both drive;
//! - [`server`]: the Raft thread and the async [`server::Store`] handle;
//! - [`watch`]: revision streams fanned out to watchers;
//! - [`transport`]: Raft messages between members, over QUIC with mutual TLS;
//! - [`etcd`]: the etcd v3 gRPC services;
//! - [`pki`]: the cluster certificate authority.

pub mod db;
pub mod error;
pub mod etcd;
pub mod member;
pub mod mvcc;
pub mod pki;
pub mod raftlog;
pub mod server;
pub mod transport;
pub mod watch;

pub use error::{Error, Result};
pub use server::{ClusterState, Store, StoreConfig};

/// Generated protobuf types: etcd's wire API and skiff's log entries.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod skiffstore {
        tonic::include_proto!("skiffstore");
    }
}
