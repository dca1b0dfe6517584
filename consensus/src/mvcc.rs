//! The replicated state machine: etcd's MVCC key-value model over RocksDB.
//!
//! Every applied write bumps one global revision. Each key keeps the list of
//! revisions that touched it (an in-memory index, rebuilt from RocksDB at
//! start, as etcd does); the values live in the `kv` column family keyed by
//! revision, so reading "key K as of revision R" is an index lookup plus one
//! point read, and a watch replays history with one forward scan.
//!
//! Applying is deterministic: the same entries give the same bytes on every
//! member. Nothing here knows about Raft beyond the applied index that is
//! written in the same batch as the changes it covers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use prost::Message as _;
use rocksdb::{WriteBatch, WriteOptions};

use crate::db::{CF_KV, CF_LEASE, CF_META, Db};
use crate::error::{Error, Result};
use crate::pb::etcdserverpb::{
    self as pb, CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request as OpReq,
    response_op::Response as OpResp,
};
use crate::pb::mvccpb::{self, KeyValue};
use crate::pb::skiffstore::{Command, MemberInfo, command::Op};
use crate::watch::{Event, EventKind, WatchHub};

const META_REV: &[u8] = b"mvcc_revision";
const META_COMPACT: &[u8] = b"mvcc_compact_revision";
const META_APPLIED: &[u8] = b"applied_index";
const META_MEMBERS: &[u8] = b"members";

/// The longest lease etcd grants.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Operations per txn branch, etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// A revision: `main` is the store revision of a write, `sub` the position of
/// a change inside it (a txn changes many keys in one revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub fn key(self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        k[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Result<Rev> {
        if k.len() != 16 {
            return Err(Error::Corrupt(format!(
                "kv key of {} bytes, expected 16",
                k.len()
            )));
        }
        Ok(Rev {
            main: u64::from_be_bytes(k[..8].try_into().expect("8")) as i64,
            sub: u64::from_be_bytes(k[8..].try_into().expect("8")) as i64,
        })
    }
}

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

pub fn encode_value(tomb: bool, kv: &KeyValue) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + kv.encoded_len());
    v.push(if tomb { KIND_TOMBSTONE } else { KIND_PUT });
    kv.encode(&mut v).expect("vec grows");
    v
}

pub fn decode_value(v: &[u8]) -> Result<(bool, KeyValue)> {
    let (&kind, rest) = v
        .split_first()
        .ok_or_else(|| Error::Corrupt("empty kv record".into()))?;
    let kv = KeyValue::decode(rest).map_err(|e| Error::Corrupt(format!("kv record: {e}")))?;
    match kind {
        KIND_PUT => Ok((false, kv)),
        KIND_TOMBSTONE => Ok((true, kv)),
        k => Err(Error::Corrupt(format!("kv record of unknown kind {k}"))),
    }
}

/// The keys a request names: etcd's `key` + `range_end` convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    One(Vec<u8>),
    /// `[start, end)`; `end == None` is "every key from start on".
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::One(key.to_vec())
        } else if range_end == [0] {
            KeyRange::Span {
                start: key.to_vec(),
                end: None,
            }
        } else {
            KeyRange::Span {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::One(key) => key == k,
            KeyRange::Span { start, end } => {
                k >= start.as_slice() && end.as_ref().is_none_or(|e| k < e.as_slice())
            }
        }
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            KeyRange::One(k) => (Bound::Included(k.as_slice()), Bound::Included(k.as_slice())),
            KeyRange::Span { start, end } => (
                Bound::Included(start.as_slice()),
                match end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                },
            ),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span { start, end: Some(end) } if end <= start)
    }
}

/// The history of one key.
#[derive(Debug, Clone, Default)]
struct KeyEntry {
    /// Every revision that changed the key, oldest first, with whether it
    /// was a delete.
    revs: Vec<(Rev, bool)>,
    /// The live generation: its create revision, version and lease.
    create: i64,
    version: i64,
    lease: i64,
}

impl KeyEntry {
    fn live(&self) -> bool {
        self.revs.last().is_some_and(|(_, tomb)| !tomb)
    }

    /// The revision holding the key's value as of `at`, if it was live then.
    fn at(&self, at: i64) -> Option<Rev> {
        let i = self.revs.partition_point(|(r, _)| r.main <= at);
        if i == 0 {
            return None;
        }
        let (rev, tomb) = self.revs[i - 1];
        (!tomb).then_some(rev)
    }

    /// The revision before `rev`, if the key was live just before it.
    fn before(&self, rev: Rev) -> Option<Rev> {
        let i = self.revs.partition_point(|(r, _)| *r < rev);
        if i == 0 {
            return None;
        }
        let (r, tomb) = self.revs[i - 1];
        (!tomb).then_some(r)
    }
}

