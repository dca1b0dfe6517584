//! A running store member: the Raft loop on its own thread, and the async
//! handle ([`Store`]) that the etcd API and the rest of skiff call.
//!
//! The loop owns the [`Member`] and is the only place that touches Raft or
//! writes RocksDB. Everything else talks to it through one channel. Per
//! loop iteration it takes every queued input, so many client proposals
//! become one `Ready`, one synced RocksDB write and one round of messages —
//! group commit without a timer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use raft::StateRole;
use raft::eraftpb::ConfChangeType;
use tokio::sync::oneshot;

use crate::db::{Db, Identity, stable_id};
use crate::error::{Error, Result};
use crate::member::{Member, MemberConfig, ReadyOut};
use crate::mvcc::{MAX_TXN_OPS, Mvcc, Response};
use crate::pb::etcdserverpb as pb;
use crate::pb::skiffstore::{Command, ConfChangeContext, MemberInfo, command::Op};
use crate::pki::NodeTls;
use crate::transport::quic::QuicTransport;
use crate::transport::{Inbound, Inbox, Transport};
use crate::watch::{WatchHub, WatchSpec, Watcher};

/// The largest request the store accepts, as etcd's default.
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `initial_cluster`.
    New,
    /// Join a cluster that already has this member in its member list.
    Existing,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub name: String,
    /// UDP address the QUIC peer endpoint binds.
    pub peer_listen: SocketAddr,
    /// host:port other members reach this one at (default: `peer_listen`).
    pub peer_advertise: Option<String>,
    /// URLs clients reach the etcd API at, published in the member list.
    pub client_urls: Vec<String>,
    /// name → peer host:port for every initial member (empty: just this one).
    pub initial_cluster: Vec<(String, String)>,
    pub cluster_state: ClusterState,
    /// A directory holding `ca.crt` + `ca.key` of the cluster to create this
    /// member's certificate from (needed by every member but the first).
    pub ca_from: Option<PathBuf>,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub request_timeout: Duration,
    pub compact_threshold: u64,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>, name: &str) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            name: name.to_string(),
            peer_listen: "127.0.0.1:2380".parse().expect("address"),
            peer_advertise: None,
            client_urls: vec!["http://127.0.0.1:2379".into()],
            initial_cluster: Vec::new(),
            cluster_state: ClusterState::New,
            ca_from: None,
            // 20 ms ticks (a heartbeat each), elections after 7–13 ticks: a
            // failed leader is replaced within 140–280 ms plus two round
            // trips (etcd's defaults take 1–2 s).
            tick: Duration::from_millis(20),
            election_ticks: 7,
            heartbeat_ticks: 1,
            request_timeout: Duration::from_secs(5),
            compact_threshold: 20_000,
        }
    }

    pub fn advertise(&self) -> String {
        self.peer_advertise
            .clone()
            .unwrap_or_else(|| self.peer_listen.to_string())
    }
}

/// `https://host:port` (how etcdctl wants peer URLs written: the endpoint
/// is QUIC over UDP, with TLS) or `host:port` → `host:port`.
pub fn peer_addr(url: &str) -> String {
    let s = url.split_once("://").map_or(url, |(_, rest)| rest);
    s.trim_end_matches('/').to_string()
}

/// The member id of a peer address: the same on every member, and on the
/// member itself, without coordination.
pub fn member_id_for(peer: &str) -> u64 {
    stable_id(&["skiff-member", &peer_addr(peer)])
}

/// Raft's view of things, refreshed by the loop.
#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    pub leader: u64,
    pub term: u64,
    pub role: Option<StateRole>,
    pub commit: u64,
    pub last_index: u64,
    pub applied: u64,
}

enum Input {
    Inbound(Inbound),
    Propose {
        op: Op,
        reply: Option<oneshot::Sender<Result<Response>>>,
    },
    ConfChange {
        change: ConfChangeType,
        member: MemberInfo,
        reply: oneshot::Sender<Result<Response>>,
    },
    Read {
        reply: oneshot::Sender<Result<()>>,
    },
    Campaign,
    TransferLeader(u64),
    Stop,
}

