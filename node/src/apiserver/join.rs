//! Joining a node: how `skiff agent --server URL --token T` gets its
//! identity, as k3s's node token does.
//!
//! The token is `skiff1.<sha256 of the cluster CA certificate>.<secret>`,
//! written to `DIR/pki/join.token` by the first start of the API server.
//! An agent first fetches the CA certificate from `GET /cacerts`
//! (unauthenticated, over TLS it cannot verify yet) and accepts it only if
//! its hash is the one in the token; from then on it verifies the server
//! against that CA and sends the secret to `POST /skiff/v1/join` with its
//! node name. The answer is a client certificate issued by the cluster CA
//! for `system:node:<name>` in group `system:nodes`, with which the agent
//! authenticates from then on (RBAC's `system:node` role applies) and which
//! its log endpoint presents (it is valid for the DNS name `<name>`).
//!
//! A control-plane member joins with `skiff server --join URL --token T`
//! and the *server* token (`DIR/pki/server.token`, same form, its own
//! secret: an agent's token does not make a control-plane member). It pins
//! the CA the same way, then `POST /skiff/v1/join-server` with its name and
//! peer URL: this member adds it to the store as a Raft learner and answers
//! the cluster's shared secrets (the CA and its key, the service-account
//! signing key, the secrets encryption key, the admin and join tokens) and
//! the member list. The new member starts its store against that list,
//! catches up from the leader's snapshot, and promotes itself to voter
//! (see `crate::join::join_server`).

use std::path::{Path, PathBuf};

use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::status::ApiError;

pub const TOKEN_PREFIX: &str = "skiff1";

pub struct JoinTokens {
    pki: PathBuf,
    secret: String,
    server_secret: String,
}

/// The files a new control-plane member takes from the cluster, in `pki/`.
pub const SHARED_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "sa.key",
    "secrets.key",
    "admin.token",
    "join.token",
    "server.token",
];

impl JoinTokens {
    pub fn load_or_create(pki: &Path, ca_pem: &str) -> anyhow::Result<JoinTokens> {
        Ok(JoinTokens {
            pki: pki.to_path_buf(),
            secret: token_secret(&pki.join("join.token"), ca_pem)?,
            server_secret: token_secret(&pki.join("server.token"), ca_pem)?,
        })
    }

    /// Adds a control-plane member whose server token is right: as a
    /// learner of the store, answering the cluster's shared files and its
    /// members.
    pub async fn join_server(
        &self,
        body: &[u8],
        store: &consensus::Store,
    ) -> Result<Value, ApiError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("join request: {e}")))?;
        if !secret_matches(req["token"].as_str().unwrap_or(""), &self.server_secret) {
            return Err(ApiError::unauthorized());
        }
        let name = req["name"].as_str().unwrap_or("");
        let peer = req["peer"].as_str().unwrap_or("");
        if name.is_empty() || peer.is_empty() || peer.contains('/') || !peer.contains(':') {
            return Err(ApiError::bad_request(format!(
                "join request: name {name:?} and peer host:port {peer:?} are required"
            )));
        }
        let url = format!("https://{peer}");
        let members = match store.member_add(vec![url.clone()], true).await {
            Ok((_, all)) => all,
            // Asked again (the first answer was lost): the member is there.
            Err(consensus::Error::PeerUrlExists) => store.members(),
            Err(e) => {
                return Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("adding member {name} at {peer}: {e}"),
                ));
            }
        };
        let mut files = serde_json::Map::new();
        for f in SHARED_FILES {
            let text = std::fs::read_to_string(self.pki.join(f)).map_err(|e| {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!("this member cannot share {f}: {e}"),
                )
            })?;
            files.insert((*f).to_string(), Value::String(text));
        }
        tracing::info!(%name, %peer, "added a control-plane member (learner)");
        Ok(json!({
            "files": files,
            "members": members.iter().map(|m| json!({
                "id": format!("{:x}", m.id),
                "name": m.name,
                "peer": m.peer_urls.first().map(|u| consensus::server::peer_addr(u)),
                "learner": m.is_learner,
            })).collect::<Vec<_>>(),
        }))
    }
}

/// Compared as digests: equal-length inputs, and timing reveals nothing
/// about the secret itself.
fn secret_matches(presented: &str, secret: &str) -> bool {
    let presented = presented.rsplit('.').next().unwrap_or("");
    Sha256::digest(presented.as_bytes()) == Sha256::digest(secret.as_bytes())
}

/// The secret of the token in `path` (made on first use), which must name
/// this cluster's CA.
fn token_secret(path: &Path, ca_pem: &str) -> anyhow::Result<String> {
    let hash = ca_hash(ca_pem);
    let token = match std::fs::read_to_string(path) {
        Ok(t) => t.trim().to_string(),
        Err(_) => {
            let mut raw = [0u8; 24];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| anyhow::anyhow!("no randomness for the join token"))?;
            let token = format!("{TOKEN_PREFIX}.{hash}.{}", hex::encode(raw));
            super::write_private(path, format!("{token}\n").as_bytes())?;
            token
        }
    };
    match token.split('.').collect::<Vec<_>>().as_slice() {
        [TOKEN_PREFIX, h, secret] if *h == hash => Ok(secret.to_string()),
        _ => anyhow::bail!(
            "{} is not a join token for this cluster's CA: remove it to make a new one",
            path.display()
        ),
    }
}

impl JoinTokens {
    /// Issues a node certificate for a join request whose token is right.
    pub fn join(&self, body: &[u8]) -> Result<Value, ApiError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("join request: {e}")))?;
        if !secret_matches(req["token"].as_str().unwrap_or(""), &self.secret) {
            return Err(ApiError::unauthorized());
        }
        let node = req["node"].as_str().unwrap_or("");
        if node.is_empty()
            || node.len() > 253
            || !node
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(ApiError::bad_request(format!(
                "join request: node name {node:?} must be a lowercase DNS subdomain"
            )));
        }
        let ca = consensus::pki::ClusterCa::load(&self.pki).map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("this member cannot issue node certificates: {e}"),
            )
        })?;
        // Valid for the node name too: the agent serves logs with it, and
        // the API server checks that name when it connects.
        let cert = ca
            .issue_for(
                &format!("system:node:{node}"),
                &["system:nodes"],
                &[node.to_string()],
            )
            .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
        tracing::info!(%node, "issued a node certificate");
        Ok(json!({
            "node": node,
            "certificate": cert.cert_pem,
            "key": cert.key_pem,
            "ca": ca.cert_pem(),
        }))
    }
}

pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

pub fn ok(v: &Value) -> http::Response<super::Body> {
    super::json(StatusCode::OK, v)
}
