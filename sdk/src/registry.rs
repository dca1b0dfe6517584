//! A minimal OCI distribution client, shared by the two runtimes
//! (feature `registry`).
//!
//! It does what a node needs and no more: fetch a manifest (following an
//! index to one platform), fetch blobs with their digests verified, push
//! blobs and manifests (for `skiff push` and the tests), and Docker's
//! anonymous or basic bearer-token flow. Registries on loopback addresses
//! (and any listed in [`RegistryClient::with_insecure`]) are spoken to over
//! plain HTTP; all others over HTTPS with the webpki roots.
//!
//! WebAssembly artifacts follow the CNCF wasm OCI artifact layout: config
//! media type [`WASM_CONFIG_MEDIA_TYPE`], one layer of [`WASM_LAYER_MEDIA_TYPE`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::runtime::ImageRef;

pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
pub const OCI_EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The largest manifest accepted.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("connecting to registry {registry}: {source}")]
    Connect {
        registry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http to registry {registry}: {message}")]
    Http { registry: String, message: String },
    #[error("{url}: registry answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{image} not found in the registry")]
    NotFound { image: String },
    #[error("{url}: authentication failed: {message}")]
    Auth { url: String, message: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("invalid manifest for {image}: {message}")]
    InvalidManifest { image: String, message: String },
    #[error("{image} is not a wasm artifact (config {config_media_type}, layers {layers:?})")]
    NotWasm {
        image: String,
        config_media_type: String,
        layers: Vec<String>,
    },
    #[error("{image}: no manifest in the index for platform {platform}")]
    NoPlatform { image: String, platform: String },
    #[error("registry request to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker v2 schema 2: the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Manifest {
    /// True for the wasm OCI artifact layout: the wasm config media type,
    /// or only `application/wasm` layers.
    pub fn is_wasm(&self) -> bool {
        self.config.media_type == WASM_CONFIG_MEDIA_TYPE
            || self.artifact_type.as_deref() == Some(WASM_CONFIG_MEDIA_TYPE)
            || (!self.layers.is_empty()
                && self
                    .layers
                    .iter()
                    .all(|l| l.media_type == WASM_LAYER_MEDIA_TYPE))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest fetched by reference, with its digest.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub digest: String,
    pub manifest: Manifest,
}

/// A wasm module or component pulled from a registry.
#[derive(Clone, Debug)]
pub struct WasmArtifact {
    /// The digest of the manifest it came from.
    pub manifest_digest: String,
    /// The digest of the wasm layer (the module bytes).
    pub digest: String,
    pub bytes: Bytes,
}

/// Credentials for a registry (basic auth, exchanged for a bearer token when
/// the registry asks for one).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The client. Cheap to clone; holds no connections (each request opens its
/// own: pulls are rare and large, and the node caches what it pulled).
#[derive(Clone, Debug)]
pub struct RegistryClient {
    insecure: Vec<String>,
    credentials: Vec<(String, Credentials)>,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
    timeout: Duration,
    max_blob_bytes: usize,
}

impl Default for RegistryClient {
    fn default() -> Self {
        Self::new()
    }
}

/// One HTTP response, body collected.
struct Response {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl RegistryClient {
    pub fn new() -> Self {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        RegistryClient {
            insecure: Vec::new(),
            credentials: Vec::new(),
            tls: Arc::new(tls),
            timeout: Duration::from_secs(60),
            max_blob_bytes: 512 << 20,
        }
    }

    /// Speak plain HTTP to this registry (`host[:port]`) even though it is
    /// not on a loopback address.
    pub fn with_insecure(mut self, registry: impl Into<String>) -> Self {
        self.insecure.push(registry.into());
        self
    }

    pub fn with_credentials(mut self, registry: impl Into<String>, creds: Credentials) -> Self {
        self.credentials.push((registry.into(), creds));
        self
    }

    /// The time limit for one request, body included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_max_blob_bytes(mut self, limit: usize) -> Self {
        self.max_blob_bytes = limit;
        self
    }

    fn scheme(&self, registry: &str) -> &'static str {
        let host = host_of(registry);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback || self.insecure.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        }
    }

    fn base(&self, registry: &str) -> String {
        format!("{}://{}", self.scheme(registry), registry)
    }

    /// Fetches the manifest of `image`; an index is resolved to the entry
    /// for `platform` (`os/arch`, e.g. `linux/amd64` or `wasip2/wasm`), or
    /// the first entry if there is only one.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        platform: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let (digest, body, media_type) = self.manifest_bytes(image, image.reference()).await?;
        let media_type = media_type
            .or_else(|| sniff_media_type(&body))
            .unwrap_or_default();
        if media_type == OCI_INDEX_MEDIA_TYPE || media_type == DOCKER_LIST_MEDIA_TYPE {
            let index: Index =
                serde_json::from_slice(&body).map_err(|e| RegistryError::InvalidManifest {
                    image: image.to_string(),
                    message: e.to_string(),
                })?;
            let (os, arch) = platform.split_once('/').unwrap_or((platform, ""));
            let chosen = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == os && p.architecture == arch)
                })
                .or(if index.manifests.len() == 1 {
                    index.manifests.first()
                } else {
                    None
                })
                .ok_or_else(|| RegistryError::NoPlatform {
                    image: image.to_string(),
                    platform: platform.to_string(),
                })?;
            let (digest, body, _) = self.manifest_bytes(image, &chosen.digest).await?;
            return parse_manifest(image, digest, &body);
        }
        parse_manifest(image, digest, &body)
    }

    /// The platforms (`os`, `architecture`) an image runs on: those of its
    /// index, or its config's for a single manifest; empty for a wasm
    /// artifact (it runs anywhere) or a config that names none.
    pub async fn platforms(&self, image: &ImageRef) -> Result<Vec<Platform>, RegistryError> {
        let (digest, body, media_type) = self.manifest_bytes(image, image.reference()).await?;
        let media_type = media_type
            .or_else(|| sniff_media_type(&body))
            .unwrap_or_default();
        let invalid = |e: serde_json::Error| RegistryError::InvalidManifest {
            image: image.to_string(),
            message: e.to_string(),
        };
        if media_type == OCI_INDEX_MEDIA_TYPE || media_type == DOCKER_LIST_MEDIA_TYPE {
            let index: Index = serde_json::from_slice(&body).map_err(invalid)?;
            // Attestation manifests carry the platform unknown/unknown.
            return Ok(index
                .manifests
                .into_iter()
                .filter_map(|d| d.platform)
                .filter(|p| p.os != "unknown" && p.architecture != "unknown")
                .collect());
        }
        let manifest = parse_manifest(image, digest, &body)?.manifest;
        if manifest.is_wasm() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct Config {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            variant: Option<String>,
        }
        let config = self.blob(image, &manifest.config.digest).await?;
        let c: Config = serde_json::from_slice(&config).map_err(invalid)?;
        if c.os.is_empty() || c.architecture.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Platform {
            os: c.os,
            architecture: c.architecture,
            variant: c.variant,
        }])
    }

    async fn manifest_bytes(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(String, Bytes, Option<String>), RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base(&image.registry),
            image.repository,
            reference
        );
        let accept = [
            OCI_MANIFEST_MEDIA_TYPE,
            OCI_INDEX_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
            DOCKER_LIST_MEDIA_TYPE,
        ]
        .join(", ");
        let resp = self
            .send(
                image,
                Method::GET,
                &url,
                &[(header::ACCEPT, accept)],
                Bytes::new(),
                MAX_MANIFEST_BYTES,
            )
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                image: image.to_string(),
            });
        }
        let resp = ok(&url, resp)?;
        let digest = sha256_digest(&resp.body);
        if reference.starts_with("sha256:") && reference != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest of {image}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        let media_type = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .filter(|v| v != "application/json" && !v.is_empty());
        Ok((digest, resp.body, media_type))
    }

    /// Fetches a blob and checks it against its digest.
    pub async fn blob(&self, image: &ImageRef, digest: &str) -> Result<Bytes, RegistryError> {
        let url = format!(
            "{}/v2/{}/blobs/{}",
            self.base(&image.registry),
            image.repository,
            digest
        );
        let resp = self
            .send(
                image,
                Method::GET,
                &url,
                &[],
                Bytes::new(),
                self.max_blob_bytes,
            )
            .await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                image: format!("{image} blob {digest}"),
            });
        }
        let resp = ok(&url, resp)?;
        let actual = sha256_digest(&resp.body);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob of {image}"),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(resp.body)
    }

    /// Pulls a wasm artifact: its manifest, then its one wasm layer.
    pub async fn pull_wasm(&self, image: &ImageRef) -> Result<WasmArtifact, RegistryError> {
        let fetched = self.manifest(image, "wasip2/wasm").await?;
        let m = &fetched.manifest;
        let layers: Vec<&Descriptor> = m
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
            .collect();
        let [layer] = layers.as_slice() else {
            if layers.is_empty() || !m.is_wasm() {
                return Err(RegistryError::NotWasm {
                    image: image.to_string(),
                    config_media_type: m.config.media_type.clone(),
                    layers: m.layers.iter().map(|l| l.media_type.clone()).collect(),
                });
            }
            return Err(RegistryError::InvalidManifest {
                image: image.to_string(),
                message: format!("{} application/wasm layers, expected one", layers.len()),
            });
        };
        if layer.size as usize > self.max_blob_bytes {
            return Err(RegistryError::TooLarge {
                what: format!("wasm layer of {image}"),
                limit: self.max_blob_bytes,
            });
        }
        let bytes = self.blob(image, &layer.digest).await?;
        Ok(WasmArtifact {
            manifest_digest: fetched.digest,
            digest: layer.digest.clone(),
            bytes,
        })
    }

    /// Uploads a blob (monolithic upload) unless the registry has it.
    /// Returns its digest.
    pub async fn push_blob(&self, image: &ImageRef, data: Bytes) -> Result<String, RegistryError> {
        let digest = sha256_digest(&data);
        let base = self.base(&image.registry);
        let url = format!("{base}/v2/{}/blobs/{digest}", image.repository);
        let head = self
            .send(image, Method::HEAD, &url, &[], Bytes::new(), 0)
            .await?;
        if head.status.is_success() {
            return Ok(digest);
        }
        let url = format!("{base}/v2/{}/blobs/uploads/", image.repository);
        let resp = ok(
            &url,
            self.send(image, Method::POST, &url, &[], Bytes::new(), 1 << 16)
                .await?,
        )?;
        let location = resp
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Http {
                registry: image.registry.clone(),
                message: "upload answer without a Location".into(),
            })?;
        let location = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let headers = [(header::CONTENT_TYPE, "application/octet-stream".to_string())];
        ok(
            &url,
            self.send(image, Method::PUT, &url, &headers, data, 1 << 16)
                .await?,
        )?;
        Ok(digest)
    }

    /// Uploads a manifest under `image`'s tag (or digest). Returns its digest.
    pub async fn push_manifest(
        &self,
        image: &ImageRef,
        media_type: &str,
        body: Bytes,
    ) -> Result<String, RegistryError> {
        let digest = sha256_digest(&body);
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base(&image.registry),
            image.repository,
            image.reference()
        );
        let headers = [(header::CONTENT_TYPE, media_type.to_string())];
        ok(
            &url,
            self.send(image, Method::PUT, &url, &headers, body, 1 << 16)
                .await?,
        )?;
        Ok(digest)
    }

    /// Pushes `wasm` as a wasm OCI artifact. Returns the manifest digest.
    pub async fn push_wasm(&self, image: &ImageRef, wasm: Bytes) -> Result<String, RegistryError> {
        let config = Bytes::from_static(b"{}");
        let config_digest = self.push_blob(image, config.clone()).await?;
        let size = wasm.len() as u64;
        let layer_digest = self.push_blob(image, wasm).await?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST_MEDIA_TYPE.to_string()),
            artifact_type: None,
            config: Descriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.to_string(),
                digest: config_digest,
                size: config.len() as u64,
                platform: None,
                artifact_type: None,
                annotations: None,
            },
            layers: vec![Descriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.to_string(),
                digest: layer_digest,
                size,
                platform: None,
                artifact_type: None,
                annotations: None,
            }],
            annotations: None,
        };
        let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
        self.push_manifest(image, OCI_MANIFEST_MEDIA_TYPE, Bytes::from(body))
            .await
    }

    /// Sends a request, doing the bearer-token dance once on a 401 and
    /// following redirects (blob stores hand out signed URLs elsewhere).
    async fn send(
        &self,
        image: &ImageRef,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<Response, RegistryError> {
        let mut auth: Option<String> = self.basic_auth(&image.registry);
        let mut url = url.to_string();
        let mut tried_token = false;
        for _ in 0..6 {
            let same_host = url_host(&url) == image.registry;
            let auth_header = if same_host { auth.clone() } else { None };
            let resp = self
                .request(&method, &url, headers, auth_header, body.clone(), limit)
                .await?;
            match resp.status {
                StatusCode::UNAUTHORIZED if !tried_token => {
                    tried_token = true;
                    let challenge = resp
                        .headers
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    auth = Some(self.token(image, &url, &challenge).await?);
                }
                StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT => {
                    let Some(loc) = resp
                        .headers
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                    else {
                        return Ok(resp);
                    };
                    url = if loc.starts_with('/') {
                        format!("{}{loc}", self.base(&url_host(&url)))
                    } else {
                        loc.to_string()
                    };
                }
                _ => return Ok(resp),
            }
        }
        Err(RegistryError::Http {
            registry: image.registry.clone(),
            message: format!("too many redirects for {url}"),
        })
    }

    fn basic_auth(&self, registry: &str) -> Option<String> {
        use base64::Engine as _;
        let (_, c) = self.credentials.iter().find(|(r, _)| r == registry)?;
        let raw = format!("{}:{}", c.username, c.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// Docker's token flow: `WWW-Authenticate: Bearer realm=...,service=...,scope=...`.
    async fn token(
        &self,
        image: &ImageRef,
        url: &str,
        challenge: &str,
    ) -> Result<String, RegistryError> {
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            return Err(RegistryError::Auth {
                url: url.to_string(),
                message: format!("unsupported challenge {challenge:?}"),
            });
        };
        let mut realm = None;
        let mut query = Vec::new();
        for (k, v) in parse_challenge(params) {
            if k == "realm" {
                realm = Some(v);
            } else if k == "service" || k == "scope" {
                query.push(format!("{k}={}", percent_encode(&v)));
            }
        }
        if !query.iter().any(|q| q.starts_with("scope=")) {
            query.push(format!(
                "scope={}",
                percent_encode(&format!("repository:{}:pull", image.repository))
            ));
        }
        let Some(realm) = realm else {
            return Err(RegistryError::Auth {
                url: url.to_string(),
                message: "challenge without realm".into(),
            });
        };
        let token_url = format!("{realm}?{}", query.join("&"));
        let resp = self
            .request(
                &Method::GET,
                &token_url,
                &[],
                self.basic_auth(&image.registry),
                Bytes::new(),
                1 << 20,
            )
            .await?;
        let resp = ok(&token_url, resp).map_err(|e| RegistryError::Auth {
            url: url.to_string(),
            message: e.to_string(),
        })?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&resp.body).map_err(|e| RegistryError::Auth {
            url: token_url.clone(),
            message: e.to_string(),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| RegistryError::Auth {
                url: token_url,
                message: "token answer without a token".into(),
            })?;
        Ok(format!("Bearer {token}"))
    }

    async fn request(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        auth: Option<String>,
        body: Bytes,
        limit: usize,
    ) -> Result<Response, RegistryError> {
        match tokio::time::timeout(
            self.timeout,
            self.request_inner(method, url, headers, auth, body, limit),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Timeout {
                url: url.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn request_inner(
        &self,
        method: &Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        auth: Option<String>,
        body: Bytes,
        limit: usize,
    ) -> Result<Response, RegistryError> {
        let uri: Uri = url.parse().map_err(|e| RegistryError::Http {
            registry: url_host(url),
            message: format!("invalid url {url}: {e}"),
        })?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let http_err = |message: String| RegistryError::Http {
            registry: authority.clone(),
            message,
        };
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|source| RegistryError::Connect {
                registry: authority.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(header::HOST, &authority)
            .header(header::USER_AGENT, "skiff")
            .header(header::CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| http_err(e.to_string()))?;
        let resp = if https {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| http_err(format!("invalid server name {host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|source| RegistryError::Connect {
                    registry: authority.clone(),
                    source,
                })?;
            send_on(hyper_util::rt::TokioIo::new(tls), req).await
        } else {
            send_on(hyper_util::rt::TokioIo::new(tcp), req).await
        }
        .map_err(|e| http_err(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let head_only = *method == Method::HEAD;
        let body = if head_only {
            Bytes::new()
        } else {
            match Limited::new(body, limit.max(1 << 16)).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e)
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return Err(RegistryError::TooLarge {
                        what: url.to_string(),
                        limit,
                    });
                }
                Err(e) => return Err(http_err(e.to_string())),
            }
        };
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn send_on<I>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
}

fn ok(url: &str, resp: Response) -> Result<Response, RegistryError> {
    if resp.status.is_success() {
        return Ok(resp);
    }
    let mut body = String::from_utf8_lossy(&resp.body).into_owned();
    body.truncate(512);
    Err(RegistryError::Status {
        url: url.to_string(),
        status: resp.status.as_u16(),
        body,
    })
}

fn parse_manifest(
    image: &ImageRef,
    digest: String,
    body: &[u8],
) -> Result<FetchedManifest, RegistryError> {
    let manifest: Manifest =
        serde_json::from_slice(body).map_err(|e| RegistryError::InvalidManifest {
            image: image.to_string(),
            message: e.to_string(),
        })?;
    if manifest.schema_version != 2 {
        return Err(RegistryError::InvalidManifest {
            image: image.to_string(),
            message: format!(
                "schemaVersion {} (only 2 is supported)",
                manifest.schema_version
            ),
        });
    }
    Ok(FetchedManifest { digest, manifest })
}

/// Registries may answer `application/json`; look at the document instead.
fn sniff_media_type(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(body).ok()?;
    p.media_type
        .or_else(|| p.manifests.map(|_| OCI_INDEX_MEDIA_TYPE.to_string()))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn url_host(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `key="value",key=value` pairs of a WWW-Authenticate challenge.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((v, a)) => (v.to_string(), a),
                None => (quoted.to_string(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, a)) => (v.trim().to_string(), a),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = after.trim_start_matches(',').trim();
    }
    out
}

/// Query-string encoding of one value (RFC 3986's unreserved characters
/// kept).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A throwaway registry for tests: Debian's `docker-registry` serving a
/// temporary directory on a free loopback port, killed and removed on drop.
#[cfg(feature = "conformance")]
pub mod testing {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct LocalRegistry {
        child: Child,
        pub addr: SocketAddr,
        dir: PathBuf,
    }

    impl std::fmt::Debug for LocalRegistry {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LocalRegistry")
                .field("addr", &self.addr)
                .finish()
        }
    }

    impl Drop for LocalRegistry {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// The status code of `GET path` (HTTP/1.0, no TLS).
    pub async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
    }

    impl LocalRegistry {
        /// Starts one and waits (up to 10 s) until it answers `/v2/`.
        /// Panics with what to install if `docker-registry` is missing.
        pub async fn start() -> LocalRegistry {
            let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .expect(
                    "docker-registry is not installed: apt-get install docker-registry \
                     (scripts/test does)",
                );
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "skiff-registry-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("creating the registry's directory");
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port");
            let config = dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                     rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    dir.join("data").display()
                ),
            )
            .expect("writing the registry's config");
            let child = Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting docker-registry");
            let reg = LocalRegistry { child, addr, dir };
            let until = Instant::now() + Duration::from_secs(10);
            while get_status(addr, "/v2/").await != Some(200) {
                assert!(
                    Instant::now() < until,
                    "docker-registry did not come up on {addr}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            reg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(
            c[2],
            ("scope".into(), "repository:library/busybox:pull".into())
        );
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        let c = RegistryClient::new().with_insecure("reg.lan:5000");
        assert_eq!(c.scheme("127.0.0.1:5000"), "http");
        assert_eq!(c.scheme("localhost:5000"), "http");
        assert_eq!(c.scheme("[::1]:5000"), "http");
        assert_eq!(c.scheme("reg.lan:5000"), "http");
        assert_eq!(c.scheme("ghcr.io"), "https");
    }

    #[test]
    fn wasm_manifests_are_recognised() {
        let d = |mt: &str| Descriptor {
            media_type: mt.into(),
            digest: sha256_digest(b""),
            size: 0,
            platform: None,
            artifact_type: None,
            annotations: None,
        };
        let m = Manifest {
            schema_version: 2,
            media_type: None,
            artifact_type: None,
            config: d(WASM_CONFIG_MEDIA_TYPE),
            layers: vec![d(WASM_LAYER_MEDIA_TYPE)],
            annotations: None,
        };
        assert!(m.is_wasm());
        let m = Manifest {
            config: d("application/vnd.oci.image.config.v1+json"),
            layers: vec![d("application/vnd.oci.image.layer.v1.tar+gzip")],
            ..m
        };
        assert!(!m.is_wasm());
    }
}
