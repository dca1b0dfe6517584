//! Cluster DNS, served by every agent on the `kube-dns` Service's address
//! (10.43.0.10, k3s' `--cluster-dns`), UDP and TCP port 53: what CoreDNS's
//! `kubernetes` plugin answers, from the same Service and EndpointSlice
//! caches the service proxy uses, and everything else forwarded to the
//! host's own name servers.
//!
//! Names in `cluster.local` ([Kubernetes' DNS specification]):
//! - `<service>.<ns>.svc.cluster.local`: A, the cluster IP; for a headless
//!   Service, the ready endpoints' addresses (all of them with
//!   `publishNotReadyAddresses`); for an ExternalName Service, a CNAME;
//! - `<hostname>.<service>.<ns>.svc.cluster.local`: A, the endpoint of a
//!   headless Service with that hostname (a StatefulSet's pods);
//! - `_<port>._<proto>.<service>.<ns>.svc.cluster.local`: SRV, the named port;
//! - `<a-b-c-d>.<ns>.pod.cluster.local`: A, `a.b.c.d`;
//! - `d.c.b.a.in-addr.arpa`: PTR, the Service whose cluster IP it is, or
//!   `<hostname or a-b-c-d>.<service>.<ns>.svc.cluster.local` for a headless
//!   Service's endpoint; other reverse names go upstream (CoreDNS's
//!   `fallthrough in-addr.arpa`);
//! - `cluster.local`: SOA, also given in the authority section of negative
//!   answers so that resolvers cache them for 5 s.
//!
//! A name that exists without records of the asked type gets an empty
//! answer (so a resolver asking A and AAAA together still gets its A), a
//! name that does not exist NXDOMAIN. Answers live 5 s (CoreDNS's default).
//! UDP answers longer than 512 bytes are truncated (TC), and the resolver
//! asks again over TCP.
//!
//! [Kubernetes' DNS specification]: https://github.com/kubernetes/dns/blob/master/docs/specification.md

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_sdk::client::informer::Store;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The `kube-dns` Service's address, which the API server reserves and
/// every agent serves.
pub const CLUSTER_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
const TTL: u32 = 5;
const UDP_LIMIT: usize = 512;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_SRV: u16 = 33;
const TYPE_ANY: u16 = 255;

const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;

/// What the cluster's names are looked up in.
pub trait Records: Send + Sync {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
    /// Every Service (for reverse lookups).
    fn all_services(&self) -> Vec<Arc<Service>>;
}

/// The informer caches. They also resolve wasm guests' outgoing requests
/// (which use the host's network, not the cluster DNS server).
pub struct Caches {
    pub services: Arc<Store<Service>>,
    pub slices: Arc<Store<EndpointSlice>>,
}

impl wasm_shim::NameResolver for Caches {
    fn resolve(&self, name: &str) -> Vec<std::net::IpAddr> {
        match lookup(self, name, TYPE_A) {
            Lookup::Found(data) => data
                .into_iter()
                .filter_map(|d| match d {
                    Data::A(ip) => Some(std::net::IpAddr::V4(ip)),
                    _ => None,
                })
                .collect(),
            Lookup::NxDomain | Lookup::Elsewhere => Vec::new(),
        }
    }
}

impl Records for Caches {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get_in(Some(namespace), name)
    }

    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .list_in(namespace)
            .into_iter()
            .filter(|s| crate::controllers::endpoints::belongs_to(s, service))
            .collect()
    }

    fn all_services(&self) -> Vec<Arc<Service>> {
        self.services.list()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    A(Ipv4Addr),
    Cname(String),
    Srv {
        port: u16,
        target: String,
    },
    Ptr(String),
    /// The cluster zone's SOA.
    Soa,
}

impl Data {
    fn rtype(&self) -> u16 {
        match self {
            Data::A(_) => TYPE_A,
            Data::Cname(_) => TYPE_CNAME,
            Data::Srv { .. } => TYPE_SRV,
            Data::Ptr(_) => TYPE_PTR,
            Data::Soa => TYPE_SOA,
        }
    }
}

/// The answer to a question about a name in the cluster domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name exists; its records of the asked type (maybe none).
    Found(Vec<Data>),
    NxDomain,
    /// Not a cluster name: for the upstream servers.
    Elsewhere,
}

