//! What the service proxy serves, computed from Services and
//! EndpointSlices alone (pure, no IO): for every TCP frontend — a cluster
//! IP and port, or a node port — the backends a new connection may go to.
//!
//! The rules are kube-proxy's:
//! - a Service port's endpoints come from the slices labelled with the
//!   Service's name whose port has the same name and protocol;
//! - connections go to ready endpoints; when none is ready, to those that
//!   are terminating but still serving (so a rolling update that drains the
//!   last pod does not drop connections);
//! - `internalTrafficPolicy: Local` keeps cluster-IP traffic on this node's
//!   endpoints, `externalTrafficPolicy: Local` does the same for node
//!   ports;
//! - `sessionAffinity: ClientIP` sends a client back to the endpoint it had,
//!   for `timeoutSeconds` (10800 by default).
//!
//! Each endpoint carries how this host reaches it ([`Via`]): directly,
//! or through its node's tunnel; endpoints on nodes it cannot reach at all
//! are left out (see [`Reach`]). SCTP ports are not served (counted, so
//! the proxy can say so).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use crate::controllers::endpoints::SERVICE_NAME_LABEL;
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10_800);

/// Where a connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frontend {
    /// A Service's cluster IP and port.
    Cluster(SocketAddr),
    /// A node port, on every address of the node.
    NodePort(u16),
}

impl Frontend {
    /// The address a listener for this frontend binds.
    pub fn bind_addr(self) -> SocketAddr {
        match self {
            Frontend::Cluster(a) => a,
            Frontend::NodePort(p) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p),
        }
    }
}

