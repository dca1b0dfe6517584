//! `GET /exec/{namespace}/{pod}/{container}?command=..&stdin=&stdout=
//! &stderr=&tty=`: a command in a running container, over WebSocket with
//! Kubernetes' channel protocol (see [`crate::websocket`]), as the kubelet
//! serves it. The API server checks the caller and passes the upgraded
//! connection through, so `kubectl exec` talks to this end.
//!
//! Container pods get a streaming session ([`OciRuntime::exec_session`]):
//! standard input as the client types it, output as the command writes it,
//! a terminal with `-t` that follows the client's window size. Wasm pods
//! run the command as a new instance of the container's module, whose
//! output is sent when it ends (WASI has neither a terminal nor an
//! interactive standard input here, so `-i` and `-t` are refused).
//!
//! The session ends with the command: its exit code goes to the client as
//! the `Status` on channel 3, then the connection closes. A client that goes
//! away first hangs the command up.
//!
//! `GET /attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`
//! is `kubectl attach` (and `kubectl run -i`): the container's output from
//! now on until it stops, and with `-i`/`-t` its own standard input and
//! terminal when its spec keeps them (`stdin`, `stdinOnce`, `tty`; see
//! [`oci_bridge::attach`]). A wasm guest's output is followed in its log;
//! it has no interactive input, so `-i` and `-t` are refused for it.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use oci_bridge::exec::{ExecOptions, ExecSession, Hangup};
use serde_json::{Value, json};
use skiff_sdk::runtime::{ContainerId, LogReader, LogStream, Runtime};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::logs::LogServer;
use crate::apiserver::{Body, full};
use crate::websocket::{self as ws, Message};

/// How long a wasm command may run (its output is sent whole).
const WASM_EXEC_TIMEOUT: Duration = Duration::from_secs(300);
/// The most of each stream of a wasm command that is kept.
const MAX_WASM_OUTPUT: usize = 16 << 20;
/// How often an attach looks for new output.
const ATTACH_POLL: Duration = Duration::from_millis(100);
/// The largest message a client may send (kubectl sends at most 32 KiB).
const MAX_CLIENT_MESSAGE: usize = 1 << 20;

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", message.into())
}

/// The query as kubectl sends it: `command` repeated, flags once.
struct Query {
    command: Vec<String>,
    flags: BTreeMap<String, bool>,
}

impl Query {
    fn parse(query: &str) -> Query {
        let mut q = Query {
            command: Vec::new(),
            flags: BTreeMap::new(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::apiserver::handlers::percent_decode(v);
            match k {
                "command" => q.command.push(v),
                _ => {
                    q.flags
                        .insert(k.to_string(), matches!(v.as_str(), "true" | "1"));
                }
            }
        }
        q
    }

    fn flag(&self, k: &str) -> bool {
        self.flags.get(k).copied().unwrap_or(false)
    }
}

/// The runtime's id of `container` in `pod`, if it is running.
// The error is the response to send, built once on a cold path.
#[allow(clippy::result_large_err)]
pub(super) fn running_container(pod: &Pod, container: &str) -> Result<String, Response<Body>> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.as_ref().and_then(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
            .find(|c| c.name == container)
    });
    status
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.split_once("://").map(|(_, id)| id.to_string()))
        .ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("container {container} is not running in pod {name}"),
            )
        })
}

/// Answers the handshake and runs `session` on the upgraded connection.
fn serve(
    req: Request<Incoming>,
    key: &str,
    protocol: &'static str,
    q: &Query,
    session: ExecSession,
) -> Response<Body> {
    let streams = Streams {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        v5: protocol == "v5.channel.k8s.io",
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => run(TokioIo::new(io), session, streams).await,
            Err(e) => {
                tracing::debug!("exec upgrade: {e}");
                session.hangup.hang_up();
            }
        }
    });
    ws::switching_protocols(key, protocol)
}

/// A checked exec or attach request.
struct Prepared {
    pod: std::sync::Arc<Pod>,
    q: Query,
    key: String,
    protocol: &'static str,
    id: String,
}

