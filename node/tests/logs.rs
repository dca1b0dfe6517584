//! `kubectl logs` against skiff, as a Kubernetes user sees it: a real
//! `skiff server` (whose own agent runs pods) and a real joined `skiff
//! agent`, the real kubectl, the example `job` guest printing lines. The API
//! server reads each pod's log from the agent of its node over mutual TLS:
//! whole logs, `--tail`, `--timestamps`, `--limit-bytes`, `--since`, `-c`,
//! `-f` streaming until the container stops, `--previous` after a restart;
//! the errors (no container named, an unknown one, no node yet, RBAC
//! without `pods/log`); and the agent's endpoint refusing callers that are
//! not the API server.
//!
//! One agent talks to the control plane over HTTPS and is read on its log
//! port; another talks QUIC and opens no port at all: its logs come back on
//! streams the API server opens on the agent's own QUIC connection.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Member, kubectl, kubectl_ok, wait_for, wasm};
use serde_json::{Value, json};

const SERVER_NODE: &str = "logs-server";
const AGENT_NODE: &str = "logs-agent";
const QUIC_NODE: &str = "logs-quic";

/// A joined `skiff agent` process, killed when dropped.
struct Agent {
    child: Option<Child>,
    dir: PathBuf,
}

impl Agent {
    fn start(server: &Member, name: &str, ip_block: &str, extra: &[&str]) -> Agent {
        let dir = server.dir.with_file_name(format!("agent-{name}"));
        let token = std::fs::read_to_string(server.dir.join("pki/join.token")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["agent", "--server"])
            .arg(format!("https://127.0.0.1:{}", server.api_port))
            .args(["--token", token.trim(), "--node-name", name])
            .args(["--kubelet-listen", "127.0.0.1:0", "--disable-ingress"])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .env("SKIFF_AGENT_POD_IP_BLOCK", ip_block)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
            .spawn()
            .expect("spawn skiff agent");
        Agent {
            child: Some(child),
            dir,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed when dropped (a `kubectl logs -f`).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(m: &Member, args: &[&str]) -> Result<Value, String> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    let (ok, out, err) = kubectl(m, &a, None);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// `kubectl logs ARGS`: Ok(stdout) or Err(stderr).
fn logs(m: &Member, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    match kubectl(m, &a, None) {
        (true, out, _) => Ok(out),
        (false, _, err) => Err(err),
    }
}

/// Waits until `kubectl logs ARGS` prints something containing `text`.
async fn logs_containing(m: &Member, args: &[&str], text: &str) -> String {
    wait_for(
        &format!("kubectl logs {args:?} to show {text:?}"),
        Duration::from_secs(20),
        || match logs(m, args) {
            Ok(out) if out.contains(text) => Ok(out),
            Ok(out) => Err(out),
            Err(e) => Err(e),
        },
    )
    .await
}

fn pod(name: &str, node: &str, restart: &str, containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "runtimeClassName": "wasm",
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        },
    })
}

/// The Node's log endpoint port, once it advertises one at 127.0.0.1.
async fn kubelet_port(m: &Member, node: &str) -> u16 {
    wait_for(
        &format!("node {node} to advertise its log endpoint"),
        Duration::from_secs(20),
        || {
            let n = get(m, &["node", node])?;
            let port = n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64();
            let ip = n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .map(|a| a["address"].clone());
            match (port, ip) {
                (Some(p), Some(ip)) if p > 0 && ip == "127.0.0.1" => Ok(p as u16),
                _ => Err(n["status"].to_string()),
            }
        },
    )
    .await
}

