//! The contract between the node agent and a container runtime.
//!
//! Two runtimes implement [`Runtime`]: `wasm-shim` (wasmtime) and
//! `oci-bridge` (runc). The agent turns a Pod into [`ContainerSpec`]s —
//! env and `envFrom` already resolved, volumes already materialised as host
//! directories — and drives each container through
//! `prepare → start → (stop) → wait → remove`. Nothing here knows about
//! Kubernetes objects; only the termination reasons use Kubernetes' words,
//! because they end up verbatim in `containerStatuses`.
//!
//! Failures are split in two. A [`RuntimeError`] means the request itself
//! could not be carried out (unknown container, the image could not be
//! fetched): the agent retries with backoff. A bad *workload* (an invalid
//! module, a missing export, a trap, a guest over its memory limit) is not an
//! error of the call: it is a container that terminated, with a
//! [`TerminationReason`] and a message in its [`ContainerStatus`].
//!
//! Logs are files in the CRI format (`<RFC 3339 time> <stream> <P|F>
//! <text>`) at [`ContainerSpec::log_path`], which the agent chooses, as the
//! kubelet does; [`LogReader`] reads and follows them.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The RuntimeClass (`spec.runtimeClassName`) that sends a Pod to the wasm
/// runtime. Without it, the agent can also tell a wasm image by its media
/// types (`registry::Manifest::is_wasm`) or a `.wasm` file.
pub const WASM_RUNTIME_CLASS: &str = "wasm";

/// A boxed future, so that [`Runtime`] stays usable as `dyn Runtime`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A container runtime: prepares images and runs containers from them.
///
/// All methods take `&self`; implementations are shared between the agent's
/// tasks (`Arc<dyn Runtime>`). Ids are chosen by the caller and unique per
/// node; starting an id whose container has terminated replaces it (a
/// restart), starting one that is still running is
/// [`RuntimeError::AlreadyExists`].
pub trait Runtime: Send + Sync {
    /// A short name for logs and status messages (`wasm`, `runc`).
    fn name(&self) -> &'static str;

    /// Fetches and readies an image (for wasm: pull, verify, compile into
    /// the node's cache). Idempotent and cheap when already prepared.
    fn prepare<'a>(
        &'a self,
        image: &'a ImageSource,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>>;

    /// Creates and starts a container. Returns its status right after the
    /// start: `Running`, or `Terminated` with [`TerminationReason::StartError`]
    /// when the image is unusable (the error is in the status, not in the
    /// `Result`). Prepares the image first if needed.
    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<ContainerStatus, RuntimeError>>;

    /// Stops a container: no new work is accepted, work in flight may finish
    /// within `grace`, then the container is terminated. Returns the final
    /// status. Stopping a terminated container returns its status.
    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>>;

    /// Resolves when the container has terminated, with its final status.
    fn wait<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>>;

    /// The container's current status.
    fn status(&self, id: &ContainerId) -> Result<ContainerStatus, RuntimeError>;

    /// Statuses of all containers this runtime knows (running or not yet
    /// removed), for the agent's resync after a restart of its loop.
    fn list(&self) -> Vec<ContainerStatus>;

    /// Where the container's logs are; read them with [`LogReader`].
    fn logs(&self, id: &ContainerId) -> Result<LogSource, RuntimeError>;

    /// Runs a command inside a running container's sandbox and returns its
    /// output. Not every runtime supports it.
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Vec<String>,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        let _ = command;
        Box::pin(async move {
            Err(RuntimeError::Unsupported {
                what: format!("exec into {id}"),
            })
        })
    }

    /// Forgets a terminated container (stopping it first if it still runs).
    /// Its log file stays: the agent owns it.
    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<(), RuntimeError>>;
}

/// A container's id, chosen by the agent (for example
/// `<pod uid>_<container name>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ContainerId {
    fn from(id: &str) -> Self {
        ContainerId(id.to_string())
    }
}

