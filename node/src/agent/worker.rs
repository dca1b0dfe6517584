//! One pod's worker: the only task that acts on the pod. It loops: decide
//! (`plan::decide`), act (start containers, hold them in back-off), write
//! the status if it changed, then wait for a pod update, a container exit,
//! a probe result or the next deadline. Deletion stops the containers
//! within the grace period and removes the pod; a pod that disappears from
//! the API (force-deleted) has its containers stopped at once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use serde_json::Value;
use skiff_sdk::client::{Api, DeleteParams, PatchType};
use skiff_sdk::runtime::{
    ContainerId, ContainerSpec, ContainerStatus, ImageSource, Limits, Mount, NameSearch,
    PreparedImage, Runtime, RuntimeError, Termination, TerminationReason, WASM_RUNTIME_CLASS,
    Workload, exit_code,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::plan::{self, Ended, Phase, Record, RestartPolicy, Run, Waiting};
use super::podnet;
use super::probe::{self, Counter, Kind, Verdict};
use super::resolve::{self, Downward, Lookup, ResolveError};
use super::status::{self, PodEnd};
use super::{Ctx, log_path, previous_log_path};
use crate::controllers::events::reference;

/// What the dispatcher tells a worker.
#[derive(Debug)]
pub enum Msg {
    Update(Arc<Pod>),
    /// The pod is no longer in the API.
    Gone,
}

/// A container run ended (from its `wait` task).
struct Exit {
    index: usize,
    id: ContainerId,
    status: Result<ContainerStatus, RuntimeError>,
}

/// The tasks attached to one running container.
struct Live {
    id: ContainerId,
    tasks: Vec<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
    started: Arc<AtomicBool>,
    probes: Vec<probe::Spec>,
    counters: HashMap<Kind, Counter>,
}

impl Live {
    async fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(l) = self.listener {
            l.abort();
            // The listening socket is closed once the task is gone; a
            // restart binds the same address.
            let _ = l.await;
        }
    }
}

enum Flow {
    /// Sync again after this long (or on the next message).
    Wait(Option<Duration>),
    /// The pod is gone; the worker ends.
    Done,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    uid: String,
    namespace: String,
    name: String,
    records: Vec<Record>,
    live: Vec<Option<Live>>,
    pod_ip: Option<IpAddr>,
    /// It runs on the OCI runtime (no `runtimeClassName: wasm`), in a
    /// network namespace of its own once `netns` is set.
    oci: bool,
    netns: Option<std::path::PathBuf>,
    start_time: Option<SystemTime>,
    /// A pod-level end (rejection, deadline).
    end: Option<PodEnd>,
    /// Finished: nothing runs or restarts any more.
    terminal: bool,
    /// It was finished before this worker started: its status is left as
    /// stored.
    adopted_terminal: bool,
    gone: bool,
    /// Its containers were stopped for its deletion.
    stopped_for_deletion: bool,
    /// The managed part of the last status written, with the
    /// resourceVersion the write produced.
    written: Option<(Value, u64)>,
    /// The pod-level end was reported as an event.
    end_reported: bool,
    /// Back-off events already reported, per container: the delay.
    reported_backoff: HashMap<usize, Duration>,
    active: Arc<AtomicBool>,
    exit_tx: mpsc::UnboundedSender<Exit>,
    exit_rx: mpsc::UnboundedReceiver<Exit>,
    probe_tx: mpsc::UnboundedSender<probe::Outcome>,
    probe_rx: mpsc::UnboundedReceiver<probe::Outcome>,
}