/// One Service port as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/service:port-name` (kube-proxy's ServicePortName).
    pub name: String,
    /// Where new connections may go, in a stable order.
    pub backends: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP`, with its timeout.
    pub affinity: Option<Duration>,
}

/// How this host reaches an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// Its address is dialled as it is: a pod of this host.
    Direct,
    /// Through the tunnel of `node`'s agent at `at`
    /// ([`crate::agent::tunnel`]).
    Node { node: Arc<str>, at: SocketAddr },
}

/// One endpoint of a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub via: Via,
}

impl Endpoint {
    pub fn direct(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            via: Via::Direct,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.via {
            Via::Direct => write!(f, "{}", self.addr),
            Via::Node { node, .. } => write!(f, "{} via {node}", self.addr),
        }
    }
}

/// How an endpoint on `node` is reached from this host, if it is.
pub trait Reach {
    fn via(&self, node: Option<&str>) -> Option<Via>;
}

impl<F: Fn(Option<&str>) -> Option<Via>> Reach for F {
    fn via(&self, node: Option<&str>) -> Option<Via> {
        self(node)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Table {
    pub routes: BTreeMap<Frontend, Arc<Route>>,
    /// The same for UDP ports.
    pub udp: BTreeMap<Frontend, Arc<Route>>,
    /// The cluster IPs that frontends use: the addresses this host must
    /// hold for connections to them to arrive.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// Service ports left out because their protocol is not TCP.
    pub unserved: Vec<String>,
}

#[derive(Debug, Clone)]
struct Backend {
    endpoint: Endpoint,
    node: Option<String>,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// kube-proxy's choice of endpoints for one kind of traffic: the ready
/// ones (of this node only, for a `Local` policy), else those terminating
/// but serving.
fn pick(all: &[Backend], node: &str, local: bool) -> Vec<Endpoint> {
    let eligible: Vec<&Backend> = all
        .iter()
        .filter(|b| !local || b.node.as_deref() == Some(node))
        .collect();
    let ready: Vec<Endpoint> = eligible
        .iter()
        .filter(|b| b.ready)
        .map(|b| b.endpoint.clone())
        .collect();
    let mut out = if ready.is_empty() {
        eligible
            .iter()
            .filter(|b| b.serving && b.terminating)
            .map(|b| b.endpoint.clone())
            .collect()
    } else {
        ready
    };
    out.sort();
    out.dedup();
    out
}

/// The table for `node` from every Service and EndpointSlice the cluster has.
pub fn build(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    node: &str,
    reach: &dyn Reach,
) -> Table {
    // Slices by (namespace, service name).
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        by_service.entry((ns, svc.as_str())).or_default().push(s);
    }
    let mut table = Table::default();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        // ExternalName has no address; `kube-dns`'s is the DNS server's,
        // served by `dns`, not proxied.
        if spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref() == Some(super::dns::CLUSTER_DNS_IP.to_string().as_str())
        {
            continue;
        }
        let cluster_ips: Vec<Ipv4Addr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .filter(|t| *t > 0)
                .map_or(DEFAULT_AFFINITY, |t| Duration::from_secs(t as u64))
        });
        let local_internal = spec.internal_traffic_policy.as_deref() == Some("Local");
        let local_external = spec.external_traffic_policy.as_deref() == Some("Local");
        let svc_slices = by_service.get(&(ns, name)).map_or(&[][..], Vec::as_slice);
        for port in spec.ports.iter().flatten() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let port_name = port.name.as_deref().unwrap_or("");
            let route_name = format!("{ns}/{name}:{port_name}");
            if protocol != "TCP" && protocol != "UDP" {
                table.unserved.push(format!("{route_name}/{protocol}"));
                continue;
            }
            let backends = backends(svc_slices, port_name, protocol, reach);
            let Ok(svc_port) = u16::try_from(port.port) else {
                continue;
            };
            if !cluster_ips.is_empty() {
                let route = Arc::new(Route {
                    name: route_name.clone(),
                    backends: pick(&backends, node, local_internal),
                    affinity,
                });
                for ip in &cluster_ips {
                    let f = Frontend::Cluster(SocketAddr::new(IpAddr::V4(*ip), svc_port));
                    if protocol == "UDP" {
                        table.udp.insert(f, route.clone());
                    } else {
                        table.routes.insert(f, route.clone());
                    }
                }
            }
            if node_ports && let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                let routes = if protocol == "UDP" {
                    &mut table.udp
                } else {
                    &mut table.routes
                };
                routes.insert(
                    Frontend::NodePort(np),
                    Arc::new(Route {
                        name: route_name,
                        backends: pick(&backends, node, local_external),
                        affinity,
                    }),
                );
            }
        }
        if spec.ports.as_ref().is_some_and(|p| !p.is_empty()) {
            table.cluster_ips.extend(cluster_ips);
        }
    }
    table.cluster_ips.sort();
    table.cluster_ips.dedup();
    table
}

/// The endpoints of one Service port across its slices.
fn backends(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    reach: &dyn Reach,
) -> Vec<Backend> {
    let mut out = Vec::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(via) = reach.via(e.node_name.as_deref()) else {
                continue;
            };
            let c = e.conditions.clone().unwrap_or_default();
            // Kubernetes: a nil `ready` means ready; `serving` defaults to
            // `ready`; `terminating` to false.
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = c.terminating.unwrap_or(false);
            for a in &e.addresses {
                let Ok(ip) = a.parse::<Ipv4Addr>() else {
                    continue;
                };
                out.push(Backend {
                    endpoint: Endpoint {
                        addr: SocketAddr::new(IpAddr::V4(ip), number),
                        via: via.clone(),
                    },
                    node: e.node_name.clone(),
                    ready,
                    serving,
                    terminating,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn everywhere(_: Option<&str>) -> Option<Via> {
        Some(Via::Direct)
    }

    fn web() -> Arc<Service> {
        svc(json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.11", "clusterIPs": ["10.43.0.11"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
    }

    fn web_slice(endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        slice(json!({
            "metadata": {"namespace": "ns", "name": "web-abc", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
    }

    fn addrs(t: &Table, f: Frontend) -> Vec<String> {
        t.routes[&f]
            .backends
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const CLUSTER: Frontend = Frontend::Cluster(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 43, 0, 11)),
        80,
    ));

    #[test]
    fn ready_endpoints_behind_cluster_ip_and_node_port() {
        let s = web_slice(json!([
            {"addresses": ["10.42.1.2"], "conditions": {"ready": true}, "nodeName": "a"},
            {"addresses": ["10.42.2.2"], "conditions": {"ready": false, "serving": false}, "nodeName": "b"},
            {"addresses": ["10.42.2.3"], "nodeName": "b"},
        ]));
        let t = build(&[web()], &[s], "a", &everywhere);
        assert_eq!(addrs(&t, CLUSTER), ["10.42.1.2:8080", "10.42.2.3:8080"]);
        assert_eq!(
            addrs(&t, Frontend::NodePort(30080)),
            ["10.42.1.2:8080", "10.42.2.3:8080"]
        );
        assert_eq!(t.routes[&CLUSTER].name, "ns/web:http");
        assert_eq!(t.cluster_ips, [Ipv4Addr::new(10, 43, 0, 11)]);
        assert!(t.unserved.is_empty(), "{:?}", t.unserved);
        // The UDP port: its own table, the endpoints of the `dns` slice port.
        let udp = Frontend::Cluster(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 43, 0, 11)),
            53,
        ));
        assert_eq!(
            t.udp[&udp]
                .backends
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.42.1.2:5353", "10.42.2.3:5353"]
        );
        assert!(!t.routes.contains_key(&udp));
    }

    #[test]
    fn the_cluster_dns_service_is_left_to_the_dns_server() {
        let dns = svc(json!({
            "metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}
        }));
        let t = build(&[dns, web()], &[], "a", &everywhere);
        let dns_ip = IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10));
        assert!(
            !t.routes
                .keys()
                .any(|f| matches!(f, Frontend::Cluster(a) if a.ip() == dns_ip))
        );
        assert_eq!(t.cluster_ips, [Ipv4Addr::new(10, 43, 0, 11)]);
        assert!(
            !t.udp
                .keys()
                .any(|f| matches!(f, Frontend::Cluster(a) if a.ip() == dns_ip))
        );
    }

    #[test]
    fn terminating_serving_endpoints_only_when_none_is_ready() {
        let draining = json!({"ready": false, "serving": true, "terminating": true});
        let s = web_slice(json!([
            {"addresses": ["10.42.1.2"], "conditions": draining, "nodeName": "a"},
            {"addresses": ["10.42.1.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
        ]));
        let t = build(&[web()], &[s], "a", &everywhere);
        assert_eq!(addrs(&t, CLUSTER), ["10.42.1.2:8080"]);
        let s = web_slice(json!([
            {"addresses": ["10.42.1.2"], "conditions": draining},
            {"addresses": ["10.42.1.4"], "conditions": {"ready": true}},
        ]));
        let t = build(&[web()], &[s], "a", &everywhere);
        assert_eq!(addrs(&t, CLUSTER), ["10.42.1.4:8080"]);
    }

    #[test]
    fn local_traffic_policies_keep_to_this_node() {
        let mut s: Service = (*web()).clone();
        let spec = s.spec.as_mut().unwrap();
        spec.internal_traffic_policy = Some("Local".into());
        spec.external_traffic_policy = Some("Local".into());
        let sl = web_slice(json!([
            {"addresses": ["10.42.1.2"], "nodeName": "a"},
            {"addresses": ["10.42.2.2"], "nodeName": "b"},
        ]));
        let t = build(&[Arc::new(s)], &[sl], "b", &everywhere);
        assert_eq!(addrs(&t, CLUSTER), ["10.42.2.2:8080"]);
        assert_eq!(addrs(&t, Frontend::NodePort(30080)), ["10.42.2.2:8080"]);
        let t2 = build(&[web()], &[], "c", &everywhere);
        assert!(t2.routes.values().all(|r| r.backends.is_empty()));
    }

    #[test]
    fn unreachable_nodes_and_other_ports_are_left_out() {
        let sl = web_slice(json!([
            {"addresses": ["10.42.1.2"], "nodeName": "here"},
            {"addresses": ["10.42.9.2"], "nodeName": "far"},
        ]));
        let other = slice(json!({
            "metadata": {"namespace": "ns", "name": "web-x", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.1.5"]}]
        }));
        let elsewhere = slice(json!({
            "metadata": {"namespace": "other", "name": "web-y", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.42.1.6"]}]
        }));
        let reach = |n: Option<&str>| (n != Some("far")).then_some(Via::Direct);
        let t = build(&[web()], &[sl, other, elsewhere], "here", &reach);
        assert_eq!(addrs(&t, CLUSTER), ["10.42.1.2:8080"]);
    }

    #[test]
    fn endpoints_on_other_hosts_go_through_their_node() {
        let sl = web_slice(json!([
            {"addresses": ["127.42.1.2"], "nodeName": "here"},
            {"addresses": ["127.42.9.2"], "nodeName": "far"},
        ]));
        let far: SocketAddr = "192.0.2.9:10250".parse().unwrap();
        let reach = |n: Option<&str>| match n {
            Some("far") => Some(Via::Node {
                node: "far".into(),
                at: far,
            }),
            _ => Some(Via::Direct),
        };
        let t = build(&[web()], &[sl], "here", &reach);
        assert_eq!(
            addrs(&t, CLUSTER),
            ["127.42.1.2:8080", "127.42.9.2:8080 via far"]
        );
        let far_one = &t.routes[&CLUSTER].backends[1];
        assert_eq!(
            far_one.via,
            Via::Node {
                node: "far".into(),
                at: far
            }
        );
    }

    #[test]
    fn headless_external_name_and_cluster_ip_services() {
        let headless = svc(json!({
            "metadata": {"namespace": "ns", "name": "db"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}
        }));
        let external = svc(json!({
            "metadata": {"namespace": "ns", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }));
        let plain = svc(json!({
            "metadata": {"namespace": "ns", "name": "api"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.20", "sessionAffinity": "ClientIP",
                     "ports": [{"port": 443, "nodePort": 30443}]}
        }));
        let t = build(&[headless, external, plain], &[], "a", &everywhere);
        let keys: Vec<Frontend> = t.routes.keys().copied().collect();
        assert_eq!(
            keys,
            [Frontend::Cluster("10.43.0.20:443".parse().unwrap())],
            "no node port for a ClusterIP Service, nothing for headless or ExternalName"
        );
        assert_eq!(
            t.routes[&keys[0]].affinity,
            Some(Duration::from_secs(10_800))
        );
    }
}