impl From<String> for ContainerId {
    fn from(id: String) -> Self {
        ContainerId(id)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageSource {
    /// An OCI registry reference (`registry/repo:tag` or `...@sha256:...`).
    Registry(ImageRef),
    /// A file on the node, for development (`file:///path/app.wasm` or an
    /// absolute path in the Pod's `image` field).
    File(PathBuf),
}

impl ImageSource {
    /// Parses a Pod's `image` field: `file://` URLs and absolute paths are
    /// files, everything else a registry reference.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        if let Some(path) = image.strip_prefix("file://") {
            return Ok(ImageSource::File(PathBuf::from(path)));
        }
        if image.starts_with('/') {
            return Ok(ImageSource::File(PathBuf::from(image)));
        }
        ImageRef::parse(image).map(ImageSource::Registry)
    }
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSource::Registry(r) => write!(f, "{r}"),
            ImageSource::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// A parsed image reference, Docker's rules: the first path component is a
/// registry if it has a `.` or `:` or is `localhost`; Docker Hub otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `127.0.0.1:5000` or `registry-1.docker.io`.
    pub registry: String,
    /// e.g. `library/busybox`.
    pub repository: String,
    /// A tag (`latest` when none was given) ...
    pub tag: Option<String>,
    /// ... or a digest (`sha256:<hex>`), which wins when both are given.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {image:?}: {reason}")]
pub struct ImageRefError {
    pub image: String,
    pub reason: &'static str,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        let err = |reason| ImageRefError {
            image: image.to_string(),
            reason,
        };
        if image.is_empty() {
            return Err(err("empty"));
        }
        if image.chars().any(char::is_whitespace) {
            return Err(err("contains whitespace"));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                let Some((algo, hex)) = digest.split_once(':') else {
                    return Err(err("digest must be <algorithm>:<hex>"));
                };
                if algo != "sha256"
                    || hex.len() != 64
                    || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(err("only sha256 digests of 64 hex digits are supported"));
                }
                (rest, Some(digest.to_ascii_lowercase()))
            }
            None => (image, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path)
            }
            _ => ("registry-1.docker.io".to_string(), rest),
        };
        // A tag is after the last ':' of the last path component.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(err("empty repository path component"));
        }
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase"));
        }
        if tag.as_deref() == Some("") {
            return Err(err("empty tag"));
        }
        let repository = if registry == "registry-1.docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The digest if there is one, the tag otherwise: what goes into
    /// `/v2/<repo>/manifests/<reference>`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// An image that is ready to start containers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedImage {
    /// The content digest (`sha256:<hex>`) of what runs: for wasm the module
    /// bytes, for OCI images the manifest.
    pub digest: String,
    pub kind: ImageKind,
    /// True when nothing had to be fetched or compiled.
    pub cached: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// A WebAssembly core module (WASI preview 1).
    WasmModule,
    /// A WebAssembly component (WASI preview 2, possibly `wasi:http/proxy`).
    WasmComponent,
    /// A Linux container image.
    Oci,
}

/// Everything a runtime needs to run one container, already resolved by the
/// agent.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    pub id: ContainerId,
    pub image: ImageSource,
    /// Kubernetes' `command` (replaces the image's entrypoint); for wasm the
    /// first word becomes `argv[0]`.
    pub command: Vec<String>,
    /// Kubernetes' `args`.
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    /// The final environment (env and envFrom resolved, in order).
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
    pub workload: Workload,
    /// Where the runtime writes the CRI-format log. The agent owns the file.
    pub log_path: PathBuf,
    /// A wall-clock limit on the container's life (the Pod's
    /// `activeDeadlineSeconds`, for jobs); past it the container is
    /// terminated with [`TerminationReason::DeadlineExceeded`].
    pub active_deadline: Option<Duration>,
    /// The pod's hostname (its name), for runtimes with a UTS namespace.
    pub hostname: Option<String>,
    /// The pod's network namespace (`/var/run/netns/...`) that a container
    /// joins; `None` shares the host's network (wasm guests always do).
    pub network_namespace: Option<PathBuf>,
    /// A running container's PID namespace to join (`/proc/PID/ns/pid`):
    /// an ephemeral container that targets it (`kubectl debug --target`)
    /// sees its processes. `None`: a PID namespace of its own.
    pub pid_namespace: Option<PathBuf>,
    /// How the pod's names resolve in the cluster (its resolv.conf's
    /// `search` and `ndots`), for runtimes that resolve names themselves:
    /// wasm guests share the host's network and resolver. `None`: the
    /// pod's DNS is the host's (`dnsPolicy: Default`, host network, no
    /// cluster DNS).
    pub names: Option<std::sync::Arc<NameSearch>>,
    /// Kubernetes' `stdin`, `stdinOnce` and `tty`: whether the container's
    /// standard input stays open for `kubectl attach -i`, and whether it
    /// runs on a terminal.
    pub interactive: Interactive,
}

