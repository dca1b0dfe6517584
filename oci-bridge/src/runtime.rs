//! [`OciRuntime`]: Linux containers through `runc`, behind the same
//! [`Runtime`] trait as the wasm runtime.
//!
//! A container is `runc run` of a bundle this runtime writes:
//!
//! ```text
//! DIR/containers/<id>/config.json   spec.rs, from the ContainerSpec and the image config
//!                     rootfs/       overlay: lower = the image's rootfs, upper/work below
//!                     upper/ work/
//!                     runc.log      runc's own errors (JSON), the StartError message
//!                     pid           written by runc once the process runs
//! DIR/runc/                         runc's state (--root)
//! ```
//!
//! `runc run` stays in the foreground as the container's parent: its exit
//! status is the container's (128+n for a signal), its stdout and stderr are
//! the container's, pumped into the CRI log file (and to attachers, see
//! [`crate::attach`]); its stdin is `/dev/null` unless the spec keeps it
//! open, and with `tty` all three are a terminal. A container with
//! `limits.memory` gets a cgroup of its own, `skiff/<id>` (memory limit and
//! no swap), that `runc` nests the container's cgroup in; the limit is there
//! rather than on runc's cgroup so that, after the container is gone, its
//! failure counter still tells an OOM kill from a `kill -9`. Stop is
//! `runc kill TERM`, then `KILL` once the grace period is over.
//!
//! Containers do not outlive this process's supervision: a runtime that
//! starts finds the containers a previous process left in its runc root
//! and removes them (the agent then starts its pods again, as it does for
//! wasm pods).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use skiff_sdk::registry::RegistryClient;
use skiff_sdk::runtime::{
    BoxFuture, ContainerId, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, ImageKind,
    ImageSource, LogLine, LogSource, LogStream, PreparedImage, Runtime, RuntimeError, Termination,
    TerminationReason, exit_code,
};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;

use crate::attach::{Console, Live, Wiring};
use crate::image::{Image, ImageStore};
use crate::spec;

/// How long `start` waits for runc to report the process running.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A log line longer than this is split into partial (`P`) lines.
const MAX_LOG_LINE: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct OciConfig {
    /// Images, bundles and runc's state live here.
    pub data_dir: PathBuf,
    pub registry: RegistryClient,
    /// The `runc` binary.
    pub runc: PathBuf,
    /// The platform images are pulled for (`linux/amd64`).
    pub platform: String,
    /// The cgroup v1 hierarchies (or the v2 unified one) are mounted here.
    pub cgroup_root: PathBuf,
}

impl OciConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        OciConfig {
            data_dir: data_dir.into(),
            registry: RegistryClient::new(),
            runc: find_runc().unwrap_or_else(|| PathBuf::from("runc")),
            platform: format!("linux/{}", kube_arch()),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// `runc` on the PATH (or in the sbin directories, which a non-login
/// shell's PATH may lack).
pub fn find_runc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/usr/local/sbin",
                "/usr/local/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
}

