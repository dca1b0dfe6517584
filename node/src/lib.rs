//! The skiff node as a library: everything the `skiff` binary runs, for
//! applications that carry a cluster member inside their own process.
//!
//! [`Server`] is a whole control-plane member (store, etcd API, Kubernetes
//! API, controllers, scheduler, agent) started from a [`ServerConfig`];
//! [`Server::client`] is an in-process `skiff_sdk` client to it. The
//! modules are the parts the binary wires together: `apiserver`,
//! `controllers`, `scheduler`, `agent`, leader election, joining, and the
//! kubectl-like client commands.

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod cli;
pub mod controllers;
pub mod join;
pub mod leader;
pub mod scheduler;
pub mod server;
pub mod spdy;
pub mod websocket;

pub use server::{Server, ServerConfig};
