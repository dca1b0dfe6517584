//! UDP Service ports, as kube-proxy's userspace mode served them: one
//! socket per frontend; each client address is a flow with its own
//! connected socket to one endpoint (chosen as a TCP connection's would
//! be, affinity included), over which the endpoint's replies come back and
//! are sent to the client from the frontend's address. A flow to an
//! endpoint on another host is a stream through that node's tunnel, its
//! datagrams framed ([`tunnel::write_frame`]). A flow idle for
//! [`FLOW_IDLE`] is forgotten; its next datagram picks an endpoint again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UdpSocket;

use super::table::{Endpoint, Frontend, Via};
use super::tunnel::{self, Proto};
use super::{DIAL_TIMEOUT, Shared, candidates, remember};

/// How long a flow lives without a datagram either way (conntrack's UDP
/// timeout).
pub const FLOW_IDLE: Duration = Duration::from_secs(30);
const MAX_DATAGRAM: usize = 65_535;

/// Where a flow's datagrams go.
enum Up {
    /// A socket connected to the endpoint.
    Socket(UdpSocket),
    /// A stream through the endpoint's node tunnel.
    Tunnel(tokio::sync::Mutex<WriteHalf<tunnel::Stream>>),
}

impl Up {
    async fn send(&self, d: &[u8]) -> std::io::Result<()> {
        match self {
            Up::Socket(s) => s.send(d).await.map(drop),
            Up::Tunnel(w) => tunnel::write_frame(&mut *w.lock().await, d).await,
        }
    }
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Up>>>>;

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
    let flows: Flows = Arc::default();
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
                let candidates = candidates(&route, client, &shared);
                let Some((up, down, backend)) = open(&candidates, &shared).await else {
                    tracing::debug!(route = %route.name, "service proxy: udp: no endpoint");
                    continue;
                };
                remember(&route, client, backend, &shared);
                let up = Arc::new(up);
                flows.lock().insert(client, up.clone());
                tasks.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
                tasks.push(tokio::spawn(replies(
                    up.clone(),
                    down,
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

/// A flow to the first endpoint that takes one: where its datagrams go,
/// and, through a tunnel, where the replies come from.
async fn open(
    candidates: &[Endpoint],
    shared: &Shared,
) -> Option<(Up, Option<ReadHalf<tunnel::Stream>>, Endpoint)> {
    for backend in candidates {
        match &backend.via {
            Via::Direct => {
                let any = match backend.addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                let Ok(s) = UdpSocket::bind(SocketAddr::new(any, 0)).await else {
                    continue;
                };
                if s.connect(backend.addr).await.is_ok() {
                    return Some((Up::Socket(s), None, backend.clone()));
                }
            }
            Via::Node { node, at } => {
                let Some(t) = &shared.tunnels else { continue };
                let opened = t.open(node, *at, Proto::Udp, backend.addr);
                match tokio::time::timeout(DIAL_TIMEOUT, opened).await {
                    Ok(Ok(stream)) => {
                        let (r, w) = tokio::io::split(stream);
                        let up = Up::Tunnel(tokio::sync::Mutex::new(w));
                        return Some((up, Some(r), backend.clone()));
                    }
                    Ok(Err(e)) => tracing::debug!(%backend, "service proxy: udp: {e}"),
                    Err(_) => tracing::debug!(%backend, "service proxy: udp: tunnel timed out"),
                }
            }
        }
    }
    None
}

/// The next reply of a flow's endpoint: `None` when the flow has ended
/// (its tunnel stream closed).
async fn reply(
    up: &Up,
    down: &mut Option<ReadHalf<tunnel::Stream>>,
    buf: &mut [u8],
) -> std::io::Result<Option<usize>> {
    match (up, down) {
        (Up::Socket(s), _) => s.recv(buf).await.map(Some),
        (Up::Tunnel(_), Some(r)) => Ok(tunnel::read_frame(r).await?.map(|d| {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            n
        })),
        (Up::Tunnel(_), None) => Ok(None),
    }
}

/// Sends an endpoint's replies to the client until the flow is idle.
async fn replies(
    up: Arc<Up>,
    mut down: Option<ReadHalf<tunnel::Stream>>,
    sock: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Flows,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(FLOW_IDLE, reply(&up, &mut down, &mut buf)).await {
            Ok(Ok(Some(n))) => {
                let _ = sock.send_to(&buf[..n], client).await;
            }
            Ok(Ok(None)) | Err(_) => break,
            // A refused datagram (ICMP) is not the end of the flow; a
            // broken tunnel is.
            Ok(Err(e)) => {
                tracing::debug!(%client, "service proxy: udp reply: {e}");
                if matches!(*up, Up::Tunnel(_)) {
                    break;
                }
            }
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
                backends: vec![Endpoint::direct(a), Endpoint::direct(b)],
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

    /// A flow to an endpoint on another node is a stream through that
    /// node's tunnel: datagrams go there and replies come back.
    #[tokio::test]
    async fn a_flow_to_another_node_goes_through_its_tunnel() {
        use crate::agent::tunnel::testing::{identity, node_b};
        let ca = consensus::pki::ClusterCa::generate().unwrap();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (at, _, echo) = node_b(&ca, stop).await;
        let tunnels = tunnel::Tunnels::new(&identity(&ca, "system:node:a", &["system:nodes"], "a"));
        let shared = Arc::new(Shared {
            tunnels: Some(Arc::new(tunnels.unwrap())),
            ..Shared::default()
        });
        let front = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = front.local_addr().unwrap();
        let frontend = Frontend::Cluster(addr);
        let mut table = Table::default();
        table.udp.insert(
            frontend,
            Arc::new(Route {
                name: "ns/echo:udp".into(),
                backends: vec![Endpoint {
                    addr: echo,
                    via: Via::Node {
                        node: "b".into(),
                        at,
                    },
                }],
                affinity: None,
            }),
        );
        *shared.table.write() = Arc::new(table);
        let server = tokio::spawn(serve(front, frontend, shared.clone()));
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for msg in ["one", "two", "three"] {
            c.send_to(msg.as_bytes(), addr).await.unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
                .await
                .expect("a reply through the tunnel")
                .unwrap();
            assert_eq!((from, &buf[..n]), (addr, msg.as_bytes()));
        }
        server.abort();
    }
}