impl LogServer {
    /// What exec and attach both check first: the pod, the handshake,
    /// the container running.
    #[allow(clippy::result_large_err)]
    fn prepare(
        &self,
        req: &Request<Incoming>,
        [ns, pod_name, container]: [&str; 3],
        what: &str,
    ) -> Result<Prepared, Response<Body>> {
        let Some(pod) = self.pods.get_in(Some(ns), pod_name) else {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("pod \"{ns}/{pod_name}\" not found"),
            ));
        };
        let q = Query::parse(req.uri().query().unwrap_or(""));
        let (key, protocol) =
            ws::handshake(req.headers(), what).map_err(|m| text(StatusCode::BAD_REQUEST, m))?;
        let id = running_container(&pod, container)?;
        Ok(Prepared {
            pod,
            q,
            key,
            protocol,
            id,
        })
    }

    pub(super) async fn exec(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod_name: &str,
        container: &str,
    ) -> Response<Body> {
        let Prepared {
            pod,
            q,
            key,
            protocol,
            id,
        } = match self.prepare(&req, [ns, pod_name, container], "exec") {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        if q.command.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "you must specify at least 1 command",
            );
        }
        let id = ContainerId::new(id);
        let opts = ExecOptions {
            stdin: q.flag("stdin"),
            tty: q.flag("tty"),
        };
        let session = match (&self.oci, super::worker::is_wasm(&pod)) {
            (Some(oci), false) => oci.exec_session(&id, q.command.clone(), opts).await,
            _ if opts.stdin || opts.tty => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "a wasm container runs exec without standard input or a terminal: \
                     drop -i and -t (kubectl exec POD -- COMMAND)",
                );
            }
            _ => Ok(wasm_session(self.wasm.clone(), id, q.command.clone())),
        };
        match session {
            Ok(s) => serve(req, &key, protocol, &q, s),
            Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    pub(super) async fn attach(
        &self,
        req: Request<Incoming>,
        ns: &str,
        pod_name: &str,
        container: &str,
    ) -> Response<Body> {
        let Prepared {
            pod,
            q,
            key,
            protocol,
            id,
        } = match self.prepare(&req, [ns, pod_name, container], "attach") {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let opts = ExecOptions {
            stdin: q.flag("stdin"),
            tty: q.flag("tty"),
        };
        if let (Some(oci), false) = (&self.oci, super::worker::is_wasm(&pod)) {
            return match oci.attach_session(&ContainerId::new(id), opts).await {
                Ok(s) => serve(req, &key, protocol, &q, s),
                Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
            };
        }
        if opts.stdin || opts.tty {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container} is a wasm guest, which has no interactive standard \
                     input or terminal: kubectl attach without -i and -t streams its output"
                ),
            );
        }
        let path = super::log_path(&self.data_dir, ns, pod_name, container);
        let session = attach_session(
            self.pods.clone(),
            path,
            [ns, pod_name, container].map(str::to_string),
            id,
        );
        serve(req, &key, protocol, &q, session)
    }
}

/// The output of a running wasm container from now on, read from its log as
/// it grows, until that instance stops (exit code 0: the attach ended well).
fn attach_session(
    pods: std::sync::Arc<skiff_sdk::client::informer::Store<Pod>>,
    path: std::path::PathBuf,
    [ns, pod, container]: [String; 3],
    id: String,
) -> ExecSession {
    let (output_tx, output) = mpsc::channel(16);
    let (exit_tx, exit) = oneshot::channel();
    let (hangup_tx, mut hangup_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut reader = LogReader::open(&path);
        // What was written before the attach is `kubectl logs`' business.
        let _ = reader.read_new();
        let full_id = format!("://{id}");
        loop {
            tokio::select! {
                () = tokio::time::sleep(ATTACH_POLL) => {}
                _ = &mut hangup_rx => return,
            }
            // Read after the check, so the last read sees all it wrote.
            let running = pods.get_in(Some(ns.as_str()), &pod).is_some_and(|p| {
                matches!(
                    super::logs::source(&p, &container, false),
                    Ok(super::logs::Source::Current(Some(c))) if c.ends_with(&full_id)
                )
            });
            for line in reader.read_new().unwrap_or_default() {
                let stream = match line.stream {
                    LogStream::Stdout => ws::STDOUT,
                    LogStream::Stderr => ws::STDERR,
                };
                let mut data = line.text.into_bytes();
                if line.full {
                    data.push(b'\n');
                }
                if output_tx.send((stream, data)).await.is_err() {
                    return;
                }
            }
            if !running {
                break;
            }
        }
        drop(output_tx);
        let _ = exit_tx.send(0);
    });
    ExecSession {
        stdin: None,
        output,
        terminal: None,
        exit,
        hangup: Hangup::new(hangup_tx),
    }
}

