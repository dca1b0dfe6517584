//! The node agent against a real `skiff server` (whose agent runs the pods)
//! and the real kubectl. Pods are bound with `spec.nodeName`, as the kubelet
//! runs them without a scheduler. The node registers Ready with its labels;
//! an HTTP handler runs, turns Ready and answers on its pod IP; a job
//! completes; a crashing container backs off; a failing liveness probe
//! restarts its container; a pod for another runtime is rejected; a server
//! restart brings the running pod back; `kubectl delete` stops and removes
//! a pod.

mod common;

use std::time::{Duration, Instant};

use common::{Member, http_get, kubectl, kubectl_ok, wait_for, wasm};
use serde_json::{Value, json};

const NODE: &str = "agent-test";
/// A pod IP block no node name hashes to (those are 1..=250), so that other
/// tests' pods never share an address with these.
const BLOCK: &str = "252";

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

fn pod(m: &Member, name: &str) -> Result<Value, String> {
    get(m, &["pod", name])
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map_or(&Value::Null, |c| &c["status"])
}

/// A one-line summary of a pod for failure messages.
fn brief(p: &Value) -> String {
    let s = &p["status"];
    format!(
        "phase={} reason={} ip={} containers={}",
        s["phase"], s["reason"], s["podIP"], s["containerStatuses"]
    )
}

fn wasm_pod(name: &str, restart: &str, container: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "runtimeClassName": "wasm",
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    })
}