struct LoopInbox(Sender<Input>);

impl Inbox for LoopInbox {
    fn deliver(&self, inbound: Inbound) {
        let _ = self.0.send(Input::Inbound(inbound));
    }
}

struct Shared {
    tx: Sender<Input>,
    mvcc: Arc<Mvcc>,
    status: Mutex<RaftStatus>,
    leader_watch: tokio::sync::watch::Sender<u64>,
    identity: Identity,
    cfg: StoreConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
    transport: Arc<dyn Transport>,
    quic: Option<Arc<QuicTransport>>,
    tls: Option<NodeTls>,
}

/// A handle on a running member. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("member", &self.shared.identity.name)
            .finish()
    }
}

fn data_dir_err(dir: &Path, why: impl Into<String>) -> Error {
    Error::DataDir {
        dir: dir.display().to_string(),
        why: why.into(),
    }
}

/// Proposes `op` and answers with the `Response::$variant` it applied to,
/// its header filled in for this member.
macro_rules! proposed {
    ($self:ident, $op:expr, $variant:ident) => {
        match $self.propose($op).await? {
            Response::$variant(mut r) => {
                r.header = Some($self.header(rev_of(&r.header)));
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    };
}

impl Store {
    /// Opens (or creates) the member in `cfg.data_dir`, starts its QUIC
    /// endpoint on `runtime` and its Raft loop on a thread of its own.
    pub fn start(cfg: StoreConfig, runtime: tokio::runtime::Handle) -> Result<Store> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| data_dir_err(&cfg.data_dir, format!("cannot create: {e}")))?;
        let advertise = cfg.advertise();
        let host = advertise
            .rsplit_once(':')
            .map_or(advertise.as_str(), |(h, _)| h);
        let sans = vec![host.trim_matches(|c| c == '[' || c == ']').to_string()];
        let tls = NodeTls::ensure(
            &cfg.data_dir.join("pki"),
            &cfg.name,
            &sans,
            cfg.ca_from.as_deref(),
        )
        .map_err(|e| data_dir_err(&cfg.data_dir, e.to_string()))?;
        let cluster_id = stable_id(&["skiff-cluster", &tls.ca_pem]);
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox: Arc<dyn Inbox> = Arc::new(LoopInbox(tx.clone()));
        let (db, identity) = open_identity(&cfg, cluster_id)?;
        let quic = QuicTransport::start(
            cfg.peer_listen,
            &tls,
            identity.member_id,
            cluster_id,
            inbox,
            runtime.clone(),
        )
        .map_err(|e| Error::InvalidArgument(format!("peer endpoint {}: {e}", cfg.peer_listen)))?;
        let transport: Arc<dyn Transport> = quic.clone();
        Self::start_with(cfg, db, identity, transport, Some(quic), Some(tls), tx, rx)
    }

    /// Starts the member over an opened store and a started transport that
    /// delivers into `tx`.
    #[allow(clippy::too_many_arguments)]
    fn start_with(
        cfg: StoreConfig,
        db: Db,
        identity: Identity,
        transport: Arc<dyn Transport>,
        quic: Option<Arc<QuicTransport>>,
        tls: Option<NodeTls>,
        tx: Sender<Input>,
        rx: Receiver<Input>,
    ) -> Result<Store> {
        let hub = WatchHub::new();
        let mvcc = Arc::new(Mvcc::open(&db, hub)?);
        let fresh = mvcc.applied_index() == 0 && mvcc.members().is_empty();
        let mut voters = Vec::new();
        if fresh && cfg.cluster_state == ClusterState::New {
            let members = initial_members(&cfg)?;
            voters = members.iter().map(|m| m.id).collect();
            mvcc.bootstrap_members(members)?;
        }
        let mut mcfg = MemberConfig::new(identity.member_id);
        mcfg.election_tick = cfg.election_ticks;
        mcfg.heartbeat_tick = cfg.heartbeat_ticks;
        mcfg.compact_threshold = cfg.compact_threshold;
        mcfg.compact_retain = cfg.compact_threshold / 4;
        let member = Member::open(&db, mvcc.clone(), mcfg, &voters)?;
        refresh_peers(&*transport, member.id(), &mvcc.members());
        if mvcc.members().is_empty() {
            // A member joining an existing cluster knows nobody until the
            // leader's snapshot brings the member table; it must be able to
            // answer the leader before that, so it is told the members
            // (etcd's --initial-cluster with --initial-cluster-state existing).
            if cfg.initial_cluster.is_empty() {
                return Err(Error::InvalidArgument(
                    "joining an existing cluster needs --initial-cluster listing its members \
                     (as `etcdctl member add` prints)"
                        .into(),
                ));
            }
            refresh_peers(&*transport, member.id(), &initial_members(&cfg)?);
        }
        let (leader_watch, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            tx,
            mvcc,
            status: Mutex::new(RaftStatus::default()),
            leader_watch,
            identity,
            cfg,
            thread: Mutex::new(None),
            transport,
            quic,
            tls,
        });
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || {
                let mut lp = RaftLoop::new(member, rx, s2);
                if let Err(e) = lp.run() {
                    // After a failed persist the member must stop: carrying on
                    // could acknowledge writes that are not durable.
                    tracing::error!("raft loop stopped: {e}");
                }
                lp.fail_all(|| Error::Stopped);
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the raft thread: {e}")))?;
        *shared.thread.lock() = Some(handle);
        Ok(Store { shared })
    }

    pub fn identity(&self) -> &Identity {
        &self.shared.identity
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.shared.mvcc
    }

    pub fn tls(&self) -> Option<&NodeTls> {
        self.shared.tls.as_ref()
    }

    pub fn peer_local_addr(&self) -> Option<SocketAddr> {
        self.shared.quic.as_ref().map(|q| q.local_addr())
    }

    pub fn raft_status(&self) -> RaftStatus {
        self.shared.status.lock().clone()
    }

    /// Resolves once a leader is known (or after `timeout`).
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let mut rx = self.shared.leader_watch.subscribe();
        let fut = async {
            loop {
                let l = *rx.borrow_and_update();
                if l != 0 {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::NoLeader)?
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        let st = self.shared.status.lock();
        pb::ResponseHeader {
            cluster_id: self.shared.identity.cluster_id,
            member_id: self.shared.identity.member_id,
            revision,
            raft_term: st.term,
        }
    }

    fn send(&self, input: Input) -> Result<()> {
        self.shared.tx.send(input).map_err(|_| Error::Stopped)
    }

    async fn propose(&self, op: Op) -> Result<Response> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Propose {
            op,
            reply: Some(reply),
        })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Waits until this member has applied everything committed before the
    /// call: reads after it are linearizable (Raft ReadIndex).
    pub async fn read_barrier(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Read { reply })?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        if !req.serializable {
            self.read_barrier().await?;
        }
        let mut resp = self.shared.mvcc.range(&req)?;
        resp.header = Some(self.header(resp.header.map_or(0, |h| h.revision)));
        Ok(resp)
    }

    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse> {
        check_key(&req.key)?;
        if req.key.len() + req.value.len() > MAX_REQUEST_BYTES {
            return Err(Error::RequestTooLarge);
        }
        proposed!(self, Op::Put(req), Put)
    }

    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse> {
        check_key(&req.key)?;
        proposed!(self, Op::DeleteRange(req), DeleteRange)
    }

    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        check_txn(&req)?;
        if txn_is_read_only(&req) {
            // Read-only txns are answered locally after a ReadIndex, as etcd
            // does, instead of going through the log.
            if !txn_is_serializable(&req) {
                self.read_barrier().await?;
            }
            let mut r = self.shared.mvcc.read_txn(&req)?;
            r.header = Some(self.header(rev_of(&r.header)));
            return Ok(r);
        }
        let size: usize = prost::Message::encoded_len(&req);
        if size > MAX_REQUEST_BYTES {
            return Err(Error::RequestTooLarge);
        }
        proposed!(self, Op::Txn(req), Txn)
    }

    pub async fn compact(&self, req: pb::CompactionRequest) -> Result<pb::CompactionResponse> {
        proposed!(self, Op::Compaction(req), Compaction)
    }

    pub async fn lease_grant(
        &self,
        mut req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse> {
        if req.id < 0 {
            return Err(Error::InvalidArgument(
                "etcdserver: lease ID must be positive".into(),
            ));
        }
        if req.id == 0 {
            // Ids are picked before proposing so every replica applies the
            // same one.
            req.id = (rand::random::<u64>() >> 1).max(1) as i64;
        }
        proposed!(self, Op::LeaseGrant(req), LeaseGrant)
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse> {
        proposed!(
            self,
            Op::LeaseRevoke(pb::LeaseRevokeRequest { id }),
            LeaseRevoke
        )
    }

    pub async fn lease_keep_alive(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse> {
        proposed!(
            self,
            Op::LeaseKeepAlive(pb::LeaseKeepAliveRequest { id }),
            LeaseKeepAlive
        )
    }

    pub async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse> {
        self.read_barrier().await?;
        let header = Some(self.header(self.shared.mvcc.revision()));
        Ok(match self.shared.mvcc.lease_time_to_live(req.id) {
            Some((granted, ttl, keys)) => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl,
                granted_ttl: granted,
                keys: if req.keys { keys } else { Vec::new() },
            },
            // etcd answers an unknown lease with TTL -1.
            None => pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })
    }

    pub async fn lease_leases(&self) -> Result<pb::LeaseLeasesResponse> {
        self.read_barrier().await?;
        Ok(pb::LeaseLeasesResponse {
            header: Some(self.header(self.shared.mvcc.revision())),
            leases: self
                .shared
                .mvcc
                .lease_ids()
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        })
    }

    pub fn watch(&self, spec: WatchSpec) -> Watcher {
        Watcher::new(self.shared.mvcc.clone(), spec)
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared.mvcc.members()
    }

    /// Adds a member (voter or learner) by its peer URLs.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<(MemberInfo, Vec<MemberInfo>)> {
        let first = peer_urls
            .first()
            .ok_or_else(|| Error::InvalidArgument("etcdserver: no peer URLs given".into()))?;
        let id = member_id_for(first);
        let members = self.members();
        let wanted: Vec<String> = peer_urls.iter().map(|u| peer_addr(u)).collect();
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| wanted.contains(&peer_addr(u))))
        {
            return Err(Error::PeerUrlExists);
        }
        let member = MemberInfo {
            id,
            name: String::new(),
            peer_urls: wanted.iter().map(|a| format!("https://{a}")).collect(),
            client_urls: Vec::new(),
            is_learner,
        };
        let change = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let all = self.conf_change(change, member.clone()).await?;
        Ok((member, all))
    }

    pub async fn member_remove(&self, id: u64) -> Result<Vec<MemberInfo>> {
        let m = self
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(Error::MemberNotFound)?;
        self.conf_change(ConfChangeType::RemoveNode, m).await
    }

    pub async fn member_promote(&self, id: u64) -> Result<Vec<MemberInfo>> {
        let m = self
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(Error::MemberNotFound)?;
        if !m.is_learner {
            return Err(Error::MemberNotLearner);
        }
        self.conf_change(ConfChangeType::AddNode, m).await
    }

    pub async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<Vec<MemberInfo>> {
        let mut m = self
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(Error::MemberNotFound)?;
        m.peer_urls = peer_urls
            .iter()
            .map(|u| format!("https://{}", peer_addr(u)))
            .collect();
        let change = if m.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.conf_change(change, m).await
    }

    async fn conf_change(
        &self,
        change: ConfChangeType,
        member: MemberInfo,
    ) -> Result<Vec<MemberInfo>> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::ConfChange {
            change,
            member,
            reply,
        })?;
        match rx.await.map_err(|_| Error::Stopped)?? {
            Response::Members(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Asks this member to stand for election now (tests, leader transfer).
    pub fn campaign(&self) -> Result<()> {
        self.send(Input::Campaign)
    }

    /// Hands leadership to `to` and waits until it leads.
    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        let mut rx = self.shared.leader_watch.subscribe();
        self.send(Input::TransferLeader(to))?;
        let wait = async {
            loop {
                if *rx.borrow_and_update() == to {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(Error::Stopped);
                }
            }
        };
        let timeout = self.shared.cfg.request_timeout;
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// A consistent dump of the state machine: what `snapshot save` streams.
    pub async fn snapshot(&self) -> Result<Vec<u8>> {
        self.read_barrier().await?;
        let mvcc = self.shared.mvcc.clone();
        tokio::task::spawn_blocking(move || mvcc.dump())
            .await
            .map_err(|e| Error::InvalidArgument(format!("snapshot task failed: {e}")))?
    }

    /// Stops the Raft loop and the peer endpoint, and waits for the loop.
    pub fn stop(&self) {
        let _ = self.shared.tx.send(Input::Stop);
        if let Some(h) = self.shared.thread.lock().take() {
            let _ = h.join();
        }
        if let Some(q) = &self.shared.quic {
            q.shutdown();
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.cfg
    }
}

/// The members a new cluster starts with: `initial_cluster`, or just this one.
fn initial_members(cfg: &StoreConfig) -> Result<Vec<MemberInfo>> {
    let initial = if cfg.initial_cluster.is_empty() {
        vec![(cfg.name.clone(), cfg.advertise())]
    } else {
        cfg.initial_cluster.clone()
    };
    if !initial.iter().any(|(n, _)| *n == cfg.name) {
        return Err(Error::InvalidArgument(format!(
            "--initial-cluster does not name this member ({})",
            cfg.name
        )));
    }
    Ok(initial
        .iter()
        .map(|(name, peer)| MemberInfo {
            id: member_id_for(peer),
            name: name.clone(),
            peer_urls: vec![format!("https://{}", peer_addr(peer))],
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect())
}

/// Creates the data directory of the first member of a new cluster from a
/// snapshot (without its checksum): the key space and leases of the
/// snapshot, the members of `cfg`.
pub fn restore(cfg: &StoreConfig, snapshot: &[u8]) -> Result<()> {
    if cfg.data_dir.join("store").exists() {
        return Err(data_dir_err(
            &cfg.data_dir,
            "already holds a store; restore needs a new directory",
        ));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| data_dir_err(&cfg.data_dir, format!("cannot create: {e}")))?;
    let tls = NodeTls::ensure(
        &cfg.data_dir.join("pki"),
        &cfg.name,
        &[],
        cfg.ca_from.as_deref(),
    )
    .map_err(|e| data_dir_err(&cfg.data_dir, e.to_string()))?;
    let (db, identity) = open_identity(cfg, stable_id(&["skiff-cluster", &tls.ca_pem]))?;
    let mvcc = Arc::new(Mvcc::open(&db, WatchHub::new())?);
    mvcc.restore(snapshot, 1)?;
    let members = initial_members(cfg)?;
    let voters: Vec<u64> = members.iter().map(|m| m.id).collect();
    mvcc.bootstrap_members(members)?;
    Member::open(&db, mvcc, MemberConfig::new(identity.member_id), &voters)?;
    Ok(())
}

fn open_identity(cfg: &StoreConfig, cluster_id: u64) -> Result<(Db, Identity)> {
    let db = Db::open(&cfg.data_dir, true)?;
    let want_member = member_id_for(&cfg.advertise());
    match db.identity()? {
        Some(id) => {
            if id.cluster_id != cluster_id {
                return Err(data_dir_err(
                    &cfg.data_dir,
                    format!(
                        "store belongs to cluster {:x}, but the certificates in pki/ are of cluster {:x}",
                        id.cluster_id, cluster_id
                    ),
                ));
            }
            if id.name != cfg.name {
                return Err(data_dir_err(
                    &cfg.data_dir,
                    format!("store belongs to member {:?}, not {:?}", id.name, cfg.name),
                ));
            }
            Ok((db, id))
        }
        None => {
            // A store with data but no identity was not made by skiff (or
            // was damaged): never adopt it.
            let kv_empty = {
                let mut it = db.db.raw_iterator_cf(db.cf(crate::db::CF_RAFT));
                it.seek_to_first();
                !it.valid()
            };
            if !kv_empty {
                return Err(data_dir_err(
                    &cfg.data_dir,
                    "store has data but no identity record",
                ));
            }
            let id = Identity {
                format: crate::db::FORMAT_VERSION,
                cluster_id,
                member_id: want_member,
                name: cfg.name.clone(),
            };
            db.write_identity(&id)?;
            Ok((db, id))
        }
    }
}

fn refresh_peers(transport: &dyn Transport, me: u64, members: &[MemberInfo]) {
    for m in members {
        if m.id != me
            && let Some(u) = m.peer_urls.first()
        {
            transport.set_peer(m.id, peer_addr(u));
        }
    }
}

fn rev_of(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

fn unexpected(r: Response) -> Error {
    Error::InvalidArgument(format!("unexpected response kind {r:?}"))
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        Err(Error::EmptyKey)
    } else {
        Ok(())
    }
}

fn check_txn(t: &pb::TxnRequest) -> Result<()> {
    use pb::request_op::Request;
    if t.success.len() > MAX_TXN_OPS || t.failure.len() > MAX_TXN_OPS {
        return Err(Error::TooManyOps);
    }
    for c in &t.compare {
        check_key(&c.key)?;
    }
    for ops in [&t.success, &t.failure] {
        let mut put_keys = std::collections::HashSet::new();
        for op in ops.iter() {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    check_key(&p.key)?;
                    if !put_keys.insert(p.key.clone()) {
                        return Err(Error::DuplicateKey);
                    }
                }
                Some(Request::RequestDeleteRange(d)) => check_key(&d.key)?,
                Some(Request::RequestRange(r)) => check_key(&r.key)?,
                Some(Request::RequestTxn(t)) => check_txn(t)?,
                None => return Err(Error::InvalidArgument("etcdserver: txn op is empty".into())),
            }
        }
        // A put inside a range deleted by the same branch is etcd's
        // "duplicate key" too.
        for op in ops.iter() {
            if let Some(Request::RequestDeleteRange(d)) = &op.request {
                let r = crate::mvcc::KeyRange::new(&d.key, &d.range_end);
                if put_keys.iter().any(|k| r.contains(k)) {
                    return Err(Error::DuplicateKey);
                }
            }
        }
    }
    Ok(())
}

fn txn_is_read_only(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(t)) => txn_is_read_only(t),
            _ => false,
        })
}

