//! This host as a Kubernetes Node: registration (labels, capacity, system
//! info, addresses), the status heartbeat (conditions every
//! [`Tuning::status_interval`](super::Tuning)) and the node Lease in
//! `kube-node-lease`, renewed every [`Tuning::lease_renew`](super::Tuning),
//! by which the node lifecycle controller knows the node is alive.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use skiff_sched::model::{LABEL_ARCH, LABEL_HOSTNAME, LABEL_OS};
use skiff_sdk::client::{Api, Client, PatchType};
use tokio::sync::watch;

use super::admit::Capacity;
use super::{AgentConfig, Tuning};
use crate::controllers::events::now;

/// The label that sends wasm pods here.
pub const LABEL_RUNTIME_WASM: &str = skiff_sched::model::LABEL_RUNTIME_WASM;
use crate::controllers::volumes::ANNOTATION_STORAGE;
pub const LABEL_RUNTIME_OCI: &str = skiff_sched::model::LABEL_RUNTIME_OCI;
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";
pub const RUNTIME_VERSION: &str = "wasmtime://48";
/// Pods per node, the kubelet's default `maxPods`.
pub const MAX_PODS: i64 = 110;
/// The kubelet's default hard eviction threshold `memory.available<100Mi`.
const MEMORY_PRESSURE_BELOW: u64 = 100 << 20;

/// What the agent reads about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    pub cpus: i64,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub hostname: String,
    pub internal_ip: IpAddr,
    /// The port of the agent's log endpoint, advertised as the Node's
    /// `status.daemonEndpoints.kubeletEndpoint`.
    pub kubelet_port: Option<u16>,
    /// Linux containers run here (label `skiff.dev/runtime-oci`).
    pub containers: bool,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

impl SystemInfo {
    pub fn read() -> SystemInfo {
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        let machine_id = read_trimmed("/etc/machine-id").unwrap_or_default();
        SystemInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
            memory_bytes: meminfo("MemTotal").unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            hostname: read_trimmed("/proc/sys/kernel/hostname")
                .unwrap_or_else(|| "localhost".into()),
            internal_ip: internal_ip(),
            kubelet_port: None,
            containers: false,
            machine_id,
        }
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            cpu_millis: self.cpus * 1000,
            memory: i64::try_from(self.memory_bytes).unwrap_or(i64::MAX),
            pods: MAX_PODS,
        }
    }
}

/// The address other hosts reach this one at: the source address of the
/// default route (a UDP "connection" sends nothing), or loopback on a host
/// without one.
fn internal_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Kubernetes' name of this CPU architecture (`amd64`, `arm64`).
pub fn arch() -> &'static str {
    oci_bridge::kube_arch()
}

/// The directory of the volumes provisioned on this node.
pub fn storage_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("storage")
}

/// The Node's labels: the well-known ones, the runtime's, then the
/// configured ones (which may override).
pub fn labels(cfg: &AgentConfig, containers: bool) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (LABEL_HOSTNAME.to_string(), cfg.node_name.clone()),
        (LABEL_OS.to_string(), "linux".to_string()),
        (LABEL_ARCH.to_string(), arch().to_string()),
        (LABEL_RUNTIME_WASM.to_string(), "true".to_string()),
    ]);
    if containers {
        l.insert(LABEL_RUNTIME_OCI.to_string(), "true".to_string());
    }
    if cfg.ingress.http.is_some() || cfg.ingress.https.is_some() {
        l.insert(
            crate::controllers::ingressstatus::LABEL_INGRESS_GATEWAY.to_string(),
            "true".to_string(),
        );
    }
    l.extend(cfg.labels.clone());
    l
}

