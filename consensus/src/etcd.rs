//! The etcd v3 gRPC API over a [`Store`]: KV, Watch, Lease, Cluster and
//! Maintenance, field-compatible with etcd so `etcdctl` works unmodified.
//!
//! Errors reach the wire through the one `From<Error> for tonic::Status`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::mvcc::{KeyRange, event_type};
use crate::pb::etcdserverpb::{self as pb, watch_request::RequestUnion};
use crate::pb::mvccpb;
use crate::pb::skiffstore::MemberInfo;
use crate::server::{MAX_REQUEST_BYTES, Store};
use crate::watch::WatchSpec;

/// What `endpoint status` reports as the server version: the etcd API
/// version skiff implements.
pub const API_VERSION: &str = "3.4.0";
/// Progress notifications for watchers that asked for them, as etcd.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// gRPC messages may exceed the request limit a little (envelope, txn ops).
const MAX_GRPC_MESSAGE: usize = MAX_REQUEST_BYTES + 512 * 1024;
const SNAPSHOT_CHUNK: usize = 32 * 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves the etcd API on `addr` until `shutdown` resolves. `tls` makes the
/// server require client certificates from the cluster CA.
pub async fn serve(
    store: Store,
    addr: SocketAddr,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    router(store, tls)?
        .serve_with_shutdown(addr, shutdown)
        .await
}