/// Waits until pod `name` is Running and Ready; returns it.
async fn running_and_ready(m: &Member, name: &str, timeout: Duration) -> Value {
    wait_for(&format!("{name} Running and Ready"), timeout, || {
        let p = pod(m, name)?;
        if p["status"]["phase"] == "Running" && condition(&p, "Ready") == "True" {
            Ok(p)
        } else {
            Err(brief(&p))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_pods_through_their_lives() {
    let t0 = Instant::now();
    let (hello, job, misbehave) = (
        wasm("hello-http.wasm"),
        wasm("job.wasm"),
        wasm("misbehave-http.wasm"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "agent");
    m.extra = ["--node-name", NODE, "--node-label", "skiff.dev/test=agent"]
        .map(String::from)
        .to_vec();
    // A one-second first back-off keeps the crash loop quick; the
    // Kubernetes default is 10 s.
    // A wasm-only node (no runc), whatever this host could do.
    let env = [
        ("SKIFF_AGENT_INITIAL_BACKOFF", "1s"),
        ("SKIFF_AGENT_POD_IP_BLOCK", BLOCK),
        ("SKIFF_AGENT_CONTAINERS", "false"),
    ];
    m.start_with_env(&env);
    m.wait_api(Duration::from_secs(30)).await;

    // The node registers Ready, with the well-known and the runtime labels.
    let node = wait_for("the node to be Ready", Duration::from_secs(20), || {
        let n = get(&m, &["node", NODE])?;
        if condition(&n, "Ready") == "True" {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    })
    .await;
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["skiff.dev/runtime-wasm"], "true", "{labels}");
    assert_eq!(labels["kubernetes.io/hostname"], NODE, "{labels}");
    assert_eq!(labels["kubernetes.io/os"], "linux", "{labels}");
    assert_eq!(labels["skiff.dev/test"], "agent", "{labels}");
    assert!(labels.get("skiff.dev/runtime-oci").is_none(), "{labels}");
    assert_eq!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"],
        "wasmtime://48"
    );
    assert_eq!(node["status"]["allocatable"]["pods"], "110");
    let lease = get(&m, &["lease", "-n", "kube-node-lease", NODE]).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], NODE, "{lease}");

    let pods = json!({"apiVersion": "v1", "kind": "List", "items": [
        wasm_pod("web", "Always", json!({
            "name": "web", "image": hello,
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        })),
        wasm_pod("job", "Never", json!({
            "name": "job", "image": format!("file://{job}"), "args": ["echo", "job ran"],
        })),
        wasm_pod("crash", "Always", json!({
            "name": "crash", "image": job, "args": ["exit", "3"],
        })),
        wasm_pod("sick", "Always", json!({
            "name": "sick", "image": misbehave,
            "livenessProbe": {"httpGet": {"path": "/trap", "port": 8080},
                "periodSeconds": 1, "failureThreshold": 1},
        })),
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "oci", "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]},
        },
    ]});
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pods.to_string()));

    // An HTTP handler: Running, Ready, answering on its pod IP.
    let web = running_and_ready(&m, "web", Duration::from_secs(30)).await;
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&format!("127.42.{BLOCK}.")), "{ip}");
    assert_eq!(web["status"]["podIPs"][0]["ip"], ip.as_str());
    let c = &web["status"]["containerStatuses"][0];
    assert!(
        c["containerID"].as_str().unwrap().starts_with("wasm://"),
        "{c}"
    );
    assert!(c["imageID"].as_str().unwrap().starts_with("sha256:"), "{c}");
    assert_eq!((&c["ready"], &c["started"]), (&json!(true), &json!(true)));
    let answer = http_get(&format!("{ip}:8080"), "/from-the-test").unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("you asked for /from-the-test"),
        "{answer}"
    );

    // A command runs to completion.
    let done = wait_for("job Succeeded", Duration::from_secs(30), || {
        let p = pod(&m, "job")?;
        if p["status"]["phase"] == "Succeeded" {
            Ok(p)
        } else {
            Err(brief(&p))
        }
    })
    .await;
    let t = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        (&t["exitCode"], &t["reason"]),
        (&json!(0), &json!("Completed")),
        "{t}"
    );

    // kubectl exec into a wasm command: a new instance of its module with
    // the command as its arguments; -i is refused with a reason.
    let ticker = wasm_pod(
        "ticker",
        "Always",
        json!({
            "name": "ticker", "image": job, "args": ["ticks", "0", "500"],
        }),
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&ticker.to_string()));
    wait_for("ticker Running", Duration::from_secs(30), || {
        let p = pod(&m, "ticker")?;
        if p["status"]["phase"] == "Running" {
            Ok(())
        } else {
            Err(brief(&p))
        }
    })
    .await;
    let (ok, out, err) = kubectl(
        &m,
        &[
            "exec",
            "ticker",
            "--",
            "job",
            "echo",
            "from exec",
            "stderr",
            "oops",
            "exit",
            "4",
        ],
        None,
    );
    assert!(!ok, "{out}{err}");
    assert_eq!(out, "from exec\nexiting with 4\n");
    assert!(
        err.contains("oops") && err.contains("command terminated with exit code 4"),
        "{err}"
    );
    let (ok, _, err) = kubectl(&m, &["exec", "-i", "ticker", "--", "job"], None);
    assert!(
        !ok && err.contains("without standard input or a terminal"),
        "{err}"
    );
    let (ok, _, err) = kubectl(&m, &["exec", "web", "--", "x"], None);
    assert!(!ok && err.contains("no command entry point"), "{err}");
    kubectl_ok(&m, &["delete", "pod", "ticker"], None);

    // A container that keeps failing backs off.
    wait_for("crash in CrashLoopBackOff", Duration::from_secs(30), || {
        let p = pod(&m, "crash")?;
        let c = &p["status"]["containerStatuses"][0];
        let waiting = &c["state"]["waiting"];
        let ok = c["restartCount"].as_i64() >= Some(2)
            && waiting["reason"] == "CrashLoopBackOff"
            && waiting["message"]
                .as_str()
                .is_some_and(|m| m.contains("restarting failed container=crash pod=crash_default"))
            && c["lastState"]["terminated"]["exitCode"] == 3
            && p["status"]["phase"] == "Running";
        if ok { Ok(()) } else { Err(brief(&p)) }
    })
    .await;

    // A failing liveness probe restarts its container, and says why.
    wait_for(
        "sick restarted by its liveness probe",
        Duration::from_secs(30),
        || {
            let p = pod(&m, "sick")?;
            let restarts = p["status"]["containerStatuses"][0]["restartCount"].as_i64();
            if restarts >= Some(1) {
                Ok(())
            } else {
                Err(brief(&p))
            }
        },
    )
    .await;
    let events = get(&m, &["events", "-n", "default"]).unwrap();
    let said = |reason: &str, pod: &str, text: &str| {
        events["items"].as_array().unwrap().iter().any(|e| {
            e["reason"] == reason
                && e["involvedObject"]["name"] == pod
                && e["message"].as_str().is_some_and(|m| m.contains(text))
        })
    };
    assert!(
        said(
            "Unhealthy",
            "sick",
            "Liveness probe failed: HTTP probe failed with statuscode: 500"
        ),
        "{events}"
    );
    assert!(said("Killing", "sick", "failed liveness probe"), "{events}");
    assert!(said("Started", "web", "Started container web"), "{events}");
    assert!(said("Pulled", "web", "hello-http.wasm"), "{events}");
    assert!(
        said(
            "BackOff",
            "crash",
            "Back-off restarting failed container crash"
        ),
        "{events}"
    );

    // A pod for a runtime this node lacks is rejected, saying so.
    let oci = wait_for("oci rejected", Duration::from_secs(10), || {
        let p = pod(&m, "oci")?;
        if p["status"]["phase"] == "Failed" {
            Ok(p)
        } else {
            Err(brief(&p))
        }
    })
    .await;
    assert_eq!(
        oci["status"]["reason"],
        "UnsupportedRuntime",
        "{}",
        brief(&oci)
    );

    // The agent restarts with the server: the running pod comes back on
    // the same address, its earlier run ended Unknown; the finished job
    // is not run again.
    let restarts = c["restartCount"].as_i64().unwrap();
    m.kill9();
    m.start_with_env(&env);
    m.wait_api(Duration::from_secs(30)).await;
    let web = wait_for(
        "web back after the restart",
        Duration::from_secs(30),
        || {
            let p = pod(&m, "web")?;
            let c = &p["status"]["containerStatuses"][0];
            let back = p["status"]["phase"] == "Running"
                && condition(&p, "Ready") == "True"
                && c["restartCount"].as_i64() == Some(restarts + 1);
            if back { Ok(p) } else { Err(brief(&p)) }
        },
    )
    .await;
    let last = &web["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(
        (&last["reason"], &last["exitCode"]),
        (&json!("Unknown"), &json!(255)),
        "{last}"
    );
    assert_eq!(web["status"]["podIP"], ip.as_str());
    let answer = http_get(&format!("{ip}:8080"), "/again").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let job_after = pod(&m, "job").unwrap();
    assert_eq!(job_after["status"]["phase"], "Succeeded");
    assert_eq!(
        job_after["status"]["containerStatuses"][0]["restartCount"],
        0
    );

    // kubectl delete: the agent stops the pod and removes it.
    kubectl_ok(&m, &["delete", "pod", "web", "--timeout=30s"], None);
    let (ok, _, err) = kubectl(&m, &["get", "pod", "web"], None);
    assert!(!ok && err.contains("NotFound"), "{err}");
    assert!(
        http_get(&format!("{ip}:8080"), "/gone").is_err(),
        "the deleted pod still answers"
    );
    eprintln!("agent test took {:?}", t0.elapsed());
}