fn rv(pod: &Pod) -> u64 {
    pod.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn ended_from(t: &Termination, id: &ContainerId) -> Ended {
    Ended {
        exit_code: t.exit_code,
        reason: t.reason.as_str().to_string(),
        message: t.message.clone(),
        started_at: t.started_at,
        finished_at: t.finished_at,
        id: Some(id.to_string()),
    }
}

impl Worker {
    pub fn new(
        ctx: Arc<Ctx>,
        pod: Arc<Pod>,
        rejection: Option<PodEnd>,
        active: Arc<AtomicBool>,
    ) -> Worker {
        let now = SystemTime::now();
        let status = pod.status.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let find = |list: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
            list.iter().flatten().find(|s| s.name == name).cloned()
        };
        let mut records = Vec::new();
        for (init, c) in spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c))
            .chain(spec.containers.iter().map(|c| (false, c)))
        {
            let seen = if init {
                find(&status.init_container_statuses, &c.name)
            } else {
                find(&status.container_statuses, &c.name)
            };
            let image = c.image.clone().unwrap_or_default();
            records.push(match seen {
                Some(s) => Record::seeded(&c.name, &image, init, &s, now),
                None => Record::new(&c.name, &image, init),
            });
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            let seen = find(&status.ephemeral_container_statuses, &c.name);
            records.push(ephemeral_record(c, seen.as_ref(), now));
        }
        let adopted_terminal = status
            .phase
            .as_deref()
            .and_then(Phase::parse)
            .is_some_and(Phase::is_terminal);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let oci = !is_wasm(&pod);
        let pod_ip = ctx
            .ips
            .lock()
            .get(&uid)
            .map(|ip| IpAddr::V4(if oci { podnet::container_ip(ip) } else { ip }));
        Worker {
            pod_ip,
            oci,
            netns: None,
            ctx,
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid,
            live: records.iter().map(|_| None).collect(),
            records,
            start_time: status.start_time.as_ref().map(|t| plan::system_time(&t.0)),
            terminal: adopted_terminal || rejection.is_some(),
            end: rejection,
            adopted_terminal,
            gone: false,
            stopped_for_deletion: false,
            written: None,
            end_reported: false,
            reported_backoff: HashMap::new(),
            active,
            exit_tx,
            exit_rx,
            probe_tx,
            probe_rx,
            pod,
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let wake = match self.sync().await {
                Flow::Done => return,
                Flow::Wait(w) => w,
            };
            let sleep = async {
                match wake {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => self.message(msg),
                Some(exit) = self.exit_rx.recv() => self.exited(exit).await,
                Some(outcome) = self.probe_rx.recv() => self.probed(outcome).await,
                () = sleep => {}
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    // The agent is stopping; its wasm instances end with it.
                    for l in self.live.iter_mut().filter_map(Option::take) {
                        l.abort().await;
                    }
                    return;
                }
            }
            // Take in whatever else arrived before deciding again.
            while let Ok(m) = rx.try_recv() {
                self.message(Some(m));
            }
            while let Ok(exit) = self.exit_rx.try_recv() {
                self.exited(exit).await;
            }
            while let Ok(outcome) = self.probe_rx.try_recv() {
                self.probed(outcome).await;
            }
        }
    }

    fn message(&mut self, msg: Option<Msg>) {
        match msg {
            Some(Msg::Update(pod)) if pod.metadata.uid.as_deref() == Some(&self.uid) => {
                self.pod = pod;
                self.add_ephemeral();
            }
            Some(Msg::Update(_)) => {}
            Some(Msg::Gone) | None => self.gone = true,
        }
    }

    /// Ephemeral containers added to the pod since (`kubectl debug`) get a
    /// record each; they start on the next sync.
    fn add_ephemeral(&mut self) {
        let Some(spec) = self.pod.spec.as_ref() else {
            return;
        };
        for c in spec.ephemeral_containers.iter().flatten() {
            if self.records.iter().any(|r| r.ephemeral && r.name == c.name) {
                continue;
            }
            self.records
                .push(ephemeral_record(c, None, SystemTime::now()));
            self.live.push(None);
        }
    }

    fn policy(&self) -> RestartPolicy {
        RestartPolicy::of(&self.pod)
    }

    /// The spec of container `i` (init containers first, ephemeral ones
    /// last, as a container: the fields they share).
    fn container(&self, i: usize) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        if let Some(e) = self.ephemeral_spec(i) {
            let mut v = serde_json::to_value(e).ok()?;
            v.as_object_mut()?.remove("targetContainerName");
            return serde_json::from_value(v).ok();
        }
        let inits = spec.init_containers.as_deref().unwrap_or_default();
        if i < inits.len() {
            inits.get(i).cloned()
        } else {
            spec.containers.get(i - inits.len()).cloned()
        }
    }

    /// The container an ephemeral container `i` shares processes with
    /// (`targetContainerName`), if any.
    fn target_of(&self, i: usize) -> Option<String> {
        self.ephemeral_spec(i)?
            .target_container_name
            .clone()
            .filter(|t| !t.is_empty())
    }

    /// The spec of container `i` if it is an ephemeral one.
    fn ephemeral_spec(&self, i: usize) -> Option<&EphemeralContainer> {
        let r = self.records.get(i).filter(|r| r.ephemeral)?;
        self.pod
            .spec
            .as_ref()?
            .ephemeral_containers
            .iter()
            .flatten()
            .find(|e| e.name == r.name)
    }

    fn field_path(&self, i: usize) -> String {
        let r = &self.records[i];
        let list = if r.init {
            "initContainers"
        } else if r.ephemeral {
            "ephemeralContainers"
        } else {
            "containers"
        };
        format!("spec.{list}{{{}}}", r.name)
    }

    async fn event(&self, i: Option<usize>, warning: bool, reason: &str, message: String) {
        let mut obj = reference(self.pod.as_ref());
        obj.field_path = i.map(|i| self.field_path(i));
        let rec = &self.ctx.recorder;
        if warning {
            rec.warning(obj, reason, message).await;
        } else {
            rec.normal(obj, reason, message).await;
        }
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    async fn sync(&mut self) -> Flow {
        if self.gone {
            self.stop_all(Duration::ZERO, None).await;
            self.cleanup().await;
            return Flow::Done;
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            return self.terminate().await;
        }
        if let Some(end) = self.end.clone().filter(|_| !self.end_reported) {
            self.end_reported = true;
            self.event(None, true, &end.reason, end.message).await;
        }
        if self.terminal {
            return Flow::Wait(self.write_status().await);
        }
        let now = SystemTime::now();
        let start = *self.start_time.get_or_insert(now);
        if self.pod_ip.is_none() {
            let allocated = self.ctx.ips.lock().allocate(&self.uid);
            match allocated {
                Ok(ip) if self.oci => self.pod_ip = Some(IpAddr::V4(podnet::container_ip(ip))),
                Ok(ip) => self.pod_ip = Some(IpAddr::V4(ip)),
                Err(e) => {
                    self.event(None, true, "FailedCreatePodSandBox", e.to_string())
                        .await;
                    return Flow::Wait(Some(Duration::from_secs(10)));
                }
            }
        }
        if self.oci
            && self.netns.is_none()
            && let Some(IpAddr::V4(ip)) = self.pod_ip
        {
            match podnet::setup(&self.uid, ip).await {
                Ok(path) => self.netns = Some(path),
                Err(e) => {
                    self.event(None, true, "FailedCreatePodSandBox", format!("{e:#}"))
                        .await;
                    return Flow::Wait(Some(Duration::from_secs(10)));
                }
            }
        }
        // spec.activeDeadlineSeconds, counted from the pod's start.
        let deadline = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| start + Duration::from_secs(s.max(0) as u64));
        if let Some(d) = deadline
            && d <= now
        {
            let grace = self.grace();
            self.stop_all(grace, None).await;
            self.end_reported = false;
            self.end = Some(PodEnd {
                phase: Phase::Failed,
                reason: "DeadlineExceeded".into(),
                message: "Pod was active on the node longer than the specified deadline".into(),
            });
            self.finish().await;
            return Flow::Wait(Some(Duration::ZERO));
        }
        self.restart_changed().await;

        let policy = self.policy();
        let decided = plan::decide(policy, &self.records, now);
        for &(i, delay, _) in &decided.back_off {
            let message = plan::backoff_message(delay, &self.records[i].name, &self.pod);
            self.records[i].waiting = Some(Waiting {
                reason: "CrashLoopBackOff".into(),
                message,
            });
            if self.reported_backoff.get(&i) != Some(&delay) {
                self.reported_backoff.insert(i, delay);
                let m = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    self.records[i].name, self.name, self.namespace, self.uid
                );
                self.event(Some(i), true, "BackOff", m).await;
            }
        }
        let mut again = false;
        for &i in &decided.start {
            self.start(i).await;
            // A container that ended at once (start error) is decided on
            // again right away.
            again |= !self.records[i].is_running();
        }
        let phase = plan::phase(policy, &self.records, false);
        if phase.is_terminal() {
            self.finish().await;
        }
        let retry = self.write_status().await;
        let wake = [
            decided.wake,
            deadline.map(|d| d.duration_since(now).unwrap_or_default()),
            retry,
            again.then_some(Duration::ZERO),
        ]
        .into_iter()
        .flatten()
        .min();
        Flow::Wait(wake)
    }

    /// The pod has finished: nothing will run again here; its address and
    /// runtime state are released (the status keeps the address).
    async fn finish(&mut self) {
        self.terminal = true;
        self.active.store(false, Ordering::SeqCst);
        for l in self.live.iter_mut().filter_map(Option::take) {
            l.abort().await;
        }
        for r in &self.records {
            if let Some(run) = &r.run {
                let _ = self.rt().remove(&run.id.as_str().into()).await;
            }
        }
        self.release_network().await;
    }

    /// The runtime this pod's containers run on.
    fn rt(&self) -> Arc<dyn Runtime> {
        if self.oci
            && let Some(oci) = &self.ctx.oci
        {
            return Arc::new(oci.clone());
        }
        self.ctx.runtime()
    }

    /// Gives the pod's address back, and its network namespace.
    async fn release_network(&mut self) {
        if self.netns.take().is_some()
            && let Some(IpAddr::V4(ip)) = self.pod_ip
        {
            podnet::teardown(&self.uid, ip).await;
        }
        self.ctx.ips.lock().release(&self.uid);
    }

    /// A running container whose image was changed (the one mutable field
    /// of a container) is restarted with the new one.
    async fn restart_changed(&mut self) {
        for i in 0..self.records.len() {
            let Some(c) = self.container(i) else { continue };
            let image = c.image.clone().unwrap_or_default();
            if image == self.records[i].image {
                continue;
            }
            if self.records[i].is_running() {
                self.event(
                    Some(i),
                    false,
                    "Killing",
                    format!(
                        "Container {} definition changed, will be restarted",
                        self.records[i].name
                    ),
                )
                .await;
                self.kill(i, self.grace(), false).await;
            }
            let r = &mut self.records[i];
            r.image = image;
            if let Some(run) = r.run.take() {
                r.last = run.ended;
                r.restart_count += 1;
            }
            r.waiting = None;
            r.setup_retry = None;
        }
    }

    /// The cluster DNS's address, if this node serves it.
    fn cluster_dns(&self) -> Option<IpAddr> {
        self.ctx
            .tuning
            .service_proxy
            .then_some(IpAddr::V4(super::proxy::dns::CLUSTER_DNS_IP))
    }

    /// How the pod's names resolve in the cluster (wasm guests resolve on
    /// the host, so the runtime is told).
    fn name_search(&self) -> Option<NameSearch> {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        super::etc::name_search(&self.pod, &host, self.cluster_dns())
    }

    /// A container pod's `/etc/hosts` and `/etc/resolv.conf`, written into
    /// its directory and mounted as the kubelet mounts them (not over a
    /// volume the container mounts there itself).
    fn etc_files(&self, mounts: &[Mount]) -> std::io::Result<Vec<Mount>> {
        let dir = self.ctx.pod_dir(&self.uid).join("etc");
        std::fs::create_dir_all(&dir)?;
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let cluster_dns = self.cluster_dns();
        let files = [
            ("/etc/hosts", super::etc::hosts(&self.pod, self.pod_ip)),
            (
                "/etc/resolv.conf",
                super::etc::resolv_conf(&self.pod, &host, cluster_dns),
            ),
        ];
        let mut out = Vec::new();
        for (path, content) in files {
            if mounts.iter().any(|m| m.container_path == path) {
                continue;
            }
            let host_path = dir.join(&path[5..]);
            std::fs::write(&host_path, content)?;
            out.push(Mount {
                host_path,
                container_path: path.to_string(),
                read_only: false,
            });
        }
        Ok(out)
    }

    fn downward(&self) -> Downward {
        Downward {
            pod_ip: self.pod_ip,
            host_ip: self.ctx.host_ip,
            node_cpu_millis: self.ctx.capacity.cpu_millis,
            node_memory: self.ctx.capacity.memory,
        }
    }

    /// A failure before the container exists: shown as waiting, retried
    /// after a back-off.
    async fn setup_failed(
        &mut self,
        i: usize,
        reason: &str,
        message: String,
        event: (&str, String),
    ) {
        let now = SystemTime::now();
        let policy = self.ctx.tuning.backoff();
        let r = &mut self.records[i];
        r.setup_backoff.next(policy, now);
        r.setup_retry = r.setup_backoff.delay().map(|d| now + d);
        r.waiting = Some(Waiting {
            reason: reason.into(),
            message,
        });
        self.event(Some(i), true, event.0, event.1).await;
    }

    /// Container `i` cannot run here at all: it ends at once with a start
    /// error, and is not tried again.
    async fn refuse(&mut self, i: usize, message: String) {
        let now = SystemTime::now();
        self.records[i].run = Some(Run {
            id: String::new(),
            started_at: None,
            ended: Some(Ended {
                exit_code: exit_code::START_ERROR,
                reason: "StartError".into(),
                message: message.clone(),
                started_at: None,
                finished_at: now,
                id: None,
            }),
        });
        self.event(Some(i), true, "Failed", format!("Error: {message}"))
            .await;
    }

    /// Pulls (prepares) the image, with the kubelet's events.
    async fn pull(
        &mut self,
        i: usize,
        c: &Container,
        source: &ImageSource,
    ) -> Option<PreparedImage> {
        let image = self.records[i].image.clone();
        let always = c.image_pull_policy.as_deref() == Some("Always");
        let present = self.ctx.mark_pulled(&image);
        if present
            && !always
            && let Ok(p) = self.rt().prepare(source).await
        {
            self.event(
                Some(i),
                false,
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            )
            .await;
            return Some(p);
        }
        self.event(
            Some(i),
            false,
            "Pulling",
            format!("Pulling image {image:?}"),
        )
        .await;
        let t0 = std::time::Instant::now();
        match self.rt().prepare(source).await {
            Ok(p) => {
                let took = t0.elapsed();
                self.event(
                    Some(i),
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {}",
                        super::backoff::go_duration(Duration::from_millis(took.as_millis() as u64))
                    ),
                )
                .await;
                Some(p)
            }
            // Fetched but not runnable: starting it records the start error.
            Err(RuntimeError::InvalidImage { .. }) => Some(PreparedImage {
                digest: String::new(),
                kind: skiff_sdk::runtime::ImageKind::WasmModule,
                cached: false,
            }),
            Err(e) => {
                self.ctx.pulled.lock().remove(&image);
                let msg = format!("Failed to pull image {image:?}: {e}");
                self.setup_failed(i, "ErrImagePull", msg.clone(), ("Failed", msg))
                    .await;
                None
            }
        }
    }

    async fn start(&mut self, i: usize) {
        let Some(c) = self.container(i) else { return };
        let name = self.records[i].name.clone();
        if self.records[i].ephemeral && !self.oci {
            let message = "a wasm pod runs no ephemeral containers: its guests have no \
                           processes or namespaces to share (kubectl logs and kubectl exec \
                           work on them)";
            self.refuse(i, message.into()).await;
            return;
        }
        // An ephemeral container joins its target's processes.
        let pid_namespace = match self.target_of(i) {
            None => None,
            Some(target) => {
                let run = self
                    .records
                    .iter()
                    .find(|r| !r.ephemeral && r.name == target)
                    .and_then(|r| r.run.as_ref())
                    .filter(|run| run.is_running());
                let ns = match (run, &self.ctx.oci) {
                    (Some(run), Some(oci)) => oci
                        .pid_namespace(&run.id.as_str().into())
                        .map_err(|e| e.to_string()),
                    _ => Err(format!("the target container {target} is not running")),
                };
                match ns {
                    Ok(path) => Some(path),
                    Err(m) => {
                        self.setup_failed(
                            i,
                            "CreateContainerError",
                            m.clone(),
                            ("Failed", format!("Error: {m}")),
                        )
                        .await;
                        return;
                    }
                }
            }
        };
        let source = match ImageSource::parse(&self.records[i].image) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                self.setup_failed(
                    i,
                    "InvalidImageName",
                    msg.clone(),
                    (
                        "InspectFailed",
                        format!("Failed to apply default image tag: {msg}"),
                    ),
                )
                .await;
                return;
            }
        };
        let Some(prepared) = self.pull(i, &c, &source).await else {
            return;
        };

        // Volumes, env and mounts.
        let d = self.downward();
        let mut lookup = Lookup::new(&self.ctx.client, &self.namespace);
        let root = self.ctx.pod_dir(&self.uid).join("volumes");
        let resolved = async {
            let vols = resolve::volumes(&mut lookup, &self.pod, &d, &root).await?;
            let services = super::etc::service_env(&self.pod, &self.ctx.services.list());
            let env = resolve::env(&mut lookup, &self.pod, &c, &d, services).await?;
            let mounts = resolve::mounts(&c, &vols)?;
            Ok::<_, ResolveError>((env, mounts))
        }
        .await;
        let (env, mounts) = match resolved {
            Ok(ok) => ok,
            Err(ResolveError::Mount(m)) => {
                let msg = format!("MountVolume.SetUp failed: {m}");
                self.setup_failed(i, "ContainerCreating", msg.clone(), ("FailedMount", msg))
                    .await;
                return;
            }
            Err(ResolveError::Config(m)) => {
                self.setup_failed(
                    i,
                    "CreateContainerConfigError",
                    m.clone(),
                    ("Failed", format!("Error: {m}")),
                )
                .await;
                return;
            }
        };
        let mut mounts = mounts;
        if self.oci {
            match self.etc_files(&mounts) {
                Ok(extra) => mounts.extend(extra),
                Err(e) => {
                    let msg = format!("writing the pod's /etc/hosts and /etc/resolv.conf: {e}");
                    self.setup_failed(
                        i,
                        "CreateContainerConfigError",
                        msg.clone(),
                        ("Failed", format!("Error: {msg}")),
                    )
                    .await;
                    return;
                }
            }
        }
        let workload = if self.oci {
            Workload::Command
        } else {
            self.ctx.workload(&source, &prepared).await
        };

        let rec = &self.records[i];
        let restarting = rec.run.is_some();
        let count = rec.restart_count + i32::from(restarting);
        let id = ContainerId::new(format!("{}_{}_{}", self.uid, name, count));
        let log = log_path(&self.ctx.cfg.data_dir, &self.namespace, &self.name, &name);
        let previous =
            previous_log_path(&self.ctx.cfg.data_dir, &self.namespace, &self.name, &name);
        let first = rec.run.is_none() && rec.last.is_none() && count == 0;
        if first {
            // A new pod: logs left by an earlier pod of the same name go.
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_file(&previous);
        }
        // A later instance: the one that ended becomes the previous log
        // (`kubectl logs --previous`), undone below if the start fails.
        let rotated = !first && log.exists() && {
            let r = std::fs::rename(&log, &previous);
            if let Err(e) = &r {
                tracing::warn!(path = %log.display(), "keeping the previous log: {e}");
            }
            r.is_ok()
        };
        let vars = env.clone();
        let expand = |s: &String| {
            resolve::expand(s, &|n| {
                vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            })
        };
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        let quantity = |k: &str, milli: bool| {
            limits.and_then(|l| l.get(k)).and_then(|q| {
                let q = skiff_sched::Quantity::parse(&q.0).ok()?;
                let v = if milli { q.milli_value() } else { q.value() };
                v.ok().and_then(|v| u64::try_from(v).ok())
            })
        };
        let now = SystemTime::now();
        let spec = ContainerSpec {
            id: id.clone(),
            image: source.clone(),
            command: c.command.iter().flatten().map(expand).collect(),
            args: c.args.iter().flatten().map(expand).collect(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            env,
            mounts,
            limits: Limits {
                memory_bytes: quantity("memory", false),
                cpu_millis: quantity("cpu", true),
            },
            workload: workload.clone(),
            log_path: log.clone(),
            active_deadline: self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .zip(self.start_time)
                .map(|(secs, start)| {
                    (start + Duration::from_secs(secs.max(0) as u64))
                        .duration_since(now)
                        .unwrap_or_default()
                }),
            hostname: Some(self.name.clone()),
            network_namespace: self.netns.clone(),
            pid_namespace,
            names: self.name_search().map(Arc::new),
            interactive: skiff_sdk::runtime::Interactive {
                stdin: c.stdin.unwrap_or(false),
                stdin_once: c.stdin_once.unwrap_or(false),
                tty: c.tty.unwrap_or(false),
            },
        };
        let started = match self.rt().start(spec).await {
            Ok(s) => s,
            Err(e) => {
                // No new instance: the log is still the last one's.
                if rotated && !std::fs::metadata(&log).is_ok_and(|m| m.len() > 0) {
                    let _ = std::fs::rename(&previous, &log);
                }
                let reason = match e {
                    RuntimeError::Pull { .. } => "ErrImagePull",
                    _ => "CreateContainerError",
                };
                let msg = e.to_string();
                self.setup_failed(i, reason, msg.clone(), ("Failed", format!("Error: {msg}")))
                    .await;
                return;
            }
        };

        // The container exists: a new run.
        let policy = self.ctx.tuning.backoff();
        let r = &mut self.records[i];
        if let Some(prev) = r.run.take() {
            if let Some(e) = &prev.ended {
                r.backoff.next(policy, e.finished_at);
            }
            r.last = prev.ended;
            r.restart_count += 1;
        }
        r.waiting = None;
        r.setup_retry = None;
        r.setup_backoff = Default::default();
        r.image_id = match &source {
            ImageSource::Registry(reference) if !prepared.digest.is_empty() => {
                format!(
                    "{}/{}@{}",
                    reference.registry, reference.repository, prepared.digest
                )
            }
            _ => started
                .image_digest
                .clone()
                .unwrap_or(prepared.digest.clone()),
        };
        let started_at = match &started.state {
            skiff_sdk::runtime::ContainerState::Running { started_at } => Some(*started_at),
            _ => None,
        };
        r.run = Some(Run {
            id: id.to_string(),
            started_at,
            ended: started.termination().map(|t| ended_from(t, &id)),
        });
        let probes = probe::specs(&c, self.pod_ip);
        r.started = !probes.iter().any(|p| p.kind == Kind::Startup);
        r.ready = r.started && !probes.iter().any(|p| p.kind == Kind::Readiness);
        self.reported_backoff.remove(&i);
        self.event(
            Some(i),
            false,
            "Created",
            format!("Created container: {name}"),
        )
        .await;
        match started.termination() {
            Some(t) if t.reason == TerminationReason::StartError => {
                self.event(Some(i), true, "Failed", format!("Error: {}", t.message))
                    .await;
                return;
            }
            // A quick command may be done before `start` returns.
            Some(_) => {
                self.event(
                    Some(i),
                    false,
                    "Started",
                    format!("Started container {name}"),
                )
                .await;
                return;
            }
            None => {}
        }

        // An HTTP handler listens on podIP:containerPort.
        let mut listener = None;
        if matches!(workload, Workload::HttpHandler(_)) {
            let port = c
                .ports
                .iter()
                .flatten()
                .next()
                .and_then(|p| u16::try_from(p.container_port).ok())
                .unwrap_or(8080);
            let addr = SocketAddr::new(self.pod_ip.unwrap_or(self.ctx.host_ip), port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    let rt = self.ctx.runtime.clone();
                    let id = id.clone();
                    listener = Some(tokio::spawn(async move {
                        if let Err(e) = wasm_shim::serve(rt, id, l).await {
                            tracing::warn!("http listener on {addr}: {e}");
                        }
                    }));
                }
                Err(e) => {
                    let message = format!("listening on {addr}: {e}");
                    let stopped = self.rt().stop(&id, Duration::ZERO).await;
                    let mut ended = match stopped.as_ref().ok().and_then(|s| s.termination()) {
                        Some(t) => ended_from(t, &id),
                        None => ended_from(
                            &Termination {
                                exit_code: exit_code::START_ERROR,
                                reason: TerminationReason::StartError,
                                message: String::new(),
                                started_at: None,
                                finished_at: SystemTime::now(),
                            },
                            &id,
                        ),
                    };
                    ended.exit_code = exit_code::START_ERROR;
                    ended.reason = "StartError".into();
                    ended.message = message.clone();
                    if let Some(run) = self.records[i].run.as_mut() {
                        run.ended = Some(ended);
                    }
                    self.event(Some(i), true, "Failed", format!("Error: {message}"))
                        .await;
                    return;
                }
            }
        }
        self.event(
            Some(i),
            false,
            "Started",
            format!("Started container {name}"),
        )
        .await;

        let runtime = self.rt();
        let mut tasks = Vec::new();
        {
            let tx = self.exit_tx.clone();
            let rt = runtime.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let status = rt.wait(&id).await;
                let _ = tx.send(Exit {
                    index: i,
                    id,
                    status,
                });
            }));
        }
        let started_flag = Arc::new(AtomicBool::new(self.records[i].started));
        for p in &probes {
            tasks.push(probe::spawn(
                p.clone(),
                name.clone(),
                id.clone(),
                runtime.clone(),
                started_flag.clone(),
                self.probe_tx.clone(),
            ));
        }
        self.live[i] = Some(Live {
            id,
            tasks,
            listener,
            started: started_flag,
            probes,
            counters: HashMap::new(),
        });
    }

    /// Records the end of a run reported by its wait task.
    async fn exited(&mut self, exit: Exit) {
        let Some(r) = self.records.get_mut(exit.index) else {
            return;
        };
        let current = r
            .run
            .as_ref()
            .is_some_and(|run| run.id == exit.id.as_str() && run.is_running());
        if !current {
            return;
        }
        let ended = match &exit.status {
            Ok(s) => s.termination().map(|t| ended_from(t, &exit.id)),
            Err(e) => Some(Ended {
                exit_code: exit_code::KILLED,
                reason: "Error".into(),
                message: format!("lost track of the container: {e}"),
                started_at: r.run.as_ref().and_then(|run| run.started_at),
                finished_at: SystemTime::now(),
                id: Some(exit.id.to_string()),
            }),
        };
        if let Some(run) = r.run.as_mut() {
            run.ended = ended;
        }
        r.ready = false;
        if let Some(l) = self.live[exit.index].take() {
            l.abort().await;
        }
    }

    /// Counts a probe result and acts on a verdict.
    async fn probed(&mut self, o: probe::Outcome) {
        let Some(i) = self.records.iter().position(|r| r.name == o.container) else {
            return;
        };
        let Some(live) = self.live[i].as_mut().filter(|l| l.id == o.id) else {
            return;
        };
        let Some(spec) = live.probes.iter().find(|p| p.kind == o.kind).cloned() else {
            return;
        };
        let verdict = live.counters.entry(o.kind).or_default().record(
            o.result.is_ok(),
            spec.success_threshold,
            spec.failure_threshold,
        );
        if let Err(m) = &o.result {
            self.event(
                Some(i),
                true,
                "Unhealthy",
                format!("{} probe failed: {m}", o.kind.as_str()),
            )
            .await;
        }
        let name = self.records[i].name.clone();
        match (o.kind, verdict) {
            (Kind::Startup, Verdict::Passed) => {
                self.records[i].started = true;
                if let Some(l) = &self.live[i] {
                    l.started.store(true, Ordering::SeqCst);
                    if !l.probes.iter().any(|p| p.kind == Kind::Readiness) {
                        self.records[i].ready = true;
                    }
                }
            }
            (Kind::Readiness, Verdict::Passed) => self.records[i].ready = true,
            (Kind::Readiness, Verdict::Failed) => self.records[i].ready = false,
            (Kind::Liveness | Kind::Startup, Verdict::Failed) => {
                let what = if o.kind == Kind::Liveness {
                    "liveness"
                } else {
                    "startup"
                };
                self.event(
                    Some(i),
                    false,
                    "Killing",
                    format!("Container {name} failed {what} probe, will be restarted"),
                )
                .await;
                let grace = spec.grace.unwrap_or_else(|| self.grace());
                self.kill(i, grace, true).await;
            }
            _ => {}
        }
    }

    /// Stops container `i` within `grace` and records how it ended. A
    /// container killed for failing a probe counts as failed even if it
    /// stopped cleanly, so OnFailure restarts it.
    async fn kill(&mut self, i: usize, grace: Duration, unhealthy: bool) {
        let Some(live) = self.live[i].take() else {
            return;
        };
        let id = live.id.clone();
        live.abort().await;
        let status = self.rt().stop(&id, grace).await;
        let r = &mut self.records[i];
        let mut ended = match status.as_ref().ok().and_then(ContainerStatus::termination) {
            Some(t) => ended_from(t, &id),
            None => Ended {
                exit_code: exit_code::KILLED,
                reason: "Error".into(),
                message: String::new(),
                started_at: r.run.as_ref().and_then(|run| run.started_at),
                finished_at: SystemTime::now(),
                id: Some(id.to_string()),
            },
        };
        if unhealthy && ended.exit_code == 0 {
            ended.exit_code = exit_code::TERMINATED;
            ended.reason = "Error".into();
        }
        if let Some(run) = r.run.as_mut().filter(|run| run.is_running()) {
            run.ended = Some(ended);
        }
        r.ready = false;
    }

    /// Stops every running container at once, with `Killing` events when
    /// `announce` says so.
    async fn stop_all(&mut self, grace: Duration, announce: Option<&str>) {
        let running: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.live[i].is_some())
            .collect();
        if let Some(what) = announce {
            for &i in &running {
                let name = self.records[i].name.clone();
                self.event(Some(i), false, "Killing", format!("{what} {name}"))
                    .await;
            }
        }
        let mut stopping = Vec::new();
        for &i in &running {
            if let Some(live) = self.live[i].take() {
                let id = live.id.clone();
                live.abort().await;
                let rt = self.rt();
                stopping.push(async move { (i, id.clone(), rt.stop(&id, grace).await) });
            }
        }
        for (i, id, status) in futures::future::join_all(stopping).await {
            let r = &mut self.records[i];
            let ended = match status.as_ref().ok().and_then(ContainerStatus::termination) {
                Some(t) => ended_from(t, &id),
                None => Ended {
                    exit_code: exit_code::KILLED,
                    reason: "Error".into(),
                    message: String::new(),
                    started_at: r.run.as_ref().and_then(|run| run.started_at),
                    finished_at: SystemTime::now(),
                    id: Some(id.to_string()),
                },
            };
            if let Some(run) = r.run.as_mut().filter(|run| run.is_running()) {
                run.ended = Some(ended);
            }
            r.ready = false;
        }
    }

    /// Graceful deletion: stop the containers within the grace period,
    /// record the final status, then remove the pod (grace 0, this uid
    /// only).
    async fn terminate(&mut self) -> Flow {
        if !self.stopped_for_deletion {
            let grace = self.grace();
            self.stop_all(grace, Some("Stopping container")).await;
            self.stopped_for_deletion = true;
            if !self.adopted_terminal && self.end.is_none() {
                let _ = self.write_status().await;
            }
            self.finish().await;
        }
        let api: Api<Pod> = Api::namespaced(&self.ctx.client, &self.namespace);
        let params = DeleteParams::default().grace(0).with_uid(self.uid.clone());
        match api.delete(&self.name, &params).await {
            Ok(_) => {}
            // Gone already, or a new pod took the name.
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{}/{}", self.namespace, self.name), "deleting: {e}");
                return Flow::Wait(Some(Duration::from_secs(1)));
            }
        }
        self.cleanup().await;
        Flow::Done
    }

    /// Forgets the pod: runtime state, address, volumes.
    async fn cleanup(&mut self) {
        for l in self.live.iter_mut().filter_map(Option::take) {
            l.abort().await;
        }
        for r in &self.records {
            if let Some(run) = &r.run {
                let _ = self.rt().remove(&run.id.as_str().into()).await;
            }
        }
        self.release_network().await;
        self.active.store(false, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(self.ctx.pod_dir(&self.uid));
    }

    /// Writes the status if it differs from what is stored; returns when to
    /// try again after a failed write.
    async fn write_status(&mut self) -> Option<Duration> {
        if self.adopted_terminal {
            return None;
        }
        let deleting = self.stopped_for_deletion;
        let policy = self.policy();
        let phase = match &self.end {
            Some(e) => e.phase,
            None => plan::phase(policy, &self.records, deleting),
        };
        let built = status::build(&status::Inputs {
            pod: &self.pod,
            records: &self.records,
            phase,
            end: self.end.as_ref(),
            pod_ip: self.pod_ip,
            host_ip: self.ctx.host_ip,
            start_time: self.start_time,
            restarts_allowed: !self.terminal && !deleting,
            now: SystemTime::now(),
        });
        let want = status::managed(&built);
        let stored_rv = rv(&self.pod);
        let current = match &self.written {
            Some((v, at)) if *at > stored_rv => v.clone(),
            _ => status::managed(&self.pod.status.clone().unwrap_or_default()),
        };
        if want == current {
            return None;
        }
        let api: Api<Pod> = Api::namespaced(&self.ctx.client, &self.namespace);
        match api
            .patch_status(
                &self.name,
                PatchType::Merge,
                &serde_json::json!({ "status": want }),
            )
            .await
        {
            Ok(p) => {
                self.written = Some((want, rv(&p)));
                None
            }
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::debug!(pod = %format!("{}/{}", self.namespace, self.name), "writing status: {e}");
                Some(Duration::from_secs(1))
            }
        }
    }
}

/// The record of ephemeral container `c`, from what the API last said of
/// it (`seen`) when there is something.
fn ephemeral_record(
    c: &EphemeralContainer,
    seen: Option<&k8s_openapi::api::core::v1::ContainerStatus>,
    now: SystemTime,
) -> Record {
    let image = c.image.as_deref().unwrap_or_default();
    let mut r = match seen {
        Some(s) => Record::seeded(&c.name, image, false, s, now),
        None => Record::new(&c.name, image, false),
    };
    r.ephemeral = true;
    r
}

/// Whether the pod runs on the wasm runtime (`runtimeClassName: wasm`).
pub fn is_wasm(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        == Some(WASM_RUNTIME_CLASS)
}