/// The Node's status. Conditions keep their `lastTransitionTime` from
/// `previous` while their status is unchanged.
pub fn status(
    sys: &SystemInfo,
    previous: Option<&NodeStatus>,
    mem_available: Option<u64>,
) -> NodeStatus {
    let t = Time(now());
    let cap = sys.capacity();
    let resources = BTreeMap::from([
        (
            "cpu".to_string(),
            Quantity(cap.cpu_millis.div_euclid(1000).to_string()),
        ),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", sys.memory_bytes / 1024)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
    ]);
    let pressure = mem_available.is_some_and(|a| a < MEMORY_PRESSURE_BELOW);
    let conds = [
        (
            "MemoryPressure",
            pressure,
            if pressure {
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                )
            } else {
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                )
            },
        ),
        (
            "DiskPressure",
            false,
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        (
            "PIDPressure",
            false,
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
        (
            "Ready",
            true,
            ("KubeletReady", "kubelet is posting ready status"),
        ),
    ];
    let conditions = conds
        .iter()
        .map(|(type_, on, (reason, message))| {
            let status = if *on { "True" } else { "False" };
            let since = previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == *type_ && c.status == status))
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| t.clone());
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message.to_string()),
                last_heartbeat_time: Some(t.clone()),
                last_transition_time: Some(since),
            }
        })
        .collect();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: sys.internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: sys.hostname.clone(),
            },
        ]),
        daemon_endpoints: sys.kubelet_port.map(|port| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().into(),
            operating_system: "linux".into(),
            kernel_version: sys.kernel.clone(),
            os_image: sys.os_image.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            container_runtime_version: RUNTIME_VERSION.into(),
            machine_id: sys.machine_id.clone(),
            system_uuid: sys.machine_id.clone(),
            boot_id: sys.boot_id.clone(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// Creates the Node, or updates the labels of the one that exists (its
/// taints are the node lifecycle controller's to manage), then posts its
/// status. Returns the Node as stored.
pub async fn register(
    client: &Client,
    cfg: &AgentConfig,
    sys: &SystemInfo,
) -> anyhow::Result<Node> {
    let api: Api<Node> = Api::all(client);
    let name = cfg.node_name.as_str();
    let labels = labels(cfg, sys.containers);
    // Where volumes provisioned on this node live (see controllers::volumes).
    let storage = std::path::absolute(storage_dir(&cfg.data_dir))
        .unwrap_or_else(|_| storage_dir(&cfg.data_dir))
        .display()
        .to_string();
    let node = match api.get_opt(name).await? {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([
                        ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                        (ANNOTATION_STORAGE.to_string(), storage.clone()),
                    ])),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&node).await {
                Ok(n) => n,
                Err(e) if e.is_already_exists() => api.get(name).await?,
                Err(e) => return Err(e).context("creating the Node"),
            }
        }
        Some(existing) => {
            let current = existing.metadata.labels.clone().unwrap_or_default();
            let published = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_STORAGE));
            if labels.iter().all(|(k, v)| current.get(k) == Some(v)) && published == Some(&storage)
            {
                existing
            } else {
                api.patch(
                    name,
                    PatchType::Merge,
                    &serde_json::json!({"metadata": {
                        "labels": labels,
                        "annotations": {ANNOTATION_STORAGE: storage},
                    }}),
                )
                .await
                .context("updating the Node's labels")?
            }
        }
    };
    post_status(&api, name, sys, node.status.as_ref()).await
}

async fn post_status(
    api: &Api<Node>,
    name: &str,
    sys: &SystemInfo,
    previous: Option<&NodeStatus>,
) -> anyhow::Result<Node> {
    let status = status(sys, previous, meminfo("MemAvailable"));
    api.patch_status(
        name,
        PatchType::Merge,
        &serde_json::json!({ "status": status }),
    )
    .await
    .context("posting the Node status")
}

