//! The real kubectl (v1.32) against a real `skiff server`, with its default
//! settings and the kubeconfig skiff writes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Member, kubectl, kubectl_ok, wait_for};

const READY: Duration = Duration::from_secs(30);

const APP: &str = include_str!("data/shop.yaml");

async fn start(tmp: &std::path::Path) -> Member {
    let mut m = Member::new(tmp, "k");
    m.start();
    m.wait_ready(READY).await;
    m.wait_api(READY).await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_scale_delete_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;

    let ns = kubectl_ok(&m, &["get", "namespaces"], None);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "{ns}");

    // apply: created, then unchanged, then configured
    let out = kubectl_ok(&m, &["apply", "-f", "-"], Some(APP));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "namespace/shop created",
            "configmap/settings created",
            "deployment.apps/web created",
            "deployment.apps/zero created",
            "service/web created"
        ],
    );
    let out = kubectl_ok(&m, &["apply", "-f", "-"], Some(APP));
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
    let changed = APP
        .replace("color: blue", "color: green")
        .replace("value: blue", "value: green");
    let out = kubectl_ok(&m, &["apply", "-f", "-"], Some(&changed));
    assert!(
        out.contains("configmap/settings configured")
            && out.contains("deployment.apps/web configured"),
        "{out}"
    );
    assert!(out.contains("service/web unchanged"), "{out}");
    assert_eq!(
        kubectl_ok(
            &m,
            &[
                "get",
                "cm",
                "settings",
                "-n",
                "shop",
                "-o",
                "jsonpath={.data.color}"
            ],
            None
        ),
        "green"
    );
    let env = kubectl_ok(
        &m,
        &[
            "get",
            "deploy",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value} {.metadata.generation}",
        ],
        None,
    );
    assert_eq!(env, "green 2");

    // get: table columns, wide, yaml, json, name
    let table = kubectl_ok(&m, &["get", "deployments", "-n", "shop"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("web "), "{table}");
    let wide = kubectl_ok(&m, &["get", "deploy", "-n", "shop", "-o", "wide"], None);
    assert!(
        wide.contains("CONTAINERS")
            && wide.contains("registry.local/hello:v1")
            && wide.contains("app=web"),
        "{wide}"
    );
    let svc = kubectl_ok(&m, &["get", "svc", "web", "-n", "shop"], None);
    assert!(
        svc.contains("ClusterIP") && svc.contains("10.43.") && svc.contains("80/TCP"),
        "{svc}"
    );
    // Every cluster has the API server as the `kubernetes` Service.
    let svc = kubectl_ok(&m, &["get", "svc", "kubernetes", "-n", "default"], None);
    assert!(
        svc.contains("10.43.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
    let ep = kubectl_ok(
        &m,
        &[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
        ],
        None,
    );
    assert_eq!(ep, format!("127.0.0.1:{}", m.api_port));

    // kubectl explain reads the kinds' schemas from /openapi/v3.
    let explained = kubectl_ok(&m, &["explain", "deployment.spec.strategy"], None);
    assert!(
        explained.contains("KIND:       Deployment")
            && explained.contains("FIELD: strategy <DeploymentStrategy>")
            && explained.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{explained}"
    );
    let explained = kubectl_ok(&m, &["explain", "pods.spec.containers.image"], None);
    assert!(explained.contains("Container image name"), "{explained}");
    let (ok, _, err) = kubectl(&m, &["explain", "pods.spec.nope"], None);
    assert!(
        !ok && err.contains("field \"nope\" does not exist"),
        "{err}"
    );
    let yaml = kubectl_ok(
        &m,
        &["get", "deploy", "web", "-n", "shop", "-o", "yaml"],
        None,
    );
    for needle in [
        "uid:",
        "resourceVersion:",
        "creationTimestamp:",
        "revisionHistoryLimit: 10",
        "imagePullPolicy: IfNotPresent",
        "kubectl.kubernetes.io/last-applied-configuration",
    ] {
        assert!(yaml.contains(needle), "missing {needle} in\n{yaml}");
    }
    // `get all`: what was applied, and what the controllers made of it
    // (the Deployment's ReplicaSets and their pods).
    let all = kubectl_ok(&m, &["get", "all", "-n", "shop", "-o", "name"], None);
    let names: Vec<&str> = all.lines().collect();
    assert!(
        names.contains(&"deployment.apps/web") && names.contains(&"service/web"),
        "{all}"
    );
    assert!(
        names.iter().all(|n| [
            "pod/web-",
            "service/web",
            "deployment.apps/web",
            "replicaset.apps/web-",
            "deployment.apps/zero",
            "replicaset.apps/zero-"
        ]
        .iter()
        .any(|p| n.starts_with(p))),
        "{all}"
    );
    let by_label = kubectl_ok(
        &m,
        &["get", "deploy", "-A", "-l", "app=web", "-o", "name"],
        None,
    );
    assert_eq!(by_label.trim(), "deployment.apps/web");
    assert_eq!(
        kubectl_ok(
            &m,
            &["get", "deploy", "-A", "-l", "app=nope", "-o", "name"],
            None
        )
        .trim(),
        ""
    );

    // describe works on what we serve
    let d = kubectl_ok(&m, &["describe", "deployment", "web", "-n", "shop"], None);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("Replicas:"),
        "{d}"
    );

    // scale
    assert!(
        kubectl_ok(
            &m,
            &["scale", "deploy", "web", "-n", "shop", "--replicas=5"],
            None
        )
        .contains("scaled")
    );
    assert_eq!(
        kubectl_ok(
            &m,
            &[
                "get",
                "deploy",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.replicas}"
            ],
            None
        ),
        "5"
    );

    // edit-like patches
    kubectl_ok(
        &m,
        &["label", "deploy", "web", "-n", "shop", "tier=front"],
        None,
    );
    kubectl_ok(
        &m,
        &["annotate", "cm", "settings", "-n", "shop", "note=hi"],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            "shop",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/data/size","value":"xl"}]"#,
        ],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            "shop",
            "--type=merge",
            "-p",
            r#"{"data":{"color":null}}"#,
        ],
        None,
    );
    assert_eq!(
        kubectl_ok(
            &m,
            &[
                "get",
                "cm",
                "settings",
                "-n",
                "shop",
                "-o",
                "jsonpath={.data}"
            ],
            None
        ),
        r#"{"size":"xl"}"#
    );

    // watch: see a new object appear
    let mut w = Command::new("kubectl")
        .env("KUBECONFIG", m.kubeconfig())
        .env("HOME", m.dir.join("home"))
        .args(["get", "configmaps", "-n", "shop", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kubectl_ok(
        &m,
        &[
            "create",
            "configmap",
            "late",
            "-n",
            "shop",
            "--from-literal=a=b",
        ],
        None,
    );
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("late ")) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    let _ = w.kill();
    let _ = w.wait();
    assert!(seen.iter().any(|l| l.starts_with("settings ")), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("late ")), "{seen:?}");

    // delete waits and the object is gone
    assert!(
        kubectl_ok(&m, &["delete", "cm", "late", "-n", "shop"], None)
            .contains("configmap \"late\" deleted")
    );
    let (ok, _, err) = kubectl(&m, &["get", "cm", "late", "-n", "shop"], None);
    assert!(
        !ok && err.contains("configmaps \"late\" not found"),
        "{err}"
    );
    // Deleting the namespace first takes its contents along (as the
    // namespace controller does), so later deletes may find nothing.
    let out = kubectl_ok(&m, &["delete", "-f", "-", "--ignore-not-found"], Some(APP));
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    for _ in 0..50 {
        if !kubectl_ok(&m, &["get", "ns", "-o", "name"], None).contains("namespace/shop") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!kubectl_ok(&m, &["get", "ns", "-o", "name"], None).contains("namespace/shop"));
    assert_eq!(
        kubectl_ok(
            &m,
            &["get", "deploy,svc,cm", "-n", "shop", "-o", "name"],
            None
        )
        .trim(),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_rbac() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    assert_eq!(
        kubectl_ok(&m, &["auth", "can-i", "create", "pods"], None).trim(),
        "yes"
    );

    kubectl_ok(&m, &["create", "namespace", "team"], None);
    kubectl_ok(
        &m,
        &["create", "serviceaccount", "reader", "-n", "team"],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            "team",
            "--verb=get,list,watch",
            "--resource=pods",
        ],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "team",
            "--role=pod-reader",
            "--serviceaccount=team:reader",
        ],
        None,
    );
    let token = kubectl_ok(&m, &["create", "token", "reader", "-n", "team"], None);
    let token = token.trim();
    assert!(token.split('.').count() == 3, "{token}");

    let as_sa = |args: &[&str]| {
        let mut a = vec!["--token", token];
        a.extend_from_slice(args);
        kubectl(&m, &a, None)
    };
    let (ok, out, err) = as_sa(&["get", "pods", "-n", "team"]);
    assert!(ok, "the role allows listing pods: {err}");
    assert!(out.is_empty() || out.contains("No resources"), "{out}");
    let (ok, _, err) = as_sa(&["get", "secrets", "-n", "team"]);
    assert!(
        !ok && err.contains("Forbidden") && err.contains("cannot list resource \"secrets\""),
        "{err}"
    );
    let (ok, _, err) = as_sa(&["get", "pods", "-n", "default"]);
    assert!(!ok && err.contains("Forbidden"), "{err}");
    let (ok, out, _) = as_sa(&["auth", "can-i", "list", "pods", "-n", "team"]);
    assert!(ok && out.trim() == "yes");
    let (_, out, _) = as_sa(&["auth", "can-i", "delete", "pods", "-n", "team"]);
    assert_eq!(out.trim(), "no");
    // `--list`: what the Role grants in the namespace, and nothing more.
    let (ok, out, err) = as_sa(&["auth", "can-i", "--list", "-n", "team"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("secrets")), "{out}");
    let (ok, out, _) = as_sa(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(ok && !out.lines().any(|l| l.starts_with("pods ")), "{out}");

    // The admin may act as the account (kubectl --as); the account may not
    // act as anyone.
    let (_, out, _) = kubectl(
        &m,
        &[
            "auth",
            "can-i",
            "delete",
            "pods",
            "-n",
            "team",
            "--as=system:serviceaccount:team:reader",
        ],
        None,
    );
    assert_eq!(out.trim(), "no");
    let (_, out, _) = kubectl(
        &m,
        &[
            "auth",
            "can-i",
            "get",
            "pods",
            "-n",
            "team",
            "--as=system:serviceaccount:team:reader",
        ],
        None,
    );
    assert_eq!(out.trim(), "yes");
    let (ok, _, err) = as_sa(&["get", "pods", "-n", "team", "--as=admin"]);
    assert!(!ok && err.contains("cannot impersonate"), "{err}");

    // A bad token and no credentials at all are both 401.
    let (ok, _, err) = kubectl(&m, &["--token", "not-a-token", "get", "pods"], None);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
    // No credentials at all (kubectl would prompt for them; curl does not).
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(m.dir.join("pki/ca.crt"))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/pods",
            m.api_port
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"code\":401") && body.contains("Unauthorized"),
        "{body}"
    );

    // Deleting the account revokes its tokens.
    kubectl_ok(
        &m,
        &["delete", "serviceaccount", "reader", "-n", "team"],
        None,
    );
    let (ok, _, err) = as_sa(&["get", "pods", "-n", "team"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_get_4xx_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n",
            "spec.containers[0].image: Required value",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n",
            "spec.containers: Required value",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n    image: x\n",
            "metadata.name: Invalid value: \"Bad_Name\"",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n    ports:\n    - containerPort: 70000\n",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: x\n    imagee: y\n",
            "unknown field \"spec.containers[0].imagee\"",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: b}\n    spec:\n      containers:\n      - name: c\n        image: x\n",
            "spec.template.metadata.labels",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 0\n",
            "spec.ports[0].port",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  runtimeClassName: nope\n  containers:\n  - name: c\n    image: x\n",
            "pod rejected: RuntimeClass \"nope\" not found",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  runtimeClassName: wasm\n  nodeSelector: {skiff.dev/runtime-wasm: \"false\"}\n  containers:\n  - name: c\n    image: x\n",
            "conflict: runtimeClass.scheduling.nodeSelector[skiff.dev/runtime-wasm] = true",
        ),
        (
            "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: c\nspec:\n  schedule: \"* * * * *\"\n",
            "no matches for kind \"CronJob\" in version \"batch/v1beta1\"",
        ),
    ];
    for (manifest, want) in cases {
        let (ok, out, err) = kubectl(&m, &["apply", "-f", "-"], Some(manifest));
        assert!(!ok, "accepted:\n{manifest}\n{out}");
        assert!(
            err.contains(want),
            "for\n{manifest}\nexpected {want:?} in:\n{err}"
        );
    }
    // The server is still fine, and serves the wasm RuntimeClass it
    // created at init.
    kubectl_ok(&m, &["get", "ns", "default"], None);
    let rc = kubectl_ok(&m, &["get", "runtimeclass", "wasm"], None);
    assert!(rc.contains("wasmtime"), "{rc}");
}

