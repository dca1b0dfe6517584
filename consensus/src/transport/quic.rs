//! Raft messages over QUIC with mutual TLS.
//!
//! One UDP endpoint per member serves both directions: a member sends on the
//! connection it dialled and receives on the connections others dialled to
//! it. Per peer, a task owns the outgoing connection and one long-lived
//! unidirectional stream carrying, after a header, length-prefixed protobuf
//! messages in order. Snapshots travel on a stream of their own so that a
//! large one does not hold up heartbeats, and their outcome is reported back.
//!
//! Wire format of every stream:
//!
//! ```text
//! header: magic "SKRF" | version u16 | cluster_id u64 | from u64 | incarnation u64
//!         (big endian; the incarnation is random per process start)
//! frame:  length u32 | eraftpb.Message                             (repeated)
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use protobuf::Message as _;
use quinn::{
    ConnectError, Connection, ConnectionError, Endpoint, EndpointConfig, IdleTimeout,
    ReadExactError, RecvStream, SendStream, TransportConfig, VarInt, WriteError,
};
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::{Inbound, Inbox, Transport};
use crate::pki::{NodeTls, PkiError};

const MAGIC: [u8; 4] = *b"SKRF";
const VERSION: u16 = 2;
const HEADER_LEN: usize = 4 + 2 + 8 + 8 + 8;

/// Largest frame accepted or sent. Snapshots are the only large messages;
/// the cap bounds what one frame can make a receiver allocate.
pub const MAX_FRAME: usize = 512 << 20;

/// Messages queued per peer before `send` starts dropping them.
const QUEUE_DEPTH: usize = 4096;
/// Messages written with one `write_all`.
const MAX_BATCH: usize = 256;

const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A connection that lived this long was healthy: the next failure starts
/// over at `MIN_BACKOFF`. A peer that accepts and then drops us at once
/// (wrong cluster, revoked certificate) keeps backing off instead.
const STABLE_AFTER: Duration = MAX_BACKOFF;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long a silent peer keeps its connection; keep-alives make silence
/// mean the peer or the path is gone.
const IDLE_TIMEOUT_MS: u32 = 5_000;

