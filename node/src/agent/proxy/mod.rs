//! The service proxy: skiff's kube-proxy, one per agent. It watches
//! Services, EndpointSlices and Nodes, computes what to serve
//! ([`table::build`]) and forwards TCP connections made to a Service's
//! cluster IP and port, or to a node port on any of the node's addresses,
//! to one of the Service's endpoints:
//!
//! ```text
//!  client (host, or a container pod via its route to the host)
//!     │ connect 10.43.a.b:80            (an address of `lo`, label lo:skiffsvc<X>)
//!     ▼
//!  listener for 10.43.a.b:80 ──▶ route: endpoints in round robin
//!     │                           (ClientIP affinity, next one if a dial fails)
//!     ▼
//!  pod 10.42.x.y:8080 (container) or 127.42.x.y:8080 (wasm handler)
//! ```
//!
//! It is a userspace proxy, like kube-proxy's original mode: one listener
//! per frontend, a connection spliced to a backend connection; UDP ports
//! get a socket per frontend and a flow per client ([`udp`]). A frontend
//! without endpoints has no listener, so a connection to it is refused at
//! once, as Kubernetes refuses it. Backends see the node as the client
//! (the source address is not kept). Cluster IPs need the agent to be able
//! to add addresses (root); without that only node ports are served.
//!
//! The proxy also serves the cluster DNS ([`dns`]) on the `kube-dns`
//! Service's address, from the same caches.
//!
//! Endpoints on a node of this host (its InternalIP is a local address:
//! several agents on one machine) are dialled directly. Pod addresses are
//! not routed between hosts, so an endpoint on another host is reached
//! through that node's agent, over the node tunnel ([`super::tunnel`]: QUIC
//! to its kubelet port's address and number, mutual TLS); a node without
//! a kubelet port cannot be reached, and its endpoints are left out.

