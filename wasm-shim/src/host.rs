//! What a `Store` holds: the WASI contexts, the memory limiter, the CPU
//! quota, and the stdout/stderr streams that become the container's log.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use skiff_sdk::runtime::{LogLine, LogStream, NameSearch};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Store data for components (commands and HTTP handlers).
pub(crate) struct Host {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: Limits,
    pub hooks: Hooks,
}

/// Looks names up in the cluster's DNS records (the node's), for the
/// guests' outgoing HTTP requests.
pub trait NameResolver: Send + Sync {
    /// The addresses of `name` (lower case, no trailing dot); empty if the
    /// cluster has no such name.
    fn resolve(&self, name: &str) -> Vec<IpAddr>;
}

/// The runtime's cluster name resolver, if the node gave it one.
#[derive(Clone)]
pub struct ClusterNames(pub Arc<dyn NameResolver>);

impl std::fmt::Debug for ClusterNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterNames")
    }
}

/// The outgoing-request hooks of one instance: a request to an `http://`
/// name the cluster knows (tried through the pod's search domains, as its
/// resolv.conf would) goes to that address, its `Host` header unchanged;
/// other names go to the host's resolver as before. `https://` names keep
/// the host's resolver: connecting by address would change the name TLS
/// checks.
#[derive(Default)]
pub(crate) struct Hooks {
    pub names: Option<(ClusterNames, Arc<NameSearch>)>,
}

impl Hooks {
    /// Where a request to `uri` should go instead, if the cluster names it.
    fn cluster_authority(&self, uri: &http::Uri) -> Option<http::uri::Authority> {
        let (names, search) = self.names.as_ref()?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return None;
        }
        let host = uri.host()?.to_ascii_lowercase();
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            return None;
        }
        let ip = search
            .candidates(&host)
            .iter()
            .find_map(|name| names.0.resolve(name).into_iter().next())?;
        let port = uri.port_u16().unwrap_or(80);
        SocketAddr::new(ip, port).to_string().parse().ok()
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        _ = fut;
        if let Some(authority) = self.cluster_authority(request.uri()) {
            let mut parts = request.uri().clone().into_parts();
            parts.authority = Some(authority);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Store data for WASI preview 1 core modules.
pub(crate) struct P1Host {
    pub wasi: WasiP1Ctx,
    pub limits: Limits,
}

pub(crate) trait HasLimits: Send + 'static {
    fn limits(&mut self) -> &mut Limits;
}

impl HasLimits for Host {
    fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }
}

impl HasLimits for P1Host {
    fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }
}

/// Per-store limits: linear memory (summed over the store's memories) and
/// CPU time.
pub(crate) struct Limits {
    memory_limit: usize,
    memory_used: usize,
    /// Set when a memory growth was refused: a trap that follows is an
    /// out-of-memory kill, not a bug of the guest.
    pub oom: Option<String>,
    cpu: Option<CpuQuota>,
    slice_ticks: u64,
    tick: Duration,
    /// Keeps the epoch ticking while the store lives.
    _awake: Option<crate::engine::Awake>,
}

impl Limits {
    pub(crate) fn new(
        memory_limit: Option<u64>,
        cpu_millis: Option<u64>,
        slice_ticks: u64,
        tick: Duration,
    ) -> Limits {
        let slice = tick * slice_ticks as u32;
        Limits {
            memory_limit: memory_limit
                .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            memory_used: 0,
            oom: None,
            // One guest call runs on one thread: 1000m or more is no limit.
            cpu: cpu_millis
                .filter(|&m| m < 1000)
                .map(|m| CpuQuota::new(m.max(1), slice)),
            slice_ticks,
            tick,
            _awake: None,
        }
    }

    /// The ticker runs while these limits' store lives.
    pub(crate) fn ticking(mut self, awake: crate::engine::Awake) -> Limits {
        self._awake = Some(awake);
        self
    }

    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Called from the epoch deadline callback: how many ticks the guest may
    /// run before the next callback, and how long to pause first.
    fn on_epoch(&mut self) -> (u64, Option<Duration>) {
        let Some(cpu) = &mut self.cpu else {
            return (self.slice_ticks, None);
        };
        let (run_for, pause) = cpu.account(Instant::now());
        let ticks = (run_for.as_nanos() / self.tick.as_nanos().max(1)) as u64;
        (ticks.clamp(1, self.slice_ticks), pause)
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(grow);
        if total > self.memory_limit {
            self.oom = Some(format!(
                "memory limit of {} exceeded: the guest asked for {} bytes in all",
                human_bytes(self.memory_limit as u64),
                total
            ));
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// CFS-style bandwidth control: in each period the guest may run `quota`;
/// past it, it sleeps until the period ends.
struct CpuQuota {
    period: Duration,
    quota: Duration,
    slice: Duration,
    period_start: Instant,
    used: Duration,
    last_resume: Instant,
    granted: Duration,
}

impl CpuQuota {
    fn new(millis: u64, slice: Duration) -> CpuQuota {
        let period = Duration::from_millis(100);
        let now = Instant::now();
        CpuQuota {
            period,
            quota: period * millis as u32 / 1000,
            slice,
            period_start: now,
            used: Duration::ZERO,
            last_resume: now,
            granted: slice,
        }
    }

    /// Charges the time since the guest last resumed (at most a little more
    /// than it was granted: a guest blocked in a host call is not running)
    /// and returns how long it may run now and how long it must pause first.
    fn account(&mut self, now: Instant) -> (Duration, Option<Duration>) {
        let ran = now
            .saturating_duration_since(self.last_resume)
            .min(self.granted * 3 / 2);
        if now >= self.period_start + self.period {
            self.period_start = now;
            self.used = Duration::ZERO;
        }
        self.used += ran;
        if self.used >= self.quota {
            let resume = (self.period_start + self.period).max(now);
            self.period_start = resume;
            self.used = Duration::ZERO;
            self.last_resume = resume;
            self.granted = self.quota.min(self.slice);
            return (self.granted, Some(resume - now));
        }
        self.last_resume = now;
        self.granted = (self.quota - self.used).min(self.slice);
        (self.granted, None)
    }
}

/// Applies the limiter and the epoch policy to a new store: yield to the
/// executor every slice (so a spinning guest never holds a worker thread),
/// pause when over the CPU quota.
pub(crate) fn configure_store<T: HasLimits>(store: &mut Store<T>) {
    store.limiter(|t| t.limits() as &mut dyn ResourceLimiter);
    let (first, _) = store.data_mut().limits().on_epoch();
    store.set_epoch_deadline(first);
    store.epoch_deadline_callback(|mut ctx| {
        let (ticks, pause) = ctx.data_mut().limits().on_epoch();
        Ok(match pause {
            Some(d) => UpdateDeadline::YieldCustom(ticks, Box::pin(tokio::time::sleep(d))),
            None => UpdateDeadline::Yield(ticks),
        })
    });
}

pub(crate) fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 && b.is_multiple_of(1 << 30) {
        format!("{}Gi", b >> 30)
    } else if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}Mi", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{}Ki", b >> 10)
    } else {
        format!("{b}")
    }
}

