//! The node agent: skiff's kubelet. It registers this host as a Node (and
//! keeps its Lease and status fresh), watches the pods bound to it, and runs
//! them through the runtime trait (`wasm-shim` for `runtimeClassName: wasm`,
//! `oci-bridge` for the other pods): admission, pod IPs and container pods'
//! network namespaces,
//! env and volumes, init containers, restart back-off, probes, graceful
//! termination, and pod status written through `pods/status`.
//!
//! ```text
//! informer (pods, spec.nodeName=<node>) ──▶ dispatcher ──admit──▶ one worker task per pod
//!                                                                   │ plan.rs: what to start (pure)
//!                                                                   │ status.rs: the status (pure)
//!                                                                   ▼
//!                                     Runtime (prepare/start/stop/wait/exec) + HTTP listener
//! ```
//!
//! Each pod has one worker ([`worker`]), so a pod is never handled by two
//! tasks at once; container exits and probe results come back to it as
//! messages. Wasm instances live in this process: when the agent restarts,
//! pods the API says are running are started again (their last state
//! `Unknown`, exit code 255), and the pod IPs, saved in the data directory,
//! are kept.
//!
//! State under [`AgentConfig::data_dir`]: `wasm/` (the compile cache),
//! `oci/` (container images, bundles, runc's state),
//! `pods/<uid>/volumes/` (volumes), `logs/` (container logs, see
//! [`log_path`]), `pod-ips.json`.

mod admit;
mod backoff;
mod etc;
mod exec;
mod ipam;
pub mod logs;
mod node;
mod plan;
mod podnet;
mod portforward;
mod probe;
pub mod proxy;
mod resolve;
mod status;
mod storage;
pub mod tunnel;
mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use consensus::pki::NodeTls;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::Mutex;
use skiff_sched::Resources;
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::{Api, Client, ListParams};
use skiff_sdk::runtime::{
    ContainerSpec, HttpHandlerSpec, ImageKind, ImageSource, PreparedImage, Runtime, Workload,
};
use tokio::sync::{mpsc, watch};
use wasm_shim::{RuntimeConfig, WasmRuntime};

use crate::controllers::events::Recorder;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// Where the agent keeps pod logs, volumes and the compile cache.
    pub data_dir: PathBuf,
    /// Extra labels for the Node (`--node-label k=v`).
    pub labels: BTreeMap<String, String>,
    /// Where the log endpoint listens (port 0: any free port); `None`
    /// opens no port. The Node advertises the port bound and, for a
    /// specific address, that address as its InternalIP.
    pub kubelet_listen: Option<SocketAddr>,
    /// The certificate the log endpoint presents (`system:node:<name>`,
    /// valid for the node name) and the CA its clients must come from;
    /// without it the agent serves no logs.
    pub serving: Option<NodeTls>,
    /// The streams the control plane opens on the agent's QUIC connection,
    /// served as the log endpoint is.
    pub control_streams: Option<logs::ControlStreams>,
    /// Where the ingress gateway listens (`None`: no gateway on that port).
    pub ingress: proxy::IngressListen,
}

/// Settings with Kubernetes' values by default, which tests shorten.
/// [`run`] reads them from the environment ([`Tuning::from_env`]).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The first crash back-off delay; it doubles up to `max_backoff`
    /// (Kubernetes: 10 s and 300 s). `SKIFF_AGENT_INITIAL_BACKOFF`.
    pub initial_backoff: Duration,
    /// `SKIFF_AGENT_MAX_BACKOFF`.
    pub max_backoff: Duration,
    /// `X` of the pod IPs `127.42.X.Y` (default: a hash of the node name).
    /// `SKIFF_AGENT_POD_IP_BLOCK`.
    pub pod_ip_block: Option<u8>,
    /// How often the node Lease is renewed (Kubernetes: 10 s; skiff's node
    /// controller expects a renewal within 10 s, so 2 s).
    pub lease_renew: Duration,
    pub lease_duration: Duration,
    /// How often the Node's status (conditions, heartbeat) is posted.
    pub status_interval: Duration,
    /// Run Linux containers (runc) when the host can;
    /// `SKIFF_AGENT_CONTAINERS=false` makes a wasm-only node.
    pub containers: bool,
    /// Run the service proxy (cluster IPs and node ports);
    /// `SKIFF_AGENT_SERVICE_PROXY=false` leaves Services to something else.
    pub service_proxy: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            pod_ip_block: None,
            lease_renew: Duration::from_secs(2),
            lease_duration: Duration::from_secs(10),
            status_interval: Duration::from_secs(10),
            containers: true,
            service_proxy: true,
        }
    }
}

