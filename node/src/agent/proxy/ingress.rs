//! The ingress gateway's routing table: which Ingresses are this
//! gateway's, and for a request's host and path, which Service port it
//! goes to — Kubernetes' Ingress matching rules, as the conformance tests
//! of ingress controllers check them:
//!
//! - **Class**: an Ingress whose `ingressClassName` names an IngressClass
//!   with skiff's controller; without one, the legacy
//!   `kubernetes.io/ingress.class` annotation naming such a class; without
//!   either, when skiff's class is the default
//!   (`ingressclass.kubernetes.io/is-default-class: "true"`).
//! - **Host**: exact (case-insensitive, the port of the `Host` header
//!   ignored); `*.example.com` matches exactly one more label
//!   (`a.example.com`, not `example.com` nor `a.b.example.com`); a rule
//!   without a host matches any. An exact host beats a wildcard, which
//!   beats no host.
//! - **Path**: `Exact` matches the path as it is; `Prefix` matches whole
//!   path elements (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, not
//!   `/foobar`; a trailing `/` in the rule is ignored);
//!   `ImplementationSpecific` is `Prefix` here. Among the paths of the
//!   best host, the longest wins, `Exact` before `Prefix` at equal length,
//!   then the oldest Ingress.
//! - No rule matches: the `defaultBackend` of the oldest Ingress that has
//!   one, else the gateway's 404.
//!
//! Backends are resolved to the endpoints the service proxy would use for
//! the Service's cluster IP and port (named or numbered), so a Service
//! without ready endpoints answers 503.

use std::cmp::Reverse;
use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, IngressClass, IngressServiceBackend,
};

use super::table::{Frontend, Table};

/// The `spec.controller` of skiff's IngressClass.
pub const CONTROLLER: &str = "skiff.dev/ingress-gateway";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostMatch {
    Any,
    Wildcard,
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    Prefix,
    Exact,
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The endpoints of a Service port (empty: none ready).
    Service {
        /// `namespace/name:port`, for logs and errors.
        name: String,
        endpoints: Vec<super::table::Endpoint>,
    },
    /// A backend skiff cannot serve (a `resource` backend, a Service or
    /// port that does not exist, a headless Service), with why.
    Unavailable(String),
}

#[derive(Debug, Clone)]
struct Rule {
    host: Option<String>,
    path: String,
    kind: PathKind,
    /// Creation order of the Ingress (older first), for ties.
    age: usize,
    target: Arc<Target>,
}

/// The gateway's table.
#[derive(Debug, Default, Clone)]
pub struct Routes {
    rules: Vec<Rule>,
    default: Option<Arc<Target>>,
    /// TLS sections of the served Ingresses: (namespace, secret, hosts).
    pub tls: Vec<(String, String, Vec<String>)>,
}

/// Whether an Ingress is this gateway's.
pub fn is_ours(ing: &Ingress, classes: &[Arc<IngressClass>]) -> bool {
    let ours = |name: &str| {
        classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
        })
    };
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let legacy = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
        .map(String::as_str);
    match class.or(legacy) {
        Some(name) => ours(name),
        None => classes.iter().any(|c| {
            c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        }),
    }
}

