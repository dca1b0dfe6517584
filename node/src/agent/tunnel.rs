//! Service traffic between nodes: the node ↔ node tunnel.
//!
//! Pod addresses are local to their node — a wasm pod's `127.42.X.Y` is on
//! the host's loopback, a container pod's address behind the host's own
//! veth — so a node's service proxy cannot dial another node's pod itself.
//! It asks that node's agent to, over QUIC with mutual TLS: both ends
//! present their node certificate from the cluster CA, the dialler checks
//! that the certificate is the node's it meant (its name), the listener
//! that the peer is a node (`system:nodes`). One bidirectional stream
//! carries one proxied connection (or one UDP flow), so a slow one holds
//! up no other, and one connection per pair of nodes carries them all.
//!
//! ```text
//!  node A: service proxy ══ QUIC (UDP, B's kubelet port) ══▶ node B: agent
//!     stream: header (protocol, pod address) ──────────▶  is it a pod of B?
//!             ◀────────────────────── status           dial the pod
//!             ◀═══════════ bytes both ways ══════════▶
//! ```
//!
//! Wire format of a stream:
//!
//! ```text
//! request:  magic "SKTN" | version u8 | protocol u8 (6 TCP, 17 UDP) | port u16
//!           | family u8 (4 or 6) | address (4 or 16 bytes)        (big endian)
//! response: status u8 (0 connected, 1 not a pod here, 2 dial failed)
//!           | length u16 | reason (UTF-8)
//! then TCP: the connection's bytes; UDP: `length u16 | datagram`, both ways
//! ```
//!
//! The listener takes the kubelet port's address and number over UDP, so
//! a node's tunnel is found from its Node object alone (InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use consensus::pki::NodeTls;
use parking_lot::Mutex;
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::apiserver::auth::user_from_cert;

/// ALPN of the tunnel protocol.
pub const ALPN: &[u8] = b"skiff-tunnel/1";
const MAGIC: [u8; 4] = *b"SKTN";
const VERSION: u8 = 1;
/// The group every node certificate names.
const NODES_GROUP: &str = "system:nodes";

/// How long the listener waits for a stream's header, and for the pod to
/// take the connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a UDP flow lives without a datagram either way (the proxy's
/// flows end sooner and close their stream).
const UDP_IDLE: Duration = Duration::from_secs(60);
const MAX_DATAGRAM: usize = 65_535;
const MAX_REASON: usize = 1024;

const STATUS_OK: u8 = 0;
const STATUS_NOT_HERE: u8 = 1;
const STATUS_DIAL_FAILED: u8 = 2;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A stream's request header.
pub fn encode_header(proto: Proto, target: SocketAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(25);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(proto.number());
    b.extend_from_slice(&target.port().to_be_bytes());
    match target.ip() {
        IpAddr::V4(ip) => {
            b.push(4);
            b.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b.push(6);
            b.extend_from_slice(&ip.octets());
        }
    }
    b
}

/// The fixed part of a header: magic, version, protocol, port, family.
const FIXED: usize = 9;

/// Reads the fixed part: (protocol, port, address length).
fn decode_fixed(b: &[u8; FIXED]) -> Result<(Proto, u16, usize), String> {
    if b[..4] != MAGIC {
        return Err("not a tunnel stream".into());
    }
    if b[4] != VERSION {
        return Err(format!(
            "tunnel version {} (this node speaks {VERSION})",
            b[4]
        ));
    }
    let proto = match b[5] {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        p => return Err(format!("protocol {p} is not tunnelled")),
    };
    let port = u16::from_be_bytes([b[6], b[7]]);
    let len = match b[8] {
        4 => 4,
        6 => 16,
        f => return Err(format!("address family {f}")),
    };
    Ok((proto, port, len))
}

fn decode_addr(raw: &[u8], port: u16) -> SocketAddr {
    let ip = match <[u8; 4]>::try_from(raw) {
        Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        Err(_) => {
            let mut v6 = [0u8; 16];
            v6.copy_from_slice(raw);
            IpAddr::V6(Ipv6Addr::from(v6))
        }
    };
    SocketAddr::new(ip, port)
}

/// The identity in the peer's certificate.
fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(20)).expect("idle timeout in range"),
    ));
    // Every proxied connection is a stream.
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(65_536));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t
}

/// Binds the listener's socket (the kubelet port's address, over UDP).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind(addr).map_err(|e| {
        anyhow::anyhow!("binding the node tunnel to {addr} (udp): {e}; other nodes cannot reach this node's pods through Services")
    })
}