/// A wasm command run whole through [`Runtime::exec`], as a session.
fn wasm_session(
    rt: std::sync::Arc<dyn Runtime>,
    id: ContainerId,
    command: Vec<String>,
) -> ExecSession {
    let (output_tx, output) = mpsc::channel(4);
    let (exit_tx, exit) = oneshot::channel();
    let (hangup_tx, hangup_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let ran = tokio::select! {
            r = tokio::time::timeout(WASM_EXEC_TIMEOUT, rt.exec(&id, command)) => r,
            Ok(()) = hangup_rx => return,
        };
        let code = match ran {
            Ok(Ok(out)) => {
                for (stream, data) in [(ws::STDOUT, out.stdout), (ws::STDERR, out.stderr)] {
                    if !data.is_empty() {
                        let keep = data.len().min(MAX_WASM_OUTPUT);
                        let _ = output_tx.send((stream, data[..keep].to_vec())).await;
                    }
                }
                out.exit_code
            }
            Ok(Err(e)) => {
                let _ = output_tx
                    .send((ws::STDERR, format!("{e}\n").into_bytes()))
                    .await;
                126
            }
            Err(_) => {
                let message = format!(
                    "the command did not finish within {}s\n",
                    WASM_EXEC_TIMEOUT.as_secs()
                );
                let _ = output_tx.send((ws::STDERR, message.into_bytes())).await;
                124
            }
        };
        drop(output_tx);
        let _ = exit_tx.send(code);
    });
    ExecSession {
        stdin: None,
        output,
        terminal: None,
        exit,
        hangup: Hangup::new(hangup_tx),
    }
}

/// Which output the client asked for, and whether it speaks v5.
struct Streams {
    stdout: bool,
    stderr: bool,
    v5: bool,
}

/// The `Status` kubectl expects on the error channel for an exit code.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// Pumps a session over an upgraded connection until the command ends (or
/// the client goes away, which hangs it up).
async fn run<IO>(io: IO, session: ExecSession, streams: Streams)
where
    IO: tokio::io::AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let ExecSession {
        stdin,
        mut output,
        terminal,
        exit,
        hangup,
    } = session;
    // Everything written goes through one task: output, pongs, the end.
    let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
            // Let the next frames gather before a flush.
            if frames.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let out_tx = frames_tx.clone();
    let sender = tokio::spawn(async move {
        while let Some((stream, data)) = output.recv().await {
            let wanted = match stream {
                ws::STDOUT => streams.stdout,
                _ => streams.stderr,
            };
            if wanted && out_tx.send(ws::message(stream, &data)).await.is_err() {
                break;
            }
        }
        let code = exit.await.unwrap_or(1);
        let status = exit_status(code).to_string();
        let _ = out_tx.send(ws::message(ws::ERROR, status.as_bytes())).await;
        let _ = out_tx.send(ws::close(1000)).await;
    });
    let reader = async {
        let mut stdin = stdin;
        let mut messages = ws::MessageReader::default();
        loop {
            let m = match messages.next(&mut rd, MAX_CLIENT_MESSAGE).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return,
            };
            match m {
                Message {
                    opcode: ws::OP_CLOSE,
                    ..
                } => return,
                Message {
                    opcode: ws::OP_PING,
                    data,
                } => {
                    let _ = frames_tx.send(ws::frame(ws::OP_PONG, &data)).await;
                }
                Message { data, .. } if !data.is_empty() => match data[0] {
                    ws::STDIN => {
                        if let Some(w) = stdin.as_mut()
                            && (w.write_all(&data[1..]).await.is_err() || w.flush().await.is_err())
                        {
                            stdin = None;
                        }
                    }
                    ws::RESIZE => {
                        let size: Value = serde_json::from_slice(&data[1..]).unwrap_or_default();
                        if let (Some(t), Some(w), Some(h)) =
                            (&terminal, size["Width"].as_u64(), size["Height"].as_u64())
                        {
                            let _ = t.resize(
                                w.min(u16::MAX as u64) as u16,
                                h.min(u16::MAX as u64) as u16,
                            );
                        }
                    }
                    ws::CLOSE if streams.v5 && data.get(1) == Some(&ws::STDIN) => {
                        // End of file on standard input.
                        if let Some(mut w) = stdin.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    };
    let mut sender = sender;
    let ended = tokio::select! {
        () = reader => false,
        _ = &mut sender => true,
    };
    if !ended {
        // The client is gone or closed first: hang the command up; its end
        // then finishes the sender.
        hangup.hang_up();
        let _ = sender.await;
    }
    drop(frames_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_exit_codes_read_as_kubectl_means_them() {
        let q =
            Query::parse("command=sh&command=-c&command=echo%20a%26b&stdin=true&tty=0&stdout=1");
        assert_eq!(q.command, ["sh", "-c", "echo a&b"]);
        assert!(q.flag("stdin") && q.flag("stdout") && !q.flag("tty") && !q.flag("stderr"));
        assert_eq!(exit_status(0)["status"], "Success");
        let s = exit_status(7);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "7");
    }
}