/// A container's standard input and terminal, as its spec asks
/// (`stdin`, `stdinOnce`, `tty`). Without `stdin` the container reads
/// `/dev/null`, as under a kubelet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interactive {
    /// Standard input is kept open for attachers.
    pub stdin: bool,
    /// It closes when the first attach session ends.
    pub stdin_once: bool,
    /// The container runs on a terminal.
    pub tty: bool,
}

/// A pod's cluster name search: names with fewer than `ndots` dots are
/// tried with each of `domains` appended first, as a resolver with that
/// resolv.conf would.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameSearch {
    pub domains: Vec<String>,
    pub ndots: usize,
}

impl NameSearch {
    /// The names to look up for `host`, in order.
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.domains.iter().map(|d| format!("{host}.{d}"));
        if host.matches('.').count() >= self.ndots {
            std::iter::once(host.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(host.to_string())).collect()
        }
    }
}

impl ContainerSpec {
    /// A spec with the given id, image and log path and everything else empty.
    pub fn new(id: impl Into<String>, image: ImageSource, log_path: impl Into<PathBuf>) -> Self {
        ContainerSpec {
            id: ContainerId::new(id),
            image,
            command: Vec::new(),
            args: Vec::new(),
            working_dir: None,
            env: Vec::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
            workload: Workload::Command,
            log_path: log_path.into(),
            active_deadline: None,
            hostname: None,
            network_namespace: None,
            pid_namespace: None,
            names: None,
            interactive: Interactive::default(),
        }
    }

    /// `command` followed by `args`: the argv the container runs with
    /// (empty means the image's default).
    pub fn argv(&self) -> Vec<String> {
        self.command.iter().chain(&self.args).cloned().collect()
    }
}

/// A host directory (a volume the agent materialised) mounted in the
/// container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    /// Absolute path in the container (`mountPath`).
    pub container_path: String,
    pub read_only: bool,
}

/// `resources.limits`, in the units the runtimes enforce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// `limits.memory`: a hard cap on the container's memory.
    pub memory_bytes: Option<u64>,
    /// `limits.cpu` in millicores: a cap on CPU time per period.
    pub cpu_millis: Option<u64>,
}

/// What shape of workload a container is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A program that runs until it exits: a long-running service or a
    /// run-to-completion job. Its stdout/stderr are the logs, its exit code
    /// the termination state.
    Command,
    /// A `wasi:http/proxy` component: the container is "running" while the
    /// runtime accepts requests for it, and each request gets its own
    /// instance.
    HttpHandler(HttpHandlerSpec),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpHandlerSpec {
    /// A wall-clock limit per request; past it the instance is interrupted
    /// and the client gets 504.
    pub request_timeout: Duration,
    /// The most requests handled at once (the rest wait); `None` for the
    /// runtime's default.
    pub max_concurrency: Option<u32>,
}

impl Default for HttpHandlerSpec {
    fn default() -> Self {
        HttpHandlerSpec {
            request_timeout: Duration::from_secs(30),
            max_concurrency: None,
        }
    }
}

/// Kubernetes' container state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Waiting { reason: String, message: String },
    Running { started_at: SystemTime },
    Terminated(Termination),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: TerminationReason,
    pub message: String,
    /// `None` when the container never started (a start error).
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
}

/// The `reason` of a terminated container, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TerminationReason {
    /// Exited with code 0.
    Completed,
    /// Exited with a non-zero code, trapped, or was stopped.
    Error,
    /// Went over its memory limit.
    OomKilled,
    /// Ran past its active deadline.
    DeadlineExceeded,
    /// Could not be started: the image is not runnable (invalid module,
    /// missing entry point, imports the runtime does not provide).
    StartError,
}

impl TerminationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationReason::Completed => "Completed",
            TerminationReason::Error => "Error",
            TerminationReason::OomKilled => "OOMKilled",
            TerminationReason::DeadlineExceeded => "DeadlineExceeded",
            TerminationReason::StartError => "StartError",
        }
    }
}

