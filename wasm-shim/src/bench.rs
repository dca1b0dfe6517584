//! The wasm runtime's benchmark: one run measures instantiation latency,
//! HTTP-handler cold starts (cached and fresh compile), requests/s, idle
//! density, and `runc run` of a busybox container for comparison. Prints a
//! table; docs/BENCHMARKS.md records the results.
//!
//! Run it with `cargo run --release -p skiff-wasm-shim --example bench --
//! <dir with the example guests>` (scripts/build-examples builds them).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use skiff_sdk::runtime::{ContainerSpec, HttpHandlerSpec, ImageSource, Runtime, Workload};

use crate::{RuntimeConfig, WasmRuntime};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `hello-http.wasm` and `job.wasm` are.
    pub wasm_dir: PathBuf,
    pub instantiations: usize,
    pub cold_starts: usize,
    pub rps_duration: Duration,
    pub rps_connections: usize,
    pub density: usize,
    pub runc_runs: usize,
}

impl Options {
    pub fn new(wasm_dir: impl Into<PathBuf>) -> Self {
        Options {
            wasm_dir: wasm_dir.into(),
            instantiations: 10_000,
            cold_starts: 50,
            rps_duration: Duration::from_secs(3),
            rps_connections: 16,
            density: 10_000,
            runc_runs: 20,
        }
    }
}

/// Latencies in one series.
#[derive(Clone, Debug)]
pub struct Series(Vec<Duration>);

impl Series {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    }
    pub fn p50(&self) -> Duration {
        self.pct(0.50)
    }
    pub fn p99(&self) -> Duration {
        self.pct(0.99)
    }
}

