//! The agent's HTTPS endpoint, as the kubelet's port 10250: the API server
//! reads container logs here to answer `pods/{name}/log`.
//!
//! `GET /containerLogs/{namespace}/{pod}/{container}?follow=&previous=
//! &timestamps=&tailLines=&limitBytes=&sinceSeconds=` answers the text of
//! the container's CRI log file (see [`super::log_path`]) as `kubectl logs`
//! prints it. `follow` keeps the response open, sending lines as they are
//! written, until the container stops or the client goes away.
//!
//! Mutual TLS with the cluster CA: the agent presents its node certificate
//! (`system:node:<name>`, valid for the DNS name `<name>`, which the API
//! server checks), and only a client certificate from the cluster CA whose
//! user is the API server's ([`KUBELET_CLIENT`]) or in `system:masters` may
//! read. No certificate is 401, another user 403; a certificate from another
//! CA fails the handshake.
//!
//! The same requests also arrive on the agent's QUIC connection to the
//! control plane ([`LogServer::serve_streams`]): streams the API server
//! opens there, which need no port on the node. Their caller is the API
//! server the agent dialled and verified against the cluster CA — the one
//! whose pod assignments it already runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use consensus::pki::NodeTls;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use skiff_sdk::client::informer::Store;
use skiff_sdk::client::quic;
use skiff_sdk::runtime::{LogLine, LogReader, Runtime, rfc3339_nanos};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::apiserver::auth::{User, user_from_cert};
use crate::apiserver::{Body, full};

/// The user of the client certificate the API server presents to agents
/// (kubeadm's `kube-apiserver-kubelet-client`).
pub const KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What a log request asks for: `PodLogOptions` as the kubelet takes them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// Only lines written this many seconds ago or later.
    pub since_seconds: Option<u64>,
}

impl LogOptions {
    /// Reads the options from decoded query pairs; `Err` names the bad one.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        let flag = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{k}: {v:?} is not a boolean")),
        };
        let number = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}: {v:?} is not a non-negative integer"))
        };
        for (k, v) in pairs {
            match k {
                "follow" => o.follow = flag(k, v)?,
                "previous" => o.previous = flag(k, v)?,
                "timestamps" => o.timestamps = flag(k, v)?,
                "tailLines" => o.tail_lines = Some(number(k, v)?),
                "limitBytes" => o.limit_bytes = Some(number(k, v)?),
                "sinceSeconds" => o.since_seconds = Some(number(k, v)?),
                _ => {}
            }
        }
        Ok(o)
    }

    /// The query string that asks an agent for these options.
    pub fn to_query(&self) -> String {
        let mut q = Vec::new();
        for (k, on) in [
            ("follow", self.follow),
            ("previous", self.previous),
            ("timestamps", self.timestamps),
        ] {
            if on {
                q.push(format!("{k}=true"));
            }
        }
        for (k, v) in [
            ("tailLines", self.tail_lines),
            ("limitBytes", self.limit_bytes),
            ("sinceSeconds", self.since_seconds),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        }
        q.join("&")
    }
}

/// Whether `user` may read logs from this agent.
pub fn may_read(user: &User) -> bool {
    user.name == KUBELET_CLIENT || user.is_master()
}

/// Which file of a container answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The current log; `Some(container id)` while that instance runs (a
    /// follower stops when it no longer does).
    Current(Option<String>),
    /// The log of the instance before the current one.
    Previous,
}