// Application close and stop codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_BAD_HEADER: u32 = 1;
const CLOSE_WRONG_CLUSTER: u32 = 2;
const STOP_BAD_FRAME: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("building raft transport tls config: {0}")]
    Tls(#[from] PkiError),
    #[error("binding raft quic endpoint to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Why an outgoing connection or stream failed; logged, then retried.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("resolving {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("{addr} resolves to no address of the local endpoint's family")]
    NoAddress { addr: String },
    #[error("peer address {addr:?} is not host:port")]
    BadAddress { addr: String },
    #[error("connecting: {0}")]
    Connect(#[from] ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("connecting timed out after {0:?}")]
    Timeout(Duration),
    #[error("writing: {0}")]
    Write(#[from] WriteError),
    #[error("stream closed")]
    Closed(#[from] quinn::ClosedStream),
    #[error("stopped by peer with code {0}")]
    Stopped(VarInt),
    #[error("waiting for acknowledgement: {0}")]
    Ack(#[from] quinn::StoppedError),
    #[error("message to {to} of {len} bytes exceeds the {MAX_FRAME} byte frame limit")]
    TooLarge { to: u64, len: usize },
    #[error("encoding message: {0}")]
    Encode(#[from] protobuf::ProtobufError),
}

/// What the connection tasks share.
struct Shared {
    endpoint: Endpoint,
    inbox: Arc<dyn Inbox>,
    self_id: u64,
    cluster_id: u64,
    local_addr: SocketAddr,
    /// Random per process start, sent in every stream header.
    incarnation: u64,
    /// The last incarnation each peer announced, and when it replaced an
    /// earlier one. A peer that restarted (kill -9) leaves our connection
    /// to its old process half-open until the idle timeout; seeing its new
    /// incarnation tells the sender to redial now. A first sighting is no
    /// restart: our link may well go to that very process, and dropping
    /// it would lose what it has not yet delivered.
    peer_incarnations: Mutex<HashMap<u64, (u64, Option<Instant>)>>,
}

struct Peer {
    addr: String,
    tx: mpsc::Sender<Message>,
    task: AbortHandle,
}

/// The QUIC [`Transport`]. All IO runs on the runtime given to
/// [`QuicTransport::start`]; the [`Transport`] methods may be called from
/// any thread, with or without a runtime.
pub struct QuicTransport {
    shared: Arc<Shared>,
    runtime: Handle,
    peers: Mutex<HashMap<u64, Peer>>,
    accept_task: AbortHandle,
    closed: AtomicBool,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("self_id", &self.shared.self_id)
            .field("cluster_id", &self.shared.cluster_id)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds the endpoint to `listen` (UDP) and starts accepting peers whose
    /// certificates were issued by the CA in `tls`. Messages from members of
    /// another `cluster_id` are refused.
    pub fn start(
        listen: SocketAddr,
        tls: &NodeTls,
        self_id: u64,
        cluster_id: u64,
        inbox: Arc<dyn Inbox>,
        runtime: Handle,
    ) -> Result<Arc<Self>, TransportError> {
        let transport = Arc::new(transport_config());
        let mut server = tls.quic_server_config()?;
        server.transport_config(transport.clone());
        let mut client = tls.quic_client_config()?;
        client.transport_config(transport);

        let bind_err = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        // The stateless-reset key is derived from the member's private key,
        // so it survives a restart: a member that crashed and came back
        // answers packets of its old connections with a reset, and peers
        // redial at once instead of waiting out the idle timeout.
        let reset_secret = {
            use sha2::{Digest, Sha256};
            Sha256::new()
                .chain_update(b"skiff quic stateless reset\0")
                .chain_update(tls.key_pem.as_bytes())
                .finalize()
        };
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_secret);
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        // quinn finds its runtime through the ambient context.
        let mut endpoint = {
            let _guard = runtime.enter();
            Endpoint::new(
                EndpointConfig::new(Arc::new(reset_key)),
                Some(server),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(bind_err)?
        };
        endpoint.set_default_client_config(client);
        let local_addr = endpoint.local_addr().map_err(bind_err)?;

        let shared = Arc::new(Shared {
            endpoint,
            inbox,
            self_id,
            cluster_id,
            local_addr,
            incarnation: rand::random::<u64>(),
            peer_incarnations: Mutex::new(HashMap::new()),
        });
        let accept_task = runtime.spawn(accept_loop(shared.clone())).abort_handle();
        info!(%local_addr, self_id, cluster_id, "raft quic transport listening");
        Ok(Arc::new(Self {
            shared,
            runtime,
            peers: Mutex::new(HashMap::new()),
            accept_task,
            closed: AtomicBool::new(false),
        }))
    }

    /// The bound UDP address (useful when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Closes every connection and stops accepting; later sends are dropped.
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for (_, peer) in self.peers.lock().drain() {
            peer.task.abort();
        }
        self.accept_task.abort();
        self.shared
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for QuicTransport {
    fn send(&self, msgs: Vec<Message>) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut unreachable: Vec<u64> = Vec::new();
        {
            let peers = self.peers.lock();
            for msg in msgs {
                let to = msg.to;
                let queued = match peers.get(&to) {
                    Some(peer) => peer.tx.try_send(msg).map_err(|e| e.into_inner()),
                    None => Err(msg),
                };
                if let Err(msg) = queued {
                    report_dropped_snapshot(&*self.shared.inbox, &msg);
                    if !unreachable.contains(&to) {
                        unreachable.push(to);
                    }
                }
            }
        }
        for to in unreachable {
            self.shared.inbox.deliver(Inbound::Unreachable(to));
        }
    }

    fn set_peer(&self, id: u64, addr: String) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut peers = self.peers.lock();
        if let Some(old) = peers.get(&id) {
            if old.addr == addr {
                return;
            }
            // Messages queued for the old address are dropped with the task;
            // Raft resends what matters.
            old.task.abort();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = self
            .runtime
            .spawn(run_peer(self.shared.clone(), id, addr.clone(), rx))
            .abort_handle();
        peers.insert(id, Peer { addr, tx, task });
    }

    fn remove_peer(&self, id: u64) {
        if let Some(peer) = self.peers.lock().remove(&id) {
            peer.task.abort();
        }
    }
}

fn transport_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.keep_alive_interval(Some(KEEP_ALIVE));
    config.max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))));
    config
}

