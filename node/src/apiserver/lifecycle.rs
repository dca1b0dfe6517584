//! Kind-specific steps of the object lifecycle that the generic handlers
//! call out to: Service cluster IPs, graceful Pod deletion, Namespace
//! termination.

use serde_json::{Value, json};

use super::handlers::Target;
use super::resources::{self, RESOURCES, Resource};
use super::status::{ApiError, Cause};
use super::storage::{Objects, Precondition, Stored};
use super::{Body, json as json_resp};

/// The service CIDR, as k3s: 10.43.0.0/16; .1 is the `kubernetes` service.
const SERVICE_NET: [u8; 2] = [10, 43];

/// The `kubernetes` Service's address: the first of the range.
pub const KUBERNETES_SERVICE_IP: &str = "10.43.0.1";

fn ip_key(ip: &str) -> String {
    format!("/registry/core/serviceips/{ip}")
}

/// The Service's name, and the value of the store keys reserving its
/// address and ports (naming their owner).
fn reservation(svc: &Value) -> (String, Value) {
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let marker = json!({"owner": format!("{ns}/{name}")});
    (name, marker)
}

/// Gives a ClusterIP Service its address (or reserves the one it asked
/// for). The reservation is a store key created only if absent, so two
/// Services never get the same address.
pub async fn allocate_cluster_ip(objects: &Objects, svc: &mut Value) -> Result<(), ApiError> {
    let spec = &svc["spec"];
    if spec["type"] == "ExternalName" || spec["clusterIP"] == "None" {
        if spec["clusterIP"] == "None" {
            svc["spec"]["clusterIPs"] = json!(["None"]);
        }
        return Ok(());
    }
    let (name, marker) = reservation(svc);
    if let Some(want) = spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
        let parts: Vec<u8> = want.split('.').filter_map(|p| p.parse().ok()).collect();
        if parts.len() != 4 || parts[..2] != SERVICE_NET {
            return Err(ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(
                    "spec.clusterIP",
                    format!(
                        "Invalid value: \"{want}\": provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"
                    ),
                )],
            ));
        }
        if objects
            .put(&ip_key(want), &marker, Precondition::Absent)
            .await?
            .is_none()
        {
            return Err(ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(
                    "spec.clusterIP",
                    format!("Invalid value: \"{want}\": provided IP is already allocated"),
                )],
            ));
        }
        svc["spec"]["clusterIPs"] = json!([want]);
        return Ok(());
    }
    let start: u16 = rand::random_range(2..65_000);
    for i in 0..65_000u32 {
        let n = 2 + (start as u32 + i) % 65_532;
        let ip = format!(
            "{}.{}.{}.{}",
            SERVICE_NET[0],
            SERVICE_NET[1],
            n >> 8,
            n & 0xff
        );
        if objects
            .put(&ip_key(&ip), &marker, Precondition::Absent)
            .await?
            .is_some()
        {
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            return Ok(());
        }
    }
    Err(ApiError::internal(
        "the service IP range 10.43.0.0/16 is full",
    ))
}

/// Frees what a deleted Service held: its cluster IP and node ports.
pub async fn release_service(objects: &Objects, svc: &Value) -> Result<(), ApiError> {
    release_cluster_ip(objects, svc).await?;
    release_node_ports(objects, svc, None).await
}

/// Frees a Service's cluster IP.
pub async fn release_cluster_ip(objects: &Objects, svc: &Value) -> Result<(), ApiError> {
    if let Some(ip) = svc["spec"]["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        && let Some(s) = objects.get(&ip_key(ip)).await?
    {
        objects.delete(&ip_key(ip), s.rev).await?;
    }
    Ok(())
}

/// The node port range, Kubernetes' default (`--service-node-port-range`).
pub const NODE_PORTS: std::ops::RangeInclusive<i64> = 30_000..=32_767;

fn node_port_key(port: i64) -> String {
    format!("/registry/core/servicenodeports/{port}")
}

/// Whether the Service's type gives its ports a node port.
pub fn has_node_ports(svc: &Value) -> bool {
    matches!(
        svc["spec"]["type"].as_str(),
        Some("NodePort" | "LoadBalancer")
    )
}

fn same_port(a: &Value, b: &Value) -> bool {
    a["port"] == b["port"]
        && a["protocol"].as_str().unwrap_or("TCP") == b["protocol"].as_str().unwrap_or("TCP")
}

fn node_ports(svc: &Value) -> impl Iterator<Item = i64> + '_ {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_i64())
}

