//! The kinds skiff serves: their group, version, names, scope and verbs —
//! what discovery advertises and what the generic handlers go by.

use serde_json::Value;

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural, lowercase: the URL segment.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether the object has a `status` subresource (PUT/PATCH of the main
    /// resource ignores status; status writes go through `/status`).
    pub has_status: bool,
    /// Whether `/scale` is served (spec.replicas).
    pub has_scale: bool,
    /// Whether `metadata.generation` tracks spec changes.
    pub has_spec: bool,
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $status:expr, $scale:expr, $spec:expr) => {
        Resource {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            has_status: $status,
            has_scale: $scale,
            has_spec: $spec,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

#[rustfmt::skip]
pub static RESOURCES: &[Resource] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], NONE, true, false, true),
    res!("", "v1", "Pod", "pods", "pod", true, &["po"], ALL, true, false, true),
    res!("", "v1", "Service", "services", "service", true, &["svc"], ALL, true, false, true),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], NONE, false, false, false),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], NONE, false, false, false),
    res!("", "v1", "Secret", "secrets", "secret", true, NONE, NONE, false, false, false),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], NONE, false, false, false),
    res!("", "v1", "Node", "nodes", "node", false, &["no"], NONE, true, false, true),
    res!("", "v1", "Event", "events", "event", true, &["ev"], NONE, false, false, false),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, &["pvc"], NONE, true, false, true),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, &["pv"], NONE, true, false, true),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false, &["sc"], NONE, false, false, false),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, true, true, true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, true, true, true),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], ALL, true, false, true),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, true, true, true),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, NONE, NONE, false, false, false),
    res!("batch", "v1", "Job", "jobs", "job", true, NONE, ALL, true, false, true),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], ALL, true, false, true),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, &["ing"], NONE, true, false, true),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false, NONE, NONE, false, false, true),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, NONE, NONE, false, false, false),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, NONE, NONE, false, false, false),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, NONE, NONE, false, false, false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, NONE, NONE, false, false, false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, NONE, NONE, false, false, false),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, NONE, NONE, false, false, true),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, NONE, NONE, false, false, false),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, &["pdb"], NONE, true, false, true),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, &["pc"], NONE, false, false, false),
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this resource, ending in `/`.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Groups in the order discovery lists them, each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    // Not stored objects: reviews answered on the spot.
    out.push((AUTHZ_GROUP, "v1"));
    out.push((AUTHN_GROUP, "v1"));
    out
}

/// `kubectl auth can-i` posts SelfSubjectAccessReviews here, and
/// SelfSubjectRulesReviews for `--list`.
pub const AUTHZ_GROUP: &str = "authorization.k8s.io";
/// `kubectl auth whoami` posts SelfSubjectReviews here.
pub const AUTHN_GROUP: &str = "authentication.k8s.io";

/// APIResourceList for one group/version, as `/api/v1` and `/apis/G/V` serve.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == AUTHZ_GROUP && version == "v1" {
        return Some(serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "authorization.k8s.io/v1",
            "resources": [{
                "name": "selfsubjectaccessreviews",
                "singularName": "selfsubjectaccessreview",
                "namespaced": false,
                "kind": "SelfSubjectAccessReview",
                "verbs": ["create"],
            }, {
                "name": "selfsubjectrulesreviews",
                "singularName": "selfsubjectrulesreview",
                "namespaced": false,
                "kind": "SelfSubjectRulesReview",
                "verbs": ["create"],
            }],
        }));
    }
    if group == AUTHN_GROUP && version == "v1" {
        return Some(serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "authentication.k8s.io/v1",
            "resources": [{
                "name": "selfsubjectreviews",
                "singularName": "selfsubjectreview",
                "namespaced": false,
                "kind": "SelfSubjectReview",
                "verbs": ["create"],
            }],
        }));
    }
    let rs: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in &rs {
        list.push(serde_json::json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        if r.has_status {
            list.push(serde_json::json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.has_scale {
            list.push(serde_json::json!({
                "name": format!("{}/scale", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.kind == "ServiceAccount" {
            list.push(serde_json::json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1",
                "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
        if r.kind == "Pod" {
            list.push(serde_json::json!({
                "name": "pods/log", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get"],
            }));
            list.push(serde_json::json!({
                "name": "pods/binding", "singularName": "", "namespaced": true,
                "kind": "Binding", "verbs": ["create"],
            }));
            list.push(serde_json::json!({
                "name": "pods/ephemeralcontainers", "singularName": "", "namespaced": true,
                "kind": "Pod", "verbs": ["get", "patch", "update"],
            }));
            list.push(serde_json::json!({
                "name": "pods/exec", "singularName": "", "namespaced": true,
                "kind": "PodExecOptions", "verbs": ["create", "get"],
            }));
            list.push(serde_json::json!({
                "name": "pods/attach", "singularName": "", "namespaced": true,
                "kind": "PodAttachOptions", "verbs": ["create", "get"],
            }));
            // kubectl drain looks for this entry to evict rather than delete.
            list.push(serde_json::json!({
                "name": "pods/eviction", "singularName": "", "namespaced": true,
                "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": list,
    }))
}