/// Answers `qtype` for `name` (lower case, no trailing dot).
pub fn lookup(records: &dyn Records, name: &str, qtype: u16) -> Lookup {
    if let Some(ip) = reverse_name(name) {
        let names = reverse(records, ip);
        if names.is_empty() {
            return Lookup::Elsewhere;
        }
        return Lookup::Found(
            names
                .into_iter()
                .map(Data::Ptr)
                .filter(|_| qtype == TYPE_PTR || qtype == TYPE_ANY)
                .collect(),
        );
    }
    let Some(rest) = name
        .strip_suffix(CLUSTER_DOMAIN)
        .filter(|r| r.is_empty() || r.ends_with('.'))
    else {
        return Lookup::Elsewhere;
    };
    let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
    let labels: Vec<&str> = labels.into_iter().filter(|l| !l.is_empty()).collect();
    let wants = |d: &Data| qtype == TYPE_ANY || d.rtype() == qtype || matches!(d, Data::Cname(_));
    let found = |all: Vec<Data>| Lookup::Found(all.into_iter().filter(|d| wants(d)).collect());
    match labels.as_slice() {
        [] => found(vec![Data::Soa]),
        // The zone's branches exist, with no records of their own.
        ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => Lookup::Found(Vec::new()),
        [ip, _ns, "pod"] => match ip.replace('-', ".").parse::<Ipv4Addr>() {
            Ok(a) => found(vec![Data::A(a)]),
            Err(_) => Lookup::NxDomain,
        },
        [svc, ns, "svc"] => match records.service(ns, svc) {
            None => Lookup::NxDomain,
            Some(s) => found(service_records(records, &s, ns, svc)),
        },
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            match records.service(ns, svc) {
                None => Lookup::NxDomain,
                Some(s) => {
                    let srv = srv_records(&s, &port[1..], &proto[1..], ns, svc);
                    if srv.is_empty() {
                        Lookup::NxDomain
                    } else {
                        found(srv)
                    }
                }
            }
        }
        [host, svc, ns, "svc"] => {
            let Some(s) = records.service(ns, svc) else {
                return Lookup::NxDomain;
            };
            if !is_headless(&s) {
                return Lookup::NxDomain;
            }
            let addrs: Vec<Data> = endpoints(records, &s, ns, svc)
                .into_iter()
                .filter(|(h, a)| endpoint_label(h.as_deref(), *a) == *host)
                .map(|(_, a)| Data::A(a))
                .collect();
            if addrs.is_empty() {
                Lookup::NxDomain
            } else {
                found(addrs)
            }
        }
        _ => Lookup::NxDomain,
    }
}

/// `d.c.b.a.in-addr.arpa` as the address `a.b.c.d`.
fn reverse_name(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = rest
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// The first label of a headless Service's endpoint: its hostname, else
/// its address with dashes (`10-42-1-2`), as CoreDNS names them.
fn endpoint_label(hostname: Option<&str>, ip: Ipv4Addr) -> String {
    hostname
        .map(String::from)
        .unwrap_or_else(|| ip.to_string().replace('.', "-"))
}

/// The cluster names of an address: a Service's cluster IP, or a
/// headless Service's endpoint.
fn reverse(records: &dyn Records, ip: Ipv4Addr) -> Vec<String> {
    let mut out = Vec::new();
    for s in records.all_services() {
        let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        else {
            continue;
        };
        let svc = format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}");
        if is_headless(&s) {
            for (host, a) in endpoints(records, &s, ns, name) {
                if a == ip {
                    out.push(format!("{}.{svc}", endpoint_label(host.as_deref(), a)));
                }
            }
        } else if s
            .spec
            .iter()
            .flat_map(|sp| sp.cluster_ips.iter().flatten().chain(sp.cluster_ip.iter()))
            .any(|c| c.parse() == Ok(ip))
        {
            out.push(svc);
        }
    }
    out.sort();
    out.dedup();
    out
}

