//! Discovery and OpenAPI: what kubectl reads before it does anything.
//!
//! Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/G/V`) lists every
//! served resource with its verbs and short names. The OpenAPI v3 documents
//! describe, per group/version, the operations and the query parameters they
//! take; kubectl reads them to learn that the server validates fields itself
//! (`fieldValidation`), so it sends objects for server-side validation
//! instead of needing full schemas. Schemas are not published yet (so
//! `kubectl explain` has nothing to show), and OpenAPI v2 (protobuf-only
//! for kubectl) is not served: kubectl then falls back to what it knows.

use serde_json::{Value, json};

use super::resources::{RESOURCES, groups};

pub const KUBE_VERSION: (&str, &str) = ("1", "33");

pub fn version() -> Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0+skiff-{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch()),
    })
}

/// Kubernetes' name for this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({
        "name": group,
        "versions": [gv],
        "preferredVersion": gv,
    })
}

pub fn api_groups() -> Value {
    let list: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let mut out = group_json(g, v);
    out["kind"] = json!("APIGroup");
    out["apiVersion"] = json!("v1");
    Some(out)
}

/// gnostic `openapi_v2.Document { swagger: "2.0" }`.
pub const OPENAPI_V2_PB: &[u8] = b"\x0a\x032.0";

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    gvs.extend(groups());
    gvs.push((CRD_GROUP, "v1"));
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", doc_hash(&p))}),
        );
    }
    json!({"paths": paths})
}

fn doc_hash(path: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(env!("CARGO_PKG_VERSION"))
        .chain_update(path)
        .finalize();
    hex::encode(&d[..16]).to_uppercase()
}

const QUERY_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "pretty"];

/// The OpenAPI v3 document of one group/version: its operations, each
/// tagged with the kind it acts on and the query parameters it accepts.
/// kubectl decides whether the server validates kinds it does not find in
/// any document (custom resources, removed versions) by the
/// CustomResourceDefinition operations: describing them keeps validation
/// on the server, which answers "no matches for kind" as Kubernetes does.
/// No CRDs are served.
const CRD_GROUP: &str = "apiextensions.k8s.io";

/// Kubernetes kinds in the group/versions skiff serves that skiff does not
/// serve. kubectl looks each kind of a manifest up in the OpenAPI document
/// of its group/version and gives up ("failed to download openapi") when it
/// is missing; listed with server-side validation, the manifest reaches the
/// server, and kubectl reports "no matches for kind", as for any kind the
/// server does not have.
const UNSERVED: &[(&str, &str, &str)] = &[
    ("", "v1", "LimitRange"),
    ("", "v1", "ResourceQuota"),
    ("", "v1", "PersistentVolume"),
    ("", "v1", "ReplicationController"),
    ("", "v1", "PodTemplate"),
    ("", "v1", "ComponentStatus"),
    ("apps", "v1", "ControllerRevision"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("networking.k8s.io", "v1", "IPAddress"),
    ("networking.k8s.io", "v1", "ServiceCIDR"),
];

pub fn openapi_v3(path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    let rs: Vec<_> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty()
        && group != super::resources::AUTHZ_GROUP
        && group != super::resources::AUTHN_GROUP
    {
        return None;
    }
    if group == CRD_GROUP && version == "v1" {
        return Some(crd_doc());
    }
    let params: Vec<Value> = QUERY_PARAMS
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let mut paths = serde_json::Map::new();
    for r in rs {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let (collection, item) = if r.namespaced {
            (
                format!("{base}/namespaces/{{namespace}}/{}", r.plural),
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            )
        } else {
            (
                format!("{base}/{}", r.plural),
                format!("{base}/{}/{{name}}", r.plural),
            )
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(collection, json!({"post": op("post"), "get": op("list")}));
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    for (g, v, kind) in UNSERVED
        .iter()
        .filter(|(g, v, _)| *g == group && *v == version)
    {
        let gvk = json!({"group": g, "version": v, "kind": kind});
        paths.insert(
            format!("/x-skiff-not-served/{kind}"),
            json!({"patch": {
                "operationId": format!("patch{kind}"),
                "description": "not served by skiff: requests are refused",
                "parameters": params,
                "responses": {"404": {"description": "not served"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": super::schemas::components(group, version)},
    }))
}

fn crd_doc() -> Value {
    let params: Vec<Value> = QUERY_PARAMS
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let gvk = json!({"group": CRD_GROUP, "version": "v1", "kind": "CustomResourceDefinition"});
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": {
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}": {
                "patch": {
                    "operationId": "patchCustomResourceDefinition",
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                }
            }
        },
        "components": {"schemas": {}},
    })
}
