//! The QUIC transport (feature `quic`): what an agent uses to talk to the
//! control plane. One QUIC connection (mutual TLS, the cluster CA) carries
//! every request on its own bidirectional stream, as one HTTP/1.1 exchange,
//! so a long watch never holds up a status update behind it, and a lost
//! packet stalls only the stream it belongs to.
//!
//! The server may open streams too: each one it opens is handed to the
//! caller through [`QuicTransport::incoming`] (the agent serves container
//! logs on them, so a node needs no port of its own open to the control
//! plane).
//!
//! The connection is dialled on first use and redialled when it breaks; a
//! request that found it broken is sent again once, on the new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::https::Connection;
use super::{Body, BoxFuture, Error, Transport};

/// ALPN of the agent ↔ control-plane protocol.
pub const ALPN: &[u8] = b"skiff-agent/1";

/// How often an idle connection is probed, and how long a silent one
/// lives: a control plane that went away is noticed within the timeout.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams either side may have open at once (watches are long-lived).
pub const MAX_STREAMS: u32 = 4096;

/// A bidirectional stream the server opened, to be served by the caller.
pub type Incoming = (quinn::SendStream, quinn::RecvStream);

/// The byte stream of one QUIC stream pair, for hyper.
pub fn stream_io(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) -> TokioIo<tokio::io::Join<quinn::RecvStream, quinn::SendStream>> {
    TokioIo::new(tokio::io::join(recv, send))
}

/// Serves the HTTP/1.1 exchanges of one stream the peer opened, on a task
/// of its own, each request answered by `handle`; `what` names the stream
/// in the debug log when it fails.
pub fn spawn_serve<H, Fut, B>(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    what: &'static str,
    handle: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let answer = handle(req);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new()
            .serve_connection(stream_io(send, recv), svc)
            .with_upgrades()
            .await
        {
            tracing::debug!("{what}: {e}");
        }
    });
}

/// A server endpoint on `socket` speaking `alpn` with `tls` (which should
/// require client certificates) and `transport`.
pub fn server_endpoint(
    mut tls: tokio_rustls::rustls::ServerConfig,
    alpn: &[u8],
    transport: quinn::TransportConfig,
    socket: std::net::UdpSocket,
) -> std::io::Result<quinn::Endpoint> {
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(std::io::Error::other)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections on `endpoint` until `shutdown` resolves (then closes
/// it); each handshake is completed on a task of its own and the connection
/// handed to `serve`. `what` names the endpoint in the debug log of a failed
/// handshake.
pub async fn accept_until<S, Fut>(
    endpoint: quinn::Endpoint,
    shutdown: impl std::future::Future<Output = ()>,
    what: &'static str,
    serve: S,
) where
    S: Fn(quinn::Connection) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            () = &mut shutdown => {
                endpoint.close(quinn::VarInt::from_u32(0), b"shutting down");
                return;
            }
        };
        let serve = serve.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve(conn).await,
                Err(e) => tracing::debug!(%remote, "{what} handshake: {e}"),
            }
        });
    }
}

/// Transport settings both ends use.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("idle timeout in range"),
    ));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t
}

pub struct QuicTransport {
    server: String,
    host: String,
    port: u16,
    endpoint: quinn::Endpoint,
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
    incoming: Option<mpsc::Sender<Incoming>>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// A transport to `conn.server` (`https://host:port`: QUIC goes to the
    /// same port over UDP). `conn` must carry a client certificate: the
    /// server accepts no other credential on QUIC. Needs a tokio runtime.
    pub fn new(conn: &Connection) -> Result<QuicTransport, Error> {
        Self::build(conn, None)
    }

    /// As [`new`](Self::new), and every stream the server opens is sent to
    /// the returned receiver.
    pub fn with_incoming(
        conn: &Connection,
    ) -> Result<(QuicTransport, mpsc::Receiver<Incoming>), Error> {
        let (tx, rx) = mpsc::channel(64);
        Ok((Self::build(conn, Some(tx))?, rx))
    }

    fn build(conn: &Connection, incoming: Option<mpsc::Sender<Incoming>>) -> Result<Self, Error> {
        if conn.client_cert.is_none() {
            return Err(Error::Transport(
                "QUIC needs a client certificate (the node's, from joining)".into(),
            ));
        }
        let (host, port) = conn.host_port()?;
        let mut tls = conn.tls_config()?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Transport(format!("QUIC TLS: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport_config()));
        let bind: SocketAddr = if host.contains(':') {
            "[::]:0".parse().expect("address")
        } else {
            "0.0.0.0:0".parse().expect("address")
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::Transport(format!("QUIC endpoint: {e}")))?;
        endpoint.set_default_client_config(client);
        Ok(QuicTransport {
            server: conn.server.clone(),
            host,
            port,
            endpoint,
            conn: tokio::sync::Mutex::new(None),
            incoming,
        })
    }

    /// The live connection, dialled if there is none.
    async fn connection(&self) -> Result<quinn::Connection, Error> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let err = |e: &dyn std::fmt::Display| {
            Error::Transport(format!("QUIC to {} (udp): {e}", self.server))
        };
        let addr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| err(&e))?
            .next()
            .ok_or_else(|| err(&"the host name has no address"))?;
        let conn = self
            .endpoint
            .connect(addr, &self.host)
            .map_err(|e| err(&e))?
            .await
            .map_err(|e| err(&e))?;
        tracing::debug!(server = %self.server, "QUIC connection established");
        if let Some(tx) = &self.incoming {
            tokio::spawn(accept_streams(conn.clone(), tx.clone()));
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn send_inner(&self, req: Request<Bytes>) -> Result<Response<Body>, Error> {
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(
            header::HOST,
            format!("{}:{}", self.host, self.port)
                .parse()
                .map_err(|_| Error::Transport(format!("host {:?}", self.host)))?,
        );
        for attempt in 0..2 {
            let conn = self.connection().await?;
            let (send, recv) = match conn.open_bi().await {
                Ok(s) => s,
                // The connection died since it was last used: redial once.
                Err(e) if attempt == 0 => {
                    tracing::debug!(server = %self.server, "QUIC connection lost: {e}");
                    continue;
                }
                Err(e) => return Err(Error::Transport(format!("{}: {e}", self.server))),
            };
            let (mut sender, http) = hyper::client::conn::http1::handshake(stream_io(send, recv))
                .await
                .map_err(|e| Error::Transport(format!("{}: {e}", self.server)))?;
            tokio::spawn(async move {
                if let Err(e) = http.await {
                    tracing::debug!("QUIC stream: {e}");
                }
            });
            let req = Request::from_parts(parts.clone(), Full::new(body.clone()));
            return match sender.send_request(req).await {
                Ok(resp) => Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed())),
                Err(e) => Err(Error::Transport(format!("{}: {e}", self.server))),
            };
        }
        Err(Error::Transport(format!(
            "{}: connection keeps closing",
            self.server
        )))
    }
}

/// Hands each stream the server opens on `conn` to `tx`, until the
/// connection closes.
async fn accept_streams(conn: quinn::Connection, tx: mpsc::Sender<Incoming>) {
    while let Ok(pair) = conn.accept_bi().await {
        if tx.send(pair).await.is_err() {
            return;
        }
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"client gone");
    }
}

impl Transport for QuicTransport {
    fn send(&self, req: Request<Bytes>) -> BoxFuture<'_, Result<Response<Body>, Error>> {
        Box::pin(self.send_inner(req))
    }
}
