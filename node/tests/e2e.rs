//! End to end, as a user sees skiff: a real `skiff server` (store, API,
//! controllers, scheduler, agent) and real `skiff agent` processes, driven
//! with the real kubectl. A Deployment of the example wasm HTTP app runs,
//! answers, scales, rolls out a new image within maxUnavailable, rolls
//! back; a Service answers on its cluster IP and node port through every
//! change of its pods; a DaemonSet covers every node; a Job completes; a pod that fits
//! nowhere stays Pending with kube-scheduler's FailedScheduling message;
//! an agent that dies has its pods recreated on the other nodes.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Member, http_get, kubectl, kubectl_ok, wait_for, wasm};

/// A `skiff agent` process, killed when dropped.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn start(server: &Member, name: &str) -> Agent {
        let dir = server.dir.with_file_name(format!("agent-{name}"));
        let log = dir.with_extension("log");
        let token = std::fs::read_to_string(server.dir.join("pki/join.token")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["agent", "--server"])
            .arg(format!("https://127.0.0.1:{}", server.api_port))
            .args(["--token", token.trim(), "--node-name", name])
            // Several agents on one machine: any free port each.
            .args(["--kubelet-listen", "127.0.0.1:0", "--disable-ingress"])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn skiff agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            eprintln!(
                "skiff agent {} had exited early: {status}",
                self.log.display()
            );
        }
        self.kill9();
        common::remove_container_leftovers(&self.log.with_extension(""));
    }
}

fn jsonpath(m: &Member, args: &[&str], path: &str) -> String {
    let mut a = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", &p]);
    kubectl(m, &a, None).1
}

/// (ready pods, all pods) of a label selector in `ns`.
fn pods_ready(m: &Member, ns: &str, selector: &str) -> (usize, usize, String) {
    let out = jsonpath(
        m,
        &["get", "pods", "-n", ns, "-l", selector],
        r#"{range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    let ready = lines
        .iter()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(1) == Some(&"Running") && f.get(2) == Some(&"True")
        })
        .count();
    (ready, lines.len(), out)
}

