//! The HTTPS transport: HTTP/2 (or HTTP/1.1 if that is all the server
//! speaks) over TLS to an API server named in a kubeconfig, authenticating
//! with a bearer token or a client certificate.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};

use super::{Body, BoxFuture, Error, Transport};

/// Where and how to connect, as a kubeconfig's current context says.
#[derive(Clone)]
pub struct Connection {
    /// `https://host:port`
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub token: Option<String>,
    /// PEM certificate chain and key of the client.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// The context's default namespace, if it names one.
    pub namespace: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
struct UserEntry {
    token: Option<String>,
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(rename = "client-certificate")]
    cert_file: Option<String>,
    #[serde(rename = "client-key")]
    key_file: Option<String>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: Option<String>,
    namespace: Option<String>,
}

fn config_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Transport(format!("kubeconfig {}: {message}", path.display()))
}

impl Connection {
    /// The server's host (without brackets) and port, from an `https://` URL.
    pub fn host_port(&self) -> Result<(String, u16), Error> {
        let uri: Uri = self
            .server
            .parse()
            .map_err(|e| Error::Transport(format!("server {:?}: {e}", self.server)))?;
        if uri.scheme_str() != Some("https") {
            return Err(Error::Transport(format!(
                "server {:?}: only https is supported",
                self.server
            )));
        }
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(['[', ']'])
            .to_string();
        Ok((host, uri.port_u16().unwrap_or(443)))
    }

    /// A TLS client configuration that trusts only the CA and presents the
    /// client certificate, if there is one; the caller sets ALPN.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_slice()) {
            let cert = cert.map_err(|e| Error::Transport(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Transport(format!("CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Transport(e.to_string()))?
        .with_root_certificates(roots);
        match &self.client_cert {
            Some((cert, key)) => {
                let chain = rustls_pemfile::certs(&mut cert.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Transport(format!("client certificate: {e}")))?;
                let key = rustls_pemfile::private_key(&mut key.as_slice())
                    .map_err(|e| Error::Transport(format!("client key: {e}")))?
                    .ok_or_else(|| Error::Transport("client key: none in the PEM".into()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Transport(format!("client certificate: {e}")))
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }

    pub fn from_kubeconfig(path: &Path) -> Result<Connection, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| config_err(path, e))?;
        let cfg: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| config_err(path, e))?;
        let ctx = cfg
            .contexts
            .iter()
            .find(|c| c.name == cfg.current_context)
            .or(cfg.contexts.first())
            .ok_or_else(|| config_err(path, "no context"))?;
        let cluster = cfg
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| config_err(path, format!("no cluster {:?}", ctx.value.cluster)))?;
        let user = ctx
            .value
            .user
            .as_ref()
            .and_then(|u| cfg.users.iter().find(|x| &x.name == u))
            .map(|u| &u.value);
        let dir = path.parent().unwrap_or(Path::new("."));
        let read =
            |data: &Option<String>, file: &Option<String>| -> Result<Option<Vec<u8>>, Error> {
                use base64::Engine;
                if let Some(d) = data {
                    return base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map(Some)
                        .map_err(|e| config_err(path, e));
                }
                match file {
                    Some(f) => std::fs::read(dir.join(f))
                        .map(Some)
                        .map_err(|e| config_err(path, format!("{f}: {e}"))),
                    None => Ok(None),
                }
            };
        let ca_pem = read(&cluster.value.ca_data, &cluster.value.ca_file)?
            .ok_or_else(|| config_err(path, "the cluster has no certificate-authority"))?;
        let empty = UserEntry::default();
        let user = user.unwrap_or(&empty);
        let client_cert = match (
            read(&user.cert_data, &user.cert_file)?,
            read(&user.key_data, &user.key_file)?,
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        Ok(Connection {
            server: cluster.value.server.trim_end_matches('/').to_string(),
            ca_pem,
            token: user.token.clone(),
            client_cert,
            namespace: ctx.value.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

enum Sender {
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
}

/// HTTPS to one API server; one HTTP/2 connection shared by all requests,
/// redialled when it breaks.
pub struct HttpsTransport {
    conn: Connection,
    host: String,
    port: u16,
    tls: tokio_rustls::TlsConnector,
    sender: tokio::sync::Mutex<Option<Sender>>,
}

impl HttpsTransport {
    pub fn from_kubeconfig(path: &Path) -> Result<HttpsTransport, Error> {
        HttpsTransport::new(Connection::from_kubeconfig(path)?)
    }

    pub fn new(conn: Connection) -> Result<HttpsTransport, Error> {
        let (host, port) = conn.host_port()?;
        let mut cfg = conn.tls_config()?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(HttpsTransport {
            conn,
            host,
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            sender: tokio::sync::Mutex::new(None),
        })
    }

    async fn dial(&self) -> Result<Sender, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Error::Transport(format!("connecting to {}: {e}", self.conn.server)))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Error::Transport(format!("server name {}: {e}", self.host)))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Transport(format!("TLS with {}: {e}", self.conn.server)))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let err =
            |e: hyper::Error| Error::Transport(format!("HTTP with {}: {e}", self.conn.server));
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(err)?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(err)?;
            tokio::spawn(conn);
            Ok(Sender::H1(sender))
        }
    }

    async fn send_inner(&self, req: Request<Bytes>) -> Result<Response<Body>, Error> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("{}{path}", self.conn.server)
            .parse()
            .map_err(|e| Error::Transport(format!("request path {path:?}: {e}")))?;
        if let Some(t) = &self.conn.token {
            parts.headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::Transport("token is not a valid header".into()))?,
            );
        }
        // A broken connection is redialled once: the request never reached
        // a server that has gone away.
        for attempt in 0..2 {
            let req = Request::from_parts(parts.clone(), Full::new(body.clone()));
            let mut guard = self.sender.lock().await;
            let usable = match guard.as_ref() {
                Some(Sender::H2(s)) => !s.is_closed(),
                Some(Sender::H1(s)) => s.is_ready(),
                None => false,
            };
            if !usable {
                *guard = Some(self.dial().await?);
            }
            let fut: BoxFuture<'static, Result<Response<hyper::body::Incoming>, hyper::Error>> =
                match guard.take().expect("dialled") {
                    Sender::H2(s) => {
                        let mut shared = s.clone();
                        *guard = Some(Sender::H2(s));
                        drop(guard);
                        Box::pin(async move { shared.send_request(req).await })
                    }
                    // HTTP/1.1 carries one request at a time: this one takes
                    // the connection and the next request dials anew.
                    Sender::H1(mut s) => {
                        drop(guard);
                        Box::pin(async move { s.send_request(req).await })
                    }
                };
            match fut.await {
                Ok(resp) => return Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed())),
                Err(e) if attempt == 0 && (e.is_closed() || e.is_canceled()) => {
                    *self.sender.lock().await = None;
                }
                Err(e) => {
                    return Err(Error::Transport(format!("{}: {e}", self.conn.server)));
                }
            }
        }
        Err(Error::Transport(format!(
            "{}: connection keeps closing",
            self.conn.server
        )))
    }
}

impl Transport for HttpsTransport {
    fn send(&self, req: Request<Bytes>) -> BoxFuture<'_, Result<Response<Body>, Error>> {
        Box::pin(self.send_inner(req))
    }
}