impl Routes {
    pub fn build(
        ingresses: &[Arc<Ingress>],
        classes: &[Arc<IngressClass>],
        services: &[Arc<Service>],
        table: &Table,
    ) -> Routes {
        let mut ours: Vec<&Arc<Ingress>> = ingresses
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none() && is_ours(i, classes))
            .collect();
        ours.sort_by(|a, b| {
            (
                &a.metadata.creation_timestamp,
                &a.metadata.namespace,
                &a.metadata.name,
            )
                .cmp(&(
                    &b.metadata.creation_timestamp,
                    &b.metadata.namespace,
                    &b.metadata.name,
                ))
        });
        let mut routes = Routes::default();
        for (age, ing) in ours.into_iter().enumerate() {
            let ns = ing.metadata.namespace.as_deref().unwrap_or("");
            let Some(spec) = &ing.spec else { continue };
            if routes.default.is_none()
                && let Some(b) = &spec.default_backend
            {
                routes.default = Some(Arc::new(resolve(ns, b, services, table)));
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule
                    .host
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase);
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let kind = if p.path_type == "Exact" {
                        PathKind::Exact
                    } else {
                        PathKind::Prefix
                    };
                    let mut path = p.path.clone().unwrap_or_else(|| "/".into());
                    if kind == PathKind::Prefix {
                        while path.len() > 1 && path.ends_with('/') {
                            path.pop();
                        }
                    }
                    routes.rules.push(Rule {
                        host: host.clone(),
                        path,
                        kind,
                        age,
                        target: Arc::new(resolve(ns, &p.backend, services, table)),
                    });
                }
            }
            for t in spec.tls.iter().flatten() {
                if let Some(secret) = t.secret_name.as_deref().filter(|s| !s.is_empty()) {
                    routes.tls.push((
                        ns.to_string(),
                        secret.to_string(),
                        t.hosts.clone().unwrap_or_default(),
                    ));
                }
            }
        }
        routes
    }

    /// Where a request for `host` (its `Host` header) and `path` goes;
    /// `None`: the gateway's 404.
    pub fn route(&self, host: &str, path: &str) -> Option<Arc<Target>> {
        let host = strip_port(host).to_ascii_lowercase();
        let best = self
            .rules
            .iter()
            .filter_map(|r| {
                let h = host_match(r.host.as_deref(), &host)?;
                path_matches(r, path).then_some((h, r))
            })
            .max_by_key(|(h, r)| (*h, r.path.len(), r.kind, Reverse(r.age)));
        match best {
            Some((_, r)) => Some(r.target.clone()),
            None => self.default.clone(),
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split(']').next().map_or(host, |h| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

fn host_match(rule: Option<&str>, host: &str) -> Option<HostMatch> {
    match rule {
        None => Some(HostMatch::Any),
        Some(r) => match r.strip_prefix("*.") {
            Some(suffix) => {
                let (first, rest) = host.split_once('.')?;
                (!first.is_empty() && rest == suffix).then_some(HostMatch::Wildcard)
            }
            None => (r == host).then_some(HostMatch::Exact),
        },
    }
}

fn path_matches(r: &Rule, path: &str) -> bool {
    match r.kind {
        PathKind::Exact => path == r.path,
        PathKind::Prefix => {
            if r.path == "/" {
                return true;
            }
            // Element-wise: the rule's path, then the end or a `/`.
            path.strip_prefix(r.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        }
    }
}

fn resolve(ns: &str, b: &IngressBackend, services: &[Arc<Service>], table: &Table) -> Target {
    let Some(IngressServiceBackend { name, port }) = &b.service else {
        return Target::Unavailable("resource backends are not supported".into());
    };
    let Some(svc) = services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name)
    }) else {
        return Target::Unavailable(format!("service {ns}/{name} not found"));
    };
    let spec = svc.spec.as_ref();
    let wanted = port.as_ref();
    let svc_port = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .find(|p| match wanted {
            Some(w) if w.number.is_some() => w.number == Some(p.port),
            Some(w) => w.name.is_some() && w.name == p.name,
            None => true,
        });
    let Some(svc_port) = svc_port else {
        return Target::Unavailable(format!("service {ns}/{name} has no such port"));
    };
    let Some(ip) = spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
    else {
        return Target::Unavailable(format!("service {ns}/{name} has no cluster IP"));
    };
    let frontend = Frontend::Cluster(SocketAddr::new(ip, svc_port.port as u16));
    Target::Service {
        name: format!("{ns}/{name}:{}", svc_port.port),
        endpoints: table
            .routes
            .get(&frontend)
            .map(|r| r.backends.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, default: bool) -> Arc<IngressClass> {
        let mut c = json!({"metadata": {"name": name}, "spec": {"controller": CONTROLLER}});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        Arc::new(serde_json::from_value(c).unwrap())
    }

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": name, "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn svc(name: &str, ip: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": name},
                "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
            }))
            .unwrap(),
        )
    }

    fn path(p: &str, kind: &str, service: &str) -> serde_json::Value {
        json!({"path": p, "pathType": kind,
               "backend": {"service": {"name": service, "port": {"number": 80}}}})
    }

    fn name_of(t: Option<Arc<Target>>) -> String {
        match t.as_deref() {
            Some(Target::Service { name, .. }) => name.split(':').next().unwrap().to_string(),
            Some(Target::Unavailable(why)) => format!("unavailable: {why}"),
            None => "404".into(),
        }
    }

    fn routes(ingresses: &[Arc<Ingress>]) -> Routes {
        let services: Vec<Arc<Service>> = ["a", "b", "c", "d", "e"]
            .iter()
            .enumerate()
            .map(|(i, n)| svc(n, &format!("10.43.0.{}", 20 + i)))
            .collect();
        Routes::build(
            ingresses,
            &[class("skiff", true)],
            &services,
            &Table::default(),
        )
    }

    #[test]
    fn prefix_matches_whole_elements_and_the_longest_path_wins() {
        let r = routes(&[ingress(
            "i",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                path("/", "Prefix", "a"),
                path("/foo/", "Prefix", "b"),
                path("/foo/bar", "Prefix", "c"),
                path("/foo/bar", "Exact", "d"),
                path("/exact", "Exact", "e"),
            ]}}]}),
        )]);
        for (p, want) in [
            ("/", "ns/a"),
            ("/foo", "ns/b"),
            ("/foo/", "ns/b"),
            ("/foobar", "ns/a"),
            ("/foo/ba", "ns/b"),
            ("/foo/bar", "ns/d"),
            ("/foo/bar/", "ns/c"),
            ("/foo/bar/baz", "ns/c"),
            ("/exact", "ns/e"),
            ("/exact/", "ns/a"),
        ] {
            assert_eq!(name_of(r.route("x", p)), want, "{p}");
        }
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_beat_no_host() {
        let r = routes(&[ingress(
            "i",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "foo.bar.com", "http": {"paths": [path("/", "Prefix", "a")]}},
                {"host": "*.bar.com", "http": {"paths": [path("/", "Prefix", "b")]}},
                {"http": {"paths": [path("/", "Prefix", "c")]}},
            ]}),
        )]);
        assert_eq!(name_of(r.route("foo.bar.com", "/")), "ns/a");
        assert_eq!(name_of(r.route("FOO.bar.com:8080", "/x")), "ns/a");
        assert_eq!(name_of(r.route("baz.bar.com", "/")), "ns/b");
        // A wildcard covers exactly one label.
        assert_eq!(name_of(r.route("bar.com", "/")), "ns/c");
        assert_eq!(name_of(r.route("a.baz.bar.com", "/")), "ns/c");
        assert_eq!(name_of(r.route("other", "/")), "ns/c");
    }

    #[test]
    fn default_backend_then_404_and_unresolvable_backends() {
        let older = ingress(
            "old",
            "2026-01-01T00:00:00Z",
            json!({"defaultBackend": {"service": {"name": "a", "port": {"name": "http"}}},
            "rules": [{"host": "h", "http": {"paths": [
                path("/gone", "Prefix", "nope"),
                {"path": "/res", "pathType": "Prefix",
                 "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
            ]}}]}),
        );
        let newer = ingress(
            "new",
            "2026-02-01T00:00:00Z",
            json!({"defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}),
        );
        let r = routes(&[newer, older]);
        assert_eq!(name_of(r.route("h", "/x")), "ns/a", "the oldest default");
        assert_eq!(
            name_of(r.route("h", "/gone/1")),
            "unavailable: service ns/nope not found"
        );
        assert_eq!(
            name_of(r.route("h", "/res")),
            "unavailable: resource backends are not supported"
        );
        let none = routes(&[ingress(
            "i",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", "a")]}}]}),
        )]);
        assert_eq!(name_of(none.route("other", "/")), "404");
    }

    #[test]
    fn only_ingresses_of_a_skiff_class_are_served() {
        let spec = |class: Option<&str>| {
            let mut s =
                json!({"defaultBackend": {"service": {"name": "a", "port": {"number": 80}}}});
            if let Some(c) = class {
                s["ingressClassName"] = json!(c);
            }
            s
        };
        let other = Arc::new(
            serde_json::from_value::<IngressClass>(
                json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}),
            )
            .unwrap(),
        );
        let mut legacy = (*ingress("l", "2026-01-01T00:00:00Z", spec(None))).clone();
        legacy.metadata.annotations =
            Some([(LEGACY_CLASS_ANNOTATION.to_string(), "nginx".to_string())].into());
        for (classes, ing, want) in [
            (vec![class("skiff", true)], spec(None), true),
            (vec![class("skiff", false)], spec(None), false),
            (vec![class("skiff", false)], spec(Some("skiff")), true),
            (
                vec![class("skiff", true), other.clone()],
                spec(Some("nginx")),
                false,
            ),
            (vec![class("skiff", true)], spec(Some("missing")), false),
        ] {
            assert_eq!(
                is_ours(&ingress("i", "2026-01-01T00:00:00Z", ing.clone()), &classes),
                want,
                "{ing} with {classes:?}"
            );
        }
        assert!(!is_ours(&legacy, &[class("skiff", true), other]));
    }
}