/// Serves other nodes' streams on `socket` until `stop` turns true; a
/// stream may reach only an address `is_pod` accepts.
pub async fn serve(
    socket: std::net::UdpSocket,
    tls: &NodeTls,
    is_pod: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let server_tls = tls.rustls_server_config(true)?;
    let endpoint = skiff_sdk::client::quic::server_endpoint(server_tls, ALPN, transport(), socket)?;
    tracing::info!(listen = %endpoint.local_addr()?, "node tunnel listening (quic)");
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    skiff_sdk::client::quic::accept_until(endpoint, stopped, "node tunnel", move |conn| {
        serve_connection(conn, is_pod.clone())
    })
    .await;
    Ok(())
}

async fn serve_connection(
    conn: quinn::Connection,
    is_pod: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
) {
    // The handshake took only certificates of the CA; of those, only
    // nodes' may open streams (not, say, a user's client certificate).
    let user = peer_certificate(&conn).and_then(|c| user_from_cert(&c));
    let Some(user) = user.filter(|u| u.groups.iter().any(|g| g == NODES_GROUP)) else {
        tracing::warn!(remote = %conn.remote_address(), "node tunnel: refused a peer that is not a node");
        conn.close(
            quinn::VarInt::from_u32(1),
            b"only nodes may open the tunnel",
        );
        return;
    };
    tracing::debug!(peer = %user.name, remote = %conn.remote_address(), "node tunnel: connected");
    while let Ok((send, recv)) = conn.accept_bi().await {
        let is_pod = is_pod.clone();
        let peer = user.name.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(send, recv, &*is_pod).await {
                tracing::debug!(%peer, "node tunnel stream: {e}");
            }
        });
    }
}

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    is_pod: &(dyn Fn(IpAddr) -> bool + Send + Sync),
) -> io::Result<()> {
    let (proto, target) = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(Ok(h))) => h,
        Ok(Ok(Err(why))) => {
            return reply(&mut send, STATUS_NOT_HERE, &why).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no header")),
    };
    if !is_pod(target.ip()) {
        return reply(
            &mut send,
            STATUS_NOT_HERE,
            &format!("{} is not the address of a pod on this node", target.ip()),
        )
        .await;
    }
    match proto {
        Proto::Tcp => {
            let dial = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await;
            let mut pod = match dial {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return reply(&mut send, STATUS_DIAL_FAILED, &format!("{target}: {e}")).await;
                }
                Err(_) => {
                    return reply(
                        &mut send,
                        STATUS_DIAL_FAILED,
                        &format!("{target}: timed out"),
                    )
                    .await;
                }
            };
            let _ = pod.set_nodelay(true);
            reply(&mut send, STATUS_OK, "").await?;
            let mut stream = tokio::io::join(recv, send);
            tokio::io::copy_bidirectional(&mut stream, &mut pod).await?;
            Ok(())
        }
        Proto::Udp => {
            let any = match target {
                SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            };
            let sock = match async {
                let s = UdpSocket::bind(any).await?;
                s.connect(target).await?;
                io::Result::Ok(s)
            }
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    return reply(&mut send, STATUS_DIAL_FAILED, &format!("{target}: {e}")).await;
                }
            };
            reply(&mut send, STATUS_OK, "").await?;
            relay_datagrams(sock, send, recv).await
        }
    }
}

/// Reads a request header; the inner error is a refusal to send back.
async fn read_header(recv: &mut RecvStream) -> io::Result<Result<(Proto, SocketAddr), String>> {
    let mut fixed = [0u8; FIXED];
    AsyncReadExt::read_exact(recv, &mut fixed).await?;
    let (proto, port, len) = match decode_fixed(&fixed) {
        Ok(x) => x,
        Err(why) => return Ok(Err(why)),
    };
    let mut raw = [0u8; 16];
    AsyncReadExt::read_exact(recv, &mut raw[..len]).await?;
    Ok(Ok((proto, decode_addr(&raw[..len], port))))
}

async fn reply(send: &mut SendStream, status: u8, reason: &str) -> io::Result<()> {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut b = Vec::with_capacity(3 + reason.len());
    b.push(status);
    b.extend_from_slice(&(reason.len() as u16).to_be_bytes());
    b.extend_from_slice(reason);
    send.write_all(&b).await?;
    if status != STATUS_OK {
        let _ = send.finish();
    }
    Ok(())
}