/// On update, before validation, what kube-apiserver's Service strategy
/// does: a port that omits its node port keeps the one it had (matched by
/// port and protocol), and a type that no longer has node ports drops the
/// ones it carried over unchanged.
pub fn carry_node_ports(old: &Value, new: &mut Value) {
    let keep = has_node_ports(new);
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let Some(ports) = new["spec"]["ports"].as_array_mut() else {
        return;
    };
    for p in ports {
        let Some(was) = old_ports
            .iter()
            .find(|o| same_port(o, p))
            .and_then(|o| o["nodePort"].as_i64())
        else {
            continue;
        };
        let Some(m) = p.as_object_mut() else { continue };
        match (keep, m.get("nodePort").and_then(Value::as_i64)) {
            (true, None) => {
                m.insert("nodePort".into(), json!(was));
            }
            (false, Some(n)) if n == was => {
                m.remove("nodePort");
            }
            _ => {}
        }
    }
}

/// Gives each port of a NodePort or LoadBalancer Service a node port, or
/// reserves the one it asked for, by a store key created only if absent
/// (so no two Services share one). `old` is the Service being updated:
/// the ports it holds are already reserved. What this call reserved is
/// released again if it fails.
pub async fn allocate_node_ports(
    objects: &Objects,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !has_node_ports(svc) {
        return Ok(());
    }
    let held: Vec<i64> = old.map(|o| node_ports(o).collect()).unwrap_or_default();
    let (name, marker) = reservation(svc);
    let mut reserved: Vec<i64> = Vec::new();
    let result = async {
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        let invalid = |i: usize, msg: String| {
            ApiError::invalid(
                "",
                "Service",
                &name,
                vec![Cause::invalid(format!("spec.ports[{i}].nodePort"), msg)],
            )
        };
        // Asked-for ports first, so a random pick never takes one of them.
        for i in 0..count {
            let Some(n) = svc["spec"]["ports"][i]["nodePort"].as_i64() else {
                continue;
            };
            if held.contains(&n) || reserved.contains(&n) {
                continue;
            }
            if !NODE_PORTS.contains(&n) {
                return Err(invalid(
                    i,
                    format!(
                        "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORTS.start(),
                        NODE_PORTS.end()
                    ),
                ));
            }
            if objects
                .put(&node_port_key(n), &marker, Precondition::Absent)
                .await?
                .is_none()
            {
                return Err(invalid(
                    i,
                    format!("Invalid value: {n}: provided port is already allocated"),
                ));
            }
            reserved.push(n);
        }
        let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
        for i in 0..count {
            if svc["spec"]["ports"][i]["nodePort"].is_i64() {
                continue;
            }
            let start = rand::random_range(0..span);
            let mut got = None;
            for k in 0..span {
                let n = NODE_PORTS.start() + (start + k) % span;
                if held.contains(&n) || reserved.contains(&n) {
                    continue;
                }
                if objects
                    .put(&node_port_key(n), &marker, Precondition::Absent)
                    .await?
                    .is_some()
                {
                    got = Some(n);
                    break;
                }
            }
            let Some(n) = got else {
                return Err(ApiError::internal(format!(
                    "the node port range {}-{} is full",
                    NODE_PORTS.start(),
                    NODE_PORTS.end()
                )));
            };
            reserved.push(n);
            svc["spec"]["ports"][i]["nodePort"] = json!(n);
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for n in reserved {
            free_node_port(objects, n).await;
        }
    }
    result
}

async fn free_node_port(objects: &Objects, port: i64) {
    let key = node_port_key(port);
    if let Ok(Some(s)) = objects.get(&key).await {
        let _ = objects.delete(&key, s.rev).await;
    }
}

/// Frees the node ports `svc` holds that `keep` (the Service as updated)
/// no longer does.
pub async fn release_node_ports(
    objects: &Objects,
    svc: &Value,
    keep: Option<&Value>,
) -> Result<(), ApiError> {
    let kept: Vec<i64> = keep.map(|k| node_ports(k).collect()).unwrap_or_default();
    for n in node_ports(svc).filter(|n| !kept.contains(n)) {
        let key = node_port_key(n);
        if let Some(s) = objects.get(&key).await? {
            objects.delete(&key, s.rev).await?;
        }
    }
    Ok(())
}

/// Whether a bound pod's node is up to run its graceful shutdown. A pod on
/// a node that is gone or not Ready is deleted at once, as Kubernetes' pod
/// GC would.
pub async fn node_is_live(objects: &Objects, pod: &Value) -> bool {
    let Some(node) = pod["spec"]["nodeName"].as_str() else {
        return false;
    };
    let res = resources::find("", "v1", "nodes").expect("nodes served");
    match objects.get(&res.key(None, node)).await {
        Ok(Some(s)) => condition_true(&s.object, "Ready"),
        _ => false,
    }
}

/// Whether an object's status has condition `kind` with status True.
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// Marks a namespace Terminating, then deletes everything in it and the
/// namespace itself, in the background (Kubernetes' namespace controller).
pub async fn delete_namespace(
    objects: &Objects,
    t: &Target,
    s: Stored,
) -> Result<http::Response<Body>, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        ));
    }
    let mut obj = s.object.clone();
    if obj["status"]["phase"] != "Terminating" {
        obj["status"]["phase"] = json!("Terminating");
        obj["metadata"]["deletionTimestamp"] = json!(super::handlers::format_time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()) as i64
        ));
        if objects
            .put(&t.key_of(), &obj, Precondition::ModRevision(s.rev))
            .await?
            .is_none()
        {
            return Err(ApiError::conflict(
                "",
                "namespaces",
                &name,
                "the object has been modified",
            ));
        }
    }
    let objects = objects.clone_handle();
    let ns = name.clone();
    let key = t.key_of();
    tokio::spawn(async move {
        if let Err(e) = empty_namespace(&objects, &ns).await {
            tracing::warn!(namespace = %ns, "emptying namespace: {}", e.message);
            return;
        }
        if let Ok(Some(s)) = objects.get(&key).await {
            let _ = objects.delete(&key, s.rev).await;
        }
    });
    Ok(json_resp(http::StatusCode::OK, &obj))
}

