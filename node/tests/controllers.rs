//! The garbage collector, the Endpoints/EndpointSlice controllers and the
//! node lifecycle controller, each against a real `skiff server` (without
//! an agent: the only Nodes are the test's fakes) driven with the real
//! kubectl. The three tests run in parallel, one server each.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Member, kubectl, kubectl_ok, wait_for};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

async fn server(tmp: &Path, name: &str) -> Member {
    let mut m = Member::new(tmp, name);
    m.extra = [
        "--disable-agent",
        "--node-monitor-grace-period",
        "3",
        "--default-toleration-seconds",
        "2",
    ]
    .map(String::from)
    .to_vec();
    m.start();
    m.wait_api(Duration::from_secs(30)).await;
    m
}

/// `kubectl get ARGS -o json`; `None` when it is not found.
fn get(m: &Member, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    let (ok, out, err) = kubectl(m, &a, None);
    if !ok {
        assert!(err.contains("NotFound"), "kubectl {a:?}: {err}");
        return None;
    }
    Some(serde_json::from_str(&out).unwrap())
}

fn uid(m: &Member, args: &[&str]) -> String {
    let v = get(m, args).unwrap_or_else(|| panic!("{args:?} not found"));
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect()
}

fn now_time() -> Value {
    serde_json::to_value(Time(now())).unwrap()
}

fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Timestamp::from_nanosecond(nanos as i128).unwrap()
}

// ---------------------------------------------------------------------------
// Garbage collector

/// A ConfigMap owned by the ConfigMaps `owners` (name, uid).
fn dependent(name: &str, owners: &[(&str, &str)], finalizer: bool) -> String {
    let refs: Vec<String> = owners
        .iter()
        .map(|(n, u)| {
            format!("  - {{apiVersion: v1, kind: ConfigMap, name: {n}, uid: {u}, blockOwnerDeletion: true}}")
        })
        .collect();
    let finalizers = if finalizer {
        "  finalizers: [test.skiff.dev/hold]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{finalizers}  ownerReferences:\n{}\ndata: {{k: v}}\n---\n",
        refs.join("\n")
    )
}