mod addrs;
pub mod dns;
mod gateway;
pub mod ingress;
pub mod table;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use parking_lot::{Mutex, RwLock};
use skiff_sdk::client::informer::Informer;
use skiff_sdk::client::{Api, Client, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::tunnel::{self, Tunnels};
use table::{Endpoint, Frontend, Route, Table, Via};

/// How long a dial to an endpoint may take before the next one is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many endpoints a connection tries before it is dropped.
const DIAL_TRIES: usize = 3;
/// Changes arriving together are applied together.
const SETTLE: Duration = Duration::from_millis(50);
/// Binds that failed (an address in use) are retried this often.
const RESYNC: Duration = Duration::from_secs(5);

pub struct ProxyConfig {
    pub node: String,
    /// The agent's pod address block, naming its addresses' label.
    pub block: u8,
    pub ingress: IngressListen,
    /// How endpoints on other hosts are reached (`None`: they are not).
    pub tunnels: Option<Arc<Tunnels>>,
}

/// Where the ingress gateway listens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngressListen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// What the listeners consult for each connection.
#[derive(Default)]
struct Shared {
    table: RwLock<Arc<Table>>,
    /// Round-robin positions, by route name.
    next: Mutex<HashMap<String, usize>>,
    /// `sessionAffinity: ClientIP`: (route, client) → (endpoint, last use).
    affinity: Mutex<HashMap<(String, IpAddr), (Endpoint, Instant)>>,
    tunnels: Option<Arc<Tunnels>>,
}

/// Runs the proxy until `stop` turns true, then removes what it set up.
/// `services` and `slices` are the agent's informers (started by the
/// agent, which also sets the Services' environment variables from them and
/// resolves wasm guests' names).
pub async fn run(
    client: Client,
    cfg: ProxyConfig,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    mut stop: watch::Receiver<bool>,
) {
    let nodes: Arc<Informer<Node>> = Informer::new(Api::all(&client), ListParams::default());
    let ingresses: Arc<Informer<Ingress>> = Informer::new(Api::all(&client), ListParams::default());
    let classes: Arc<Informer<IngressClass>> =
        Informer::new(Api::all(&client), ListParams::default());
    let (mut svc_rx, mut slice_rx, mut node_rx) =
        (services.subscribe(), slices.subscribe(), nodes.subscribe());
    let (mut ing_rx, mut class_rx) = (ingresses.subscribe(), classes.subscribe());
    let tasks = [nodes.start(), ingresses.start(), classes.start()];
    let synced = async {
        services.synced().await;
        slices.synced().await;
        nodes.synced().await;
        ingresses.synced().await;
        classes.synced().await;
    };
    tokio::select! {
        () = synced => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(JoinHandle::abort);
            return;
        }
    }
    let mut service_addrs =
        match addrs::ServiceAddrs::take(addrs::ServiceAddrs::label_for(cfg.block)).await {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(
                    node = %cfg.node,
                    "service proxy: cluster IPs are not served, only node ports: {e:#}"
                );
                None
            }
        };
    let shared = Arc::new(Shared {
        tunnels: cfg.tunnels.clone(),
        ..Shared::default()
    });
    let mut listeners = Listeners::new("TCP");
    let mut udp_listeners = Listeners::new("UDP");
    let mut unserved_seen = Vec::new();
    let mut dns_server: Option<JoinHandle<()>> = None;
    let mut dns_failed: Option<String> = None;
    let records: Arc<dyn dns::Records> = Arc::new(dns::Caches {
        services: services.store(),
        slices: slices.store(),
    });
    let upstream = Arc::new(dns::host_name_servers(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        dns::CLUSTER_DNS_IP,
    ));
    let gateway = match gateway::Gateway::new() {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!("ingress gateway: not started: {e:#}");
            None
        }
    };
    let mut gateway_listeners: Vec<(SocketAddr, bool, Option<JoinHandle<()>>)> = [
        cfg.ingress.http.map(|a| (a, false, None)),
        cfg.ingress.https.map(|a| (a, true, None)),
    ]
    .into_iter()
    .flatten()
    .filter(|_| gateway.is_some())
    .collect();
    let mut tls_cache = TlsCache::default();
    let mut failed_gateway: Vec<SocketAddr> = Vec::new();
    tracing::info!(node = %cfg.node, "service proxy started");
    let mut reach = Reachability::default();
    loop {
        if reach.update(&cfg.node, &nodes.store().list(), cfg.tunnels.is_some())
            && let Some(t) = &cfg.tunnels
        {
            t.retain(&|node, at| {
                reach.via(Some(node))
                    == Some(Via::Node {
                        node: node.into(),
                        at,
                    })
            });
        }
        let table = table::build(
            &services.store().list(),
            &slices.store().list(),
            &cfg.node,
            &|n: Option<&str>| reach.via(n),
        );
        let unserved = table.unserved.clone();
        if unserved != unserved_seen {
            if !unserved.is_empty() {
                tracing::info!(ports = ?unserved, "service proxy: only TCP and UDP are served; these ports are not");
            }
            unserved_seen = unserved;
        }
        if let Some(i) = &mut service_addrs {
            let mut ips = table.cluster_ips.clone();
            ips.push(dns::CLUSTER_DNS_IP);
            if let Err(e) = i.sync(&ips).await {
                tracing::warn!("service proxy: {e:#}");
            }
            if dns_server.as_ref().is_none_or(JoinHandle::is_finished) {
                match bind_dns().await {
                    Ok((udp, tcp)) => {
                        tracing::info!(node = %cfg.node, addr = %dns::CLUSTER_DNS_IP, upstream = ?upstream, "cluster DNS listening");
                        dns_failed = None;
                        dns_server = Some(tokio::spawn(dns::serve(
                            udp,
                            tcp,
                            records.clone(),
                            upstream.clone(),
                        )));
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if dns_failed.as_ref() != Some(&msg) {
                            tracing::warn!(
                                "cluster DNS: cannot listen on {}:53: {msg}; retrying every {RESYNC:?}",
                                dns::CLUSTER_DNS_IP
                            );
                            dns_failed = Some(msg);
                        }
                    }
                }
            }
        }
        if let Some(gw) = &gateway {
            let routes = ingress::Routes::build(
                &ingresses.store().list(),
                &classes.store().list(),
                &services.store().list(),
                &table,
            );
            gw.certs.set(tls_cache.keys(&client, &routes.tls).await);
            *gw.routes.write() = Arc::new(routes);
            for (addr, tls, task) in &mut gateway_listeners {
                if task.as_ref().is_some_and(|t| !t.is_finished()) {
                    continue;
                }
                match bind(*addr) {
                    Ok(l) => {
                        let scheme = if *tls { "https" } else { "http" };
                        failed_gateway.retain(|a| a != addr);
                        tracing::info!(node = %cfg.node, %addr, scheme, "ingress gateway listening");
                        *task = Some(if *tls {
                            tokio::spawn(gateway::serve_https(l, gw.clone(), shared.clone()))
                        } else {
                            tokio::spawn(gateway::serve_http(l, gw.clone(), shared.clone()))
                        });
                    }
                    Err(e) => {
                        if !failed_gateway.contains(addr) {
                            tracing::warn!(%addr, "ingress gateway: cannot listen: {e}; retrying every {RESYNC:?}");
                            failed_gateway.push(*addr);
                        }
                    }
                }
            }
        }
        // A gateway listening on every address of a port (0.0.0.0:80) also
        // takes the connections to cluster IPs on that port (the kernel
        // allows no narrower listener beside it) and hands them to the
        // proxy: those frontends need no listener of their own.
        let diverted: Vec<u16> = gateway_listeners
            .iter()
            .filter(|(a, _, t)| {
                a.ip().is_unspecified() && t.as_ref().is_some_and(|t| !t.is_finished())
            })
            .map(|(a, _, _)| a.port())
            .collect();
        let wanted: Vec<Frontend> = table
            .routes
            .iter()
            .filter(|(f, r)| {
                !r.backends.is_empty()
                    && (service_addrs.is_some() || matches!(f, Frontend::NodePort(_)))
                    && !matches!(f, Frontend::Cluster(a) if diverted.contains(&a.port()))
            })
            .map(|(f, _)| *f)
            .collect();
        let udp_wanted: Vec<Frontend> = table
            .udp
            .iter()
            .filter(|(f, r)| {
                !r.backends.is_empty()
                    && (service_addrs.is_some() || matches!(f, Frontend::NodePort(_)))
            })
            .map(|(f, _)| *f)
            .collect();
        forget_stale(&shared, &table);
        *shared.table.write() = Arc::new(table);
        udp_listeners.upkeep(&udp_wanted, udp::bind, |sock, f| {
            tokio::spawn(udp::serve(sock, f, shared.clone()))
        });
        listeners.upkeep(&wanted, bind, |l, f| {
            tokio::spawn(serve(l, f, shared.clone()))
        });
        // Wait for a change (then let its neighbours arrive), a retry, or stop.
        let changed = tokio::select! {
            r = svc_rx.recv() => r.is_some(),
            r = slice_rx.recv() => r.is_some(),
            r = node_rx.recv() => r.is_some(),
            r = ing_rx.recv() => r.is_some(),
            r = class_rx.recv() => r.is_some(),
            () = tokio::time::sleep(RESYNC) => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        if !changed || *stop.borrow() {
            break;
        }
        tokio::time::sleep(SETTLE).await;
        while svc_rx.try_recv().is_ok() {}
        while slice_rx.try_recv().is_ok() {}
        while node_rx.try_recv().is_ok() {}
        while ing_rx.try_recv().is_ok() {}
        while class_rx.try_recv().is_ok() {}
    }
    listeners.abort_all();
    udp_listeners.abort_all();
    for t in gateway_listeners.into_iter().filter_map(|(_, _, t)| t) {
        t.abort();
    }
    if let Some(t) = dns_server {
        t.abort();
    }
    tasks.iter().for_each(JoinHandle::abort);
    if let Some(i) = service_addrs {
        i.remove().await;
    }
}