#[derive(Debug, Clone)]
pub struct LeaseState {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
    /// When the lease runs out, as this member sees it. Only the leader acts
    /// on it; a new leader pushes every deadline one TTL into the future.
    pub deadline: Instant,
}

/// What applying one command answered.
#[derive(Debug, Clone)]
pub enum Response {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    Members(Vec<MemberInfo>),
    Empty,
}

struct Inner {
    index: BTreeMap<Vec<u8>, KeyEntry>,
    rev: i64,
    compact_rev: i64,
    applied: u64,
    leases: HashMap<i64, LeaseState>,
    members: BTreeMap<u64, MemberInfo>,
}

/// The state machine. Shared between the Raft thread (the only writer) and
/// readers on any thread.
pub struct Mvcc {
    db: Arc<rocksdb::DB>,
    inner: RwLock<Inner>,
    hub: Arc<WatchHub>,
}

impl std::fmt::Debug for Mvcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mvcc").finish_non_exhaustive()
    }
}

fn read_i64(db: &rocksdb::DB, cf: &rocksdb::ColumnFamily, key: &[u8]) -> Result<Option<i64>> {
    match db.get_cf(cf, key)? {
        None => Ok(None),
        Some(b) if b.len() == 8 => Ok(Some(i64::from_be_bytes(b[..].try_into().expect("8")))),
        Some(_) => Err(Error::Corrupt(format!(
            "{} is not 8 bytes",
            String::from_utf8_lossy(key)
        ))),
    }
}

impl Mvcc {
    pub fn open(db: &Db, hub: Arc<WatchHub>) -> Result<Mvcc> {
        let raw = db.db.clone();
        let meta = db.cf(CF_META);
        let rev = read_i64(&raw, meta, META_REV)?.unwrap_or(1);
        let compact_rev = read_i64(&raw, meta, META_COMPACT)?.unwrap_or(0);
        let applied = read_i64(&raw, meta, META_APPLIED)?.unwrap_or(0) as u64;
        let members = match raw.get_cf(meta, META_MEMBERS)? {
            None => BTreeMap::new(),
            Some(b) => decode_members(&b)?,
        };
        let mvcc = Mvcc {
            db: raw,
            inner: RwLock::new(Inner {
                index: BTreeMap::new(),
                rev,
                compact_rev,
                applied,
                leases: HashMap::new(),
                members,
            }),
            hub,
        };
        mvcc.rebuild()?;
        Ok(mvcc)
    }