impl Tuning {
    /// The defaults, overridden by `SKIFF_AGENT_INITIAL_BACKOFF`,
    /// `SKIFF_AGENT_MAX_BACKOFF` (durations like `1s`, `500ms`, `2m`) and
    /// `SKIFF_AGENT_POD_IP_BLOCK` (1..=254).
    pub fn from_env() -> anyhow::Result<Tuning> {
        let mut t = Tuning::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("SKIFF_AGENT_INITIAL_BACKOFF") {
            t.initial_backoff =
                parse_duration(&v).with_context(|| format!("SKIFF_AGENT_INITIAL_BACKOFF={v:?}"))?;
        }
        if let Some(v) = var("SKIFF_AGENT_MAX_BACKOFF") {
            t.max_backoff =
                parse_duration(&v).with_context(|| format!("SKIFF_AGENT_MAX_BACKOFF={v:?}"))?;
        }
        if let Some(v) = var("SKIFF_AGENT_POD_IP_BLOCK") {
            let b: u8 = v
                .parse()
                .ok()
                .filter(|b| *b > 0 && *b < 255)
                .with_context(|| format!("SKIFF_AGENT_POD_IP_BLOCK={v:?} is not in 1..=254"))?;
            t.pod_ip_block = Some(b);
        }
        let flag = |name: &str, v: &str| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(anyhow::anyhow!("{name}={v:?} is neither true nor false")),
        };
        if let Some(v) = var("SKIFF_AGENT_CONTAINERS") {
            t.containers = flag("SKIFF_AGENT_CONTAINERS", &v)?;
        }
        if let Some(v) = var("SKIFF_AGENT_SERVICE_PROXY") {
            t.service_proxy = flag("SKIFF_AGENT_SERVICE_PROXY", &v)?;
        }
        Ok(t)
    }

    fn backoff(&self) -> backoff::Policy {
        backoff::Policy {
            initial: self.initial_backoff,
            max: self.max_backoff.max(self.initial_backoff),
        }
    }
}

/// `500ms`, `10s`, `2m`.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .context("expected a number and a unit (ms, s, m)")?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        other => anyhow::bail!("unknown unit {other:?} (ms, s, m)"),
    })
}

/// Where a container's log is: one CRI-format file per container of a pod
/// for its current instance (the one running, or the last to end), started
/// afresh when a new pod of the same name first runs it, removed with the
/// pod. When the container restarts, the file becomes
/// [`previous_log_path`] (what `kubectl logs --previous` reads), as the
/// kubelet keeps one log per instance.
pub fn log_path(data_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    pod_log_dir(data_dir, namespace, pod).join(format!("{container}.log"))
}

/// The log of the instance before the current one.
pub fn previous_log_path(data_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    pod_log_dir(data_dir, namespace, pod).join(format!("{container}.previous.log"))
}

fn pod_log_dir(data_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{namespace}_{pod}"))
}

/// What every pod worker shares.
pub(crate) struct Ctx {
    pub client: Client,
    pub cfg: AgentConfig,
    pub tuning: Tuning,
    pub runtime: WasmRuntime,
    /// Linux containers, when this host can run them
    /// ([`oci_bridge::host_supports_containers`]).
    pub oci: Option<oci_bridge::OciRuntime>,
    pub recorder: Recorder,
    pub ips: Mutex<ipam::PodIps>,
    pub host_ip: IpAddr,
    pub capacity: admit::Capacity,
    /// Component digest → whether it is an HTTP handler.
    workloads: Mutex<HashMap<String, bool>>,
    /// Images prepared since the agent started.
    pulled: Mutex<HashSet<String>>,
    /// Every Service, for the containers' environment variables.
    services: Arc<Store<Service>>,
}

