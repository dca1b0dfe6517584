//! Real `skiff server` processes for the integration tests.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consensus::pb::etcdserverpb::{StatusRequest, maintenance_client::MaintenanceClient};

/// A port free on 127.0.0.1 for both TCP and UDP (the API's port number
/// carries QUIC too), chosen below the kernel's ephemeral range
/// (32768–60999): a port the kernel handed out for `bind(0)` and we let go
/// could be given to the next outgoing connection (a kubectl, an etcd
/// client) before the server binds it, and a server that then fails to
/// start fails the test for nothing.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(104_729)) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

pub fn free_tcp() -> u16 {
    free_port()
}

pub fn free_udp() -> u16 {
    free_port()
}

/// One member process, killed when dropped.
pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    pub etcd_port: u16,
    pub peer_port: u16,
    pub api_port: u16,
    /// The address the API listens on (127.0.0.1 unless a test needs its
    /// agents elsewhere to reach it).
    pub api_host: String,
    /// The ingress gateway's HTTP and HTTPS ports (on 127.0.0.1).
    pub ingress_ports: (u16, u16),
    pub extra: Vec<String>,
    pub child: Option<Child>,
}

impl Member {
    pub fn new(dir: &Path, name: &str) -> Member {
        Member {
            name: name.into(),
            dir: dir.join(name),
            etcd_port: free_tcp(),
            peer_port: free_udp(),
            api_port: free_tcp(),
            api_host: "127.0.0.1".into(),
            ingress_ports: (free_tcp(), free_tcp()),
            extra: Vec::new(),
            child: None,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.etcd_port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    pub fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Waits until the member answers Status and knows a leader; returns
    /// (its member id, the leader id).
    pub async fn wait_ready(&self, timeout: Duration) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut c) = MaintenanceClient::connect(self.url()).await
                && let Ok(r) = c.status(StatusRequest {}).await
            {
                let r = r.into_inner();
                if r.leader != 0 {
                    return (r.header.unwrap().member_id, r.leader);
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "member {} not ready in {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // A member that died before the test let it go is the first thing
        // to know when a test fails: say how it ended.
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            eprintln!(
                "skiff server {} had exited before the test ended: {status}",
                self.name
            );
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of {}'s log:", self.name);
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
        self.kill9();
        remove_container_leftovers(&self.dir.join("agent"));
    }
}

/// Removes what a killed agent's container pods leave behind, as no agent
/// will start on its data directory again: runc containers, mounts under
/// the directory, the service proxy's addresses, and the pods' network
/// namespaces (named by the pod uids in its `pod-ips.json`).
pub fn remove_container_leftovers(agent_dir: &Path) {
    let runc_root = agent_dir.join("oci/runc");
    if runc_root.exists()
        && let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
    {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            for args in [&["kill", id, "KILL"][..], &["delete", "--force", id]] {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(args)
                    .output();
            }
        }
    }
    let dir = agent_dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if m.starts_with(&dir) {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
    }
    let Ok(ips) = std::fs::read_to_string(agent_dir.join("pod-ips.json")) else {
        return;
    };
    // The service proxy's cluster IPs: addresses of `lo` labelled with the
    // agent's pod address block.
    if let Some(block) = serde_json::from_str::<serde_json::Value>(&ips)
        .ok()
        .and_then(|v| v["block"].as_u64())
    {
        let _ = Command::new("ip")
            .args(["addr", "flush", "dev", "lo", "label"])
            .arg(format!("lo:skiffsvc{block}"))
            .output();
    }
    let Ok(netns) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for ns in String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if let Some(uid) = ns.strip_prefix("skiff-")
            && ips.contains(uid)
        {
            // The pod's veth goes with the namespace: its peer lives there.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Runs etcdctl against `endpoint`, returning (success, stdout, stderr).
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=10s")
        .args(args);
    run(cmd, stdin)
}

/// Runs `cmd` with `stdin` (if any) fed to it: (success, stdout, stderr).
pub fn run(mut cmd: Command, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot start (scripts/test installs the tools): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// etcdctl that must succeed.
pub fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let (ok, out, err) = etcdctl(endpoint, args, None);
    assert!(ok, "etcdctl {args:?} failed: {err}\n{out}");
    out
}

impl Member {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig.yaml")
    }

    /// Waits until the Kubernetes API answers `kubectl get --raw /readyz`.
    pub async fn wait_api(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.kubeconfig().exists() {
                let (ok, _, _) = kubectl(self, &["get", "--raw", "/readyz"], None);
                if ok {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "API of {} not ready in {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the real kubectl against `m`'s kubeconfig: (success, stdout, stderr).
pub fn kubectl(m: &Member, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", m.kubeconfig())
        .env("HOME", m.dir.join("home"))
        .args(args);
    run(cmd, stdin)
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(m: &Member, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = kubectl(m, args, stdin);
    assert!(
        ok,
        "kubectl {args:?} failed: {err}\n{out}\nserver log tail:\n{}",
        tail(&m.log(), 30)
    );
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Member {
    /// [`Member::start`] with extra environment variables for the server
    /// (settings that have no flag, like the agent's back-off).
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["server", "--data-dir"])
            .arg(&self.dir)
            .args(["--name", &self.name])
            .args(["--etcd-listen", &self.endpoint()])
            .args(["--peer-listen", &self.peer()])
            .args([
                "--api-listen",
                &format!("{}:{}", self.api_host, self.api_port),
            ])
            .args([
                "--ingress-http-listen",
                &format!("127.0.0.1:{}", self.ingress_ports.0),
                "--ingress-https-listen",
                &format!("127.0.0.1:{}", self.ingress_ports.1),
            ])
            .args(&self.extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff");
        self.child = Some(child);
    }
}

/// The example guest `name` built by scripts/build-examples, as a path.
pub fn wasm(name: &str) -> String {
    let dir = std::env::var_os("SKIFF_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
                format!("{}/.cache/skiff-target", std::env::var("HOME").unwrap())
            }))
            .join("wasm")
        });
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-examples (scripts/test does)",
        p.display()
    );
    p.display().to_string()
}

/// Polls `f` every 200 ms until it returns Ok, or panics after `timeout`
/// saying what was awaited and what was last seen.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One plain HTTP/1.1 GET, the whole response as text.
pub fn http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        Duration::from_secs(2),
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The members `names` of one new cluster bootstrapped together with
/// `--initial-cluster`, each also given `extra`: the first makes the
/// cluster CA, the others are issued from it (`--ca-from`).
pub fn initial_cluster(tmp: &Path, names: &[&str], extra: &[&str]) -> Vec<Member> {
    let mut ms: Vec<Member> = names.iter().map(|n| Member::new(tmp, n)).collect();
    let initial = ms
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer()))
        .collect::<Vec<_>>()
        .join(",");
    let ca = ms[0].dir.join("pki");
    for (i, m) in ms.iter_mut().enumerate() {
        m.extra = vec!["--initial-cluster".into(), initial.clone()];
        m.extra.extend(extra.iter().map(|e| e.to_string()));
        if i > 0 {
            m.extra
                .extend(["--ca-from".into(), ca.display().to_string()]);
        }
    }
    ms
}

/// Starts the first member, waits for the CA it writes, then the others.
pub async fn start_initial_cluster(ms: &mut [Member]) {
    ms[0].start();
    let pki = ms[0].dir.join("pki");
    wait_for("the first member's CA", Duration::from_secs(30), || {
        if pki.join("ca.key").exists() && pki.join("node.key").exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    for m in &mut ms[1..] {
        m.start();
    }
}
