//! The `skiff` client commands against a real `skiff server`, checked
//! against what the real kubectl prints and sees.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Member, kubectl, kubectl_ok};

const READY: Duration = Duration::from_secs(30);

const APP: &str = include_str!("data/shop.yaml");

/// Runs the skiff CLI with `m`'s kubeconfig in $KUBECONFIG:
/// (success, stdout, stderr).
fn skiff(m: &Member, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.env("KUBECONFIG", m.kubeconfig())
        .env("HOME", m.dir.join("home"))
        .env_remove("SKIFF_LOG")
        .args(args);
    common::run(cmd, stdin)
}

fn skiff_ok(m: &Member, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = skiff(m, args, stdin);
    assert!(ok, "skiff {args:?} failed: {err}\n{out}");
    assert!(err.is_empty(), "skiff {args:?} wrote to stderr: {err}");
    out
}

/// skiff and kubectl print the same for `args` (tried a few times: an AGE
/// or a status may change between the two runs).
fn same_as_kubectl(m: &Member, args: &[&str]) -> String {
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let k = kubectl_ok(m, args, None);
        let s = skiff_ok(m, args, None);
        if s == k {
            return s;
        }
        last = (s, k);
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "skiff {args:?} printed\n{}\nkubectl printed\n{}",
        last.0, last.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_cli_against_kubectl() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "cli");
    m.start();
    m.wait_ready(READY).await;
    m.wait_api(READY).await;
    let manifest = tmp.path().join("app.yaml");
    std::fs::write(&manifest, APP).unwrap();
    let file = manifest.to_str().unwrap();

    // apply: created, then unchanged; kubectl agrees with the annotation
    // skiff wrote (its own three-way patch is empty too).
    let out = skiff_ok(&m, &["apply", "-f", file], None);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "namespace/shop created",
            "configmap/settings created",
            "deployment.apps/web created",
            "deployment.apps/zero created",
            "service/web created",
        ]
    );
    let out = skiff_ok(&m, &["apply", "-f", file], None);
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = kubectl_ok(&m, &["apply", "-f", file], None);
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");

    // A changed configuration from stdin: configured, removed env gone,
    // the rest unchanged.
    let changed = APP
        .replace("color: blue", "color: green")
        .replace("value: blue", "value: green")
        .replace("        - name: SIZE\n          value: \"3\"\n", "");
    let out = skiff_ok(&m, &["apply", "-f", "-"], Some(&changed));
    assert!(
        out.contains("configmap/settings configured")
            && out.contains("deployment.apps/web configured")
            && out.contains("service/web unchanged")
            && out.contains("deployment.apps/zero unchanged"),
        "{out}"
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
            "jsonpath={.spec.template.spec.containers[0].env} {.spec.template.spec.containers[0].imagePullPolicy}",
        ],
        None,
    );
    assert_eq!(env, r#"[{"name":"COLOR","value":"green"}] IfNotPresent"#);
    let out = kubectl_ok(&m, &["apply", "-f", "-"], Some(&changed));
    assert!(out.lines().all(|l| l.ends_with(" unchanged")), "{out}");

    // get: the same tables as kubectl.
    same_as_kubectl(&m, &["get", "deployments", "-n", "shop"]);
    let wide = same_as_kubectl(&m, &["get", "deploy", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS") && wide.contains("app=web"),
        "{wide}"
    );
    same_as_kubectl(&m, &["get", "svc", "web", "-n", "shop"]);
    same_as_kubectl(&m, &["get", "cm", "-n", "shop", "-l", "tier=config"]);
    same_as_kubectl(&m, &["get", "namespaces"]);
    same_as_kubectl(&m, &["get", "configmaps", "-A"]);
    same_as_kubectl(&m, &["get", "deploy,svc", "-n", "shop"]);
    same_as_kubectl(&m, &["get", "deploy,svc", "-n", "shop", "-o", "name"]);
    assert_eq!(
        skiff_ok(
            &m,
            &["get", "deployment.apps/web", "-n", "shop", "-o", "name"],
            None
        ),
        "deployment.apps/web\n"
    );
    let (ok, _, err) = skiff(&m, &["get", "pods", "-n", "nothing-here"], None);
    assert!(ok);
    assert_eq!(err, "No resources found in nothing-here namespace.\n");

    // -o json / yaml
    let one: serde_json::Value = serde_json::from_str(&skiff_ok(
        &m,
        &["get", "deploy", "web", "-n", "shop", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(one["kind"], "Deployment");
    assert_eq!(one["metadata"]["name"], "web");
    let list: serde_json::Value = serde_json::from_str(&skiff_ok(
        &m,
        &["get", "cm", "-n", "shop", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(list["kind"], "List");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "ConfigMap" && i["data"]["color"] == "green"),
        "{list}"
    );
    let yaml = skiff_ok(&m, &["get", "svc", "web", "-n", "shop", "-o", "yaml"], None);
    assert!(
        yaml.contains("kind: Service") && yaml.contains("port: 80"),
        "{yaml}"
    );

    // Errors: the server's Status as kubectl prints it, exit code 1.
    let (ok, out, err) = skiff(&m, &["get", "deploy", "nope", "-n", "shop"], None);
    let (kok, _, kerr) = kubectl(&m, &["get", "deploy", "nope", "-n", "shop"], None);
    assert!(!ok && !kok && out.is_empty());
    assert_eq!(
        err,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    assert_eq!(err, kerr);
    let status = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .env("KUBECONFIG", m.kubeconfig())
        .args(["delete", "pod", "nope", "-n", "shop"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&status.stderr),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
    let (ok, _, err) = skiff(&m, &["get", "widgets"], None);
    assert!(
        !ok && err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );

    // describe: kubectl's generic layout, the same text as kubectl prints
    // for a kind it has no describer of its own for.
    same_as_kubectl(&m, &["describe", "runtimeclass", "wasm"]);
    // Any kind: every field, then the Events about the object.
    let out = skiff_ok(&m, &["describe", "deploy", "web", "-n", "shop"], None);
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for line in [
        "Name: web",
        "Namespace: shop",
        "Labels: app=web",
        "API Version: apps/v1",
        "Kind: Deployment",
        "Replicas: 2",
        "Events:",
    ] {
        assert!(lines.iter().any(|l| l == line), "{line:?} in\n{out}");
    }
    assert!(
        out.contains("ScalingReplicaSet") && !out.contains("last-applied-configuration"),
        "{out}"
    );
    let (ok, _, err) = skiff(&m, &["describe", "deploy", "nope", "-n", "shop"], None);
    assert!(!ok, "{err}");
    assert_eq!(
        err,
        "Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );

    // scale: the scale subresource, seen by kubectl.
    assert_eq!(
        skiff_ok(
            &m,
            &["scale", "deploy/web", "--replicas=3", "-n", "shop"],
            None
        ),
        "deployment.apps/web scaled\n"
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
        "3"
    );

    // rollout status: kubectl's message for a rollout that waits (no node
    // runs these pods), and a rollout that completes.
    let status = same_as_kubectl(
        &m,
        &[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "shop",
            "--watch=false",
        ],
    );
    assert!(
        status.starts_with("Waiting for deployment \"web\" rollout to finish: "),
        "{status}"
    );
    let out = skiff_ok(
        &m,
        &[
            "rollout",
            "status",
            "deployment/zero",
            "-n",
            "shop",
            "--timeout=20s",
        ],
        None,
    );
    assert_eq!(
        out.lines().last(),
        Some("deployment \"zero\" successfully rolled out"),
        "{out}"
    );
    let hist = same_as_kubectl(&m, &["rollout", "history", "deploy/web", "-n", "shop"]);
    assert!(hist.contains("\n2         <none>\n"), "{hist}");

    // delete waits until the object is gone.
    let out = skiff_ok(&m, &["delete", "deploy", "web", "-n", "shop"], None);
    assert_eq!(out, "deployment.apps \"web\" deleted\n");
    let (ok, _, err) = kubectl(&m, &["get", "deploy", "web", "-n", "shop"], None);
    assert!(!ok && err.contains("not found"), "{err}");
    // By manifest: the namespace takes the rest along, so --ignore-not-found.
    let out = skiff_ok(&m, &["delete", "-f", file, "--ignore-not-found"], None);
    assert!(out.contains("namespace \"shop\" deleted"), "{out}");
    let (ok, _, err) = kubectl(&m, &["get", "ns", "shop"], None);
    assert!(
        !ok && err.contains("not found"),
        "the namespace is gone once delete returns: {err}"
    );

    // completion scripts
    let bash = skiff_ok(&m, &["completion", "bash"], None);
    assert!(
        bash.contains("_skiff") && bash.contains("rollout"),
        "{}",
        &bash[..200.min(bash.len())]
    );

    eprintln!("cli test took {:?}", started.elapsed());
}
