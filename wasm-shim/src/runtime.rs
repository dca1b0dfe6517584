//! [`WasmRuntime`]: the wasm implementation of skiff's runtime trait.
//!
//! Guests run as wasmtime async calls on the runtime's own tokio runtime
//! (`wasm-worker` threads), never on the caller's: an HTTP request handed in
//! from the node's executor is served there and its response streamed back.
//! Every guest yields at each epoch slice, so a spinning guest holds a
//! worker for at most one slice, and stopping or timing it out drops its
//! future at the next yield (or at once, if it is blocked in a host call).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use skiff_sdk::registry::{RegistryClient, sha256_digest};
use skiff_sdk::runtime::{
    BoxFuture, ContainerId, ContainerSpec, ContainerState, ContainerStatus, ExecOutput, ImageKind,
    ImageSource, LogSource, LogStream, PreparedImage, Runtime, RuntimeError, Termination,
    TerminationReason, Workload, exit_code,
};
use tokio::sync::{Semaphore, watch};
use wasmtime::Engine;
use wasmtime::component::{Linker as ComponentLinker, ResourceTable};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::Error;
use crate::engine::{
    CompileCache, CompileSource, Compiled, EngineConfig, FileStamp, Ticker, WasmKind,
};
use crate::host::{ClusterNames, Hooks, Host, Limits, LogSink, P1Host, configure_store};

/// How a [`WasmRuntime`] is set up.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The node's directory for wasm state: `compiled/` holds the compile
    /// cache.
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub registry: RegistryClient,
    /// Threads that run guest code (default: one per core).
    pub worker_threads: usize,
    /// Requests one HTTP handler serves at once unless its spec says
    /// otherwise.
    pub default_http_concurrency: u32,
    /// The cluster's names, for guests' outgoing HTTP requests (with each
    /// pod's [`ContainerSpec::names`]); `None`: the host's resolver only.
    pub names: Option<ClusterNames>,
}

impl RuntimeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            data_dir: data_dir.into(),
            engine: EngineConfig::default(),
            registry: RegistryClient::new(),
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            default_http_concurrency: 256,
            names: None,
        }
    }
}

/// The wasm runtime. Cheap to clone (a handle).
#[derive(Clone)]
pub struct WasmRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("data_dir", &self.inner.config.data_dir)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    config: RuntimeConfig,
    cache: CompileCache,
    component_linker: ComponentLinker<Host>,
    module_linker: wasmtime::Linker<P1Host>,
    pres: Mutex<HashMap<String, Pre>>,
    containers: Mutex<HashMap<ContainerId, Arc<Container>>>,
    executor: Executor,
    ticker: Ticker,
}

/// The runtime's own tokio runtime; shut down in the background on drop so
/// that dropping the `WasmRuntime` inside an async context is fine.
struct Executor(Option<tokio::runtime::Runtime>);

impl Executor {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the executor lives as long as the runtime")
            .handle()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A module or component linked against the host, ready to instantiate.
#[derive(Clone)]
enum Pre {
    Module(wasmtime::InstancePre<P1Host>),
    Component(wasmtime::component::InstancePre<Host>),
}

/// What a container runs, checked at start against its workload.
#[derive(Clone)]
enum Entry {
    Module(wasmtime::InstancePre<P1Host>),
    Command(CommandPre<Host>),
    Http(ProxyPre<Host>),
}

struct Container {
    spec: ContainerSpec,
    digest: Option<String>,
    state: watch::Sender<ContainerState>,
    /// Set once to ask the container to end.
    stop: watch::Sender<Option<StopKind>>,
    http: Option<Arc<HttpHandler>>,
    sink: Arc<LogSink>,
    entry: Option<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopKind {
    Stopped,
    Deadline,
}

/// How one guest run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(i32),
    Trapped(String),
    OutOfMemory(String),
    Stopped,
    Deadline,
    StartFailed(String),
}

impl Outcome {
    fn termination(self, started_at: Option<SystemTime>) -> Termination {
        let (exit_code, reason, message) = match self {
            Outcome::Exited(0) => (0, TerminationReason::Completed, String::new()),
            Outcome::Exited(c) => (c, TerminationReason::Error, format!("exited with code {c}")),
            Outcome::Trapped(m) => (exit_code::TRAPPED, TerminationReason::Error, m),
            Outcome::OutOfMemory(m) => (exit_code::KILLED, TerminationReason::OomKilled, m),
            Outcome::Stopped => (
                exit_code::TERMINATED,
                TerminationReason::Error,
                "stopped by the runtime (WASI has no signals: the guest was ended at once)".into(),
            ),
            Outcome::Deadline => (
                exit_code::KILLED,
                TerminationReason::DeadlineExceeded,
                "ran past its active deadline".into(),
            ),
            Outcome::StartFailed(m) => (exit_code::START_ERROR, TerminationReason::StartError, m),
        };
        Termination {
            exit_code,
            reason,
            message,
            started_at,
            finished_at: SystemTime::now(),
        }
    }