fn txn_is_serializable(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => txn_is_serializable(t),
            _ => false,
        })
}

struct Pending {
    reply: oneshot::Sender<Result<Response>>,
    deadline: Instant,
}

struct ReadBatch {
    waiters: Vec<oneshot::Sender<Result<()>>>,
    issued: Instant,
    first_issued: Instant,
}

/// The Raft thread.
struct RaftLoop {
    member: Member,
    rx: Receiver<Input>,
    shared: Arc<Shared>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    new_reads: Vec<oneshot::Sender<Result<()>>>,
    inflight_reads: HashMap<u64, ReadBatch>,
    ready_reads: Vec<(u64, Vec<oneshot::Sender<Result<()>>>)>,
    next_read: u64,
    revoking: HashMap<i64, Instant>,
    ticks: u64,
}

impl RaftLoop {
    fn new(member: Member, rx: Receiver<Input>, shared: Arc<Shared>) -> Self {
        RaftLoop {
            member,
            rx,
            shared,
            pending: HashMap::new(),
            next_id: 1,
            new_reads: Vec::new(),
            inflight_reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_read: 1,
            revoking: HashMap::new(),
            ticks: 0,
        }
    }

    fn run(&mut self) -> Result<()> {
        let tick = self.shared.cfg.tick;
        let mut next_tick = Instant::now() + tick;
        let mut stopping = false;
        while !stopping {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(input) => stopping |= self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Take everything queued: one Ready for all of it.
            for input in self.rx.try_iter().take(8192).collect::<Vec<_>>() {
                stopping |= self.handle(input);
            }
            let now = Instant::now();
            if now >= next_tick {
                self.member.tick();
                self.ticks += 1;
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
                self.on_tick(now);
            }
            if !self.new_reads.is_empty() {
                let id = self.next_read;
                self.next_read += 1;
                self.member.read_index(id.to_be_bytes().to_vec());
                self.inflight_reads.insert(
                    id,
                    ReadBatch {
                        waiters: std::mem::take(&mut self.new_reads),
                        issued: now,
                        first_issued: now,
                    },
                );
            }
            while self.member.has_ready() {
                let transport = self.shared.transport.clone();
                let out = self
                    .member
                    .handle_ready(&mut |msgs| transport.send(msgs), now)?;
                if self.process(out) {
                    return Ok(());
                }
            }
            self.release_reads();
            self.publish_status();
        }
        Ok(())
    }

