//! `skiff bench`: benchmarks that run skiff and a peer side by side.
//!
//! `skiff bench store` starts an etcd cluster and a skiff cluster of the same
//! size on loopback, one after the other (never both at once: on a small
//! machine they would compete for the same cores), drives both with the same
//! etcd v3 client code, and prints one table. The client runs on the same
//! machine as the servers, so the numbers are only comparable with each other.
//!
//! `skiff bench api` ([`api`]) measures the Kubernetes API over the store:
//! create latency against a raw put, lists of many pods, watch fan-out.

mod api;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use consensus::pb::etcdserverpb::kv_client::KvClient;
use consensus::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use consensus::pb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest, StatusResponse};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Compare the replicated store with etcd: put and range throughput and
    /// latency, and leader failover time, over the same etcd v3 client.
    Store(StoreArgs),
    /// The Kubernetes API over the store: create latency against a raw
    /// etcd v3 put, `list pods` with many pods, one change to many watchers.
    Api(api::ApiArgs),
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Cluster sizes to run, each for etcd and for skiff.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Concurrent client counts to run each throughput workload with.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    clients: Vec<usize>,
    /// How long each throughput workload runs.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Size of each value put, in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Leader kills to time (3-member clusters only; 0 skips failover).
    #[arg(long, default_value_t = 5)]
    failovers: usize,
    /// Run skiff only.
    #[arg(long, conflicts_with = "etcd_only")]
    skiff_only: bool,
    /// Run etcd only.
    #[arg(long)]
    etcd_only: bool,
    /// The etcd server binary to compare against.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Keep the data directories and member logs instead of deleting them.
    #[arg(long)]
    keep: bool,
}

pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Store(args) => {
            // Returning (rather than dying on the signal) drops every cluster,
            // whose guards kill the member processes.
            tokio::select! {
                r = store(args) => r,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
        }
        BenchCmd::Api(args) => tokio::select! {
            r = api::run(args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        },
    }
}

/// Keys the put workloads pick from at random.
const KEYSPACE: u64 = 100_000;
/// Keys written before the read workloads, which then read them at random.
const READ_KEYS: u64 = 1_000;
/// Bound on every wait for a member to start, elect or catch up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one request in the throughput workloads; a slower one is an error.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-put timeout of the writer during failover, so that a put stuck on the
/// dead leader is retried quickly.
const FAILOVER_PUT_TIMEOUT: Duration = Duration::from_millis(200);
/// Concurrent clients sharing one HTTP/2 connection.
const CLIENTS_PER_CHANNEL: usize = 10;
const FAILOVER_TARGET: &str = "p99 <= 300 ms";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum System {
    Etcd,
    Skiff,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Etcd => "etcd",
            System::Skiff => "skiff",
        })
    }
}

async fn store(args: StoreArgs) -> Result<()> {
    if args.members.contains(&0) || args.clients.contains(&0) {
        bail!("--members and --clients must be positive");
    }
    if args.duration_secs == 0 {
        bail!("--duration-secs must be positive");
    }
    let mut systems = Vec::new();
    if !args.skiff_only {
        if !args.etcd_bin.exists() {
            bail!(
                "etcd not found at {} (see --etcd-bin)",
                args.etcd_bin.display()
            );
        }
        systems.push(System::Etcd);
    }
    if !args.etcd_only {
        systems.push(System::Skiff);
    }
    eprintln!(
        "bench store: members {:?}, clients {:?}, {} s per workload, {}-byte values, {} failovers",
        args.members, args.clients, args.duration_secs, args.value_size, args.failovers
    );

    let mut table = Table::default();
    let mut failures = Vec::new();
    for &n in &args.members {
        for &system in &systems {
            eprintln!("== {system}, {n} member(s)");
            if let Err(e) = bench_cluster(system, n, &args, &mut table).await {
                eprintln!("!! {system}, {n} member(s) failed: {e:#}");
                failures.push(format!("{system} with {n} member(s): {e:#}"));
            }
        }
    }

    table.print(args.duration_secs);
    println!("{}", table.json(&args, &failures));
    if !failures.is_empty() {
        bail!("{} run(s) failed: {}", failures.len(), failures.join("; "));
    }
    Ok(())
}

