//! One Raft member: raft-rs' `RawNode` over the RocksDB log, applying to the
//! MVCC state machine.
//!
//! This is a single-threaded, clock-free core: callers tick it, step
//! messages into it, propose, and call [`Member::handle_ready`]. The real
//! server drives it from a dedicated thread with a wall clock and QUIC; the
//! simulation tests drive several of them from one seeded loop.

use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, EntryType, Message, MessageType};
use raft::{RawNode, ReadState, StateRole};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::mvcc::{Mvcc, Response};
use crate::pb::skiffstore::{Command, ConfChangeContext, MemberInfo};
use crate::raftlog::RaftLog;

/// Raft timing and log retention, in ticks and entries.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub id: u64,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Upper bound (exclusive) of the randomized election timeout; 0 means
    /// twice `election_tick`.
    pub max_election_tick: usize,
    /// Compact the log once it holds this many applied entries...
    pub compact_threshold: u64,
    /// ...keeping this many, so a briefly lagging follower catches up from
    /// the log instead of a snapshot.
    pub compact_retain: u64,
}

impl MemberConfig {
    pub fn new(id: u64) -> Self {
        MemberConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_election_tick: 0,
            compact_threshold: 20_000,
            compact_retain: 5_000,
        }
    }
}

/// The outcome of one applied proposal, for the member that proposed it.
#[derive(Debug)]
pub struct Applied {
    pub proposer: u64,
    pub id: u64,
    pub result: Result<Response>,
}

/// What one round of [`Member::handle_ready`] produced besides messages.
#[derive(Debug, Default)]
pub struct ReadyOut {
    pub applied: Vec<Applied>,
    pub read_states: Vec<ReadState>,
    /// Set when this member's view of who leads changed.
    pub leader_changed: Option<(u64, StateRole)>,
    /// The member table changed (conf change or snapshot): refresh peers.
    pub members_changed: bool,
    /// This member was removed from the cluster.
    pub removed: bool,
    /// Index and term of every applied entry, in order (for the simulation's
    /// invariant checks).
    pub applied_log: Vec<(u64, u64)>,
}

pub struct Member {
    raw: RawNode<RaftLog>,
    mvcc: Arc<Mvcc>,
    cfg: MemberConfig,
    leader: u64,
    role: StateRole,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.cfg.id)
            .field("role", &self.role)
            .finish()
    }
}

/// raft-rs logs through slog; we keep its warnings and errors.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV;
        let level = record.level();
        let wanted = match level {
            slog::Level::Critical | slog::Level::Error | slog::Level::Warning => true,
            _ => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        };
        if !wanted {
            return Ok(());
        }
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        match level {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}{}", record.msg(), kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}{}", record.msg(), kv.0),
            _ => tracing::debug!(target: "raft", "{}{}", record.msg(), kv.0),
        }
        Ok(())
    }
}

