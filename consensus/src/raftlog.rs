//! The Raft log and hard state in RocksDB: raft-rs' [`Storage`].
//!
//! raft-rs reads through `&self` and never writes; the Raft loop writes
//! through the `&mut self` methods here after each `Ready`. The newest entries
//! are also kept in memory, because a leader reads them back right away to
//! replicate them.

use std::collections::VecDeque;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use rocksdb::{WriteBatch, WriteOptions};

use crate::db::{CF_META, CF_RAFT, Db};
use crate::error::{Error, Result};
use crate::mvcc::Mvcc;

const HARD_STATE_KEY: &[u8] = b"raft_hard_state";
const CONF_STATE_KEY: &[u8] = b"raft_conf_state";
const SNAP_META_KEY: &[u8] = b"raft_snapshot_meta";
const CACHE_LIMIT: usize = 4096;

fn idx_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what}: {e}"))
}

/// raft-rs storage over the member's RocksDB.
pub struct RaftLog {
    db: Arc<rocksdb::DB>,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry folded into the state machine and
    /// dropped from the log (0, 0 for a log that was never compacted).
    snap_index: u64,
    snap_term: u64,
    last_index: u64,
    cache: VecDeque<Entry>,
    mvcc: Arc<Mvcc>,
}

impl RaftLog {
    pub fn open(db: &Db, mvcc: Arc<Mvcc>) -> Result<RaftLog> {
        let raw = db.db.clone();
        let meta = db.cf(CF_META);
        let hard_state = match raw.get_cf(meta, HARD_STATE_KEY)? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| corrupt("hard state", e))?,
            None => HardState::default(),
        };
        let conf_state = match raw.get_cf(meta, CONF_STATE_KEY)? {
            Some(b) => ConfState::parse_from_bytes(&b).map_err(|e| corrupt("conf state", e))?,
            None => ConfState::default(),
        };
        let (snap_index, snap_term) = match raw.get_cf(meta, SNAP_META_KEY)? {
            Some(b) if b.len() == 16 => (
                u64::from_be_bytes(b[..8].try_into().expect("8")),
                u64::from_be_bytes(b[8..].try_into().expect("8")),
            ),
            Some(_) => {
                return Err(Error::Corrupt(
                    "snapshot metadata has the wrong size".into(),
                ));
            }
            None => (0, 0),
        };
        let last_index = {
            let mut it = raw.raw_iterator_cf(db.cf(CF_RAFT));
            it.seek_to_last();
            let last = match it.key() {
                Some(k) => u64::from_be_bytes(
                    k.try_into()
                        .map_err(|_| Error::Corrupt("raft log key is not 8 bytes".into()))?,
                ),
                None => snap_index,
            };
            it.status()?;
            last
        };
        let mut log = RaftLog {
            db: raw,
            hard_state,
            conf_state,
            snap_index,
            snap_term,
            last_index,
            cache: VecDeque::new(),
            mvcc,
        };
        if log.last_index < log.snap_index {
            return Err(Error::Corrupt(format!(
                "raft log ends at {} before its snapshot index {}",
                log.last_index, log.snap_index
            )));
        }
        if log.hard_state.commit > log.last_index {
            return Err(Error::Corrupt(format!(
                "commit index {} is past the last log entry {}",
                log.hard_state.commit, log.last_index
            )));
        }
        // Warm the cache with the tail, and check the log is contiguous.
        let low = log
            .last_index
            .saturating_sub(CACHE_LIMIT as u64 / 2)
            .max(log.snap_index + 1);
        if low <= log.last_index {
            let tail = log.read_range(low, log.last_index + 1)?;
            if tail.len() as u64 != log.last_index + 1 - low {
                return Err(Error::Corrupt("raft log has a hole near its end".into()));
            }
            log.cache.extend(tail);
        }
        Ok(log)
    }

    fn meta_cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("meta cf")
    }

    fn raft_cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_RAFT).expect("raft cf")
    }

    fn read_range(&self, low: u64, high: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut it = self.db.raw_iterator_cf(self.raft_cf());
        it.seek(idx_key(low));
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let i = u64::from_be_bytes(k.try_into().map_err(|_| corrupt("log key", "size"))?);
            if i >= high {
                break;
            }
            if i != low + out.len() as u64 {
                return Err(Error::Corrupt(format!(
                    "raft log has a hole before index {i}"
                )));
            }
            out.push(Entry::parse_from_bytes(v).map_err(|e| corrupt("log entry", e))?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn first_index_now(&self) -> u64 {
        self.snap_index + 1
    }

    pub fn last_index_now(&self) -> u64 {
        self.last_index
    }

    /// Starts the log of a brand-new cluster member: a snapshot at index 1,
    /// term 1 holding the initial voters. Every initial member starts the
    /// same way, and a member added later has an empty log, so the leader
    /// must send it a snapshot (with the member table) before any entry.
    pub fn bootstrap(&mut self, voters: &[u64]) -> Result<()> {
        let cs = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(cs);
        let mut batch = WriteBatch::default();
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&1u64.to_be_bytes());
        m[8..].copy_from_slice(&1u64.to_be_bytes());
        batch.put_cf(self.meta_cf(), SNAP_META_KEY, m);
        let cs = snap.get_metadata().get_conf_state().clone();
        batch.put_cf(
            self.meta_cf(),
            CONF_STATE_KEY,
            cs.write_to_bytes()
                .map_err(|e| corrupt("encode conf state", e))?,
        );
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        batch.put_cf(
            self.meta_cf(),
            HARD_STATE_KEY,
            hs.write_to_bytes()
                .map_err(|e| corrupt("encode hard state", e))?,
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.snap_index = 1;
        self.snap_term = 1;
        self.last_index = 1;
        self.conf_state = cs;
        self.hard_state = hs;
        Ok(())
    }

    /// Appends entries (replacing any conflicting tail) and the hard state,
    /// in one write, synced when `sync` — Raft requires that before the
    /// messages that depend on them are sent.
    pub fn append(&mut self, entries: &[Entry], hs: Option<&HardState>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        if let Some(first) = entries.first() {
            let first = first.index;
            if first <= self.snap_index {
                return Err(Error::Corrupt(format!(
                    "append at {first} overlaps the compacted log (snapshot at {})",
                    self.snap_index
                )));
            }
            if first > self.last_index + 1 {
                return Err(Error::Corrupt(format!(
                    "append at {first} leaves a hole after {}",
                    self.last_index
                )));
            }
            if first <= self.last_index {
                batch.delete_range_cf(self.raft_cf(), idx_key(first), idx_key(self.last_index + 1));
            }
            for e in entries {
                let bytes = e.write_to_bytes().map_err(|e| corrupt("encode entry", e))?;
                batch.put_cf(self.raft_cf(), idx_key(e.index), bytes);
            }
        }
        if let Some(hs) = hs {
            let bytes = hs
                .write_to_bytes()
                .map_err(|e| corrupt("encode hard state", e))?;
            batch.put_cf(self.meta_cf(), HARD_STATE_KEY, bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;

        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        if let Some(first) = entries.first().map(|e| e.index) {
            while self.cache.back().is_some_and(|e| e.index >= first) {
                self.cache.pop_back();
            }
            if self.cache.back().is_some_and(|e| e.index + 1 != first) {
                self.cache.clear();
            }
            self.cache.extend(entries.iter().cloned());
            while self.cache.len() > CACHE_LIMIT {
                self.cache.pop_front();
            }
            self.last_index = entries.last().expect("non-empty").index;
        }
        Ok(())
    }

    /// Records a new commit index. Not synced: a lost commit index is learnt
    /// again from the leader.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        if commit == self.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.append(&[], Some(&hs), false)
    }

    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        let bytes = cs
            .write_to_bytes()
            .map_err(|e| corrupt("encode conf state", e))?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.meta_cf(), CONF_STATE_KEY, bytes, &wo)?;
        self.conf_state = cs;
        Ok(())
    }

    /// Drops log entries before `index`; the state machine must already have
    /// applied them. The synced write makes the state machine's earlier
    /// writes durable too (one shared WAL), so the entries are never needed
    /// again.
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.snap_index + 1 {
            return Ok(());
        }
        if index > self.last_index + 1 {
            return Err(Error::Corrupt(format!(
                "compact to {index} past the log end"
            )));
        }
        let term = self.term(index - 1).map_err(Error::Raft)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.raft_cf(), idx_key(0), idx_key(index));
        let mut meta = [0u8; 16];
        meta[..8].copy_from_slice(&(index - 1).to_be_bytes());
        meta[8..].copy_from_slice(&term.to_be_bytes());
        batch.put_cf(self.meta_cf(), SNAP_META_KEY, meta);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.snap_index = index - 1;
        self.snap_term = term;
        while self.cache.front().is_some_and(|e| e.index < index) {
            self.cache.pop_front();
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader: the state machine is
    /// replaced by its data and the whole log by its metadata.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        self.mvcc.restore(snap.get_data(), meta.index)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.raft_cf(), idx_key(0), idx_key(u64::MAX));
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&meta.index.to_be_bytes());
        m[8..].copy_from_slice(&meta.term.to_be_bytes());
        batch.put_cf(self.meta_cf(), SNAP_META_KEY, m);
        let cs = meta.get_conf_state().clone();
        batch.put_cf(
            self.meta_cf(),
            CONF_STATE_KEY,
            cs.write_to_bytes()
                .map_err(|e| corrupt("encode conf state", e))?,
        );
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        batch.put_cf(
            self.meta_cf(),
            HARD_STATE_KEY,
            hs.write_to_bytes()
                .map_err(|e| corrupt("encode hard state", e))?,
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.snap_index = meta.index;
        self.snap_term = meta.term;
        self.last_index = meta.index;
        self.conf_state = cs;
        self.hard_state = hs;
        self.cache.clear();
        Ok(())
    }

    /// A snapshot of the state machine as applied now. Only called on the
    /// Raft thread, so the applied state cannot move underneath it.
    pub fn build_snapshot(&self) -> Result<Snapshot> {
        let applied = self.mvcc.applied_index();
        let term = self.term(applied).map_err(Error::Raft)?;
        let mut snap = Snapshot::default();
        snap.set_data(self.mvcc.dump()?.into());
        let mut meta = SnapshotMetadata {
            index: applied,
            term,
            ..Default::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        snap.set_metadata(meta);
        Ok(snap)
    }
}

fn storage_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut ents = match self.cache.front() {
            Some(f) if f.index <= low => {
                let start = (low - f.index) as usize;
                let end = (high - f.index) as usize;
                self.cache.range(start..end).cloned().collect()
            }
            _ => self.read_range(low, high).map_err(storage_err)?,
        };
        if let Some(max) = max_size.into() {
            let mut size = 0u64;
            let mut keep = 0;
            for e in &ents {
                size += e.compute_size() as u64;
                if keep > 0 && size > max {
                    break;
                }
                keep += 1;
            }
            ents.truncate(keep);
        }
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_index {
            return Ok(self.snap_term);
        }
        if idx < self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(f) = self.cache.front()
            && f.index <= idx
        {
            return Ok(self.cache[(idx - f.index) as usize].term);
        }
        let ents = self.read_range(idx, idx + 1).map_err(storage_err)?;
        ents.first()
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.build_snapshot().map_err(storage_err)
    }
}
