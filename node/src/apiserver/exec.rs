//! `/api/v1/namespaces/{ns}/pods/{name}/exec`: `kubectl exec` over
//! WebSocket, the protocol kubectl 1.30+ speaks first (`v5.channel.k8s.io`,
//! or `v4.channel.k8s.io`; see [`crate::websocket`]).
//!
//! As the real API server does with the kubelet, this end checks the
//! request (RBAC `create` on `pods/exec` was checked by the router; here the
//! pod, the container, a command, the protocol) before any upgrade, so
//! mistakes get a Kubernetes `Status` with a 4xx. It then makes the same
//! WebSocket handshake with the agent of the pod's node (over its QUIC
//! connection, or its HTTPS endpoint), and once the agent has switched
//! protocols, answers the client's handshake and joins the two upgraded
//! connections byte for byte: the agent runs the session
//! (`agent/exec.rs`). SPDY, kubectl's fallback, is not spoken.
//!
//! `pods/{name}/attach` (`kubectl attach`) goes the same way.

use std::collections::BTreeMap;

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_sdk::registry::percent_encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::handlers::{Target, percent_decode};
use super::logs::{KubeletClient, agent_error, agent_request, pod_and_container};
use super::status::ApiError;
use super::storage::Objects;
use super::{Body, full};
use crate::websocket as ws;

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

/// `pods/{name}/exec` and `pods/{name}/attach` (the target's subresource):
/// the checks Kubernetes makes, then the agent's `/exec/...` or
/// `/attach/...` through [`proxy_upgrade`].
pub async fn pod_stream(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    t: &Target,
    q: &BTreeMap<String, String>,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let sub = t.sub.as_deref().unwrap_or("exec");
    let (pod, container) = pod_and_container(objects, t, q).await?;
    let command = query_all(&req, "command");
    if sub == "exec" && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        let verb = if sub == "exec" {
            "exec into"
        } else {
            "attach to"
        };
        return Err(ApiError::bad_request(format!(
            "cannot {verb} a container in a completed pod; current phase is {phase}"
        )));
    }
    // Refused before any upgrade, with a message saying what we speak.
    ws::handshake(req.headers(), sub).map_err(ApiError::bad_request)?;
    let mut query: Vec<String> = command
        .iter()
        .map(|c| format!("command={}", percent_encode(c)))
        .collect();
    query.extend(
        ["stdin", "stdout", "stderr", "tty"]
            .iter()
            .filter_map(|f| q.get(*f).map(|v| format!("{f}={}", percent_encode(v)))),
    );
    let path = format!("/{sub}/{ns}/{name}/{container}?{}", query.join("&"));
    proxy_upgrade(
        objects,
        kubelet,
        agents,
        &pod,
        &path,
        req,
        Refusal::OnErrorChannel,
    )
    .await
}

/// `pods/{name}/portforward`: the agent's `/portForward/...`, whose
/// session (SPDY, in WebSocket or on the connection) is passed through.
pub async fn port_forward(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    t: &Target,
    req: Request<Body>,
) -> Result<Response<Body>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let pod = objects
        .get(&t.key_of())
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?
        .object;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::bad_request(format!(
            "unable to forward port because pod is not running. Current status={phase}"
        )));
    }
    let path = format!("/portForward/{ns}/{name}");
    proxy_upgrade(
        objects,
        kubelet,
        agents,
        &pod,
        &path,
        req,
        Refusal::AsStatus,
    )
    .await
}

/// What the client gets when the agent refuses the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A WebSocket with the Status on its error channel (exec, attach:
    /// an answer before the upgrade would send kubectl to SPDY).
    OnErrorChannel,
    /// The Status as the answer (port-forward, which speaks SPDY too).
    AsStatus,
}

/// The upgrade headers passed to the agent and back.
const UPGRADE_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Makes the client's WebSocket handshake with the agent at `path`, then
/// answers the client with the agent's `101` and joins the connections.
pub async fn proxy_upgrade(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    pod: &Value,
    path: &str,
    req: Request<Body>,
    refusal: Refusal,
) -> Result<Response<Body>, ApiError> {
    let mut headers = HeaderMap::new();
    for h in UPGRADE_HEADERS {
        if let Some(v) = req.headers().get(h) {
            headers.insert(h, v.clone());
        }
    }
    let agent = agent_request(objects, kubelet, agents, pod, path, &headers).await?;
    if agent.status() != StatusCode::SWITCHING_PROTOCOLS {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        let error = agent_error(node, agent).await;
        return match refusal {
            Refusal::AsStatus => Err(error),
            // What the agent refused (a command that cannot run there)
            // goes on the error channel, as the kubelet reports runtime
            // errors.
            Refusal::OnErrorChannel => Ok(upgrade_with_status(req, error.to_status())),
        };
    }
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, "", bytes::Bytes::new());
    resp.headers_mut().remove(header::CONTENT_TYPE);
    for h in [
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "x-stream-protocol-version",
    ] {
        if let Some(v) = agent.headers().get(h) {
            resp.headers_mut().insert(h, v.clone());
        }
    }
    let client = hyper::upgrade::on(req);
    let agent = hyper::upgrade::on(agent);
    tokio::spawn(async move {
        let (client, agent) = match tokio::join!(client, agent) {
            (Ok(c), Ok(a)) => (c, a),
            (c, a) => {
                tracing::debug!(client = ?c.err(), agent = ?a.err(), "exec upgrade failed");
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!("exec stream: {e}");
        }
    });
    Ok(resp)
}

/// Switches the client to WebSocket only to send `status` on the error
/// channel and close.
fn upgrade_with_status(req: Request<Body>, status: Value) -> Response<Body> {
    // The handshake was checked before the agent was asked.
    let (key, protocol) =
        ws::handshake(req.headers(), "exec").unwrap_or_else(|_| (String::new(), ws::PROTOCOLS[0]));
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(io) = upgrade.await else { return };
        let mut io = TokioIo::new(io);
        let mut frames = ws::message(ws::ERROR, status.to_string().as_bytes());
        frames.extend(ws::close(1000));
        if io.write_all(&frames).await.is_ok() && io.flush().await.is_ok() {
            // The client answers the close; then hang up.
            let mut buf = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), io.read(&mut buf)).await;
        }
        let _ = io.shutdown().await;
    });
    ws::switching_protocols(&key, protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_trip_to_the_agent() {
        assert_eq!(percent_encode("echo a&b=c"), "echo%20a%26b%3Dc");
        assert_eq!(percent_decode(&percent_encode("ü /x")), "ü /x");
    }
}