fn owner_uids(m: &Member, name: &str) -> Option<Vec<String>> {
    get(m, &["cm", name]).map(|v| {
        v["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["uid"].as_str().unwrap_or_default().to_string())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_background_foreground_orphan() {
    let tmp = tempfile::tempdir().unwrap();
    let m = server(tmp.path(), "gc").await;
    for owner in ["a", "b", "f", "o"] {
        kubectl_ok(&m, &["create", "configmap", owner], None);
    }
    let (a, b, f, o) = (
        uid(&m, &["cm", "a"]),
        uid(&m, &["cm", "b"]),
        uid(&m, &["cm", "f"]),
        uid(&m, &["cm", "o"]),
    );
    let mut objects = String::new();
    objects += &dependent("a-only", &[("a", &a)], false);
    objects += &dependent("a-and-b", &[("a", &a), ("b", &b)], false);
    objects += &dependent("f-held", &[("f", &f)], true);
    objects += &dependent("f-mid", &[("f", &f)], false);
    objects += &dependent("o-kept", &[("o", &o)], false);
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&objects));
    let mid = uid(&m, &["cm", "f-mid"]);
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(&dependent("f-leaf", &[("f-mid", &mid)], false)),
    );

    // Background: the dependent of `a` alone goes; the one `b` also owns
    // stays, without its reference to `a`.
    kubectl_ok(&m, &["delete", "cm", "a"], None);
    wait_for("a's dependents to be collected", WAIT, || {
        match (owner_uids(&m, "a-only"), owner_uids(&m, "a-and-b")) {
            (None, Some(refs)) if refs == [b.clone()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Foreground: the dependents go first (f-mid in the foreground too,
    // after its own dependent); `f` waits for the one a finalizer holds.
    kubectl_ok(
        &m,
        &["delete", "cm", "f", "--cascade=foreground", "--wait=false"],
        None,
    );
    wait_for("f's free dependents to go first", WAIT, || {
        let held = get(&m, &["cm", "f-held"]);
        let owner = get(&m, &["cm", "f"]);
        let state = (
            owner_uids(&m, "f-mid").is_none(),
            owner_uids(&m, "f-leaf").is_none(),
            held.as_ref()
                .is_some_and(|h| h["metadata"]["deletionTimestamp"].is_string()),
            owner.as_ref().map(|o| {
                (
                    o["metadata"]["deletionTimestamp"].is_string(),
                    strs(&o["metadata"]["finalizers"]),
                )
            }),
        );
        match &state {
            (true, true, true, Some((true, fin))) if fin == &["foregroundDeletion"] => Ok(()),
            _ => Err(format!("{state:?}")),
        }
    })
    .await;
    kubectl_ok(
        &m,
        &[
            "patch",
            "cm",
            "f-held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    wait_for("f to go after its last dependent", WAIT, || {
        match (get(&m, &["cm", "f-held"]), get(&m, &["cm", "f"])) {
            (None, None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Orphan: `o` goes at once (kubectl waits for it); its dependent stays
    // without owners.
    kubectl_ok(
        &m,
        &["delete", "cm", "o", "--cascade=orphan", "--timeout=20s"],
        None,
    );
    assert!(get(&m, &["cm", "o"]).is_none());
    let kept = get(&m, &["cm", "o-kept"]).expect("the orphan stays");
    // (skiff keeps the emptied list as `[]`, where Kubernetes omits it.)
    assert!(
        strs(&kept["metadata"]["ownerReferences"]).is_empty(),
        "{}",
        kept["metadata"]
    );
    // And is not collected later either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(get(&m, &["cm", "o-kept"]).is_some());
    assert_eq!(owner_uids(&m, "a-and-b"), Some(vec![b]));
}

// ---------------------------------------------------------------------------
// Endpoints and EndpointSlices

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9090, targetPort: 9100}
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual}
subsets:
- addresses: [{ip: 192.0.2.10}]
  ports: [{port: 80}]
"#;

/// A pod of `web` that no scheduler places, so that only the test writes
/// its status.
fn web_pod(name: &str, held: bool) -> String {
    let finalizers = if held {
        "\n  finalizers: [test.skiff.dev/hold]"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}{finalizers}
spec:
  schedulerName: nobody
  containers:
  - name: c
    image: example.com/web:1
    ports: [{{name: http, containerPort: 8080}}]
---
"#
    )
}

fn set_pod_status(m: &Member, name: &str, ip: &str, ready: bool) {
    let patch = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    kubectl_ok(
        m,
        &[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
}

/// Endpoints `name` as "ready=[..] notReady=[..] ports=[..]" per subset.
fn endpoints_summary(m: &Member, name: &str) -> Option<String> {
    let ep = get(m, &["endpoints", name])?;
    let subsets: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let ips = |k: &str| -> Vec<String> {
                s[k].as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        format!(
                            "{}@{}",
                            a["ip"].as_str().unwrap_or(""),
                            a["targetRef"]["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            };
            let ports: Vec<String> = s["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}:{}", p["name"].as_str().unwrap_or(""), p["port"]))
                .collect();
            format!(
                "ready={:?} notReady={:?} ports={:?}",
                ips("addresses"),
                ips("notReadyAddresses"),
                ports
            )
        })
        .collect();
    Some(subsets.join("; "))
}

/// The managed slices of `service`: each endpoint as
/// "ip ready/serving/terminating pod", sorted, and the slices' ports.
fn slices_summary(m: &Member, service: &str) -> (Vec<String>, Vec<String>, Vec<Value>) {
    let list = get(
        m,
        &[
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"),
        ],
    )
    .unwrap();
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut ports = Vec::new();
    for s in &items {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            endpoints.push(format!(
                "{} {}/{}/{} {}",
                e["addresses"][0].as_str().unwrap_or(""),
                c["ready"],
                c["serving"],
                c["terminating"],
                e["targetRef"]["name"].as_str().unwrap_or("")
            ));
        }
        for p in s["ports"].as_array().into_iter().flatten() {
            ports.push(format!(
                "{}:{}",
                p["name"].as_str().unwrap_or(""),
                p["port"]
            ));
        }
    }
    endpoints.sort();
    ports.sort();
    (endpoints, ports, items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_follow_pods() {
    let tmp = tempfile::tempdir().unwrap();
    let m = server(tmp.path(), "ep").await;
    kubectl_ok(&m, &["apply", "-f", "-"], Some(SERVICES));
    let pods = web_pod("web-1", false) + &web_pod("web-2", false) + &web_pod("web-3", true);
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pods));
    set_pod_status(&m, "web-1", "10.244.0.1", true);
    set_pod_status(&m, "web-2", "10.244.0.2", false);
    set_pod_status(&m, "web-3", "10.244.0.3", true);
    let svc_uid = uid(&m, &["svc", "web"]);

    // Ready and not-ready addresses, the named target port resolved.
    let ports = r#"ports=["http:8080", "metrics:9100"]"#;
    let want = format!(
        r#"ready=["10.244.0.1@web-1", "10.244.0.3@web-3"] notReady=["10.244.0.2@web-2"] {ports}"#
    );
    wait_for("the Endpoints of web", WAIT, || {
        let got = endpoints_summary(&m, "web");
        if got.as_deref() == Some(want.as_str()) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let items = wait_for("the EndpointSlice of web", WAIT, || {
        let (eps, ports, items) = slices_summary(&m, "web");
        let want = [
            "10.244.0.1 true/true/false web-1",
            "10.244.0.2 false/false/false web-2",
            "10.244.0.3 true/true/false web-3",
        ];
        if eps == want && ports == ["http:8080", "metrics:9100"] {
            Ok(items)
        } else {
            Err(format!("{eps:?} {ports:?}"))
        }
    })
    .await;
    assert_eq!(items.len(), 1);
    let slice = &items[0];
    assert!(
        slice["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web-"),
        "{slice}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["uid"],
        svc_uid.as_str()
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["controller"], true);
    let slice_name = slice["metadata"]["name"].as_str().unwrap().to_string();
    let slice_rv = slice["metadata"]["resourceVersion"].clone();

    // A pod status change that endpoints do not show writes nothing.
    kubectl_ok(
        &m,
        &[
            "patch",
            "pod",
            "web-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"message":"unrelated"}}"#,
        ],
        None,
    );
    // web-1 turns unready.
    set_pod_status(&m, "web-1", "10.244.0.1", false);
    let want = format!(
        r#"ready=["10.244.0.3@web-3"] notReady=["10.244.0.1@web-1", "10.244.0.2@web-2"] {ports}"#
    );
    wait_for("web-1 to be not ready in Endpoints", WAIT, || {
        let got = endpoints_summary(&m, "web");
        if got.as_deref() == Some(want.as_str()) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    wait_for("web-1 to be not ready in the slice", WAIT, || {
        let (eps, _, items) = slices_summary(&m, "web");
        if eps[0] == "10.244.0.1 false/false/false web-1" {
            Ok(items)
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    // Updated in place: the same slice, written once more.
    let (_, _, items) = slices_summary(&m, "web");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], slice_name.as_str());
    assert_ne!(items[0]["metadata"]["resourceVersion"], slice_rv);

    // web-3 terminates (a finalizer holds it): out of Endpoints; in the
    // slice, serving but neither ready nor gone.
    kubectl_ok(&m, &["delete", "pod", "web-3", "--wait=false"], None);
    let want = format!(r#"ready=[] notReady=["10.244.0.1@web-1", "10.244.0.2@web-2"] {ports}"#);
    wait_for("the terminating pod to leave Endpoints", WAIT, || {
        let got = endpoints_summary(&m, "web");
        if got.as_deref() == Some(want.as_str()) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    wait_for(
        "the terminating pod to be serving, terminating",
        WAIT,
        || {
            let (eps, _, _) = slices_summary(&m, "web");
            if eps.get(2).map(String::as_str) == Some("10.244.0.3 false/true/true web-3") {
                Ok(())
            } else {
                Err(format!("{eps:?}"))
            }
        },
    )
    .await;
    kubectl_ok(
        &m,
        &[
            "patch",
            "pod",
            "web-3",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );

    // A Service without a selector keeps the Endpoints its user wrote.
    assert_eq!(
        endpoints_summary(&m, "manual").as_deref(),
        Some(r#"ready=["192.0.2.10@"] notReady=[] ports=[":80"]"#)
    );
    assert!(slices_summary(&m, "manual").2.is_empty());

    // The Service goes: so do its Endpoints and slices.
    kubectl_ok(&m, &["delete", "svc", "web"], None);
    wait_for("web's endpoints to go", WAIT, || {
        let ep = get(&m, &["endpoints", "web"]);
        let (eps, _, items) = slices_summary(&m, "web");
        if ep.is_none() && items.is_empty() {
            Ok(())
        } else {
            Err(format!("{ep:?} {eps:?}"))
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Node lifecycle

/// Renews a node's Lease every 500 ms while `on`, from a thread.
struct Renewer {
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Renewer {
    fn start(m: &Member, node: &str) -> Renewer {
        let on = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (kubeconfig, home, node) = (m.kubeconfig(), m.dir.join("home"), node.to_string());
        let (on2, stop2) = (on.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if on2.load(Ordering::SeqCst) {
                    let renew = serde_json::to_value(MicroTime(now())).unwrap();
                    let patch = serde_json::json!({"spec": {"renewTime": renew}});
                    let mut cmd = Command::new("kubectl");
                    cmd.env("KUBECONFIG", &kubeconfig)
                        .env("HOME", &home)
                        .args(["-n", "kube-node-lease", "patch", "lease", &node])
                        .args(["--type=merge", "-p", &patch.to_string()]);
                    let (ok, _, err) = common::run(cmd, None);
                    assert!(ok, "renewing the lease: {err}");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Renewer {
            on,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn node_ready(m: &Member, ready: bool) {
    let (status, reason) = if ready {
        ("True", "KubeletReady")
    } else {
        ("False", "KubeletNotReady")
    };
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": status, "reason": reason,
        "lastHeartbeatTime": now_time(), "lastTransitionTime": now_time(),
    }]}});
    kubectl_ok(
        m,
        &[
            "patch",
            "node",
            "fake-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
}

/// A pod bound to fake-1 with these tolerations (admission adds the
/// default 2 s ones for the taints none of them covers).
fn node_pod(name: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: fake-1\n  tolerations: {tolerations}\n  containers: [{{name: c, image: example.com/x:1}}]\n---\n"
    )
}

/// (Ready status, its reason, the node's taints as "key:effect").
fn node_state(m: &Member) -> (String, String, Vec<String>, Value) {
    let n = get(m, &["node", "fake-1"]).unwrap();
    let ready = n["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    let taints: Vec<String> = n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect();
    (
        ready["status"].as_str().unwrap_or("").into(),
        ready["reason"].as_str().unwrap_or("").into(),
        taints,
        n["spec"]["taints"].clone(),
    )
}

/// The eventTime of the event with `reason` on `object`, if any.
fn event_time(m: &Member, reason: &str, object: &str) -> Option<Timestamp> {
    let list = get(m, &["events", "-A"]).unwrap();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["reason"] == reason && e["involvedObject"]["name"] == object)
        .map(|e| e["eventTime"].as_str().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_are_tainted_and_their_pods_evicted() {
    let tmp = tempfile::tempdir().unwrap();
    let m = server(tmp.path(), "nl").await;
    kubectl_ok(
        &m,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Node\nmetadata: {name: fake-1, labels: {kubernetes.io/hostname: fake-1}}\n",
        ),
    );
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: fake-1, namespace: kube-node-lease}}\nspec: {{holderIdentity: fake-1, leaseDurationSeconds: 40, renewTime: {}}}\n",
        serde_json::to_value(MicroTime(now())).unwrap()
    );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&lease));
    let renewer = Renewer::start(&m, "fake-1");
    node_ready(&m, true);
    let created = Instant::now();
    let never = "[{key: node.kubernetes.io/unreachable, operator: Equal, value: never, effect: NoExecute}, {key: node.kubernetes.io/not-ready, operator: Equal, value: never, effect: NoExecute}]";
    let pods = node_pod("untolerating", never)
        + &node_pod("tolerating-2s", "[]")
        + &node_pod(
            "tolerating-forever",
            "[{operator: Exists, effect: NoExecute}]",
        );
    kubectl_ok(&m, &["apply", "-f", "-"], Some(&pods));
    let tolerations = get(&m, &["pod", "tolerating-2s"]).unwrap()["spec"]["tolerations"].clone();
    assert!(
        tolerations.to_string().contains(r#""tolerationSeconds":2"#),
        "admission adds the default toleration: {tolerations}"
    );
    kubectl_ok(
        &m,
        &[
            "patch",
            "pod",
            "tolerating-forever",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        None,
    );

    // Renewed, the node outlives its grace period (3 s) untouched.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(created.elapsed())).await;
    let (ready, _, taints, _) = node_state(&m);
    assert_eq!((ready.as_str(), taints.len()), ("True", 0));

    // Silent, it goes Unknown and is tainted unreachable.
    renewer.set(false);
    let silent = Instant::now();
    let taints = wait_for("the node to be unreachable", WAIT, || {
        let s = node_state(&m);
        if s.0 == "Unknown" && s.2.len() == 2 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    assert!(
        silent.elapsed() >= Duration::from_secs(2),
        "{:?}",
        silent.elapsed()
    );
    assert_eq!(taints.1, "NodeStatusUnknown");
    assert_eq!(
        taints.2,
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute"
        ]
    );
    assert!(taints.3[1]["timeAdded"].is_string(), "{}", taints.3);

    // The pod that tolerates nothing goes at once, the one tolerating 2 s
    // two seconds later, the other stays (marked not Ready).
    wait_for("the untolerating pod to be evicted", WAIT, || {
        match get(&m, &["pod", "untolerating"]) {
            None => Ok(()),
            Some(p) => Err(p["metadata"].to_string()),
        }
    })
    .await;
    wait_for("the 2 s pod to be evicted", WAIT, || {
        match get(&m, &["pod", "tolerating-2s"]) {
            None => Ok(()),
            Some(p) => Err(p["metadata"].to_string()),
        }
    })
    .await;
    let at_once = event_time(&m, "TaintManagerEviction", "untolerating").expect("eviction event");
    let later = event_time(&m, "TaintManagerEviction", "tolerating-2s").expect("eviction event");
    let gap = (later.as_millisecond() - at_once.as_millisecond()) as f64 / 1000.0;
    assert!((1.9..4.0).contains(&gap), "evicted {gap} s apart");
    assert!(event_time(&m, "NodeNotReady", "fake-1").is_some());
    let stays = get(&m, &["pod", "tolerating-forever"]).expect("tolerated forever");
    let conditions = stays["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False"),
        "pods of an unreachable node are not ready: {conditions:?}"
    );

    // Back: renewed and Ready, the taints go.
    renewer.set(true);
    node_ready(&m, true);
    wait_for("the taints to be removed", WAIT, || {
        let s = node_state(&m);
        if s.0 == "True" && s.2.is_empty() {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;

    // A node that reports NotReady itself is tainted not-ready.
    node_ready(&m, false);
    wait_for("the not-ready taints", WAIT, || {
        let s = node_state(&m);
        if s.2
            == [
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute",
            ]
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    drop(renewer);

    // The node is deleted: its pods go with it.
    kubectl_ok(&m, &["delete", "node", "fake-1"], None);
    wait_for("the pods of the deleted node to go", WAIT, || {
        match get(&m, &["pod", "tolerating-forever"]) {
            None => Ok(()),
            Some(p) => Err(p["metadata"].to_string()),
        }
    })
    .await;
}
