//! The control plane's end of the agents' QUIC connections (the agent's end
//! is `skiff_sdk::client::quic`).
//!
//! QUIC listens on the API server's port number over UDP, with mutual TLS:
//! a client must present a certificate from the cluster CA, and that
//! certificate is its identity (a joined node is `system:node:<name>`).
//! Each bidirectional stream an agent opens carries one HTTP/1.1 exchange,
//! served by the same handler as HTTPS: authorization, admission and
//! validation do not depend on the transport.
//!
//! The connection also runs the other way: the API server opens streams to
//! a node's agent to read container logs ([`AgentLinks`]), so an agent
//! behind NAT, or with no port open, still serves `kubectl logs`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use skiff_sdk::client::quic as q;
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::ApiServer;
use super::auth::{self, User};

/// The live QUIC connection of each node's agent, by node name.
#[derive(Default)]
pub struct AgentLinks {
    conns: Mutex<HashMap<String, quinn::Connection>>,
}

impl AgentLinks {
    /// The connection of `node`'s agent, if it has one open to this server.
    pub fn get(&self, node: &str) -> Option<quinn::Connection> {
        self.conns
            .lock()
            .get(node)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    fn register(&self, node: &str, conn: &quinn::Connection) {
        if let Some(old) = self.conns.lock().insert(node.to_string(), conn.clone())
            && old.stable_id() != conn.stable_id()
        {
            // An agent that restarted: its old connection has no one left.
            old.close(quinn::VarInt::from_u32(0), b"replaced");
        }
    }

    fn unregister(&self, node: &str, conn: &quinn::Connection) {
        let mut conns = self.conns.lock();
        if conns.get(node).map(quinn::Connection::stable_id) == Some(conn.stable_id()) {
            conns.remove(node);
        }
    }
}

/// The identity in the client certificate of a QUIC connection.
fn peer_user(conn: &quinn::Connection) -> Option<User> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    auth::user_from_cert(certs.first()?)
}

impl ApiServer {
    /// Serves the agents' QUIC connections on `socket` until `shutdown`
    /// resolves.
    pub async fn serve_quic(
        self: Arc<Self>,
        socket: std::net::UdpSocket,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        // The same certificate as HTTPS: agents dial the same host name.
        let tls = self.serving.rustls_server_config(true)?;
        let endpoint = q::server_endpoint(tls, q::ALPN, q::transport_config(), socket)?;
        tracing::info!(listen = %endpoint.local_addr()?, "agent connections listening (quic)");
        q::accept_until(endpoint, shutdown, "quic", move |conn| {
            self.clone().serve_connection(conn)
        })
        .await;
        Ok(())
    }

    async fn serve_connection(self: Arc<Self>, conn: quinn::Connection) {
        // The handshake required a certificate from the CA; one without a
        // name in it is still no one.
        let Some(user) = peer_user(&conn) else {
            conn.close(
                quinn::VarInt::from_u32(1),
                b"no identity in the certificate",
            );
            return;
        };
        let node = user.name.strip_prefix("system:node:").map(str::to_string);
        if let Some(node) = &node {
            self.agents.register(node, &conn);
            tracing::info!(%node, remote = %conn.remote_address(), "agent connected (quic)");
        }
        let closed = loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => break e,
            };
            let (server, user) = (self.clone(), user.clone());
            q::spawn_serve(send, recv, "quic stream", move |req| {
                let (server, user) = (server.clone(), user.clone());
                async move { server.handle(req, Some(user)).await }
            });
        };
        if let Some(node) = &node {
            self.agents.unregister(node, &conn);
            tracing::info!(%node, "agent disconnected (quic): {closed}");
        }
    }
}