fn node_port_svc(name: &str, type_: &str, node_port: Option<u16>, label: &str) -> String {
    let np = node_port
        .map(|p| format!(", nodePort: {p}"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, labels: {{v: {label}}}}}\nspec:\n  type: {type_}\n  selector: {{app: {name}}}\n  ports: [{{name: http, port: 80, targetPort: 8080{np}}}]\n"
    )
}

/// Node ports as kube-apiserver hands them out: one from 30000-32767 for
/// each port of a NodePort Service, kept across applies and replaces that
/// leave it out, never given twice, released when the Service or its type
/// lets go of it; bad requests get 422 naming `spec.ports[i].nodePort`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_are_allocated_kept_and_released() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let node_port = |name: &str| {
        let out = kubectl_ok(
            &m,
            &[
                "get",
                "svc",
                name,
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            None,
        );
        out.trim().parse::<u16>().ok()
    };
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&node_port_svc("a", "NodePort", None, "one")),
    );
    let port = node_port("a").expect("a node port");
    assert!((30_000..=32_767).contains(&port), "{port}");
    let policy = kubectl_ok(
        &m,
        &[
            "get",
            "svc",
            "a",
            "-o",
            "jsonpath={.spec.externalTrafficPolicy}/{.spec.internalTrafficPolicy}",
        ],
        None,
    );
    assert_eq!(policy, "Cluster/Cluster");

    // Applying again, and replacing, without the node port keeps it.
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&node_port_svc("a", "NodePort", None, "two")),
    );
    assert_eq!(node_port("a"), Some(port));
    kubectl_ok(
        &m,
        &["replace", "-f", "-"],
        Some(&node_port_svc("a", "NodePort", None, "three")),
    );
    assert_eq!(node_port("a"), Some(port));

    // Nobody else gets it; bad values are named.
    let refused = [
        (
            node_port_svc("b", "NodePort", Some(port), "x"),
            format!("spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated"),
        ),
        (
            node_port_svc("b", "NodePort", Some(20_000), "x"),
            "spec.ports[0].nodePort: Invalid value: 20000: provided port is not in the valid range. The range of valid ports is 30000-32767".to_string(),
        ),
        (
            node_port_svc("b", "ClusterIP", Some(31_000), "x"),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'".to_string(),
        ),
    ];
    for (manifest, want) in &refused {
        let (ok, out, err) = kubectl(&m, &["apply", "-f", "-"], Some(manifest));
        assert!(!ok, "accepted:\n{manifest}\n{out}");
        assert!(err.contains(want.as_str()), "expected {want:?} in:\n{err}");
    }
    // None of them was made, and `a` still has its port.
    let (ok, _, _) = kubectl(&m, &["get", "svc", "b"], None);
    assert!(!ok, "svc/b exists");
    assert_eq!(node_port("a"), Some(port));

    // A Service that becomes ClusterIP drops the port; another may take it.
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&node_port_svc("a", "ClusterIP", None, "four")),
    );
    assert_eq!(node_port("a"), None);
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&node_port_svc("b", "NodePort", Some(port), "x")),
    );
    assert_eq!(node_port("b"), Some(port));
    // Deleting it frees the port again.
    kubectl_ok(&m, &["delete", "svc", "b"], None);
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&node_port_svc("c", "LoadBalancer", Some(port), "x")),
    );
    assert_eq!(node_port("c"), Some(port));
}