impl Ctx {
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::new(self.runtime.clone())
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.cfg.data_dir.join("pods").join(uid)
    }

    pub fn mark_pulled(&self, image: &str) -> bool {
        !self.pulled.lock().insert(image.to_string())
    }

    /// The shape of workload an image is: a core module is a command; a
    /// component is an HTTP handler if it exports `wasi:http` (tried by
    /// starting it as one under a throwaway id — that runs no guest code),
    /// else a command. Remembered per digest.
    pub async fn workload(&self, source: &ImageSource, prepared: &PreparedImage) -> Workload {
        let http = Workload::HttpHandler(HttpHandlerSpec::default());
        if prepared.kind != ImageKind::WasmComponent {
            return Workload::Command;
        }
        if let Some(&is_http) = self.workloads.lock().get(&prepared.digest) {
            return if is_http { http } else { Workload::Command };
        }
        let id = format!("workload-probe-{}", rand::random::<u64>());
        let log = self.cfg.data_dir.join("wasm").join(format!("{id}.log"));
        let mut spec = ContainerSpec::new(id.clone(), source.clone(), &log);
        spec.workload = http.clone();
        let is_http = match self.runtime.start(spec).await {
            Ok(s) => s.is_running(),
            Err(_) => false,
        };
        let _ = self.runtime.remove(&id.as_str().into()).await;
        let _ = std::fs::remove_file(&log);
        self.workloads
            .lock()
            .insert(prepared.digest.clone(), is_http);
        if is_http { http } else { Workload::Command }
    }
}

/// Runs the agent with [`Tuning::from_env`] until `stop` turns true.
pub async fn run(
    client: Client,
    cfg: AgentConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let tuning = Tuning::from_env()?;
    run_with(client, cfg, tuning, stop).await
}