/// Datagrams between a stream (framed) and a connected socket, until
/// either side ends or the flow is idle for [`UDP_IDLE`].
async fn relay_datagrams(
    sock: UdpSocket,
    mut send: SendStream,
    mut recv: RecvStream,
) -> io::Result<()> {
    let sock = Arc::new(sock);
    let out = {
        let sock = sock.clone();
        async move {
            loop {
                match tokio::time::timeout(UDP_IDLE, read_frame(&mut recv)).await {
                    Ok(Ok(Some(d))) => {
                        // A refused datagram (ICMP) does not end the flow.
                        let _ = sock.send(&d).await;
                    }
                    Ok(Ok(None)) | Err(_) => return io::Result::Ok(()),
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
    };
    let back = async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match tokio::time::timeout(UDP_IDLE, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => write_frame(&mut send, &buf[..n]).await?,
                Ok(Err(_)) => continue,
                Err(_) => return io::Result::Ok(()),
            }
        }
    };
    tokio::select! {
        r = out => r,
        r = back => r,
    }
}

/// One datagram of a UDP stream; `None` at the end of the stream.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut d = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut d).await?;
    Ok(Some(d))
}

pub async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, d: &[u8]) -> io::Result<()> {
    let len = u16::try_from(d.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "datagram too large"))?;
    let mut b = Vec::with_capacity(2 + d.len());
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(d);
    w.write_all(&b).await
}

/// An open stream to a pod on another node.
pub type Stream = tokio::io::Join<RecvStream, SendStream>;

/// A node's connection, dialled by the first stream that needs it.
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// The dialling end: one QUIC connection per node, made on first use and
/// again when it breaks.
pub struct Tunnels {
    endpoint: quinn::Endpoint,
    conns: Mutex<HashMap<(String, SocketAddr), Slot>>,
}

impl Tunnels {
    /// A dialler that presents this node's certificate and trusts the
    /// cluster CA alone.
    pub fn new(tls: &NodeTls) -> anyhow::Result<Tunnels> {
        let mut rustls_cfg = tls.rustls_client_config()?;
        rustls_cfg.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls_cfg)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport()));
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        endpoint.set_default_client_config(client);
        Ok(Tunnels {
            endpoint,
            conns: Mutex::default(),
        })
    }

    /// Opens a stream through `node`'s tunnel at `at` to `target`, one of
    /// its pods; `Ok` once the node has connected to the pod.
    pub async fn open(
        &self,
        node: &str,
        at: SocketAddr,
        proto: Proto,
        target: SocketAddr,
    ) -> io::Result<Stream> {
        for attempt in 0..2 {
            let conn = self.connection(node, at).await?;
            let (mut send, mut recv) = match conn.open_bi().await {
                Ok(s) => s,
                // Broken since it was last used: dial again, once.
                Err(e) if attempt == 0 => {
                    tracing::debug!(%node, "node tunnel connection lost: {e}");
                    continue;
                }
                Err(e) => return Err(io::Error::other(format!("node {node}: {e}"))),
            };
            send.write_all(&encode_header(proto, target)).await?;
            let mut head = [0u8; 3];
            AsyncReadExt::read_exact(&mut recv, &mut head).await?;
            let len = usize::from(u16::from_be_bytes([head[1], head[2]])).min(MAX_REASON);
            let mut reason = vec![0u8; len];
            AsyncReadExt::read_exact(&mut recv, &mut reason).await?;
            if head[0] != STATUS_OK {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("node {node}: {}", String::from_utf8_lossy(&reason)),
                ));
            }
            return Ok(tokio::io::join(recv, send));
        }
        Err(io::Error::other(format!(
            "node {node}: connection keeps closing"
        )))
    }

    async fn connection(&self, node: &str, at: SocketAddr) -> io::Result<quinn::Connection> {
        let slot = self
            .conns
            .lock()
            .entry((node.to_string(), at))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        // The node's certificate is valid for its name: that is the
        // identity checked.
        let conn = self
            .endpoint
            .connect(at, node)
            .map_err(|e| io::Error::other(format!("node {node} at {at}: {e}")))?
            .await
            .map_err(|e| io::Error::other(format!("node {node} at {at}: {e}")))?;
        tracing::debug!(%node, %at, "node tunnel connected");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connections to nodes that are no longer in `keep`.
    pub fn retain(&self, keep: &dyn Fn(&str, SocketAddr) -> bool) {
        self.conns.lock().retain(|(n, at), slot| {
            let k = keep(n, *at);
            if !k
                && let Ok(s) = slot.try_lock()
                && let Some(c) = s.as_ref()
            {
                c.close(quinn::VarInt::from_u32(0), b"node gone");
            }
            k
        });
    }
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"node stopping");
    }
}

