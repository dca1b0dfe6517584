//! `GET|POST /portForward/{namespace}/{pod}`: `kubectl port-forward`, as
//! the kubelet serves it (the API server checks the caller and passes the
//! upgraded connection through).
//!
//! The session is SPDY/3.1 ([`crate::spdy`]): inside WebSocket binary
//! messages (subprotocol `SPDY/3.1+portforward.k8s.io`, kubectl 1.30+), or
//! on the connection itself after `Upgrade: SPDY/3.1` with
//! `X-Stream-Protocol-Version: portforward.k8s.io`. Each connection kubectl
//! accepts locally opens two streams with the same `requestID`: an error
//! stream, then a data stream naming the `port`. The pair is joined to a
//! new TCP connection to the pod's address and that port; a failed dial is
//! reported on the error stream, as the kubelet words it. When the pod
//! closes, both streams are finished; when kubectl finishes the data
//! stream, the pod's side is shut down for writing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::logs::LogServer;
use crate::apiserver::{Body, full};
use crate::spdy::{self, Frame};
use crate::websocket::{self as ws, MessageReader};

/// The port-forward protocol kubectl asks for.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// Its name inside a WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const X_STREAM_PROTOCOL: &str = "x-stream-protocol-version";

/// Largest SPDY frame taken from the client.
const MAX_FRAME: usize = 1 << 20;
/// Bytes read from the pod per data frame.
const CHUNK: usize = 32 * 1024;
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", message.into())
}

/// How the client wants the session carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// SPDY in WebSocket binary messages; the handshake key.
    WebSocket,
    /// SPDY on the upgraded connection.
    Spdy,
}

fn carrier(headers: &http::HeaderMap) -> Result<Carrier, String> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let upgrade = get(header::UPGRADE.as_str());
    let offers = |list: &str, p: &str| list.split(',').any(|o| o.trim().eq_ignore_ascii_case(p));
    if upgrade.eq_ignore_ascii_case("websocket") {
        if offers(
            get(header::SEC_WEBSOCKET_PROTOCOL.as_str()),
            TUNNEL_PROTOCOL,
        ) {
            return Ok(Carrier::WebSocket);
        }
        return Err(format!(
            "port-forward over WebSocket needs the subprotocol {TUNNEL_PROTOCOL}"
        ));
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        if offers(get(X_STREAM_PROTOCOL), PROTOCOL) {
            return Ok(Carrier::Spdy);
        }
        return Err(format!(
            "port-forward needs X-Stream-Protocol-Version: {PROTOCOL}"
        ));
    }
    Err("port-forward needs an upgrade to WebSocket or SPDY/3.1".into())
}

impl LogServer {
    pub(super) fn port_forward(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod_name: &str,
    ) -> Response<Body> {
        let Some(pod) = self.pods.get_in(Some(ns), pod_name) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod \"{ns}/{pod_name}\" not found"),
            );
        };
        let Some(ip) = running_ip(&pod) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("pod {ns}/{pod_name} is not running"),
            );
        };
        let carrier = match carrier(req.headers()) {
            Ok(c) => c,
            Err(m) => return text(StatusCode::BAD_REQUEST, m),
        };
        let label = PodLabel {
            name: pod_name.to_string(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let key = req
            .headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let io = match upgrade.await {
                Ok(io) => TokioIo::new(io),
                Err(e) => return tracing::debug!("port-forward upgrade: {e}"),
            };
            match carrier {
                Carrier::Spdy => session(io, ip, label).await,
                Carrier::WebSocket => {
                    let (spdy_end, ws_end) = tokio::io::duplex(4 * CHUNK);
                    tokio::spawn(websocket_bridge(io, ws_end));
                    session(spdy_end, ip, label).await;
                }
            }
        });
        match carrier {
            Carrier::WebSocket => ws::switching_protocols(&key, TUNNEL_PROTOCOL),
            Carrier::Spdy => {
                let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, "", bytes::Bytes::new());
                let h = resp.headers_mut();
                h.remove(header::CONTENT_TYPE);
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
                h.insert(X_STREAM_PROTOCOL, HeaderValue::from_static(PROTOCOL));
                resp
            }
        }
    }
}

/// The pod's address, if it runs.
fn running_ip(pod: &Pod) -> Option<IpAddr> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

/// How the kubelet names a pod in a forwarding error.
#[derive(Clone)]
struct PodLabel {
    name: String,
    uid: String,
}

