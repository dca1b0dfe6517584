//! The Kubernetes API server: HTTPS on one port, authentication, then
//! discovery, OpenAPI and the generic resource handlers over the store.
//!
//! The path of a write: TLS → authenticate (bearer token or client
//! certificate) → route (`/api/v1/...`, `/apis/G/V/...`) → decode →
//! default → validate → store (a txn, "create if absent" or "update if
//! unchanged") → respond with the stored object, `resourceVersion` being the
//! store revision.

mod apply;
pub mod auth;
mod bootstrap;
mod discovery;
mod exec;
pub(crate) mod handlers;
mod imagekind;
pub mod join;
mod lifecycle;
pub mod local;
pub mod logs;
mod noderestriction;
mod priority;
pub mod proto;
pub mod quic;
mod rbac;
pub mod resources;
pub mod schemas;
mod seal;
pub mod serviceaccount;
pub mod status;
mod storage;
pub mod table;
mod validate;
mod watch;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

use self::auth::{Authenticator, User};
pub use self::handlers::parse_rfc3339;
use self::status::ApiError;
use self::storage::Objects;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Largest request body accepted, as Kubernetes' 3 MiB limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct ApiServer {
    objects: Objects,
    auth: Authenticator,
    join: join::JoinTokens,
    ca_pem: String,
    /// How this server reads container logs from the agents.
    kubelet: Option<logs::KubeletClient>,
    /// The HTTPS identity: issued at each start for the names clients use,
    /// in-cluster ones included.
    serving: consensus::pki::NodeTls,
    /// The agents connected over QUIC, for the log streams to them.
    agents: quic::AgentLinks,
}

pub struct ApiConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The address written into the kubeconfig (default: the listen address,
    /// 127.0.0.1 for an unspecified one).
    pub advertise: Option<String>,
    /// DefaultTolerationSeconds for new pods.
    pub default_toleration_seconds: i64,
}

pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(
            Full::new(body.into())
                .map_err(|e: Infallible| match e {})
                .boxed(),
        )
        .expect("valid response")
}

pub fn json(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).expect("json serializes"),
    )
}