    /// Classifies the error of an instantiation or a call.
    fn from_error(e: wasmtime::Error, oom: Option<String>, instantiating: bool) -> Outcome {
        if let Some(exit) = e.downcast_ref::<I32Exit>() {
            return Outcome::Exited(exit.0);
        }
        let detail = describe(&e);
        if let Some(oom) = oom {
            return Outcome::OutOfMemory(format!("{oom} ({detail})"));
        }
        if instantiating {
            return Outcome::StartFailed(format!("instantiating: {detail}"));
        }
        Outcome::Trapped(detail)
    }
}

/// One line for the status message: the error chain (the trap last), and
/// the innermost wasm frame when there is a backtrace.
fn describe(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut frame = None;
    for cause in e.chain() {
        let msg = cause.to_string();
        if msg.starts_with("error while executing at wasm backtrace") {
            frame = msg.lines().nth(1).map(|l| l.trim().to_string());
            continue;
        }
        let first = msg.lines().next().unwrap_or_default().trim().to_string();
        if !first.is_empty() && !parts.contains(&first) {
            parts.push(first);
        }
    }
    let mut s = parts.join(": ");
    if let Some(frame) = frame {
        s = format!("{s} (at {frame})");
    }
    s
}

impl WasmRuntime {
    pub fn new(config: RuntimeConfig) -> Result<WasmRuntime, Error> {
        let engine = crate::engine::build_engine(&config.engine)?;
        let cache = CompileCache::new(engine.clone(), &config.data_dir.join("compiled"));
        let mut component_linker = ComponentLinker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .and_then(|()| {
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            })
            .map_err(|e| Error::Engine(format!("linking wasi: {e:#}")))?;
        let mut module_linker = wasmtime::Linker::<P1Host>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |h| &mut h.wasi)
            .map_err(|e| Error::Engine(format!("linking wasi preview 1: {e:#}")))?;
        let executor = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .thread_name("wasm-worker")
            .enable_all()
            .build()
            .map_err(Error::Threads)?;
        let ticker = Ticker::start(engine.clone(), config.engine.epoch_tick)?;
        Ok(WasmRuntime {
            inner: Arc::new(Inner {
                engine,
                config,
                cache,
                component_linker,
                module_linker,
                pres: Mutex::new(HashMap::new()),
                containers: Mutex::new(HashMap::new()),
                executor: Executor(Some(executor)),
                ticker,
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The identity of compiled artifacts on this node (wasmtime version,
    /// target, compiler settings): the compile cache's directory name.
    pub fn fingerprint(&self) -> &str {
        self.inner.cache.fingerprint()
    }

    /// Forgets every compiled artifact held in memory, keeping the disk
    /// cache: what the node sees after a restart.
    pub fn forget_compiled(&self) {
        self.inner.cache.forget_memory();
        self.inner.pres.lock().clear();
    }

    /// Removes a module's compiled artifact from memory and disk.
    pub fn evict_compiled(&self, digest: &str) {
        self.inner.cache.evict(digest);
        self.inner.pres.lock().remove(digest);
    }

    /// Pulls (or reads) and compiles an image; see [`Runtime::prepare`].
    pub async fn prepare_image(
        &self,
        image: &ImageSource,
    ) -> Result<(PreparedImage, CompileSource), Error> {
        let (digest, compiled, source) = self.inner.clone().load(image).await?;
        let kind = match compiled.kind() {
            WasmKind::Module => ImageKind::WasmModule,
            WasmKind::Component => ImageKind::WasmComponent,
        };
        let cached = source != CompileSource::Compiled;
        Ok((
            PreparedImage {
                digest,
                kind,
                cached,
            },
            source,
        ))
    }

    /// Serves one HTTP request with the HTTP-handler container `id`: a
    /// fresh instance from the pre-instantiated component, limited by the
    /// container's memory, CPU and request timeout. Guest failures become
    /// 5xx responses (and a line in the container's log), not errors.
    pub async fn handle_request<B>(
        &self,
        id: &ContainerId,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Error>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let handler = {
            let containers = self.inner.containers.lock();
            let c = containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            c.http
                .clone()
                .ok_or_else(|| Error::NotHttpHandler(id.clone()))?
        };
        Ok(handler.serve(&self.inner, req).await)
    }

    /// Builds a ready-to-instantiate HTTP handler for `id` for benchmarks:
    /// instantiates it `n` times and keeps the instances (idle, in their own
    /// stores), returning them to be dropped by the caller.
    pub async fn instantiate_idle(
        &self,
        id: &ContainerId,
        n: usize,
    ) -> Result<IdleInstances, Error> {
        let handler = {
            let containers = self.inner.containers.lock();
            let c = containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            c.http
                .clone()
                .ok_or_else(|| Error::NotHttpHandler(id.clone()))?
        };
        let inner = self.inner.clone();
        let join = self.inner.executor.handle().spawn(async move {
            let mut kept = Vec::with_capacity(n);
            for _ in 0..n {
                let mut store = handler.new_store(&inner)?;
                handler
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| Error::Engine(format!("instantiating: {e:#}")))?;
                kept.push(store);
            }
            Ok::<_, Error>(kept)
        });
        let stores = join.await.map_err(|e| Error::Engine(e.to_string()))??;
        Ok(IdleInstances { _stores: stores })
    }

    /// Instantiates the handler once and drops it, `n` times, returning the
    /// time each instantiation took (for the benchmark and the leak test).
    pub async fn instantiate_cycles(
        &self,
        id: &ContainerId,
        n: usize,
    ) -> Result<Vec<Duration>, Error> {
        let handler = {
            let containers = self.inner.containers.lock();
            let c = containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            c.http
                .clone()
                .ok_or_else(|| Error::NotHttpHandler(id.clone()))?
        };
        let inner = self.inner.clone();
        let join = self.inner.executor.handle().spawn(async move {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let mut store = handler.new_store(&inner)?;
                let t = Instant::now();
                handler
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| Error::Engine(format!("instantiating: {e:#}")))?;
                times.push(t.elapsed());
                drop(store);
            }
            Ok::<_, Error>(times)
        });
        join.await.map_err(|e| Error::Engine(e.to_string()))?
    }

    async fn start_inner(&self, spec: ContainerSpec) -> Result<ContainerStatus, RuntimeError> {
        let id = spec.id.clone();
        if let Some(c) = self.inner.containers.lock().get(&id)
            && !matches!(*c.state.borrow(), ContainerState::Terminated(_))
        {
            return Err(RuntimeError::AlreadyExists(id));
        }
        validate(&spec)?;
        // Creating the log file (a new inode: ≈50–150 µs on ext4 with
        // churn) overlaps loading and linking the image.
        let log_path = spec.log_path.clone();
        let sink = self
            .inner
            .executor
            .handle()
            .spawn_blocking(move || LogSink::open(&log_path));
        let entry = self.entry_for(&spec).await;
        let sink = sink
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| RuntimeError::Io {
                context: format!("opening the log {}", spec.log_path.display()),
                source,
            })?;
        let (entry, digest) = match entry {
            Ok(ok) => ok,
            Err(StartFailure::Runtime(e)) => return Err(e),
            Err(StartFailure::Container(message, digest)) => {
                sink.note(&format!("skiff: cannot start: {message}"));
                let t = Outcome::StartFailed(message).termination(None);
                return Ok(self.record_terminated(spec, digest, sink, t));
            }
        };
        let http = match (&spec.workload, &entry) {
            (Workload::HttpHandler(h), Entry::Http(pre)) => Some(Arc::new(HttpHandler {
                pre: pre.clone(),
                spec: spec.clone(),
                sink: sink.clone(),
                timeout: h.request_timeout,
                permits: Arc::new(Semaphore::new(
                    h.max_concurrency
                        .unwrap_or(self.inner.config.default_http_concurrency)
                        as usize,
                )),
                in_flight: Arc::new(AtomicUsize::new(0)),
                drained: Arc::new(tokio::sync::Notify::new()),
                draining: AtomicBool::new(false),
                kill: watch::channel(false).0,
            })),
            _ => None,
        };
        let started_at = SystemTime::now();
        let (state, _) = watch::channel(ContainerState::Running { started_at });
        let (stop, stop_rx) = watch::channel(None);
        let container = Arc::new(Container {
            spec: spec.clone(),
            digest: Some(digest.clone()),
            state,
            stop,
            http,
            sink: sink.clone(),
            entry: Some(entry.clone()),
        });
        self.inner
            .containers
            .lock()
            .insert(id.clone(), container.clone());
        match entry {
            Entry::Http(_) => {
                if let Some(deadline) = spec.active_deadline {
                    let c = container.clone();
                    self.inner.executor.handle().spawn(async move {
                        tokio::time::sleep(deadline).await;
                        let _ = c.stop.send(Some(StopKind::Deadline));
                        if let Some(h) = &c.http {
                            h.draining.store(true, Ordering::SeqCst);
                            let _ = h.kill.send(true);
                        }
                        c.finish(Outcome::Deadline, started_at);
                    });
                }
            }
            Entry::Module(_) | Entry::Command(_) => {
                let inner = self.inner.clone();
                let c = container.clone();
                self.inner.executor.handle().spawn(async move {
                    let outcome = run_command(&inner, &c, stop_rx).await;
                    if let Outcome::Trapped(m) | Outcome::OutOfMemory(m) = &outcome {
                        c.sink.note(&format!("skiff: {m}"));
                    }
                    c.finish(outcome, started_at);
                });
            }
        }
        Ok(container.status())
    }

    fn record_terminated(
        &self,
        spec: ContainerSpec,
        digest: Option<String>,
        sink: Arc<LogSink>,
        t: Termination,
    ) -> ContainerStatus {
        let container = Arc::new(Container {
            spec: spec.clone(),
            digest,
            state: watch::channel(ContainerState::Terminated(t)).0,
            stop: watch::channel(None).0,
            http: None,
            sink,
            entry: None,
        });
        self.inner
            .containers
            .lock()
            .insert(spec.id, container.clone());
        container.status()
    }

    /// Loads, links and checks the image against the workload.
    async fn entry_for(&self, spec: &ContainerSpec) -> Result<(Entry, String), StartFailure> {
        let (digest, compiled, _) = match self.inner.clone().load(&spec.image).await {
            Ok(ok) => ok,
            Err(Error::InvalidWasm { message, .. }) => {
                return Err(StartFailure::Container(message, None));
            }
            Err(e) => return Err(StartFailure::Runtime(pull_error(&spec.image, e))),
        };
        let fail = |m: String| StartFailure::Container(m, Some(digest.clone()));
        let pre = self.inner.link(&digest, &compiled).map_err(|e| {
            fail(format!(
                "{}: the host cannot satisfy its imports: {}",
                spec.image,
                describe(&e)
            ))
        })?;
        let entry = match (&spec.workload, pre) {
            (Workload::Command, Pre::Module(pre)) => {
                if !matches!(
                    pre.module().get_export("_start"),
                    Some(wasmtime::ExternType::Func(_))
                ) {
                    return Err(fail(format!(
                        "{}: the module exports no _start function (is it a WASI command?)",
                        spec.image
                    )));
                }
                Entry::Module(pre)
            }
            (Workload::Command, Pre::Component(pre)) => match CommandPre::new(pre) {
                Ok(p) => Entry::Command(p),
                Err(e) => {
                    return Err(fail(format!(
                        "{}: the component does not export wasi:cli/run (is it a command?): {}",
                        spec.image,
                        describe(&e)
                    )));
                }
            },
            (Workload::HttpHandler(_), Pre::Component(pre)) => match ProxyPre::new(pre) {
                Ok(p) => Entry::Http(p),
                Err(e) => {
                    return Err(fail(format!(
                        "{}: the component does not export wasi:http/incoming-handler: {}",
                        spec.image,
                        describe(&e)
                    )));
                }
            },
            (Workload::HttpHandler(_), Pre::Module(_)) => {
                return Err(fail(format!(
                    "{}: a core module cannot be an http handler: build a wasi:http/proxy component",
                    spec.image
                )));
            }
        };
        Ok((entry, digest))
    }

    async fn exec_inner(
        &self,
        id: &ContainerId,
        argv: Vec<String>,
    ) -> Result<ExecOutput, RuntimeError> {
        let c = self.inner.container(id)?;
        if !c.status().is_running() {
            return Err(RuntimeError::InvalidSpec {
                id: id.clone(),
                field: "state",
                message: "exec needs a running container".into(),
            });
        }
        let entry = match &c.entry {
            Some(Entry::Http(_)) | None => {
                return Err(RuntimeError::Unsupported {
                    what: format!("exec into {id}: an http handler has no command entry point"),
                });
            }
            Some(e) => e.clone(),
        };
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let inner = self.inner.clone();
        let spec = c.spec.clone();
        let (out, err) = (stdout.clone(), stderr.clone());
        let join = self.inner.executor.handle().spawn(async move {
            let mut b = match wasi_builder(&spec, &argv) {
                Ok(b) => b,
                Err(m) => return Outcome::StartFailed(m),
            };
            b.stdout(out).stderr(err);
            run_entry(&inner, &spec, &entry, b).await
        });
        let outcome = join
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        let mut stderr = stderr.contents().to_vec();
        let exit_code = match outcome {
            Outcome::Exited(c) => c,
            other => {
                let t = other.termination(None);
                stderr.extend_from_slice(format!("{}: {}\n", t.reason, t.message).as_bytes());
                t.exit_code
            }
        };
        Ok(ExecOutput {
            exit_code,
            stdout: stdout.contents().to_vec(),
            stderr,
        })
    }

    async fn stop_inner(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<ContainerStatus, RuntimeError> {
        let c = self.inner.container(id)?;
        if !c.status().is_running() {
            return Ok(c.status());
        }
        if let Some(h) = &c.http {
            // Refuse new requests, let those in flight finish within the
            // grace period, cancel the rest.
            h.draining.store(true, Ordering::SeqCst);
            let started = c.started_at();
            let t = if h.drain(grace).await {
                Outcome::Exited(0).termination(started)
            } else {
                let n = h.in_flight.load(Ordering::SeqCst);
                let _ = h.kill.send(true);
                let message = format!(
                    "stopped: {n} requests still in flight after the {grace:?} grace period were cancelled"
                );
                c.sink.note(&format!("skiff: {message}"));
                Termination {
                    exit_code: exit_code::KILLED,
                    reason: TerminationReason::Error,
                    message,
                    started_at: started,
                    finished_at: SystemTime::now(),
                }
            };
            return Ok(c.finish_with(t));
        }
        let _ = c.stop.send(Some(StopKind::Stopped));
        let mut rx = c.state.subscribe();
        let _ = rx
            .wait_for(|s| matches!(s, ContainerState::Terminated(_)))
            .await;
        Ok(c.status())
    }
}

enum StartFailure {
    /// The call failed (image not fetched): the agent retries.
    Runtime(RuntimeError),
    /// The container cannot run: it terminates with `StartError`.
    Container(String, Option<String>),
}

fn pull_error(image: &ImageSource, e: Error) -> RuntimeError {
    match e {
        Error::Registry(e) => RuntimeError::Pull {
            image: image.to_string(),
            message: e.to_string(),
        },
        Error::Read { path, source } => RuntimeError::Pull {
            image: image.to_string(),
            message: format!("reading {}: {source}", path.display()),
        },
        other => other.into(),
    }
}

fn validate(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let invalid = |field, message: String| RuntimeError::InvalidSpec {
        id: spec.id.clone(),
        field,
        message,
    };
    for m in &spec.mounts {
        if !m.container_path.starts_with('/') {
            return Err(invalid(
                "mounts.container_path",
                format!("{:?} is not absolute", m.container_path),
            ));
        }
        if !m.host_path.is_dir() {
            return Err(invalid(
                "mounts.host_path",
                format!("{} is not a directory on the node", m.host_path.display()),
            ));
        }
    }
    if let Workload::HttpHandler(h) = &spec.workload
        && h.request_timeout.is_zero()
    {
        return Err(invalid(
            "workload.request_timeout",
            "must be positive".into(),
        ));
    }
    Ok(())
}

impl Inner {
    fn container(&self, id: &ContainerId) -> Result<Arc<Container>, RuntimeError> {
        self.containers
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    /// Reads or pulls the wasm bytes and compiles them (or finds them
    /// compiled). A cache hit is handled inline (reading a small local file
    /// and mapping the artifact take less than a thread handoff would);
    /// compilation runs on a blocking thread.
    async fn load(
        self: Arc<Self>,
        image: &ImageSource,
    ) -> Result<(String, Compiled, CompileSource), Error> {
        let name = image.to_string();
        let (digest, bytes) = match image {
            ImageSource::File(path) => {
                let read_err = |source| Error::Read {
                    path: path.clone(),
                    source,
                };
                let stamp = FileStamp::of(&std::fs::metadata(path).map_err(read_err)?);
                if let Some(digest) = self.cache.known_file(path, stamp)
                    && let Some((compiled, source)) = self.cache.lookup(&digest)
                {
                    return Ok((digest, compiled, source));
                }
                let bytes = std::fs::read(path).map_err(read_err)?;
                let digest = sha256_digest(&bytes);
                self.cache.remember_file(path, stamp, &digest);
                (digest, Bytes::from(bytes))
            }
            ImageSource::Registry(r) => {
                let manifest = self.config.registry.manifest(r, "wasip2/wasm").await?;
                // The layer digest keys the compile cache: a node that has it
                // compiled does not download it again.
                if let Some(layer) = manifest
                    .manifest
                    .layers
                    .iter()
                    .find(|l| l.media_type == skiff_sdk::registry::WASM_LAYER_MEDIA_TYPE)
                    && let Some((compiled, source)) = self.cache.lookup(&layer.digest)
                {
                    return Ok((layer.digest.clone(), compiled, source));
                }
                let artifact = self.config.registry.pull_wasm(r).await?;
                (artifact.digest, artifact.bytes)
            }
        };
        if let Some((compiled, source)) = self.cache.lookup(&digest) {
            return Ok((digest, compiled, source));
        }
        let this = self.clone();
        let d = digest.clone();
        let (compiled, source) = self
            .executor
            .handle()
            .spawn_blocking(move || this.cache.get_or_compile(&name, &d, &bytes))
            .await
            .map_err(|e| Error::Engine(format!("compile task: {e}")))??;
        Ok((digest, compiled, source))
    }

    fn link(&self, digest: &str, compiled: &Compiled) -> wasmtime::Result<Pre> {
        if let Some(p) = self.pres.lock().get(digest) {
            return Ok(p.clone());
        }
        let pre = match compiled {
            Compiled::Module(m) => Pre::Module(self.module_linker.instantiate_pre(m)?),
            Compiled::Component(c) => Pre::Component(self.component_linker.instantiate_pre(c)?),
        };
        self.pres.lock().insert(digest.to_string(), pre.clone());
        Ok(pre)
    }

    /// The outgoing-request hooks of an instance of `spec`.
    fn hooks(&self, spec: &ContainerSpec) -> Hooks {
        Hooks {
            names: self.config.names.clone().zip(spec.names.clone()),
        }
    }

    /// A store's limits; the epoch ticks while they live.
    fn limits(&self, spec: &ContainerSpec) -> Limits {
        Limits::new(
            spec.limits.memory_bytes,
            spec.limits.cpu_millis,
            self.config.engine.slice_ticks,
            self.config.engine.epoch_tick,
        )
        .ticking(self.ticker.awake())
    }
}

impl Container {
    fn started_at(&self) -> Option<SystemTime> {
        match &*self.state.borrow() {
            ContainerState::Running { started_at } => Some(*started_at),
            ContainerState::Terminated(t) => t.started_at,
            ContainerState::Waiting { .. } => None,
        }
    }

    fn status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.spec.id.clone(),
            state: self.state.borrow().clone(),
            image_digest: self.digest.clone(),
        }
    }

    /// Records the end (only the first end counts).
    fn finish(&self, outcome: Outcome, started_at: SystemTime) {
        self.finish_with(outcome.termination(Some(started_at)));
    }

    fn finish_with(&self, t: Termination) -> ContainerStatus {
        self.state.send_if_modified(|s| {
            if matches!(s, ContainerState::Terminated(_)) {
                return false;
            }
            *s = ContainerState::Terminated(t);
            true
        });
        self.status()
    }
}

/// The argv a guest sees: `command` + `args`, or the image's name + `args`.
fn argv(spec: &ContainerSpec) -> Vec<String> {
    if !spec.command.is_empty() {
        return spec.argv();
    }
    let name = match &spec.image {
        ImageSource::File(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        ImageSource::Registry(r) => r.repository.rsplit('/').next().map(str::to_string),
    };
    std::iter::once(name.unwrap_or_else(|| "main.wasm".into()))
        .chain(spec.args.iter().cloned())
        .collect()
}

/// The WASI context of one instance: args, env, mounts as preopened
/// directories (read-only where the mount is), network like a Pod's.
fn wasi_builder(spec: &ContainerSpec, argv: &[String]) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(argv)
        .envs(&spec.env)
        .inherit_network()
        .allow_ip_name_lookup(true);
    if let Some(dir) = &spec.working_dir {
        b.initial_cwd(dir);
    }
    for m in &spec.mounts {
        let perms = if m.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host_path, &m.container_path, perms)
            .map_err(|e| {
                format!(
                    "mounting {} at {}: {e:#}",
                    m.host_path.display(),
                    m.container_path
                )
            })?;
    }
    Ok(b)
}

/// Runs a command container to its end, or until it is stopped or its
/// deadline passes.
async fn run_command(
    inner: &Arc<Inner>,
    c: &Arc<Container>,
    mut stop: watch::Receiver<Option<StopKind>>,
) -> Outcome {
    let Some(entry) = c.entry.clone() else {
        return Outcome::StartFailed("nothing to run".into());
    };
    let spec = &c.spec;
    let mut b = match wasi_builder(spec, &argv(spec)) {
        Ok(b) => b,
        Err(m) => return Outcome::StartFailed(m),
    };
    b.stdout(c.sink.output(LogStream::Stdout))
        .stderr(c.sink.output(LogStream::Stderr));
    let deadline = async {
        match spec.active_deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        outcome = run_entry(inner, spec, &entry, b) => outcome,
        _ = stop.wait_for(|s| s.is_some()) => Outcome::Stopped,
        () = deadline => Outcome::Deadline,
    }
}

/// One instance of a command: instantiate, run `_start` or `wasi:cli/run`.
async fn run_entry(
    inner: &Arc<Inner>,
    spec: &ContainerSpec,
    entry: &Entry,
    mut b: WasiCtxBuilder,
) -> Outcome {
    match entry {
        Entry::Module(pre) => {
            let mut store = wasmtime::Store::new(
                &inner.engine,
                P1Host {
                    wasi: b.build_p1(),
                    limits: inner.limits(spec),
                },
            );
            configure_store(&mut store);
            let instance = match pre.instantiate_async(&mut store).await {
                Ok(i) => i,
                Err(e) => return Outcome::from_error(e, store.data_mut().limits.oom.take(), true),
            };
            let start = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
                Ok(f) => f,
                Err(e) => return Outcome::StartFailed(format!("_start: {}", describe(&e))),
            };
            match start.call_async(&mut store, ()).await {
                Ok(()) => Outcome::Exited(0),
                Err(e) => Outcome::from_error(e, store.data_mut().limits.oom.take(), false),
            }
        }
        Entry::Command(pre) => {
            let host = Host {
                wasi: b.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: inner.limits(spec),
                hooks: inner.hooks(spec),
            };
            let mut store = wasmtime::Store::new(&inner.engine, host);
            configure_store(&mut store);
            let command = match pre.instantiate_async(&mut store).await {
                Ok(c) => c,
                Err(e) => return Outcome::from_error(e, store.data_mut().limits.oom.take(), true),
            };
            match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => Outcome::Exited(0),
                Ok(Err(())) => Outcome::Exited(1),
                Err(e) => Outcome::from_error(e, store.data_mut().limits.oom.take(), false),
            }
        }
        Entry::Http(_) => Outcome::StartFailed("an http handler is not a command".into()),
    }
}