#[derive(Debug)]
pub struct Report {
    pub instantiate: Series,
    pub cold_cached: Series,
    pub cold_fresh: Series,
    pub cold_warm: Series,
    pub command_cached: Series,
    pub rps: f64,
    pub density_instances: usize,
    pub density_bytes_each: f64,
    pub runc: Result<Series, String>,
    pub runc_http: Result<Series, String>,
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn handler_spec(dir: &Path, id: &str, wasm: &Path) -> ContainerSpec {
    let mut spec = ContainerSpec::new(
        id,
        ImageSource::File(wasm.to_path_buf()),
        dir.join(format!("{id}.log")),
    );
    spec.workload = Workload::HttpHandler(HttpHandlerSpec {
        request_timeout: Duration::from_secs(10),
        max_concurrency: None,
    });
    spec
}

async fn first_response(rt: &WasmRuntime, spec: &ContainerSpec) -> Result<(), String> {
    let status = rt.start(spec.clone()).await.map_err(|e| e.to_string())?;
    if !status.is_running() {
        return Err(format!("{} did not start: {status:?}", spec.id));
    }
    let req = hyper::Request::builder()
        .uri("http://bench/")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = rt
        .handle_request(
            &spec.id,
            req.map(|b| b.map_err(|never| -> wasmtime_wasi_http::Error { match never {} })),
        )
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("first response was {}", resp.status()));
    }
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// Runs the whole benchmark.
pub async fn run(opts: &Options) -> Result<Report, String> {
    let hello = opts.wasm_dir.join("hello-http.wasm");
    let job = opts.wasm_dir.join("job.wasm");
    for p in [&hello, &job] {
        if !p.is_file() {
            return Err(format!(
                "{} is missing: run scripts/build-examples",
                p.display()
            ));
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let logs = tmp.path().join("logs");
    let rt =
        WasmRuntime::new(RuntimeConfig::new(tmp.path().join("wasm"))).map_err(|e| e.to_string())?;

    // Instantiation of a pre-instantiated component from the pool.
    let spec = handler_spec(&logs, "inst", &hello);
    first_response(&rt, &spec).await?;
    rt.instantiate_cycles(&spec.id, 1000)
        .await
        .map_err(|e| e.to_string())?;
    let instantiate = Series(
        rt.instantiate_cycles(&spec.id, opts.instantiations)
            .await
            .map_err(|e| e.to_string())?,
    );

    // Requests/s over loopback TCP with keep-alive connections.
    let rps = requests_per_second(&rt, &spec.id, opts.rps_connections, opts.rps_duration).await?;

    // Cold starts: "pod assigned" (start) to the first response, with the
    // compiled artifact on disk only (a restarted node), then with none.
    let digest = rt
        .prepare(&ImageSource::File(hello.clone()))
        .await
        .map_err(|e| e.to_string())?
        .digest;
    let mut cold_cached = Vec::new();
    let mut cold_fresh = Vec::new();
    let mut cold_warm = Vec::new();
    for i in 0..opts.cold_starts {
        // Another replica of the same image already started on this node:
        // the artifact is in memory and linked.
        let spec = handler_spec(&logs, &format!("warm-{i}"), &hello);
        let t = Instant::now();
        first_response(&rt, &spec).await?;
        cold_warm.push(t.elapsed());
        rt.remove(&spec.id).await.map_err(|e| e.to_string())?;

        rt.forget_compiled();
        let spec = handler_spec(&logs, &format!("cached-{i}"), &hello);
        let t = Instant::now();
        first_response(&rt, &spec).await?;
        cold_cached.push(t.elapsed());
        rt.remove(&spec.id).await.map_err(|e| e.to_string())?;

        rt.evict_compiled(&digest);
        let spec = handler_spec(&logs, &format!("fresh-{i}"), &hello);
        let t = Instant::now();
        first_response(&rt, &spec).await?;
        cold_fresh.push(t.elapsed());
        rt.remove(&spec.id).await.map_err(|e| e.to_string())?;
    }

    // A command run to its exit (start → wait), cached compile: the same
    // shape as `runc run` of `true`.
    let mut command_cached = Vec::new();
    rt.prepare(&ImageSource::File(job.clone()))
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..opts.cold_starts {
        rt.forget_compiled();
        let spec = ContainerSpec::new(
            format!("job-{i}"),
            ImageSource::File(job.clone()),
            logs.join(format!("job-{i}.log")),
        );
        let t = Instant::now();
        rt.start(spec.clone()).await.map_err(|e| e.to_string())?;
        let st = rt.wait(&spec.id).await.map_err(|e| e.to_string())?;
        command_cached.push(t.elapsed());
        if st.termination().map(|t| t.exit_code) != Some(0) {
            return Err(format!("the job did not complete: {st:?}"));
        }
        rt.remove(&spec.id).await.map_err(|e| e.to_string())?;
    }
    drop(rt);

    // Density: idle instances of the hello handler, each in its own store.
    let mut config = RuntimeConfig::new(tmp.path().join("wasm"));
    config.engine.max_instances = (opts.density as u32).saturating_add(64);
    let rt = WasmRuntime::new(config).map_err(|e| e.to_string())?;
    let spec = handler_spec(&logs, "density", &hello);
    first_response(&rt, &spec).await?;
    let before = rss();
    let idle = rt
        .instantiate_idle(&spec.id, opts.density)
        .await
        .map_err(|e| e.to_string())?;
    let grew = rss().saturating_sub(before);
    let density_instances = idle.len();
    let density_bytes_each = grew as f64 / density_instances.max(1) as f64;
    drop(idle);
    drop(rt);

    let runc = runc_runs(opts.runc_runs);
    let runc_http = runc_http_runs(opts.runc_runs);
    Ok(Report {
        instantiate,
        cold_cached: Series(cold_cached),
        cold_fresh: Series(cold_fresh),
        cold_warm: Series(cold_warm),
        command_cached: Series(command_cached),
        rps,
        density_instances,
        density_bytes_each,
        runc,
        runc_http,
    })
}

async fn requests_per_second(
    rt: &WasmRuntime,
    id: &skiff_sdk::runtime::ContainerId,
    connections: usize,
    duration: Duration,
) -> Result<f64, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(crate::serve(rt.clone(), id.clone(), listener));
    let until = Instant::now() + duration;
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut n = 0u64;
            while Instant::now() < until {
                let req = hyper::Request::builder()
                    .uri("/")
                    .header("host", "bench")
                    .body(Full::new(Bytes::new()))
                    .map_err(|e| e.to_string())?;
                let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("status {}", resp.status()));
                }
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }));
    }
    let t = Instant::now();
    let mut total = 0;
    for c in clients {
        total += c.await.map_err(|e| e.to_string())??;
    }
    let secs = t.elapsed().as_secs_f64();
    server.abort();
    Ok(total as f64 / secs)
}

