//! A Kubernetes API client (feature `client`): typed requests over any
//! [`Transport`], list-and-watch [`informer`]s that keep a local cache, and a
//! work queue for controllers.
//!
//! The same client serves a remote caller (HTTPS with a kubeconfig, see
//! [`https`]) and the components running inside `skiff server`, whose
//! transport hands requests straight to the API server's handlers: either
//! way a request goes through authorization, defaulting and validation.

pub mod discovery;
pub mod dynamic;
pub mod https;
pub mod informer;
pub mod queue;
#[cfg(feature = "quic")]
pub mod quic;

use std::any::TypeId;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};
use k8s_openapi::{Metadata, NamespaceResourceScope, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A response body as the transports produce it.
pub type Body = BoxBody<Bytes, std::io::Error>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Carries one request to an API server and returns its response, whose
/// body may stream (watches).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, req: Request<Bytes>) -> BoxFuture<'_, Result<Response<Body>, Error>>;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a Kubernetes `Status`.
    #[error("{} ({}): {}", .0.code.unwrap_or_default(), .0.reason.as_deref().unwrap_or(""), .0.message.as_deref().unwrap_or(""))]
    Api(Box<Status>),
    #[error("transport: {0}")]
    Transport(String),
    #[error("decoding {what}: {message}")]
    Decode { what: String, message: String },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

impl Error {
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api(s) => s.code.and_then(|c| u16::try_from(c).ok()),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Api(s) if s.reason.as_deref() == Some("AlreadyExists"))
    }
    /// A watch or list whose resourceVersion has been compacted away.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
    /// Whether the request might succeed if repeated as is.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Api(_) => matches!(self.code(), Some(429 | 500 | 502 | 503 | 504)),
            Error::Transport(_) | Error::Timeout(_) => true,
            Error::Decode { .. } => false,
        }
    }
}

/// A handle on an API server, cheap to clone.
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(transport: impl Transport) -> Client {
        Client {
            transport: Arc::new(transport),
            timeout: Duration::from_secs(30),
        }
    }

    /// Connects with a kubeconfig file (its current context).
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Client, Error> {
        Ok(Client::new(https::HttpsTransport::from_kubeconfig(path)?))
    }

    /// Sends a request with a JSON (or empty) body and returns the raw
    /// response: non-2xx statuses become [`Error::Api`].
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<Body>, Error> {
        let resp = tokio::time::timeout(self.timeout, self.transport.send(req))
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = collect(resp.into_body(), 1 << 20).await?;
        Err(Error::Api(Box::new(status_from(status, &body))))
    }

    /// A request returning JSON decoded as `T`.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<T, Error> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = self.send(req).await?;
        let body = collect(resp.into_body(), 64 << 20).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Decode {
            what: path.to_string(),
            message: e.to_string(),
        })
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, Error> {
        self.request(Method::GET, path, "application/json", Bytes::new())
            .await
    }
}

async fn collect(body: Body, limit: usize) -> Result<Bytes, Error> {
    let body = http_body_util::Limited::new(body, limit);
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::Transport(format!("reading the response: {e}")))
}

fn status_from(code: StatusCode, body: &[u8]) -> Status {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if s.code.is_some() => s,
        _ => Status {
            code: Some(i32::from(code.as_u16())),
            message: Some(String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()),
            reason: code.canonical_reason().map(str::to_string),
            status: Some("Failure".into()),
            ..Status::default()
        },
    }
}

/// What the typed API needs of a kind.
pub trait Object:
    Resource<Scope: 'static>
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: Resource<Scope: 'static>
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Whether `K` lives in namespaces.
pub fn is_namespaced<K: Resource>() -> bool
where
    K::Scope: 'static,
{
    TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>()
}

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<u32>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    /// Watch only: server-side timeout.
    pub timeout_seconds: Option<u32>,
}

