//! The one shared wasmtime `Engine`, its epoch ticker thread, and the
//! compiled-artifact cache (in memory, and on disk keyed by module digest +
//! engine fingerprint, so a module is compiled once per node and target).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

use crate::Error;

/// How the engine is sized. The defaults fit a node that runs up to a
/// thousand wasm instances at once.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Instances that may exist at once (running commands, in-flight HTTP
    /// requests, idle pre-instantiated handlers): the pooling allocator
    /// reserves address space for this many up front.
    pub max_instances: u32,
    /// The largest linear memory any guest may have (a pod's memory limit
    /// lowers it per container).
    pub max_memory_bytes: usize,
    /// How often the epoch advances: the granularity of CPU limits,
    /// timeouts and preemption.
    pub epoch_tick: Duration,
    /// A running guest yields to the executor after this many ticks, so a
    /// spinning guest never holds a worker thread longer than that.
    pub slice_ticks: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 1000,
            max_memory_bytes: 4 << 30,
            epoch_tick: Duration::from_millis(1),
            slice_ticks: 10,
        }
    }
}

pub(crate) fn build_engine(cfg: &EngineConfig) -> Result<Engine, Error> {
    let n = cfg.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A component holds a few core instances (its module plus the shims
        // wit-component adds) and tables; usually one memory.
        .total_core_instances(n.saturating_mul(4))
        .total_tables(n.saturating_mul(4))
        .total_memories(n)
        // One fiber stack per guest call in flight.
        .total_stacks(n)
        .max_memory_size(cfg.max_memory_bytes)
        // Reuse the slots of recently dropped instances of the same module:
        // their memory images are already mapped.
        .max_unused_warm_slots(n.min(100))
        // Zeroing a small touched prefix is cheaper than madvise+refault.
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(16 << 10);
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true)
        .wasm_component_model(true)
        .memory_init_cow(true)
        .parallel_compilation(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&c).map_err(|e| Error::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every tick on its own thread, so that a guest
/// spinning on a tokio worker still reaches its deadline callback — while
/// some store exists ([`Ticker::awake`]): with no store no guest code can
/// run, and an idle node does not wake a thousand times a second for
/// nothing. Deadlines are relative to the epoch when they are set, so a
/// pause shifts them all alike.
pub(crate) struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TickerShared {
    /// Live stores, and whether the ticker should stop.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

/// Keeps the ticker going while it lives (one per store).
pub(crate) struct Awake(Arc<TickerShared>);

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.state.lock().0 -= 1;
    }
}

impl Ticker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Result<Ticker, Error> {
        let shared = Arc::new(TickerShared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut state = s.state.lock();
                        while state.0 == 0 && !state.1 {
                            s.changed.wait(&mut state);
                        }
                        if state.1 {
                            return;
                        }
                    }
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(Error::Threads)?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// A store is about to exist: tick until the returned guard is dropped.
    pub(crate) fn awake(&self) -> Awake {
        let mut state = self.shared.state.lock();
        state.0 += 1;
        if state.0 == 1 {
            self.shared.changed.notify_one();
        }
        Awake(self.shared.clone())
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.state.lock().1 = true;
        self.shared.changed.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a wasm binary is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmKind {
    Module,
    Component,
}

impl WasmKind {
    /// Looks at the preamble: `\0asm`, then version 1 (core module) or
    /// layer 1 (component).
    pub fn detect(bytes: &[u8]) -> Option<WasmKind> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return None;
        }
        match &bytes[4..8] {
            [1, 0, 0, 0] => Some(WasmKind::Module),
            [_, _, 1, 0] => Some(WasmKind::Component),
            _ => None,
        }
    }
}

/// A compiled module or component, shared by every container that runs it.
#[derive(Clone)]
pub enum Compiled {
    Module(Module),
    Component(Component),
}

impl Compiled {
    pub fn kind(&self) -> WasmKind {
        match self {
            Compiled::Module(_) => WasmKind::Module,
            Compiled::Component(_) => WasmKind::Component,
        }
    }
}

/// Where a compiled artifact came from, for the benchmark and the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileSource {
    Memory,
    Disk,
    Compiled,
}