/// The kubelet's checks of the container's state before reading its log:
/// `Err((status code, message))` with the kubelet's messages.
pub fn source(pod: &Pod, container: &str, previous: bool) -> Result<Source, (u16, String)> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let spec = pod.spec.clone().unwrap_or_default();
    let known = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| c.name == container)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == container);
    if !known {
        return Err((
            400,
            format!("container {container} is not valid for pod {name}"),
        ));
    }
    let status = pod.status.as_ref();
    let found: Option<&ContainerStatus> = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .chain(status.and_then(|s| s.init_container_statuses.as_ref()))
        .chain(status.and_then(|s| s.ephemeral_container_statuses.as_ref()))
        .flatten()
        .find(|s| s.name == container);
    let waiting = |reason: &str| {
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        Err((
            400,
            format!("container {container:?} in pod {name:?} is waiting to start: {why}"),
        ))
    };
    let Some(s) = found else {
        return waiting("ContainerCreating");
    };
    let state = s.state.clone().unwrap_or_default();
    let last_terminated = s
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .is_some();
    if previous {
        if !last_terminated {
            return Err((
                400,
                format!("previous terminated container {container:?} in pod {name:?} not found"),
            ));
        }
        // Waiting to restart: the current file is still the instance that
        // ended last, which is what lastState describes.
        return Ok(if state.waiting.is_some() {
            Source::Current(None)
        } else {
            Source::Previous
        });
    }
    if state.running.is_some() {
        return Ok(Source::Current(s.container_id.clone()));
    }
    if state.terminated.is_some() || last_terminated {
        return Ok(Source::Current(None));
    }
    waiting(
        state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .unwrap_or("ContainerCreating"),
    )
}

/// Turns CRI records into what `kubectl logs` prints. `at_line_start`
/// says whether the previous record ended its line (timestamps go at the
/// start of each line).
pub fn render(lines: &[LogLine], timestamps: bool, at_line_start: &mut bool) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        if timestamps && *at_line_start {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.text.as_bytes());
        if l.full {
            out.push(b'\n');
        }
        *at_line_start = l.full;
    }
    out
}

/// The records a request starts with: those since `since` (an RFC 3339
/// time in the log's own format, which orders as text), then the last
/// `tail` lines of them.
pub fn select(lines: Vec<LogLine>, since: Option<&str>, tail: Option<u64>) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = match since {
        Some(t) => lines.into_iter().filter(|l| l.time.as_str() >= t).collect(),
        None => lines,
    };
    if let Some(n) = tail {
        // Count whole lines from the end; a line may span partial records.
        let mut seen = 0u64;
        let mut start = lines.len();
        for (i, l) in lines.iter().enumerate().rev() {
            if l.full {
                if seen == n {
                    break;
                }
                seen += 1;
            }
            start = i;
        }
        if n == 0 {
            start = lines.len();
        }
        lines.drain(..start);
    }
    lines
}

/// Streams the control plane opened on the agent's QUIC connection.
#[derive(Clone)]
pub struct ControlStreams(pub Arc<tokio::sync::Mutex<mpsc::Receiver<quic::Incoming>>>);

impl std::fmt::Debug for ControlStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlStreams")
    }
}

/// What the log server needs of the agent.
pub struct LogServer {
    /// The certificate of the HTTPS endpoint; without one, only the QUIC
    /// streams are served.
    pub tls: Option<NodeTls>,
    pub data_dir: PathBuf,
    pub pods: Arc<Store<Pod>>,
    /// The runtimes `exec` runs commands through: wasm, and containers
    /// when this node has them.
    pub wasm: Arc<dyn Runtime>,
    pub oci: Option<oci_bridge::OciRuntime>,
}