    /// Rebuilds the key index and lease table from RocksDB.
    fn rebuild(&self) -> Result<()> {
        let mut inner = self.inner.write();
        let mut index: BTreeMap<Vec<u8>, KeyEntry> = BTreeMap::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_KV));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev = Rev::from_key(k)?;
            if rev.main > inner.rev {
                return Err(Error::Corrupt(format!(
                    "kv holds revision {} past the store revision {}",
                    rev.main, inner.rev
                )));
            }
            let (tomb, kv) = decode_value(v)?;
            let e = index.entry(kv.key).or_default();
            e.revs.push((rev, tomb));
            if tomb {
                e.create = 0;
                e.version = 0;
                e.lease = 0;
            } else {
                e.create = kv.create_revision;
                e.version = kv.version;
                e.lease = kv.lease;
            }
            it.next();
        }
        it.status()?;
        let now = Instant::now();
        let mut leases = HashMap::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LEASE));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (Ok(k), Ok(v)) = (<[u8; 8]>::try_from(k), <[u8; 8]>::try_from(v)) else {
                return Err(Error::Corrupt("lease record is not 8+8 bytes".into()));
            };
            let ttl = i64::from_be_bytes(v);
            leases.insert(
                i64::from_be_bytes(k),
                LeaseState {
                    ttl,
                    keys: BTreeSet::new(),
                    deadline: now + Duration::from_secs(ttl.max(0) as u64),
                },
            );
            it.next();
        }
        it.status()?;
        for (key, e) in &index {
            if e.live()
                && e.lease != 0
                && let Some(l) = leases.get_mut(&e.lease)
            {
                l.keys.insert(key.clone());
            }
        }
        inner.index = index;
        inner.leases = leases;
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family")
    }

    pub fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    pub fn revision(&self) -> i64 {
        self.inner.read().rev
    }

    /// Runs `f` with the current revision while no apply can happen.
    pub fn with_revision<T>(&self, f: impl FnOnce(i64) -> T) -> T {
        let inner = self.inner.read();
        f(inner.rev)
    }

    pub fn compact_revision(&self) -> i64 {
        self.inner.read().compact_rev
    }

    pub fn applied_index(&self) -> u64 {
        self.inner.read().applied
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner.read().members.values().cloned().collect()
    }

    /// Records the members a new cluster starts with (before any entry).
    pub fn bootstrap_members(&self, members: Vec<MemberInfo>) -> Result<()> {
        let mut inner = self.inner.write();
        inner.members = members.into_iter().map(|m| (m.id, m)).collect();
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(
            self.cf(CF_META),
            META_MEMBERS,
            encode_members(&inner.members),
            &wo,
        )?;
        Ok(())
    }

    /// Approximate size of the stored data, for `endpoint status`.
    pub fn size_bytes(&self) -> i64 {
        let mut total = 0u64;
        for cf in [CF_KV, CF_LEASE, CF_META, crate::db::CF_RAFT] {
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                if let Ok(Some(v)) = self.db.property_int_value_cf(self.cf(cf), prop) {
                    total += v;
                }
            }
        }
        total as i64
    }

    // ----- reads -----

    fn get_rev(&self, rev: Rev) -> Result<KeyValue> {
        match self.db.get_cf(self.cf(CF_KV), rev.key())? {
            Some(v) => Ok(decode_value(&v)?.1),
            None => Err(Error::Corrupt(format!(
                "index names revision {}.{} that is not stored",
                rev.main, rev.sub
            ))),
        }
    }

    /// A Range, as etcd's applier answers it. The caller has made the read
    /// linearizable if it had to be.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let inner = self.inner.read();
        let rev = inner.rev;
        let (revs, count) = range_revs(&inner.index, rev, inner.compact_rev, req)?;
        drop(inner);
        let kvs = revs
            .into_iter()
            .map(|r| self.get_rev(r))
            .collect::<Result<Vec<_>>>()?;
        Ok(finish_range(req, kvs, count, rev))
    }

    /// Live keys and their revisions as of `at` (0: now). For watch replay.
    pub fn get_at(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
        let inner = self.inner.read();
        let at = if at <= 0 { inner.rev } else { at };
        let rev = inner.index.get(key).and_then(|e| e.at(at));
        drop(inner);
        rev.map(|r| self.get_rev(r)).transpose()
    }

    /// The value a key had just before `rev`, for prev_kv of replayed events.
    pub fn prev_of(&self, key: &[u8], rev: Rev) -> Result<Option<KeyValue>> {
        let inner = self.inner.read();
        let prev = inner.index.get(key).and_then(|e| e.before(rev));
        drop(inner);
        prev.map(|r| self.get_rev(r)).transpose()
    }

    /// The changes in revisions `[from, to]`, oldest first, at most `limit`.
    /// Fails with [`Error::Compacted`] when `from` is no longer kept.
    pub fn history(&self, from: i64, to: i64, limit: usize) -> Result<Vec<Event>> {
        if from <= self.compact_revision() {
            return Err(Error::Compacted);
        }
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_KV));
        it.seek(Rev { main: from, sub: 0 }.key());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let rev = Rev::from_key(k)?;
            // Stop only between revisions: a txn's events go out together.
            let last_main = out.last().map(|e: &Event| e.rev.main);
            if rev.main > to || (out.len() >= limit && last_main != Some(rev.main)) {
                break;
            }
            let (tomb, kv) = decode_value(v)?;
            out.push(Event {
                kind: if tomb {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                rev,
                kv,
                prev_kv: None,
            });
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    // ----- leases (in-memory view; changes go through apply) -----

    pub fn lease_time_to_live(&self, id: i64) -> Option<(i64, i64, Vec<Vec<u8>>)> {
        let inner = self.inner.read();
        let l = inner.leases.get(&id)?;
        let remaining = l
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            .ceil();
        Some((l.ttl, remaining as i64, l.keys.iter().cloned().collect()))
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.inner.read().leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn lease_exists(&self, id: i64) -> bool {
        self.inner.read().leases.contains_key(&id)
    }

    /// Leases whose deadline has passed.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        let inner = self.inner.read();
        let mut ids: Vec<i64> = inner
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// On becoming leader: every lease gets a full TTL from now, as in etcd,
    /// so a failover never expires leases whose keep-alives went to the old
    /// leader.
    pub fn promote_leases(&self, now: Instant) {
        let mut inner = self.inner.write();
        for l in inner.leases.values_mut() {
            l.deadline = now + Duration::from_secs(l.ttl.max(0) as u64);
        }
    }

    // ----- writes -----

    /// Applies committed commands in log order, with `applied` the index of
    /// the last one. Writes everything in one RocksDB batch (not synced: the
    /// Raft log is the durable record) and publishes the events to watchers.
    pub fn apply(
        &self,
        cmds: &[(u64, Option<Command>)],
        members: Option<Vec<MemberInfo>>,
        now: Instant,
    ) -> Result<Vec<(u64, u64, Result<Response>)>> {
        let mut inner = self.inner.write();
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(cmds.len());
        let want_prev = self.hub.wants_prev_kv();
        // Values written by this batch are not in RocksDB until the batch is
        // written: later commands of the batch read them from here.
        let mut pending = HashMap::new();
        for (index, cmd) in cmds {
            debug_assert!(*index > inner.applied);
            inner.applied = *index;
            let Some(cmd) = cmd else { continue };
            let mut tx = Tx {
                mvcc: self,
                inner: &mut inner,
                batch: &mut batch,
                pending: &mut pending,
                main: 0,
                sub: 0,
                events: &mut events,
                want_prev,
            };
            let r = tx.apply(cmd, now);
            let wrote = tx.sub > 0;
            let main = tx.main;
            if wrote {
                inner.rev = main;
            }
            results.push((cmd.proposer, cmd.id, r));
        }
        if let Some(m) = members {
            inner.members = m.into_iter().map(|m| (m.id, m)).collect();
            batch.put_cf(
                self.cf(CF_META),
                META_MEMBERS,
                encode_members(&inner.members),
            );
        }
        let meta = self.cf(CF_META);
        batch.put_cf(meta, META_REV, inner.rev.to_be_bytes());
        batch.put_cf(meta, META_COMPACT, inner.compact_rev.to_be_bytes());
        batch.put_cf(meta, META_APPLIED, (inner.applied as i64).to_be_bytes());
        self.db.write(batch)?;
        // Published under the write lock: a watcher that registers under the
        // read lock sees either all of this batch in history or all of it here.
        self.hub.publish(&events, inner.rev);
        Ok(results)
    }

    /// Answers a txn whose every op is a range, without the log.
    pub fn read_txn(&self, t: &TxnRequest) -> Result<TxnResponse> {
        // The write lock only because `Tx` borrows the index mutably; a
        // read-only txn changes nothing.
        let mut inner = self.inner.write();
        let mut batch = WriteBatch::default();
        let mut events = Vec::new();
        let mut pending = HashMap::new();
        let mut tx = Tx {
            mvcc: self,
            inner: &mut inner,
            batch: &mut batch,
            pending: &mut pending,
            main: 0,
            sub: 0,
            events: &mut events,
            want_prev: false,
        };
        let r = tx.txn(t);
        debug_assert_eq!(tx.sub, 0, "read-only txn wrote");
        r
    }

    /// Records an applied entry that changes nothing in the key space (an
    /// empty entry from a new leader, a conf change).
    pub fn set_applied(&self, index: u64) -> Result<()> {
        let mut inner = self.inner.write();
        inner.applied = index;
        self.db
            .put_cf(self.cf(CF_META), META_APPLIED, (index as i64).to_be_bytes())?;
        Ok(())
    }

    // ----- snapshots -----

    /// Serializes the whole state machine (what a Raft snapshot and a backup
    /// carry).
    pub fn dump(&self) -> Result<Vec<u8>> {
        let inner = self.inner.read();
        let snap = self.db.snapshot();
        let mut w = SnapWriter::new();
        let meta = SnapMeta {
            rev: inner.rev,
            compact_rev: inner.compact_rev,
            applied: inner.applied,
            members: inner.members.values().cloned().collect(),
        };
        w.record(TAG_META, &encode_snap_meta(&meta));
        let mut it = snap.raw_iterator_cf(self.cf(CF_KV));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let mut rec = Vec::with_capacity(k.len() + v.len());
            rec.extend_from_slice(k);
            rec.extend_from_slice(v);
            w.record(TAG_KV, &rec);
            it.next();
        }
        it.status()?;
        let mut ids: Vec<_> = inner.leases.iter().map(|(id, l)| (*id, l.ttl)).collect();
        ids.sort_unstable();
        for (id, ttl) in ids {
            let mut rec = [0u8; 16];
            rec[..8].copy_from_slice(&id.to_be_bytes());
            rec[8..].copy_from_slice(&ttl.to_be_bytes());
            w.record(TAG_LEASE, &rec);
        }
        Ok(w.finish())
    }

    /// Replaces the whole state machine with a dump, as of Raft index
    /// `applied` (0 keeps the dump's own).
    pub fn restore(&self, data: &[u8], applied: u64) -> Result<()> {
        let recs = read_snapshot(data)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_KV), &[0u8; 16][..], &[0xffu8; 17][..]);
        batch.delete_range_cf(self.cf(CF_LEASE), &[0u8; 8][..], &[0xffu8; 9][..]);
        let mut meta = None;
        for (tag, rec) in recs {
            match tag {
                TAG_META => meta = Some(decode_snap_meta(rec)?),
                TAG_KV if rec.len() > 16 => {
                    Rev::from_key(&rec[..16])?;
                    decode_value(&rec[16..])?;
                    batch.put_cf(self.cf(CF_KV), &rec[..16], &rec[16..]);
                }
                TAG_LEASE if rec.len() == 16 => {
                    batch.put_cf(self.cf(CF_LEASE), &rec[..8], &rec[8..]);
                }
                t => {
                    return Err(Error::Corrupt(format!(
                        "snapshot record of tag {t} is malformed"
                    )));
                }
            }
        }
        let meta = meta.ok_or_else(|| Error::Corrupt("snapshot has no metadata record".into()))?;
        let applied = if applied == 0 { meta.applied } else { applied };
        let members: BTreeMap<u64, MemberInfo> =
            meta.members.into_iter().map(|m| (m.id, m)).collect();
        let m = self.cf(CF_META);
        batch.put_cf(m, META_REV, meta.rev.to_be_bytes());
        batch.put_cf(m, META_COMPACT, meta.compact_rev.to_be_bytes());
        batch.put_cf(m, META_APPLIED, (applied as i64).to_be_bytes());
        batch.put_cf(m, META_MEMBERS, encode_members(&members));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        {
            let mut inner = self.inner.write();
            self.db.write_opt(batch, &wo)?;
            inner.rev = meta.rev;
            inner.compact_rev = meta.compact_rev;
            inner.applied = applied;
            inner.members = members;
        }
        self.rebuild()?;
        // Watchers cannot be told what changed in between: they must resync.
        self.hub.reset_all(self.revision());
        Ok(())
    }

    /// A hash of the key space as of now: equal on replicas that applied the
    /// same entries.
    pub fn hash(&self) -> Result<(u64, i64)> {
        use sha2::{Digest, Sha256};
        let inner = self.inner.read();
        let mut h = Sha256::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_KV));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            h.update(k);
            h.update(v);
            it.next();
        }
        it.status()?;
        h.update(inner.rev.to_be_bytes());
        h.update(inner.compact_rev.to_be_bytes());
        let d = h.finalize();
        Ok((u64::from_be_bytes(d[..8].try_into().expect("8")), inner.rev))
    }
}