/// Whether containers can run on this host with the `runc` binary at
/// `runc` (as [`OciConfig::new`] found it): it is installed, we are root
/// (runc as a non-root user needs a rootless setup skiff does not do) and
/// overlayfs is available.
pub fn host_supports_containers(runc: &Path) -> Result<(), String> {
    if !runc.is_file() {
        return Err("runc is not installed (apt-get install runc)".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Err("containers need root (runc without rootless mode)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        return Err("the kernel has no overlay filesystem".into());
    }
    Ok(())
}

/// Kubernetes' name of this CPU architecture.
pub fn kube_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The runc runtime. Cheap to clone; clones share the containers.
#[derive(Clone)]
pub struct OciRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OciRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRuntime")
            .field("data_dir", &self.inner.cfg.data_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: OciConfig,
    images: ImageStore,
    containers: Mutex<HashMap<ContainerId, Arc<Container>>>,
}

pub(crate) struct Container {
    id: ContainerId,
    /// runc's name for it (`[A-Za-z0-9_.+-]`).
    pub(crate) runc_id: String,
    spec: ContainerSpec,
    /// The bundle: `config.json`, the rootfs mount, runc's log.
    pub(crate) dir: PathBuf,
    image_digest: String,
    pub(crate) state: watch::Sender<ContainerState>,
    /// A stop was asked for: the exit is not an OOM kill.
    stopping: AtomicBool,
    deadline_hit: AtomicBool,
    /// Its standard streams, for attach sessions.
    pub(crate) console: Console,
}

impl Container {
    fn status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            state: self.state.borrow().clone(),
            image_digest: Some(self.image_digest.clone()),
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

impl OciRuntime {
    /// A runtime under `cfg.data_dir`. Containers a previous process left
    /// behind are killed and removed first.
    pub async fn new(cfg: OciConfig) -> Result<Self, RuntimeError> {
        for d in ["containers", "runc", "images"] {
            let p = cfg.data_dir.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
        }
        let images = ImageStore::new(
            cfg.data_dir.clone(),
            cfg.registry.clone(),
            cfg.platform.clone(),
        );
        let rt = OciRuntime {
            inner: Arc::new(Inner {
                cfg,
                images,
                containers: Mutex::default(),
            }),
        };
        rt.reap_leftovers().await;
        Ok(rt)
    }

    pub(crate) fn runc(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.inner.cfg.runc);
        c.arg("--root").arg(self.inner.cfg.data_dir.join("runc"));
        c.stdin(Stdio::null());
        c
    }

    async fn runc_quiet(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .runc()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("running runc: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Removes what a previous process left: runc containers, mounts,
    /// bundles and cgroups.
    async fn reap_leftovers(&self) {
        let dir = self.inner.cfg.data_dir.join("containers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let _ = self.runc_quiet(&["kill", &name, "KILL"]).await;
            let _ = self.runc_quiet(&["delete", "--force", &name]).await;
            tracing::info!(container = %name, "removing a container left by an earlier run");
            self.cleanup(&name, &e.path()).await;
        }
    }

    /// Unmounts and deletes a bundle and its cgroups.
    async fn cleanup(&self, runc_id: &str, dir: &Path) {
        unmount(&dir.join("rootfs")).await;
        let _ = tokio::fs::remove_dir_all(dir).await;
        self.remove_cgroups(runc_id);
    }

    fn cgroup_dirs(&self, runc_id: &str) -> Vec<PathBuf> {
        let root = &self.inner.cfg.cgroup_root;
        if root.join("cgroup.controllers").exists() {
            return vec![root.join("skiff").join(runc_id)];
        }
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("skiff").join(runc_id))
            .collect()
    }

    fn remove_cgroups(&self, runc_id: &str) {
        for d in self.cgroup_dirs(runc_id) {
            // Only empty cgroups can go; runc removed its own below them.
            let _ = std::fs::remove_dir(d.join("ctr"));
            let _ = std::fs::remove_dir(&d);
        }
    }

    /// The cgroup that holds the container's memory limit, created with it.
    fn limit_memory(&self, runc_id: &str, bytes: u64) -> Result<PathBuf, RuntimeError> {
        let root = &self.inner.cfg.cgroup_root;
        let v2 = root.join("cgroup.controllers").exists();
        let dir = if v2 {
            root.join("skiff").join(runc_id)
        } else {
            root.join("memory").join("skiff").join(runc_id)
        };
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let write = |file: &str, value: &str| {
            std::fs::write(dir.join(file), value)
                .map_err(io_err(format!("writing {}/{file}", dir.display())))
        };
        if v2 {
            if let Ok(parent) = std::fs::read_to_string(root.join("skiff/cgroup.subtree_control"))
                && !parent.contains("memory")
            {
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                let _ = std::fs::write(root.join("skiff/cgroup.subtree_control"), "+memory");
            }
            write("memory.max", &bytes.to_string())?;
            let _ = write("memory.swap.max", "0");
        } else {
            write("memory.limit_in_bytes", &bytes.to_string())?;
            // No swap: the limit is the container's memory, as on a kubelet
            // node without swap.
            let _ = write("memory.memsw.limit_in_bytes", &bytes.to_string());
            let _ = write("memory.swappiness", "0");
        }
        Ok(dir)
    }

    /// Whether the memory cgroup saw its limit hit by an OOM kill.
    fn oom_killed(&self, runc_id: &str) -> bool {
        let root = &self.inner.cfg.cgroup_root;
        let v2 = root.join("skiff").join(runc_id).join("memory.events");
        if let Ok(events) = std::fs::read_to_string(&v2) {
            return events
                .lines()
                .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"));
        }
        let v1 = root.join("memory").join("skiff").join(runc_id);
        // Cgroup v1 does not count OOM kills where the limit is, and its
        // failure counters stay at zero when the charge fails in a child:
        // peak usage at the limit, and a SIGKILL we did not send, is the
        // test.
        let read = |f: &str| {
            std::fs::read_to_string(v1.join(f))
                .ok()
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        let failed = ["memory.failcnt", "memory.memsw.failcnt"]
            .iter()
            .any(|f| read(f).unwrap_or(0) > 0);
        let peaked = match (
            read("memory.max_usage_in_bytes"),
            read("memory.limit_in_bytes"),
        ) {
            (Some(peak), Some(limit)) => peak >= limit,
            _ => false,
        };
        failed || peaked
    }

    async fn start_container(&self, spec: ContainerSpec) -> Result<ContainerStatus, RuntimeError> {
        let old = self.inner.containers.lock().get(&spec.id).cloned();
        if old.is_some_and(|c| !matches!(*c.state.borrow(), ContainerState::Terminated(_))) {
            return Err(RuntimeError::AlreadyExists(spec.id.clone()));
        }
        // A restart: the old container's bundle goes first.
        let old = self.inner.containers.lock().remove(&spec.id);
        if let Some(old) = old {
            self.cleanup(&old.runc_id, &old.dir).await;
        }
        let source = spec.image.clone();
        let image = match self.image(&source).await {
            Ok(image) => image,
            Err(RuntimeError::InvalidImage { message, .. }) => {
                return Ok(self.failed_start(&spec, String::new(), message));
            }
            Err(e) => return Err(e),
        };
        let runc_id = runc_id(&spec.id);
        let dir = self.inner.cfg.data_dir.join("containers").join(&runc_id);
        let rootfs = dir.join("rootfs");
        for d in [&rootfs, &dir.join("upper"), &dir.join("work")] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        let mounted = tokio::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                image.rootfs.display(),
                dir.join("upper").display(),
                dir.join("work").display()
            ))
            .arg(&rootfs)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(io_err("running mount"))?;
        if !mounted.status.success() {
            self.cleanup(&runc_id, &dir).await;
            return Err(RuntimeError::Io {
                context: format!("mounting the root filesystem of {}", spec.id),
                source: std::io::Error::other(
                    String::from_utf8_lossy(&mounted.stderr).trim().to_string(),
                ),
            });
        }
        let cgroup = match spec.limits.memory_bytes {
            Some(bytes) => {
                self.limit_memory(&runc_id, bytes)?;
                format!("/skiff/{runc_id}/ctr")
            }
            None => format!("/skiff/{runc_id}"),
        };
        let config = match spec::runtime_spec(&spec, &image.config, &rootfs, &cgroup) {
            Ok(c) => c,
            Err(e) => {
                self.cleanup(&runc_id, &dir).await;
                return Ok(self.failed_start(
                    &spec,
                    image.digest.clone(),
                    format!("{}: {}", e.field, e.message),
                ));
            }
        };
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).expect("a spec serialises"),
        )
        .map_err(io_err(format!("writing {}/config.json", dir.display())))?;

        let log = open_log(&spec.log_path)?;
        let wiring = Wiring::new(spec.interactive)
            .map_err(io_err("opening a pseudo-terminal for the container"))?;
        let mut cmd = self.runc();
        cmd.arg("--log")
            .arg(dir.join("runc.log"))
            .args(["--log-format", "json", "run", "--pid-file"])
            .arg(dir.join("pid"))
            .arg("--bundle")
            .arg(&dir)
            .arg(&runc_id)
            .kill_on_drop(false);
        wiring
            .stdio(&mut cmd)
            .map_err(io_err("connecting the container's terminal"))?;
        let mut child = cmd
            .spawn()
            .map_err(io_err(format!("running {}", self.inner.cfg.runc.display())))?;
        drop(cmd);
        let (console, readers, live) = wiring
            .finish(&mut child)
            .map_err(io_err("connecting the container's terminal"))?;
        let pumps = readers
            .into_iter()
            .map(|(which, r)| tokio::spawn(pump(r, which, log.clone(), live.clone())))
            .collect();
        drop(live);
        let (state, _) = watch::channel(ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        });
        let c = self.insert(&spec, image.digest.clone(), state, console);
        let (exited_tx, mut exited) = watch::channel(false);
        tokio::spawn(self.clone().supervise(c.clone(), child, pumps, exited_tx));

        // Running once runc has written the pid file; a process that never
        // got there is a StartError, written by the supervisor.
        let until = Instant::now() + START_TIMEOUT;
        let pid_file = dir.join("pid");
        loop {
            if pid_file.exists() {
                let started_at = SystemTime::now();
                c.state.send_if_modified(|s| {
                    if matches!(s, ContainerState::Waiting { .. }) {
                        *s = ContainerState::Running { started_at };
                        true
                    } else {
                        false
                    }
                });
                break;
            }
            if *exited.borrow() || Instant::now() > until {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(2), exited.changed()).await;
        }
        if let Some(deadline) = spec.active_deadline {
            let rt = self.clone();
            let c2 = c.clone();
            tokio::spawn(async move {
                let mut state = c2.state.subscribe();
                let ended = state.wait_for(|s| matches!(s, ContainerState::Terminated(_)));
                if tokio::time::timeout(deadline, ended).await.is_err() {
                    c2.deadline_hit.store(true, Ordering::SeqCst);
                    let _ = rt.runc_quiet(&["kill", &c2.runc_id, "KILL"]).await;
                }
            });
        }
        Ok(c.status())
    }

    /// Waits for `runc run` to exit and records how the container ended.
    async fn supervise(
        self,
        c: Arc<Container>,
        mut child: tokio::process::Child,
        pumps: Vec<tokio::task::JoinHandle<()>>,
        exited: watch::Sender<bool>,
    ) {
        let status = child.wait().await;
        let _ = exited.send(true);
        // The pipes close when the last process of the container is gone.
        for p in pumps {
            let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
        }
        c.console.close();
        let finished_at = SystemTime::now();
        let started = c.dir.join("pid").exists();
        // A process that ended before `start` saw it running: runc wrote
        // the pid file when it started it.
        let started_at = match &*c.state.borrow() {
            ContainerState::Running { started_at } => Some(*started_at),
            _ if started => std::fs::metadata(c.dir.join("pid"))
                .and_then(|m| m.modified())
                .ok(),
            _ => None,
        };
        let termination = if !started {
            let message = runc_error(&c.dir.join("runc.log")).unwrap_or_else(|| match &status {
                Ok(s) => format!("runc exited with {s} before the process started"),
                Err(e) => format!("waiting for runc: {e}"),
            });
            Termination {
                exit_code: exit_code::START_ERROR,
                reason: TerminationReason::StartError,
                message,
                started_at: None,
                finished_at,
            }
        } else {
            use std::os::unix::process::ExitStatusExt;
            let code = match &status {
                Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
                Err(_) => 255,
            };
            let stopping = c.stopping.load(Ordering::SeqCst);
            let reason = if c.deadline_hit.load(Ordering::SeqCst) {
                TerminationReason::DeadlineExceeded
            } else if code == exit_code::KILLED
                && !stopping
                && c.spec.limits.memory_bytes.is_some()
                && self.oom_killed(&c.runc_id)
            {
                TerminationReason::OomKilled
            } else if code == 0 {
                TerminationReason::Completed
            } else {
                TerminationReason::Error
            };
            let message = match reason {
                TerminationReason::DeadlineExceeded => {
                    "the pod's activeDeadlineSeconds passed".to_string()
                }
                TerminationReason::OomKilled => format!(
                    "killed at its memory limit of {} bytes",
                    c.spec.limits.memory_bytes.unwrap_or_default()
                ),
                _ => String::new(),
            };
            Termination {
                exit_code: code,
                reason,
                message,
                started_at,
                finished_at,
            }
        };
        // The writable layer goes with the container (as with a restart in
        // Kubernetes, the next one starts from the image again).
        let _ = self.runc_quiet(&["delete", "--force", &c.runc_id]).await;
        unmount(&c.dir.join("rootfs")).await;
        self.remove_cgroups(&c.runc_id);
        c.state
            .send_replace(ContainerState::Terminated(termination));
    }

    async fn image(&self, source: &ImageSource) -> Result<Image, RuntimeError> {
        match source {
            ImageSource::Registry(r) => self.inner.images.pull(r).await.map(|(i, _)| i),
            ImageSource::File(p) => Err(RuntimeError::InvalidImage {
                image: p.display().to_string(),
                message: "a local file is not a container image (local files are wasm \
                          modules: runtimeClassName: wasm)"
                    .into(),
            }),
        }
    }

    fn failed_start(
        &self,
        spec: &ContainerSpec,
        digest: String,
        message: String,
    ) -> ContainerStatus {
        let (state, _) = watch::channel(ContainerState::Terminated(Termination {
            exit_code: exit_code::START_ERROR,
            reason: TerminationReason::StartError,
            message,
            started_at: None,
            finished_at: SystemTime::now(),
        }));
        let c = self.insert(spec, digest, state, Console::none());
        c.status()
    }

    /// Enters a container in the table (replacing one of the same id).
    fn insert(
        &self,
        spec: &ContainerSpec,
        image_digest: String,
        state: watch::Sender<ContainerState>,
        console: Console,
    ) -> Arc<Container> {
        let runc_id = runc_id(&spec.id);
        let c = Arc::new(Container {
            id: spec.id.clone(),
            dir: self.inner.cfg.data_dir.join("containers").join(&runc_id),
            runc_id,
            spec: spec.clone(),
            image_digest,
            state,
            stopping: AtomicBool::new(false),
            deadline_hit: AtomicBool::new(false),
            console,
        });
        self.inner
            .containers
            .lock()
            .insert(spec.id.clone(), c.clone());
        c
    }

    /// The container an exec of `command` runs in: running, and the command
    /// not empty.
    pub(crate) fn exec_target(
        &self,
        id: &ContainerId,
        command: &[String],
    ) -> Result<Arc<Container>, RuntimeError> {
        let c = self.running(id, "exec")?;
        if command.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                id: id.clone(),
                field: "exec.command",
                message: "empty command".into(),
            });
        }
        Ok(c)
    }

    /// The container `id` if it is running; else what `field` (the
    /// operation) cannot do.
    pub(crate) fn running(
        &self,
        id: &ContainerId,
        field: &'static str,
    ) -> Result<Arc<Container>, RuntimeError> {
        let c = self.get(id)?;
        if matches!(&*c.state.borrow(), ContainerState::Running { .. }) {
            Ok(c)
        } else {
            Err(not_running(id, field))
        }
    }

    /// The PID namespace of the running container `id`
    /// (`/proc/PID/ns/pid`), for another container to join.
    pub fn pid_namespace(&self, id: &ContainerId) -> Result<PathBuf, RuntimeError> {
        const FIELD: &str = "pid namespace";
        let c = self.running(id, FIELD)?;
        let pid = std::fs::read_to_string(c.dir.join("pid")).map_err(|_| not_running(id, FIELD))?;
        let pid: u32 = pid.trim().parse().map_err(|_| not_running(id, FIELD))?;
        Ok(PathBuf::from(format!("/proc/{pid}/ns/pid")))
    }

    pub(crate) fn get(&self, id: &ContainerId) -> Result<Arc<Container>, RuntimeError> {
        self.inner
            .containers
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn wait_for_end(c: &Container) -> ContainerStatus {
        let mut rx = c.state.subscribe();
        let _ = rx
            .wait_for(|s| matches!(s, ContainerState::Terminated(_)))
            .await;
        c.status()
    }

    async fn stop_container(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<ContainerStatus, RuntimeError> {
        let c = self.get(id)?;
        if matches!(*c.state.borrow(), ContainerState::Terminated(_)) {
            return Ok(c.status());
        }
        c.stopping.store(true, Ordering::SeqCst);
        if !grace.is_zero() {
            let _ = self.runc_quiet(&["kill", &c.runc_id, "TERM"]).await;
            if let Ok(s) = tokio::time::timeout(grace, Self::wait_for_end(&c)).await {
                return Ok(s);
            }
        }
        // runc may still be creating it: keep killing until it is gone.
        loop {
            let _ = self.runc_quiet(&["kill", &c.runc_id, "KILL"]).await;
            if let Ok(s) =
                tokio::time::timeout(Duration::from_millis(500), Self::wait_for_end(&c)).await
            {
                return Ok(s);
            }
        }
    }
}

/// runc's name for a container: our id where it is already a valid one.
fn runc_id(id: &ContainerId) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_.+-".contains(c);
    if id.as_str().chars().all(ok) && !id.as_str().is_empty() && id.as_str().len() <= 200 {
        return id.as_str().to_string();
    }
    let clean: String = id
        .as_str()
        .chars()
        .map(|c| if ok(c) { c } else { '-' })
        .take(100)
        .collect();
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(id.as_str().as_bytes())[..6]);
    format!("{clean}-{hash}")
}