/// Renews the Lease and posts the status until `stop`; re-registers the
/// Node if it was deleted.
pub async fn heartbeat(
    client: Client,
    cfg: AgentConfig,
    tuning: Tuning,
    sys: SystemInfo,
    mut node: Node,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<Node> = Api::all(&client);
    let leases: Api<Lease> = Api::namespaced(&client, "kube-node-lease");
    let name = cfg.node_name.clone();
    let mut lease: Option<Lease> = None;
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew(&leases, &mut lease, &node, &tuning).await {
            tracing::warn!(node = %name, "renewing the node lease: {e:#}");
        }
        if last_status.elapsed() >= tuning.status_interval {
            last_status = tokio::time::Instant::now();
            match post_status(&api, &name, &sys, node.status.as_ref()).await {
                Ok(n) => node = n,
                Err(e) if is_not_found(&e) => {
                    tracing::warn!(node = %name, "the Node was deleted; registering it again");
                    match register(&client, &cfg, &sys).await {
                        Ok(n) => {
                            node = n;
                            lease = None;
                        }
                        Err(e) => tracing::warn!(node = %name, "registering: {e:#}"),
                    }
                }
                Err(e) => tracing::warn!(node = %name, "{e:#}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tuning.lease_renew) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<skiff_sdk::client::Error>()
        .is_some_and(|e| e.is_not_found())
}

/// One renewal: update the cached Lease, or read or create it when the
/// cache is missing or stale.
async fn renew(
    api: &Api<Lease>,
    cached: &mut Option<Lease>,
    node: &Node,
    tuning: &Tuning,
) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let spec = LeaseSpec {
        holder_identity: Some(name.clone()),
        lease_duration_seconds: Some(tuning.lease_duration.as_secs().max(1) as i32),
        renew_time: Some(MicroTime(now())),
        ..Default::default()
    };
    for _ in 0..2 {
        let mut lease = match cached.take() {
            Some(l) => l,
            None => match api.get_opt(&name).await? {
                Some(l) => l,
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some("kube-node-lease".into()),
                            owner_references: owner(node),
                            ..Default::default()
                        },
                        spec: Some(spec.clone()),
                    };
                    match api.create(&lease).await {
                        Ok(l) => {
                            *cached = Some(l);
                            return Ok(());
                        }
                        Err(e) if e.is_already_exists() => continue,
                        Err(e) => return Err(e).context("creating the lease"),
                    }
                }
            },
        };
        lease.spec = Some(LeaseSpec {
            acquire_time: lease.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            ..spec.clone()
        });
        if lease.metadata.owner_references.is_none() {
            lease.metadata.owner_references = owner(node);
        }
        match api.replace(&lease).await {
            Ok(l) => {
                *cached = Some(l);
                return Ok(());
            }
            // Someone else wrote it (or it was deleted): read it again.
            Err(e) if e.is_conflict() || e.is_not_found() => continue,
            Err(e) => return Err(e).context("updating the lease"),
        }
    }
    anyhow::bail!("the lease kept changing under the agent")
}

fn owner(node: &Node) -> Option<Vec<OwnerReference>> {
    let uid = node.metadata.uid.clone()?;
    Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone().unwrap_or_default(),
        uid,
        ..Default::default()
    }])
}

/// How long to wait between registration attempts.
pub const REGISTER_RETRY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn sys() -> SystemInfo {
        SystemInfo {
            cpus: 4,
            memory_bytes: 8 << 30,
            kernel: "6.1.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            hostname: "h".into(),
            internal_ip: "10.0.0.5".parse().unwrap(),
            kubelet_port: Some(10250),
            containers: false,
        }
    }

    #[test]
    fn status_reports_capacity_info_and_ready() {
        let s = status(&sys(), None, Some(4 << 30));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["capacity"]["cpu"], "4");
        assert_eq!(v["allocatable"]["memory"], "8388608Ki");
        assert_eq!(v["capacity"]["pods"], "110");
        assert_eq!(v["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(v["nodeInfo"]["containerRuntimeVersion"], RUNTIME_VERSION);
        assert_eq!(v["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(v["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        // Under 100Mi available: memory pressure.
        let s = status(&sys(), Some(&s), Some(50 << 20));
        let mp = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(mp.status, "True");
    }

    #[test]
    fn labels_include_the_runtime_and_the_configured_ones() {
        let cfg = AgentConfig {
            node_name: "n1".into(),
            data_dir: "/tmp".into(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            kubelet_listen: None,
            serving: None,
            control_streams: None,
            ingress: Default::default(),
        };
        let l = labels(&cfg, false);
        assert_eq!(l[LABEL_RUNTIME_WASM], "true");
        assert_eq!(l[LABEL_HOSTNAME], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["zone"], "a");
        assert!(!l.contains_key(LABEL_RUNTIME_OCI));
        assert_eq!(labels(&cfg, true)[LABEL_RUNTIME_OCI], "true");
    }
}