/// The Ingresses' TLS Secrets as keys, each read again after
/// [`TLS_REFRESH`] (a renewed certificate is served within it).
#[derive(Default)]
struct TlsCache {
    /// (namespace, secret) → when read, and its key (`None`: unusable).
    read: HashMap<(String, String), (Instant, Option<Key>)>,
}

type Key = Arc<rustls::sign::CertifiedKey>;

const TLS_REFRESH: Duration = Duration::from_secs(30);

impl TlsCache {
    async fn keys(
        &mut self,
        client: &Client,
        tls: &[(String, String, Vec<String>)],
    ) -> Vec<(Vec<String>, Key)> {
        self.read
            .retain(|k, _| tls.iter().any(|(ns, name, _)| (ns, name) == (&k.0, &k.1)));
        let mut out = Vec::new();
        for (ns, name, hosts) in tls {
            let key = (ns.clone(), name.clone());
            let fresh = self
                .read
                .get(&key)
                .is_some_and(|(at, _)| at.elapsed() < TLS_REFRESH);
            if !fresh {
                let api: Api<Secret> = Api::namespaced(client, ns);
                let got = match api.get_opt(name).await {
                    Ok(Some(s)) => {
                        let field = |k: &str| {
                            s.data
                                .as_ref()
                                .and_then(|d| d.get(k))
                                .map(|b| b.0.clone())
                                .unwrap_or_default()
                        };
                        gateway::certified_key(&field("tls.crt"), &field("tls.key"))
                            .map(Arc::new)
                            .map_err(|e| e.to_string())
                    }
                    Ok(None) => Err("not found".into()),
                    Err(e) => Err(e.to_string()),
                };
                let got = got
                    .inspect_err(|e| {
                        tracing::warn!(secret = %format!("{ns}/{name}"), "ingress gateway: TLS secret not used: {e}")
                    })
                    .ok();
                self.read.insert(key.clone(), (Instant::now(), got));
            }
            if let Some((_, Some(k))) = self.read.get(&key) {
                out.push((hosts.clone(), k.clone()));
            }
        }
        out
    }
}