/// `kubectl apply --server-side`: the first apply creates, applying again
/// removes what the configuration dropped, another applier changing an
/// owned field is refused with the field named unless it forces, and
/// server-side dry run stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let v1 = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ssa, labels: {team: a, drop: me}}\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: ssa}}\n  template:\n    metadata: {labels: {app: ssa}}\n    spec:\n      containers:\n      - {name: web, image: web:1, env: [{name: A, value: '1'}, {name: B, value: '2'}]}\n";
    let out = kubectl_ok(&m, &["apply", "--server-side", "-f", "-"], Some(v1));
    assert!(
        out.contains("deployment.apps/ssa serverside-applied"),
        "{out}"
    );
    let managers = kubectl_ok(
        &m,
        &[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation} {end}",
        ],
        None,
    );
    assert_eq!(managers.trim(), "kubectl:Apply");

    // Dropping a label and an env item removes them; the rest stays.
    let v2 = v1
        .replace(", drop: me", "")
        .replace(", {name: B, value: '2'}", "");
    kubectl_ok(&m, &["apply", "--server-side", "-f", "-"], Some(&v2));
    let got = kubectl_ok(
        &m,
        &[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={.metadata.labels} {.spec.template.spec.containers[0].env}",
        ],
        None,
    );
    assert_eq!(got, r#"{"team":"a"} [{"name":"A","value":"1"}]"#);

    // Another manager may not take replicas without forcing.
    let ci = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ssa}\nspec: {replicas: 1}\n";
    let (ok, _, err) = kubectl(
        &m,
        &["apply", "--server-side", "--field-manager=ci", "-f", "-"],
        Some(ci),
    );
    assert!(!ok, "a conflicting apply must fail");
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{err}"
    );
    kubectl_ok(
        &m,
        &[
            "apply",
            "--server-side",
            "--field-manager=ci",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(ci),
    );
    let (_, err) = {
        let (ok, _, err) = kubectl(&m, &["apply", "--server-side", "-f", "-"], Some(&v2));
        (ok, err)
    };
    assert!(
        err.contains(r#"conflict with "ci": .spec.replicas"#),
        "{err}"
    );

    // Dry run: the answer shows the result, the store keeps the old one.
    let dry = kubectl_ok(
        &m,
        &[
            "apply",
            "--server-side",
            "--field-manager=ci",
            "--dry-run=server",
            "-o",
            "jsonpath={.spec.replicas}",
            "-f",
            "-",
        ],
        Some(&ci.replace("replicas: 1", "replicas: 2")),
    );
    assert_eq!(dry, "2");
    let stored = kubectl_ok(
        &m,
        &["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"],
        None,
    );
    assert_eq!(stored, "1");
}

/// What an in-cluster client relies on: every namespace's `default`
/// account and `kube-root-ca.crt`, the ServiceAccount admission plugin,
/// and a token in the pod, bound to it, that the API accepts over the
/// names pods use (`kubernetes.default.svc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_a_bound_service_account_token() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let ca_file = m.dir.join("pki/ca.crt");
    kubectl_ok(&m, &["create", "namespace", "apps"], None);
    // Made with the namespace, so a pod can be created at once.
    kubectl_ok(
        &m,
        &["get", "serviceaccount", "default", "-n", "apps"],
        None,
    );
    let ca = kubectl_ok(
        &m,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "apps",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        None,
    );
    assert_eq!(ca.trim(), std::fs::read_to_string(&ca_file).unwrap().trim());
    // Deleted or changed, they are set back by the controller.
    kubectl_ok(
        &m,
        &["delete", "serviceaccount", "default", "-n", "apps"],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "apps",
            "-p",
            r#"{"data":{"ca.crt":"forged"}}"#,
        ],
        None,
    );
    wait_for("the default account and CA back", READY, || {
        let (ok, _, err) = kubectl(
            &m,
            &["get", "serviceaccount", "default", "-n", "apps"],
            None,
        );
        let (_, ca_now, _) = kubectl(
            &m,
            &[
                "get",
                "cm",
                "kube-root-ca.crt",
                "-n",
                "apps",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        );
        (ok && ca_now.trim() == ca.trim()).then_some(()).ok_or(err)
    })
    .await;

    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{extra}  containers:\n  - name: app\n    image: {}\n",
            common::wasm("hello-http.wasm")
        )
    };
    let (ok, _, err) = kubectl(
        &m,
        &["apply", "-f", "-"],
        Some(&pod("lost", "  serviceAccountName: nope\n")),
    );
    assert!(
        !ok && err.contains(
            "pods \"lost\" is forbidden: error looking up service account apps/nope: serviceaccount \"nope\" not found"
        ),
        "{err}"
    );
    // An account that opts out gets no token volume.
    kubectl_ok(
        &m,
        &["create", "serviceaccount", "quiet", "-n", "apps"],
        None,
    );
    kubectl_ok(
        &m,
        &[
            "patch",
            "sa",
            "quiet",
            "-n",
            "apps",
            "-p",
            r#"{"automountServiceAccountToken":false}"#,
        ],
        None,
    );
    let out = kubectl_ok(
        &m,
        &[
            "create",
            "-f",
            "-",
            "-o",
            "jsonpath={.spec.serviceAccountName} {.spec.volumes}",
        ],
        Some(&pod("quiet", "  serviceAccountName: quiet\n")),
    );
    assert_eq!(out.trim(), "quiet", "{out}");

    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pod("app", "")));
    let spec: serde_json::Value = serde_json::from_str(&kubectl_ok(
        &m,
        &["get", "pod", "app", "-n", "apps", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(spec["spec"]["serviceAccountName"], "default");
    let vol = spec["spec"]["volumes"][0].clone();
    let vol_name = vol["name"].as_str().unwrap().to_string();
    assert!(vol_name.starts_with("kube-api-access-"), "{vol}");
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(
        spec["spec"]["containers"][0]["volumeMounts"][0],
        serde_json::json!({"name": vol_name, "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
    );
    let uid = spec["metadata"]["uid"].as_str().unwrap().to_string();
    let node = wait_for("the pod to run", READY, || {
        let out = kubectl_ok(
            &m,
            &[
                "get",
                "pod",
                "app",
                "-n",
                "apps",
                "-o",
                "jsonpath={.status.phase} {.spec.nodeName}",
            ],
            None,
        );
        match out.trim().split_once(' ') {
            Some(("Running", node)) => Ok(node.to_string()),
            _ => Err(out),
        }
    })
    .await;
    let dir = m
        .dir
        .join("agent/pods")
        .join(&uid)
        .join("volumes")
        .join(&vol_name);
    assert_eq!(
        std::fs::read_to_string(dir.join("namespace")).unwrap(),
        "apps"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap().trim(),
        ca.trim()
    );
    let token = std::fs::read_to_string(dir.join("token")).unwrap();

    // What a pod's client does: the token, the CA, and the in-cluster
    // name, which the API's certificate must carry.
    let api = format!("https://127.0.0.1:{}", m.api_port);
    let in_pod = |token: &str, args: &[&str]| {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", "/dev/null")
            .args([
                "--server",
                &api,
                "--tls-server-name",
                "kubernetes.default.svc",
            ])
            .arg(format!("--certificate-authority={}", ca_file.display()))
            .args(["--token", token])
            .args(args);
        common::run(cmd, None)
    };
    let (ok, _, err) = in_pod(&token, &["get", "pods", "-n", "apps"]);
    assert!(
        !ok && err
            .contains("User \"system:serviceaccount:apps:default\" cannot list resource \"pods\""),
        "{err}"
    );
    kubectl_ok(
        &m,
        &[
            "create",
            "rolebinding",
            "read",
            "-n",
            "apps",
            "--clusterrole=view",
            "--serviceaccount=apps:default",
        ],
        None,
    );
    let (ok, out, err) = in_pod(&token, &["get", "pods", "-n", "apps"]);
    assert!(ok && out.contains("app "), "{out}{err}");
    let (ok, _, err) = in_pod(&token, &["get", "secrets", "-n", "apps"]);
    assert!(
        !ok && err.contains("Forbidden"),
        "view does not read secrets: {err}"
    );

    // A token for another audience is not one for the API.
    let vault = kubectl_ok(
        &m,
        &[
            "create",
            "token",
            "default",
            "-n",
            "apps",
            "--audience",
            "vault",
        ],
        None,
    );
    let (ok, _, err) = in_pod(vault.trim(), &["get", "pods", "-n", "apps"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");

    // A node gets tokens only bound to pods scheduled on it.
    let as_node = |node: &str| {
        kubectl(
            &m,
            &[
                "create",
                "token",
                "default",
                "-n",
                "apps",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                "app",
                &format!("--as=system:node:{node}"),
                "--as-group=system:nodes",
            ],
            None,
        )
    };
    let (ok, out, err) = as_node(&node);
    assert!(ok && out.trim().split('.').count() == 3, "{err}");
    let (ok, _, err) = as_node("elsewhere");
    assert!(
        !ok && err.contains("can only request tokens bound to pods scheduled on it"),
        "{err}"
    );

    // Bound to the pod: its deletion revokes the token.
    kubectl_ok(
        &m,
        &["delete", "pod", "app", "-n", "apps", "--wait=true"],
        None,
    );
    let (ok, _, err) = in_pod(&token, &["get", "pods", "-n", "apps"]);
    assert!(!ok && err.contains("Unauthorized"), "{err}");
}

/// The ingress gateway in the agent, with the real kubectl and curl: the
/// default class, host and path rules (exact, wildcard, element-wise
/// prefixes), the forwarding headers, HTTPS from a `kubernetes.io/tls`
/// Secret by SNI, 503 without endpoints, 404 without a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_routes_by_host_and_path_over_http_and_https() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let (http, https) = m.ingress_ports;
    let app = |name: &str, wasm: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: app\n        image: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{name: web, port: 80, targetPort: 8080}}]\n---\n",
            common::wasm(wasm)
        )
    };
    let cert = rcgen::generate_simple_self_signed(vec!["echo.test".to_string()]).unwrap();
    let ca = tmp.path().join("echo.crt");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let key = tmp.path().join("echo.key");
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    kubectl_ok(
        &m,
        &[
            "create",
            "secret",
            "tls",
            "echo-tls",
            "--cert",
            ca.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        None,
    );
    let ingress = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  tls: [{hosts: [echo.test], secretName: echo-tls}]
  rules:
  - host: echo.test
    http:
      paths:
      - {path: /api/, pathType: Prefix, backend: {service: {name: echo, port: {name: web}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: hello, port: {number: 80}}}}
  - host: "*.wild.test"
    http:
      paths:
      - {path: /only, pathType: Exact, backend: {service: {name: echo, port: {number: 80}}}}
"#;
    let manifests = format!(
        "{}{}{ingress}",
        app("echo", "echo-http.wasm"),
        app("hello", "hello-http.wasm")
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&manifests));
    // The DefaultIngressClass admission names the gateway's class.
    assert_eq!(
        kubectl_ok(
            &m,
            &[
                "get",
                "ingress",
                "web",
                "-o",
                "jsonpath={.spec.ingressClassName}"
            ],
            None
        ),
        "skiff"
    );
    let curl = |host: &str, path: &str| {
        let mut c = Command::new("curl");
        c.args(["-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://127.0.0.1:{http}{path}"));
        let (_, out, err) = common::run(c, None);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "000"));
        (code.to_string(), format!("{body}{err}"))
    };
    let (_, body) = wait_for("the echo app behind the gateway", READY, || {
        let (code, body) = curl("echo.test", "/api/x?q=1");
        (code == "200").then_some((code, body.clone())).ok_or(body)
    })
    .await;
    assert!(body.starts_with("GET /api/x?q=1\n"), "{body}");
    for h in [
        "authority echo.test\n",
        "header x-forwarded-host: echo.test\n",
        "header x-forwarded-proto: http\n",
        "header x-forwarded-for: 127.0.0.1\n",
        &format!("header x-forwarded-port: {http}\n"),
    ] {
        assert!(body.contains(h), "{h:?} in {body}");
    }
    wait_for("the hello app behind the gateway", READY, || {
        let (code, body) = curl("echo.test", "/apix");
        (code == "200" && body == "hello from skiff, you asked for /apix\n")
            .then_some(())
            .ok_or(format!("{code} {body}"))
    })
    .await;
    // ADDRESS: the gateway node's InternalIP, as k3s shows Traefik's.
    let node_ip = kubectl_ok(
        &m,
        &[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={.items[0].status.addresses[?(@.type=="InternalIP")].address}"#,
        ],
        None,
    );
    wait_for("the Ingress's address", READY, || {
        let ip = kubectl_ok(
            &m,
            &[
                "get",
                "ingress",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ],
            None,
        );
        (!node_ip.is_empty() && ip == node_ip)
            .then_some(())
            .ok_or(format!("{ip:?} vs {node_ip:?}"))
    })
    .await;
    // `/api/` is the element `api`: `/api` matches it too.
    assert!(curl("echo.test", "/api").1.starts_with("GET /api\n"));
    assert!(curl("a.wild.test", "/only").1.starts_with("GET /only\n"));
    for (host, path) in [
        ("a.wild.test", "/only/"),
        ("a.b.wild.test", "/only"),
        ("nobody.test", "/"),
    ] {
        assert_eq!(
            curl(host, path),
            ("404".into(), "404 page not found\n".into()),
            "{host}{path}"
        );
    }

    // HTTPS with the Secret's certificate for its host (curl checks it).
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-m",
        "5",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
    ])
    .arg(format!("echo.test:{https}:127.0.0.1"))
    .arg(format!("https://echo.test:{https}/api/tls"));
    let (ok, out, err) = common::run(c, None);
    assert!(
        ok && out.starts_with("GET /api/tls\n")
            && out.contains("header x-forwarded-proto: https\n"),
        "{out}{err}"
    );

    // No ready endpoint: 503; no Ingress: 404.
    kubectl_ok(&m, &["scale", "deploy/echo", "--replicas=0"], None);
    wait_for("503 without endpoints", READY, || {
        let (code, body) = curl("echo.test", "/api/x");
        (code == "503")
            .then_some(())
            .ok_or(format!("{code} {body}"))
    })
    .await;
    kubectl_ok(&m, &["delete", "ingress", "web"], None);
    wait_for("404 once the Ingress is gone", READY, || {
        let (code, body) = curl("echo.test", "/");
        (code == "404")
            .then_some(())
            .ok_or(format!("{code} {body}"))
    })
    .await;
}