/// raft-rs' structured fields, as text.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Member {
    /// Opens the member over an opened store. `voters` seeds the
    /// configuration of a brand-new cluster; it is ignored when the log
    /// already holds a configuration.
    pub fn open(db: &Db, mvcc: Arc<Mvcc>, cfg: MemberConfig, voters: &[u64]) -> Result<Member> {
        let mut log = RaftLog::open(db, mvcc.clone())?;
        let fresh = log.conf_state().voters.is_empty()
            && log.conf_state().learners.is_empty()
            && log.last_index_now() == 0;
        if fresh && !voters.is_empty() {
            // The applied index first: the synced bootstrap write below makes
            // it durable too (one shared WAL).
            mvcc.set_applied(1)?;
            log.bootstrap(voters)?;
        }
        let applied = mvcc.applied_index();
        if applied > log.last_index_now() {
            return Err(Error::Corrupt(format!(
                "state machine applied index {applied} is past the raft log end {}",
                log.last_index_now()
            )));
        }
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            max_election_tick: cfg.max_election_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            max_committed_size_per_ready: 16 << 20,
            ..Default::default()
        };
        rc.validate()?;
        let raw = RawNode::new(&rc, log, &raft_logger())?;
        Ok(Member {
            raw,
            mvcc,
            cfg,
            leader: 0,
            role: StateRole::Follower,
        })
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    pub fn leader(&self) -> u64 {
        self.raw.raft.leader_id
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    pub fn voters(&self) -> Vec<u64> {
        self.raw.store().conf_state().voters.clone()
    }

    pub fn learners(&self) -> Vec<u64> {
        self.raw.store().conf_state().learners.clone()
    }

    /// Whether `id` has caught up enough to be promoted (leader only).
    pub fn is_caught_up(&self, id: u64) -> bool {
        let committed = self.raw.raft.raft_log.committed;
        self.raw
            .raft
            .prs()
            .get(id)
            .is_some_and(|p| p.matched + 100 >= committed)
    }

    pub fn tick(&mut self) -> bool {
        self.raw.tick()
    }

    pub fn campaign(&mut self) -> Result<()> {
        Ok(self.raw.campaign()?)
    }

    pub fn step(&mut self, m: Message) -> Result<()> {
        match self.raw.step(m) {
            // Messages from members that left, or stale ones, are normal.
            Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            r => Ok(r?),
        }
    }

    pub fn propose(&mut self, cmd: &Command) -> Result<()> {
        match self.raw.propose(vec![], cmd.encode_to_vec()) {
            Err(raft::Error::ProposalDropped) => Err(Error::NoLeader),
            r => Ok(r?),
        }
    }

    pub fn propose_conf_change(
        &mut self,
        change: ConfChangeType,
        node_id: u64,
        ctx: &ConfChangeContext,
    ) -> Result<()> {
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = node_id;
        match self.raw.propose_conf_change(ctx.encode_to_vec(), cc) {
            Err(raft::Error::ProposalDropped) => Err(Error::NoLeader),
            r => Ok(r?),
        }
    }

    pub fn read_index(&mut self, ctx: Vec<u8>) {
        self.raw.read_index(ctx);
    }

    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw.report_snapshot(id, status);
    }

    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Persists, sends and applies whatever Raft has ready. Messages that
    /// may go before the log is persisted are handed to `send` first (the
    /// leader replicates while it writes its own copy); the rest after the
    /// synced write.
    pub fn handle_ready(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
        now: Instant,
    ) -> Result<ReadyOut> {
        let mut out = ReadyOut::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.raw.mut_store().apply_snapshot(&snap)?;
            out.members_changed = true;
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed, now, &mut out)?;
        let entries = rd.take_entries();
        let hs = rd.hs().cloned();
        if !entries.is_empty() || hs.is_some() {
            self.raw
                .mut_store()
                .append(&entries, hs.as_ref(), rd.must_sync())?;
        }
        out.read_states = rd.take_read_states();
        if let Some(ss) = rd.ss()
            && (ss.leader_id != self.leader || ss.raft_state != self.role)
        {
            self.leader = ss.leader_id;
            self.role = ss.raft_state;
            out.leader_changed = Some((ss.leader_id, ss.raft_state));
        }
        let persisted = rd.take_persisted_messages();
        if !persisted.is_empty() {
            send(persisted);
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        let msgs = light.take_messages();
        if !msgs.is_empty() {
            send(msgs);
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed, now, &mut out)?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(out)
    }

    fn apply_entries(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
        now: Instant,
        out: &mut ReadyOut,
    ) -> Result<()> {
        let mut batch: Vec<(u64, Option<Command>)> = Vec::new();
        for e in entries {
            out.applied_log.push((e.index, e.term));
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        batch.push((e.index, None));
                    } else {
                        let cmd = Command::decode(&e.data[..]).map_err(|err| {
                            Error::Corrupt(format!("log entry {} is not a command: {err}", e.index))
                        })?;
                        batch.push((e.index, Some(cmd)));
                    }
                }
                EntryType::EntryConfChange => {
                    self.flush(&mut batch, now, out)?;
                    self.apply_conf_change(&e, now, out)?;
                }
                EntryType::EntryConfChangeV2 => {
                    return Err(Error::Corrupt(format!(
                        "log entry {} is a joint conf change, which skiff never proposes",
                        e.index
                    )));
                }
            }
        }
        self.flush(&mut batch, now, out)
    }

    fn flush(
        &mut self,
        batch: &mut Vec<(u64, Option<Command>)>,
        now: Instant,
        out: &mut ReadyOut,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let results = self.mvcc.apply(batch, None, now)?;
        batch.clear();
        out.applied
            .extend(results.into_iter().map(|(proposer, id, result)| Applied {
                proposer,
                id,
                result,
            }));
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        e: &raft::eraftpb::Entry,
        now: Instant,
        out: &mut ReadyOut,
    ) -> Result<()> {
        let cc = ConfChange::parse_from_bytes(&e.data)
            .map_err(|err| Error::Corrupt(format!("conf change at {}: {err}", e.index)))?;
        let ctx = ConfChangeContext::decode(&e.context[..])
            .map_err(|err| Error::Corrupt(format!("conf change context at {}: {err}", e.index)))?;
        let mut members = self.mvcc.members();
        let result = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                self.raw.mut_store().set_conf_state(cs)?;
                let node = cc.node_id;
                match cc.get_change_type() {
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                        let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                        let proposed = ctx.member.clone().unwrap_or_default();
                        match members.iter_mut().find(|m| m.id == node) {
                            // A promotion or a peer-URL update: the name and
                            // client URLs the member published stay.
                            Some(m) => {
                                m.is_learner = learner;
                                if !proposed.peer_urls.is_empty() {
                                    m.peer_urls = proposed.peer_urls;
                                }
                            }
                            None => members.push(MemberInfo {
                                id: node,
                                is_learner: learner,
                                ..proposed
                            }),
                        }
                    }
                    ConfChangeType::RemoveNode => {
                        members.retain(|m| m.id != node);
                        if node == self.cfg.id {
                            out.removed = true;
                        }
                    }
                }
                members.sort_by_key(|m| m.id);
                Ok(Response::Members(members.clone()))
            }
            Err(err) => Err(Error::InvalidArgument(format!(
                "conf change rejected: {err}"
            ))),
        };
        let new_members = result.is_ok().then_some(members);
        self.mvcc.apply(&[(e.index, None)], new_members, now)?;
        out.members_changed = true;
        out.applied.push(Applied {
            proposer: ctx.proposer,
            id: ctx.id,
            result,
        });
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.mvcc.applied_index();
        let first = self.raw.store().first_index_now();
        if applied > first && applied - first >= self.cfg.compact_threshold {
            let to = applied.saturating_sub(self.cfg.compact_retain).max(first);
            self.raw.mut_store().compact(to)?;
        }
        Ok(())
    }

    /// Whether a message must wait for a snapshot (for the transport).
    pub fn is_snapshot(m: &Message) -> bool {
        m.get_msg_type() == MessageType::MsgSnapshot
    }

    /// The members as the state machine records them.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.mvcc.members()
    }
}