/// `runc run` of a busybox `true` in a bundle built by hand, timed from
/// spawn to exit.
/// A runc bundle under `dir` whose root holds a static busybox, running
/// `args`; with `host_network` it stays in the host's network namespace
/// (so that a server in it can be reached on loopback).
fn runc_bundle(dir: &Path, args: &[&str], host_network: bool) -> Result<PathBuf, String> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox is not installed (apt-get install busybox-static)")?;
    let bundle = dir.join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(|e| e.to_string())?;
    for applet in ["sh", "true", "httpd"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).map_err(|e| e.to_string())?;
    }
    let www = bundle.join("rootfs/www");
    std::fs::create_dir_all(&www).map_err(|e| e.to_string())?;
    std::fs::write(www.join("index.html"), "Hello from skiff\n").map_err(|e| e.to_string())?;
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .output()
        .map_err(|e| format!("runc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(args);
    if host_network && let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network");
    }
    std::fs::write(
        &cfg_path,
        serde_json::to_vec(&cfg).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok(bundle)
}

fn runc(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("runc");
    c.arg("--root").arg(state).args(args);
    c
}

/// `runc run` of `/bin/true`, spawn to exit: the least a container start
/// costs.
fn runc_runs(n: usize) -> Result<Series, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bundle = runc_bundle(dir.path(), &["/bin/true"], false)?;
    let state = dir.path().join("state");
    let mut times = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let out = runc(&state, &["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("skiff-bench-{}-{i}", std::process::id()))
            .output()
            .map_err(|e| format!("runc run: {e}"))?;
        let took = t.elapsed();
        if !out.status.success() {
            return Err(format!(
                "runc run failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        times.push(took);
    }
    Ok(Series(times))
}

/// The same start as the wasm HTTP cold start, for a container: `runc run`
/// of busybox httpd (host network, loopback) to its first complete 200
/// response, polling the port every 100 µs; then the container is killed.
fn runc_http_runs(n: usize) -> Result<Series, String> {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let listen = format!("127.0.0.1:{port}");
    let bundle = runc_bundle(
        dir.path(),
        &["/bin/httpd", "-f", "-p", &listen, "-h", "/www"],
        true,
    )?;
    let state = dir.path().join("state");
    let get = || -> Option<bool> {
        let mut s = std::net::TcpStream::connect(&listen).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: bench\r\n\r\n")
            .ok()?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).ok()?;
        let status_ok = resp.starts_with(b"HTTP/1.") && resp.get(8..13) == Some(b" 200 ");
        Some(status_ok && resp.ends_with(b"Hello from skiff\n"))
    };
    let mut times = Vec::new();
    for i in 0..n {
        let name = format!("skiff-bench-http-{}-{i}", std::process::id());
        let t = Instant::now();
        let mut child = runc(&state, &["run", "--bundle"])
            .arg(&bundle)
            .arg(&name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("runc run: {e}"))?;
        let answered = loop {
            match get() {
                Some(true) => break Ok(t.elapsed()),
                Some(false) => {
                    break Err("busybox httpd answered, but not 200 with the page".into());
                }
                None => {}
            }
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                break Err(format!("runc run exited ({st}): {}", err.trim()));
            }
            if t.elapsed() > Duration::from_secs(10) {
                break Err("busybox httpd did not answer within 10 s".to_string());
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        let _ = runc(&state, &["kill", &name, "KILL"]).output();
        let _ = child.wait();
        let _ = runc(&state, &["delete", "--force", &name]).output();
        times.push(answered?);
    }
    Ok(Series(times))
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

impl Report {
    /// The table, as recorded in docs/BENCHMARKS.md.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let row = |t: &mut String, a: &str, b: &str, c: String, d: &str| {
            let _ = writeln!(t, "{a:<50} | {b:<8} | {c:>9} | {d}");
        };
        row(&mut t, "measurement", "metric", "value".into(), "target");
        let _ = writeln!(
            t,
            "{}",
            "-".repeat(50) + "-+-" + &"-".repeat(8) + "-+-" + &"-".repeat(9) + "-+-------------"
        );
        row(
            &mut t,
            "instantiate hello-http (pooling + InstancePre)",
            "p50 us",
            us(self.instantiate.p50()),
            "",
        );
        row(
            &mut t,
            "",
            "p99 us",
            us(self.instantiate.p99()),
            "p99 <= 50 us",
        );
        row(
            &mut t,
            "cold start to first response, cached compile",
            "p50 ms",
            ms(self.cold_cached.p50()),
            "",
        );
        row(
            &mut t,
            "",
            "p99 ms",
            ms(self.cold_cached.p99()),
            "p99 <= 50 ms",
        );
        row(
            &mut t,
            "cold start to first response, fresh compile",
            "p50 ms",
            ms(self.cold_fresh.p50()),
            "",
        );
        row(&mut t, "", "p99 ms", ms(self.cold_fresh.p99()), "");
        let warm = "cold start to first response, artifact in memory";
        row(&mut t, warm, "p50 ms", ms(self.cold_warm.p50()), "");
        row(&mut t, "", "p99 ms", ms(self.cold_warm.p99()), "");
        row(
            &mut t,
            "hello-http over loopback, keep-alive",
            "req/s",
            format!("{:.0}", self.rps),
            "",
        );
        row(
            &mut t,
            "idle hello-http instances",
            "count",
            self.density_instances.to_string(),
            ">= 10000",
        );
        row(
            &mut t,
            "",
            "KiB each",
            format!("{:.1}", self.density_bytes_each / 1024.0),
            "<= 2048 KiB",
        );
        row(
            &mut t,
            "wasm command start to exit, cached compile",
            "p50 ms",
            ms(self.command_cached.p50()),
            "",
        );
        row(&mut t, "", "p99 ms", ms(self.command_cached.p99()), "");
        let ratio = |a: Duration, b: Duration| {
            format!("{:.0}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
        };
        match &self.runc_http {
            Ok(runc) => {
                let name = "runc run busybox httpd to first response";
                row(&mut t, name, "p50 ms", ms(runc.p50()), "");
                row(&mut t, "", "p99 ms", ms(runc.p99()), "");
                row(
                    &mut t,
                    "runc httpd / wasm HTTP cold start (cached), p50",
                    "ratio",
                    ratio(runc.p50(), self.cold_cached.p50()),
                    ">= 100x",
                );
                row(
                    &mut t,
                    "runc httpd / wasm HTTP cold start (memory), p50",
                    "ratio",
                    ratio(runc.p50(), self.cold_warm.p50()),
                    "",
                );
            }
            Err(e) => {
                let _ = writeln!(t, "runc run busybox httpd: could not run: {e}");
            }
        }
        match &self.runc {
            Ok(runc) => {
                row(
                    &mut t,
                    "runc run busybox true (spawn to exit)",
                    "p50 ms",
                    ms(runc.p50()),
                    "",
                );
                row(&mut t, "", "p99 ms", ms(runc.p99()), "");
                row(
                    &mut t,
                    "runc true / wasm HTTP cold start (cached), p50",
                    "ratio",
                    ratio(runc.p50(), self.cold_cached.p50()),
                    "",
                );
                row(
                    &mut t,
                    "runc true / wasm command start to exit, p50",
                    "ratio",
                    ratio(runc.p50(), self.command_cached.p50()),
                    ">= 100x",
                );
            }
            Err(e) => {
                let _ = writeln!(t, "runc run busybox true: could not run: {e}");
            }
        }
        t
    }
}