/// A UDP Service port through the service proxy: a Service without a
/// selector whose EndpointSlice names an echo server of this test, reached
/// on its node port (and its cluster IP when the agent can add addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_service_ports_are_proxied() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from);
        }
    });
    let manifests = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: udp}}\nspec:\n  type: NodePort\n  ports: [{{name: u, port: 53, protocol: UDP, targetPort: {echo_port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: udp-1, labels: {{kubernetes.io/service-name: udp}}}}\naddressType: IPv4\nports: [{{name: u, port: {echo_port}, protocol: UDP}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&manifests));
    let node_port = kubectl_ok(
        &m,
        &[
            "get",
            "svc",
            "udp",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    );
    let cluster_ip = kubectl_ok(
        &m,
        &["get", "svc", "udp", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    );
    let ask = |addr: String| -> Result<(), String> {
        let c = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.send_to(b"ping", &addr).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 100];
        let (n, from) = c.recv_from(&mut buf).map_err(|e| format!("{addr}: {e}"))?;
        if &buf[..n] != b"echo:ping" || from.to_string() != addr {
            return Err(format!(
                "{:?} from {from}",
                String::from_utf8_lossy(&buf[..n])
            ));
        }
        Ok(())
    };
    wait_for("the node port to answer", READY, || {
        ask(format!("127.0.0.1:{node_port}"))
    })
    .await;
    if nix_root() {
        wait_for("the cluster IP to answer", READY, || {
            ask(format!("{cluster_ip}:53"))
        })
        .await;
    }
    // No endpoints: nothing answers.
    kubectl_ok(&m, &["delete", "endpointslice", "udp-1"], None);
    wait_for("the node port to go quiet", READY, || {
        match ask(format!("127.0.0.1:{node_port}")) {
            Ok(()) => Err("still answered".into()),
            Err(_) => Ok(()),
        }
    })
    .await;
}

/// A `kubectl port-forward` process, killed when dropped. Its stdout is
/// kept open: kubectl dies of SIGPIPE writing to a closed one.
struct PortForward {
    child: std::process::Child,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl PortForward {
    /// Starts `kubectl port-forward pod/NAME LOCAL:REMOTE` (over WebSocket,
    /// kubectl's default, or with `spdy` the SPDY upgrade kubectl falls
    /// back to) and waits for it to listen.
    fn start(m: &Member, pod: &str, local: u16, remote: u16, spdy: bool) -> PortForward {
        let mut child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", m.kubeconfig().display()))
            .args(["port-forward", &format!("pod/{pod}")])
            .arg(format!("{local}:{remote}"))
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if spdy { "false" } else { "true" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.starts_with("Forwarding from"), "{first}");
        PortForward {
            child,
            _stdout: out,
        }
    }

    /// What kubectl said on stderr, once it has exited (killed if not).
    fn stderr(mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        err
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl port-forward` reaches a pod's port over both of kubectl's
/// transports, one SPDY stream pair per local connection; a port nobody
/// listens on gets the kubelet's error; RBAC decides who may forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_pods_port() {
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  runtimeClassName: wasm\n  containers:\n  - name: web\n    image: {}\n    ports: [{{containerPort: 8080}}]\n",
        common::wasm("hello-http.wasm")
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pod));
    kubectl_ok(
        &m,
        &["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"],
        None,
    );
    for spdy in [false, true] {
        let local = common::free_tcp();
        let pf = PortForward::start(&m, "web", local, 8080, spdy);
        for i in 0..3 {
            let path = format!("/through-kubectl-{spdy}-{i}");
            let answer = common::http_get(&format!("127.0.0.1:{local}"), &path)
                .unwrap_or_else(|e| panic!("spdy={spdy}: {e}"));
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains(&path),
                "{answer}"
            );
        }
        drop(pf);
    }

    // Nothing listens on 9999: the connection fails, and kubectl reports
    // the error the agent sent on the stream's error channel.
    let local = common::free_tcp();
    let pf = PortForward::start(&m, "web", local, 9999, false);
    assert!(
        common::http_get(&format!("127.0.0.1:{local}"), "/").map_or(true, |a| a.is_empty()),
        "a closed port answered"
    );
    let err = pf.stderr();
    assert!(
        err.contains("error forwarding port 9999 to pod web"),
        "{err}"
    );

    // A user who may only view pods may not forward.
    kubectl_ok(&m, &["create", "serviceaccount", "viewer"], None);
    kubectl_ok(
        &m,
        &[
            "create",
            "rolebinding",
            "viewer",
            "--clusterrole=view",
            "--serviceaccount=default:viewer",
        ],
        None,
    );
    let token = kubectl_ok(&m, &["create", "token", "viewer"], None);
    let (ok, _, err) = kubectl(
        &m,
        &[
            &format!("--token={}", token.trim()),
            "port-forward",
            "pod/web",
            &format!("{}:8080", common::free_tcp()),
        ],
        None,
    );
    assert!(!ok);
    assert!(
        err.contains("cannot create resource \"pods/portforward\""),
        "{err}"
    );
}

/// A wasm guest's outgoing HTTP request to a Service's name reaches it:
/// short names through the pod's search domains, as its resolv.conf would
/// read, with the guest's own `Host` header; unknown names still fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_pods_reach_services_by_name() {
    if !nix_root() {
        eprintln!("skipped: cluster IPs need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = start(tmp.path()).await;
    let manifests = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: shop, labels: {{app: echo}}}}
spec:
  runtimeClassName: wasm
  containers: [{{name: echo, image: {echo}, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: shop}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: fetch, namespace: shop}}
spec:
  runtimeClassName: wasm
  containers: [{{name: fetch, image: {fetch}, ports: [{{containerPort: 8080}}]}}]
"#,
        echo = common::wasm("echo-http.wasm"),
        fetch = common::wasm("fetch-http.wasm"),
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&manifests));
    kubectl_ok(
        &m,
        &[
            "-n",
            "shop",
            "wait",
            "--for=condition=Ready",
            "pod/echo",
            "pod/fetch",
            "--timeout=30s",
        ],
        None,
    );
    let fetch_ip = kubectl_ok(
        &m,
        &[
            "-n",
            "shop",
            "get",
            "pod",
            "fetch",
            "-o",
            "jsonpath={.status.podIP}",
        ],
        None,
    );
    let fetch = |url: &str| common::http_get(&format!("{fetch_ip}:8080"), &format!("/?url={url}"));
    for (name, path) in [
        ("echo", "/short"),
        ("echo.shop", "/with-namespace"),
        ("echo.shop.svc.cluster.local", "/fqdn"),
        ("echo.shop.svc.cluster.local.", "/absolute"),
    ] {
        let answer = wait_for(&format!("the guest to reach http://{name}"), READY, || {
            fetch(&format!("http://{name}{path}"))
                .and_then(|a| a.contains("status 200").then_some(a.clone()).ok_or(a))
        })
        .await;
        assert!(answer.contains(&format!("GET {path}")), "{answer}");
        // The request still names the Service as the guest wrote it.
        assert!(answer.contains(&format!("authority {name}")), "{answer}");
    }
    let answer = fetch("http://no-such-service/").unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 502") && answer.contains("DnsError"),
        "{answer}"
    );
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