/// The revisions a range selects, the total count, and the store revision.
fn range_revs(
    index: &BTreeMap<Vec<u8>, KeyEntry>,
    cur: i64,
    compact_rev: i64,
    req: &RangeRequest,
) -> Result<(Vec<Rev>, i64)> {
    let at = if req.revision <= 0 { cur } else { req.revision };
    if at > cur {
        return Err(Error::FutureRevision);
    }
    if at < compact_rev {
        return Err(Error::Compacted);
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    if range.is_empty() {
        return Ok((Vec::new(), 0));
    }
    // Sorting or filtering needs every match first; otherwise stop at limit+1.
    let must_scan_all = req.sort_order != SortOrder::None as i32
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let fetch_limit = if req.count_only || must_scan_all || req.limit <= 0 {
        usize::MAX
    } else {
        req.limit as usize + 1
    };
    let mut revs = Vec::new();
    let mut count = 0i64;
    for (_, e) in index.range::<[u8], _>(range.bounds()) {
        if let Some(r) = e.at(at) {
            count += 1;
            if !req.count_only && revs.len() < fetch_limit {
                revs.push(r);
            }
        }
    }
    Ok((revs, count))
}

fn finish_range(req: &RangeRequest, mut kvs: Vec<KeyValue>, count: i64, rev: i64) -> RangeResponse {
    let f = |kv: &KeyValue| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    };
    kvs.retain(f);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        header: Some(pb::ResponseHeader {
            revision: rev,
            ..Default::default()
        }),
        kvs,
        more,
        count,
    }
}

