//! Linux container pods end to end, as a k3s user runs them: an image made
//! on the spot from busybox (`scripts/busybox-rootfs`, pushed with
//! `skiff image import` to a loopback registry), a Deployment with no
//! RuntimeClass applied with the real kubectl, pods on runc in network
//! namespaces of their own answering on their 10.42.x.y addresses and
//! reaching each other through a Service's cluster IP and its name in the
//! cluster DNS, exec
//! (with standard input and a terminal), attach (output; `kubectl run -i`
//! with stdinOnce; `attach -it` on a terminal), exec probes, a Job and its
//! logs, an OOM kill, and nothing left behind after
//! deletion. Needs root and runc (scripts/test installs runc).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Member, http_get, kubectl, kubectl_ok, wait_for};
use skiff_sdk::registry::testing::LocalRegistry;

/// A StatefulSet whose pod appends its name to a file on its claim's
/// volume and prints the file: each run shows every earlier one.
const STORE: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: store}
spec:
  serviceName: store
  replicas: 1
  selector: {matchLabels: {app: store}}
  template:
    metadata: {labels: {app: store}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: IMAGE
        command: [sh, -c, 'hostname >> /data/runs; cat /data/runs; exec sleep 3600']
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

/// A volume made by hand (a host directory, class `manual`, as in the
/// Kubernetes docs' task-pv-volume), a claim for it and a pod reading it.
const MANUAL: &str = r#"apiVersion: v1
kind: PersistentVolume
metadata: {name: task-pv-volume, labels: {type: local}}
spec:
  storageClassName: manual
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: HOSTDIR}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: task-pv-claim}
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 3Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: task-pv-pod}
spec:
  restartPolicy: Never
  volumes: [{name: s, persistentVolumeClaim: {claimName: task-pv-claim}}]
  containers:
  - name: c
    image: IMAGE
    command: [cat, /usr/share/nginx/html/index.html]
    volumeMounts: [{name: s, mountPath: /usr/share/nginx/html}]
"#;

fn jsonpath(m: &Member, args: &[&str], path: &str) -> String {
    let mut a = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", &p]);
    kubectl(m, &a, None).1
}

fn repo_root() -> PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest).parent().unwrap().to_path_buf()
}