/// Carries a byte stream in WebSocket binary messages both ways: what
/// arrives from the client goes into `pipe`, what `pipe` gives back goes
/// out as messages. Pings are answered; a close ends both.
async fn websocket_bridge<IO>(io: IO, pipe: tokio::io::DuplexStream)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rx, tx) = tokio::io::split(io);
    let tx = std::sync::Arc::new(tokio::sync::Mutex::new(tx));
    let (mut pipe_rx, mut pipe_tx) = tokio::io::split(pipe);
    let outgoing = {
        let tx = tx.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match pipe_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let frame = ws::frame(ws::OP_BINARY, &buf[..n]);
                if tx.lock().await.write_all(&frame).await.is_err() {
                    return;
                }
            }
            let mut tx = tx.lock().await;
            let _ = tx.write_all(&ws::close(1000)).await;
            let _ = tx.shutdown().await;
        }
    };
    let incoming = async move {
        let mut reader = MessageReader::default();
        loop {
            match reader.next(&mut rx, MAX_FRAME + 64).await {
                Ok(Some(m)) if m.opcode == ws::OP_BINARY => {
                    if pipe_tx.write_all(&m.data).await.is_err() {
                        break;
                    }
                }
                Ok(Some(m)) if m.opcode == ws::OP_PING => {
                    let pong = ws::frame(ws::OP_PONG, &m.data);
                    if tx.lock().await.write_all(&pong).await.is_err() {
                        break;
                    }
                }
                Ok(Some(m)) if m.opcode == ws::OP_CLOSE => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let _ = pipe_tx.shutdown().await;
    };
    tokio::join!(outgoing, incoming);
}

/// The streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<(u32, u16)>,
}

/// Serves one SPDY session until the client goes away.
async fn session<IO>(io: IO, ip: IpAddr, pod: PodLabel)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rx, tx) = tokio::io::split(io);
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        let mut tx = tx;
        while let Some(f) = frames.recv().await {
            if tx.write_all(&f).await.is_err() {
                return;
            }
        }
        let _ = tx.shutdown().await;
    });
    let mut inflater = spdy::HeaderInflater::default();
    let mut deflater = spdy::HeaderDeflater::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Data streams' senders to their pod connection (`None`: the client
    // finished the stream).
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut last_stream = 0;
    loop {
        let frame = match spdy::read_frame(&mut rx, MAX_FRAME).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward: {e}");
                let _ = out
                    .send(spdy::goaway(last_stream, spdy::PROTOCOL_ERROR))
                    .await;
                break;
            }
        };
        match frame {
            Frame::SynStream { id, block, .. } => {
                last_stream = id;
                let headers = match inflater.block(&block) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::debug!("port-forward: {e}");
                        let _ = out.send(spdy::goaway(id, spdy::PROTOCOL_ERROR)).await;
                        break;
                    }
                };
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.as_str())
                };
                let kind = get("streamtype").unwrap_or("");
                // Clients before requestID paired a data stream with the
                // error stream opened just before it.
                let request = get("requestid").map_or_else(
                    || match kind {
                        "data" => id.saturating_sub(2).to_string(),
                        _ => id.to_string(),
                    },
                    str::to_string,
                );
                let port = get("port").and_then(|p| p.parse::<u16>().ok());
                let accepted = match (kind, port) {
                    ("error", _) => {
                        pairs.entry(request.clone()).or_default().error = Some(id);
                        true
                    }
                    ("data", Some(port)) if port > 0 => {
                        pairs.entry(request.clone()).or_default().data = Some((id, port));
                        true
                    }
                    _ => false,
                };
                if !accepted {
                    let _ = out.send(spdy::rst_stream(id, spdy::PROTOCOL_ERROR)).await;
                    continue;
                }
                if out
                    .send(spdy::syn_reply(id, false, &deflater.block(&[])))
                    .await
                    .is_err()
                {
                    break;
                }
                if let Some(Pair {
                    error: Some(error),
                    data: Some((data, port)),
                }) = pairs.get(&request)
                {
                    let (error, data, port) = (*error, *data, *port);
                    pairs.remove(&request);
                    let (tx, rx) = mpsc::channel(16);
                    to_pod.insert(data, tx);
                    let target = SocketAddr::new(ip, port);
                    tokio::spawn(forward(out.clone(), error, data, target, rx, pod.clone()));
                }
            }
            Frame::Data { id, fin, data } => {
                if let Some(tx) = to_pod.get(&id) {
                    let gone = (!data.is_empty() && tx.send(Some(data)).await.is_err())
                        || (fin && tx.send(None).await.is_err());
                    if fin || gone {
                        to_pod.remove(&id);
                    }
                }
            }
            Frame::RstStream { id, .. } => {
                to_pod.remove(&id);
            }
            Frame::Ping(n) => {
                if out.send(spdy::ping(n)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings
            | Frame::WindowUpdate { .. }
            | Frame::Unknown(_) => {}
        }
    }
    drop(to_pod);
    drop(out);
    let _ = writer.await;
}