/// As [`serve`], on a listener the caller bound (with port 0, the caller
/// learns the port before serving starts).
pub async fn serve_on(
    store: Store,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router(store, tls)?
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn router(
    store: Store,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<tonic::transport::server::Router, tonic::transport::Error> {
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let svc = EtcdApi { store };
    Ok(builder
        .add_service(
            pb::kv_server::KvServer::new(svc.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(pb::watch_server::WatchServer::new(svc.clone()))
        .add_service(pb::lease_server::LeaseServer::new(svc.clone()))
        .add_service(pb::cluster_server::ClusterServer::new(svc.clone()))
        .add_service(pb::maintenance_server::MaintenanceServer::new(svc)))
}

#[derive(Clone)]
pub struct EtcdApi {
    store: Store,
}

impl EtcdApi {
    pub fn new(store: Store) -> Self {
        EtcdApi { store }
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.store.header(self.store.mvcc().revision()))
    }
}

fn member_pb(m: &MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for EtcdApi {
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(self.store.range(r.into_inner()).await?))
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(self.store.put(r.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        r: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.store.delete_range(r.into_inner()).await?,
        ))
    }

    async fn txn(&self, r: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(self.store.txn(r.into_inner()).await?))
    }

    async fn compact(
        &self,
        r: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Ok(Response::new(self.store.compact(r.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for EtcdApi {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        r: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut input = r.into_inner();
        let (out, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(1024);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, tokio::task::JoinHandle<()>> = HashMap::new();
            let mut next_id = 0i64;
            while let Some(msg) = input.next().await {
                let Ok(msg) = msg else { break };
                match msg.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            if watchers.contains_key(&c.watch_id) {
                                let resp = pb::WatchResponse {
                                    header: Some(store.header(store.mvcc().revision())),
                                    watch_id: c.watch_id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: "etcdserver: duplicate watch ID".into(),
                                    ..Default::default()
                                };
                                if out.send(Ok(resp)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            c.watch_id
                        } else {
                            while watchers.contains_key(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        watchers.retain(|_, h| !h.is_finished());
                        let task = spawn_watcher(store.clone(), id, c, out.clone());
                        watchers.insert(id, task);
                    }
                    Some(RequestUnion::CancelRequest(c)) => {
                        if let Some(h) = watchers.remove(&c.watch_id) {
                            h.abort();
                            let resp = pb::WatchResponse {
                                header: Some(store.header(store.mvcc().revision())),
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            };
                            if out.send(Ok(resp)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        // etcd answers with watch_id -1 and the current
                        // revision once every watcher of the stream is synced.
                        let resp = pb::WatchResponse {
                            header: Some(store.header(store.mvcc().revision())),
                            watch_id: -1,
                            ..Default::default()
                        };
                        if out.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                    None => {}
                }
            }
            for (_, h) in watchers {
                h.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn spawn_watcher(
    store: Store,
    watch_id: i64,
    c: pb::WatchCreateRequest,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) -> tokio::task::JoinHandle<()> {
    use pb::watch_create_request::FilterType;
    let spec = WatchSpec {
        range: KeyRange::new(&c.key, &c.range_end),
        start_rev: c.start_revision,
        prev_kv: c.prev_kv,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
    };
    let mut watcher = store.watch(spec);
    tokio::spawn(async move {
        let created = pb::WatchResponse {
            header: Some(store.header(store.mvcc().revision())),
            watch_id,
            created: true,
            ..Default::default()
        };
        if out.send(Ok(created)).await.is_err() {
            return;
        }
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.tick().await;
        loop {
            let resp = tokio::select! {
                r = watcher.next() => match r {
                    Ok(events) => {
                        let rev = events.last().map_or(0, |e| e.rev.main);
                        pb::WatchResponse {
                            header: Some(store.header(rev.max(1))),
                            watch_id,
                            events: events
                                .into_iter()
                                .map(|e| mvccpb::Event {
                                    r#type: event_type(e.kind),
                                    kv: Some(e.kv),
                                    prev_kv: e.prev_kv,
                                })
                                .collect(),
                            ..Default::default()
                        }
                    }
                    Err(Error::Compacted) => {
                        let resp = pb::WatchResponse {
                            header: Some(store.header(store.mvcc().revision())),
                            watch_id,
                            canceled: true,
                            compact_revision: store.mvcc().compact_revision(),
                            cancel_reason: Error::Compacted.to_string(),
                            ..Default::default()
                        };
                        let _ = out.send(Ok(resp)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = out.send(Err(e.into())).await;
                        return;
                    }
                },
                _ = progress.tick(), if c.progress_notify => {
                    let Some(rev) = watcher.progress_rev() else { continue };
                    pb::WatchResponse {
                        header: Some(store.header(rev)),
                        watch_id,
                        ..Default::default()
                    }
                }
            };
            if out.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    })
}

#[tonic::async_trait]
impl pb::lease_server::Lease for EtcdApi {
    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        r: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(self.store.lease_grant(r.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        r: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            self.store.lease_revoke(r.into_inner().id).await?,
        ))
    }

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut input = r.into_inner();
        let (out, rx) = mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = input.next().await {
                let resp = store.lease_keep_alive(req.id).await.map_err(Status::from);
                if out.send(resp).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            self.store.lease_time_to_live(r.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        _r: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Ok(Response::new(self.store.lease_leases().await?))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for EtcdApi {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = r.into_inner();
        let (m, all) = self.store.member_add(r.peer_ur_ls, r.is_learner).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(member_pb(&m)),
            members: all.iter().map(member_pb).collect(),
        }))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let all = self.store.member_remove(r.into_inner().id).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: all.iter().map(member_pb).collect(),
        }))
    }

    async fn member_update(
        &self,
        r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = r.into_inner();
        let all = self.store.member_update(r.id, r.peer_ur_ls).await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: all.iter().map(member_pb).collect(),
        }))
    }

    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.store.members().iter().map(member_pb).collect(),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let all = self.store.member_promote(r.into_inner().id).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: all.iter().map(member_pb).collect(),
        }))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for EtcdApi {
    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        _r: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // skiff raises no alarms: there is no space quota to exhaust yet.
        Ok(Response::new(pb::AlarmResponse {
            header: self.header(),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.store.raft_status();
        let size = self.store.mvcc().size_bytes();
        let me = self.store.identity().member_id;
        let is_learner = self
            .store
            .members()
            .iter()
            .any(|m| m.id == me && m.is_learner);
        Ok(Response::new(pb::StatusResponse {
            header: self.header(),
            version: API_VERSION.into(),
            db_size: size,
            leader: st.leader,
            raft_index: st.last_index,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner,
        }))
    }

    async fn defragment(
        &self,
        _r: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // RocksDB reclaims space by compaction on its own.
        Ok(Response::new(pb::DefragmentResponse {
            header: self.header(),
        }))
    }

    async fn hash(
        &self,
        _r: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (h, _) = self.store.mvcc().hash()?;
        Ok(Response::new(pb::HashResponse {
            header: self.header(),
            hash: h as u32,
        }))
    }

    async fn hash_kv(
        &self,
        _r: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let mvcc = self.store.mvcc();
        let (h, _) = mvcc.hash()?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(),
            hash: h as u32,
            compact_revision: mvcc.compact_revision(),
        }))
    }

    async fn snapshot(
        &self,
        _r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let data = with_checksum(self.store.snapshot().await?);
        let header = self.header();
        let total = data.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = data
            .chunks(SNAPSHOT_CHUNK)
            .scan(total, |remaining, chunk| {
                *remaining -= chunk.len();
                Some(Ok(pb::SnapshotResponse {
                    header,
                    remaining_bytes: *remaining as u64,
                    blob: chunk.to_vec(),
                }))
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = r.into_inner().target_id;
        if !self.store.members().iter().any(|m| m.id == target) {
            return Err(Error::MemberNotFound.into());
        }
        self.store.transfer_leader(target).await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.header(),
        }))
    }
}

/// A snapshot file is the state-machine dump, zero-padded to a multiple of
/// 512 bytes, followed by its SHA-256 — the shape of etcd's snapshots, which
/// `etcdctl snapshot save` checks (`size % 512 == 32`).
pub fn with_checksum(mut data: Vec<u8>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    data.resize(data.len().div_ceil(512) * 512, 0);
    let sum = Sha256::digest(&data);
    data.extend_from_slice(&sum);
    data
}

/// Checks and strips the trailing SHA-256 of a snapshot file.
pub fn verify_checksum(file: &[u8]) -> Result<&[u8], Error> {
    use sha2::{Digest, Sha256};
    if file.len() < 32 {
        return Err(Error::Corrupt(
            "snapshot file is shorter than its checksum".into(),
        ));
    }
    let (data, sum) = file.split_at(file.len() - 32);
    if Sha256::digest(data).as_slice() != sum {
        return Err(Error::Corrupt(
            "snapshot file checksum mismatch (truncated or altered)".into(),
        ));
    }
    Ok(data)
}