async fn empty_namespace(objects: &Objects, ns: &str) -> Result<(), ApiError> {
    for res in RESOURCES.iter().filter(|r: &&Resource| r.namespaced) {
        let (items, _, _) = objects.list(&res.prefix(Some(ns)), None, 0, 0).await?;
        for s in items {
            let key = res.key(
                Some(ns),
                s.object["metadata"]["name"].as_str().unwrap_or(""),
            );
            if res.kind == "Service" {
                release_service(objects, &s.object).await?;
            }
            objects.delete(&key, s.rev).await?;
        }
    }
    Ok(())
}

/// What Kubernetes lets a pod update change in its spec.
const UPDATABLE_POD_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Kubernetes' claim update rule: the spec is fixed once created, but for
/// the volume it is bound to (set once, by the binder). Resizing is refused
/// as for a class that does not allow expansion: no provisioner here can
/// grow a volume.
pub fn check_claim_update(old: &Value, new: &Value) -> Result<(), Cause> {
    let (o, n) = (&old["spec"], &new["spec"]);
    if o == n {
        return Ok(());
    }
    let storage = |s: &Value| s["resources"]["requests"]["storage"].clone();
    if storage(o) != storage(n) {
        return Err(Cause::forbidden(
            "spec.resources.requests.storage",
            "Forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        ));
    }
    let mut allowed = o.clone();
    if o["volumeName"].as_str().is_none_or(str::is_empty) {
        allowed["volumeName"] = n["volumeName"].clone();
        if n["volumeName"].is_null()
            && let Some(m) = allowed.as_object_mut()
        {
            m.remove("volumeName");
        }
    }
    if allowed == *n {
        return Ok(());
    }
    Err(Cause::forbidden(
        "spec",
        "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
    ))
}

/// Kubernetes' rule for `pods/NAME/ephemeralcontainers`: ephemeral
/// containers may be added, never changed or taken away (they may have run).
pub fn check_ephemeral_update(old: &Value, new: &Value) -> Vec<Cause> {
    let list = |pod: &Value| -> Vec<Value> {
        pod["spec"]["ephemeralContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let new = list(new);
    let path = "spec.ephemeralContainers";
    let mut causes = Vec::new();
    for o in list(old) {
        let name = o["name"].as_str().unwrap_or("");
        match new.iter().find(|n| n["name"].as_str() == Some(name)) {
            None => causes.push(Cause::forbidden(
                path,
                format!("Forbidden: existing ephemeral containers \"{name}\" may not be removed"),
            )),
            Some(n) if *n != o => causes.push(Cause::forbidden(
                format!("{path}[{name}]"),
                format!("Forbidden: existing ephemeral containers \"{name}\" may not be changed"),
            )),
            Some(_) => {}
        }
    }
    causes
}

/// Kubernetes' pod update rule: a running pod's spec is fixed but for its
/// containers' images, its deadline, added tolerations, a negative grace
/// period set to 1 and scheduling gates taken away. The cause names the
/// fields that changed otherwise.
pub fn check_pod_update(old: &Value, new: &Value) -> Result<(), Cause> {
    // A null field is an absent one.
    fn strip_nulls(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, x| !x.is_null());
                m.values_mut().for_each(strip_nulls);
            }
            Value::Array(a) => a.iter_mut().for_each(strip_nulls),
            _ => {}
        }
    }
    let (mut old, mut new) = (old["spec"].clone(), new["spec"].clone());
    strip_nulls(&mut old);
    strip_nulls(&mut new);
    let (old, new) = (&old, &new);
    let mut allowed = old.clone();
    let take = |allowed: &mut Value, key: &str| match new.get(key) {
        Some(v) if !v.is_null() => allowed[key] = v.clone(),
        _ => {
            if let Some(m) = allowed.as_object_mut() {
                m.remove(key);
            }
        }
    };
    for list in ["containers", "initContainers"] {
        if let (Some(a), Some(n)) = (
            allowed.get_mut(list).and_then(Value::as_array_mut),
            new[list].as_array(),
        ) && a.len() == n.len()
        {
            for (a, n) in a.iter_mut().zip(n) {
                a["image"] = n["image"].clone();
            }
        }
    }
    // The deadline may be set or brought forward, never lifted or put off.
    let deadline = "spec.activeDeadlineSeconds";
    match (
        old["activeDeadlineSeconds"].as_i64(),
        &new["activeDeadlineSeconds"],
    ) {
        (_, n)
            if n.as_i64()
                .is_some_and(|n| !(0..=i32::MAX as i64).contains(&n)) =>
        {
            return Err(Cause::invalid(
                deadline,
                format!("Invalid value: {n}: must be between 0 and 2147483647, inclusive"),
            ));
        }
        (Some(o), n) if n.as_i64().is_some_and(|n| n > o) => {
            return Err(Cause::invalid(
                deadline,
                format!("Invalid value: {n}: must be less than or equal to previous value"),
            ));
        }
        (Some(_), Value::Null) => {
            return Err(Cause::invalid(
                deadline,
                "Invalid value: \"null\": must not update from a positive integer to nil value",
            ));
        }
        _ => take(&mut allowed, "activeDeadlineSeconds"),
    }
    let subset = |key: &str, of: &Value, within: &Value| {
        of[key]
            .as_array()
            .into_iter()
            .flatten()
            .all(|x| within[key].as_array().is_some_and(|w| w.contains(x)))
    };
    if subset("tolerations", old, new) {
        take(&mut allowed, "tolerations");
    }
    if subset("schedulingGates", new, old) {
        take(&mut allowed, "schedulingGates");
    }
    if old["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && new["terminationGracePeriodSeconds"] == 1
    {
        take(&mut allowed, "terminationGracePeriodSeconds");
    }
    if allowed == *new {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let (a, n) = (
        allowed.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let changed: std::collections::BTreeSet<&str> = a
        .iter()
        .filter(|(k, v)| n.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(n.keys().filter(|k| !a.contains_key(*k)).map(String::as_str))
        .collect();
    Err(Cause::forbidden(
        "spec",
        format!(
            "Forbidden: pod updates may not change fields other than {UPDATABLE_POD_FIELDS} (changed: {})",
            changed
                .into_iter()
                .map(|k| format!("spec.{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}
