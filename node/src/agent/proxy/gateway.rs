//! The ingress gateway: skiff's Traefik, one per agent, on the node's
//! ports 80 (HTTP) and 443 (HTTPS) by default. Each request is routed by
//! [`ingress::Routes`] to an endpoint of the Service it names and proxied
//! there as HTTP/1.1:
//!
//! - the client's `Host` is kept; `X-Forwarded-For` (appended),
//!   `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-Port` and
//!   `X-Real-Ip` are set; hop-by-hop headers are not passed on;
//! - endpoints are taken in round robin; a dial that fails moves to the
//!   next one (up to three), then 502;
//! - upgrades (WebSocket) are joined byte for byte after the backend's 101;
//! - no rule: 404; a Service without ready endpoints, or a backend that
//!   cannot be served: 503.
//!
//! HTTPS takes its certificates from the Ingresses' `tls` sections
//! (`kubernetes.io/tls` Secrets), chosen by SNI (exact host, then a
//! `*.` wildcard, then a section without hosts); a name no Secret covers
//! gets a self-signed default certificate, as Traefik's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use super::ingress::{Routes, Target};
use super::table::Frontend;
use super::{Shared, forward};

type Body = BoxBody<Bytes, hyper::Error>;

const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const DIAL_TRIES: usize = 3;

/// What the listeners consult: the routes and the certificates.
pub struct Gateway {
    pub routes: RwLock<Arc<Routes>>,
    pub certs: Arc<Certs>,
    next: AtomicUsize,
}

impl Gateway {
    pub fn new() -> anyhow::Result<Arc<Gateway>> {
        Ok(Arc::new(Gateway {
            routes: RwLock::default(),
            certs: Arc::new(Certs::new()?),
            next: AtomicUsize::new(0),
        }))
    }
}

/// The certificates by host name, for SNI.
#[derive(Debug)]
pub struct Certs {
    by_host: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// From a `tls` section without hosts.
    fallback: RwLock<Option<Arc<CertifiedKey>>>,
    default: Arc<CertifiedKey>,
}

impl Certs {
    fn new() -> anyhow::Result<Certs> {
        let ca = consensus::pki::ClusterCa::generate()?;
        let issued = ca.issue("skiff ingress default certificate", &[])?;
        Ok(Certs {
            by_host: RwLock::default(),
            fallback: RwLock::default(),
            default: Arc::new(certified_key(
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
            )?),
        })
    }

    /// Replaces the certificates: (hosts, key) pairs, hosts empty for the
    /// fallback. The first Ingress to name a host keeps it.
    pub fn set(&self, certs: Vec<(Vec<String>, Arc<CertifiedKey>)>) {
        let mut by_host = HashMap::new();
        let mut fallback = None;
        for (hosts, key) in certs {
            if hosts.is_empty() {
                fallback.get_or_insert(key);
                continue;
            }
            for h in hosts {
                by_host.entry(h.to_ascii_lowercase()).or_insert(key.clone());
            }
        }
        *self.by_host.write() = by_host;
        *self.fallback.write() = fallback;
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            let by_host = self.by_host.read();
            if let Some(k) = by_host.get(&name) {
                return k.clone();
            }
            if let Some((_, rest)) = name.split_once('.')
                && let Some(k) = by_host.get(&format!("*.{rest}"))
            {
                return k.clone();
            }
        }
        self.fallback
            .read()
            .clone()
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// A certificate chain and key from PEM (a `kubernetes.io/tls` Secret's
/// `tls.crt` and `tls.key`).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<_, _>>()?;
    if chain.is_empty() {
        anyhow::bail!("tls.crt holds no certificate");
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])?
        .ok_or_else(|| anyhow::anyhow!("tls.key holds no private key"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("tls.key: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()
        .map_err(|e| anyhow::anyhow!("tls.crt and tls.key do not match: {e}"))?;
    Ok(ck)
}

/// Serves plain HTTP on `listener` until the task is aborted. Connections
/// to a Service's cluster IP and port (a wildcard listener gets them) go to
/// the service proxy.
pub async fn serve_http(listener: TcpListener, gw: Arc<Gateway>, proxy: Arc<Shared>) {
    accept_loop(listener, gw, proxy, None).await;
}

/// Serves HTTPS on `listener` until the task is aborted; as
/// [`serve_http`] for cluster IPs.
pub async fn serve_https(listener: TcpListener, gw: Arc<Gateway>, proxy: Arc<Shared>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(gw.certs.clone()),
        Err(e) => {
            tracing::error!("ingress gateway: no TLS configuration: {e}");
            return;
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    accept_loop(listener, gw, proxy, Some(acceptor)).await;
}

async fn accept_loop(
    listener: TcpListener,
    gw: Arc<Gateway>,
    proxy: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("ingress gateway: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = tcp.local_addr().ok().and_then(|local| {
            let table = proxy.table.read();
            table.routes.get(&Frontend::Cluster(local)).cloned()
        });
        if let Some(route) = service {
            let proxy = proxy.clone();
            tokio::spawn(async move { forward(tcp, peer, &route, &proxy).await });
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let gw = gw.clone();
        let tls = tls.clone();
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let svc = hyper::service::service_fn(move |req| {
                let (gw, proxy) = (gw.clone(), proxy.clone());
                async move {
                    let at = (scheme, local_port);
                    Ok::<_, Infallible>(handle(req, peer, at, &gw, &proxy).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await
                }
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(s), svc)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, "ingress gateway: tls handshake: {e}");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "ingress gateway: connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("a valid response")
}

/// Serves one request that came to `(scheme, port)`; endpoints are dialled
/// as the service proxy dials them (`proxy`: its tunnels).
async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    (scheme, port): (&'static str, u16),
    gw: &Gateway,
    shared: &Shared,
) -> Response<Body> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    let target = gw.routes.read().route(&host, req.uri().path());
    let Some(target) = target else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let (name, endpoints) = match &*target {
        Target::Unavailable(why) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no available server: {why}\n"),
            );
        }
        Target::Service { endpoints, .. } if endpoints.is_empty() => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no available server\n");
        }
        Target::Service { name, endpoints } => (name, endpoints),
    };
    let start = gw.next.fetch_add(1, Ordering::Relaxed);
    let mut up = None;
    for k in 0..endpoints.len().min(DIAL_TRIES) {
        let backend = &endpoints[(start + k) % endpoints.len()];
        match tokio::time::timeout(DIAL_TIMEOUT, super::dial(backend, shared)).await {
            Ok(Ok(s)) => {
                up = Some(s);
                break;
            }
            Ok(Err(e)) => tracing::debug!(route = %name, %backend, "ingress gateway: dial: {e}"),
            Err(_) => tracing::debug!(route = %name, %backend, "ingress gateway: dial timed out"),
        }
    }
    let Some(up) = up else {
        return text(StatusCode::BAD_GATEWAY, "bad gateway\n");
    };
    match proxy(req, up, peer, scheme, port, &host).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(route = %name, "ingress gateway: {e}");
            text(StatusCode::BAD_GATEWAY, "bad gateway\n")
        }
    }
}

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !(s.is_empty() || keep_upgrade && s == "upgrade"))
        .collect();
    for n in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        h.remove(n);
    }
    if !keep_upgrade {
        h.remove(header::UPGRADE);
    }
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|s| s.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

