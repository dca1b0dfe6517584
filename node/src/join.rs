//! The agent's side of joining a cluster (see `apiserver::join`): fetch and
//! pin the CA by the hash in the token, trade the token for a node
//! certificate, keep it in the agent's data directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use skiff_sdk::client::https::{Connection, HttpsTransport};
use skiff_sdk::client::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::apiserver::join::{TOKEN_PREFIX, ca_hash};

/// How to reach `server` as this node: joins first if `dir` holds no
/// certificate yet.
pub async fn node_connection(
    server: &str,
    token: &str,
    node: &str,
    dir: &Path,
) -> Result<Connection> {
    let pki = dir.join("pki");
    let (ca, cert, key) = (
        pki.join("ca.crt"),
        pki.join("node-client.crt"),
        pki.join("node-client.key"),
    );
    if !cert.exists() {
        let (ca_pem, client) = pinned(server, token).await?;
        let answer = ask(
            &client,
            server,
            "/skiff/v1/join",
            json!({"token": token, "node": node}),
        )
        .await?;
        std::fs::create_dir_all(&pki)?;
        write_private(&ca, ca_pem.as_bytes())?;
        write_private(&key, answer["key"].as_str().unwrap_or("").as_bytes())?;
        write_private(
            &cert,
            answer["certificate"].as_str().unwrap_or("").as_bytes(),
        )?;
        tracing::info!(%server, %node, "joined the cluster");
    }
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(Connection {
        server: server.to_string(),
        ca_pem: read(&ca)?,
        token: None,
        client_cert: Some((read(&cert)?, read(&key)?)),
        namespace: None,
    })
}

/// The cluster CA `server` presents, checked against the hash in `token`,
/// and an anonymous client that trusts only that CA.
async fn pinned(server: &str, token: &str) -> Result<(String, Client)> {
    let parts: Vec<&str> = token.split('.').collect();
    let [TOKEN_PREFIX, hash, _secret] = parts.as_slice() else {
        bail!(
            "--token is not a skiff join token (skiff1.<ca hash>.<secret>, in the server's DIR/pki)"
        );
    };
    let ca_pem = fetch_ca(server).await?;
    if ca_hash(&ca_pem) != *hash {
        bail!(
            "the CA certificate {server} presents does not match the token: wrong server, or someone in between"
        );
    }
    let transport = HttpsTransport::new(Connection {
        server: server.to_string(),
        ca_pem: ca_pem.clone().into_bytes(),
        token: None,
        client_cert: None,
        namespace: None,
    })?;
    Ok((ca_pem, Client::new(transport)))
}

/// `POST path` with `body`; a refused token is said as such.
async fn ask(client: &Client, server: &str, path: &str, body: Value) -> Result<Value> {
    client
        .request(
            Method::POST,
            path,
            "application/json",
            Bytes::from(body.to_string()),
        )
        .await
        .map_err(|e| match e {
            Error::Api(s) if s.code == Some(401) => {
                anyhow::anyhow!("{server} refused the token")
            }
            e => anyhow::anyhow!("joining {server}: {e}"),
        })
}

/// What a new control-plane member needs to start its store: the members
/// to find the leader through, and where the cluster CA was put.
#[derive(Debug)]
pub struct ServerJoin {
    pub initial_cluster: Vec<(String, String)>,
    pub ca_dir: std::path::PathBuf,
}

/// Joins the control plane of `server` as member `name`, reachable by its
/// peers at `peer` (host:port): the server adds it as a learner and answers
/// the cluster's shared files, written here into `dir/pki` (the CA into
/// `dir/join`, from which the store issues this member's certificate).
pub async fn join_server(
    server: &str,
    token: &str,
    name: &str,
    peer: &str,
    dir: &Path,
) -> Result<ServerJoin> {
    let (_, client) = pinned(server, token).await?;
    let answer = ask(
        &client,
        server,
        "/skiff/v1/join-server",
        json!({"token": token, "name": name, "peer": peer}),
    )
    .await?;
    let pki = dir.join("pki");
    let ca_dir = dir.join("join");
    std::fs::create_dir_all(&pki)?;
    std::fs::create_dir_all(&ca_dir)?;
    let files = answer["files"]
        .as_object()
        .context("the join answer has no files")?;
    for f in crate::apiserver::join::SHARED_FILES {
        let text = files
            .get(*f)
            .and_then(Value::as_str)
            .with_context(|| format!("the join answer lacks {f}"))?;
        let to = if f.starts_with("ca.") { &ca_dir } else { &pki };
        write_private(&to.join(f), text.as_bytes())?;
    }
    let mut initial_cluster: Vec<(String, String)> = answer["members"]
        .as_array()
        .context("the join answer has no members")?
        .iter()
        .filter_map(|m| {
            let peer = m["peer"].as_str()?.to_string();
            let name = m["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(m["id"].as_str()?);
            Some((name.to_string(), peer))
        })
        .collect();
    if let Some(me) = initial_cluster.iter_mut().find(|(_, p)| p == peer) {
        me.0 = name.to_string();
    }
    tracing::info!(%server, %name, members = initial_cluster.len(), "joined the control plane as a learner");
    Ok(ServerJoin {
        initial_cluster,
        ca_dir,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, data)?;
    Ok(())
}

/// `GET /cacerts` without verifying the server: the caller checks what
/// comes back against the hash in the token before trusting it.
async fn fetch_ca(server: &str) -> Result<String> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--server {server:?} must be an https:// URL");
    }
    let host = uri
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinLater))
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS with {server}"))?;
    tls.write_all(
        format!("GET /cacerts HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_to_end(&mut buf),
    )
    .await
    .context("reading /cacerts timed out")?
    .or_else(|e| if buf.is_empty() { Err(e) } else { Ok(0) })?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed answer to /cacerts")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{server}/cacerts: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Accepts any server certificate, for the one request whose answer is
/// verified by other means (the CA hash in the join token).
#[derive(Debug)]
struct PinLater;

impl rustls::client::danger::ServerCertVerifier for PinLater {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The identity the agent's log endpoint presents: the node certificate
/// from joining, and the cluster CA its clients must come from.
pub fn serving_tls(dir: &Path) -> Result<consensus::pki::NodeTls> {
    let pki = dir.join("pki");
    let read = |f: &str| {
        let p = pki.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok(consensus::pki::NodeTls {
        ca_pem: read("ca.crt")?,
        cert_pem: read("node-client.crt")?,
        key_pem: read("node-client.key")?,
    })
}