pub fn error(e: &ApiError) -> Response<Body> {
    json(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

impl ApiConfig {
    /// Where clients reach this API server: the advertised address, else
    /// the listen address (loopback for an unspecified one).
    fn advertised(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| {
            if self.listen.ip().is_unspecified() {
                format!("127.0.0.1:{}", self.listen.port())
            } else {
                self.listen.to_string()
            }
        })
    }
}

/// The API server's certificate, from the cluster CA: the store's and the
/// API's advertised hosts, loopback, and what pods dial — the `kubernetes`
/// Service's address and names (`kubernetes.default.svc`, ...), as
/// kube-apiserver's certificate carries them. Without the CA key (a member
/// holding only certificates) the store's certificate serves.
fn serving_tls(store: &consensus::Store, pki: &Path, cfg: &ApiConfig) -> consensus::pki::NodeTls {
    let base = store.tls().expect("a store with certificates").clone();
    let host = |addr: &str| {
        let h = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        h.trim_matches(|c| c == '[' || c == ']').to_string()
    };
    let mut sans = vec![host(&store.config().advertise()), host(&cfg.advertised())];
    if !cfg.listen.ip().is_unspecified() {
        sans.push(cfg.listen.ip().to_string());
    }
    sans.extend(
        [
            "127.0.0.1",
            "::1",
            "localhost",
            lifecycle::KUBERNETES_SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    sans.dedup();
    let issued = consensus::pki::ClusterCa::load(pki).and_then(|ca| {
        let cert = ca.issue(&store.config().name, &sans)?;
        Ok(consensus::pki::NodeTls {
            ca_pem: base.ca_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        })
    });
    issued
        .inspect_err(|e| {
            tracing::warn!("the API serves the store's certificate (no in-cluster names): {e}")
        })
        .unwrap_or(base)
}

impl ApiServer {
    /// Prepares the API server over a running store: certificates, the
    /// admin token, the kubeconfig, and the built-in namespaces.
    pub async fn new(store: consensus::Store, cfg: &ApiConfig) -> anyhow::Result<Arc<ApiServer>> {
        validate::set_default_toleration_seconds(cfg.default_toleration_seconds);
        let pki = cfg.data_dir.join("pki");
        let ca_pem = store
            .tls()
            .map(|t| t.ca_pem.clone())
            .ok_or_else(|| anyhow::anyhow!("no certificates"))?;
        // Every member serves with the cluster's keys and tokens: adopt
        // them if a member published them, else publish this one's.
        let found = bootstrap::adopt(&store, &pki).await?;
        let load = || -> anyhow::Result<_> {
            Ok((
                seal::Sealer::load_or_create(&pki).map_err(anyhow::Error::msg)?,
                Authenticator::load_or_create(&cfg.data_dir, store.tls())?,
                join::JoinTokens::load_or_create(&pki, &ca_pem)?,
            ))
        };
        let (mut sealer, mut auth, mut join) = load()?;
        if found != bootstrap::Record::Adopted && !bootstrap::publish(&store, &pki, &found).await? {
            // Another member published first.
            bootstrap::adopt(&store, &pki).await?;
            (sealer, auth, join) = load()?;
        }
        let kubelet = logs::KubeletClient::new(&pki)
            .inspect_err(|e| {
                tracing::warn!("no client certificate for the nodes' log endpoints: {e:#}")
            })
            .ok();
        let serving = serving_tls(&store, &pki, cfg);
        let server = Arc::new(ApiServer {
            serving,
            objects: Objects::new(store, sealer),
            auth,
            join,
            ca_pem,
            kubelet,
            agents: quic::AgentLinks::default(),
        });
        server.write_kubeconfig(cfg)?;
        handlers::ensure_namespaces(&server.objects).await?;
        handlers::ensure_bootstrap_objects(&server.objects).await?;
        handlers::ensure_kube_dns_service(&server.objects).await?;
        let api = cfg.advertised();
        match api.parse() {
            Ok(addr) => handlers::ensure_kubernetes_service(&server.objects, addr).await?,
            Err(_) => tracing::warn!(
                "the advertised address {api} is not an IP and port: the kubernetes Service gets no endpoint"
            ),
        }
        Ok(server)
    }

    /// The cluster CA (PEM): what clients verify this server against.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn write_kubeconfig(&self, cfg: &ApiConfig) -> anyhow::Result<()> {
        let addr = cfg.advertised();
        let tls = self
            .objects
            .store()
            .tls()
            .ok_or_else(|| anyhow::anyhow!("no certificates"))?;
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(tls.ca_pem.as_bytes());
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\n",
            self.auth.admin_token()
        );
        let path = cfg.data_dir.join("kubeconfig.yaml");
        write_private(&path, kubeconfig.as_bytes())?;
        Ok(())
    }

    /// Serves HTTPS (HTTP/2 and HTTP/1.1) until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let listen = listener.local_addr()?;
        let mut rustls_cfg = self.serving.rustls_server_config(false)?;
        rustls_cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(rustls_cfg));
        tracing::info!(%listen, "kubernetes API listening (https)");
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!("accept: {e}"); continue; }
                },
                _ = &mut shutdown => return Ok(()),
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, "tls handshake failed: {e}");
                        return;
                    }
                };
                let cert_user = {
                    let (_, conn) = tls.get_ref();
                    conn.peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(auth::user_from_cert)
                };
                let svc = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    let cert_user = cert_user.clone();
                    async move { Ok::<_, Infallible>(server.handle(req, cert_user).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // With upgrades: `kubectl exec` switches to WebSocket.
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!(%peer, "connection: {e}");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, cert_user: Option<User>) -> Response<Body> {
        let req = req.map(|b| b.map_err(std::io::Error::other).boxed());
        // The two requests a joining node makes before it has credentials.
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/cacerts") => {
                return full(
                    StatusCode::OK,
                    "application/x-pem-file",
                    self.ca_pem.clone(),
                );
            }
            (&Method::POST, path @ ("/skiff/v1/join" | "/skiff/v1/join-server")) => {
                let server = path.ends_with("-server");
                let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return error(&ApiError::bad_request("join request: unreadable body"));
                    }
                };
                let answer = if server {
                    self.join.join_server(&body, self.objects.store()).await
                } else {
                    self.join.join(&body)
                };
                return match answer {
                    Ok(v) => join::ok(&v),
                    Err(e) => error(&e),
                };
            }
            _ => {}
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let user = match self
            .auth
            .authenticate(req.headers(), cert_user, &self.objects)
            .await
        {
            Some(u) => u,
            None => return error(&ApiError::unauthorized()),
        };
        let user = match auth::impersonate(user, req.headers()) {
            Ok(u) => u,
            Err(e) => return error(&e),
        };
        let resp = match self.route(req, &user).await {
            Ok(r) => r,
            Err(e) => error(&e),
        };
        tracing::debug!(user = %user.name, %method, %path, status = resp.status().as_u16(), "request");
        resp
    }

    /// Serves a request from inside this process (the controllers, the
    /// scheduler and a co-located agent) as `user`: the same routing,
    /// authorization, admission and validation as a request over HTTPS,
    /// without TLS and HTTP framing.
    pub async fn handle_local(&self, req: Request<Body>, user: &User) -> Response<Body> {
        match self.route(req, user).await {
            Ok(r) => r,
            Err(e) => error(&e),
        }
    }

    async fn route(&self, req: Request<Body>, user: &User) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let get = req.method() == Method::GET;
        match segs.as_slice() {
            ["version"] if get => Ok(json(StatusCode::OK, &discovery::version())),
            ["healthz"] | ["livez"] | ["readyz"] if get => {
                Ok(full(StatusCode::OK, "text/plain", "ok"))
            }
            ["api"] if get => Ok(json(StatusCode::OK, &discovery::api_versions())),
            ["apis"] if get => Ok(json(StatusCode::OK, &discovery::api_groups())),
            ["apis", group] if get => discovery::api_group(group)
                .map(|v| json(StatusCode::OK, &v))
                .ok_or_else(not_found),
            ["api", version] if get => resources::resource_list("", version)
                .map(|v| json(StatusCode::OK, &v))
                .ok_or_else(not_found),
            ["apis", group, version] if get => resources::resource_list(group, version)
                .map(|v| json(StatusCode::OK, &v))
                .ok_or_else(not_found),
            // An empty OpenAPI v2 document, in the protobuf form kubectl
            // reads: kinds it finds no schema for are left to the server,
            // which validates everything it serves.
            ["openapi", "v2"] if get => Ok(full(
                StatusCode::OK,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                discovery::OPENAPI_V2_PB,
            )),
            ["openapi", "v3"] if get => Ok(json(StatusCode::OK, &discovery::openapi_v3_root())),
            ["openapi", "v3", rest @ ..] if get => discovery::openapi_v3(&rest.join("/"))
                .map(|v| json(StatusCode::OK, &v))
                .ok_or_else(not_found),
            // skiff serves no custom resources: the list is empty, as on a
            // cluster without CRDs (kubectl asks before validating a kind it
            // does not know).
            [
                "apis",
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
            ] if get => Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "kind": "CustomResourceDefinitionList",
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "metadata": {"resourceVersion": self.objects.store().mvcc().revision().to_string()},
                    "items": [],
                }),
            )),
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ] if req.method() == Method::POST => {
                handlers::self_subject_access_review(&self.objects, req, user).await
            }
            [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectrulesreviews",
            ] if req.method() == Method::POST => {
                handlers::self_subject_rules_review(&self.objects, req, user).await
            }
            ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"]
                if req.method() == Method::POST =>
            {
                // Who the caller is, as authentication found: nothing to
                // authorize (every authenticated user may ask).
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::json!({
                        "kind": "SelfSubjectReview",
                        "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": null},
                        "status": {"userInfo": {"username": user.name, "groups": user.groups}},
                    }),
                ))
            }
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "serviceaccounts",
                name,
                "token",
            ] if req.method() == Method::POST => {
                let target = handlers::Target::parse(
                    "",
                    "v1",
                    &["namespaces", ns, "serviceaccounts", name, "token"],
                )?;
                handlers::token_request(&self.objects, &self.auth, req, target, user).await
            }
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "pods",
                name,
                sub @ ("exec" | "attach"),
            ] if get || req.method() == Method::POST => {
                let target =
                    handlers::Target::parse("", "v1", &["namespaces", ns, "pods", name, sub])?;
                rbac::authorize(&self.objects, user, "create", &target).await?;
                let q = handlers::query(&req);
                exec::pod_stream(
                    &self.objects,
                    self.kubelet.as_ref(),
                    &self.agents,
                    &target,
                    &q,
                    req,
                )
                .await
            }
            ["api", "v1", "namespaces", ns, "pods", name, "portforward"]
                if get || req.method() == Method::POST =>
            {
                let target = handlers::Target::parse(
                    "",
                    "v1",
                    &["namespaces", ns, "pods", name, "portforward"],
                )?;
                rbac::authorize(&self.objects, user, "create", &target).await?;
                exec::port_forward(
                    &self.objects,
                    self.kubelet.as_ref(),
                    &self.agents,
                    &target,
                    req,
                )
                .await
            }
            ["api", "v1", "namespaces", ns, "pods", name, "log"] if get => {
                let target =
                    handlers::Target::parse("", "v1", &["namespaces", ns, "pods", name, "log"])?;
                rbac::authorize(&self.objects, user, "get", &target).await?;
                let q = handlers::query(&req);
                logs::pod_log(
                    &self.objects,
                    self.kubelet.as_ref(),
                    &self.agents,
                    &target,
                    &q,
                )
                .await
            }
            ["api", version, rest @ ..] => {
                let target = handlers::Target::parse("", version, rest)?;
                handlers::dispatch(&self.objects, req, target, user).await
            }
            ["apis", group, version, rest @ ..] => {
                let target = handlers::Target::parse(group, version, rest)?;
                handlers::dispatch(&self.objects, req, target, user).await
            }
            _ => Err(not_found()),
        }
    }
}

/// Binds the API's address twice: TCP for HTTPS, and the same port number
/// over UDP for the agents' QUIC connections. With port 0 the TCP port is
/// chosen first and, should its number be taken on UDP, chosen again.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, std::net::UdpSocket)> {
    use anyhow::Context;
    for _ in 0..16 {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the Kubernetes API to {addr} (tcp)"))?;
        let bound = tcp.local_addr()?;
        match std::net::UdpSocket::bind(bound) {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if addr.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("binding the agents' QUIC endpoint to {bound} (udp)")
                });
            }
        }
    }
    anyhow::bail!("no port free for both tcp and udp at {addr}")
}

/// 404 for a path that names nothing served.
fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