fn is_headless(s: &Service) -> bool {
    s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn service_records(records: &dyn Records, s: &Service, ns: &str, name: &str) -> Vec<Data> {
    let Some(spec) = &s.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return spec
            .external_name
            .iter()
            .map(|n| Data::Cname(n.trim_end_matches('.').to_ascii_lowercase()))
            .collect();
    }
    if is_headless(s) {
        let mut a: Vec<Data> = endpoints(records, s, ns, name)
            .into_iter()
            .map(|(_, a)| Data::A(a))
            .collect();
        a.dedup();
        return a;
    }
    spec.cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .map(Data::A)
        .into_iter()
        .collect()
}

/// A headless Service's published endpoints: (hostname, address).
fn endpoints(
    records: &dyn Records,
    s: &Service,
    ns: &str,
    name: &str,
) -> Vec<(Option<String>, Ipv4Addr)> {
    let all = s
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut out = Vec::new();
    for slice in records.slices(ns, name) {
        if slice.address_type != "IPv4" {
            continue;
        }
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !all {
                continue;
            }
            for a in &e.addresses {
                if let Ok(ip) = a.parse() {
                    out.push((e.hostname.clone(), ip));
                }
            }
        }
    }
    out.sort();
    out
}

fn srv_records(s: &Service, port: &str, proto: &str, ns: &str, name: &str) -> Vec<Data> {
    let target = format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}");
    s.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| {
            p.name.as_deref() == Some(port)
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(proto)
        })
        .filter_map(|p| u16::try_from(p.port).ok())
        .map(|port| Data::Srv {
            port,
            target: target.clone(),
        })
        .collect()
}

/// One question, as read from a query.
#[derive(Debug)]
struct Question {
    id: u16,
    /// The query's flags byte with opcode and RD.
    flags: u8,
    name: String,
    qtype: u16,
    /// The question section as sent, echoed in the response.
    raw: Vec<u8>,
}