/// One command being applied: its writes share one main revision.
struct Tx<'a> {
    mvcc: &'a Mvcc,
    inner: &'a mut Inner,
    batch: &'a mut WriteBatch,
    /// Values written by this batch and not yet in RocksDB.
    pending: &'a mut HashMap<Rev, KeyValue>,
    main: i64,
    sub: i64,
    events: &'a mut Vec<Event>,
    want_prev: bool,
}

impl Tx<'_> {
    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision: self.cur_rev(),
            ..Default::default()
        })
    }

    /// The store revision including this command's writes so far.
    fn cur_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.inner.rev
        }
    }

    fn next_rev(&mut self) -> Rev {
        if self.sub == 0 {
            self.main = self.inner.rev + 1;
        }
        let r = Rev {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        r
    }

    fn fetch(&self, rev: Rev) -> Result<KeyValue> {
        if let Some(kv) = self.pending.get(&rev) {
            return Ok(kv.clone());
        }
        self.mvcc.get_rev(rev)
    }

    fn live(&self, key: &[u8]) -> Option<Rev> {
        self.inner.index.get(key).and_then(|e| e.at(i64::MAX))
    }

    fn apply(&mut self, cmd: &Command, now: Instant) -> Result<Response> {
        let Some(op) = &cmd.op else {
            return Err(Error::InvalidArgument("empty command".into()));
        };
        match op {
            Op::Put(p) => self.put(p).map(Response::Put),
            Op::DeleteRange(d) => self.delete_range(d).map(Response::DeleteRange),
            Op::Txn(t) => {
                // A failed op inside a txn must not leave half its writes:
                // check every op before writing anything.
                self.check_txn(t)?;
                self.txn(t).map(Response::Txn)
            }
            Op::Compaction(c) => self.compact(c).map(Response::Compaction),
            Op::LeaseGrant(g) => self.lease_grant(g, now).map(Response::LeaseGrant),
            Op::LeaseRevoke(r) => self.lease_revoke(r).map(Response::LeaseRevoke),
            Op::LeaseKeepAlive(k) => self.lease_keep_alive(k, now).map(Response::LeaseKeepAlive),
            Op::Publish(m) => {
                let Some(member) = self.inner.members.get_mut(&m.id) else {
                    return Err(Error::MemberNotFound);
                };
                member.name = m.name.clone();
                member.client_urls = m.client_urls.clone();
                let members = self.inner.members.clone();
                self.batch.put_cf(
                    self.mvcc.cf(CF_META),
                    META_MEMBERS,
                    encode_members(&members),
                );
                Ok(Response::Members(members.into_values().collect()))
            }
        }
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let prev_rev = self.live(&p.key);
        let prev = match prev_rev {
            Some(r) => Some(self.fetch(r)?),
            None => None,
        };
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |kv| kv.lease)
        } else {
            p.lease
        };
        if lease != 0 && !self.inner.leases.contains_key(&lease) {
            return Err(Error::LeaseNotFound);
        }
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let rev = self.next_rev();
        let (create, version) = match &prev {
            Some(kv) => (kv.create_revision, kv.version + 1),
            None => (rev.main, 1),
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: create,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.batch
            .put_cf(self.mvcc.cf(CF_KV), rev.key(), encode_value(false, &kv));
        let old_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if old_lease != lease
            && let Some(l) = self.inner.leases.get_mut(&old_lease)
        {
            l.keys.remove(&p.key);
        }
        if lease != 0
            && let Some(l) = self.inner.leases.get_mut(&lease)
        {
            l.keys.insert(p.key.clone());
        }
        let e = self.inner.index.entry(p.key.clone()).or_default();
        e.revs.push((rev, false));
        e.create = create;
        e.version = version;
        e.lease = lease;
        self.events.push(Event {
            kind: EventKind::Put,
            rev,
            kv: kv.clone(),
            prev_kv: if self.want_prev { prev.clone() } else { None },
        });
        self.pending.insert(rev, kv);
        let header = self.header();
        Ok(PutResponse {
            header,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete_key(&mut self, key: &[u8], prev: KeyValue) -> Result<()> {
        let rev = self.next_rev();
        let tomb = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..Default::default()
        };
        self.batch
            .put_cf(self.mvcc.cf(CF_KV), rev.key(), encode_value(true, &tomb));
        if prev.lease != 0
            && let Some(l) = self.inner.leases.get_mut(&prev.lease)
        {
            l.keys.remove(key);
        }
        let e = self.inner.index.entry(key.to_vec()).or_default();
        e.revs.push((rev, true));
        e.create = 0;
        e.version = 0;
        e.lease = 0;
        self.events.push(Event {
            kind: EventKind::Delete,
            rev,
            kv: tomb,
            prev_kv: if self.want_prev { Some(prev) } else { None },
        });
        Ok(())
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::new(&d.key, &d.range_end);
        let keys: Vec<(Vec<u8>, Rev)> = if range.is_empty() {
            Vec::new()
        } else {
            self.inner
                .index
                .range::<[u8], _>(range.bounds())
                .filter_map(|(k, e)| e.at(i64::MAX).map(|r| (k.clone(), r)))
                .collect()
        };
        let mut prev_kvs = Vec::new();
        for (k, r) in &keys {
            let prev = self.fetch(*r)?;
            if d.prev_kv {
                prev_kvs.push(prev.clone());
            }
            self.delete_key(k, prev)?;
        }
        Ok(DeleteRangeResponse {
            header: self.header(),
            deleted: keys.len() as i64,
            prev_kvs,
        })
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse> {
        // Inside a txn a range sees the txn's own earlier writes, at the
        // txn's revision.
        let (revs, count) =
            range_revs(&self.inner.index, self.cur_rev(), self.inner.compact_rev, r)?;
        let kvs = revs
            .into_iter()
            .map(|rv| self.fetch(rv))
            .collect::<Result<Vec<_>>>()?;
        Ok(finish_range(r, kvs, count, self.cur_rev()))
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let kvs: Vec<KeyValue> = if range.is_empty() {
            Vec::new()
        } else {
            let revs: Vec<Rev> = self
                .inner
                .index
                .range::<[u8], _>(range.bounds())
                .filter_map(|(_, e)| e.at(i64::MAX))
                .collect();
            revs.into_iter()
                .map(|r| self.fetch(r))
                .collect::<Result<_>>()?
        };
        let target = CompareTarget::try_from(c.target)
            .map_err(|_| Error::InvalidArgument(format!("unknown compare target {}", c.target)))?;
        if kvs.is_empty() {
            // A missing key has version, create and mod revision 0, no
            // lease, and no value to compare.
            if target == CompareTarget::Value {
                return Ok(false);
            }
            return compare_kv(c, target, &KeyValue::default());
        }
        for kv in &kvs {
            if !compare_kv(c, target, kv)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_txn(&self, t: &TxnRequest) -> Result<()> {
        for ops in [&t.success, &t.failure] {
            if ops.len() > MAX_TXN_OPS {
                return Err(Error::TooManyOps);
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest) -> Result<TxnResponse> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let ops = if ok { &t.success } else { &t.failure };
        // Ops that would fail (a lease that does not exist, a missing key
        // with ignore_value) fail the whole txn before anything is written.
        self.precheck_ops(ops)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(self.op(op)?);
        }
        Ok(TxnResponse {
            header: self.header(),
            succeeded: ok,
            responses,
        })
    }

    fn precheck_ops(&self, ops: &[RequestOp]) -> Result<()> {
        for op in ops {
            match &op.request {
                Some(OpReq::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && self.live(&p.key).is_none() {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.inner.leases.contains_key(&p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                Some(OpReq::RequestRange(r)) => {
                    if r.revision > self.cur_rev() {
                        return Err(Error::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < self.inner.compact_rev {
                        return Err(Error::Compacted);
                    }
                }
                Some(OpReq::RequestTxn(_)) | Some(OpReq::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn op(&mut self, op: &RequestOp) -> Result<ResponseOp> {
        let response = match &op.request {
            Some(OpReq::RequestRange(r)) => OpResp::ResponseRange(self.range(r)?),
            Some(OpReq::RequestPut(p)) => OpResp::ResponsePut(self.put(p)?),
            Some(OpReq::RequestDeleteRange(d)) => {
                OpResp::ResponseDeleteRange(self.delete_range(d)?)
            }
            Some(OpReq::RequestTxn(t)) => OpResp::ResponseTxn(self.txn(t)?),
            None => return Err(Error::InvalidArgument("txn op without a request".into())),
        };
        Ok(ResponseOp {
            response: Some(response),
        })
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse> {
        if c.revision <= self.inner.compact_rev {
            return Err(Error::Compacted);
        }
        if c.revision > self.inner.rev {
            return Err(Error::FutureRevision);
        }
        let at = c.revision;
        let kv_cf = self.mvcc.cf(CF_KV);
        let mut dead_keys = Vec::new();
        for (key, e) in self.inner.index.iter_mut() {
            // Keep the newest revision at or below `at` (a reader at `at`
            // needs it) unless it is a delete; drop everything older.
            let i = e.revs.partition_point(|(r, _)| r.main <= at);
            if i == 0 {
                continue;
            }
            let keep_from = if e.revs[i - 1].1 { i } else { i - 1 };
            for (r, _) in e.revs.drain(..keep_from) {
                self.batch.delete_cf(kv_cf, r.key());
            }
            if e.revs.is_empty() {
                dead_keys.push(key.clone());
            }
        }
        for k in dead_keys {
            self.inner.index.remove(&k);
        }
        self.inner.compact_rev = at;
        Ok(CompactionResponse {
            header: self.header(),
        })
    }

    fn lease_grant(&mut self, g: &LeaseGrantRequest, now: Instant) -> Result<LeaseGrantResponse> {
        if g.id <= 0 {
            return Err(Error::InvalidArgument("lease id must be positive".into()));
        }
        if g.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        if self.inner.leases.contains_key(&g.id) {
            return Err(Error::LeaseExists);
        }
        let ttl = g.ttl.max(1);
        self.batch.put_cf(
            self.mvcc.cf(CF_LEASE),
            g.id.to_be_bytes(),
            ttl.to_be_bytes(),
        );
        self.inner.leases.insert(
            g.id,
            LeaseState {
                ttl,
                keys: BTreeSet::new(),
                deadline: now + Duration::from_secs(ttl as u64),
            },
        );
        Ok(LeaseGrantResponse {
            header: self.header(),
            id: g.id,
            ttl,
            error: String::new(),
        })
    }

    fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse> {
        let Some(lease) = self.inner.leases.remove(&r.id) else {
            return Err(Error::LeaseNotFound);
        };
        self.batch
            .delete_cf(self.mvcc.cf(CF_LEASE), r.id.to_be_bytes());
        for key in lease.keys {
            if let Some(rev) = self.live(&key) {
                let prev = self.fetch(rev)?;
                self.delete_key(&key, prev)?;
            }
        }
        Ok(LeaseRevokeResponse {
            header: self.header(),
        })
    }

    fn lease_keep_alive(
        &mut self,
        k: &LeaseKeepAliveRequest,
        now: Instant,
    ) -> Result<LeaseKeepAliveResponse> {
        let header = self.header();
        let Some(l) = self.inner.leases.get_mut(&k.id) else {
            // etcd answers a keep-alive of an unknown lease with TTL 0.
            return Ok(LeaseKeepAliveResponse {
                header,
                id: k.id,
                ttl: 0,
            });
        };
        l.deadline = now + Duration::from_secs(l.ttl as u64);
        Ok(LeaseKeepAliveResponse {
            header,
            id: k.id,
            ttl: l.ttl,
        })
    }
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> Result<bool> {
    use std::cmp::Ordering;
    let ord = match (target, &c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => kv.version.cmp(v),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => kv.create_revision.cmp(v),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => kv.mod_revision.cmp(v),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => kv.lease.cmp(v),
        // etcd compares a missing union member as its zero value.
        (CompareTarget::Version, None)
        | (CompareTarget::Create, None)
        | (CompareTarget::Mod, None)
        | (CompareTarget::Lease, None) => {
            let v = match target {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            v.cmp(&0)
        }
        (CompareTarget::Value, None) => kv.value.as_slice().cmp(&[][..]),
        _ => {
            return Err(Error::InvalidArgument(
                "compare target and target_union do not match".into(),
            ));
        }
    };
    let result = CompareResult::try_from(c.result)
        .map_err(|_| Error::InvalidArgument(format!("unknown compare result {}", c.result)))?;
    Ok(match result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    })
}

// ----- snapshot format -----

const SNAP_MAGIC: &[u8; 8] = b"SKIFSNP1";
const TAG_META: u8 = 1;
const TAG_KV: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_END: u8 = 0;

struct SnapWriter {
    buf: Vec<u8>,
}

impl SnapWriter {
    fn new() -> Self {
        SnapWriter {
            buf: SNAP_MAGIC.to_vec(),
        }
    }

    fn record(&mut self, tag: u8, data: &[u8]) {
        self.buf.push(tag);
        self.buf
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.record(TAG_END, &[]);
        self.buf
    }
}

fn read_snapshot(data: &[u8]) -> Result<Vec<(u8, &[u8])>> {
    let bad = |why: &str| Error::Corrupt(format!("snapshot: {why}"));
    let mut rest = data
        .strip_prefix(SNAP_MAGIC)
        .ok_or_else(|| bad("not a skiff snapshot"))?;
    let mut out = Vec::new();
    loop {
        if rest.len() < 5 {
            return Err(bad("truncated"));
        }
        let tag = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4")) as usize;
        rest = &rest[5..];
        if rest.len() < len {
            return Err(bad("truncated record"));
        }
        let (rec, tail) = rest.split_at(len);
        rest = tail;
        if tag == TAG_END {
            // Snapshot files are padded with zeros to 512-byte blocks.
            if rest.iter().any(|b| *b != 0) {
                return Err(bad("data after the end record"));
            }
            return Ok(out);
        }
        out.push((tag, rec));
    }
}

struct SnapMeta {
    rev: i64,
    compact_rev: i64,
    applied: u64,
    members: Vec<MemberInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapMetaPb {
    #[prost(int64, tag = "1")]
    rev: i64,
    #[prost(int64, tag = "2")]
    compact_rev: i64,
    #[prost(uint64, tag = "3")]
    applied: u64,
    #[prost(message, repeated, tag = "4")]
    members: Vec<MemberInfo>,
}

fn encode_snap_meta(m: &SnapMeta) -> Vec<u8> {
    SnapMetaPb {
        rev: m.rev,
        compact_rev: m.compact_rev,
        applied: m.applied,
        members: m.members.clone(),
    }
    .encode_to_vec()
}

fn decode_snap_meta(b: &[u8]) -> Result<SnapMeta> {
    let m = SnapMetaPb::decode(b).map_err(|e| Error::Corrupt(format!("snapshot metadata: {e}")))?;
    Ok(SnapMeta {
        rev: m.rev,
        compact_rev: m.compact_rev,
        applied: m.applied,
        members: m.members,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct MembersPb {
    #[prost(message, repeated, tag = "1")]
    members: Vec<MemberInfo>,
}

fn encode_members(m: &BTreeMap<u64, MemberInfo>) -> Vec<u8> {
    MembersPb {
        members: m.values().cloned().collect(),
    }
    .encode_to_vec()
}

fn decode_members(b: &[u8]) -> Result<BTreeMap<u64, MemberInfo>> {
    let m = MembersPb::decode(b).map_err(|e| Error::Corrupt(format!("member table: {e}")))?;
    Ok(m.members.into_iter().map(|m| (m.id, m)).collect())
}

/// A watch event type on the wire.
pub fn event_type(kind: EventKind) -> i32 {
    match kind {
        EventKind::Put => mvccpb::event::EventType::Put as i32,
        EventKind::Delete => mvccpb::event::EventType::Delete as i32,
    }
}