/// Starts one cluster, runs every workload against it, and stops it.
async fn bench_cluster(
    system: System,
    n: usize,
    args: &StoreArgs,
    table: &mut Table,
) -> Result<()> {
    let mut cluster = Cluster::start(system, n, &args.etcd_bin, args.keep).await?;
    let result = workloads(&mut cluster, args, table).await;
    cluster.report_log_problems();
    if let Err(e) = result {
        // Whatever went wrong, a member that died is the first thing to know.
        return Err(match cluster.check_alive() {
            Err(dead) => e.context(format!("{dead:#}")),
            Ok(()) => e,
        });
    }
    Ok(())
}

async fn workloads(cluster: &mut Cluster, args: &StoreArgs, table: &mut Table) -> Result<()> {
    let system = cluster.system;
    let n = cluster.members.len();
    let duration = Duration::from_secs(args.duration_secs);
    let members = if n == 1 {
        "1 member".to_string()
    } else {
        format!("{n} members")
    };

    let leader = cluster.leader().await?;
    let endpoint = cluster.members[leader].endpoint.clone();
    eprintln!(
        "   leader is {} at {endpoint}",
        cluster.members[leader].name
    );

    for &c in &args.clients {
        let s = drive(&endpoint, c, duration, args.value_size, Op::Put).await?;
        cluster.check_alive()?;
        s.log(&format!("put, {}", clients_label(c)));
        table.record(&format!("put, {members}, {}", clients_label(c)), system, &s);
    }

    preload(&endpoint, args.value_size).await?;
    for (serializable, what) in [(false, "linearizable get"), (true, "serializable get")] {
        for &c in &args.clients {
            let s = drive(
                &endpoint,
                c,
                duration,
                args.value_size,
                Op::Get { serializable },
            )
            .await?;
            cluster.check_alive()?;
            s.log(&format!("{what}, {}", clients_label(c)));
            table.record(
                &format!("{what}, {members}, {}", clients_label(c)),
                system,
                &s,
            );
        }
    }

    if n == 3 && args.failovers > 0 {
        let f = failover(cluster, args.failovers, args.value_size).await?;
        let w = format!("failover, {members}");
        if !f.times.is_empty() {
            let mut t = f.times.clone();
            t.sort();
            table.set(&w, Metric::P50Ms, system, ms(percentile(&t, 0.50)));
            table.set(&w, Metric::P99Ms, system, ms(percentile(&t, 0.99)));
            table.set(&w, Metric::MaxMs, system, ms(*t.last().unwrap()));
            table.target(&w, Metric::P99Ms, FAILOVER_TARGET);
        }
        table.set(&w, Metric::FailedRounds, system, f.failed as f64);
        if let Some(max) = f.rejoins.iter().max() {
            table.set(&w, Metric::RejoinMaxS, system, max.as_secs_f64());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Processes

/// One member process. Dropping it kills the process.
struct Member {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    /// `http://127.0.0.1:port` of its etcd v3 API.
    endpoint: String,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) -> Result<()> {
        // Append: a restarted member's log follows its first life.
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, no goodbye; then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Fails if the member was started and has exited since.
    fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            bail!(
                "member {} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail(25)
            );
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    system: System,
    members: Vec<Member>,
    // Declared last: dropped after every member has been killed.
    dir: tempfile::TempDir,
    keep: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
        if self.keep {
            self.dir.disable_cleanup(true);
            eprintln!(
                "   kept {} data and logs in {}",
                self.system,
                self.dir.path().display()
            );
        }
    }
}

impl Cluster {
    async fn start(system: System, n: usize, etcd_bin: &Path, keep: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("skiff-bench-{system}-"))
            .tempdir()?;
        let client_ports = free_tcp_ports(n)?;
        let peer_ports = match system {
            System::Etcd => free_tcp_ports(n)?,
            System::Skiff => free_udp_ports(n)?,
        };
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let data = |i: usize| dir.path().join(&names[i]);
        let initial_cluster = (0..n)
            .map(|i| match system {
                System::Etcd => format!("{}=http://127.0.0.1:{}", names[i], peer_ports[i]),
                System::Skiff => format!("{}=127.0.0.1:{}", names[i], peer_ports[i]),
            })
            .collect::<Vec<_>>()
            .join(",");
        let skiff = std::env::current_exe().context("finding the skiff binary")?;

        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let client = format!("http://127.0.0.1:{}", client_ports[i]);
            let args: Vec<OsString> = match system {
                System::Etcd => {
                    let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
                    vec![
                        "--name".into(),
                        names[i].clone().into(),
                        "--data-dir".into(),
                        data(i).into(),
                        "--listen-client-urls".into(),
                        client.clone().into(),
                        "--advertise-client-urls".into(),
                        client.clone().into(),
                        "--listen-peer-urls".into(),
                        peer.clone().into(),
                        "--initial-advertise-peer-urls".into(),
                        peer.into(),
                        "--initial-cluster".into(),
                        initial_cluster.clone().into(),
                        "--initial-cluster-state".into(),
                        "new".into(),
                        "--initial-cluster-token".into(),
                        "bench".into(),
                        "--logger".into(),
                        "zap".into(),
                        "--log-outputs".into(),
                        "stderr".into(),
                    ]
                }
                System::Skiff => {
                    let mut a: Vec<OsString> = vec![
                        "server".into(),
                        "--data-dir".into(),
                        data(i).into(),
                        "--name".into(),
                        names[i].clone().into(),
                        "--etcd-listen".into(),
                        format!("127.0.0.1:{}", client_ports[i]).into(),
                        "--peer-listen".into(),
                        format!("127.0.0.1:{}", peer_ports[i]).into(),
                        "--initial-cluster".into(),
                        initial_cluster.clone().into(),
                    ];
                    if i > 0 {
                        // Every member's certificate must come from the first one's CA.
                        a.push("--ca-from".into());
                        a.push(data(0).join("pki").into());
                    }
                    a
                }
            };
            members.push(Member {
                name: names[i].clone(),
                program: match system {
                    System::Etcd => etcd_bin.to_path_buf(),
                    System::Skiff => skiff.clone(),
                },
                args,
                log: dir.path().join(format!("{}.log", names[i])),
                endpoint: client,
                child: None,
            });
        }
        let mut cluster = Cluster {
            system,
            members,
            dir,
            keep,
        };

        let started = Instant::now();
        match system {
            System::Etcd => {
                for m in &mut cluster.members {
                    m.start()?;
                }
            }
            System::Skiff => {
                // The first member creates the cluster CA the others issue from.
                cluster.members[0].start()?;
                let pki = cluster.dir.path().join("n1").join("pki");
                let deadline = Instant::now() + STARTUP_TIMEOUT;
                while !(nonempty(&pki.join("ca.crt")) && nonempty(&pki.join("ca.key"))) {
                    cluster.members[0].check_alive()?;
                    if Instant::now() > deadline {
                        bail!(
                            "n1 wrote no cluster CA into {} within {STARTUP_TIMEOUT:?}",
                            pki.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for m in &mut cluster.members[1..] {
                    m.start()?;
                }
            }
        }
        for i in 0..n {
            cluster.wait_ready(i).await?;
        }
        eprintln!(
            "   {n} {system} member(s) ready in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            m.check_alive()?;
        }
        Ok(())
    }

    /// Waits until member `i` answers Status and knows a leader.
    async fn wait_ready(&mut self, i: usize) -> Result<StatusResponse> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last: String;
        loop {
            self.members[i].check_alive()?;
            match status(&self.members[i].endpoint).await {
                Ok(s) if s.leader != 0 => return Ok(s),
                Ok(_) => last = "answers, but knows no leader".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "{} member {} not ready within {STARTUP_TIMEOUT:?} ({last}); its log ends with:\n{}",
                    self.system,
                    self.members[i].name,
                    self.members[i].log_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The index of the running member that says it leads (and that is the
    /// leader the other running members report).
    async fn leader(&mut self) -> Result<usize> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.check_alive()?;
            let mut seen = Vec::new();
            for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.running()) {
                if let Ok(s) = status(&m.endpoint).await {
                    seen.push((i, s.header.map(|h| h.member_id).unwrap_or(0), s.leader));
                }
            }
            let leaders: Vec<u64> = seen.iter().map(|&(_, _, l)| l).collect();
            if let Some(&(i, _, _)) = seen
                .iter()
                .find(|&&(_, id, l)| id != 0 && l == id && leaders.iter().all(|&x| x == id))
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!(
                    "no agreed leader within {STARTUP_TIMEOUT:?}: (member, id, leader) = {seen:x?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints, per member, how many warnings and errors it logged, and the
    /// first few of each: a benchmark that passes can still show trouble.
    fn report_log_problems(&self) {
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let is = |line: &str, level: &str| match self.system {
                System::Skiff => line.contains(&format!(" {} ", level.to_uppercase())),
                System::Etcd => line.contains(&format!("\"level\":\"{level}\"")),
            };
            for level in ["error", "warn"] {
                let lines: Vec<&str> = text.lines().filter(|l| is(l, level)).collect();
                if lines.is_empty() {
                    continue;
                }
                eprintln!(
                    "   {} {}: {} {level} line(s) in its log, first ones:",
                    self.system,
                    m.name,
                    lines.len()
                );
                for l in lines.iter().take(3) {
                    eprintln!("     {}", truncate(l, 300));
                }
            }
        }
    }
}

fn nonempty(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Loopback TCP ports that were free a moment ago. All listeners are held
/// until every port is chosen so the same port is not handed out twice.
fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

// ---------------------------------------------------------------------------
// Client

async fn connect(endpoint: &str) -> Result<Channel> {
    Channel::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

async fn status(endpoint: &str) -> Result<StatusResponse> {
    let limit = Duration::from_secs(1);
    let channel = tokio::time::timeout(limit, connect(endpoint))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {endpoint}: no answer within {limit:?}"))??;
    let mut m = MaintenanceClient::new(channel);
    bounded(limit, |r| m.status(r), StatusRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("status of {endpoint}: {e}"))
}

/// One call with a deadline, both sent to the server (grpc-timeout) and
/// enforced here, so a server that ignores it cannot stall the caller.
async fn bounded<M, T, F, Fut>(limit: Duration, call: F, msg: M) -> Result<T, String>
where
    F: FnOnce(tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut req = tonic::Request::new(msg);
    req.set_timeout(limit);
    match tokio::time::timeout(limit, call(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

fn put_key(i: u64) -> Vec<u8> {
    format!("bench/put/{i:06}").into_bytes()
}

fn read_key(i: u64) -> Vec<u8> {
    format!("bench/read/{i:04}").into_bytes()
}

fn random_value(rng: &mut SmallRng, size: usize) -> Vec<u8> {
    // Random bytes, so that neither store gains from compressing them.
    let mut v = vec![0u8; size];
    rng.fill(&mut v[..]);
    v
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get { serializable: bool },
}

#[derive(Default)]
struct Sample {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Sample {
    fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn log(&self, what: &str) {
        eprintln!(
            "   {what}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
            self.ops_per_sec(),
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99)),
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
}

/// Runs `clients` concurrent loops of `op` against `endpoint` for `duration`.
/// Each client waits for its answer before the next request (closed loop).
async fn drive(
    endpoint: &str,
    clients: usize,
    duration: Duration,
    value_size: usize,
    op: Op,
) -> Result<Sample> {
    let mut channels = Vec::new();
    for _ in 0..clients.div_ceil(CLIENTS_PER_CHANNEL) {
        channels.push(connect(endpoint).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let mut kv = KvClient::new(channels[i / CLIENTS_PER_CHANNEL].clone());
        tasks.spawn(async move {
            let mut rng = SmallRng::from_os_rng();
            let mut s = Sample::default();
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = match op {
                    Op::Put => {
                        let req = PutRequest {
                            key: put_key(rng.random_range(0..KEYSPACE)),
                            value: random_value(&mut rng, value_size),
                            ..Default::default()
                        };
                        bounded(OP_TIMEOUT, |r| kv.put(r), req).await.map(drop)
                    }
                    Op::Get { serializable } => {
                        let req = RangeRequest {
                            key: read_key(rng.random_range(0..READ_KEYS)),
                            serializable,
                            ..Default::default()
                        };
                        bounded(OP_TIMEOUT, |r| kv.range(r), req)
                            .await
                            .and_then(|r| match r.kvs.len() {
                                1 => Ok(()),
                                n => Err(format!("get of a preloaded key returned {n} keys")),
                            })
                    }
                };
                match res {
                    Ok(()) => {
                        s.ok += 1;
                        s.latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                    }
                }
            }
            s
        });
    }
    let mut all = Sample::default();
    while let Some(s) = tasks.join_next().await {
        let s = s?;
        all.ok += s.ok;
        all.errors += s.errors;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
        all.latencies.extend(s.latencies);
    }
    all.elapsed = start.elapsed();
    all.latencies.sort();
    Ok(all)
}

/// Writes the keys the read workloads read.
async fn preload(endpoint: &str, value_size: usize) -> Result<()> {
    let channel = connect(endpoint).await?;
    let mut tasks = JoinSet::new();
    let writers = 10;
    for w in 0..writers {
        let mut kv = KvClient::new(channel.clone());
        tasks.spawn(async move {
            let mut rng = SmallRng::from_os_rng();
            for i in (w..READ_KEYS).step_by(writers as usize) {
                let req = PutRequest {
                    key: read_key(i),
                    value: random_value(&mut rng, value_size),
                    ..Default::default()
                };
                bounded(OP_TIMEOUT, |r| kv.put(r), req)
                    .await
                    .map_err(|e| anyhow::anyhow!("preloading key {i}: {e}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

struct Failover {
    /// From the kill to the acknowledgement of the first put sent after it.
    times: Vec<Duration>,
    /// Rounds in which no put was acknowledged within the startup timeout.
    failed: usize,
    /// From restarting the killed member to it being caught up.
    rejoins: Vec<Duration>,
}

/// Kills the leader `rounds` times while a writer puts through a follower,
/// and times how long writes are unavailable.
async fn failover(cluster: &mut Cluster, rounds: usize, value_size: usize) -> Result<Failover> {
    let n = cluster.members.len();
    let mut out = Failover {
        times: Vec::new(),
        failed: 0,
        rejoins: Vec::new(),
    };
    for round in 1..=rounds {
        let leader = cluster.leader().await?;
        let follower = (leader + 1) % n;
        let channel = connect(&cluster.members[follower].endpoint).await?;

        // The writer reports (sent, acknowledged) for every successful put.
        let (tx, mut acks) = mpsc::unbounded_channel::<(Instant, Instant)>();
        let mut writer = JoinSet::new();
        writer.spawn(async move {
            let mut kv = KvClient::new(channel);
            let mut rng = SmallRng::from_os_rng();
            loop {
                let sent = Instant::now();
                let req = PutRequest {
                    key: put_key(rng.random_range(0..KEYSPACE)),
                    value: random_value(&mut rng, value_size),
                    ..Default::default()
                };
                match bounded(FAILOVER_PUT_TIMEOUT, |r| kv.put(r), req).await {
                    Ok(_) => {
                        if tx.send((sent, Instant::now())).is_err() {
                            return;
                        }
                    }
                    // Errors come back fast (no leader, leader changed): do
                    // not spin on them.
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
        match tokio::time::timeout(STARTUP_TIMEOUT, acks.recv()).await {
            Ok(Some(_)) => {}
            _ => bail!(
                "round {round}: no put through follower {} was acknowledged",
                cluster.members[follower].name
            ),
        }

        let killed_at = Instant::now();
        cluster.members[leader].kill();
        let recovered = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some((sent, acked)) = acks.recv().await {
                if sent >= killed_at {
                    return Some(acked);
                }
            }
            None
        })
        .await;
        writer.abort_all();
        match recovered {
            Ok(Some(acked)) => {
                let t = acked - killed_at;
                eprintln!(
                    "   failover {round}/{rounds}: killed leader {}, first put via {} acknowledged after {:.0} ms",
                    cluster.members[leader].name,
                    cluster.members[follower].name,
                    ms(t)
                );
                out.times.push(t);
            }
            _ => {
                eprintln!(
                    "   failover {round}/{rounds}: killed leader {}, no put acknowledged within {STARTUP_TIMEOUT:?}",
                    cluster.members[leader].name
                );
                out.failed += 1;
            }
        }

        let restarted = Instant::now();
        cluster.members[leader].start()?;
        cluster.wait_ready(leader).await?;
        catch_up(cluster, leader).await?;
        let t = restarted.elapsed();
        eprintln!(
            "   {} restarted and caught up in {:.2} s",
            cluster.members[leader].name,
            t.as_secs_f64()
        );
        out.rejoins.push(t);
    }
    Ok(out)
}

/// Waits until member `i` has applied what the leader had committed when
/// the wait began.
async fn catch_up(cluster: &mut Cluster, i: usize) -> Result<()> {
    let leader = cluster.leader().await?;
    let target = status(&cluster.members[leader].endpoint).await?.raft_index;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        cluster.members[i].check_alive()?;
        let applied = status(&cluster.members[i].endpoint)
            .await
            .map(|s| s.raft_applied_index)
            .unwrap_or(0);
        if applied >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} applied {applied} of {target} within {STARTUP_TIMEOUT:?}",
                cluster.members[i].name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `p` quantile of sorted `v` (nearest rank); zero if empty.
fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------
// Results

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Metric {
    OpsPerSec,
    P50Ms,
    P99Ms,
    MaxMs,
    Errors,
    FailedRounds,
    RejoinMaxS,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::OpsPerSec => "ops/s",
            Metric::P50Ms => "p50 ms",
            Metric::P99Ms => "p99 ms",
            Metric::MaxMs => "max ms",
            Metric::Errors => "errors",
            Metric::FailedRounds => "failed rounds",
            Metric::RejoinMaxS => "rejoin max s",
        }
    }

    /// skiff relative to etcd, so that > 1 always means skiff did better.
    fn ratio(self, etcd: f64, skiff: f64) -> Option<f64> {
        match self {
            Metric::OpsPerSec => (etcd > 0.0).then(|| skiff / etcd),
            Metric::P50Ms | Metric::P99Ms | Metric::MaxMs | Metric::RejoinMaxS => {
                (skiff > 0.0).then(|| etcd / skiff)
            }
            Metric::Errors | Metric::FailedRounds => None,
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Metric::OpsPerSec | Metric::Errors | Metric::FailedRounds => format!("{v:.0}"),
            Metric::RejoinMaxS => format!("{v:.2}"),
            _ if v < 10.0 => format!("{v:.2}"),
            _ => format!("{v:.1}"),
        }
    }
}

struct Row {
    workload: String,
    metric: Metric,
    values: HashMap<System, f64>,
    target: Option<&'static str>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(&mut self, workload: &str, metric: Metric) -> &mut Row {
        let i = match self
            .rows
            .iter()
            .position(|r| r.workload == workload && r.metric == metric)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    workload: workload.to_string(),
                    metric,
                    values: HashMap::new(),
                    target: None,
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    fn set(&mut self, workload: &str, metric: Metric, system: System, v: f64) {
        self.row(workload, metric).values.insert(system, v);
    }

    fn target(&mut self, workload: &str, metric: Metric, target: &'static str) {
        self.row(workload, metric).target = Some(target);
    }

    fn record(&mut self, workload: &str, system: System, s: &Sample) {
        self.set(workload, Metric::OpsPerSec, system, s.ops_per_sec());
        self.set(
            workload,
            Metric::P50Ms,
            system,
            ms(percentile(&s.latencies, 0.50)),
        );
        self.set(
            workload,
            Metric::P99Ms,
            system,
            ms(percentile(&s.latencies, 0.99)),
        );
        // Errors get a row only once some run has them; zero elsewhere.
        let any = s.errors > 0
            || self
                .rows
                .iter()
                .any(|r| r.workload == workload && r.metric == Metric::Errors);
        if any {
            self.set(workload, Metric::Errors, system, s.errors as f64);
        }
    }

    fn print(&self, duration_secs: u64) {
        let cell = |r: &Row, s: System| {
            r.values
                .get(&s)
                .map(|&v| r.metric.format(v))
                .unwrap_or_else(|| "-".into())
        };
        let ratio = |r: &Row| match (r.values.get(&System::Etcd), r.values.get(&System::Skiff)) {
            (Some(&e), Some(&s)) => r
                .metric
                .ratio(e, s)
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let header = [
            "workload",
            "metric",
            "etcd",
            "skiff",
            "skiff vs etcd",
            "target",
        ];
        let lines: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.workload.clone(),
                    r.metric.label().to_string(),
                    cell(r, System::Etcd),
                    cell(r, System::Skiff),
                    ratio(r),
                    r.target.unwrap_or("").to_string(),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for l in &lines {
            for (w, c) in width.iter_mut().zip(l) {
                *w = (*w).max(c.chars().count());
            }
        }
        println!();
        println!(
            "skiff vs etcd: > 1 means skiff is better (throughput: skiff/etcd; latency and times: etcd/skiff). \
             {duration_secs} s per workload; client on the same host."
        );
        println!(
            "Both at their defaults (etcd: heartbeat 100 ms, election 1000 ms; skiff: tick 20 ms, \
             election 7-13 ticks). Puts and gets go to the leader. failover: from kill -9 of the \
             leader to the ack of the first put sent after it, through a follower, 200 ms per try; \
             rejoin: from restarting it to it knowing the leader and having applied the leader's index."
        );
        let print_line = |cells: [&str; 6]| {
            let mut out = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i > 0 {
                    out.push_str(" | ");
                }
                // Text left, numbers right.
                if i < 2 || i == 5 {
                    out.push_str(&format!("{c:<w$}"));
                } else {
                    out.push_str(&format!("{c:>w$}"));
                }
            }
            println!("{}", out.trim_end());
        };
        print_line(header);
        println!(
            "{}",
            width
                .iter()
                .map(|&w| "-".repeat(w))
                .collect::<Vec<_>>()
                .join("-+-")
        );
        let mut last = "";
        for (l, r) in lines.iter().zip(&self.rows) {
            let workload = if r.workload == last {
                ""
            } else {
                l[0].as_str()
            };
            last = &r.workload;
            print_line([workload, &l[1], &l[2], &l[3], &l[4], &l[5]]);
        }
        println!();
    }

    fn json(&self, args: &StoreArgs, failures: &[String]) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                let e = r.values.get(&System::Etcd).copied();
                let s = r.values.get(&System::Skiff).copied();
                serde_json::json!({
                    "workload": r.workload,
                    "metric": r.metric.label(),
                    "etcd": e,
                    "skiff": s,
                    "skiff_vs_etcd": e.zip(s).and_then(|(e, s)| r.metric.ratio(e, s)),
                    "target": r.target,
                })
            })
            .collect();
        serde_json::json!({
            "bench": "store",
            "members": args.members,
            "clients": args.clients,
            "duration_secs": args.duration_secs,
            "value_size": args.value_size,
            "failovers": args.failovers,
            "results": rows,
            "failures": failures,
        })
    }
}

fn clients_label(c: usize) -> String {
    if c == 1 {
        "1 client".to_string()
    } else {
        format!("{c} clients")
    }
}