/// Detaches the overlay at `rootfs`, if one is mounted there.
async fn unmount(rootfs: &Path) {
    if is_mountpoint(rootfs) {
        let _ = tokio::process::Command::new("umount")
            .arg("-l")
            .arg(rootfs)
            .status()
            .await;
    }
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// The last error runc logged (its JSON log, `"level":"error"`).
fn runc_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error" || v["level"] == "fatal")
            .then(|| v["msg"].as_str().map(str::to_string))
            .flatten()
    })
}

type SharedLog = Arc<Mutex<std::fs::File>>;

fn open_log(path: &Path) -> Result<SharedLog, RuntimeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    Ok(Arc::new(Mutex::new(file)))
}

pub(crate) fn not_running(id: &ContainerId, field: &'static str) -> RuntimeError {
    RuntimeError::InvalidSpec {
        id: id.clone(),
        field,
        message: "the container is not running".into(),
    }
}

/// Copies one of the container's streams into the CRI log, a line at a
/// time (`F`), long lines in pieces (`P`), and to attachers as it is read.
async fn pump(mut stream: impl AsyncRead + Unpin, which: LogStream, log: SharedLog, live: Live) {
    use std::io::Write as _;
    let write = |line: &[u8], full: bool| {
        let text = String::from_utf8_lossy(line);
        let entry = LogLine::format(SystemTime::now(), which, full, &text);
        let _ = log.lock().write_all(entry.as_bytes());
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    // A terminal's master reads EIO once the container's last process is gone.
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        // Attachers see the bytes as they come; the log, whole lines.
        let _ = live.send((which, Bytes::copy_from_slice(&buf[..n])));
        let mut rest = &buf[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..i]);
            write(&line, true);
            line.clear();
            rest = &rest[i + 1..];
        }
        line.extend_from_slice(rest);
        while line.len() >= MAX_LOG_LINE {
            write(&line[..MAX_LOG_LINE], false);
            line.drain(..MAX_LOG_LINE);
        }
    }
    if !line.is_empty() {
        write(&line, true);
    }
}

impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        "runc"
    }

    fn prepare<'a>(
        &'a self,
        image: &'a ImageSource,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>> {
        Box::pin(async move {
            let ImageSource::Registry(r) = image else {
                return Err(self
                    .image(image)
                    .await
                    .expect_err("only registry images are container images"));
            };
            let (image, cached) = self.inner.images.pull(r).await?;
            Ok(PreparedImage {
                digest: image.digest,
                kind: ImageKind::Oci,
                cached,
            })
        })
    }

    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<ContainerStatus, RuntimeError>> {
        Box::pin(self.start_container(spec))
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>> {
        Box::pin(self.stop_container(id, grace))
    }

    fn wait<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>> {
        Box::pin(async move {
            let c = self.get(id)?;
            Ok(Self::wait_for_end(&c).await)
        })
    }

    fn status(&self, id: &ContainerId) -> Result<ContainerStatus, RuntimeError> {
        self.get(id).map(|c| c.status())
    }

    fn list(&self) -> Vec<ContainerStatus> {
        self.inner
            .containers
            .lock()
            .values()
            .map(|c| c.status())
            .collect()
    }

    fn logs(&self, id: &ContainerId) -> Result<LogSource, RuntimeError> {
        self.get(id).map(|c| LogSource {
            path: c.spec.log_path.clone(),
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Vec<String>,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        Box::pin(async move {
            let c = self.exec_target(id, &command)?;
            let out = self
                .runc()
                .args(["exec", "--", &c.runc_id])
                .args(&command)
                .output()
                .await
                .map_err(io_err("running runc exec"))?;
            Ok(ExecOutput {
                exit_code: out.status.code().unwrap_or(exit_code::KILLED),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }

    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let c = self.get(id)?;
            self.stop_container(id, Duration::ZERO).await?;
            self.inner.containers.lock().remove(id);
            self.cleanup(&c.runc_id, &c.dir).await;
            Ok(())
        })
    }
}