/// Compiled artifacts in memory by digest, and on disk under
/// `<dir>/<fingerprint>/<digest hex>.cwasm`; the digests of local module
/// files under `<dir>/files/`.
pub(crate) struct CompileCache {
    engine: Engine,
    dir: PathBuf,
    files: PathBuf,
    fingerprint: String,
    memory: Mutex<HashMap<String, Compiled>>,
    file_digests: Mutex<HashMap<PathBuf, (FileStamp, String)>>,
    /// One lock per digest being compiled.
    compiling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// What identifies one version of a local file without reading it: its
/// device, inode, size, and modification and change times (ctime cannot be
/// set back by a user, so a rewritten file always gets a new stamp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp([i64; 7]);

impl FileStamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }

    fn encode(&self) -> String {
        self.0.map(|v| v.to_string()).join(" ")
    }

    fn decode(s: &str) -> Option<FileStamp> {
        let mut v = [0i64; 7];
        let mut parts = s.split(' ');
        for slot in &mut v {
            *slot = parts.next()?.parse().ok()?;
        }
        parts.next().is_none().then_some(FileStamp(v))
    }
}

impl CompileCache {
    pub(crate) fn new(engine: Engine, dir: &Path) -> CompileCache {
        let fingerprint = fingerprint(&engine);
        CompileCache {
            dir: dir.join(&fingerprint),
            files: dir.join("files"),
            engine,
            fingerprint,
            memory: Mutex::new(HashMap::new()),
            file_digests: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
        }
    }

    fn file_record(&self, path: &Path) -> PathBuf {
        use sha2::Digest;
        let key = sha2::Sha256::digest(path.as_os_str().as_encoded_bytes());
        self.files.join(hex::encode(&key[..16]))
    }

    /// The digest of the local module `path` if this node has hashed the
    /// very same version of it before (same stamp), so that starting a
    /// container of a file image reads neither the file nor its hash.
    pub(crate) fn known_file(&self, path: &Path, stamp: FileStamp) -> Option<String> {
        if let Some((s, d)) = self.file_digests.lock().get(path)
            && *s == stamp
        {
            return Some(d.clone());
        }
        let record = std::fs::read_to_string(self.file_record(path)).ok()?;
        let (line, recorded_path) = record.split_once('\n')?;
        let (s, digest) = line.rsplit_once(' ')?;
        if recorded_path != path.to_str()? || FileStamp::decode(s)? != stamp {
            return None;
        }
        self.file_digests
            .lock()
            .insert(path.to_path_buf(), (stamp, digest.to_string()));
        Some(digest.to_string())
    }