/// Raft waits for a snapshot's outcome before it sends another: every
/// snapshot that is dropped must be reported as failed.
fn report_dropped_snapshot(inbox: &dyn Inbox, msg: &Message) {
    if msg.get_msg_type() == MessageType::MsgSnapshot {
        inbox.deliver(Inbound::SnapshotStatus {
            to: msg.to,
            delivered: false,
        });
    }
}

fn header(cluster_id: u64, from: u64, incarnation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_be_bytes());
    h[6..14].copy_from_slice(&cluster_id.to_be_bytes());
    h[14..22].copy_from_slice(&from.to_be_bytes());
    h[22..30].copy_from_slice(&incarnation.to_be_bytes());
    h
}

/// Appends one length-prefixed frame to `buf`; on error `buf` is unchanged.
fn encode_frame(msg: &Message, buf: &mut Vec<u8>) -> Result<(), LinkError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = msg.write_to_vec(buf) {
        buf.truncate(start);
        return Err(e.into());
    }
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(LinkError::TooLarge { to: msg.to, len });
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// An open connection to a peer and, once something was sent, its stream.
struct Link {
    conn: Connection,
    stream: Option<SendStream>,
    since: Instant,
}

/// Owns the connection to one peer: sends what `rx` yields until the peer is
/// removed (the task is aborted) or the transport shuts down.
async fn run_peer(shared: Arc<Shared>, to: u64, addr: String, mut rx: mpsc::Receiver<Message>) {
    let mut backoff = MIN_BACKOFF;
    let mut link: Option<Link> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut buf = Vec::new();
    let mut failing = false;
    while let Some(first) = rx.recv().await {
        // The peer restarted after we connected: our link goes to a dead
        // process.
        if let Some(l) = &link {
            let restarted = shared
                .peer_incarnations
                .lock()
                .get(&to)
                .and_then(|(_, at)| *at);
            if restarted.is_some_and(|at| at > l.since) {
                debug!(to, %addr, "raft peer restarted; redialling");
                link = None;
            }
        }
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        match send_batch(&shared, to, &addr, &mut link, &mut batch, &mut buf).await {
            Ok(()) => {
                if failing {
                    info!(to, %addr, "raft peer reachable again");
                    failing = false;
                }
            }
            Err(e) => {
                if link
                    .as_ref()
                    .is_some_and(|l| l.since.elapsed() >= STABLE_AFTER)
                {
                    backoff = MIN_BACKOFF;
                }
                // Routine while a peer restarts: say it once per outage.
                if failing {
                    debug!(to, %addr, "raft peer still unreachable: {e}");
                } else {
                    warn!(to, %addr, "raft peer unreachable: {e}");
                    failing = true;
                }
                link = None;
                // What was queued is stale by the time we are back; Raft
                // resends after it hears the peer is unreachable.
                for msg in batch.drain(..) {
                    report_dropped_snapshot(&*shared.inbox, &msg);
                }
                while let Ok(msg) = rx.try_recv() {
                    report_dropped_snapshot(&*shared.inbox, &msg);
                }
                shared.inbox.deliver(Inbound::Unreachable(to));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Writes `batch` to the peer, connecting first if needed. Snapshots are
/// handed to tasks of their own. `batch` is emptied unless connecting failed.
async fn send_batch(
    shared: &Arc<Shared>,
    to: u64,
    addr: &str,
    link: &mut Option<Link>,
    batch: &mut Vec<Message>,
    buf: &mut Vec<u8>,
) -> Result<(), LinkError> {
    // A connection that closed under us may have swallowed what was last
    // written to it: that is a failure to report, not just to repair.
    if let Some(l) = link
        && let Some(reason) = l.conn.close_reason()
    {
        return Err(reason.into());
    }
    let link = match link {
        Some(l) => l,
        None => {
            let conn = connect(shared, addr).await?;
            debug!(to, addr, remote = %conn.remote_address(), "connected to raft peer");
            link.insert(Link {
                conn,
                stream: None,
                since: Instant::now(),
            })
        }
    };

    buf.clear();
    for msg in batch.drain(..) {
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            tokio::spawn(send_snapshot(shared.clone(), link.conn.clone(), msg));
            continue;
        }
        if let Err(e) = encode_frame(&msg, buf) {
            // Only this message is lost; the stream is still in sync.
            warn!(to, "dropping raft message: {e}");
        }
    }
    if buf.is_empty() {
        return Ok(());
    }
    let stream = match &mut link.stream {
        Some(stream) => stream,
        None => {
            let mut stream = link.conn.open_uni().await?;
            stream
                .write_all(&header(
                    shared.cluster_id,
                    shared.self_id,
                    shared.incarnation,
                ))
                .await?;
            link.stream.insert(stream)
        }
    };
    stream.write_all(buf).await?;
    Ok(())
}

/// Sends one snapshot on its own stream and reports whether the peer
/// acknowledged all of it.
async fn send_snapshot(shared: Arc<Shared>, conn: Connection, msg: Message) {
    let to = msg.to;
    let result = async {
        let mut buf = header(shared.cluster_id, shared.self_id, shared.incarnation).to_vec();
        encode_frame(&msg, &mut buf)?;
        drop(msg);
        let mut stream = conn.open_uni().await?;
        stream.write_all(&buf).await?;
        drop(buf);
        stream.finish()?;
        // None: the peer acknowledged every byte. Some: it stopped the
        // stream, having rejected the frame.
        match stream.stopped().await? {
            None => Ok(()),
            Some(code) => Err(LinkError::Stopped(code)),
        }
    }
    .await;
    let delivered = match result {
        Ok(()) => true,
        Err(e) => {
            warn!(to, "sending snapshot failed: {e}");
            false
        }
    };
    shared
        .inbox
        .deliver(Inbound::SnapshotStatus { to, delivered });
}

async fn connect(shared: &Shared, addr: &str) -> Result<Connection, LinkError> {
    let server_name = host_of(addr).ok_or_else(|| LinkError::BadAddress {
        addr: addr.to_owned(),
    })?;
    // Resolved on every attempt so that a changed DNS record is picked up.
    let remote = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| LinkError::Resolve {
            addr: addr.to_owned(),
            source,
        })?
        .find(|a| a.is_ipv4() == shared.local_addr.is_ipv4())
        .ok_or_else(|| LinkError::NoAddress {
            addr: addr.to_owned(),
        })?;
    // The peer's certificate must name the host we dialled.
    let connecting = shared.endpoint.connect(remote, server_name)?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(LinkError::Timeout(CONNECT_TIMEOUT)),
    }
}

/// The host part of `host:port`, `ip:port` or `[ipv6]:port`.
fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']')?,
        None => host,
    };
    (!host.is_empty()).then_some(host)
}