/// A container's CRI log file, shared by all its instances.
pub(crate) struct LogSink {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

/// Lines longer than this are split into partial (`P`) records.
const MAX_LINE: usize = 16 << 10;

impl LogSink {
    pub(crate) fn open(path: &Path) -> std::io::Result<Arc<LogSink>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Arc::new(LogSink {
            path: path.to_path_buf(),
            file: Mutex::new(Some(file)),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write_record(&self, stream: LogStream, full: bool, text: &[u8]) {
        let line = LogLine::format(
            SystemTime::now(),
            stream,
            full,
            &String::from_utf8_lossy(text),
        );
        let mut file = self.file.lock();
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            tracing::warn!(path = %self.path.display(), error = %e, "writing the container log failed; dropping further output");
            *file = None;
        }
    }

    /// A message from the runtime itself (a failed request, a kill), on the
    /// container's stderr so that `kubectl logs` shows it.
    pub(crate) fn note(&self, message: &str) {
        for line in message.lines() {
            self.write_record(LogStream::Stderr, true, line.as_bytes());
        }
    }

    /// An output stream for one instance's stdout or stderr.
    pub(crate) fn output(self: &Arc<Self>, stream: LogStream) -> GuestOutput {
        GuestOutput(Arc::new(LineBuffer {
            sink: self.clone(),
            stream,
            partial: Mutex::new(Vec::new()),
        }))
    }
}

/// Splits a byte stream into log records; flushes the rest when the
/// instance is dropped.
struct LineBuffer {
    sink: Arc<LogSink>,
    stream: LogStream,
    partial: Mutex<Vec<u8>>,
}

impl LineBuffer {
    fn write(&self, mut bytes: &[u8]) {
        let mut partial = self.partial.lock();
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if partial.is_empty() {
                self.sink.write_record(self.stream, true, &bytes[..nl]);
            } else {
                partial.extend_from_slice(&bytes[..nl]);
                self.sink.write_record(self.stream, true, &partial);
                partial.clear();
            }
            bytes = &bytes[nl + 1..];
        }
        partial.extend_from_slice(bytes);
        while partial.len() >= MAX_LINE {
            let rest = partial.split_off(MAX_LINE);
            self.sink.write_record(self.stream, false, &partial);
            *partial = rest;
        }
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        let partial = std::mem::take(self.partial.get_mut());
        if !partial.is_empty() {
            self.sink.write_record(self.stream, true, &partial);
        }
    }
}

/// stdout or stderr of an instance, writing into the container's log.
#[derive(Clone)]
pub(crate) struct GuestOutput(Arc<LineBuffer>);

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_pauses_for_the_rest_of_the_period() {
        let slice = Duration::from_millis(10);
        let mut q = CpuQuota::new(250, slice);
        let t0 = q.last_resume;
        // 10 ms ran: 15 ms of quota left, at most a slice at a time.
        let (run, pause) = q.account(t0 + Duration::from_millis(10));
        assert_eq!((run, pause), (Duration::from_millis(10), None));
        // 15 more: quota used up, pause to the end of the 100 ms period.
        let (_, pause) = q.account(t0 + Duration::from_millis(25));
        assert_eq!(pause, Some(Duration::from_millis(75)));
        // Time spent blocked counts as at most one slice.
        let (_, pause) = q.account(t0 + Duration::from_millis(1000));
        assert_eq!(pause, None);
    }

    #[test]
    fn memory_limit_refuses_growth_and_says_why() {
        let mut l = Limits::new(Some(2 << 20), None, 10, Duration::from_millis(1));
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        assert!(l.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert!(!l.memory_growing(2 << 20, 3 << 20, None).unwrap());
        assert!(
            l.oom
                .as_deref()
                .unwrap()
                .contains("memory limit of 2Mi exceeded")
        );
    }

    #[test]
    fn log_lines_are_split_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let sink = LogSink::open(&path).unwrap();
        {
            let out = sink.output(LogStream::Stdout);
            out.0.write(b"one\ntw");
            out.0.write(b"o\nthree");
        }
        let lines = skiff_sdk::runtime::LogReader::open(&path)
            .read_new()
            .unwrap();
        let texts: Vec<_> = lines.iter().map(|l| (l.text.as_str(), l.full)).collect();
        assert_eq!(texts, [("one", true), ("two", true), ("three", true)]);
    }
}
