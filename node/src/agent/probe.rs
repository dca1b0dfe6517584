//! Probes, as the kubelet runs them: `httpGet` (a 2xx or 3xx answer
//! passes), `tcpSocket` (a connection passes) and `exec` (exit 0 passes,
//! through the runtime's exec; a runtime or container that cannot exec
//! fails the probe saying so), each with its initial delay, period, timeout
//! and thresholds. One task per probe sends every result to the pod's
//! worker, which counts them ([`Counter`]) and acts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_sdk::runtime::{ContainerId, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    /// As the kubelet's events say it (`Liveness probe failed: ...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Http {
        addr: SocketAddr,
        host: String,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp(SocketAddr),
    Exec(Vec<String>),
    /// A probe this node cannot run; every attempt fails with this message.
    Unsupported(String),
}

/// A probe of one container, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of a liveness or startup probe.
    pub grace: Option<Duration>,
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(min) as u64)
}

/// A container port by number or name.
fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// The container's probes; addresses without a host are the pod's IP.
pub fn specs(c: &Container, pod_ip: Option<IpAddr>) -> Vec<Spec> {
    let ip = pod_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut out = Vec::new();
    for (kind, probe) in [
        (Kind::Startup, &c.startup_probe),
        (Kind::Liveness, &c.liveness_probe),
        (Kind::Readiness, &c.readiness_probe),
    ] {
        let Some(p) = probe else { continue };
        out.push(Spec {
            kind,
            action: action(c, p, ip),
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            // Liveness and startup need one success, whatever is written.
            success_threshold: match kind {
                Kind::Readiness => p.success_threshold.unwrap_or(1).max(1) as u32,
                _ => 1,
            },
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
            grace: p
                .termination_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64)),
        });
    }
    out
}

fn action(c: &Container, p: &Probe, ip: IpAddr) -> Action {
    let host = |h: &Option<String>| -> Result<IpAddr, String> {
        match h.as_deref().filter(|h| !h.is_empty()) {
            None => Ok(ip),
            Some(h) => h
                .parse()
                .map_err(|_| format!("probe host {h:?} is not an IP address")),
        }
    };
    let result = if let Some(h) = &p.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            Err("HTTPS probes are not supported on this node".to_string())
        } else {
            host(&h.host).and_then(|ip| {
                let port = port(c, &h.port)?;
                let headers: Vec<(String, String)> = h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                let host = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                    .map_or_else(|| format!("{ip}:{port}"), |(_, v)| v.clone());
                Ok(Action::Http {
                    addr: SocketAddr::new(ip, port),
                    host,
                    path: h
                        .path
                        .clone()
                        .filter(|p| p.starts_with('/'))
                        .unwrap_or_else(|| "/".into()),
                    headers,
                })
            })
        }
    } else if let Some(t) = &p.tcp_socket {
        host(&t.host).and_then(|ip| Ok(Action::Tcp(SocketAddr::new(ip, port(c, &t.port)?))))
    } else if let Some(e) = &p.exec {
        Ok(Action::Exec(e.command.clone().unwrap_or_default()))
    } else if p.grpc.is_some() {
        Err("gRPC probes are not supported on this node".to_string())
    } else {
        Err("the probe has no handler (httpGet, tcpSocket or exec)".to_string())
    };
    result.unwrap_or_else(Action::Unsupported)
}

/// Runs the probe once: `Ok` if it passed, else what went wrong.
pub async fn run_once(
    action: &Action,
    runtime: &dyn Runtime,
    id: &ContainerId,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        Action::Http {
            addr,
            host,
            path,
            headers,
        } => {
            let url = format!("http://{addr}{path}");
            match tokio::time::timeout(timeout, http_get(*addr, host, path, headers)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
                Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
                Err(_) => Err(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while \
                     awaiting headers)"
                )),
            }
        }
        Action::Tcp(addr) => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {e}")),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Action::Exec(argv) => {
            let shown = argv.join(" ");
            match tokio::time::timeout(timeout, runtime.exec(id, argv.clone())).await {
                Ok(Ok(out)) if out.exit_code == 0 => Ok(()),
                Ok(Ok(out)) => {
                    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                    Err(format!(
                        "command {shown:?} exited with {}: {}",
                        out.exit_code,
                        text.trim()
                    ))
                }
                Ok(Err(e)) => Err(format!("exec probe {shown:?}: {e}")),
                Err(_) => Err(format!("command {shown:?} timed out after {timeout:?}")),
            }
        }
        Action::Unsupported(m) => Err(m.clone()),
    }
}

/// A minimal HTTP/1.1 GET: the status code of the answer.
async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