impl LogServer {
    /// Serves HTTPS on `listener` until `stop` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no serving certificate"))?;
        let mut cfg = tls.rustls_server_config(false)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!("log server accept: {e}"); continue; }
                },
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let server = self.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, "log server tls handshake: {e}");
                        return;
                    }
                };
                let user = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(user_from_cert);
                let svc = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    let user = user.clone();
                    async move { Ok::<_, Infallible>(server.handle(req, user).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!(%peer, "log server connection: {e}");
                }
            });
        }
    }

    /// Serves the streams the control plane opens on the agent's QUIC
    /// connection, as the API server's requests, until `stop` turns true.
    pub async fn serve_streams(
        self: Arc<Self>,
        streams: ControlStreams,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut rx = streams.0.lock().await;
        let api_server = User {
            name: KUBELET_CLIENT.into(),
            groups: vec!["system:authenticated".into()],
        };
        loop {
            let (send, recv) = tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let (server, user) = (self.clone(), api_server.clone());
            quic::spawn_serve(send, recv, "log stream", move |req| {
                let (server, user) = (server.clone(), user.clone());
                async move { server.handle(req, Some(user)).await }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, user: Option<User>) -> Response<Body> {
        let Some(user) = user else {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        };
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let sub = match segs.first() {
            Some(&"containerLogs") => "log",
            Some(&"exec") => "exec",
            Some(&"attach") => "attach",
            Some(&"portForward") => "portforward",
            _ => "proxy",
        };
        if !may_read(&user) {
            tracing::debug!(user = %user.name, %path, "log request refused");
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={}, verb=get, resource=nodes, subresource={sub})",
                    user.name
                ),
            );
        }
        let method = req.method().clone();
        match (&method, segs.as_slice()) {
            (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok"),
            (&Method::GET, ["containerLogs", ns, pod, container]) => {
                let query = req.uri().query().unwrap_or("");
                let opts = match LogOptions::from_pairs(
                    query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.split_once('=').unwrap_or((p, ""))),
                ) {
                    Ok(o) => o,
                    Err(e) => return text(StatusCode::BAD_REQUEST, e),
                };
                self.container_logs(ns, pod, container, opts)
            }
            (&Method::GET | &Method::POST, ["exec", ns, pod, container]) => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.exec(req, &ns, &pod, &container).await
            }
            (&Method::GET | &Method::POST, ["attach", ns, pod, container]) => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                self.attach(req, &ns, &pod, &container).await
            }
            (&Method::GET | &Method::POST, ["portForward", ns, pod]) => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                self.port_forward(req, &ns, &pod)
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    fn container_logs(
        &self,
        ns: &str,
        pod_name: &str,
        container: &str,
        opts: LogOptions,
    ) -> Response<Body> {
        let Some(pod) = self.pods.get_in(Some(ns), pod_name) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod \"{ns}/{pod_name}\" not found"),
            );
        };
        let src = match source(&pod, container, opts.previous) {
            Ok(s) => s,
            Err((code, message)) => {
                return text(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                    message,
                );
            }
        };
        let path = match &src {
            Source::Current(_) => super::log_path(&self.data_dir, ns, pod_name, container),
            Source::Previous => super::previous_log_path(&self.data_dir, ns, pod_name, container),
        };
        let following = match &src {
            Source::Current(Some(id)) if opts.follow => Some(id.clone()),
            _ => None,
        };
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
        let pods = self.pods.clone();
        let (ns, pod_name, container) =
            (ns.to_string(), pod_name.to_string(), container.to_string());
        tokio::spawn(async move {
            let since = opts.since_seconds.map(|s| {
                let at = SystemTime::now().checked_sub(Duration::from_secs(s));
                rfc3339_nanos(at.unwrap_or(SystemTime::UNIX_EPOCH))
            });
            let mut budget = opts.limit_bytes.unwrap_or(u64::MAX);
            let mut at_line_start = true;
            let mut reader = LogReader::open(&path);
            // Sends what fits in the byte budget; false when done.
            let send = |mut bytes: Vec<u8>, budget: &mut u64| {
                let tx = tx.clone();
                let fits = (*budget).min(bytes.len() as u64) as usize;
                bytes.truncate(fits);
                *budget -= fits as u64;
                let more = *budget > 0;
                async move {
                    if !bytes.is_empty() && tx.send(Ok(Frame::data(bytes.into()))).await.is_err() {
                        return false;
                    }
                    more
                }
            };
            let first = match reader.read_new() {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let first = select(first, since.as_deref(), opts.tail_lines);
            let bytes = render(&first, opts.timestamps, &mut at_line_start);
            if !send(bytes, &mut budget).await {
                return;
            }
            let Some(id) = following else { return };
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = tx.closed() => return,
                }
                // Whether it still runs is read before the file, so that
                // the last read sees everything the instance wrote.
                let running = pods.get_in(Some(ns.as_str()), &pod_name).is_some_and(|p| {
                    source(&p, &container, false) == Ok(Source::Current(Some(id.clone())))
                });
                let new = match reader.read_new() {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let new = select(new, since.as_deref(), None);
                if !new.is_empty() {
                    let bytes = render(&new, opts.timestamps, &mut at_line_start);
                    if !send(bytes, &mut budget).await {
                        return;
                    }
                }
                if !running {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(BodyExt::boxed(body))
            .expect("valid response")
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", message.into())
}

/// Binds the log server's address; port 0 picks a free one.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "binding the log endpoint to {addr}: {e} (choose another with --kubelet-listen)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_sdk::runtime::LogStream;

    fn line(time: &str, full: bool, text: &str) -> LogLine {
        LogLine {
            time: time.into(),
            stream: LogStream::Stdout,
            full,
            text: text.into(),
        }
    }

    #[test]
    fn options_round_trip_and_refuse_garbage() {
        let o = LogOptions::from_pairs([
            ("follow", "true"),
            ("tailLines", "3"),
            ("limitBytes", "10"),
            ("sinceSeconds", "60"),
            ("timestamps", "1"),
            ("container", "c"),
        ])
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since_seconds),
            (Some(3), Some(10), Some(60))
        );
        let q = o.to_query();
        let again =
            LogOptions::from_pairs(q.split('&').map(|p| p.split_once('=').unwrap())).unwrap();
        assert_eq!(again, o);
        assert!(LogOptions::from_pairs([("tailLines", "-1")]).is_err());
        assert!(LogOptions::from_pairs([("follow", "maybe")]).is_err());
        assert_eq!(LogOptions::default().to_query(), "");
    }

    #[test]
    fn tail_since_and_timestamps() {
        let lines = vec![
            line("2026-01-01T00:00:01.000000000Z", true, "one"),
            line("2026-01-01T00:00:02.000000000Z", false, "tw"),
            line("2026-01-01T00:00:02.500000000Z", true, "o"),
            line("2026-01-01T00:00:03.000000000Z", true, "three"),
        ];
        let text = |ls: &[LogLine], ts: bool| String::from_utf8(render(ls, ts, &mut true)).unwrap();
        assert_eq!(text(&lines, false), "one\ntwo\nthree\n");
        let last2 = select(lines.clone(), None, Some(2));
        assert_eq!(text(&last2, false), "two\nthree\n");
        assert_eq!(text(&select(lines.clone(), None, Some(0)), false), "");
        assert_eq!(
            text(&select(lines.clone(), None, Some(9)), false),
            "one\ntwo\nthree\n"
        );
        let since = select(lines.clone(), Some("2026-01-01T00:00:02.600000000Z"), None);
        assert_eq!(text(&since, false), "three\n");
        assert_eq!(
            text(&last2, true),
            "2026-01-01T00:00:02.000000000Z two\n2026-01-01T00:00:03.000000000Z three\n"
        );
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn the_container_state_picks_the_file() {
        let running = pod(json!({"containerStatuses": [{
            "name": "c", "ready": true, "restartCount": 1, "image": "", "imageID": "",
            "containerID": "wasm://x",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1}},
        }]}));
        assert_eq!(
            source(&running, "c", false),
            Ok(Source::Current(Some("wasm://x".into())))
        );
        assert_eq!(source(&running, "c", true), Ok(Source::Previous));
        let (code, msg) = source(&running, "d", false).unwrap_err();
        assert_eq!(
            (code, msg.as_str()),
            (400, "container d is not valid for pod p")
        );

        let crashing = pod(json!({"containerStatuses": [{
            "name": "c", "ready": false, "restartCount": 2, "image": "", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 3}},
        }]}));
        assert_eq!(source(&crashing, "c", false), Ok(Source::Current(None)));
        assert_eq!(source(&crashing, "c", true), Ok(Source::Current(None)));

        let fresh = pod(json!({"containerStatuses": [{
            "name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"running": {}},
        }]}));
        let (code, msg) = source(&fresh, "c", true).unwrap_err();
        assert_eq!(code, 400);
        assert_eq!(
            msg,
            "previous terminated container \"c\" in pod \"p\" not found"
        );

        let pulling = pod(json!({"containerStatuses": [{
            "name": "c", "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"waiting": {"reason": "ErrImagePull"}},
        }]}));
        let (_, msg) = source(&pulling, "c", false).unwrap_err();
        assert!(
            msg.ends_with("is waiting to start: image can't be pulled"),
            "{msg}"
        );
        let (_, msg) = source(&pod(json!({})), "c", false).unwrap_err();
        assert!(
            msg.ends_with("is waiting to start: ContainerCreating"),
            "{msg}"
        );
    }
}