/// A running HTTP-handler container.
pub(crate) struct HttpHandler {
    pre: ProxyPre<Host>,
    spec: ContainerSpec,
    sink: Arc<LogSink>,
    timeout: Duration,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
    draining: AtomicBool,
    /// Set to cancel every request in flight.
    kill: watch::Sender<bool>,
}

struct InFlight {
    count: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.drained.notify_waiters();
        }
    }
}

pub(crate) fn text_response(status: u16, text: String) -> hyper::Response<HyperOutgoingBody> {
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

impl HttpHandler {
    fn new_store(&self, inner: &Inner) -> Result<wasmtime::Store<Host>, Error> {
        let mut b =
            wasi_builder(&self.spec, &argv(&self.spec)).map_err(|message| Error::InvalidWasm {
                image: self.spec.image.to_string(),
                message,
            })?;
        b.stdout(self.sink.output(LogStream::Stdout))
            .stderr(self.sink.output(LogStream::Stderr));
        let host = Host {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: inner.limits(&self.spec),
            hooks: inner.hooks(&self.spec),
        };
        let mut store = wasmtime::Store::new(&inner.engine, host);
        configure_store(&mut store);
        Ok(store)
    }

    /// Waits until no request is in flight, at most `grace`.
    async fn drain(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }

    async fn serve<B>(
        self: Arc<Self>,
        inner: &Arc<Inner>,
        req: hyper::Request<B>,
    ) -> hyper::Response<HyperOutgoingBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        if self.draining.load(Ordering::SeqCst) {
            return text_response(503, "the container is stopping\n".into());
        }
        let line = format!("{} {}", req.method(), req.uri().path());
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return text_response(503, "the container is stopping\n".into());
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            count: self.in_flight.clone(),
            drained: self.drained.clone(),
        };
        let mut store = match self.new_store(inner) {
            Ok(s) => s,
            Err(e) => return text_response(500, format!("{e}\n")),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = match store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
        {
            Ok(r) => r,
            Err(e) => return text_response(400, format!("bad request: {e:#}\n")),
        };
        let out = match store.data_mut().http().new_response_outparam(tx) {
            Ok(o) => o,
            Err(e) => return text_response(500, format!("{e:#}\n")),
        };
        let handler = self.clone();
        let mut kill = self.kill.subscribe();
        let task = inner.executor.handle().spawn(async move {
            let _held = (permit, guard);
            let timeout = handler.timeout;
            let result = {
                let run = async {
                    let proxy = handler
                        .pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(|e| (e, true))?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await
                        .map_err(|e| (e, false))
                };
                tokio::select! {
                    r = run => Some(r),
                    _ = tokio::time::sleep(timeout) => None,
                    _ = kill.wait_for(|k| *k) => None,
                }
            };
            let oom = store.data_mut().limits.oom.take();
            drop(store);
            match result {
                Some(Ok(())) => None,
                Some(Err((e, instantiating))) => {
                    let o = Outcome::from_error(e, oom, instantiating);
                    let (status, msg) = match &o {
                        Outcome::OutOfMemory(m) => (500, format!("OOMKilled: {m}")),
                        Outcome::Trapped(m) | Outcome::StartFailed(m) => (500, m.clone()),
                        Outcome::Exited(c) => (500, format!("the handler exited with code {c}")),
                        _ => (500, format!("{o:?}")),
                    };
                    Some((status, msg))
                }
                None if *kill.borrow() => {
                    Some((503, "cancelled: the container was stopped".into()))
                }
                None => Some((
                    504,
                    format!("the handler ran past its {timeout:?} timeout and was interrupted"),
                )),
            }
        });
        match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => {
                self.sink.note(&format!(
                    "skiff: {line}: the handler answered with error {code:?}"
                ));
                text_response(500, format!("{code:?}\n"))
            }
            Err(_) => {
                let (status, msg) = match task.await {
                    Ok(Some(failure)) => failure,
                    Ok(None) => (500, "the handler returned without a response".into()),
                    Err(e) => (500, format!("the handler task failed: {e}")),
                };
                self.sink.note(&format!("skiff: {line}: {status}: {msg}"));
                text_response(status, format!("{msg}\n"))
            }
        }
    }
}