/// One probe result for the worker.
#[derive(Debug)]
pub struct Outcome {
    pub container: String,
    /// The run it is about: results for an earlier run are ignored.
    pub id: ContainerId,
    pub kind: Kind,
    pub result: Result<(), String>,
}

/// Probes `id` until aborted. Liveness and readiness wait for `started`
/// (the startup probe's success); the startup probe ends with its first
/// success.
pub fn spawn(
    spec: Spec,
    container: String,
    id: ContainerId,
    runtime: Arc<dyn Runtime>,
    started: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Outcome>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(spec.initial_delay).await;
        loop {
            if spec.kind == Kind::Startup || started.load(Ordering::SeqCst) {
                let result = run_once(&spec.action, runtime.as_ref(), &id, spec.timeout).await;
                let passed = result.is_ok();
                let sent = tx.send(Outcome {
                    container: container.clone(),
                    id: id.clone(),
                    kind: spec.kind,
                    result,
                });
                if sent.is_err() || (spec.kind == Kind::Startup && passed) {
                    return;
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    })
}

/// What a result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The probe now passes (reached its success threshold).
    Passed,
    /// The probe now fails (reached its failure threshold).
    Failed,
    /// No change.
    Same,
}

/// Consecutive results of one probe against its thresholds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    successes: u32,
    failures: u32,
    passing: Option<bool>,
}

impl Counter {
    pub fn record(&mut self, ok: bool, success_threshold: u32, failure_threshold: u32) -> Verdict {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= success_threshold && self.passing != Some(true) {
                self.passing = Some(true);
                return Verdict::Passed;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= failure_threshold && self.passing != Some(false) {
                self.passing = Some(false);
                return Verdict::Failed;
            }
        }
        Verdict::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_consecutive_results() {
        let mut c = Counter::default();
        assert_eq!(c.record(false, 1, 3), Verdict::Same);
        assert_eq!(c.record(false, 1, 3), Verdict::Same);
        assert_eq!(c.record(true, 1, 3), Verdict::Passed);
        assert_eq!(c.record(false, 1, 3), Verdict::Same);
        assert_eq!(c.record(false, 1, 3), Verdict::Same);
        assert_eq!(c.record(false, 1, 3), Verdict::Failed);
        assert_eq!(c.record(false, 1, 3), Verdict::Same);
        let mut r = Counter::default();
        assert_eq!(r.record(true, 2, 1), Verdict::Same);
        assert_eq!(r.record(true, 2, 1), Verdict::Passed);
    }

    #[test]
    fn specs_default_as_kubernetes_and_resolve_named_ports() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
            "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 2, "successThreshold": 2},
            "startupProbe": {"grpc": {"port": 1}},
        }))
        .unwrap();
        let s = specs(&c, Some("127.42.1.2".parse().unwrap()));
        assert_eq!(s.len(), 3);
        assert!(matches!(&s[0].action, Action::Unsupported(m) if m.contains("gRPC")));
        assert_eq!(
            s[1].action,
            Action::Http {
                addr: "127.42.1.2:8080".parse().unwrap(),
                host: "127.42.1.2:8080".into(),
                path: "/healthz".into(),
                headers: vec![],
            }
        );
        assert_eq!(
            (s[1].period, s[1].timeout, s[1].failure_threshold),
            (Duration::from_secs(10), Duration::from_secs(1), 3)
        );
        assert_eq!(s[2].action, Action::Tcp("127.42.1.2:9000".parse().unwrap()));
        assert_eq!(
            (s[2].period, s[2].success_threshold),
            (Duration::from_secs(2), 2)
        );
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let code = if req.starts_with("GET /ok ") {
                    200
                } else {
                    500
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let rt = wasm_shim::WasmRuntime::new(wasm_shim::RuntimeConfig::new(
            tempfile::tempdir().unwrap().path(),
        ))
        .unwrap();
        let id = ContainerId::new("x");
        let http = |path: &str| Action::Http {
            addr,
            host: addr.to_string(),
            path: path.into(),
            headers: vec![],
        };
        let t = Duration::from_secs(2);
        assert_eq!(run_once(&http("/ok"), &rt, &id, t).await, Ok(()));
        assert_eq!(
            run_once(&http("/bad"), &rt, &id, t).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(run_once(&Action::Tcp(addr), &rt, &id, t).await, Ok(()));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let err = run_once(&Action::Tcp(gone), &rt, &id, t).await.unwrap_err();
        assert!(
            err.starts_with(&format!("dial tcp {gone}: connect:")),
            "{err}"
        );
        let err = run_once(&Action::Exec(vec!["true".into()]), &rt, &id, t)
            .await
            .unwrap_err();
        assert!(err.contains("not found"), "{err}");
    }
}