pub async fn run_with(
    client: Client,
    cfg: AgentConfig,
    tuning: Tuning,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let services: Arc<Informer<Service>> = Informer::new(Api::all(&client), ListParams::default());
    let slices: Arc<Informer<EndpointSlice>> =
        Informer::new(Api::all(&client), ListParams::default());
    let mut wasm_config = RuntimeConfig::new(cfg.data_dir.join("wasm"));
    // Wasm guests share the host's resolver; their outgoing HTTP requests
    // find the cluster's names in the same caches as the cluster DNS.
    if tuning.service_proxy {
        wasm_config.names = Some(wasm_shim::ClusterNames(Arc::new(proxy::dns::Caches {
            services: services.store(),
            slices: slices.store(),
        })));
    }
    let runtime = WasmRuntime::new(wasm_config).context("starting the wasm runtime")?;
    let oci = if tuning.containers {
        let oc = oci_bridge::OciConfig::new(cfg.data_dir.join("oci"));
        match oci_bridge::host_supports_containers(&oc.runc) {
            Ok(()) => Some(
                oci_bridge::OciRuntime::new(oc)
                    .await
                    .context("starting the container runtime")?,
            ),
            Err(why) => {
                tracing::info!(node = %cfg.node_name, "no container runtime: {why}; this node runs wasm pods only");
                None
            }
        }
    } else {
        None
    };
    let mut sys = node::SystemInfo::read();
    sys.containers = oci.is_some();
    // Bound before the Node is registered, so that its status names the
    // real port (the flag may say 0).
    let kubelet = match (&cfg.serving, cfg.kubelet_listen) {
        (Some(_), Some(listen)) => {
            let l = logs::bind(listen).await?;
            let addr = l.local_addr()?;
            sys.kubelet_port = Some(addr.port());
            if !addr.ip().is_unspecified() {
                sys.internal_ip = addr.ip();
            }
            tracing::info!(node = %cfg.node_name, %addr, "log endpoint listening (https)");
            Some(l)
        }
        (None, Some(_)) => {
            tracing::warn!(node = %cfg.node_name, "no serving certificate: this node opens no log endpoint");
            None
        }
        (_, None) => None,
    };
    // Other nodes reach this node's pods through its tunnel, on the log
    // endpoint's address and port over UDP.
    let tunnel_socket = match (&kubelet, &cfg.serving) {
        (Some(l), Some(_)) => tunnel::bind(l.local_addr()?)
            .inspect_err(|e| tracing::warn!(node = %cfg.node_name, "{e:#}"))
            .ok(),
        _ => None,
    };
    let tunnels = cfg.serving.as_ref().and_then(|tls| {
        tunnel::Tunnels::new(tls)
            .inspect_err(|e| {
                tracing::warn!(node = %cfg.node_name, "no node tunnel: pods on other hosts are not reached through Services: {e:#}")
            })
            .ok()
            .map(Arc::new)
    });
    let (block, _block_claim) = ipam::claim_block(
        tuning
            .pod_ip_block
            .unwrap_or_else(|| ipam::block_for(&cfg.node_name)),
        tuning.pod_ip_block.is_some(),
    )?;
    let ips = ipam::PodIps::open(cfg.data_dir.join("pod-ips.json"), block);
    let registered = loop {
        match node::register(&client, &cfg, &sys).await {
            Ok(n) => break n,
            Err(e) => tracing::warn!(node = %cfg.node_name, "registering the node: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(node::REGISTER_RETRY) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    };
    tracing::info!(
        node = %cfg.node_name,
        pod_ips = %format!("127.42.{block}.0/24"),
        "node registered"
    );
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        cfg.clone(),
        tuning.clone(),
        sys.clone(),
        registered,
        stop.clone(),
    ));
    let _informers = (services.start(), slices.start());
    let service_proxy = tuning.service_proxy.then(|| {
        tokio::spawn(proxy::run(
            client.clone(),
            proxy::ProxyConfig {
                node: cfg.node_name.clone(),
                block,
                ingress: cfg.ingress,
                tunnels,
            },
            services.clone(),
            slices.clone(),
            stop.clone(),
        ))
    });
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(&client, "kubelet").on_host(&cfg.node_name),
        client: client.clone(),
        capacity: sys.capacity(),
        host_ip: sys.internal_ip,
        runtime,
        oci,
        ips: Mutex::new(ips),
        tuning,
        workloads: Mutex::default(),
        pulled: Mutex::default(),
        services: services.store(),
        cfg,
    });
    let pods = Informer::new(
        Api::<Pod>::all(&client),
        ListParams::default().fields(format!("spec.nodeName={}", ctx.cfg.node_name)),
    );
    let mut events = pods.subscribe();
    let _informer = pods.start();
    let log_server = Arc::new(logs::LogServer {
        tls: ctx.cfg.serving.clone(),
        data_dir: ctx.cfg.data_dir.clone(),
        pods: pods.store(),
        wasm: ctx.runtime(),
        oci: ctx.oci.clone(),
    });
    if let Some(listener) = kubelet {
        let (server, stop) = (log_server.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener, stop).await {
                tracing::error!("log endpoint: {e:#}");
            }
        });
    }
    if let (Some(socket), Some(tls)) = (tunnel_socket, ctx.cfg.serving.clone()) {
        let pods = pods.store();
        let is_pod: Arc<dyn Fn(IpAddr) -> bool + Send + Sync> =
            Arc::new(move |ip| pods.list().iter().any(|p| has_ip(p, ip)));
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = tunnel::serve(socket, &tls, is_pod, stop).await {
                tracing::error!("node tunnel: {e:#}");
            }
        });
    }
    if let Some(streams) = ctx.cfg.control_streams.clone() {
        tokio::spawn(log_server.serve_streams(streams, stop.clone()));
    }
    let volumes = node::storage_dir(&ctx.cfg.data_dir);
    tokio::spawn(storage::reclaim(
        client.clone(),
        std::path::absolute(&volumes).unwrap_or(volumes),
        stop.clone(),
    ));
    // Containers get the Services' variables: know them first, as the
    // kubelet does.
    tokio::select! {
        () = async { pods.synced().await; services.synced().await } => {}
        _ = stop.wait_for(|s| *s) => return Ok(()),
    }
    let mut d = Dispatcher {
        ctx: ctx.clone(),
        workers: HashMap::new(),
        stop: stop.clone(),
    };
    // Admit what is already bound in creation order, as the kubelet does.
    let mut initial = pods.store().list();
    initial.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    for p in initial {
        d.applied(p);
    }
    d.forget_strays();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => match ev.as_ref() {
                    Event::Applied { new, .. } => d.applied(new.clone()),
                    Event::Deleted(old) => d.deleted(old),
                },
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = heartbeat.await;
    if let Some(p) = service_proxy {
        let _ = p.await;
    }
    Ok(())
}

