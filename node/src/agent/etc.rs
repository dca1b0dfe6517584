//! What the kubelet gives a pod about its cluster: the files it writes for
//! a container pod and mounts over the image's — `/etc/resolv.conf` (by the
//! pod's `dnsPolicy` and `dnsConfig`) and `/etc/hosts` (localhost, the
//! pod's own name, `hostAliases`) — and the Services' environment
//! variables. Pure: the worker writes the files into the pod's directory.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

use super::proxy::dns::CLUSTER_DOMAIN;

/// The nameserver, search and options lines of a resolv.conf.
#[derive(Debug, Default, PartialEq, Eq)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse(conf: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in conf.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => r.nameservers.extend(w.next().map(str::to_string)),
            // The last search (or domain) line wins, as in the resolver.
            Some("search" | "domain") => r.searches = w.map(str::to_string).collect(),
            Some("options") => r.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    r
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The cluster name search of a pod whose resolv.conf would point at the
/// cluster DNS (`cluster_dns`): its `search` domains and `ndots`, for wasm
/// guests, which resolve names on the host. `None` for the other policies.
pub fn name_search(
    pod: &Pod,
    host: &str,
    cluster_dns: Option<IpAddr>,
) -> Option<skiff_sdk::runtime::NameSearch> {
    let dns = cluster_dns?;
    let conf = resolv_conf(pod, host, Some(dns));
    let field = |key: &str| {
        conf.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    if !field("nameserver ").contains(&dns.to_string()) {
        return None;
    }
    let ndots = field("options ")
        .iter()
        .find_map(|o| o.strip_prefix("ndots:")?.parse().ok())
        .unwrap_or(1);
    Some(skiff_sdk::runtime::NameSearch {
        domains: field("search "),
        ndots,
    })
}

/// The pod's resolv.conf, as the kubelet makes it: `ClusterFirst` (the
/// default) points at the cluster DNS with the namespace's search path
/// (the host's search domains after it), `Default` copies the host's, `None`
/// has only what `dnsConfig` says; `dnsConfig` is added to the others
/// (options merged by name). Kubernetes' limits apply: 3 name servers, 32
/// search domains.
pub fn resolv_conf(pod: &Pod, host: &str, cluster_dns: Option<IpAddr>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = parse(host);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network.unwrap_or(false);
    let mut r = match policy {
        "None" => Resolv::default(),
        "Default" => host,
        "ClusterFirst" if host_network => host,
        // No cluster DNS on this node (no service proxy): the kubelet
        // without `--cluster-dns` falls back to the host's too.
        _ if cluster_dns.is_none() => host,
        _ => {
            let mut searches = vec![
                format!("{ns}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_string(),
            ];
            for s in host.searches {
                push_unique(&mut searches, s);
            }
            Resolv {
                nameservers: cluster_dns.iter().map(ToString::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(c) = &spec.dns_config {
        for n in c.nameservers.iter().flatten() {
            push_unique(&mut r.nameservers, n.clone());
        }
        for s in c.searches.iter().flatten() {
            push_unique(&mut r.searches, s.clone());
        }
        for o in c.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            let opt = match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            };
            r.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            r.options.push(opt);
        }
    }
    r.nameservers.truncate(3);
    r.searches.truncate(32);
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    out
}

/// The pod's /etc/hosts, the kubelet's layout.
pub fn hosts(pod: &Pod, ip: Option<IpAddr>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = spec
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => out.push_str(&format!(
                "{ip}\t{name}.{sub}.{ns}.svc.{CLUSTER_DOMAIN}\t{name}\n"
            )),
            None => out.push_str(&format!("{ip}\t{name}\n")),
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
            }
        }
    }
    out
}

fn env_name(service: &str) -> String {
    service.to_ascii_uppercase().replace('-', "_")
}

/// The variables the kubelet sets for Services (`enableServiceLinks`,
/// true by default: every Service of the pod's namespace with a cluster IP;
/// always `default/kubernetes`): `{NAME}_SERVICE_HOST`,
/// `{NAME}_SERVICE_PORT[_{PORT}]` and Docker's link variables
/// (`{NAME}_PORT`, `{NAME}_PORT_{n}_{PROTO}[_PROTO|_PORT|_ADDR]`). A
/// container's own variables of the same names win.
pub fn service_env(pod: &Pod, services: &[Arc<Service>]) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: Vec<&Service> = services
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| {
            let (sns, name) = (
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or(""),
            );
            (links && sns == ns) || (sns == "default" && name == "kubernetes")
        })
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty() && ip != "None")
        })
        .collect();
    chosen.sort_by_key(|s| (&s.metadata.namespace, &s.metadata.name));
    chosen.dedup_by_key(|s| (&s.metadata.namespace, &s.metadata.name));
    let mut out = Vec::new();
    for s in chosen {
        let spec = s.spec.as_ref().expect("filtered");
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(s.metadata.name.as_deref().unwrap_or(""));
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        }
        for p in ports
            .iter()
            .filter(|p| p.name.as_deref().is_some_and(|n| !n.is_empty()))
        {
            out.push((
                format!(
                    "{prefix}_SERVICE_PORT_{}",
                    env_name(p.name.as_deref().unwrap_or(""))
                ),
                p.port.to_string(),
            ));
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let url = format!("{}://{ip}:{}", proto.to_ascii_lowercase(), p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), proto.to_ascii_lowercase()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    const HOST: &str = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
    const DNS: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 43, 0, 10)));

    #[test]
    fn wasm_guests_search_the_names_resolv_conf_would() {
        let s = name_search(&pod(json!({"containers": []})), HOST, DNS).unwrap();
        assert_eq!(
            s.domains,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(s.ndots, 5);
        let own =
            json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}});
        assert_eq!(name_search(&pod(own), HOST, DNS).unwrap().ndots, 2);
        for other in [
            json!({"containers": [], "dnsPolicy": "Default"}),
            json!({"containers": [], "hostNetwork": true}),
        ] {
            assert_eq!(name_search(&pod(other), HOST, DNS), None);
        }
        assert_eq!(
            name_search(&pod(json!({"containers": []})), HOST, None),
            None
        );
    }

    #[test]
    fn dns_policies() {
        assert_eq!(
            resolv_conf(&pod(json!({"containers": []})), HOST, DNS),
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(
                &pod(json!({"containers": [], "dnsPolicy": "Default"})),
                HOST,
                DNS
            ),
            HOST
        );
        assert_eq!(
            resolv_conf(&pod(json!({"containers": []})), HOST, None),
            HOST
        );
        assert_eq!(
            resolv_conf(
                &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["192.0.2.1"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
                HOST,
                DNS
            ),
            "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 edns0\n"
        );
        // dnsConfig adds to ClusterFirst; its options replace by name.
        assert_eq!(
            resolv_conf(
                &pod(
                    json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})
                ),
                "",
                DNS
            ),
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1\n"
        );
    }

    #[test]
    fn service_variables() {
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| {
            Arc::new(
                serde_json::from_value::<Service>(json!({
                    "metadata": {"namespace": ns, "name": name},
                    "spec": {"clusterIP": ip, "ports": ports}
                }))
                .unwrap(),
            )
        };
        let all = vec![
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                json!([{"name": "https", "port": 443}]),
            ),
            svc(
                "shop",
                "web-api",
                "10.43.0.20",
                json!([{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}]),
            ),
            svc("shop", "db", "None", json!([{"port": 5432}])),
            svc("other", "x", "10.43.0.30", json!([{"port": 1}])),
        ];
        let env = service_env(&pod(json!({"containers": []})), &all);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("WEB_API_SERVICE_HOST"), Some("10.43.0.20"));
        assert_eq!(get("WEB_API_PORT"), Some("tcp://10.43.0.20:80"));
        assert_eq!(get("WEB_API_PORT_53_UDP"), Some("udp://10.43.0.20:53"));
        assert_eq!(get("WEB_API_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("WEB_API_PORT_80_TCP_ADDR"), Some("10.43.0.20"));
        assert_eq!(get("DB_SERVICE_HOST"), None, "headless");
        assert_eq!(get("X_SERVICE_HOST"), None, "another namespace");
        let off = service_env(
            &pod(json!({"containers": [], "enableServiceLinks": false})),
            &all,
        );
        assert!(
            off.iter().all(|(k, _)| k.starts_with("KUBERNETES_")),
            "{off:?}"
        );
    }

    #[test]
    fn hosts_file() {
        let h = hosts(
            &pod(
                json!({"containers": [], "subdomain": "web", "hostAliases": [
                {"ip": "192.0.2.9", "hostnames": ["db", "db.local"]}]}),
            ),
            Some("10.42.0.5".parse().unwrap()),
        );
        assert!(h.contains("127.0.0.1\tlocalhost\n"), "{h}");
        assert!(
            h.contains("10.42.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(h.ends_with("192.0.2.9\tdb\tdb.local\n"), "{h}");
    }
}