/// `curl` to an agent's log endpoint as `cert` (PEM cert and key files):
/// the HTTP status (0 when TLS failed) and the body.
fn curl(
    ca: &Path,
    node: &str,
    port: u16,
    path: &str,
    cert: Option<(&Path, &Path)>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{node}:{port}:127.0.0.1")]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.arg(format!("https://{node}:{port}{path}"));
    let (_, out, _) = common::run(cmd, None);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_reads_the_agent_of_the_pods_node() {
    let t0 = Instant::now();
    let job = wasm("job.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "logs");
    m.extra = ["--node-name", SERVER_NODE].map(String::from).to_vec();
    // Pod IP blocks no node name hashes to (those are 1..=250).
    m.start_with_env(&[("SKIFF_AGENT_POD_IP_BLOCK", "253")]);
    m.wait_api(Duration::from_secs(30)).await;
    let agent = Agent::start(&m, AGENT_NODE, "254", &["--transport", "https"]);
    let quiet = Agent::start(&m, QUIC_NODE, "252", &["--disable-kubelet-port"]);
    let server_port = kubelet_port(&m, SERVER_NODE).await;
    let agent_port = kubelet_port(&m, AGENT_NODE).await;
    assert_ne!(server_port, agent_port);

    let ticks = |first: &[&str]| {
        let mut a: Vec<&str> = first.to_vec();
        a.extend(["ticks", "0", "200"]);
        json!(a)
    };
    let pods = json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("ticker", SERVER_NODE, "Always", json!([{
            "name": "c", "image": job,
            "args": ticks(&["echo", "hello from skiff", "stderr", "a warning"]),
        }])),
        pod("two", SERVER_NODE, "Never", json!([
            {"name": "a", "image": job, "args": ["echo", "i am a"]},
            {"name": "b", "image": job, "args": ["echo", "i am b"]},
        ])),
        // Each instance lists the pod's emptyDir before marking it: the
        // first prints no "seen", the next does.
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "restarted", "namespace": "default"},
            "spec": {
                "nodeName": SERVER_NODE,
                "runtimeClassName": "wasm",
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{
                    "name": "c", "image": job,
                    "args": ticks(&["ls", "/data", "write", "/data/seen", "x"]),
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
            },
        },
        pod("remote", AGENT_NODE, "Always", json!([{
            "name": "c", "image": job, "args": ticks(&["echo", "hello from the agent"]),
        }])),
        pod("quiet", QUIC_NODE, "Always", json!([{
            "name": "c", "image": job, "args": ticks(&["echo", "hello over quic"]),
        }])),
        // Fits no node: never bound.
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "unbound", "namespace": "default"},
            "spec": {
                "runtimeClassName": "wasm",
                "nodeSelector": {"skiff.dev/no-such-label": "x"},
                "containers": [{"name": "c", "image": job}],
            },
        },
    ]});
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pods.to_string()));

    // The whole log: stdout and stderr in the order written.
    let out = logs_containing(&m, &["ticker"], "tick 2\n").await;
    assert!(
        out.starts_with("hello from skiff\na warning\ntick 0\ntick 1\n"),
        "{out}"
    );
    // A pod on the joined agent: the same path to another process.
    let out = logs_containing(&m, &["remote"], "tick 0\n").await;
    assert!(out.starts_with("hello from the agent\n"), "{out}");
    // A node with no log port: the request goes back over its QUIC
    // connection, streaming with -f as well.
    let out = logs_containing(&m, &["quiet"], "tick 0\n").await;
    assert!(out.starts_with("hello over quic\n"), "{out}");
    let n = get(&m, &["node", QUIC_NODE]).unwrap();
    assert!(
        n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .unwrap_or(0)
            == 0,
        "{}",
        n["status"]
    );
    let mut follow = Command::new("kubectl")
        .args(["logs", "-f", "quiet", "--tail=1"])
        .env("KUBECONFIG", m.dir.join("kubeconfig.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: u64 = lines.next().unwrap().unwrap()["tick ".len()..]
        .parse()
        .unwrap();
    let second: u64 = lines.next().unwrap().unwrap()["tick ".len()..]
        .parse()
        .unwrap();
    assert_eq!(second, first + 1, "kubectl logs -f over quic");
    let _ = follow.kill();
    let _ = follow.wait();

    // --tail, --timestamps, --limit-bytes.
    let out = logs(&m, &["ticker", "--tail=2"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let n: Vec<u64> = lines
        .iter()
        .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(n[1], n[0] + 1, "{out}");
    let out = logs(&m, &["ticker", "--tail=1", "--timestamps"]).unwrap();
    let (ts, rest) = out.trim_end().split_once(' ').unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{out}"
    );
    assert!(rest.starts_with("tick "), "{out}");
    assert_eq!(logs(&m, &["ticker", "--limit-bytes=5"]).unwrap(), "hello");
    assert_eq!(logs(&m, &["ticker", "--tail=0"]).unwrap(), "");

    // -f streams lines as they are written, and ends when the container
    // stops.
    let before = logs(&m, &["ticker"]).unwrap();
    let last_before: u64 = before
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap();
    let mut follow = Reaped(
        Command::new("kubectl")
            .env("KUBECONFIG", m.kubeconfig())
            .env("HOME", m.dir.join("home"))
            .args(["logs", "-f", "ticker"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = follow.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut later = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while later.len() < 3 {
        let (at, line) = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("kubectl logs -f showed no new ticks: {later:?}"));
        if let Some(n) = line
            .strip_prefix("tick ")
            .and_then(|n| n.parse::<u64>().ok())
            && n > last_before + 1
        {
            later.push((at, n));
        }
    }
    // Ticks come 200 ms apart: they arrived as written, not at the end.
    let spread = later[2].0 - later[0].0;
    assert!(spread >= Duration::from_millis(250), "{spread:?} {later:?}");
    kubectl_ok(&m, &["delete", "pod", "ticker", "--wait=false"], None);
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = follow.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "kubectl logs -f still running after its container stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "kubectl logs -f: {status}");

    // -c picks a container; without it kubectl picks the first; the API
    // asks for one.
    wait_for("two to finish", Duration::from_secs(20), || {
        let p = get(&m, &["pod", "two"])?;
        if p["status"]["phase"] == "Succeeded" {
            Ok(())
        } else {
            Err(p["status"].to_string())
        }
    })
    .await;
    assert_eq!(logs(&m, &["two", "-c", "b"]).unwrap(), "i am b\n");
    assert_eq!(logs(&m, &["two"]).unwrap(), "i am a\n");
    // skiff logs prints what kubectl logs prints, on both streams: the
    // log, the container kubectl picks and says it picked, the errors.
    let skiff_logs = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiff"));
        c.arg("logs")
            .args(args)
            .env("KUBECONFIG", m.dir.join("kubeconfig.yaml"));
        common::run(c, None)
    };
    for args in [
        &["two", "-c", "b"][..],
        &["two"],
        &["pod/two", "--tail=1", "-f"],
        &["nope"],
        &["two", "-c", "nope"],
    ] {
        let mut k = vec!["logs"];
        k.extend_from_slice(args);
        assert_eq!(skiff_logs(args), kubectl(&m, &k, None), "logs {args:?}");
    }
    let (ok, out, err) = skiff_logs(&["quiet", "--tail=1"]);
    assert!(
        ok && out.starts_with("tick ") && out.lines().count() == 1,
        "{out}{err}"
    );
    let (ok, _, err) = kubectl(
        &m,
        &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
        None,
    );
    assert!(
        !ok && err.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{err}"
    );
    let err = logs(&m, &["two", "-c", "nope"]).unwrap_err();
    assert!(
        err.contains("container nope is not valid for pod two"),
        "{err}"
    );
    // (kubectl checks that one itself; the API says the same.)
    let (ok, _, err) = kubectl(
        &m,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/two/log?container=nope",
        ],
        None,
    );
    assert!(
        !ok && err.contains("container nope is not valid for pod two"),
        "{err}"
    );
    let err = logs(&m, &["no-such-pod"]).unwrap_err();
    assert!(err.contains("pods \"no-such-pod\" not found"), "{err}");
    let err = logs(&m, &["unbound"]).unwrap_err();
    assert!(err.contains("does not have a host assigned"), "{err}");

    // --previous: none before a restart; after one (the image changes),
    // the instance before.
    let out = logs_containing(&m, &["restarted"], "tick 1\n").await;
    assert!(out.starts_with("wrote /data/seen\ntick 0\n"), "{out}");
    let err = logs(&m, &["restarted", "--previous"]).unwrap_err();
    assert!(
        err.contains("previous terminated container \"c\" in pod \"restarted\" not found"),
        "{err}"
    );
    let patch = json!({"spec": {"containers": [{"name": "c", "image": format!("file://{job}")}]}});
    kubectl_ok(
        &m,
        &["patch", "pod", "restarted", "-p", &patch.to_string()],
        None,
    );
    let out = logs_containing(&m, &["restarted"], "seen\nwrote /data/seen\ntick 0\n").await;
    assert!(out.starts_with("seen\n"), "{out}");
    // The previous instance's log (once the agent knows of the restart).
    let prev = wait_for(
        "the previous instance's log",
        Duration::from_secs(10),
        || match logs(&m, &["restarted", "--previous"]) {
            Ok(p) if p.starts_with("wrote /data/seen\ntick 0\n") => Ok(p),
            Ok(p) => Err(p),
            Err(e) => Err(e),
        },
    )
    .await;
    assert!(!prev.contains("seen\nwrote"), "{prev}");

    // RBAC: reading pods is not reading their logs.
    kubectl_ok(&m, &["create", "serviceaccount", "reader"], None);
    kubectl_ok(
        &m,
        &[
            "create",
            "role",
            "pods",
            "--verb=get,list",
            "--resource=pods",
        ],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "rolebinding",
            "pods",
            "--role=pods",
            "--serviceaccount=default:reader",
        ],
        None,
    );
    let token = kubectl_ok(&m, &["create", "token", "reader"], None);
    let as_reader = |args: &[&str]| {
        let mut a = vec!["--token", token.trim(), "logs"];
        a.extend_from_slice(args);
        kubectl(&m, &a, None)
    };
    let (ok, _, err) = as_reader(&["remote"]);
    assert!(
        !ok && err.contains("Forbidden")
            && err.contains("cannot get resource \"pods/log\"")
            && err.contains("system:serviceaccount:default:reader"),
        "{err}"
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "role",
            "logs",
            "--verb=get",
            "--resource=pods/log",
        ],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "rolebinding",
            "logs",
            "--role=logs",
            "--serviceaccount=default:reader",
        ],
        None,
    );
    let (ok, out, err) = as_reader(&["remote", "--tail=1"]);
    assert!(ok && out.starts_with("tick "), "{out} {err}");

    // The agent's endpoint serves the API server only: no certificate is
    // 401, another identity from the cluster CA 403, another CA fails the
    // handshake, the API server's identity (or a cluster admin) reads.
    let ca = m.dir.join("pki/ca.crt");
    let path = "/containerLogs/default/remote/c?tailLines=1";
    let (code, body) = curl(&ca, AGENT_NODE, agent_port, path, None);
    assert_eq!(code, 401, "{body}");
    let node_cert = (
        agent.dir.join("pki/node-client.crt"),
        agent.dir.join("pki/node-client.key"),
    );
    let (code, body) = curl(
        &ca,
        AGENT_NODE,
        agent_port,
        path,
        Some((node_cert.0.as_path(), node_cert.1.as_path())),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("user=system:node:logs-agent"), "{body}");
    let issue = |ca: &consensus::pki::ClusterCa, cn: &str, orgs: &[&str], file: &str| {
        let c = ca.issue_for(cn, orgs, &[]).unwrap();
        let (crt, key) = (
            tmp.path().join(format!("{file}.crt")),
            tmp.path().join(format!("{file}.key")),
        );
        std::fs::write(&crt, c.cert_pem).unwrap();
        std::fs::write(&key, c.key_pem).unwrap();
        (crt, key)
    };
    let cluster_ca = consensus::pki::ClusterCa::load(&m.dir.join("pki")).unwrap();
    let stranger = issue(
        &consensus::pki::ClusterCa::generate().unwrap(),
        "kube-apiserver-kubelet-client",
        &[],
        "stranger",
    );
    let (code, _) = curl(
        &ca,
        AGENT_NODE,
        agent_port,
        path,
        Some((stranger.0.as_path(), stranger.1.as_path())),
    );
    assert_eq!(code, 0, "a certificate from another CA was accepted");
    let apiserver = issue(
        &cluster_ca,
        "kube-apiserver-kubelet-client",
        &[],
        "apiserver",
    );
    let (code, body) = curl(
        &ca,
        AGENT_NODE,
        agent_port,
        path,
        Some((apiserver.0.as_path(), apiserver.1.as_path())),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("tick "), "{body}");
    let admin = issue(&cluster_ca, "someone", &["system:masters"], "admin");
    let (code, body) = curl(
        &ca,
        SERVER_NODE,
        server_port,
        "/containerLogs/default/two/a",
        Some((admin.0.as_path(), admin.1.as_path())),
    );
    assert_eq!((code, body.as_str()), (200, "i am a\n"));
    // A node is kept to its own objects (Kubernetes' Node authorizer), as
    // the joined agent's own certificate: its Node is its to label,
    // another's is not; the status of a pod on another node is not its to
    // write; a Secret is its to read only if a pod bound to it uses it.
    let home = tmp.path().join("node-home");
    let as_node = |args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", "/dev/null")
            .env("HOME", &home)
            .arg(format!("--server=https://127.0.0.1:{}", m.api_port))
            .arg(format!("--certificate-authority={}", ca.display()))
            .arg(format!("--client-certificate={}", node_cert.0.display()))
            .arg(format!("--client-key={}", node_cert.1.display()))
            .args(args);
        common::run(cmd, None)
    };
    let (ok, _, err) = as_node(&["label", "node", AGENT_NODE, "checked=yes"]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_node(&["label", "node", QUIC_NODE, "checked=yes"]);
    assert!(
        !ok && err.contains("node 'logs-agent' cannot modify node 'logs-quic'"),
        "{err}"
    );
    // (kubectl patch would first GET pods/status, which the node role does
    // not grant, as in Kubernetes: the PATCH goes alone.)
    let mut patch = Command::new("curl");
    patch
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&node_cert.0)
        .arg("--key")
        .arg(&node_cert.1)
        .args([
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
        ])
        .args(["-d", r#"{"status":{"message":"not yours"}}"#])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/pods/quiet/status",
            m.api_port
        ));
    let (_, out, _) = common::run(patch, None);
    assert!(
        out.ends_with("\n403") && out.contains("can only change pods bound to it"),
        "{out}"
    );
    for name in ["used", "unused"] {
        kubectl_ok(
            &m,
            &["create", "secret", "generic", name, "--from-literal=k=v"],
            None,
        );
    }
    let uses = pod(
        "uses-secret",
        AGENT_NODE,
        "Never",
        json!([{
            "name": "c", "image": job, "args": ["echo", "hi"],
            "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "used", "key": "k"}}}],
        }]),
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&uses.to_string()));
    let (ok, out, err) = as_node(&["get", "secret", "used", "-o", "jsonpath={.data.k}"]);
    assert_eq!((ok, out.as_str()), (true, "dg=="), "{err}");
    let (ok, _, err) = as_node(&["get", "secret", "unused"]);
    assert!(
        !ok && err.contains("no relationship found between node 'logs-agent' and this object"),
        "{err}"
    );
    let (ok, _, err) = as_node(&["get", "secrets"]);
    assert!(!ok && err.contains("Forbidden"), "{err}");

    drop(agent);
    drop(quiet);
    eprintln!("logs test took {:?}", t0.elapsed());
}