/// Drops round-robin positions and affinities of routes that are gone,
/// and affinities that timed out.
fn forget_stale(shared: &Shared, table: &Table) {
    let ttl: HashMap<&str, Option<Duration>> = table
        .routes
        .values()
        .chain(table.udp.values())
        .map(|r| (r.name.as_str(), r.affinity))
        .collect();
    shared
        .next
        .lock()
        .retain(|name, _| ttl.contains_key(name.as_str()));
    shared.affinity.lock().retain(|(name, _), (_, at)| {
        ttl.get(name.as_str())
            .copied()
            .flatten()
            .is_some_and(|t| at.elapsed() < t)
    });
}

/// One listening task per frontend that should have one.
struct Listeners {
    /// The protocol, for the log.
    what: &'static str,
    tasks: HashMap<Frontend, JoinHandle<()>>,
    /// Frontends whose bind failed, with the error last logged.
    failed: HashMap<Frontend, String>,
}

impl Listeners {
    fn new(what: &'static str) -> Listeners {
        Listeners {
            what,
            tasks: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Ends the tasks of frontends no longer `wanted` (and those that
    /// ended), and starts one for each wanted frontend without: `bind`,
    /// then `serve`. A failed bind is logged once per error and tried again
    /// at the next call.
    fn upkeep<L>(
        &mut self,
        wanted: &[Frontend],
        bind: impl Fn(SocketAddr) -> std::io::Result<L>,
        serve: impl Fn(L, Frontend) -> JoinHandle<()>,
    ) {
        self.tasks.retain(|f, task| {
            let keep = wanted.contains(f) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        self.failed.retain(|f, _| wanted.contains(f));
        for &f in wanted {
            if self.tasks.contains_key(&f) {
                continue;
            }
            match bind(f.bind_addr()) {
                Ok(l) => {
                    self.failed.remove(&f);
                    self.tasks.insert(f, serve(l, f));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.failed.get(&f) != Some(&msg) {
                        tracing::warn!(frontend = %f.bind_addr(), "service proxy: cannot listen on {}: {msg}; retrying every {RESYNC:?}", self.what);
                        self.failed.insert(f, msg);
                    }
                }
            }
        }
    }

    fn abort_all(self) {
        self.tasks.into_values().for_each(|t| t.abort());
    }
}

/// How this host reaches each node's pods: its own, and those of nodes
/// whose InternalIP is an address of this host, directly; those of other
/// nodes through their tunnel, at the InternalIP and kubelet port their
/// Node advertises.
#[derive(Default)]
struct Reachability {
    /// Each node's InternalIPs and kubelet port, as last looked at.
    seen: Vec<(String, Vec<IpAddr>, u16)>,
    via: HashMap<String, Via>,
}

impl Reachability {
    /// Looks again at the nodes if their addresses changed since the last
    /// call (whether an address is this host's takes a bind to find out);
    /// true if it did.
    fn update(&mut self, me: &str, nodes: &[Arc<Node>], tunnels: bool) -> bool {
        let mut now: Vec<(String, Vec<IpAddr>, u16)> = nodes
            .iter()
            .filter_map(|n| {
                let name = n.metadata.name.clone()?;
                let status = n.status.as_ref();
                let internal = status
                    .and_then(|s| s.addresses.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.parse::<IpAddr>().ok())
                    .collect();
                let port = status
                    .and_then(|s| s.daemon_endpoints.as_ref())
                    .and_then(|d| d.kubelet_endpoint.as_ref())
                    .and_then(|k| u16::try_from(k.port).ok())
                    .unwrap_or(0);
                Some((name, internal, port))
            })
            .collect();
        now.sort();
        if now == self.seen && !self.via.is_empty() {
            return false;
        }
        self.via = HashMap::from([(me.to_string(), Via::Direct)]);
        for (name, internal, port) in &now {
            if name == me {
                continue;
            }
            if internal.iter().copied().any(is_local_address) {
                self.via.insert(name.clone(), Via::Direct);
            } else if tunnels
                && *port != 0
                && let Some(ip) = internal.iter().find(|ip| ip.is_ipv4()).or(internal.first())
            {
                self.via.insert(
                    name.clone(),
                    Via::Node {
                        node: name.as_str().into(),
                        at: SocketAddr::new(*ip, *port),
                    },
                );
            }
        }
        self.seen = now;
        true
    }

    /// Endpoints with no node (a Service's own, like `kubernetes`'s) are
    /// dialled as they are.
    fn via(&self, node: Option<&str>) -> Option<Via> {
        match node {
            None => Some(Via::Direct),
            Some(n) => self.via.get(n).cloned(),
        }
    }
}

/// Whether `ip` is an address of this host: binding it succeeds.
fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

async fn bind_dns() -> std::io::Result<(tokio::net::UdpSocket, TcpListener)> {
    let addr = SocketAddr::new(IpAddr::V4(dns::CLUSTER_DNS_IP), 53);
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    Ok((udp, bind(addr)?))
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve(listener: TcpListener, frontend: Frontend, shared: Arc<Shared>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: do not spin.
                tracing::warn!(frontend = %frontend.bind_addr(), "service proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let route = shared.table.read().routes.get(&frontend).cloned();
        let shared = shared.clone();
        tokio::spawn(async move {
            match route {
                Some(route) => forward(conn, peer, &route, &shared).await,
                None => refuse(conn),
            }
        });
    }
}

/// Closes a connection with a reset, as a port nobody listens on would.
// A zero linger time never blocks the drop (tokio's reason to deprecate it):
// the close sends a reset at once.
#[allow(deprecated)]
fn refuse(conn: TcpStream) {
    let _ = conn.set_linger(Some(Duration::ZERO));
}

async fn forward(mut conn: TcpStream, peer: SocketAddr, route: &Route, shared: &Shared) {
    if route.backends.is_empty() {
        return refuse(conn);
    }
    for backend in candidates(route, peer, shared) {
        let dial = tokio::time::timeout(DIAL_TIMEOUT, dial(&backend, shared)).await;
        let mut up = match dial {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(route = %route.name, %backend, "service proxy: dial: {e}");
                continue;
            }
            Err(_) => {
                tracing::debug!(route = %route.name, %backend, "service proxy: dial timed out");
                continue;
            }
        };
        remember(route, peer, backend, shared);
        let _ = conn.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
        return;
    }
    tracing::debug!(route = %route.name, "service proxy: no endpoint answered");
    refuse(conn);
}

/// A byte stream to an endpoint.
trait Upstream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Upstream for T {}

/// Connects to `backend`, directly or through its node's tunnel.
async fn dial(backend: &Endpoint, shared: &Shared) -> std::io::Result<Box<dyn Upstream>> {
    match &backend.via {
        Via::Direct => {
            let s = TcpStream::connect(backend.addr).await?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        Via::Node { node, at } => {
            let t = shared
                .tunnels
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no node tunnel on this host"))?;
            Ok(Box::new(
                t.open(node, *at, tunnel::Proto::Tcp, backend.addr).await?,
            ))
        }
    }
}

/// `sessionAffinity: ClientIP`: the client's next connections go to
/// `backend` too.
fn remember(route: &Route, peer: SocketAddr, backend: Endpoint, shared: &Shared) {
    if route.affinity.is_some() {
        shared
            .affinity
            .lock()
            .insert((route.name.clone(), peer.ip()), (backend, Instant::now()));
    }
}

/// The endpoints a new connection (or UDP flow) from `peer` tries, in
/// order: the one its affinity names, then the next ones in round robin;
/// at most [`DIAL_TRIES`].
fn candidates(route: &Route, peer: SocketAddr, shared: &Shared) -> Vec<Endpoint> {
    let n = route.backends.len();
    let mut order: Vec<Endpoint> = Vec::with_capacity(DIAL_TRIES);
    let sticky = route.affinity.and_then(|ttl| {
        let mut aff = shared.affinity.lock();
        let key = (route.name.clone(), peer.ip());
        match aff.get(&key) {
            Some((b, at)) if at.elapsed() < ttl && route.backends.contains(b) => Some(b.clone()),
            _ => {
                aff.remove(&key);
                None
            }
        }
    });
    order.extend(sticky);
    let start = {
        let mut next = shared.next.lock();
        let i = next.entry(route.name.clone()).or_insert(0);
        let s = *i;
        *i = i.wrapping_add(1);
        s
    };
    for k in 0..n {
        if order.len() >= DIAL_TRIES {
            break;
        }
        let b = route.backends[(start + k) % n].clone();
        if !order.contains(&b) {
            order.push(b);
        }
    }
    order
}
