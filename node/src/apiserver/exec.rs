//! `/api/v1/namespaces/{ns}/pods/{name}/exec`: `kubectl exec` over
//! WebSocket, the protocol kubectl 1.30+ speaks first
//! (`v5.channel.k8s.io`, or `v4.channel.k8s.io`): every binary message
//! starts with its channel — 1 stdout, 2 stderr, 3 the final `Status`
//! (`Success`, or `Failure` with reason `NonZeroExitCode` and the code as
//! the `ExitCode` cause, which kubectl turns into its own exit code).
//!
//! The request is checked (RBAC `create` on `pods/exec`, the pod, the
//! container, a command) before any upgrade, so mistakes get a `Status`
//! with a 4xx as from Kubernetes. The command then runs on the agent of the
//! pod's node (its `/exec/...` endpoint, through the runtime's `exec`), and
//! its output is sent once it has finished: non-interactive exec. Standard
//! input and terminals (`-i`, `-t`) are refused with a message saying so;
//! SPDY, kubectl's fallback, is not spoken.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use skiff_sdk::registry::percent_encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handlers::{Target, percent_decode};
use super::logs::{KubeletClient, agent_error, agent_get, pod_and_container};
use super::status::ApiError;
use super::storage::Objects;
use super::{Body, full};

/// The channel protocols served, best first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// RFC 6455's key suffix.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{WS_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One unmasked server frame (FIN set).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A message on one of the exec channels.
fn message(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    frame(0x2, &m)
}

/// The `Status` kubectl expects on the error channel.
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

fn failure(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

fn header_str<'a>(req: &'a Request<Body>, name: header::HeaderName) -> &'a str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Every value of a repeated query parameter, in order.
fn query_all(req: &Request<Body>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k) == key).then(|| percent_decode(v))
        })
        .collect()
}

fn flag(q: &BTreeMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

pub async fn pod_exec(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    t: &Target,
    q: &BTreeMap<String, String>,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let (pod, container) = pod_and_container(objects, t, q).await?;
    let command = query_all(&req, "command");
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {}",
            pod["status"]["phase"].as_str().unwrap_or("")
        )));
    }
    let websocket = header_str(&req, header::UPGRADE).eq_ignore_ascii_case("websocket");
    let key = header_str(&req, header::SEC_WEBSOCKET_KEY).to_string();
    if !websocket || key.is_empty() {
        return Err(ApiError::bad_request(
            "skiff serves exec over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io); \
             SPDY is not supported: use kubectl 1.30 or newer",
        ));
    }
    let offered: Vec<String> = header_str(&req, header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(ApiError::bad_request(format!(
            "none of the WebSocket subprotocols {offered:?} is served; skiff speaks {PROTOCOLS:?}"
        )));
    };
    let outcome = if flag(q, "stdin") || flag(q, "tty") {
        Err(
            "skiff runs exec without standard input or a terminal for now: drop -i and -t \
             (kubectl exec POD -- COMMAND)"
                .to_string(),
        )
    } else {
        let encoded: Vec<String> = command
            .iter()
            .map(|c| format!("command={}", percent_encode(c)))
            .collect();
        let path = format!("/exec/{ns}/{name}/{container}?{}", encoded.join("&"));
        let resp = agent_get(objects, kubelet, agents, &pod, &path).await?;
        if resp.status() != StatusCode::OK {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            return Err(agent_error(node, resp).await);
        }
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            resp.into_body(),
            64 << 20,
        ))
        .await
        .map_err(|e| ApiError::internal(format!("reading the exec answer: {e}")))?
        .to_bytes();
        Ok(serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::internal(format!("the exec answer is not JSON: {e}")))?)
    };
    let (out, err) = (flag(q, "stdout"), flag(q, "stderr"));
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let mut io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("exec upgrade: {e}");
                return;
            }
        };
        let b64 = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap_or_default()
        };
        let mut frames = Vec::new();
        let status = match &outcome {
            Ok(answer) => {
                for (wanted, channel, field) in [(out, STDOUT, "stdout"), (err, STDERR, "stderr")] {
                    let data = b64(&answer[field]);
                    if wanted && !data.is_empty() {
                        frames.extend(message(channel, &data));
                    }
                }
                exit_status(answer["exitCode"].as_i64().unwrap_or(1) as i32)
            }
            Err(m) => failure(m),
        };
        frames.extend(message(ERROR, status.to_string().as_bytes()));
        frames.extend(frame(0x8, &1000u16.to_be_bytes()));
        if io.write_all(&frames).await.is_err() || io.flush().await.is_err() {
            return;
        }
        // Wait (briefly) for the client's close, then hang up.
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), io.read(&mut buf)).await;
        let _ = io.shutdown().await;
    });
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, "", Bytes::new());
    let h = resp.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::UPGRADE, "websocket".parse().expect("header"));
    h.insert(header::CONNECTION, "Upgrade".parse().expect("header"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        accept_key(&key).parse().expect("base64 is a header value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        protocol.parse().expect("header"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_key_is_rfc_6455s() {
        // The example in RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_carry_their_length() {
        assert_eq!(frame(0x2, b"ab"), [0x82, 2, b'a', b'b']);
        let f = frame(0x2, &[0; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = frame(0x2, &vec![0; 70_000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(message(STDERR, b"x"), [0x82, 2, 2, b'x']);
    }

    #[test]
    fn exit_codes_become_kubectls_status() {
        assert_eq!(exit_status(0)["status"], "Success");
        let s = exit_status(7);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "7");
        assert_eq!(percent_encode("echo a&b=c"), "echo%20a%26b%3Dc");
        assert_eq!(percent_decode(&percent_encode("ü /x")), "ü /x");
    }
}
