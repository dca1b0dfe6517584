//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the pod's container log,
//! read from the agent of the node that runs it, as the API server reads
//! it from the kubelet.
//!
//! The API server checks the request (RBAC `get` on `pods/log`, the pod, the
//! container, the options), finds the Node's log endpoint in its status
//! (`daemonEndpoints.kubeletEndpoint.Port` at its InternalIP), connects
//! with mutual TLS — its own client certificate [`KUBELET_CLIENT`] from the
//! cluster CA, the agent's certificate checked against the CA and the node
//! name — and streams the agent's answer back. With `follow=true` the body
//! stays open and carries lines as they are written.
//!
//! An agent connected over QUIC (see [`super::quic`]) is asked on a stream
//! the API server opens on that connection instead: no connection to the
//! node's port is made, and a node with none open still serves logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_rustls::rustls::pki_types::ServerName;

pub use crate::agent::logs::KUBELET_CLIENT;
use crate::agent::logs::LogOptions;

use super::Body;
use super::handlers::{Target, parse_rfc3339};
use super::resources;
use super::status::{ApiError, Cause};
use super::storage::Objects;

/// How long connecting to an agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The API server's side of the agents' log endpoints: a TLS client
/// configuration with the API server's client certificate.
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl KubeletClient {
    /// Issues the client certificate from the CA in `pki` (in memory, at
    /// every start).
    pub fn new(pki: &Path) -> anyhow::Result<KubeletClient> {
        let ca = consensus::pki::ClusterCa::load(pki)?;
        let cert = ca.issue_for(KUBELET_CLIENT, &[], &[])?;
        let tls = consensus::pki::NodeTls {
            ca_pem: ca.cert_pem().to_string(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        };
        let mut cfg = tls.rustls_client_config()?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// `GET path` on the agent of `node` at `host:port`.
    async fn get(
        &self,
        node: &str,
        host: &str,
        port: u16,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let url = format!("https://{host}:{port}{path}");
        let fail = |e: &dyn std::fmt::Display| ApiError::internal(format!("Get \"{url}\": {e}"));
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| fail(&"dial timeout"))?
        .map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        // The agent's certificate must be valid for the node's name: an
        // address alone could be anyone's.
        let name = ServerName::try_from(node.to_string()).map_err(|e| fail(&e))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| fail(&e))?;
        get_over(TokioIo::new(tls), &format!("{node}:{port}"), path, headers)
            .await
            .map_err(|e| fail(&e))
    }
}

/// `GET path` on the agent of `node` over its QUIC connection.
async fn get_quic(
    conn: &quinn::Connection,
    node: &str,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let fail = |e: &dyn std::fmt::Display| {
        ApiError::internal(format!("Get \"{path}\" on node {node} (quic): {e}"))
    };
    let (send, recv) = tokio::time::timeout(CONNECT_TIMEOUT, conn.open_bi())
        .await
        .map_err(|_| fail(&"timed out opening a stream"))?
        .map_err(|e| fail(&e))?;
    get_over(
        skiff_sdk::client::quic::stream_io(send, recv),
        node,
        path,
        headers,
    )
    .await
    .map_err(|e| fail(&e))
}

/// One HTTP/1.1 `GET` over `io` (which may be upgraded, for exec).
async fn get_over<IO>(
    io: IO,
    host: &str,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("kubelet connection: {e}");
        }
    });
    let mut req = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    req.headers_mut()
        .extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(sender.send_request(req).await?)
}