impl ListParams {
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    fn query(&self, watch: bool) -> String {
        let mut q = Vec::new();
        if watch {
            q.push("watch=true".to_string());
            q.push("allowWatchBookmarks=true".to_string());
        }
        if let Some(s) = &self.label_selector {
            q.push(format!("labelSelector={}", encode(s)));
        }
        if let Some(s) = &self.field_selector {
            q.push(format!("fieldSelector={}", encode(s)));
        }
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        if let Some(c) = &self.continue_token {
            q.push(format!("continue={}", encode(c)));
        }
        if let Some(rv) = &self.resource_version {
            q.push(format!("resourceVersion={}", encode(rv)));
        }
        if let Some(t) = self.timeout_seconds {
            q.push(format!("timeoutSeconds={t}"));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a delete proceeds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` or `Foreground`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Preconditions>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl DeleteParams {
    pub fn background() -> Self {
        DeleteParams {
            propagation_policy: Some("Background".into()),
            ..Default::default()
        }
    }
    /// Deletes only the object with this uid (not a successor of the same name).
    pub fn with_uid(mut self, uid: impl Into<String>) -> Self {
        self.preconditions = Some(Preconditions {
            uid: Some(uid.into()),
            resource_version: None,
        });
        self
    }
    pub fn grace(mut self, seconds: i64) -> Self {
        self.grace_period_seconds = Some(seconds);
        self
    }
}

/// The patch formats the API server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
    pub continue_token: Option<String>,
}

/// One event of a watch.
#[derive(Debug, Clone)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// A progress marker: everything up to this resourceVersion was sent.
    Bookmark(String),
}

/// Typed access to one kind, in one namespace or all of them.
pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl<K: Object> Api<K> {
    /// Every namespace (lists and watches), or a cluster-scoped kind.
    pub fn all(client: &Client) -> Self {
        Api {
            client: client.clone(),
            namespace: None,
            _kind: PhantomData,
        }
    }

    pub fn namespaced(client: &Client, namespace: &str) -> Self {
        Api {
            client: client.clone(),
            namespace: Some(namespace.to_string()),
            _kind: PhantomData,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn collection(&self, namespace: Option<&str>) -> String {
        let base = if K::GROUP.is_empty() {
            format!("/api/{}", K::VERSION)
        } else {
            format!("/apis/{}/{}", K::GROUP, K::VERSION)
        };
        match namespace.or(self.namespace.as_deref()) {
            Some(ns) if is_namespaced::<K>() => {
                format!("{base}/namespaces/{ns}/{}", K::URL_PATH_SEGMENT)
            }
            _ => format!("{base}/{}", K::URL_PATH_SEGMENT),
        }
    }

    fn item(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection(namespace), name)
    }

    fn ns_of<'a>(&'a self, obj: &'a K) -> Option<&'a str> {
        obj.metadata()
            .namespace
            .as_deref()
            .or(self.namespace.as_deref())
    }

    fn body(obj: &impl Serialize) -> Result<Bytes, Error> {
        serde_json::to_vec(obj)
            .map(Bytes::from)
            .map_err(|e| Error::Decode {
                what: K::KIND.to_string(),
                message: e.to_string(),
            })
    }

    pub async fn get(&self, name: &str) -> Result<K, Error> {
        self.get_in(None, name).await
    }

    pub async fn get_in(&self, namespace: Option<&str>, name: &str) -> Result<K, Error> {
        self.client
            .request(
                Method::GET,
                &self.item(namespace, name),
                "application/json",
                Bytes::new(),
            )
            .await
    }

    /// `Ok(None)` for a 404.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, Error> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, params: &ListParams) -> Result<ObjectList<K>, Error> {
        let path = format!("{}{}", self.collection(None), params.query(false));
        let v: Value = self
            .client
            .request(Method::GET, &path, "application/json", Bytes::new())
            .await?;
        let items = v["items"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|item| decode_item::<K>(item.clone()))
            .collect::<Result<Vec<K>, Error>>()?;
        Ok(ObjectList {
            items,
            resource_version: v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            continue_token: v["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    /// Every page of a list.
    pub async fn list_all(&self, params: &ListParams) -> Result<ObjectList<K>, Error> {
        let mut params = params.clone();
        params.limit = params.limit.or(Some(500));
        let mut first = self.list(&params).await?;
        while let Some(c) = first.continue_token.take() {
            params.continue_token = Some(c);
            let page = self.list(&params).await?;
            first.items.extend(page.items);
            first.continue_token = page.continue_token;
        }
        Ok(first)
    }

    pub async fn create(&self, obj: &K) -> Result<K, Error> {
        self.client
            .request(
                Method::POST,
                &self.collection(self.ns_of(obj)),
                "application/json",
                Self::body(obj)?,
            )
            .await
    }

    /// Replaces the object (an update, guarded by its resourceVersion if set).
    pub async fn replace(&self, obj: &K) -> Result<K, Error> {
        let name = obj.metadata().name.as_deref().unwrap_or("");
        self.client
            .request(
                Method::PUT,
                &self.item(self.ns_of(obj), name),
                "application/json",
                Self::body(obj)?,
            )
            .await
    }

    /// Replaces the status subresource.
    pub async fn replace_status(&self, obj: &K) -> Result<K, Error> {
        let name = obj.metadata().name.as_deref().unwrap_or("");
        self.client
            .request(
                Method::PUT,
                &format!("{}/status", self.item(self.ns_of(obj), name)),
                "application/json",
                Self::body(obj)?,
            )
            .await
    }

    pub async fn patch(&self, name: &str, kind: PatchType, patch: &Value) -> Result<K, Error> {
        self.patch_sub(None, name, None, kind, patch).await
    }

    pub async fn patch_status(
        &self,
        name: &str,
        kind: PatchType,
        patch: &Value,
    ) -> Result<K, Error> {
        self.patch_sub(None, name, Some("status"), kind, patch)
            .await
    }

    pub async fn patch_sub(
        &self,
        namespace: Option<&str>,
        name: &str,
        sub: Option<&str>,
        kind: PatchType,
        patch: &Value,
    ) -> Result<K, Error> {
        let mut path = self.item(namespace, name);
        if let Some(s) = sub {
            path = format!("{path}/{s}");
        }
        self.client
            .request(
                Method::PATCH,
                &path,
                kind.content_type(),
                Bytes::from(patch.to_string()),
            )
            .await
    }

    /// POSTs to a subresource (`binding`, `eviction`) of `name`.
    pub async fn create_sub(
        &self,
        namespace: Option<&str>,
        name: &str,
        sub: &str,
        body: &Value,
    ) -> Result<Value, Error> {
        self.client
            .request(
                Method::POST,
                &format!("{}/{sub}", self.item(namespace, name)),
                "application/json",
                Bytes::from(body.to_string()),
            )
            .await
    }

    /// Deletes `name`; `Ok(false)` when it was already gone.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<bool, Error> {
        self.delete_in(None, name, params).await
    }

    pub async fn delete_in(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<bool, Error> {
        let r: Result<Value, Error> = self
            .client
            .request(
                Method::DELETE,
                &self.item(namespace, name),
                "application/json",
                Self::body(params)?,
            )
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts a watch from `resource_version` (an empty one sends the
    /// current objects first, as ADDED events).
    pub async fn watch(&self, params: &ListParams) -> Result<WatchStream<K>, Error> {
        let path = format!("{}{}", self.collection(None), params.query(true));
        let req = Request::builder()
            .method(Method::GET)
            .uri(&path)
            .header(header::ACCEPT, "application/json")
            .body(Bytes::new())
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = self.client.send(req).await?;
        Ok(WatchStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
            _kind: PhantomData,
        })
    }
}

fn decode_item<K: Object>(mut item: Value) -> Result<K, Error> {
    // Lists leave out each item's kind; the typed structs don't need it but
    // callers re-serializing the object do.
    if let Some(o) = item.as_object_mut() {
        o.entry("apiVersion")
            .or_insert_with(|| K::API_VERSION.into());
        o.entry("kind").or_insert_with(|| K::KIND.into());
    }
    serde_json::from_value(item).map_err(|e| Error::Decode {
        what: K::KIND.to_string(),
        message: e.to_string(),
    })
}

/// The events of one watch request, in order.
pub struct WatchStream<K> {
    body: Body,
    buf: BytesMut,
    _kind: PhantomData<fn() -> K>,
}

impl<K: Object> WatchStream<K> {
    /// The next event; `Ok(None)` when the server ended the watch.
    pub async fn next(&mut self) -> Result<Option<WatchEvent<K>>, Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.decode(line).map(Some);
            }
            match self.body.frame().await {
                None => {
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    let rest = self.buf.split();
                    return self.decode(&rest).map(Some);
                }
                Some(Err(e)) => return Err(Error::Transport(format!("watch: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn decode(&self, line: &[u8]) -> Result<WatchEvent<K>, Error> {
        let mut v: Value = serde_json::from_slice(line).map_err(|e| Error::Decode {
            what: format!("{} watch event", K::KIND),
            message: e.to_string(),
        })?;
        let object = v["object"].take();
        match v["type"].as_str() {
            Some("ADDED") => Ok(WatchEvent::Added(decode_item(object)?)),
            Some("MODIFIED") => Ok(WatchEvent::Modified(decode_item(object)?)),
            Some("DELETED") => Ok(WatchEvent::Deleted(decode_item(object)?)),
            Some("BOOKMARK") => Ok(WatchEvent::Bookmark(
                object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )),
            Some("ERROR") => {
                let status: Status = serde_json::from_value(object).unwrap_or_default();
                Err(Error::Api(Box::new(status)))
            }
            other => Err(Error::Decode {
                what: format!("{} watch event", K::KIND),
                message: format!("unknown event type {other:?}"),
            }),
        }
    }
}

/// `namespace/name` (or `name` for cluster-scoped objects): how caches and
/// queues key objects, as client-go does.
pub fn key_of(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// Splits a [`key_of`] key into namespace and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Node, Pod};

    struct Nowhere;
    impl Transport for Nowhere {
        fn send(&self, _: Request<Bytes>) -> BoxFuture<'_, Result<Response<Body>, Error>> {
            Box::pin(async { Err(Error::Transport("nowhere".into())) })
        }
    }

    #[test]
    fn paths_follow_the_api_layout() {
        let c = Client::new(Nowhere);
        assert_eq!(
            Api::<Pod>::namespaced(&c, "web").item(None, "p"),
            "/api/v1/namespaces/web/pods/p"
        );
        assert_eq!(Api::<Pod>::all(&c).collection(None), "/api/v1/pods");
        assert_eq!(Api::<Node>::all(&c).item(None, "n1"), "/api/v1/nodes/n1");
        assert_eq!(
            Api::<Node>::namespaced(&c, "ignored").item(None, "n1"),
            "/api/v1/nodes/n1"
        );
        assert_eq!(
            Api::<Deployment>::all(&c).item(Some("a"), "d"),
            "/apis/apps/v1/namespaces/a/deployments/d"
        );
        let q = ListParams::default()
            .labels("app in (a,b)")
            .fields("spec.nodeName=n1")
            .query(true);
        assert_eq!(
            q,
            "?watch=true&allowWatchBookmarks=true&labelSelector=app%20in%20%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1"
        );
    }

    #[test]
    fn non_status_errors_keep_the_code() {
        let s = status_from(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(s.code, Some(502));
        assert_eq!(s.message.as_deref(), Some("upstream down"));
        let e = Error::Api(Box::new(s));
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn watch_lines_decode_across_frames() {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = vec![
            Ok(hyper::body::Frame::data(Bytes::from_static(
                b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n{\"type\":\"MOD",
            ))),
            Ok(hyper::body::Frame::data(Bytes::from_static(
                b"IFIED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"7\"}}}\n{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n",
            ))),
        ];
        let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let mut w: WatchStream<Pod> = WatchStream {
            body: BodyExt::boxed(body),
            buf: BytesMut::new(),
            _kind: PhantomData,
        };
        assert!(
            matches!(w.next().await.unwrap(), Some(WatchEvent::Added(p)) if p.metadata.name.as_deref() == Some("a"))
        );
        assert!(
            matches!(w.next().await.unwrap(), Some(WatchEvent::Modified(p)) if p.metadata.resource_version.as_deref() == Some("7"))
        );
        assert!(matches!(w.next().await.unwrap(), Some(WatchEvent::Bookmark(rv)) if rv == "9"));
        assert!(w.next().await.unwrap().is_none());
    }
}