    /// Returns true when the loop should stop.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Inbound(Inbound::Message(m)) => {
                if let Err(e) = self.member.step(m) {
                    tracing::debug!("step: {e}");
                }
            }
            Input::Inbound(Inbound::Unreachable(id)) => self.member.report_unreachable(id),
            Input::Inbound(Inbound::SnapshotStatus { to, delivered }) => {
                self.member.report_snapshot(to, delivered)
            }
            Input::Propose { op, reply } => {
                let id = if reply.is_some() { self.take_id() } else { 0 };
                let cmd = Command {
                    proposer: self.member.id(),
                    id,
                    op: Some(op),
                };
                match self.member.propose(&cmd) {
                    Ok(()) => {
                        if let Some(reply) = reply {
                            let deadline = Instant::now() + self.shared.cfg.request_timeout;
                            self.pending.insert(id, Pending { reply, deadline });
                        }
                    }
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
            Input::ConfChange {
                change,
                member,
                reply,
            } => {
                let id = self.take_id();
                let ctx = ConfChangeContext {
                    proposer: self.member.id(),
                    id,
                    member: Some(member.clone()),
                };
                match self.member.propose_conf_change(change, member.id, &ctx) {
                    Ok(()) => {
                        let deadline = Instant::now() + self.shared.cfg.request_timeout;
                        self.pending.insert(id, Pending { reply, deadline });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Input::Read { reply } => self.new_reads.push(reply),
            Input::Campaign => {
                if let Err(e) = self.member.campaign() {
                    tracing::warn!("campaign: {e}");
                }
            }
            Input::TransferLeader(to) => self.member.transfer_leader(to),
            Input::Stop => return true,
        }
        false
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Returns true when this member was removed and must stop.
    fn process(&mut self, out: ReadyOut) -> bool {
        let me = self.member.id();
        for a in out.applied {
            if a.proposer == me
                && a.id != 0
                && let Some(p) = self.pending.remove(&a.id)
            {
                let _ = p.reply.send(a.result);
            }
        }
        for rs in out.read_states {
            let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(batch) = self.inflight_reads.remove(&u64::from_be_bytes(ctx)) {
                self.ready_reads.push((rs.index, batch.waiters));
            }
        }
        if let Some((leader, role)) = out.leader_changed {
            tracing::info!(
                leader = format!("{leader:x}"),
                ?role,
                term = self.member.term(),
                "leader changed"
            );
            if role == StateRole::Leader {
                self.shared.mvcc.promote_leases(Instant::now());
                self.revoking.clear();
            }
            // Proposals in flight may or may not commit under the new leader;
            // their clients learn at once instead of waiting for a timeout.
            for (_, p) in self.pending.drain() {
                let _ = p.reply.send(Err(Error::LeaderChanged));
            }
            // Reads waiting on the old leader will not be answered: ask again.
            for (_, b) in std::mem::take(&mut self.inflight_reads) {
                self.new_reads.extend(b.waiters);
            }
            self.shared.leader_watch.send_replace(leader);
        }
        if out.members_changed {
            let members = self.shared.mvcc.members();
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            refresh_peers(&*self.shared.transport, me, &members);
            let known: Vec<u64> = self
                .member
                .voters()
                .into_iter()
                .chain(self.member.learners())
                .collect();
            for id in known {
                if !ids.contains(&id) && id != me {
                    self.shared.transport.remove_peer(id);
                }
            }
        }
        if out.removed {
            tracing::warn!("this member was removed from the cluster; stopping");
            return true;
        }
        false
    }

    fn release_reads(&mut self) {
        if self.ready_reads.is_empty() {
            return;
        }
        let applied = self.shared.mvcc.applied_index();
        self.ready_reads.retain_mut(|(index, waiters)| {
            if *index <= applied {
                for w in waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                false
            } else {
                true
            }
        });
    }

    fn on_tick(&mut self, now: Instant) {
        let election = self.shared.cfg.tick * self.shared.cfg.election_ticks as u32;
        let timeout = self.shared.cfg.request_timeout;
        // Reads Raft dropped (no leader yet, or a leader that has not yet
        // committed in its term) are asked again; given up after the
        // request timeout.
        let mut reissue = Vec::new();
        self.inflight_reads.retain(|_, b| {
            if now.duration_since(b.first_issued) > timeout {
                for w in b.waiters.drain(..) {
                    let _ = w.send(Err(Error::Timeout));
                }
                false
            } else if now.duration_since(b.issued) > election {
                reissue.push(std::mem::take(&mut b.waiters));
                false
            } else {
                true
            }
        });
        for waiters in reissue {
            let id = self.next_read;
            self.next_read += 1;
            self.member.read_index(id.to_be_bytes().to_vec());
            self.inflight_reads.insert(
                id,
                ReadBatch {
                    waiters,
                    issued: now,
                    first_issued: now,
                },
            );
        }
        if self.ticks.is_multiple_of(10) {
            let expired: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(Error::Timeout));
                }
            }
        }
        if self.member.role() == StateRole::Leader {
            for id in self.shared.mvcc.expired_leases(now) {
                let again = self
                    .revoking
                    .get(&id)
                    .is_none_or(|t| now.duration_since(*t) > election * 2);
                if again {
                    self.revoking.insert(id, now);
                    let cmd = Command {
                        proposer: self.member.id(),
                        id: 0,
                        op: Some(Op::LeaseRevoke(pb::LeaseRevokeRequest { id })),
                    };
                    if let Err(e) = self.member.propose(&cmd) {
                        tracing::debug!("revoke expired lease {id:x}: {e}");
                    }
                }
            }
            self.revoking
                .retain(|id, _| self.shared.mvcc.lease_exists(*id));
        }
        if self.ticks.is_multiple_of(20) {
            self.maybe_publish_self();
        }
    }

    /// A member that starts (or restarts with new client URLs) publishes its
    /// name and client URLs through the log.
    fn maybe_publish_self(&mut self) {
        if self.member.leader() == 0 {
            return;
        }
        let me = self.member.id();
        let cfg = &self.shared.cfg;
        let Some(m) = self.shared.mvcc.members().into_iter().find(|m| m.id == me) else {
            return;
        };
        if m.name == cfg.name && m.client_urls == cfg.client_urls {
            return;
        }
        let mut m2 = m.clone();
        m2.name = cfg.name.clone();
        m2.client_urls = cfg.client_urls.clone();
        let cmd = Command {
            proposer: me,
            id: 0,
            op: Some(Op::Publish(m2)),
        };
        let _ = self.member.propose(&cmd);
    }

    fn publish_status(&mut self) {
        let mut st = self.shared.status.lock();
        st.leader = self.member.leader();
        st.term = self.member.term();
        st.role = Some(self.member.role());
        st.commit = self.member.commit_index();
        st.last_index = self.member.last_index();
        st.applied = self.shared.mvcc.applied_index();
    }

    fn fail_all(&mut self, e: impl Fn() -> Error) {
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(e()));
        }
        for w in self.new_reads.drain(..) {
            let _ = w.send(Err(e()));
        }
        for (_, b) in self.inflight_reads.drain() {
            for w in b.waiters {
                let _ = w.send(Err(e()));
            }
        }
        for (_, ws) in self.ready_reads.drain(..) {
            for w in ws {
                let _ = w.send(Err(e()));
            }
        }
        self.shared.leader_watch.send_replace(0);
    }
}
