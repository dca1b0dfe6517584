//! UDP Service ports, as kube-proxy's userspace mode served them: one
//! socket per frontend; each client address is a flow with its own
//! connected socket to one endpoint (chosen as a TCP connection's would
//! be, affinity included), over which the endpoint's replies come back and
//! are sent to the client from the frontend's address. A flow idle for
//! [`FLOW_IDLE`] is forgotten; its next datagram picks an endpoint again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::UdpSocket;

use super::table::Frontend;
use super::{Shared, candidates, remember};

/// How long a flow lives without a datagram either way (conntrack's UDP
/// timeout).
pub const FLOW_IDLE: Duration = Duration::from_secs(30);
const MAX_DATAGRAM: usize = 65_535;

/// Binds a frontend's socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}

/// Serves `frontend` on `sock` until the task is aborted (its flows end
/// with it).
pub async fn serve(sock: UdpSocket, frontend: Frontend, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors of earlier sends surface here on Linux.
                tracing::debug!(frontend = %frontend.bind_addr(), "service proxy: udp: {e}");
                continue;
            }
        };
        let existing = flows.lock().get(&client).cloned();
        let up = match existing {
            Some(up) => up,
            None => {
                let route = shared.table.read().udp.get(&frontend).cloned();
                let Some(route) = route.filter(|r| !r.backends.is_empty()) else {
                    continue;
                };
                let Some((up, backend)) = open(&candidates(&route, client, &shared)).await else {
                    tracing::debug!(route = %route.name, "service proxy: udp: no endpoint");
                    continue;
                };
                remember(&route, client, backend, &shared);
                let up = Arc::new(up);
                flows.lock().insert(client, up.clone());
                tasks.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
                tasks.push(tokio::spawn(replies(
                    up.clone(),
                    sock.clone(),
                    client,
                    flows.clone(),
                )));
                up
            }
        };
        if let Err(e) = up.send(&buf[..n]).await {
            tracing::debug!(%client, "service proxy: udp send: {e}");
        }
    }
}

/// A socket connected to the first endpoint that takes one.
async fn open(candidates: &[SocketAddr]) -> Option<(UdpSocket, SocketAddr)> {
    for &backend in candidates {
        let any = match backend.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let Ok(s) = UdpSocket::bind(SocketAddr::new(any, 0)).await else {
            continue;
        };
        if s.connect(backend).await.is_ok() {
            return Some((s, backend));
        }
    }
    None
}

/// Sends an endpoint's replies to the client until the flow is idle.
async fn replies(
    up: Arc<UdpSocket>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(FLOW_IDLE, up.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = sock.send_to(&buf[..n], client).await;
            }
            // A refused datagram (ICMP) is not the end of the flow.
            Ok(Err(e)) => tracing::debug!(%client, "service proxy: udp reply: {e}"),
            Err(_) => break,
        }
    }
    let mut f = flows.lock();
    if f.get(&client).is_some_and(|u| Arc::ptr_eq(u, &up)) {
        f.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::proxy::table::{Route, Table};

    /// An endpoint that answers each datagram with its name and the data.
    async fn endpoint(name: &'static str) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = s.send_to(reply.as_bytes(), from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn datagrams_go_to_an_endpoint_per_client_and_replies_come_back() {
        let (a, b) = (endpoint("a").await, endpoint("b").await);
        let front = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = front.local_addr().unwrap();
        let frontend = Frontend::Cluster(addr);
        let shared = Arc::new(Shared::default());
        let mut table = Table::default();
        table.udp.insert(
            frontend,
            Arc::new(Route {
                name: "ns/dns:dns".into(),
                backends: vec![a, b],
                affinity: None,
            }),
        );
        *shared.table.write() = Arc::new(table);
        let server = tokio::spawn(serve(front, frontend, shared.clone()));
        let ask = |c: Arc<UdpSocket>, msg: &'static str| async move {
            c.send_to(msg.as_bytes(), addr).await.unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
                .await
                .expect("a reply")
                .unwrap();
            assert_eq!(from, addr, "replies come from the frontend's address");
            String::from_utf8_lossy(&buf[..n]).to_string()
        };
        let c1 = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let c2 = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let first = ask(c1.clone(), "1").await;
        let second = ask(c2.clone(), "2").await;
        // Round robin across clients, one endpoint per client's flow.
        let (n1, n2) = (&first[..1], &second[..1]);
        assert_ne!(n1, n2, "{first} {second}");
        assert_eq!(ask(c1.clone(), "3").await, format!("{n1}:3"));
        assert_eq!(ask(c2.clone(), "4").await, format!("{n2}:4"));
        server.abort();
    }
}