    /// Remembers the digest of `path` as it was at `stamp`, in memory and
    /// on disk (a record that cannot be written only costs a re-hash).
    pub(crate) fn remember_file(&self, path: &Path, stamp: FileStamp, digest: &str) {
        self.file_digests
            .lock()
            .insert(path.to_path_buf(), (stamp, digest.to_string()));
        let Some(p) = path.to_str() else { return };
        let record = self.file_record(path);
        let tmp = unique_tmp(&record);
        let text = format!("{} {digest}\n{p}", stamp.encode());
        let written = std::fs::create_dir_all(&self.files)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &record));
        if let Err(e) = written {
            tracing::debug!(path = %record.display(), "cannot record a file digest: {e}");
        }
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The artifact's kind is in its name, so that loading it needs no
    /// look at its header first.
    fn path(&self, digest: &str, kind: WasmKind) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let kind = match kind {
            WasmKind::Module => "module",
            WasmKind::Component => "component",
        };
        self.dir.join(format!("{hex}.{kind}.cwasm"))
    }

    /// The compiled artifact for `digest` if memory or disk has it, without
    /// the wasm bytes (a node that compiled a module once need not pull it
    /// again).
    pub(crate) fn lookup(&self, digest: &str) -> Option<(Compiled, CompileSource)> {
        if let Some(c) = self.memory.lock().get(digest) {
            return Some((c.clone(), CompileSource::Memory));
        }
        let compiled = [WasmKind::Component, WasmKind::Module]
            .into_iter()
            .find_map(|kind| self.load_file(&self.path(digest, kind), kind))?;
        self.memory
            .lock()
            .insert(digest.to_string(), compiled.clone());
        Some((compiled, CompileSource::Disk))
    }

    fn load_file(&self, path: &Path, kind: WasmKind) -> Option<Compiled> {
        // SAFETY: the file is one this cache wrote (compiled by this very
        // engine configuration: the fingerprint is in its directory name) and
        // renamed into place atomically; wasmtime still checks its header and
        // compatibility and refuses a mismatched one.
        #[allow(unsafe_code)]
        let loaded = unsafe {
            match kind {
                WasmKind::Module => {
                    Module::deserialize_file(&self.engine, path).map(Compiled::Module)
                }
                WasmKind::Component => {
                    Component::deserialize_file(&self.engine, path).map(Compiled::Component)
                }
            }
        };
        match loaded {
            Ok(c) => Some(c),
            Err(e)
                if e.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                }) =>
            {
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding unusable compiled artifact");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Compiles `bytes` (whose digest is `digest`) unless cached, writes the
    /// artifact to disk and loads it from there (so that memory images are
    /// mapped copy-on-write from the file).
    pub(crate) fn get_or_compile(
        &self,
        image: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Compiled, CompileSource), Error> {
        if let Some(hit) = self.lookup(digest) {
            return Ok(hit);
        }
        // Replicas of one image start together: one of them compiles, the
        // others wait for it and load what it wrote.
        let flight = self
            .compiling
            .lock()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let _compiling = flight.lock();
        let result = self.compile_once(image, digest, bytes);
        self.compiling.lock().remove(digest);
        result
    }

    fn compile_once(
        &self,
        image: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Compiled, CompileSource), Error> {
        if let Some(hit) = self.lookup(digest) {
            return Ok(hit);
        }
        let invalid = |message: String| Error::InvalidWasm {
            image: image.to_string(),
            message,
        };
        let kind = WasmKind::detect(bytes).ok_or_else(|| {
            invalid(format!(
                "not a WebAssembly module or component (starts with {:02x?})",
                &bytes[..bytes.len().min(8)]
            ))
        })?;
        let artifact = match kind {
            WasmKind::Module => self.engine.precompile_module(bytes),
            WasmKind::Component => self.engine.precompile_component(bytes),
        }
        .map_err(|e| invalid(format!("invalid wasm {kind:?}: {e:#}").to_lowercase_first()))?;
        let path = self.path(digest, kind);
        let cache_err = |source| Error::Cache {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err)?;
        let tmp = unique_tmp(&path);
        std::fs::write(&tmp, &artifact).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(cache_err)?;
        let compiled = self.load_file(&path, kind).ok_or_else(|| {
            invalid("the freshly compiled artifact could not be loaded".to_string())
        })?;
        self.memory
            .lock()
            .insert(digest.to_string(), compiled.clone());
        Ok((compiled, CompileSource::Compiled))
    }

    /// Forgets the in-memory artifacts (the disk cache stays): what a node
    /// restart looks like, for the benchmark.
    pub(crate) fn forget_memory(&self) {
        self.memory.lock().clear();
        self.file_digests.lock().clear();
    }

    /// Removes one artifact from memory and disk: the next start compiles.
    pub(crate) fn evict(&self, digest: &str) {
        self.memory.lock().remove(digest);
        for kind in [WasmKind::Component, WasmKind::Module] {
            let _ = std::fs::remove_file(self.path(digest, kind));
        }
    }
}

/// A name next to `path` that no other writer, in this process or another,
/// uses at the same time: what is renamed into place is always whole.
fn unique_tmp(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}-{n}", std::process::id()));
    path.with_file_name(name)
}

trait LowercaseFirst {
    fn to_lowercase_first(self) -> String;
}

impl LowercaseFirst for String {
    fn to_lowercase_first(self) -> String {
        let mut c = self.chars();
        match c.next() {
            Some(f) => f.to_lowercase().chain(c).collect(),
            None => self,
        }
    }
}

/// Identifies everything that makes a compiled artifact usable: the
/// wasmtime version, the target, and the engine's compilation settings.
fn fingerprint(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let settings = h.finish();
    // The hash covers wasmtime's version and every compilation setting.
    format!(
        "wasmtime48-{}-{}-{settings:016x}",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}