async fn proxy(
    mut req: Request<Incoming>,
    up: Box<dyn super::Upstream>,
    peer: SocketAddr,
    scheme: &str,
    port: u16,
    host: &str,
) -> anyhow::Result<Response<Body>> {
    let upgrade = wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = path.parse()?;
    parts.version = http::Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrade);
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !host.is_empty() {
        h.insert(header::HOST, HeaderValue::from_str(host)?);
        h.insert("x-forwarded-host", HeaderValue::from_str(host)?);
    }
    let client = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.clone(),
    };
    h.insert("x-forwarded-for", HeaderValue::from_str(&xff)?);
    h.insert("x-forwarded-proto", HeaderValue::from_str(scheme)?);
    h.insert("x-forwarded-port", HeaderValue::from(port));
    h.insert("x-real-ip", HeaderValue::from_str(&client)?);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("ingress gateway: backend connection: {e}");
        }
    });
    let mut resp = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((c, b)) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(b))
                            .await;
                }
                Err(e) => tracing::debug!("ingress gateway: upgrade: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(
            parts,
            Full::new(Bytes::new())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, body.boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// A listener of the gateway hands connections made to a cluster
    /// frontend to the service proxy (the wildcard case, here on
    /// loopback), and serves HTTP for the rest.
    #[tokio::test]
    async fn connections_to_a_cluster_frontend_go_to_the_service_proxy() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The backend: answers a fixed line to any connection.
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = backend.accept().await {
                let _ = c.write_all(b"from the backend\n").await;
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let mut table = super::super::table::Table::default();
        table.routes.insert(
            Frontend::Cluster(addr),
            Arc::new(super::super::table::Route {
                name: "ns/svc:web".into(),
                backends: vec![super::super::table::Endpoint::direct(backend_addr)],
                affinity: None,
            }),
        );
        *shared.table.write() = Arc::new(table);
        let gw = Gateway::new().unwrap();
        let server = tokio::spawn(serve_http(listener, gw.clone(), shared.clone()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "from the backend\n");

        // Without the route: the gateway's HTTP, and its 404.
        *shared.table.write() = Arc::default();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        assert!(got.ends_with("404 page not found\n"), "{got}");
        server.abort();
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn upgrades_are_recognised_and_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
    }

    #[test]
    fn certificates_by_sni_wildcard_fallback_and_default() {
        let certs = Certs::new().unwrap();
        let mk = || {
            let ca = consensus::pki::ClusterCa::generate().unwrap();
            let c = ca.issue("x", &[]).unwrap();
            Arc::new(certified_key(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap())
        };
        let (exact, wild, fallback) = (mk(), mk(), mk());
        assert!(Arc::ptr_eq(
            &certs.pick(Some("a.example.com")),
            &certs.default
        ));
        certs.set(vec![
            (vec!["A.example.com".into()], exact.clone()),
            (vec!["*.example.com".into()], wild.clone()),
            (vec![], fallback.clone()),
        ]);
        assert!(Arc::ptr_eq(&certs.pick(Some("a.example.com")), &exact));
        assert!(Arc::ptr_eq(&certs.pick(Some("b.example.com")), &wild));
        assert!(Arc::ptr_eq(&certs.pick(Some("other.org")), &fallback));
        assert!(Arc::ptr_eq(&certs.pick(None), &fallback));
        assert!(
            certified_key(b"nothing", b"nothing").is_err(),
            "a Secret without PEM is refused"
        );
    }
}
