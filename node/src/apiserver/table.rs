//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io`
//! answered with the same columns Kubernetes prints (`kubectl get` shows
//! priority-0 columns, `-o wide` all of them; kubectl hides the wide ones
//! itself, so every column is always sent).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::handlers::parse_rfc3339;
use super::resources::Resource;

/// Kubernetes' `HumanDuration`: 5s, 3m, 2m5s, 7h, 3d, 2y...
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 * 2 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rs = s % 60;
        return if rs == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rs}s")
        };
    }
    if m < 60 * 3 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rm = m % 60;
        return if rm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rm}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    if h < 24 * 8 {
        let rh = h % 24;
        return if rh == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{rh}h", h / 24)
        };
    }
    if h < 24 * 365 * 2 {
        return format!("{}d", h / 24);
    }
    if h < 24 * 365 * 8 {
        let dy = (h / 24) % 365;
        return if dy == 0 {
            format!("{}y", h / 24 / 365)
        } else {
            format!("{}y{dy}d", h / 24 / 365)
        };
    }
    format!("{}y", h / 24 / 365)
}

fn age_of(ts: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    match ts.as_str().and_then(parse_rfc3339) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The annotation that makes a StorageClass the default one.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(modes: &Value) -> String {
    modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn containers(spec: &Value) -> (String, String) {
    let cs = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

fn selector(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let vals: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let key = s(&e["key"]);
        parts.push(match e["operator"].as_str() {
            Some("In") => format!("{key} in ({})", vals.join(",")),
            Some("NotIn") => format!("{key} notin ({})", vals.join(",")),
            Some("Exists") => key,
            Some("DoesNotExist") => format!("!{key}"),
            _ => key,
        });
    }
    or_none(parts.join(","))
}

fn map_selector(m: &Value) -> String {
    or_none(
        m.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn pod_status(pod: &Value) -> String {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    let mut reason = s(&pod["status"]["phase"]);
    if let Some(r) = pod["status"]["reason"].as_str() {
        reason = r.to_string();
    }
    for c in pod["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = c["state"]["waiting"]["reason"]
            .as_str()
            .filter(|r| *r != "PodInitializing")
        {
            return format!("Init:{r}");
        }
        if c["state"]["terminated"]["exitCode"]
            .as_i64()
            .is_some_and(|c| c != 0)
        {
            return "Init:Error".into();
        }
    }
    for c in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            reason = r.to_string();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            reason = r.to_string();
        } else if c["state"]["terminated"].is_object() {
            let code = int(&c["state"]["terminated"]["exitCode"]);
            reason = format!("ExitCode:{code}");
        }
    }
    if reason.is_empty() {
        "Pending".into()
    } else {
        reason
    }
}

type Col = (&'static str, &'static str, i32);

fn columns(kind: &str) -> Vec<Col> {
    match kind {
        "Pod" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        "Deployment" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "DaemonSet" => vec![
            ("Name", "string", 0),
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "StatefulSet" => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        "Job" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "CronJob" => vec![
            ("Name", "string", 0),
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "Service" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Endpoints" => vec![
            ("Name", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" => vec![
            ("Name", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        "Secret" => vec![
            ("Name", "string", 0),
            ("Type", "string", 0),
            ("Data", "string", 0),
            ("Age", "string", 0),
        ],
        "ServiceAccount" => vec![
            ("Name", "string", 0),
            ("Secrets", "string", 0),
            ("Age", "string", 0),
        ],
        "Namespace" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        "Node" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        "Event" => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "Ingress" => vec![
            ("Name", "string", 0),
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            ("Age", "string", 0),
        ],
        "IngressClass" => vec![
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            ("Age", "string", 0),
        ],
        "EndpointSlice" => vec![
            ("Name", "string", 0),
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ],
        "Lease" => vec![
            ("Name", "string", 0),
            ("Holder", "string", 0),
            ("Age", "string", 0),
        ],
        "ControllerRevision" => vec![
            ("Name", "string", 0),
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            ("Age", "string", 0),
        ],
        "RuntimeClass" => vec![
            ("Name", "string", 0),
            ("Handler", "string", 0),
            ("Age", "string", 0),
        ],
        "PriorityClass" => vec![
            ("Name", "string", 0),
            ("Value", "integer", 0),
            ("Global-Default", "boolean", 0),
            ("Age", "string", 0),
            ("PreemptionPolicy", "string", 0),
        ],
        "PodDisruptionBudget" => vec![
            ("Name", "string", 0),
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            ("Age", "string", 0),
        ],
        "PersistentVolume" => vec![
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        "StorageClass" => vec![
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ],
        "PersistentVolumeClaim" => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
        ],
        "Role" | "ClusterRole" => vec![("Name", "string", 0), ("Created At", "string", 0)],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            ("Name", "string", 0),
            ("Role", "string", 0),
            ("Age", "string", 0),
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        _ => vec![("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(&o["metadata"]["name"]);
    let age = age_of(&o["metadata"]["creationTimestamp"]);
    let spec = &o["spec"];
    let st = &o["status"];
    match kind {
        "Pod" => {
            let statuses = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = spec["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|c| int(&c["restartCount"])).sum();
            let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age),
                json!(or_none(s(&st["podIP"]))),
                json!(or_none(s(&spec["nodeName"]))),
                json!(or_none(s(&st["nominatedNodeName"]))),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        "Deployment" => {
            let (cs, imgs) = containers(&spec["template"]["spec"]);
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    int(&st["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(int(&st["updatedReplicas"])),
                json!(int(&st["availableReplicas"])),
                json!(age),
                json!(cs),
                json!(imgs),
                json!(selector(&spec["selector"])),
            ]
        }
        "ReplicaSet" => {
            let (cs, imgs) = containers(&spec["template"]["spec"]);
            vec![
                json!(name),
                json!(int(&spec["replicas"])),
                json!(int(&st["replicas"])),
                json!(int(&st["readyReplicas"])),
                json!(age),
                json!(cs),
                json!(imgs),
                json!(selector(&spec["selector"])),
            ]
        }
        "DaemonSet" => {
            let (cs, imgs) = containers(&spec["template"]["spec"]);
            vec![
                json!(name),
                json!(int(&st["desiredNumberScheduled"])),
                json!(int(&st["currentNumberScheduled"])),
                json!(int(&st["numberReady"])),
                json!(int(&st["updatedNumberScheduled"])),
                json!(int(&st["numberAvailable"])),
                json!(map_selector(&spec["template"]["spec"]["nodeSelector"])),
                json!(age),
                json!(cs),
                json!(imgs),
                json!(selector(&spec["selector"])),
            ]
        }
        "StatefulSet" => {
            let (cs, imgs) = containers(&spec["template"]["spec"]);
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    int(&st["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(age),
                json!(cs),
                json!(imgs),
            ]
        }
        "Job" => {
            let (cs, imgs) = containers(&spec["template"]["spec"]);
            let conds = st["conditions"].as_array().cloned().unwrap_or_default();
            let has = |t: &str| {
                conds
                    .iter()
                    .any(|c| c["type"] == t && c["status"] == "True")
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match (
                st["startTime"].as_str().and_then(parse_rfc3339),
                st["completionTime"].as_str().and_then(parse_rfc3339),
            ) {
                (Some(a), Some(b)) => human_duration(b - a),
                (Some(a), None) => human_duration(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()) as i64
                        - a,
                ),
                _ => String::new(),
            };
            vec![
                json!(name),
                json!(status),
                json!(format!(
                    "{}/{}",
                    int(&st["succeeded"]),
                    spec["completions"].as_i64().unwrap_or(1)
                )),
                json!(duration),
                json!(age),
                json!(cs),
                json!(imgs),
                json!(selector(&spec["selector"])),
            ]
        }
        "CronJob" => {
            let (cs, imgs) = containers(&spec["jobTemplate"]["spec"]["template"]["spec"]);
            let last = st["lastScheduleTime"]
                .as_str()
                .map_or("<none>".to_string(), |_| age_of(&st["lastScheduleTime"]));
            vec![
                json!(name),
                json!(s(&spec["schedule"])),
                json!(or_none(s(&spec["timeZone"]))),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(st["active"].as_array().map_or(0, Vec::len)),
                json!(last),
                json!(age),
                json!(cs),
                json!(imgs),
                json!(selector(&spec["jobTemplate"]["spec"]["selector"])),
            ]
        }
        "Service" => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let base = if p["nodePort"].is_i64() {
                        format!("{}:{}", int(&p["port"]), int(&p["nodePort"]))
                    } else {
                        int(&p["port"]).to_string()
                    };
                    format!("{base}/{}", p["protocol"].as_str().unwrap_or("TCP"))
                })
                .collect();
            let ext: Vec<String> = st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| s(&i["ip"]))
                .collect();
            let ext = if !ext.is_empty() {
                ext.join(",")
            } else if spec["type"] == "LoadBalancer" {
                "<pending>".into()
            } else {
                spec["externalIPs"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .filter(|x| !x.is_empty())
                    .unwrap_or("<none>".into())
            };
            vec![
                json!(name),
                json!(s(&spec["type"])),
                json!(or_none(s(&spec["clusterIP"]))),
                json!(ext),
                json!(or_none(ports.join(","))),
                json!(age),
                json!(map_selector(&spec["selector"])),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o["subsets"].as_array().into_iter().flatten() {
                for a in sub["addresses"].as_array().into_iter().flatten() {
                    for p in sub["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", s(&a["ip"]), int(&p["port"])));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                or_none(eps.join(","))
            };
            vec![json!(name), json!(shown), json!(age)]
        }
        "ConfigMap" => {
            let n = o["data"].as_object().map_or(0, |m| m.len())
                + o["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(name), json!(n), json!(age)]
        }
        "Secret" => vec![
            json!(name),
            json!(s(&o["type"])),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            json!(age),
        ],
        "ServiceAccount" => vec![
            json!(name),
            json!(o["secrets"].as_array().map_or(0, Vec::len)),
            json!(age),
        ],
        "Namespace" => vec![json!(name), json!(s(&st["phase"])), json!(age)],
        "Node" => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready");
            let mut status = match ready.map(|c| s(&c["status"])) {
                Some(x) if x == "True" => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if spec["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            let addr = |t: &str| {
                st["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .map(|a| s(&a["address"]))
                    .unwrap_or("<none>".into())
            };
            let info = &st["nodeInfo"];
            vec![
                json!(name),
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age),
                json!(s(&info["kubeletVersion"])),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(&info["osImage"])),
                json!(s(&info["kernelVersion"])),
                json!(s(&info["containerRuntimeVersion"])),
            ]
        }
        "Event" => {
            let last = if o["lastTimestamp"].is_string() {
                age_of(&o["lastTimestamp"])
            } else {
                age_of(&o["eventTime"])
            };
            let obj = format!(
                "{}/{}",
                s(&o["involvedObject"]["kind"]).to_lowercase(),
                s(&o["involvedObject"]["name"])
            );
            vec![
                json!(last),
                json!(s(&o["type"])),
                json!(s(&o["reason"])),
                json!(obj),
                json!(s(&o["message"])),
            ]
        }
        "Ingress" => {
            let hosts: Vec<String> = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["host"].as_str().unwrap_or("*").to_string())
                .collect();
            let addrs: Vec<String> = st["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| s(&i["ip"]))
                .collect();
            let ports = if spec["tls"].as_array().is_some_and(|t| !t.is_empty()) {
                "80, 443"
            } else {
                "80"
            };
            vec![
                json!(name),
                json!(or_none(s(&spec["ingressClassName"]))),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(addrs.join(",")),
                json!(ports),
                json!(age),
            ]
        }
        "IngressClass" => vec![
            json!(name),
            json!(s(&spec["controller"])),
            json!(or_none(s(&spec["parameters"]["name"]))),
            json!(age),
        ],
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| int(&p["port"]).to_string())
                .collect();
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .map(|a| s(&a))
                .collect();
            vec![
                json!(name),
                json!(s(&o["addressType"])),
                json!(or_none(ports.join(","))),
                json!(or_none(eps.join(","))),
                json!(age),
            ]
        }
        "ControllerRevision" => {
            let controller = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == json!(true))
                .map(|r| {
                    let group = s(&r["apiVersion"])
                        .split_once('/')
                        .map(|(g, _)| format!(".{g}"))
                        .unwrap_or_default();
                    format!("{}{group}/{}", s(&r["kind"]).to_lowercase(), s(&r["name"]))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(controller),
                json!(int(&o["revision"])),
                json!(age),
            ]
        }
        "Lease" => vec![
            json!(name),
            json!(or_none(s(&spec["holderIdentity"]))),
            json!(age),
        ],
        "RuntimeClass" => vec![json!(name), json!(s(&o["handler"])), json!(age)],
        "PriorityClass" => vec![
            json!(name),
            json!(o["value"].as_i64().unwrap_or(0)),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            json!(age),
            json!(s(&o["preemptionPolicy"])),
        ],
        "PodDisruptionBudget" => {
            let intstr = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                json!(name),
                json!(intstr(&spec["minAvailable"])),
                json!(intstr(&spec["maxUnavailable"])),
                json!(int(&st["disruptionsAllowed"])),
                json!(age),
            ]
        }
        "PersistentVolume" => vec![
            json!(name),
            json!(s(&spec["capacity"]["storage"])),
            json!(access_modes(&spec["accessModes"])),
            json!(s(&spec["persistentVolumeReclaimPolicy"])),
            json!(s(&st["phase"])),
            json!(match spec["claimRef"]["name"].as_str() {
                Some(n) => format!("{}/{n}", s(&spec["claimRef"]["namespace"])),
                None => String::new(),
            }),
            json!(s(&spec["storageClassName"])),
            json!(or_none(s(&spec["volumeAttributesClassName"]))),
            json!(s(&st["reason"])),
            json!(age),
            json!(s(&spec["volumeMode"])),
        ],
        "StorageClass" => vec![
            json!(if o["metadata"]["annotations"][DEFAULT_CLASS] == "true" {
                format!("{name} (default)")
            } else {
                name.to_string()
            }),
            json!(s(&o["provisioner"])),
            json!(match o["reclaimPolicy"].as_str() {
                Some(p) => p.to_string(),
                None => "Delete".into(),
            }),
            json!(match o["volumeBindingMode"].as_str() {
                Some(m) => m.to_string(),
                None => "Immediate".into(),
            }),
            json!(
                o["allowVolumeExpansion"]
                    .as_bool()
                    .unwrap_or(false)
                    .to_string()
            ),
            json!(age),
        ],
        "PersistentVolumeClaim" => vec![
            json!(name),
            json!(s(&st["phase"])),
            json!(s(&spec["volumeName"])),
            json!(s(&st["capacity"]["storage"])),
            json!(access_modes(&st["accessModes"])),
            json!(or_none(s(&spec["storageClassName"]))),
            json!(or_none(s(&spec["volumeAttributesClassName"]))),
            json!(age),
        ],
        "Role" | "ClusterRole" => vec![json!(name), json!(s(&o["metadata"]["creationTimestamp"]))],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
            let of = |k: &str| {
                subjects
                    .iter()
                    .filter(|x| x["kind"] == k)
                    .map(|x| {
                        if k == "ServiceAccount" {
                            format!("{}/{}", s(&x["namespace"]), s(&x["name"]))
                        } else {
                            s(&x["name"])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    s(&o["roleRef"]["kind"]),
                    s(&o["roleRef"]["name"])
                )),
                json!(age),
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        _ => vec![json!(name), json!(age)],
    }
}

/// A `meta.k8s.io/v1` Table of `items`.
pub fn to_table(res: &Resource, items: &[Value], rv: &str, cont: Option<&str>) -> Value {
    let cols: Vec<Value> = columns(res.kind)
        .iter()
        .map(|(name, ty, prio)| {
            let mut c = json!({"name": name, "type": ty, "format": "", "description": "", "priority": prio});
            if *name == "Name" {
                c["format"] = json!("name");
            }
            c
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(res.kind, o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn pod_rows_show_ready_status_and_restarts() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        });
        let c = cells("Pod", &pod);
        assert_eq!(c[0], "web-1");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3");
        assert_eq!(c[5], "10.42.0.5");
        assert_eq!(c[6], "n1");
        assert_eq!(columns("Pod").len(), c.len());
    }
}