/// The options of a log request, checked as Kubernetes checks
/// `PodLogOptions`.
fn options(name: &str, q: &BTreeMap<String, String>) -> Result<LogOptions, ApiError> {
    let mut causes = Vec::new();
    let int = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok());
    for (k, min) in [("tailLines", 0), ("limitBytes", 1), ("sinceSeconds", 1)] {
        if let Some(v) = int(k).filter(|v| *v < min) {
            let rule = if min == 0 {
                "must be greater than or equal to 0"
            } else {
                "must be greater than 0"
            };
            causes.push(Cause::invalid(k, format!("Invalid value: {v}: {rule}")));
        }
    }
    let since_time = q.get("sinceTime").filter(|t| !t.is_empty());
    if since_time.is_some() && q.contains_key("sinceSeconds") {
        causes.push(Cause::invalid(
            "sinceSeconds",
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", name, causes));
    }
    let mut opts = LogOptions::from_pairs(
        q.iter()
            .filter(|(k, _)| k.as_str() != "sinceTime")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(ApiError::bad_request)?;
    if let Some(t) = since_time {
        let at = parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(format!("sinceTime: {t:?} is not an RFC 3339 time"))
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        // Agents take seconds: a time in the future is "from now on".
        opts.since_seconds = Some((now - at).max(0) as u64);
    }
    Ok(opts)
}

/// Every container name of a pod, init containers first, as Kubernetes
/// lists them.
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| pod["spec"][list].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// The container a request reads: the one named, or the only one.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let all = container_names(pod);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let containers = pod["spec"]["containers"].as_array();
            match containers.map_or(0, Vec::len) {
                1 => Ok(containers
                    .and_then(|c| c[0]["name"].as_str())
                    .unwrap_or("")
                    .to_string()),
                0 => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// Where a Node's agent serves logs: (InternalIP or else Hostname, port).
fn endpoint(node: &Value) -> Option<(String, u16)> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    let addrs = node["status"]["addresses"].as_array()?;
    let find = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .and_then(|a| a["address"].as_str())
            .map(String::from)
    };
    let host = find("InternalIP").or_else(|| find("Hostname"))?;
    Some((host.trim_matches(['[', ']']).to_string(), port))
}

/// The pod a `pods/{name}/log|exec` request names, and its container
/// (the `container` parameter, checked as Kubernetes checks it).
pub(super) async fn pod_and_container(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<(Value, String), ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let pod = objects
        .get(&t.key_of())
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", name))?
        .object;
    let container = container(&pod, name, q.get("container").map(String::as_str))?;
    Ok((pod, container))
}

/// `GET path` on the agent of the node that runs `pod`: over its QUIC
/// connection, or else at the log endpoint in the Node's status.
pub(super) async fn agent_get(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    pod: &Value,
    path: &str,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let none = http::HeaderMap::new();
    agent_request(objects, kubelet, agents, pod, path, &none).await
}

/// [`agent_get`] with extra request headers (a WebSocket handshake's).
pub(super) async fn agent_request(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    pod: &Value,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = resources::find("", "v1", "nodes").expect("nodes served");
    let node = objects
        .get(&nodes.key(None, node_name))
        .await?
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?
        .object;
    match agents.get(node_name) {
        Some(conn) => get_quic(&conn, node_name, path, headers).await,
        None => {
            let (host, port) = endpoint(&node).ok_or_else(|| {
                ApiError::unavailable(format!(
                    "node {node_name:?} does not serve container logs (not connected over QUIC, and no kubelet endpoint in its status)"
                ))
            })?;
            let kubelet = kubelet.ok_or_else(|| {
                ApiError::unavailable(
                    "this API server has no client certificate for the nodes' log endpoints",
                )
            })?;
            kubelet.get(node_name, &host, port, path, headers).await
        }
    }
}

/// Serves `GET pods/{name}/log`; the caller has authorized `get` on
/// `pods/log`.
pub async fn pod_log(
    objects: &Objects,
    kubelet: Option<&KubeletClient>,
    agents: &super::quic::AgentLinks,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let (pod, container) = pod_and_container(objects, t, q).await?;
    let opts = options(name, q)?;
    let query = opts.to_query();
    let path = format!(
        "/containerLogs/{ns}/{name}/{container}{}{query}",
        if query.is_empty() { "" } else { "?" }
    );
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
    let resp = agent_get(objects, kubelet, agents, &pod, &path).await?;
    let status = resp.status();
    if status == StatusCode::OK {
        let body = resp.into_body().map_err(std::io::Error::other).boxed();
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .expect("valid response"));
    }
    Err(agent_error(&node_name, resp).await)
}

/// The agent's answer other than 200 as the API's error (the agent's
/// errors are short text, as the kubelet's).
pub(super) async fn agent_error(
    node_name: &str,
    resp: Response<hyper::body::Incoming>,
) -> ApiError {
    let status = resp.status();
    let text = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    match status.as_u16() {
        400 => ApiError::bad_request(text),
        404 => ApiError::new(404, "NotFound", text),
        code => ApiError::internal(format!(
            "the endpoint of node {node_name} answered {code}: {text}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_picked_as_kubernetes_does() {
        let pod = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}],
        }});
        assert_eq!(container(&pod, "p", Some("b")).unwrap(), "b");
        assert_eq!(container(&pod, "p", Some("init")).unwrap(), "init");
        let e = container(&pod, "p", None).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        let e = container(&pod, "p", Some("c")).unwrap_err();
        assert_eq!(e.message, "container c is not valid for pod p");
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container(&one, "p", Some("")).unwrap(), "only");
    }

    #[test]
    fn options_are_checked() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let o = options("p", &q(&[("tailLines", "2"), ("follow", "true")])).unwrap();
        assert_eq!((o.tail_lines, o.follow), (Some(2), true));
        let e = options("p", &q(&[("tailLines", "-1")])).unwrap_err();
        assert_eq!(e.code, 422, "{}", e.message);
        assert!(e.message.contains("tailLines"), "{}", e.message);
        let e = options("p", &q(&[("limitBytes", "0")])).unwrap_err();
        assert_eq!(e.code, 422, "{}", e.message);
        assert_eq!(options("p", &q(&[("follow", "x")])).unwrap_err().code, 400);
        let o = options("p", &q(&[("sinceTime", "2000-01-01T00:00:00Z")])).unwrap();
        assert!(o.since_seconds.unwrap() > 700_000_000);
    }

    #[test]
    fn the_endpoint_comes_from_the_node_status() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }});
        assert_eq!(endpoint(&node), Some(("127.0.0.1".into(), 10250)));
        assert_eq!(endpoint(&json!({"status": {}})), None);
    }
}