fn deployment(image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: hello}}
  strategy:
    rollingUpdate: {{maxUnavailable: 1, maxSurge: 1}}
  template:
    metadata:
      labels: {{app: hello}}
    spec:
      runtimeClassName: wasm
      containers:
      - name: hello
        image: {image}
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /ready, port: 8080}}
          periodSeconds: 1
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_roll_and_roll_back() {
    let v1 = wasm("hello-http.wasm");
    let tmp = tempfile::tempdir().unwrap();
    // A second image: the same component at another path, so the template
    // changes as it does when a tag changes.
    let v2 = tmp.path().join("hello-v2.wasm");
    std::fs::copy(&v1, &v2).unwrap();
    let v2 = v2.display().to_string();
    let mut m = Member::new(tmp.path(), "e2e");
    m.start();
    m.wait_api(Duration::from_secs(30)).await;
    wait_for("the node to be Ready", Duration::from_secs(30), || {
        let s = jsonpath(
            &m,
            &["get", "nodes"],
            r#"{.items[*].status.conditions[?(@.type=="Ready")].status}"#,
        );
        if s.trim() == "True" { Ok(()) } else { Err(s) }
    })
    .await;

    // Three replicas run, are ready, and answer on their pod IPs.
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&deployment(&v1, 3)));
    kubectl_ok(
        &m,
        &["rollout", "status", "deploy/hello", "--timeout=60s"],
        None,
    );
    let (ready, total, listing) = pods_ready(&m, "default", "app=hello");
    assert_eq!((ready, total), (3, 3), "{listing}");
    for line in listing.lines() {
        let ip = line.split(' ').nth(4).unwrap();
        let answer = http_get(&format!("{ip}:8080"), "/from-e2e").unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains("you asked for /from-e2e"),
            "{ip}: {answer}"
        );
    }

    // A Service in front of them answers on its cluster IP and on its node
    // port (the service proxy); one whose selector matches nothing refuses
    // connections, as kube-proxy's reject rule does.
    kubectl_ok(
        &m,
        &[
            "expose",
            "deploy/hello",
            "--port=80",
            "--target-port=8080",
            "--type=NodePort",
        ],
        None,
    );
    let svc = jsonpath(
        &m,
        &["get", "svc/hello"],
        "{.spec.clusterIP} {.spec.ports[0].nodePort}",
    );
    let (cluster_ip, node_port) = svc.split_once(' ').unwrap();
    let node_port: u16 = node_port.parse().unwrap_or_else(|_| panic!("{svc}"));
    assert!((30_000..=32_767).contains(&node_port), "{svc}");
    for (addr, what) in [
        (format!("{cluster_ip}:80"), "cluster IP"),
        (format!("127.0.0.1:{node_port}"), "node port"),
    ] {
        for i in 0..6 {
            let path = format!("/via-{}-{i}", what.replace(' ', "-"));
            let answer = wait_for(
                &format!("svc/hello to answer on its {what} {addr}"),
                Duration::from_secs(20),
                || http_get(&addr, &path),
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains(&path),
                "{addr}: {answer}"
            );
        }
    }
    kubectl_ok(
        &m,
        &["create", "service", "clusterip", "nobody", "--tcp=80:8080"],
        None,
    );
    let nobody = jsonpath(&m, &["get", "svc/nobody"], "{.spec.clusterIP}");
    wait_for(
        "a Service without endpoints to refuse connections",
        Duration::from_secs(20),
        || match std::net::TcpStream::connect_timeout(
            &format!("{nobody}:80").parse().unwrap(),
            Duration::from_secs(2),
        ) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // Scale to 10.
    kubectl_ok(&m, &["scale", "deploy/hello", "--replicas=10"], None);
    wait_for("10 ready replicas", Duration::from_secs(60), || {
        let (ready, total, l) = pods_ready(&m, "default", "app=hello");
        if ready == 10 && total == 10 {
            Ok(())
        } else {
            Err(l)
        }
    })
    .await;

    // A new image rolls out; never fewer than 9 ready (maxUnavailable 1).
    kubectl_ok(
        &m,
        &["set", "image", "deploy/hello", &format!("hello={v2}")],
        None,
    );
    let mut min_ready = usize::MAX;
    wait_for("the rollout to v2", Duration::from_secs(120), || {
        let (ready, _, _) = pods_ready(&m, "default", "app=hello");
        min_ready = min_ready.min(ready);
        let status = jsonpath(
            &m,
            &["get", "deploy/hello"],
            "{.status.updatedReplicas} {.status.readyReplicas} {.status.replicas} {.metadata.generation} {.status.observedGeneration}",
        );
        let f: Vec<&str> = status.split(' ').collect();
        if f.len() == 5 && f[0] == "10" && f[1] == "10" && f[2] == "10" && f[3] == f[4] {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    assert!(
        min_ready >= 9,
        "a rollout with maxUnavailable 1 went down to {min_ready} ready"
    );
    let images = jsonpath(
        &m,
        &["get", "pods", "-l", "app=hello"],
        "{.items[*].spec.containers[0].image}",
    );
    assert!(images.split(' ').all(|i| i == v2), "{images}");

    // Roll back.
    kubectl_ok(&m, &["rollout", "undo", "deploy/hello"], None);
    kubectl_ok(
        &m,
        &["rollout", "status", "deploy/hello", "--timeout=120s"],
        None,
    );
    assert_eq!(
        jsonpath(
            &m,
            &["get", "deploy/hello"],
            "{.spec.template.spec.containers[0].image}"
        ),
        v1
    );
    let history = kubectl_ok(&m, &["rollout", "history", "deploy/hello"], None);
    assert!(history.contains('3'), "{history}");
    // The Service follows the pods through the rollouts.
    let answer = wait_for(
        "svc/hello to answer after the rollback",
        Duration::from_secs(20),
        || http_get(&format!("{cluster_ip}:80"), "/after-undo"),
    )
    .await;
    assert!(answer.contains("/after-undo"), "{answer}");

    // `kubectl create deployment` of a wasm image, with no RuntimeClass in
    // sight: the API server tells the image is wasm and the pod runs.
    kubectl_ok(
        &m,
        &["create", "deployment", "plain", &format!("--image={v1}")],
        None,
    );
    kubectl_ok(
        &m,
        &["rollout", "status", "deploy/plain", "--timeout=60s"],
        None,
    );
    assert_eq!(
        jsonpath(
            &m,
            &["get", "pods", "-l", "app=plain"],
            "{.items[*].spec.runtimeClassName}"
        ),
        "wasm"
    );
    let nodes = kubectl_ok(&m, &["get", "nodes"], None);
    assert!(nodes.contains(" control-plane "), "{nodes}");

    // A DaemonSet's template history: ControllerRevisions that `kubectl
    // rollout history` lists and `rollout undo` goes back to.
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: daemon}}\nspec:\n  selector: {{matchLabels: {{app: daemon}}}}\n  template:\n    metadata: {{labels: {{app: daemon}}}}\n    spec:\n      containers: [{{name: c, image: {v1}}}]\n"
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&ds));
    kubectl_ok(
        &m,
        &["rollout", "status", "ds/daemon", "--timeout=60s"],
        None,
    );
    kubectl_ok(&m, &["set", "image", "ds/daemon", &format!("c={v2}")], None);
    kubectl_ok(
        &m,
        &["rollout", "status", "ds/daemon", "--timeout=60s"],
        None,
    );
    let revisions = || {
        jsonpath(
            &m,
            &["get", "controllerrevisions", "-l", "app=daemon"],
            r#"{range .items[*]}{.revision} {.data.spec.template.spec.containers[0].image}{"\n"}{end}"#,
        )
    };
    wait_for("two revisions", Duration::from_secs(20), || {
        let r = revisions();
        if r.lines().count() == 2 {
            Ok(())
        } else {
            Err(r)
        }
    })
    .await;
    let history = kubectl_ok(&m, &["rollout", "history", "ds/daemon"], None);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    kubectl_ok(&m, &["rollout", "undo", "ds/daemon"], None);
    assert_eq!(
        jsonpath(
            &m,
            &["get", "ds/daemon"],
            "{.spec.template.spec.containers[0].image}"
        ),
        v1
    );
    // The first template is the newest revision again.
    wait_for(
        "revision 3 to be the first template",
        Duration::from_secs(20),
        || {
            let r = revisions();
            if r.lines().any(|l| l == format!("3 {v1}")) {
                Ok(())
            } else {
                Err(r)
            }
        },
    )
    .await;
    // A StatefulSet's too.
    let sts = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: c, image: {v1}}}]\n"
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&sts));
    kubectl_ok(&m, &["rollout", "status", "sts/db", "--timeout=60s"], None);
    kubectl_ok(&m, &["set", "image", "sts/db", &format!("c={v2}")], None);
    kubectl_ok(&m, &["rollout", "status", "sts/db", "--timeout=60s"], None);
    let history = kubectl_ok(&m, &["rollout", "history", "sts/db"], None);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    kubectl_ok(&m, &["rollout", "undo", "sts/db"], None);
    kubectl_ok(&m, &["rollout", "status", "sts/db", "--timeout=60s"], None);
    assert_eq!(
        jsonpath(&m, &["get", "pod/db-0"], "{.spec.containers[0].image}"),
        v1
    );
    kubectl_ok(&m, &["delete", "ds/daemon"], None);
    wait_for(
        "the revisions to be collected",
        Duration::from_secs(20),
        || {
            let r = revisions();
            if r.trim().is_empty() { Ok(()) } else { Err(r) }
        },
    )
    .await;

    // A Job runs to completion.
    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n    spec:\n      runtimeClassName: wasm\n      restartPolicy: Never\n      containers: [{{name: job, image: {}}}]\n",
        wasm("job.wasm")
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&job));
    kubectl_ok(
        &m,
        &[
            "wait",
            "--for=condition=Complete",
            "job/once",
            "--timeout=60s",
        ],
        None,
    );
    // Its selector was generated from its uid, so `kubectl logs job/once`
    // finds its pod among all the others.
    let uid = jsonpath(&m, &["get", "job/once"], "{.metadata.uid}");
    assert_eq!(
        jsonpath(
            &m,
            &["get", "job/once"],
            "{.spec.selector.matchLabels.batch\\.kubernetes\\.io/controller-uid}"
        ),
        uid
    );
    assert_eq!(
        kubectl_ok(&m, &["logs", "job/once"], None).trim(),
        "job done"
    );

    // A pod that fits nowhere stays Pending and says why.
    let huge = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: huge}}\nspec:\n  runtimeClassName: wasm\n  containers: [{{name: c, image: {v1}, resources: {{requests: {{cpu: \"500\"}}}}}}]\n"
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&huge));
    let message = wait_for("FailedScheduling", Duration::from_secs(20), || {
        let ev = jsonpath(
            &m,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=huge,reason=FailedScheduling",
            ],
            "{.items[*].message}",
        );
        if ev.is_empty() {
            Err("no event".into())
        } else {
            Ok(ev)
        }
    })
    .await;
    assert!(
        message.contains("0/1 nodes are available: 1 Insufficient cpu."),
        "{message}"
    );
    assert_eq!(
        jsonpath(&m, &["get", "pod", "huge"], "{.status.phase}"),
        "Pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_lost_agent_are_recreated_elsewhere() {
    let image = wasm("hello-http.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "cp");
    m.start();
    m.wait_api(Duration::from_secs(30)).await;
    let mut a1 = Agent::start(&m, "worker-1");
    let _a2 = Agent::start(&m, "worker-2");
    wait_for("3 Ready nodes", Duration::from_secs(40), || {
        let s = jsonpath(
            &m,
            &["get", "nodes"],
            r#"{.items[*].status.conditions[?(@.type=="Ready")].status}"#,
        );
        if s.split(' ').filter(|x| *x == "True").count() == 3 {
            Ok(())
        } else {
            Err(format!(
                "{s}; agent log: {}",
                std::fs::read_to_string(&a1.log).unwrap_or_default()
            ))
        }
    })
    .await;

    // A DaemonSet lands on every node.
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: every}}\nspec:\n  selector: {{matchLabels: {{app: every}}}}\n  template:\n    metadata: {{labels: {{app: every}}}}\n    spec:\n      runtimeClassName: wasm\n      containers: [{{name: c, image: {image}}}]\n"
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&ds));
    wait_for(
        "a DaemonSet pod on each of 3 nodes",
        Duration::from_secs(40),
        || {
            let (ready, _, l) = pods_ready(&m, "default", "app=every");
            let nodes: std::collections::BTreeSet<&str> =
                l.lines().filter_map(|x| x.split(' ').nth(3)).collect();
            if ready == 3 && nodes.len() == 3 {
                Ok(())
            } else {
                Err(l)
            }
        },
    )
    .await;

    kubectl_ok(&m, &["apply", "-f", "-"], Some(&deployment(&image, 6)));
    kubectl_ok(
        &m,
        &["rollout", "status", "deploy/hello", "--timeout=60s"],
        None,
    );
    let (_, _, listing) = pods_ready(&m, "default", "app=hello");
    let on_lost = listing
        .lines()
        .filter(|l| l.split(' ').nth(3) == Some("worker-1"))
        .count();
    assert!(
        on_lost > 0,
        "the spread put nothing on worker-1:\n{listing}"
    );

    // worker-1 dies. Within 45 s its pods are replaced on the other nodes.
    a1.kill9();
    let lost_at = Instant::now();
    wait_for(
        "6 ready replicas off worker-1",
        Duration::from_secs(45),
        || {
            let (_, _, l) = pods_ready(&m, "default", "app=hello");
            let healthy = l
                .lines()
                .filter(|x| {
                    let f: Vec<&str> = x.split(' ').collect();
                    f.get(1) == Some(&"Running")
                        && f.get(2) == Some(&"True")
                        && f.get(3) != Some(&"worker-1")
                        && f.get(5).is_none_or(|d| d.is_empty())
                })
                .count();
            if healthy == 6 { Ok(()) } else { Err(l) }
        },
    )
    .await;
    eprintln!("pods replaced {:?} after the agent died", lost_at.elapsed());
    let node_ready = jsonpath(
        &m,
        &["get", "node", "worker-1"],
        r#"{.status.conditions[?(@.type=="Ready")].status}"#,
    );
    assert_eq!(node_ready, "Unknown");
}

/// A network namespace joined to this one by a veth pair: another host, as
/// far as addresses go (its own loopback, its own `10.251.x.2`). Removed
/// when dropped.
struct OtherHost {
    ns: String,
    host_if: String,
    /// This side's address, and the other host's.
    host_ip: String,
    ip: String,
}

impl OtherHost {
    fn create() -> OtherHost {
        let id = std::process::id() % 100_000;
        let sub = id % 250;
        let h = OtherHost {
            ns: format!("skiff-e2e-{id}"),
            host_if: format!("sktun{id}h"),
            host_ip: format!("10.251.{sub}.1"),
            ip: format!("10.251.{sub}.2"),
        };
        let peer_if = format!("sktun{id}n");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "this test needs root: ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &h.ns]);
        ip(&[
            "link", "add", &h.host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &h.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", h.host_ip),
            "dev",
            &h.host_if,
        ]);
        ip(&["link", "set", &h.host_if, "up"]);
        ip(&[
            "-n",
            &h.ns,
            "addr",
            "add",
            &format!("{}/30", h.ip),
            "dev",
            &peer_if,
        ]);
        ip(&["-n", &h.ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &h.ns, "link", "set", "lo", "up"]);
        h
    }

    /// `curl` run on the other host: (ok, body).
    fn curl(&self, url: &str) -> Result<String, String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "curl",
                "-sS",
                "--max-time",
                "5",
                url,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        // The peer goes with the namespace, and the host's end with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Pod addresses are local to their host, so a Service whose pod runs on
/// another host is reached through that node's tunnel (QUIC, node
/// certificates): from the server's host to a pod in the other host's
/// namespace, and back the other way. The two hosts here share nothing but
/// the veth between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_pods_on_another_host_through_its_node() {
    let echo = wasm("echo-http.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let far = OtherHost::create();
    let mut m = Member::new(tmp.path(), "near");
    // The API (and so the server's own agent) on this side of the veth.
    m.api_host = far.host_ip.clone();
    m.extra = vec!["--node-name".into(), "near".into()];
    m.start();
    m.wait_api(Duration::from_secs(30)).await;

    let dir = tmp.path().join("agent-far");
    let token = std::fs::read_to_string(m.dir.join("pki/join.token")).unwrap();
    let log = tmp.path().join("agent-far.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &far.ns])
        .arg(env!("CARGO_BIN_EXE_skiff"))
        .args(["agent", "--server"])
        .arg(format!("https://{}:{}", far.host_ip, m.api_port))
        .args(["--token", token.trim(), "--node-name", "far"])
        .args([
            "--kubelet-listen",
            &format!("{}:0", far.ip),
            "--disable-ingress",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env("SKIFF_AGENT_CONTAINERS", "false")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn skiff agent");
    let mut agent = Agent {
        child: Some(child),
        log,
    };
    wait_for("both nodes to be Ready", Duration::from_secs(40), || {
        let s = jsonpath(
            &m,
            &["get", "nodes"],
            r#"{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#,
        );
        (s.contains("far=True") && s.contains("near=True"))
            .then_some(())
            .ok_or(s)
    })
    .await;

    let mut manifest = String::new();
    for node in ["far", "near"] {
        manifest.push_str(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: echo-{node}, labels: {{app: echo-{node}}}}}
spec:
  runtimeClassName: wasm
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: echo
    image: {echo}
    ports: [{{containerPort: 8080}}]
    env: [{{name: WHERE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-{node}}}
spec:
  selector: {{app: echo-{node}}}
  ports: [{{port: 80, targetPort: 8080}}]
---
"#
        ));
    }
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&manifest));
    let ip_of = |svc: &str| jsonpath(&m, &["get", "svc", svc], "{.spec.clusterIP}");
    let (far_svc, near_svc) = (ip_of("echo-far"), ip_of("echo-near"));

    // This host → the pod on the other one: the server's proxy tunnels to
    // the far node, whose agent dials its pod.
    for i in 0..4 {
        let path = format!("/to-far-{i}");
        let answer = wait_for(
            "svc/echo-far to answer from this host",
            Duration::from_secs(40),
            || http_get(&format!("{far_svc}:80"), &path),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.contains(&format!("GET {path}")),
            "{answer}"
        );
        assert!(answer.contains("env WHERE=far"), "{answer}");
    }
    // The pod's address itself is not routed here: only the tunnel reaches it.
    let pod_ip = jsonpath(&m, &["get", "pod", "echo-far"], "{.status.podIP}");
    assert!(pod_ip.starts_with("127.42."), "{pod_ip}");
    assert!(http_get(&format!("{pod_ip}:8080"), "/").is_err());

    // The other host → a pod here, through this node's tunnel.
    let answer = wait_for(
        "svc/echo-near to answer on the other host",
        Duration::from_secs(40),
        || far.curl(&format!("http://{near_svc}/to-near")),
    )
    .await;
    assert!(
        answer.contains("GET /to-near") && answer.contains("env WHERE=near"),
        "{answer}"
    );

    // The far pod gone, its Service refuses again rather than hanging.
    kubectl_ok(&m, &["delete", "pod", "echo-far", "--wait=true"], None);
    wait_for(
        "svc/echo-far to refuse",
        Duration::from_secs(30),
        || match http_get(&format!("{far_svc}:80"), "/") {
            Err(e) => Ok(e),
            Ok(a) => Err(a),
        },
    )
    .await;
    agent.kill9();
    m.kill9();
}