/// Reads the header and the one question of a query; `Err` carries the
/// rcode to answer with (and the id, if there was one).
fn parse(msg: &[u8]) -> Result<Question, (Option<u16>, u8)> {
    if msg.len() < 12 {
        return Err((None, FORMERR));
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let (flags, qdcount) = (msg[2], u16::from_be_bytes([msg[4], msg[5]]));
    if flags & 0x80 != 0 {
        // A response: not for us.
        return Err((Some(id), FORMERR));
    }
    if (flags >> 3) & 0x0f != 0 {
        return Err((Some(id), NOTIMP));
    }
    if qdcount != 1 {
        return Err((Some(id), FORMERR));
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(i).ok_or((Some(id), FORMERR))? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            // Questions carry no compression pointers.
            return Err((Some(id), FORMERR));
        }
        let label = msg.get(i..i + len).ok_or((Some(id), FORMERR))?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let fixed = msg.get(i..i + 4).ok_or((Some(id), FORMERR))?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    Ok(Question {
        id,
        flags,
        name: labels.join("."),
        qtype,
        raw: msg[12..i + 4].to_vec(),
    })
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for l in name.split('.').filter(|l| !l.is_empty()) {
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

fn header(id: u16, query_flags: u8, authoritative: bool, rcode: u8, counts: [u16; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&id.to_be_bytes());
    // QR, the query's opcode and RD, AA for our own zone; RA.
    out.push(0x80 | (query_flags & 0x79) | if authoritative { 0x04 } else { 0 });
    out.push(0x80 | rcode);
    for c in counts {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out
}

fn error_response(id: u16, flags: u8, rcode: u8) -> Vec<u8> {
    header(id, flags, false, rcode, [0; 4])
}

/// The response to `q` with `data` (owner: the question's name). A
/// negative answer from the cluster zone (NXDOMAIN, or no records of the
/// type) carries the zone's SOA as its authority, for negative caching.
fn response(q: &Question, rcode: u8, data: &[Data]) -> Vec<u8> {
    let negative = data.is_empty() && rcode != SERVFAIL && q.name.ends_with(CLUSTER_DOMAIN);
    let counts = [1, data.len() as u16, u16::from(negative), 0];
    let mut out = header(q.id, q.flags, true, rcode, counts);
    out.extend_from_slice(&q.raw);
    for d in data {
        // The owner is the question's name, at offset 12.
        out.extend_from_slice(&[0xc0, 0x0c]);
        record(&mut out, d);
    }
    if negative {
        write_name(&mut out, CLUSTER_DOMAIN);
        record(&mut out, &Data::Soa);
    }
    out
}

/// A record after its owner: type, class IN, TTL, data.
fn record(out: &mut Vec<u8>, d: &Data) {
    out.extend_from_slice(&d.rtype().to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&TTL.to_be_bytes());
    let mut rdata = Vec::new();
    match d {
        Data::A(ip) => rdata.extend_from_slice(&ip.octets()),
        Data::Cname(target) | Data::Ptr(target) => write_name(&mut rdata, target),
        Data::Srv { port, target } => {
            rdata.extend_from_slice(&0u16.to_be_bytes());
            rdata.extend_from_slice(&100u16.to_be_bytes());
            rdata.extend_from_slice(&port.to_be_bytes());
            write_name(&mut rdata, target);
        }
        Data::Soa => {
            // CoreDNS's: its name server and mailbox, then serial,
            // refresh, retry, expire and the negative-answer TTL.
            write_name(&mut rdata, &format!("ns.dns.{CLUSTER_DOMAIN}"));
            write_name(&mut rdata, &format!("hostmaster.{CLUSTER_DOMAIN}"));
            for n in [1u32, 7200, 1800, 86400, TTL] {
                rdata.extend_from_slice(&n.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
}

/// Answers one query. `None`: nothing to send (not even a header to
/// answer).
async fn answer(
    records: &dyn Records,
    upstream: &[SocketAddr],
    msg: &[u8],
    udp: bool,
) -> Option<Vec<u8>> {
    let q = match parse(msg) {
        Ok(q) => q,
        Err((Some(id), rcode)) => return Some(error_response(id, msg[2], rcode)),
        Err((None, _)) => return None,
    };
    let mut out = match lookup(records, &q.name, q.qtype) {
        Lookup::Found(data) => response(&q, NOERROR, &data),
        Lookup::NxDomain => response(&q, NXDOMAIN, &[]),
        Lookup::Elsewhere => {
            return Some(match forward(upstream, msg).await {
                Some(r) => r,
                None => response(&q, SERVFAIL, &[]),
            });
        }
    };
    if udp && out.len() > UDP_LIMIT {
        out = header(q.id, q.flags, true, NOERROR, [1, 0, 0, 0]);
        out[2] |= 0x02; // TC: ask again over TCP
        out.extend_from_slice(&q.raw);
    }
    Some(out)
}

/// Asks the host's name servers, in turn.
async fn forward(upstream: &[SocketAddr], msg: &[u8]) -> Option<Vec<u8>> {
    for server in upstream {
        let Ok(sock) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
            continue;
        };
        if sock.send_to(msg, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await
            && from == *server
            && n >= 2
            && buf[..2] == msg[..2]
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The name servers of the host's `/etc/resolv.conf`, except the cluster's.
pub fn host_name_servers(resolv_conf: &str, cluster_dns: Ipv4Addr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|a| *a != std::net::IpAddr::V4(cluster_dns))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

/// Serves DNS on `addr` (UDP and TCP) until the task is dropped.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    records: Arc<dyn Records>,
    upstream: Arc<Vec<SocketAddr>>,
) {
    let udp = Arc::new(udp);
    let udp_task = {
        let (records, upstream, udp) = (records.clone(), upstream.clone(), udp.clone());
        async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let msg = buf[..n].to_vec();
                let (records, upstream, udp) = (records.clone(), upstream.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(out) = answer(records.as_ref(), &upstream, &msg, true).await {
                        let _ = udp.send_to(&out, peer).await;
                    }
                });
            }
        }
    };
    let tcp_task = async move {
        loop {
            let Ok((conn, _)) = tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (records, upstream) = (records.clone(), upstream.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    serve_tcp(conn, records.as_ref(), &upstream),
                )
                .await;
            });
        }
    };
    tokio::join!(udp_task, tcp_task);
}

/// Queries over TCP: each prefixed by its length, several per connection.
async fn serve_tcp(
    mut conn: TcpStream,
    records: &dyn Records,
    upstream: &[SocketAddr],
) -> std::io::Result<()> {
    loop {
        let len = match conn.read_u16().await {
            Ok(l) => l as usize,
            Err(_) => return Ok(()),
        };
        let mut msg = vec![0u8; len];
        conn.read_exact(&mut msg).await?;
        let Some(out) = answer(records, upstream, &msg, false).await else {
            return Ok(());
        };
        conn.write_u16(out.len() as u16).await?;
        conn.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpoints::SERVICE_NAME_LABEL;
    use serde_json::json;

    struct Fixed {
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
    }

    impl Records for Fixed {
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }

        fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL] == service
                })
                .cloned()
                .collect()
        }
        fn all_services(&self) -> Vec<Arc<Service>> {
            self.services.clone()
        }
    }

    fn fixture() -> Fixed {
        let svc = |v| Arc::new(serde_json::from_value::<Service>(v).unwrap());
        Fixed {
            services: vec![
                svc(json!({"metadata": {"namespace": "ns", "name": "web"},
                    "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80}]}})),
                svc(json!({"metadata": {"namespace": "ns", "name": "db"},
                    "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}})),
                svc(json!({"metadata": {"namespace": "ns", "name": "ext"},
                    "spec": {"type": "ExternalName", "externalName": "Example.COM."}})),
            ],
            slices: vec![Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"namespace": "ns", "name": "db-x", "labels": {SERVICE_NAME_LABEL: "db"}},
                    "addressType": "IPv4",
                    "endpoints": [
                        {"addresses": ["10.42.1.3"], "hostname": "db-1", "conditions": {"ready": true}},
                        {"addresses": ["10.42.1.2"], "hostname": "db-0"},
                        {"addresses": ["10.42.1.4"], "hostname": "db-2", "conditions": {"ready": false}},
                        {"addresses": ["10.42.1.5"], "conditions": {"ready": true}},
                    ]
                }))
                .unwrap(),
            )],
        }
    }

    fn a(ip: &str) -> Data {
        Data::A(ip.parse().unwrap())
    }

    #[test]
    fn cluster_names() {
        let f = fixture();
        let l = |n: &str, t: u16| lookup(&f, n, t);
        assert_eq!(
            l("web.ns.svc.cluster.local", TYPE_A),
            Lookup::Found(vec![a("10.43.0.20")])
        );
        assert_eq!(
            l("db.ns.svc.cluster.local", TYPE_A),
            // (endpoints without a hostname first)
            Lookup::Found(vec![a("10.42.1.5"), a("10.42.1.2"), a("10.42.1.3")]),
            "a headless Service: its ready endpoints"
        );
        assert_eq!(
            l("db-1.db.ns.svc.cluster.local", TYPE_A),
            Lookup::Found(vec![a("10.42.1.3")])
        );
        assert_eq!(l("db-2.db.ns.svc.cluster.local", TYPE_A), Lookup::NxDomain);
        assert_eq!(l("x.web.ns.svc.cluster.local", TYPE_A), Lookup::NxDomain);
        assert_eq!(
            l("ext.ns.svc.cluster.local", TYPE_A),
            Lookup::Found(vec![Data::Cname("example.com".into())])
        );
        assert_eq!(
            l("_http._tcp.web.ns.svc.cluster.local", TYPE_SRV),
            Lookup::Found(vec![Data::Srv {
                port: 80,
                target: "web.ns.svc.cluster.local".into()
            }])
        );
        assert_eq!(
            l("_x._tcp.web.ns.svc.cluster.local", TYPE_SRV),
            Lookup::NxDomain
        );
        assert_eq!(
            l("10-42-0-7.ns.pod.cluster.local", TYPE_A),
            Lookup::Found(vec![a("10.42.0.7")])
        );
        // AAAA of a name that exists: no records, not NXDOMAIN.
        assert_eq!(l("web.ns.svc.cluster.local", 28), Lookup::Found(vec![]));
        assert_eq!(l("nope.ns.svc.cluster.local", TYPE_A), Lookup::NxDomain);
        assert_eq!(l("ns.svc.cluster.local", TYPE_A), Lookup::Found(vec![]));
        assert_eq!(l("example.com", TYPE_A), Lookup::Elsewhere);
        // Reverse names: a Service's cluster IP, a headless endpoint by
        // hostname, and by its dashed address, which also resolves.
        assert_eq!(
            l("20.0.43.10.in-addr.arpa", TYPE_PTR),
            Lookup::Found(vec![Data::Ptr("web.ns.svc.cluster.local".into())])
        );
        assert_eq!(
            l("3.1.42.10.in-addr.arpa", TYPE_PTR),
            Lookup::Found(vec![Data::Ptr("db-1.db.ns.svc.cluster.local".into())])
        );
        assert_eq!(
            l("5.1.42.10.in-addr.arpa", TYPE_PTR),
            Lookup::Found(vec![Data::Ptr("10-42-1-5.db.ns.svc.cluster.local".into())])
        );
        assert_eq!(
            l("10-42-1-5.db.ns.svc.cluster.local", TYPE_A),
            Lookup::Found(vec![a("10.42.1.5")])
        );
        assert_eq!(l("9.9.9.9.in-addr.arpa", TYPE_PTR), Lookup::Elsewhere);
        assert_eq!(l("1.2.3.in-addr.arpa", TYPE_PTR), Lookup::Elsewhere);
        assert_eq!(l("cluster.local", TYPE_SOA), Lookup::Found(vec![Data::Soa]));
        assert_eq!(l("notcluster.local", TYPE_A), Lookup::Elsewhere);
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        write_name(&mut q, name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[tokio::test]
    async fn wire_format() {
        let f = fixture();
        let r = answer(&f, &[], &query("Web.NS.svc.cluster.local", TYPE_A), true)
            .await
            .unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34], "the query's id");
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[2] & 0x04, 0x04, "authoritative");
        assert_eq!(r[3] & 0x0f, NOERROR);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 43, 0, 20]);
        let r = answer(&f, &[], &query("nope.ns.svc.cluster.local", TYPE_A), true)
            .await
            .unwrap();
        assert_eq!(r[3] & 0x0f, NXDOMAIN);
        assert_eq!(
            u16::from_be_bytes([r[8], r[9]]),
            1,
            "the zone's SOA as authority"
        );
        assert_eq!(&r[r.len() - 4..], &TTL.to_be_bytes(), "cached for 5 s");
        let r = answer(&f, &[], &query("20.0.43.10.in-addr.arpa", TYPE_PTR), true)
            .await
            .unwrap();
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one PTR");
        let mut name = Vec::new();
        write_name(&mut name, "web.ns.svc.cluster.local");
        assert!(r.ends_with(&name), "{r:?}");
        // No upstream: a name outside the cluster fails, and says so.
        let r = answer(&f, &[], &query("example.com", TYPE_A), true)
            .await
            .unwrap();
        assert_eq!(r[3] & 0x0f, SERVFAIL);
        // Garbage gets FORMERR, or nothing when there is not even an id.
        assert_eq!(answer(&f, &[], &[1, 2, 3], true).await, None);
        let mut bad = query("web.ns.svc.cluster.local", TYPE_A);
        bad.truncate(20);
        let r = answer(&f, &[], &bad, true).await.unwrap();
        assert_eq!(r[3] & 0x0f, FORMERR);
    }

    #[test]
    fn long_udp_answers_are_truncated() {
        let mut f = fixture();
        let endpoints: Vec<_> = (0..60)
            .map(|i| json!({"addresses": [format!("10.42.2.{i}")]}))
            .collect();
        f.slices.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "db-y", "labels": {SERVICE_NAME_LABEL: "db"}},
                "addressType": "IPv4",
                "endpoints": endpoints
            }))
            .unwrap(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let q = query("db.ns.svc.cluster.local", TYPE_A);
        let udp = rt.block_on(answer(&f, &[], &q, true)).unwrap();
        assert_eq!(udp[2] & 0x02, 0x02, "TC set");
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]), 0);
        let tcp = rt.block_on(answer(&f, &[], &q, false)).unwrap();
        assert_eq!(u16::from_be_bytes([tcp[6], tcp[7]]), 63);
    }

    #[test]
    fn host_servers_skip_the_cluster_dns() {
        let conf = "search example.org\nnameserver 10.43.0.10\nnameserver 192.0.2.53\n# nameserver 1.1.1.1\n";
        assert_eq!(
            host_name_servers(conf, Ipv4Addr::new(10, 43, 0, 10)),
            vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
        );
    }
}