/// A running pod worker.
struct Handle {
    tx: mpsc::UnboundedSender<worker::Msg>,
    namespace: String,
    name: String,
    requests: Resources,
    /// Cleared when the pod has finished: it no longer takes capacity.
    active: Arc<AtomicBool>,
}

/// Hands pod events to their workers, starting a worker (after admission)
/// for each new pod.
struct Dispatcher {
    ctx: Arc<Ctx>,
    workers: HashMap<String, Handle>,
    stop: watch::Receiver<bool>,
}

impl Dispatcher {
    fn applied(&mut self, pod: Arc<Pod>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(h) = self.workers.get(&uid) {
            let _ = h.tx.send(worker::Msg::Update(pod));
            return;
        }
        let status = pod.status.as_ref();
        let phase = status
            .and_then(|s| s.phase.as_deref())
            .and_then(plan::Phase::parse);
        let terminal = phase.is_some_and(plan::Phase::is_terminal);
        // A pod that already started here (before an agent restart) was
        // admitted then; only new ones are checked.
        let new = !terminal
            && pod.metadata.deletion_timestamp.is_none()
            && status.is_none_or(|s| s.start_time.is_none() && s.container_statuses.is_none());
        let mut used = admit::Usage::default();
        for h in self
            .workers
            .values()
            .filter(|h| h.active.load(Ordering::SeqCst))
        {
            used.add(&h.requests);
        }
        let verdict = admit::admit(
            &pod,
            &self.ctx.cfg.node_name,
            self.ctx.oci.is_some(),
            self.ctx.capacity,
            &used,
        );
        let (requests, rejection) = match verdict {
            admit::Verdict::Admit(r) => (r, None),
            admit::Verdict::Reject { reason, message } if new => (
                Resources::default(),
                Some(status::PodEnd {
                    phase: plan::Phase::Failed,
                    reason,
                    message,
                }),
            ),
            admit::Verdict::Reject { .. } => (Resources::default(), None),
        };
        let active = Arc::new(AtomicBool::new(!terminal && rejection.is_none()));
        let (tx, rx) = mpsc::unbounded_channel();
        let w = worker::Worker::new(self.ctx.clone(), pod.clone(), rejection, active.clone());
        tokio::spawn(w.run(rx, self.stop.clone()));
        self.workers.insert(
            uid,
            Handle {
                tx,
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                requests,
                active,
            },
        );
    }

    fn deleted(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let Some(h) = self.workers.remove(uid) else {
            return;
        };
        let _ = h.tx.send(worker::Msg::Gone);
        // The log goes with the pod, unless a new pod of the same name is
        // already here.
        if !self
            .workers
            .values()
            .any(|o| o.namespace == h.namespace && o.name == h.name)
        {
            let _ =
                std::fs::remove_dir_all(pod_log_dir(&self.ctx.cfg.data_dir, &h.namespace, &h.name));
        }
    }

    /// After the first list: forgets addresses, volumes and logs of pods
    /// that were deleted while the agent was down.
    fn forget_strays(&self) {
        let gone = self
            .ctx
            .ips
            .lock()
            .retain(|uid| self.workers.contains_key(uid));
        if self.ctx.oci.is_some() {
            // A container pod's network namespace, if it was one.
            for (uid, ip) in gone {
                tokio::spawn(async move { podnet::teardown(&uid, podnet::container_ip(ip)).await });
            }
        }
        let data = &self.ctx.cfg.data_dir;
        for entry in std::fs::read_dir(data.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !self.workers.contains_key(&uid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let live: HashSet<String> = self
            .workers
            .values()
            .map(|h| format!("{}_{}", h.namespace, h.name))
            .collect();
        for entry in std::fs::read_dir(data.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !live.contains(entry.file_name().to_string_lossy().as_ref()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Whether `ip` is one of `pod`'s addresses (its status says so).
fn has_ip(pod: &Pod, ip: IpAddr) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    let is = |a: &str| a.parse::<IpAddr>().is_ok_and(|a| a == ip);
    status.pod_ip.as_deref().is_some_and(is) || status.pod_ips.iter().flatten().any(|p| is(&p.ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1h").is_err());
    }

    #[test]
    fn logs_are_per_pod_and_container() {
        assert_eq!(
            log_path(Path::new("/d"), "ns", "web", "c"),
            PathBuf::from("/d/logs/ns_web/c.log")
        );
    }
}
