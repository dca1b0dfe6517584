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

use std::path::{Path, PathBuf};

use http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::status::ApiError;

pub const TOKEN_PREFIX: &str = "skiff1";

pub struct JoinTokens {
    pki: PathBuf,
    secret: String,
}

impl JoinTokens {
    pub fn load_or_create(pki: &Path, ca_pem: &str) -> anyhow::Result<JoinTokens> {
        let path = pki.join("join.token");
        let hash = ca_hash(ca_pem);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let mut raw = [0u8; 24];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                    .map_err(|_| anyhow::anyhow!("no randomness for the join token"))?;
                let token = format!("{TOKEN_PREFIX}.{hash}.{}", hex::encode(raw));
                super::write_private(&path, format!("{token}\n").as_bytes())?;
                token
            }
        };
        let secret = match token.split('.').collect::<Vec<_>>().as_slice() {
            [TOKEN_PREFIX, h, secret] if *h == hash => secret.to_string(),
            _ => anyhow::bail!(
                "{} is not a join token for this cluster's CA: remove it to make a new one",
                path.display()
            ),
        };
        Ok(JoinTokens {
            pki: pki.to_path_buf(),
            secret,
        })
    }

    /// Issues a node certificate for a join request whose token is right.
    pub fn join(&self, body: &[u8]) -> Result<Value, ApiError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("join request: {e}")))?;
        let presented = req["token"].as_str().unwrap_or("");
        let secret = presented.rsplit('.').next().unwrap_or("");
        // Compared as digests: equal-length inputs, and timing reveals
        // nothing about the secret itself.
        if Sha256::digest(secret.as_bytes()) != Sha256::digest(self.secret.as_bytes()) {
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