/// A node's tunnel and pods on loopback, for tests here and in the proxy.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn identity(
        ca: &consensus::pki::ClusterCa,
        cn: &str,
        groups: &[&str],
        san: &str,
    ) -> NodeTls {
        let c = ca.issue_for(cn, groups, &[san.to_string()]).unwrap();
        NodeTls {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: c.cert_pem,
            key_pem: c.key_pem,
        }
    }

    /// A node's tunnel on loopback whose only "pod" is 127.0.0.1, with a
    /// TCP and a UDP echo server there: (tunnel, tcp echo, udp echo).
    pub async fn node_b(
        ca: &consensus::pki::ClusterCa,
        stop: watch::Receiver<bool>,
    ) -> (SocketAddr, SocketAddr, SocketAddr) {
        let tls = identity(ca, "system:node:b", &[NODES_GROUP], "b");
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = sock.local_addr().unwrap();
        let is_pod: Arc<dyn Fn(IpAddr) -> bool + Send + Sync> =
            Arc::new(|ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::LOCALHOST));
        tokio::spawn(async move { serve(sock, &tls, is_pod, stop).await.unwrap() });
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_at = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_at = udp.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&buf[..n], from).await;
            }
        });
        (at, tcp_at, udp_at)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{identity, node_b};
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_named() {
        for target in ["127.42.7.9:8080", "[fd00::1]:53"] {
            let target: SocketAddr = target.parse().unwrap();
            for proto in [Proto::Tcp, Proto::Udp] {
                let b = encode_header(proto, target);
                let fixed: [u8; FIXED] = b[..FIXED].try_into().unwrap();
                let (p, port, len) = decode_fixed(&fixed).unwrap();
                assert_eq!((p, len), (proto, b.len() - FIXED));
                assert_eq!(decode_addr(&b[FIXED..], port), target);
            }
        }
        let mut b: [u8; FIXED] = encode_header(Proto::Tcp, "10.0.0.1:1".parse().unwrap())[..FIXED]
            .try_into()
            .unwrap();
        b[5] = 132;
        assert_eq!(
            decode_fixed(&b).unwrap_err(),
            "protocol 132 is not tunnelled"
        );
        b[4] = 9;
        assert!(decode_fixed(&b).unwrap_err().contains("tunnel version 9"));
        b[0] = b'G';
        assert_eq!(decode_fixed(&b).unwrap_err(), "not a tunnel stream");
    }

    #[tokio::test]
    async fn frames_carry_datagrams_and_end_with_the_stream() {
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        write_frame(&mut a, b"one").await.unwrap();
        write_frame(&mut a, &[]).await.unwrap();
        write_frame(&mut a, &vec![7u8; MAX_DATAGRAM]).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"one");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        assert_eq!(
            read_frame(&mut b).await.unwrap().unwrap().len(),
            MAX_DATAGRAM
        );
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_node_reaches_another_nodes_pods_and_nothing_else() {
        let ca = consensus::pki::ClusterCa::generate().unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let (at, tcp_echo, udp_echo) = node_b(&ca, stop).await;
        let a = Tunnels::new(&identity(&ca, "system:node:a", &[NODES_GROUP], "a")).unwrap();

        // TCP: bytes both ways, and the end of the stream ends the
        // connection to the pod.
        let mut s = a.open("b", at, Proto::Tcp, tcp_echo).await.unwrap();
        s.write_all(b"hello over quic").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = String::new();
        s.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "hello over quic");

        // UDP: a flow of datagrams.
        let mut u = a.open("b", at, Proto::Udp, udp_echo).await.unwrap();
        for d in [&b"ping"[..], b"pong!"] {
            write_frame(&mut u, d).await.unwrap();
            assert_eq!(read_frame(&mut u).await.unwrap().unwrap(), d);
        }

        // Not a pod of b: refused by b, with the reason.
        let e = a
            .open("b", at, Proto::Tcp, "127.0.0.2:80".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            e.to_string()
                .contains("127.0.0.2 is not the address of a pod on this node"),
            "{e}"
        );
        // A pod port nobody listens on: the dial's error comes back.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_at = closed.local_addr().unwrap();
        drop(closed);
        let e = a.open("b", at, Proto::Tcp, closed_at).await.err().unwrap();
        assert!(e.to_string().contains("refused"), "{e}");

        // The certificate at `at` is b's, not c's: a dialler that meant c
        // does not talk to it.
        let e = a.open("c", at, Proto::Tcp, tcp_echo).await.err().unwrap();
        assert!(e.to_string().contains("node c"), "{e}");

        // A certificate of the CA that is not a node's opens nothing.
        let user = Tunnels::new(&identity(&ca, "alice", &["devs"], "alice")).unwrap();
        assert!(user.open("b", at, Proto::Tcp, tcp_echo).await.is_err());
        // Nor does one from another CA.
        let other = consensus::pki::ClusterCa::generate().unwrap();
        let stranger =
            Tunnels::new(&identity(&other, "system:node:b", &[NODES_GROUP], "b")).unwrap();
        assert!(stranger.open("b", at, Proto::Tcp, tcp_echo).await.is_err());
    }
}
