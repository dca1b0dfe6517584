//! How Raft messages travel between members.
//!
//! The Raft loop hands outgoing messages to a [`Transport`] and never waits on
//! the network: `send` only queues. Delivery is best effort — Raft retries what
//! is lost — and what arrives is handed to an [`Inbox`]. QUIC with mutual TLS
//! ([`quic::QuicTransport`]) is the real implementation; tests use an
//! in-memory network behind the same trait.

pub mod quic;

use raft::eraftpb::Message;

/// Something the transport hands back to the Raft loop.
#[derive(Debug)]
pub enum Inbound {
    /// A message from a peer, to be stepped into Raft.
    Message(Message),
    /// A peer could not be reached; Raft should slow down its probes to it.
    Unreachable(u64),
    /// A snapshot sent to a peer was delivered (`true`) or failed (`false`).
    SnapshotStatus { to: u64, delivered: bool },
}

/// Where a transport delivers what it receives. Must not block.
pub trait Inbox: Send + Sync + 'static {
    fn deliver(&self, inbound: Inbound);
}

impl Inbox for crossbeam_channel::Sender<Inbound> {
    fn deliver(&self, inbound: Inbound) {
        // The Raft loop is gone only during shutdown; dropping is correct then.
        let _ = self.send(inbound);
    }
}

/// Moves Raft messages to other members.
pub trait Transport: Send + Sync + 'static {
    /// Queues messages for their `to` members. Never blocks; messages to an
    /// unknown or unreachable member are dropped and reported to the inbox
    /// as [`Inbound::Unreachable`].
    fn send(&self, msgs: Vec<Message>);
    /// Adds or changes the address of a member (host:port of its QUIC endpoint).
    fn set_peer(&self, id: u64, addr: String);
    /// Forgets a member that left the cluster.
    fn remove_peer(&self, id: u64);
}