/// Idle instances kept alive by [`WasmRuntime::instantiate_idle`].
pub struct IdleInstances {
    _stores: Vec<wasmtime::Store<Host>>,
}

impl IdleInstances {
    pub fn len(&self) -> usize {
        self._stores.len()
    }
    pub fn is_empty(&self) -> bool {
        self._stores.is_empty()
    }
    /// Linear memory the instances hold, summed.
    pub fn memory_bytes(&self) -> usize {
        self._stores
            .iter()
            .map(|s| s.data().limits.memory_used())
            .sum()
    }
}

impl std::fmt::Debug for IdleInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleInstances({})", self._stores.len())
    }
}

impl Runtime for WasmRuntime {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn prepare<'a>(
        &'a self,
        image: &'a ImageSource,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>> {
        Box::pin(async move {
            match self.prepare_image(image).await {
                Ok((p, _)) => Ok(p),
                Err(Error::InvalidWasm { image, message }) => {
                    Err(RuntimeError::InvalidImage { image, message })
                }
                Err(e) => Err(pull_error(image, e)),
            }
        })
    }

    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<ContainerStatus, RuntimeError>> {
        Box::pin(self.start_inner(spec))
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>> {
        Box::pin(self.stop_inner(id, grace))
    }

    fn wait<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus, RuntimeError>> {
        Box::pin(async move {
            let c = self.inner.container(id)?;
            let mut rx = c.state.subscribe();
            let _ = rx
                .wait_for(|s| matches!(s, ContainerState::Terminated(_)))
                .await;
            Ok(c.status())
        })
    }

    fn status(&self, id: &ContainerId) -> Result<ContainerStatus, RuntimeError> {
        Ok(self.inner.container(id)?.status())
    }

    fn list(&self) -> Vec<ContainerStatus> {
        let mut all: Vec<_> = self
            .inner
            .containers
            .lock()
            .values()
            .map(|c| c.status())
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    fn logs(&self, id: &ContainerId) -> Result<LogSource, RuntimeError> {
        Ok(LogSource {
            path: self.inner.container(id)?.sink.path().to_path_buf(),
        })
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Vec<String>,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        Box::pin(self.exec_inner(id, command))
    }

    fn remove<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.stop_inner(id, Duration::ZERO).await?;
            self.inner.containers.lock().remove(id);
            Ok(())
        })
    }
}