/// Joins one pair of streams to a connection to the pod.
async fn forward(
    out: mpsc::Sender<Vec<u8>>,
    error: u32,
    data: u32,
    target: SocketAddr,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    pod: PodLabel,
) {
    let dial = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await;
    match dial {
        Ok(Ok(conn)) => {
            let _ = conn.set_nodelay(true);
            let (mut from_pod, mut to_pod) = conn.into_split();
            let up = async {
                while let Some(Some(d)) = from_client.recv().await {
                    if to_pod.write_all(&d).await.is_err() {
                        break;
                    }
                }
                let _ = to_pod.shutdown().await;
            };
            let down = async {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match from_pod.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if out.send(spdy::data(data, false, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::pin!(up, down);
            // The client finishing its side leaves the pod's answer to come.
            tokio::select! {
                () = &mut down => {}
                () = &mut up => down.await,
            }
        }
        Ok(Err(e)) => report(&out, error, target, &pod, &e.to_string()).await,
        Err(_) => report(&out, error, target, &pod, "timed out").await,
    }
    let _ = out.send(spdy::data(data, true, &[])).await;
    let _ = out.send(spdy::data(error, true, &[])).await;
}

async fn report(
    out: &mpsc::Sender<Vec<u8>>,
    error: u32,
    target: SocketAddr,
    pod: &PodLabel,
    why: &str,
) {
    let message = format!(
        "error forwarding port {} to pod {}, uid {}: {why}",
        target.port(),
        pod.name,
        pod.uid
    );
    let _ = out.send(spdy::data(error, false, message.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carrier_is_chosen_from_the_upgrade() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = http::HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert_eq!(
            carrier(&h(&[
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io")
            ])),
            Ok(Carrier::WebSocket)
        );
        assert_eq!(
            carrier(&h(&[
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "portforward.k8s.io")
            ])),
            Ok(Carrier::Spdy)
        );
        assert!(
            carrier(&h(&[
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", "v5.channel.k8s.io")
            ]))
            .unwrap_err()
            .contains(TUNNEL_PROTOCOL)
        );
        assert!(carrier(&h(&[])).is_err());
    }

    /// A whole session over an in-memory pipe, the client side written
    /// with the same framing: a pair of streams reaches a TCP echo
    /// server, and a pair for a closed port gets the kubelet's error.
    #[tokio::test]
    async fn a_session_forwards_pairs_of_streams() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let (client, server) = tokio::io::duplex(1 << 16);
        let label = PodLabel {
            name: "web".into(),
            uid: "u1".into(),
        };
        tokio::spawn(session(server, "127.0.0.1".parse().unwrap(), label));
        let (mut rx, mut tx) = tokio::io::split(client);
        // The client's header blocks, in the stored form our deflater
        // writes (any zlib stream with the dictionary reads the same).
        let mut d = spdy::HeaderDeflater::default();
        let syn = |d: &mut spdy::HeaderDeflater, id: u32, kind: &str, port: u16, req: &str| {
            let port = port.to_string();
            let block = d.block(&[("streamtype", kind), ("port", &port), ("requestid", req)]);
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            p.extend_from_slice(&block);
            let mut f = vec![0x80, 3, 0, 1, 0];
            f.extend_from_slice(&(p.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(&p);
            f
        };
        // Two MiB through the echo server: written while the answer is
        // read, so neither side's buffers can hold it all.
        let payload: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let mut frames = syn(&mut d, 1, "error", port, "0");
        frames.extend(syn(&mut d, 3, "data", port, "0"));
        let tail = [
            syn(&mut d, 5, "error", closed, "1"),
            syn(&mut d, 7, "data", closed, "1"),
            spdy::ping(42),
        ]
        .concat();
        tokio::spawn(async move {
            tx.write_all(&frames).await.unwrap();
            for chunk in sent.chunks(10_000) {
                tx.write_all(&spdy::data(3, false, chunk)).await.unwrap();
            }
            tx.write_all(&spdy::data(3, true, &[])).await.unwrap();
            tx.write_all(&tail).await.unwrap();
            // Held open: the session ends when the client goes away.
            std::future::pending::<()>().await;
        });

        let mut inflater = spdy::HeaderInflater::default();
        let (mut echoed, mut errors) = (Vec::new(), String::new());
        let (mut replies, mut fins, mut pong) = (0, 0, false);
        while fins < 4 || !pong || replies < 4 {
            let f =
                tokio::time::timeout(Duration::from_secs(10), spdy::read_frame(&mut rx, 1 << 20))
                    .await
                    .expect("the session answers")
                    .unwrap()
                    .unwrap();
            match f {
                Frame::SynReply { block, .. } => {
                    assert!(inflater.block(&block).unwrap().is_empty());
                    replies += 1;
                }
                Frame::Data { id: 3, fin, data } => {
                    echoed.extend(data);
                    fins += usize::from(fin);
                }
                Frame::Data { id: 5, fin, data } => {
                    errors.push_str(&String::from_utf8_lossy(&data));
                    fins += usize::from(fin);
                }
                Frame::Data { fin, data, .. } => {
                    assert!(data.is_empty());
                    fins += usize::from(fin);
                }
                Frame::Ping(42) => pong = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(echoed == payload, "{} bytes came back", echoed.len());
        assert!(
            errors.starts_with(&format!(
                "error forwarding port {closed} to pod web, uid u1: "
            )),
            "{errors}"
        );
    }
}