async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(shared, conn).await,
                // Mostly a client certificate from another CA.
                Err(e) => warn!(%remote, "refused raft connection: {e}"),
            }
        });
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: Connection) {
    debug!(remote = %conn.remote_address(), "raft peer connected");
    loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(serve_stream(shared.clone(), conn.clone(), stream));
            }
            Err(e) => {
                debug!(remote = %conn.remote_address(), "raft peer connection ended: {e}");
                return;
            }
        }
    }
}

async fn serve_stream(shared: Arc<Shared>, conn: Connection, mut stream: RecvStream) {
    let remote = conn.remote_address();
    let mut raw = [0u8; HEADER_LEN];
    if let Err(e) = stream.read_exact(&mut raw).await {
        debug!(%remote, "raft stream ended before its header: {e}");
        return;
    }
    let version = u16::from_be_bytes([raw[4], raw[5]]);
    if raw[..4] != MAGIC || version != VERSION {
        warn!(%remote, version, "closing raft connection: unknown stream header");
        conn.close(VarInt::from_u32(CLOSE_BAD_HEADER), b"unknown stream header");
        return;
    }
    let cluster_id = u64::from_be_bytes(raw[6..14].try_into().expect("8 bytes"));
    let from = u64::from_be_bytes(raw[14..22].try_into().expect("8 bytes"));
    let incarnation = u64::from_be_bytes(raw[22..30].try_into().expect("8 bytes"));
    if cluster_id != shared.cluster_id {
        warn!(
            %remote,
            from,
            cluster_id,
            expected = shared.cluster_id,
            "closing raft connection from another cluster"
        );
        conn.close(VarInt::from_u32(CLOSE_WRONG_CLUSTER), b"wrong cluster id");
        return;
    }
    {
        let mut seen = shared.peer_incarnations.lock();
        match seen.get(&from) {
            Some((inc, _)) if *inc == incarnation => {}
            Some(_) => {
                seen.insert(from, (incarnation, Some(Instant::now())));
            }
            None => {
                seen.insert(from, (incarnation, None));
            }
        }
    }

    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return,
            Err(e) => {
                debug!(%remote, from, "raft stream ended: {e}");
                return;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            warn!(%remote, from, len, "rejecting raft frame over {MAX_FRAME} bytes");
            let _ = stream.stop(VarInt::from_u32(STOP_BAD_FRAME));
            return;
        }
        // Grown as bytes arrive rather than allocated from the claimed length.
        buf.clear();
        buf.reserve(len.min(64 << 10));
        match (&mut stream).take(len as u64).read_to_end(&mut buf).await {
            Ok(n) if n == len => {}
            Ok(n) => {
                debug!(%remote, from, "raft stream ended inside a frame ({n} of {len} bytes)");
                return;
            }
            Err(e) => {
                debug!(%remote, from, "raft stream ended: {e}");
                return;
            }
        }
        let msg = match Message::parse_from_bytes(&buf) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(%remote, from, "rejecting undecodable raft frame: {e}");
                let _ = stream.stop(VarInt::from_u32(STOP_BAD_FRAME));
                return;
            }
        };
        if msg.from != from || msg.to != shared.self_id {
            // A peer confused about identities (say, an address reused by
            // another member) must not be stepped into Raft.
            warn!(
                %remote,
                from,
                msg_from = msg.from,
                msg_to = msg.to,
                self_id = shared.self_id,
                "dropping misaddressed raft message"
            );
            continue;
        }
        // Large buffers are not kept around between frames.
        if buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
        shared.inbox.deliver(Inbound::Message(msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{Receiver, RecvTimeoutError};
    use raft::eraftpb::Snapshot;

    const WAIT: Duration = Duration::from_secs(10);

    struct Node {
        transport: Arc<QuicTransport>,
        inbox: Receiver<Inbound>,
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn node(rt: &tokio::runtime::Runtime, tls: &NodeTls, id: u64, cluster_id: u64) -> Node {
        let (tx, rx) = crossbeam_channel::unbounded();
        let transport = QuicTransport::start(
            "127.0.0.1:0".parse().unwrap(),
            tls,
            id,
            cluster_id,
            Arc::new(tx),
            rt.handle().clone(),
        )
        .unwrap();
        Node {
            transport,
            inbox: rx,
        }
    }

    fn connect(a: &Node, a_id: u64, b: &Node, b_id: u64) {
        a.transport
            .set_peer(b_id, b.transport.local_addr().to_string());
        b.transport
            .set_peer(a_id, a.transport.local_addr().to_string());
    }

    fn msg(from: u64, to: u64, index: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = from;
        m.to = to;
        m.index = index;
        m.term = 7;
        m
    }

    /// Next delivered message, skipping transport reports.
    fn next_message(inbox: &Receiver<Inbound>) -> Message {
        let deadline = Instant::now() + WAIT;
        loop {
            match inbox.recv_deadline(deadline) {
                Ok(Inbound::Message(m)) => return m,
                Ok(_) => {}
                Err(e) => panic!("no message within {WAIT:?}: {e}"),
            }
        }
    }

    fn tls_pair() -> (tempfile::TempDir, NodeTls, NodeTls) {
        let tmp = tempfile::tempdir().unwrap();
        let a = NodeTls::ensure(&tmp.path().join("a"), "a", &[], None).unwrap();
        let b =
            NodeTls::ensure(&tmp.path().join("b"), "b", &[], Some(&tmp.path().join("a"))).unwrap();
        (tmp, a, b)
    }

    #[test]
    fn messages_flow_both_ways_in_order() {
        let rt = runtime();
        let (_tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let b = node(&rt, &b_tls, 2, 42);
        connect(&a, 1, &b, 2);

        // Called from this plain thread, as the Raft loop does.
        for i in 0..500 {
            a.transport.send(vec![msg(1, 2, i)]);
            if i % 100 == 0 {
                b.transport.send(vec![msg(2, 1, i)]);
            }
        }
        for i in 0..500 {
            let m = next_message(&b.inbox);
            assert_eq!((m.from, m.to, m.index, m.term), (1, 2, i, 7));
        }
        for i in (0..500).step_by(100) {
            let m = next_message(&a.inbox);
            assert_eq!((m.from, m.to, m.index), (2, 1, i));
        }
        a.transport.shutdown();
        b.transport.shutdown();
    }

    #[test]
    fn unknown_peer_is_reported_unreachable() {
        let rt = runtime();
        let (_tmp, a_tls, _) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let mut snap = msg(1, 9, 0);
        snap.set_msg_type(MessageType::MsgSnapshot);
        a.transport.send(vec![msg(1, 9, 1), msg(1, 9, 2), snap]);
        let got: Vec<String> = (0..2)
            .map(|_| format!("{:?}", a.inbox.recv_timeout(WAIT).unwrap()))
            .collect();
        assert!(got.contains(&"Unreachable(9)".to_string()), "{got:?}");
        assert!(
            got.iter().any(|s| s.contains("delivered: false")),
            "{got:?}"
        );
        // One report per peer per call, not per message.
        assert!(a.inbox.recv_timeout(Duration::from_millis(100)).is_err());
    }

    /// `intruder` keeps sending to `target` (id 1) until it reports the
    /// target unreachable; `target` must receive nothing.
    fn assert_cannot_deliver(
        rt: &tokio::runtime::Runtime,
        target: &Node,
        intruder: &NodeTls,
        cluster_id: u64,
    ) {
        let c = node(rt, intruder, 3, cluster_id);
        c.transport
            .set_peer(1, target.transport.local_addr().to_string());
        let deadline = Instant::now() + WAIT;
        let mut i = 0;
        loop {
            c.transport.send(vec![msg(3, 1, i)]);
            i += 1;
            match c.inbox.recv_timeout(Duration::from_millis(50)) {
                Ok(Inbound::Unreachable(1)) => break,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "intruder never saw unreachable");
        }
        match target.inbox.recv_timeout(Duration::from_millis(300)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => panic!("target received {other:?}"),
        }
        c.transport.shutdown();
    }

    #[test]
    fn a_member_of_another_ca_cannot_deliver() {
        let rt = runtime();
        let (tmp, a_tls, _) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);

        // Another CA altogether: the intruder rejects the target's server cert.
        let stranger = NodeTls::ensure(&tmp.path().join("c"), "c", &[], None).unwrap();
        assert_ne!(stranger.ca_pem, a_tls.ca_pem);
        assert_cannot_deliver(&rt, &a, &stranger, 42);

        // Trusting the cluster CA but holding a foreign certificate: the
        // target rejects the client cert.
        let forged = NodeTls {
            ca_pem: a_tls.ca_pem.clone(),
            ..stranger
        };
        assert_cannot_deliver(&rt, &a, &forged, 42);
    }

    #[test]
    fn a_member_of_another_cluster_cannot_deliver() {
        let rt = runtime();
        let (_tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        assert_cannot_deliver(&rt, &a, &b_tls, 43);
    }

    #[test]
    fn snapshot_delivery_is_reported() {
        let rt = runtime();
        let (_tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let b = node(&rt, &b_tls, 2, 42);
        connect(&a, 1, &b, 2);

        let mut snap = msg(1, 2, 0);
        snap.set_msg_type(MessageType::MsgSnapshot);
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 1234;
        snapshot.data = vec![7u8; 4 << 20].into();
        snap.set_snapshot(snapshot);
        a.transport.send(vec![msg(1, 2, 1), snap]);

        let deadline = Instant::now() + WAIT;
        let mut status = None;
        let mut got_snapshot = false;
        while status.is_none() || !got_snapshot {
            if let Ok(Inbound::SnapshotStatus { to, delivered }) = a.inbox.try_recv() {
                status = Some((to, delivered));
            }
            match b.inbox.recv_timeout(Duration::from_millis(20)) {
                Ok(Inbound::Message(m)) if m.get_msg_type() == MessageType::MsgSnapshot => {
                    assert_eq!(m.get_snapshot().get_metadata().index, 1234);
                    assert_eq!(m.get_snapshot().data.len(), 4 << 20);
                    got_snapshot = true;
                }
                Ok(Inbound::Message(m)) => assert_eq!(m.index, 1),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "status {status:?}, snapshot {got_snapshot}"
            );
        }
        assert_eq!(status, Some((2, true)));
    }

    #[test]
    fn a_peer_that_shuts_down_is_reported_unreachable() {
        let rt = runtime();
        let (_tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let b = node(&rt, &b_tls, 2, 42);
        connect(&a, 1, &b, 2);
        a.transport.send(vec![msg(1, 2, 1)]);
        assert_eq!(next_message(&b.inbox).index, 1);

        b.transport.shutdown();
        let deadline = Instant::now() + WAIT;
        let mut i = 2;
        loop {
            a.transport.send(vec![msg(1, 2, i)]);
            i += 1;
            match a.inbox.recv_timeout(Duration::from_millis(50)) {
                Ok(Inbound::Unreachable(2)) => break,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => assert!(Instant::now() < deadline, "never reported unreachable"),
            }
        }
    }

    #[test]
    fn a_changed_address_is_used() {
        let rt = runtime();
        let (tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let b = node(&rt, &b_tls, 2, 42);
        connect(&a, 1, &b, 2);
        a.transport.send(vec![msg(1, 2, 1)]);
        assert_eq!(next_message(&b.inbox).index, 1);

        // Member 2 moves to a new endpoint.
        let b2_tls = NodeTls::ensure(
            &tmp.path().join("b2"),
            "b",
            &[],
            Some(&tmp.path().join("a")),
        )
        .unwrap();
        let b2 = node(&rt, &b2_tls, 2, 42);
        a.transport
            .set_peer(2, b2.transport.local_addr().to_string());
        a.transport.send(vec![msg(1, 2, 2)]);
        assert_eq!(next_message(&b2.inbox).index, 2);
        assert!(b.inbox.recv_timeout(Duration::from_millis(100)).is_err());
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = vec![9];
        encode_frame(&msg(1, 2, 3), &mut buf).unwrap();
        let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 5);
        let back = Message::parse_from_bytes(&buf[5..]).unwrap();
        assert_eq!((back.from, back.to, back.index), (1, 2, 3));
    }

    #[test]
    fn an_oversized_frame_is_rejected() {
        let rt = runtime();
        let (_tmp, a_tls, b_tls) = tls_pair();
        let a = node(&rt, &a_tls, 1, 42);
        let addr = a.transport.local_addr();
        // A well-behaved sender never writes such a frame: speak the wire
        // format by hand.
        let code = rt.block_on(async move {
            let mut endpoint = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            endpoint.set_default_client_config(b_tls.quic_client_config().unwrap());
            let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
            let mut stream = conn.open_uni().await.unwrap();
            stream.write_all(&header(42, 2, 0)).await.unwrap();
            let len = (MAX_FRAME as u32 + 1).to_be_bytes();
            stream.write_all(&len).await.unwrap();
            tokio::time::timeout(WAIT, stream.stopped())
                .await
                .unwrap()
                .unwrap()
        });
        assert_eq!(code, Some(VarInt::from_u32(STOP_BAD_FRAME)));
        assert!(a.inbox.try_recv().is_err());
    }

    #[test]
    fn host_of_parses_peer_addresses() {
        assert_eq!(host_of("10.0.0.1:7000"), Some("10.0.0.1"));
        assert_eq!(host_of("[::1]:7000"), Some("::1"));
        assert_eq!(host_of("node-a.example:7000"), Some("node-a.example"));
        assert_eq!(host_of("node-a.example"), None);
        assert_eq!(host_of(":7000"), None);
    }
}