/// Runs the shell command `inner` (kubectl with `-t`) on a pseudo-terminal
/// of its own, as a user at a terminal would: its exit code and what it
/// printed. `script`'s input stays open and silent until the command ends:
/// at end of file `script` types an end-of-file character into the
/// terminal, which kubectl, in raw mode, would pass on to the container.
/// The shell is `/bin/sh` wherever the suite runs (`script` takes
/// `$SHELL`), so that a command put in the background by mistake fails
/// here as it did in CI: `timeout` without `--foreground` moves kubectl
/// out of the terminal's foreground group, and kubectl then stops
/// (SIGTTOU) when it sets the terminal to raw mode.
fn on_a_terminal(m: &Member, inner: &str) -> (Option<i32>, String) {
    let mut child = Command::new("script")
        .args(["-qec", inner, "/dev/null"])
        .env("KUBECONFIG", m.kubeconfig())
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(input);
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    (out.status.code(), text)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: httpd
        image: IMAGE
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        livenessProbe:
          exec: {command: [cat, /www/index.html]}
          periodSeconds: 2
---
apiVersion: batch/v1
kind: Job
metadata:
  name: say
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: say
        image: IMAGE
        command: [sh, -c, 'echo "job says $GREETING from $(hostname)"']
        env: [{name: GREETING, value: hello}]
---
apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: IMAGE
    command: [sh, -c, 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived']
    resources:
      limits: {memory: 32Mi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_pods_run_on_runc() {
    let runc = oci_bridge::OciConfig::new("/nonexistent").runc;
    let supported = oci_bridge::host_supports_containers(&runc);
    assert!(
        supported.is_ok(),
        "this test needs root and runc: {supported:?}"
    );
    let registry = LocalRegistry::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    run_ok(Command::new(repo_root().join("scripts/busybox-rootfs")).arg(&rootfs));
    std::fs::write(rootfs.join("www/index.html"), "hello from a container\n").unwrap();
    let image = format!("{}/demo/busybox-httpd:1", registry.addr);
    let pushed = run_ok(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["image", "import"])
            .arg(&rootfs)
            .arg(&image)
            .args(["--cmd", r#"["httpd", "-f", "-p", "8080", "-h", "/www"]"#]),
    );
    assert!(pushed.contains("sha256:"), "{pushed}");
    // The same files, built (it says) for another CPU.
    let foreign_arch = if oci_bridge::kube_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let foreign = format!("{}/demo/busybox-foreign:1", registry.addr);
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["image", "import"])
            .arg(&rootfs)
            .arg(&foreign)
            .args([
                "--platform",
                &format!("linux/{foreign_arch}"),
                "--cmd",
                "true",
            ]),
    );

    let mut m = Member::new(tmp.path(), "containers");
    m.start();
    m.wait_api(Duration::from_secs(60)).await;
    let node = wait_for(
        "the node to run containers",
        Duration::from_secs(30),
        || {
            let l = jsonpath(&m, &["get", "nodes"], "{.items[0].metadata.labels}");
            if l.contains("skiff.dev/runtime-oci") {
                Ok(l)
            } else {
                Err(l)
            }
        },
    )
    .await;
    assert!(
        node.contains("\"skiff.dev/runtime-oci\":\"true\""),
        "{node}"
    );

    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&APP.replace("IMAGE", &image)),
    );

    // Two replicas Ready, each on its own address, serving the image's page.
    let ips = wait_for("web Ready", Duration::from_secs(90), || {
        let out = jsonpath(
            &m,
            &["get", "pods", "-l", "app=web"],
            r#"{range .items[*]}{.status.podIP} {.status.conditions[?(@.type=="Ready")].status} {.spec.runtimeClassName}{"\n"}{end}"#,
        );
        let ready: Vec<String> = out
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some("True"))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect();
        if ready.len() == 2 { Ok(ready) } else { Err(out) }
    })
    .await;
    assert_ne!(ips[0], ips[1]);
    for ip in &ips {
        assert!(ip.starts_with("10.42."), "{ip}");
        let page = http_get(&format!("{ip}:8080"), "/").expect("the pod answers");
        assert!(page.contains("hello from a container"), "{page}");
    }
    let wide = kubectl_ok(&m, &["get", "pods", "-l", "app=web", "-o", "wide"], None);
    assert!(wide.contains("Running"), "{wide}");

    // kubectl exec (WebSocket, v5.channel.k8s.io): output, exit codes, and
    // the refusals a user can run into.
    let pod = jsonpath(
        &m,
        &["get", "pods", "-l", "app=web"],
        "{.items[0].metadata.name}",
    );
    let out = kubectl_ok(&m, &["exec", &pod, "--", "cat", "/www/index.html"], None);
    assert_eq!(out, "hello from a container\n");

    // A Service in front of them: a pod reaches it by its cluster IP (the
    // pod's route to the host, the node's service proxy, another pod).
    kubectl_ok(
        &m,
        &["expose", "deploy/web", "--port=80", "--target-port=8080"],
        None,
    );
    let cluster_ip = jsonpath(&m, &["get", "svc/web"], "{.spec.clusterIP}");
    let page = wait_for(
        "a pod to reach svc/web by its cluster IP",
        Duration::from_secs(20),
        || {
            let (ok, out, err) = kubectl(
                &m,
                &[
                    "exec",
                    &pod,
                    "--",
                    // (`timeout`, not wget's `-T`: Debian's busybox 1.35
                    // wget crashes on it)
                    "timeout",
                    "10",
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    &format!("http://{cluster_ip}/"),
                ],
                None,
            );
            if ok {
                Ok(out)
            } else {
                Err(format!("{out}{err}"))
            }
        },
    )
    .await;
    assert_eq!(page, "hello from a container\n");
    // And by its name: the pod's resolv.conf points at the cluster DNS
    // with the namespace's search path, and the agent answers.
    let resolv = kubectl_ok(&m, &["exec", &pod, "--", "cat", "/etc/resolv.conf"], None);
    assert!(
        resolv.contains("nameserver 10.43.0.10\n")
            && resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("options ndots:5"),
        "{resolv}"
    );
    // And the API by the variables the kubelet sets (the pods started
    // before svc/web existed, so they have only the `kubernetes` ones).
    let env = kubectl_ok(&m, &["exec", &pod, "--", "env"], None);
    assert!(
        env.contains("KUBERNETES_SERVICE_HOST=10.43.0.1\n")
            && env.contains("KUBERNETES_SERVICE_PORT=443\n")
            && env.contains("KUBERNETES_PORT_443_TCP=tcp://10.43.0.1:443\n")
            && !env.contains("WEB_SERVICE_HOST"),
        "{env}"
    );
    let hosts = kubectl_ok(&m, &["exec", &pod, "--", "cat", "/etc/hosts"], None);
    assert!(hosts.contains(&format!("\t{pod}\n")), "{hosts}");
    // (busybox's nslookup tries every search domain and exits 1 when any
    // of them has no answer, as it does with CoreDNS: look at what it found)
    let (_, found, err) = kubectl(&m, &["exec", &pod, "--", "nslookup", "web"], None);
    assert!(
        found.contains("Name:\tweb.default.svc.cluster.local\nAddress: ")
            && found.contains(&cluster_ip),
        "{found}{err}"
    );
    // The in-cluster API client's view: the name of the `kubernetes`
    // Service and the account's token, CA and namespace (the API accepting
    // that token is checked in kubectl.rs).
    let (_, found, err) = kubectl(
        &m,
        // (busybox's nslookup searches only names without a dot)
        &[
            "exec",
            &pod,
            "--",
            "nslookup",
            "kubernetes.default.svc.cluster.local",
        ],
        None,
    );
    assert!(found.contains("Address: 10.43.0.1"), "{found}{err}");
    let creds = kubectl_ok(
        &m,
        &[
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "cd /var/run/secrets/kubernetes.io/serviceaccount && cat namespace && echo && head -1 ca.crt && tr . '\\n' < token | wc -l",
        ],
        None,
    );
    assert_eq!(
        creds.split_whitespace().collect::<Vec<_>>(),
        ["default", "-----BEGIN", "CERTIFICATE-----", "2"],
        "{creds}"
    );
    let (ok, out, err) = kubectl(&m, &["exec", &pod, "--", "nslookup", "nope"], None);
    assert!(
        !ok && format!("{out}{err}").contains("NXDOMAIN"),
        "{out}{err}"
    );
    let (ok, out, err) = kubectl(
        &m,
        &[
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "echo to out; echo to err >&2; exit 7",
        ],
        None,
    );
    assert!(!ok);
    assert_eq!(out, "to out\n");
    assert!(err.contains("to err"), "{err}");
    assert!(err.contains("command terminated with exit code 7"), "{err}");
    let status = Command::new("kubectl")
        .env("KUBECONFIG", m.kubeconfig())
        .args(["exec", &pod, "--", "sh", "-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "kubectl exits with the command's code"
    );
    let (ok, _, err) = kubectl(&m, &["exec", &pod, "-c", "nope", "--", "ls"], None);
    assert!(!ok && err.contains("container nope is not valid"), "{err}");

    // -i: standard input flows to the command; its end (v5's close of the
    // stdin channel) is the command's end of file.
    let out = kubectl_ok(
        &m,
        &["exec", "-i", &pod, "--", "sh", "-c", "cat; echo done"],
        Some("one\ntwo\n"),
    );
    assert_eq!(out, "one\ntwo\ndone\n");
    // -it: a terminal of the client's size from the command's first
    // instant (kubectl needs a terminal of its own: `script` gives it a
    // pseudo-terminal).
    let inner = format!(
        "stty cols 91 rows 27; kubectl exec -it {pod} -- sh -c 'stty size; tty; echo $TERM; exit 6'"
    );
    let (code, text) = on_a_terminal(&m, &inner);
    assert_eq!(code, Some(6), "{text}");
    assert!(
        text.contains("27 91\n/dev/pts/") && text.contains("xterm\n"),
        "{text}"
    );

    // kubectl attach: the container's output from now on.
    let mut attach = Command::new("kubectl")
        .env("KUBECONFIG", m.kubeconfig())
        .args(["attach", &pod])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = attach.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = None;
    for i in 0..30 {
        // Written as the container's PID 1 writes: to its stdout.
        let line = format!("attached line {i}");
        kubectl_ok(
            &m,
            &[
                "exec",
                &pod,
                "--",
                "sh",
                "-c",
                &format!("echo {line} > /proc/1/fd/1"),
            ],
            None,
        );
        if let Ok(got) = rx.recv_timeout(Duration::from_secs(1)) {
            seen = Some(got);
            break;
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    let seen = seen.expect("kubectl attach printed the container's output");
    assert!(seen.starts_with("attached line "), "{seen}");

    // kubectl run -i: a container whose stdin stays open until the first
    // attach's input ends (stdinOnce); kubectl sends what it reads, the
    // container's output comes back, and --rm deletes the pod after.
    let out = kubectl_ok(
        &m,
        &[
            "run",
            "cat-once",
            "-i",
            "--rm",
            "--restart=Never",
            "--image",
            &image,
            "--",
            "sh",
            "-c",
            "cat; echo bye",
        ],
        Some("one\ntwo\n"),
    );
    assert!(out.contains("one\ntwo\nbye\n"), "{out}");
    let (gone, _, _) = kubectl(&m, &["get", "pod", "cat-once"], None);
    assert!(!gone, "kubectl run --rm deleted the pod");

    // kubectl attach -it to a container on a terminal: its output, on a
    // terminal of the client's size (runc passes the size on). The
    // container ends once it sees that size, and so does the attach.
    kubectl_ok(
        &m,
        &[
            "run",
            "term",
            "--stdin",
            "--tty",
            "--restart=Never",
            "--image",
            &image,
            "--attach=false",
            "--",
            "sh",
            "-c",
            "while :; do s=$(stty size); echo \"size $s on $(tty) as $TERM\"; \
             [ \"$s\" = '33 77' ] && exit 0; sleep 0.2; done",
        ],
        None,
    );
    wait_for("the terminal pod to run", Duration::from_secs(60), || {
        let p = jsonpath(&m, &["get", "pod", "term"], "{.status.phase}");
        if p == "Running" { Ok(()) } else { Err(p) }
    })
    .await;
    let (code, text) = on_a_terminal(
        &m,
        "stty cols 77 rows 33; timeout --foreground 60 kubectl attach -it term",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("size 33 77 on /dev/pts/") && text.contains("as xterm"),
        "{text}"
    );
    kubectl_ok(&m, &["delete", "pod", "term", "--wait"], None);

    // kubectl debug: an ephemeral container added to the running web pod,
    // in its network and, with --target, among the httpd container's
    // processes. It runs once; it can be added, never taken away.
    kubectl_ok(
        &m,
        &[
            "debug",
            &pod,
            "--image",
            &image,
            "--target=httpd",
            "--container=dbg",
            "--profile=general",
            "--",
            "sh",
            "-c",
            "ps; wget -qO- http://127.0.0.1:8080/",
        ],
        None,
    );
    wait_for(
        "the debug container to finish",
        Duration::from_secs(60),
        || {
            let s = jsonpath(
                &m,
                &["get", "pod", &pod],
                "{.status.ephemeralContainerStatuses[0].state.terminated.reason}",
            );
            if s == "Completed" { Ok(()) } else { Err(s) }
        },
    )
    .await;
    let seen = kubectl_ok(&m, &["logs", &pod, "-c", "dbg"], None);
    assert!(
        seen.contains("httpd -f -p 8080") && seen.contains("hello from a container"),
        "{seen}"
    );
    let (ok, _, err) = kubectl(
        &m,
        &[
            "patch",
            "pod",
            &pod,
            "--subresource=ephemeralcontainers",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/ephemeralContainers/0"}]"#,
        ],
        None,
    );
    assert!(
        !ok && err.contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{err}"
    );
    let ready = jsonpath(
        &m,
        &["get", "pod", &pod],
        r#"{.status.phase} {.status.conditions[?(@.type=="Ready")].status}"#,
    );
    assert_eq!(ready, "Running True");

    // Storage: a StatefulSet's claim gets a volume of the default class
    // (local-path) on its pod's node; what the pod writes outlives it.
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&STORE.replace("IMAGE", &image)),
    );
    let runs = |want: &'static str| {
        let m = &m;
        wait_for(
            "store-0 to run on its volume",
            Duration::from_secs(60),
            move || {
                let (_, out, _) = kubectl(m, &["logs", "store-0"], None);
                if out == want { Ok(()) } else { Err(out) }
            },
        )
    };
    runs("store-0\n").await;
    let claim = jsonpath(
        &m,
        &["get", "pvc", "data-store-0"],
        "{.status.phase} {.spec.storageClassName} {.spec.volumeName}",
    );
    let volume = match claim.split(' ').collect::<Vec<_>>()[..] {
        ["Bound", "local-path", v] => v.to_string(),
        _ => panic!("{claim}"),
    };
    let dir = jsonpath(&m, &["get", "pv", &volume], "{.spec.hostPath.path}");
    assert!(std::path::Path::new(&dir).join("runs").is_file(), "{dir}");
    let affinity = jsonpath(
        &m,
        &["get", "pv", &volume],
        "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
    );
    assert_eq!(affinity, "vm");
    kubectl_ok(&m, &["delete", "pod", "store-0", "--wait"], None);
    runs("store-0\nstore-0\n").await;
    // A claim that a running pod uses is kept (in-use protection) until
    // the pod is gone; then the volume is deleted and, on the node, its
    // directory (reclaim policy Delete).
    kubectl_ok(&m, &["delete", "pvc", "data-store-0", "--wait=false"], None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = jsonpath(
        &m,
        &["get", "pvc", "data-store-0"],
        "{.metadata.finalizers} {.status.phase}",
    );
    assert!(
        held.contains("kubernetes.io/pvc-protection") && held.ends_with("Bound"),
        "{held}"
    );
    assert!(std::path::Path::new(&dir).join("runs").is_file(), "{dir}");
    kubectl_ok(&m, &["delete", "statefulset", "store", "--wait"], None);
    wait_for(
        "the volume to be reclaimed",
        Duration::from_secs(40),
        || {
            let (gone, _, _) = kubectl(&m, &["get", "pv", &volume], None);
            if !gone && !std::path::Path::new(&dir).exists() {
                Ok(())
            } else {
                Err(format!(
                    "pv listed: {gone}, {dir} exists: {}",
                    std::path::Path::new(&dir).exists()
                ))
            }
        },
    )
    .await;

    // A volume made by hand is bound to the claim that fits it, whatever
    // the class is called; after the claim it stays, Released (Retain).
    let host = tmp.path().join("task-pv");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("index.html"), "hello from a persistent volume\n").unwrap();
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(
            &MANUAL
                .replace("IMAGE", &image)
                .replace("HOSTDIR", &host.display().to_string()),
        ),
    );
    wait_for("the manual volume's pod", Duration::from_secs(60), || {
        let p = jsonpath(&m, &["get", "pod", "task-pv-pod"], "{.status.phase}");
        if p == "Succeeded" { Ok(()) } else { Err(p) }
    })
    .await;
    let read = kubectl_ok(&m, &["logs", "task-pv-pod"], None);
    assert_eq!(read, "hello from a persistent volume\n");
    assert_eq!(
        jsonpath(
            &m,
            &["get", "pvc", "task-pv-claim"],
            "{.spec.volumeName} {.status.capacity.storage}"
        ),
        "task-pv-volume 10Gi"
    );
    kubectl_ok(&m, &["delete", "pod", "task-pv-pod", "--wait"], None);
    kubectl_ok(&m, &["delete", "pvc", "task-pv-claim", "--wait"], None);
    wait_for(
        "the manual volume to be released",
        Duration::from_secs(30),
        || {
            let p = jsonpath(
                &m,
                &["get", "pv", "task-pv-volume"],
                "{.status.phase} {.spec.persistentVolumeReclaimPolicy}",
            );
            if p == "Released Retain" {
                Ok(())
            } else {
                Err(p)
            }
        },
    )
    .await;
    assert!(
        host.join("index.html").is_file(),
        "a retained volume's data stays"
    );

    // The Job runs to completion; its logs are the container's stdout.
    wait_for("the job to complete", Duration::from_secs(60), || {
        let s = jsonpath(&m, &["get", "job", "say"], "{.status.succeeded}");
        if s == "1" { Ok(()) } else { Err(s) }
    })
    .await;
    let logs = kubectl_ok(&m, &["logs", "job/say"], None);
    assert!(logs.starts_with("job says hello from say-"), "{logs}");

    // Over its memory limit: OOMKilled, as the kubelet reports it.
    let reason = wait_for("the hog to be OOMKilled", Duration::from_secs(60), || {
        let r = jsonpath(
            &m,
            &["get", "pod", "hog"],
            "{.status.phase} {.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}",
        );
        if r.starts_with("Failed") { Ok(r) } else { Err(r) }
    })
    .await;
    assert_eq!(reason, "Failed OOMKilled 137");

    // An image for another CPU fits no node: Pending, saying why.
    kubectl_ok(&m, &["run", "foreign", "--image", &foreign], None);
    let why = wait_for(
        "the foreign pod's FailedScheduling",
        Duration::from_secs(30),
        || {
            let m = jsonpath(
                &m,
                &["get", "pod", "foreign"],
                r#"{.status.conditions[?(@.type=="PodScheduled")].message}"#,
            );
            if m.is_empty() { Err(m) } else { Ok(m) }
        },
    )
    .await;
    assert_eq!(
        why,
        "0/1 nodes are available: 1 node(s) didn't match the image's platforms."
    );
    kubectl_ok(&m, &["delete", "pod", "foreign", "--wait"], None);

    // Deleting the app removes its containers, mounts and namespaces.
    let uids = jsonpath(
        &m,
        &["get", "pods", "-l", "app=web"],
        "{.items[*].metadata.uid}",
    );
    kubectl_ok(&m, &["delete", "deployment", "web", "--wait"], None);
    wait_for("web's pods to go", Duration::from_secs(60), || {
        let left = jsonpath(
            &m,
            &["get", "pods", "-l", "app=web"],
            "{.items[*].metadata.name}",
        );
        if left.trim().is_empty() {
            Ok(())
        } else {
            Err(left)
        }
    })
    .await;
    wait_for(
        "web's namespaces and mounts to go",
        Duration::from_secs(20),
        || {
            let netns = run_ok(Command::new("ip").args(["netns", "list"]));
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let ours = uids
                .split_whitespace()
                .filter(|u| netns.contains(u) || mounts.contains(u))
                .count();
            if ours == 0 {
                Ok(())
            } else {
                Err(format!("{netns}\n{mounts}"))
            }
        },
    )
    .await;
    kubectl_ok(&m, &["delete", "pod", "hog", "--wait"], None);
    kubectl_ok(&m, &["delete", "job", "say", "--wait"], None);
}