impl fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exit codes that mean the same as they do for Linux containers.
pub mod exit_code {
    /// The container could not be started (containerd's code for start errors).
    pub const START_ERROR: i32 = 128;
    /// Trapped (wasm) or crashed: what a native process that aborts reports
    /// (128 + SIGABRT).
    pub const TRAPPED: i32 = 134;
    /// Killed: stopped by the runtime, over its memory limit, or past its
    /// deadline (128 + SIGKILL).
    pub const KILLED: i32 = 137;
    /// Stopped on request after its grace period (128 + SIGTERM).
    pub const TERMINATED: i32 = 143;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub state: ContainerState,
    /// The digest of what runs, once known.
    pub image_digest: Option<String>,
}

impl ContainerStatus {
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }
    pub fn termination(&self) -> Option<&Termination> {
        match &self.state {
            ContainerState::Terminated(t) => Some(t),
            _ => None,
        }
    }
}

/// Where a container's log is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSource {
    pub path: PathBuf,
}

/// The result of [`Runtime::exec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} not found")]
    NotFound(ContainerId),
    #[error("container {0} already exists and is running")]
    AlreadyExists(ContainerId),
    #[error("invalid container spec for {id}: {field}: {message}")]
    InvalidSpec {
        id: ContainerId,
        field: &'static str,
        message: String,
    },
    /// The image could not be fetched (the agent's `ErrImagePull`).
    #[error("pulling {image}: {message}")]
    Pull { image: String, message: String },
    /// The image was fetched but cannot run here (not wasm, corrupt).
    #[error("image {image} is not runnable: {message}")]
    InvalidImage { image: String, message: String },
    #[error("{what} is not supported by this runtime")]
    Unsupported { what: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("runtime internal error: {0}")]
    Internal(String),
}

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds, UTC, as written.
    pub time: String,
    pub stream: LogStream,
    /// `false` for a partial line (`P`): the text continues in the next line.
    pub full: bool,
    pub text: String,
}

impl LogLine {
    /// Parses `<time> <stream> <P|F> <text>`.
    pub fn parse(line: &str) -> Option<LogLine> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut parts = line.splitn(4, ' ');
        let time = parts.next()?.to_string();
        let stream = match parts.next()? {
            "stdout" => LogStream::Stdout,
            "stderr" => LogStream::Stderr,
            _ => return None,
        };
        let full = match parts.next()? {
            "F" => true,
            "P" => false,
            _ => return None,
        };
        let text = parts.next().unwrap_or("").to_string();
        Some(LogLine {
            time,
            stream,
            full,
            text,
        })
    }

    /// Formats one CRI log line (with its trailing newline).
    pub fn format(time: SystemTime, stream: LogStream, full: bool, text: &str) -> String {
        format!(
            "{} {} {} {}\n",
            rfc3339_nanos(time),
            stream.as_str(),
            if full { 'F' } else { 'P' },
            text
        )
    }
}

/// Reads a CRI log file from the start, or only the lines appended since the
/// last call (to follow a running container: call again after the status
/// changed or on a timer; a partial last line is kept until it is complete).
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    offset: u64,
}

impl LogReader {
    pub fn open(path: impl AsRef<Path>) -> Self {
        LogReader {
            path: path.as_ref().to_path_buf(),
            offset: 0,
        }
    }

