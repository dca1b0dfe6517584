//! Compact test objects, expanded into real Kubernetes JSON and read
//! through k8s-openapi and `NodeInfo::from_node` / `PodInfo::from_pod`, so
//! the tests cover the same path as the node daemon.
//!
//! Node: `{"name", "cpu", "memory", "pods" (default "110"), "labels",
//! "taints": ["key=value:Effect" | "key:Effect"], "unschedulable",
//! "ready": "True" (default) | "False" | "Unknown" | null (no condition),
//! "runtime": "oci" (default) | "wasm" | "both" | "none", "extended": {name: qty}}`.
//!
//! Pod: `{"name", "ns" (default "default"), "labels", "cpu", "memory",
//! "extended": {name: qty}, "priority", "spec": {merged into the spec}}`;
//! one container requests cpu / memory / extended if given.
//! Placed pods add `"node"`.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Map, Value, json};
use skiff_sched::{NodeInfo, PodInfo, Snapshot};

pub fn node_json(v: &Value) -> Value {
    let name = v["name"].as_str().expect("node name");
    let mut labels = v.get("labels").cloned().unwrap_or_else(|| json!({}));
    let l = labels.as_object_mut().expect("labels object");
    match v.get("runtime").and_then(Value::as_str).unwrap_or("oci") {
        "oci" => {
            l.insert("skiff.dev/runtime-oci".into(), json!("true"));
        }
        "wasm" => {
            l.insert("skiff.dev/runtime-wasm".into(), json!("true"));
        }
        "both" => {
            l.insert("skiff.dev/runtime-oci".into(), json!("true"));
            l.insert("skiff.dev/runtime-wasm".into(), json!("true"));
        }
        _ => {}
    }
    let mut allocatable = Map::new();
    for key in ["cpu", "memory"] {
        if let Some(q) = v.get(key) {
            allocatable.insert(key.into(), q.clone());
        }
    }
    allocatable.insert(
        "pods".into(),
        v.get("pods").cloned().unwrap_or(json!("110")),
    );
    if let Some(Value::Object(ext)) = v.get("extended") {
        allocatable.extend(ext.clone());
    }
    let taints: Vec<Value> = v
        .get("taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let t = t.as_str().expect("taint string");
            let (kv, effect) = t.rsplit_once(':').expect("taint key[=value]:Effect");
            match kv.split_once('=') {
                Some((k, val)) => json!({"key": k, "value": val, "effect": effect}),
                None => json!({"key": kv, "effect": effect}),
            }
        })
        .collect();
    let conditions = match v.get("ready") {
        Some(Value::Null) => json!([]),
        Some(s) => json!([{"type": "Ready", "status": s}]),
        None => json!([{"type": "Ready", "status": "True"}]),
    };
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": v.get("unschedulable").cloned().unwrap_or(json!(false)), "taints": taints},
        "status": {"allocatable": allocatable, "conditions": conditions}
    })
}

pub fn pod_json(v: &Value) -> Value {
    let mut requests = Map::new();
    for key in ["cpu", "memory"] {
        if let Some(q) = v.get(key) {
            requests.insert(key.into(), q.clone());
        }
    }
    if let Some(Value::Object(ext)) = v.get("extended") {
        requests.extend(ext.clone());
    }
    let mut spec = json!({"containers": [{"name": "c", "resources": {"requests": requests}}]});
    if let Some(p) = v.get("priority") {
        spec["priority"] = p.clone();
    }
    if let Some(Value::Object(extra)) = v.get("spec") {
        spec.as_object_mut()
            .expect("spec object")
            .extend(extra.clone());
    }
    json!({
        "metadata": {
            "name": v["name"],
            "namespace": v.get("ns").cloned().unwrap_or(json!("default")),
            "labels": v.get("labels").cloned().unwrap_or(json!({}))
        },
        "spec": spec
    })
}

pub fn node(v: &Value) -> NodeInfo {
    let n: Node = serde_json::from_value(node_json(v)).expect("valid Node JSON");
    NodeInfo::from_node(&n).expect("valid node")
}

pub fn pod(v: &Value) -> PodInfo {
    let p: Pod = serde_json::from_value(pod_json(v)).expect("valid Pod JSON");
    PodInfo::from_pod(&p).expect("valid pod")
}

/// A snapshot of `nodes` with `placed` pods (each naming its `"node"`).
pub fn snapshot(nodes: &Value, placed: &Value) -> Snapshot {
    let mut s = Snapshot::with_nodes(nodes.as_array().expect("nodes array").iter().map(node))
        .expect("unique nodes");
    for p in placed.as_array().expect("placed array") {
        let on = p["node"].as_str().expect("placed pod names its node");
        s.add_pod(on, &pod(p)).expect("known node");
    }
    s
}