    /// The complete lines appended since the last call. A missing file is no
    /// lines yet.
    pub fn read_new(&mut self) -> io::Result<Vec<LogLine>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = io::BufReader::new(file.take(u64::MAX));
        let mut lines = Vec::new();
        let mut buf = String::new();
        loop {
            buf.clear();
            let n = reader.read_line(&mut buf)?;
            if n == 0 || !buf.ends_with('\n') {
                break;
            }
            self.offset += n as u64;
            if let Some(line) = LogLine::parse(&buf) {
                lines.push(line);
            }
        }
        Ok(lines)
    }

    /// The whole log joined back into text per stream order, with partial
    /// lines rejoined: what `kubectl logs` prints.
    pub fn read_text(path: impl AsRef<Path>) -> io::Result<String> {
        let mut out = String::new();
        for line in LogReader::open(path).read_new()? {
            out.push_str(&line.text);
            if line.full {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-23T09:30:00.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:09}Z",
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_searched_as_resolv_conf_says() {
        let s = NameSearch {
            domains: vec!["shop.svc.cluster.local".into(), "svc.cluster.local".into()],
            ndots: 5,
        };
        assert_eq!(
            s.candidates("web"),
            ["web.shop.svc.cluster.local", "web.svc.cluster.local", "web"]
        );
        assert_eq!(
            s.candidates("web.shop.svc.cluster.local.")[..],
            ["web.shop.svc.cluster.local"]
        );
        let few = NameSearch {
            ndots: 1,
            ..s.clone()
        };
        assert_eq!(few.candidates("example.com")[0], "example.com");
    }

    #[test]
    fn image_refs_follow_dockers_rules() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("registry-1.docker.io", "library/busybox", Some("latest"))
        );
        let r = ImageRef::parse("127.0.0.1:5000/wasm/hello:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference()),
            ("127.0.0.1:5000", "wasm/hello", "v1")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref(), r.reference()),
            ("localhost", None, d.as_str())
        );
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a//b").is_err());
        assert!(ImageRef::parse("x.io/App").is_err());
        assert!(ImageRef::parse("app@sha256:abc").is_err());
        assert_eq!(
            ImageSource::parse("/srv/app.wasm").unwrap(),
            ImageSource::File("/srv/app.wasm".into())
        );
        assert_eq!(
            ImageSource::parse("file:///srv/a.wasm").unwrap(),
            ImageSource::File("/srv/a.wasm".into())
        );
    }

    #[test]
    fn cri_log_lines_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_795_426_200, 5);
        let s = LogLine::format(t, LogStream::Stderr, false, "a b c");
        assert_eq!(s, "2026-11-23T09:30:00.000000005Z stderr P a b c\n");
        let l = LogLine::parse(&s).unwrap();
        assert_eq!(
            (l.stream, l.full, l.text.as_str()),
            (LogStream::Stderr, false, "a b c")
        );
        assert!(LogLine::parse("garbage").is_none());
        assert_eq!(LogLine::parse("t stdout F ").unwrap().text, "");
    }

    #[test]
    fn log_reader_returns_only_complete_new_lines() {
        let dir = std::env::temp_dir().join(format!("skiff-sdk-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        let mut reader = LogReader::open(&path);
        assert!(reader.read_new().unwrap().is_empty());
        std::fs::write(&path, "t stdout F one\nt stderr P tw").unwrap();
        let lines = reader.read_new().unwrap();
        assert_eq!(lines.len(), 1);
        std::fs::write(&path, "t stdout F one\nt stderr P tw\nt stderr F o\n").unwrap();
        let lines = reader.read_new().unwrap();
        assert_eq!(
            lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["tw", "o"]
        );
        assert_eq!(LogReader::read_text(&path).unwrap(), "one\ntwo\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The generic runtime test harness: the same cases run against every
/// [`Runtime`] (feature `conformance`). A runtime's test supplies
/// [`Workloads`]: how to express each behaviour in its images.
#[cfg(feature = "conformance")]
pub mod conformance {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    /// One thing a test container does, in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Step {
        /// Print a line on stdout.
        Echo(String),
        /// Print a line on stderr.
        Stderr(String),
        /// Print the environment, one `NAME=value` per line.
        Env,
        /// Print a file's contents (fail with a non-zero exit if unreadable).
        Cat(String),
        /// Write text to a file (fail with a non-zero exit if not writable).
        Write(String, String),
        /// Print `tick N` every this many milliseconds, forever.
        TickForever(u64),
        /// Exit with this code.
        Exit(i32),
    }

    /// How a runtime's images express the [`Step`]s.
    pub trait Workloads: Send + Sync {
        /// A spec with `id` that performs `steps`, logging under the
        /// workload's own temporary directory. The harness adds env and
        /// mounts.
        fn spec(&self, id: &str, steps: &[Step]) -> ContainerSpec;
        /// A directory for the harness's volumes.
        fn scratch_dir(&self) -> PathBuf;
    }

    /// Runs every case; each starts its own containers with ids prefixed by
    /// `prefix`.
    pub async fn run_all(rt: &dyn Runtime, w: &dyn Workloads, prefix: &str) {
        start_and_logs(rt, w, &format!("{prefix}-logs")).await;
        exit_codes(rt, w, &format!("{prefix}-exit")).await;
        env(rt, w, &format!("{prefix}-env")).await;
        volumes(rt, w, &format!("{prefix}-vol")).await;
        stop_with_grace(rt, w, &format!("{prefix}-stop")).await;
        restart(rt, w, &format!("{prefix}-restart")).await;
        unknown_and_removed(rt, w, &format!("{prefix}-rm")).await;
    }

    fn text(spec: &ContainerSpec) -> String {
        LogReader::read_text(&spec.log_path).expect("reading the container log")
    }

    async fn run_to_end(rt: &dyn Runtime, spec: ContainerSpec) -> Termination {
        rt.start(spec.clone())
            .await
            .unwrap_or_else(|e| panic!("starting {}: {e}", spec.id));
        let status = rt.wait(&spec.id).await.expect("waiting");
        status
            .termination()
            .cloned()
            .unwrap_or_else(|| panic!("{} did not terminate: {status:?}", spec.id))
    }

    pub async fn start_and_logs(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let spec = w.spec(
            id,
            &[
                Step::Echo("hello on stdout".into()),
                Step::Stderr("hello on stderr".into()),
                Step::Exit(0),
            ],
        );
        let t = run_to_end(rt, spec.clone()).await;
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::Completed, 0),
            "{t:?}"
        );
        let started = t.started_at.expect("a started container has a start time");
        assert!(started <= t.finished_at);
        let lines = LogReader::open(&rt.logs(&spec.id).expect("logs").path)
            .read_new()
            .expect("reading logs");
        assert!(
            lines
                .iter()
                .any(|l| l.stream == LogStream::Stdout && l.text == "hello on stdout"),
            "stdout line missing: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.stream == LogStream::Stderr && l.text == "hello on stderr"),
            "stderr line missing: {lines:?}"
        );
        assert!(rt.list().iter().any(|s| s.id == spec.id));
        assert_eq!(rt.status(&spec.id).expect("status").termination(), Some(&t));
    }

    pub async fn exit_codes(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        // WASI preview 1 allows exit codes below 126 only.
        for code in [3, 0, 42] {
            let spec = w.spec(&format!("{id}-{code}"), &[Step::Exit(code)]);
            let t = run_to_end(rt, spec).await;
            assert_eq!(t.exit_code, code, "{t:?}");
            let reason = if code == 0 {
                TerminationReason::Completed
            } else {
                TerminationReason::Error
            };
            assert_eq!(t.reason, reason, "{t:?}");
        }
    }

    pub async fn env(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let mut spec = w.spec(id, &[Step::Env, Step::Exit(0)]);
        spec.env = vec![
            ("GREETING".into(), "hello world".into()),
            ("FROM_SECRET".into(), "s3cr=t".into()),
            ("EMPTY".into(), String::new()),
        ];
        let t = run_to_end(rt, spec.clone()).await;
        assert_eq!(t.exit_code, 0, "{t:?}");
        let out = text(&spec);
        for want in ["GREETING=hello world", "FROM_SECRET=s3cr=t", "EMPTY="] {
            assert!(
                out.lines().any(|l| l == want),
                "{want:?} not in the environment:\n{out}"
            );
        }
    }

    pub async fn volumes(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let base = w.scratch_dir().join(id);
        let (config, data) = (base.join("config"), base.join("data"));
        std::fs::create_dir_all(&config).expect("creating the config volume");
        std::fs::create_dir_all(&data).expect("creating the data volume");
        std::fs::write(config.join("app.conf"), "mode=test\n").expect("writing the config");
        let mounts = vec![
            Mount {
                host_path: config.clone(),
                container_path: "/config".into(),
                read_only: true,
            },
            Mount {
                host_path: data.clone(),
                container_path: "/data".into(),
                read_only: false,
            },
        ];
        let mut spec = w.spec(
            id,
            &[
                Step::Cat("/config/app.conf".into()),
                Step::Write("/data/out.txt".into(), "written by the guest".into()),
                Step::Exit(0),
            ],
        );
        spec.mounts = mounts.clone();
        let t = run_to_end(rt, spec.clone()).await;
        assert_eq!(t.exit_code, 0, "{t:?}\n{}", text(&spec));
        assert!(
            text(&spec).contains("mode=test"),
            "config not read:\n{}",
            text(&spec)
        );
        assert_eq!(
            std::fs::read_to_string(data.join("out.txt")).expect("the guest's file on the host"),
            "written by the guest"
        );
        // A read-only mount refuses writes.
        let mut spec = w.spec(
            &format!("{id}-ro"),
            &[
                Step::Write("/config/evil.txt".into(), "nope".into()),
                Step::Exit(0),
            ],
        );
        spec.mounts = mounts;
        let t = run_to_end(rt, spec.clone()).await;
        assert_ne!(
            t.exit_code, 0,
            "writing to a read-only mount succeeded: {t:?}"
        );
        assert!(!config.join("evil.txt").exists());
    }

    pub async fn stop_with_grace(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let spec = w.spec(id, &[Step::TickForever(50)]);
        let status = rt.start(spec.clone()).await.expect("starting");
        assert!(status.is_running(), "{status:?}");
        // It is running and logging.
        let until = Instant::now() + Duration::from_secs(10);
        while !text(&spec).contains("tick 1") {
            assert!(
                Instant::now() < until,
                "no ticks in the log:\n{}",
                text(&spec)
            );
            delay(Duration::from_millis(20)).await;
        }
        assert!(rt.status(&spec.id).expect("status").is_running());
        let grace = Duration::from_secs(3);
        let t0 = Instant::now();
        let status = rt.stop(&spec.id, grace).await.expect("stopping");
        let took = t0.elapsed();
        assert!(took < grace + Duration::from_secs(2), "stop took {took:?}");
        let t = status
            .termination()
            .cloned()
            .unwrap_or_else(|| panic!("not terminated: {status:?}"));
        assert_eq!(t.reason, TerminationReason::Error, "{t:?}");
        assert!(
            [exit_code::KILLED, exit_code::TERMINATED].contains(&t.exit_code),
            "{t:?}"
        );
        // wait and a second stop agree.
        assert_eq!(
            rt.wait(&spec.id).await.expect("wait").termination(),
            Some(&t)
        );
        assert_eq!(
            rt.stop(&spec.id, grace)
                .await
                .expect("second stop")
                .termination(),
            Some(&t)
        );
        // Nothing is written after the stop.
        let before = text(&spec);
        delay(Duration::from_millis(200)).await;
        assert_eq!(
            before,
            text(&spec),
            "the container kept logging after it was stopped"
        );
    }

    pub async fn restart(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let first = w.spec(id, &[Step::Echo("first run".into()), Step::Exit(1)]);
        let t = run_to_end(rt, first).await;
        assert_eq!(t.exit_code, 1);
        let second = w.spec(id, &[Step::Echo("second run".into()), Step::Exit(0)]);
        let t = run_to_end(rt, second.clone()).await;
        assert_eq!(
            (t.exit_code, t.reason),
            (0, TerminationReason::Completed),
            "{t:?}"
        );
        let out = text(&second);
        assert!(
            out.contains("first run") && out.contains("second run"),
            "{out}"
        );
        // A running container cannot be started again.
        let forever = w.spec(id, &[Step::TickForever(100)]);
        rt.start(forever.clone()).await.expect("starting");
        match rt.start(forever.clone()).await {
            Err(RuntimeError::AlreadyExists(got)) => assert_eq!(got, forever.id),
            other => panic!("starting a running container again: {other:?}"),
        }
        rt.stop(&forever.id, Duration::ZERO)
            .await
            .expect("stopping");
    }

    pub async fn unknown_and_removed(rt: &dyn Runtime, w: &dyn Workloads, id: &str) {
        let nobody = ContainerId::new(format!("{id}-nobody"));
        assert!(matches!(rt.status(&nobody), Err(RuntimeError::NotFound(_))));
        assert!(matches!(
            rt.stop(&nobody, Duration::ZERO).await,
            Err(RuntimeError::NotFound(_))
        ));
        let spec = w.spec(id, &[Step::TickForever(100)]);
        rt.start(spec.clone()).await.expect("starting");
        rt.remove(&spec.id)
            .await
            .expect("removing a running container stops it");
        assert!(matches!(
            rt.status(&spec.id),
            Err(RuntimeError::NotFound(_))
        ));
        assert!(!rt.list().iter().any(|s| s.id == spec.id));
        assert!(
            spec.log_path.exists(),
            "remove must leave the log to the agent"
        );
    }

    /// A timer without an executor: a thread wakes the task.
    pub fn delay(d: Duration) -> impl Future<Output = ()> {
        struct Delay {
            state: Arc<Mutex<(bool, Option<Waker>)>>,
        }
        impl Future for Delay {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                let mut s = self.state.lock().expect("delay state");
                if s.0 {
                    return Poll::Ready(());
                }
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
        let state = Arc::new(Mutex::new((false, None::<Waker>)));
        let s = state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            let mut g = s.lock().expect("delay state");
            g.0 = true;
            if let Some(w) = g.1.take() {
                w.wake();
            }
        });
        Delay { state }
    }
}
