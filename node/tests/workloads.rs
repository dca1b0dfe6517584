//! The workload controllers of a real `skiff server`, driven with the real
//! kubectl. The server runs without its agent, so pods are never started:
//! the test plays the kubelet, patching pod status (Running and Ready,
//! Succeeded, Failed) through `pods/status`, and creates fake Nodes for
//! the DaemonSet. Each workload has its own namespace and all run at once.

mod common;

/// The cron parser itself, for golden cases beside its unit tests.
#[allow(dead_code)]
#[path = "../src/controllers/workloads/cron.rs"]
mod cron;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Member;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use serde_json::json;
use skiff_sdk::client::{Api, Client, ListParams, Object, PatchType};

const READY: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(20);
const TRACKING: &str = "batch.kubernetes.io/job-tracking";

struct Kube {
    client: Client,
    kubeconfig: PathBuf,
    home: PathBuf,
    log: PathBuf,
}

impl Kube {
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs (scripts/test installs it)");
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .await
            .unwrap();
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args, None).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}\n{}", self.tail());
        out
    }

    async fn apply(&self, yaml: &str) {
        let (ok, out, err) = self.kubectl(&["apply", "-f", "-"], Some(yaml)).await;
        assert!(ok, "kubectl apply failed: {err}\n{out}\n{}", self.tail());
    }

    fn tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "server log tail:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn api<K: Object>(&self, ns: &str) -> Api<K> {
        Api::namespaced(&self.client, ns)
    }

    /// Polls `f` until it yields, or fails naming `what`.
    async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pods(&self, ns: &str, selector: &str) -> Vec<Pod> {
        self.api::<Pod>(ns)
            .list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Plays the kubelet: the pod runs and is ready.
    async fn mark_ready(&self, p: &Pod) {
        let now = now();
        let name = p.metadata.name.as_deref().unwrap();
        let container = &p.spec.as_ref().unwrap().containers[0];
        let status = json!({"status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "",
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }],
        }});
        self.api::<Pod>(p.metadata.namespace.as_deref().unwrap())
            .patch_status(name, PatchType::Merge, &status)
            .await
            .unwrap_or_else(|e| panic!("marking {name} ready: {e}"));
    }

    /// Plays the kubelet: the pod's container exited.
    async fn mark_finished(&self, p: &Pod, phase: &str) {
        let name = p.metadata.name.as_deref().unwrap();
        let code = if phase == "Succeeded" { 0 } else { 1 };
        let container = &p.spec.as_ref().unwrap().containers[0];
        let status = json!({"status": {
            "phase": phase,
            "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "finishedAt": now()}},
            }],
        }});
        self.api::<Pod>(p.metadata.namespace.as_deref().unwrap())
            .patch_status(name, PatchType::Merge, &status)
            .await
            .unwrap_or_else(|e| panic!("marking {name} {phase}: {e}"));
    }

    /// The events of `ns` about `name`, as (reason, message).
    async fn events(&self, ns: &str, name: &str) -> Vec<(String, String)> {
        self.api::<Event>(ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Timestamp::from_second(secs as i64).unwrap().to_string()
}

fn controller(m: &ObjectMeta) -> Option<&OwnerReference> {
    m.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

fn controlled_by(m: &ObjectMeta, uid: &str) -> bool {
    controller(m).is_some_and(|r| r.uid == uid)
}

fn uid(m: &ObjectMeta) -> String {
    m.uid.clone().unwrap()
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn image(p: &Pod) -> &str {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .as_deref()
        .unwrap_or("")
}

fn label<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.labels.as_ref()?.get(key).map(String::as_str)
}

fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A server without an agent: nothing runs, the test reports pod status.
/// Nodes the test creates have no agent either: they stay Ready for the
/// whole test.
async fn agentless(dir: &std::path::Path, name: &str) -> (Member, Kube) {
    let mut m = Member::new(dir, name);
    m.extra = ["--disable-agent", "--node-monitor-grace-period", "3600"]
        .map(String::from)
        .to_vec();
    m.start();
    m.wait_ready(READY).await;
    m.wait_api(READY).await;
    let k = Kube {
        client: Client::from_kubeconfig(&m.kubeconfig()).unwrap(),
        kubeconfig: m.kubeconfig(),
        home: m.dir.join("home"),
        log: m.dir.with_extension("log"),
    };
    (m, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_controllers() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (_m, k) = agentless(tmp.path(), "w").await;
    for ns in ["deploy", "rs", "ds", "jobs", "sts", "cron", "pdb"] {
        k.kubectl_ok(&["create", "namespace", ns]).await;
    }
    let all = async {
        tokio::join!(
            cronjob(&k),
            deployment(&k),
            replicaset(&k),
            daemonset(&k),
            jobs(&k),
            statefulset(&k),
            disruption(&k)
        )
    };
    if tokio::time::timeout(Duration::from_secs(85), all)
        .await
        .is_err()
    {
        panic!("workloads did not finish in 85 s\n{}", k.tail());
    }
    eprintln!("workload controllers: {:?}", started.elapsed());
}

const GUARDED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: guarded, namespace: pdb}
spec:
  replicas: 3
  selector:
    matchLabels: {app: guarded}
  template:
    metadata:
      labels: {app: guarded}
    spec:
      containers:
      - name: web
        image: registry.local/hello:v1
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guard, namespace: pdb}
spec:
  minAvailable: 2
  selector:
    matchLabels: {app: guarded}
"#;

/// PodDisruptionBudget: its status from the pods' readiness and its
/// controllers' scale, and the eviction subresource spending it (an
/// eviction past the budget is a 429, as kubectl drain expects).
async fn disruption(k: &Kube) {
    let ns = "pdb";
    k.apply(GUARDED).await;
    let ready = k
        .wait("3 guarded pods", WAIT, || async {
            let pods = live(k.pods(ns, "app=guarded").await);
            (pods.len() == 3).then_some(pods)
        })
        .await;
    for p in &ready {
        k.mark_ready(p).await;
    }
    let budgets = k.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(ns);
    let status = |want: (i32, i32, i32, i32)| {
        let budgets = &budgets;
        async move {
            let s = budgets.get("guard").await.ok()?.status?;
            let got = (
                s.expected_pods,
                s.current_healthy,
                s.desired_healthy,
                s.disruptions_allowed,
            );
            (got == want).then_some(s)
        }
    };
    k.wait("the budget to allow one disruption", WAIT, || {
        status((3, 3, 2, 1))
    })
    .await;
    let table = k.kubectl_ok(&["get", "pdb", "-n", ns]).await;
    assert!(
        table.contains("MIN AVAILABLE") && table.split_whitespace().any(|w| w == "N/A"),
        "{table}"
    );

    // One eviction is allowed and counted; the next one is refused.
    let evict = |pod: String| async move {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": pod, "namespace": ns}});
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
        let tmp = k.home.join(format!("{pod}-eviction.json"));
        std::fs::create_dir_all(&k.home).unwrap();
        std::fs::write(&tmp, body.to_string()).unwrap();
        k.kubectl(
            &["create", "--raw", &path, "-f", tmp.to_str().unwrap()],
            None,
        )
        .await
    };
    let first = name(&ready[0]).to_string();
    let (ok, _, err) = evict(first.clone()).await;
    assert!(ok, "the first eviction: {err}");
    let gone = k.api::<Pod>(ns).get(&first).await;
    assert!(
        gone.is_err() || gone.unwrap().metadata.deletion_timestamp.is_some(),
        "the evicted pod is being deleted"
    );
    let (ok, _, err) = evict(name(&ready[1]).to_string()).await;
    assert!(
        !ok && err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{err}"
    );
    let kept = k.api::<Pod>(ns).get(name(&ready[1])).await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());

    // The replacement becomes ready: one disruption allowed again.
    let replacement = k
        .wait("the replacement pod", WAIT, || async {
            live(k.pods(ns, "app=guarded").await)
                .into_iter()
                .find(|p| !is_ready(p))
        })
        .await;
    k.mark_ready(&replacement).await;
    k.wait("the budget to recover", WAIT, || async {
        let s = budgets.get("guard").await.ok()?.status?;
        (s.current_healthy == 3 && s.disruptions_allowed == 1).then_some(())
    })
    .await;

    // maxUnavailable counts the Deployment's scale.
    k.kubectl_ok(&[
        "patch",
        "pdb",
        "guard",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec": {"minAvailable": null, "maxUnavailable": "34%"}}"#,
    ])
    .await;
    k.wait("maxUnavailable 34% of 3", WAIT, || status((3, 3, 1, 2)))
        .await;

    // Both bounds at once are refused, naming the field.
    let (ok, _, err) = k
        .kubectl(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: both, namespace: pdb}\nspec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {app: x}}}\n",
            ),
        )
        .await;
    assert!(
        !ok && err.contains("minAvailable and maxUnavailable cannot be both set"),
        "{err}"
    );
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: deploy
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/hello:v1
"#;

/// Deployment: its ReplicaSet and pods, scaling, a rolling update within
/// maxSurge 1 / maxUnavailable 0, rollout status, history and undo.
async fn deployment(k: &Kube) {
    let ns = "deploy";
    k.apply(DEPLOYMENT).await;
    let deploys = k.api::<Deployment>(ns);
    let d = deploys.get("web").await.unwrap();
    let duid = uid(&d.metadata);
    let rs = k
        .wait(
            "the deployment's replica set and its 3 pods",
            WAIT,
            || async {
                let rss = k
                    .api::<ReplicaSet>(ns)
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items;
                let rs = rss
                    .into_iter()
                    .find(|r| controlled_by(&r.metadata, &duid))?;
                let pods = live(k.pods(ns, "app=web").await);
                let rs_uid = uid(&rs.metadata);
                (pods.len() == 3 && pods.iter().all(|p| controlled_by(&p.metadata, &rs_uid)))
                    .then_some(rs)
            },
        )
        .await;
    let owner = controller(&rs.metadata).unwrap();
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(owner.block_owner_deletion, Some(true));
    let hash = label(&rs.metadata, "pod-template-hash")
        .expect("pod-template-hash label")
        .to_string();
    let first_rs = rs.metadata.name.clone().unwrap();
    assert_eq!(first_rs, format!("web-{hash}"));
    assert_eq!(
        annotation(&rs.metadata, "deployment.kubernetes.io/revision"),
        Some("1")
    );
    for p in k.pods(ns, "app=web").await {
        assert_eq!(label(&p.metadata, "pod-template-hash"), Some(hash.as_str()));
        let r = controller(&p.metadata).unwrap();
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.block_owner_deletion),
            ("ReplicaSet", first_rs.as_str(), Some(true))
        );
        assert!(
            name(&p).starts_with(&format!("{first_rs}-")) && name(&p).len() == first_rs.len() + 6
        );
    }

    // Scale to 5, to 2, back to 3.
    for (replicas, label_) in [(5, "5"), (2, "2"), (3, "3")] {
        k.kubectl_ok(&[
            "scale",
            "-n",
            ns,
            "deployment/web",
            &format!("--replicas={label_}"),
        ])
        .await;
        k.wait(&format!("{replicas} pods"), WAIT, || async {
            let pods = live(k.pods(ns, "app=web").await);
            for p in pods.iter().filter(|p| !is_ready(p)) {
                k.mark_ready(p).await;
            }
            let d = deploys.get("web").await.ok()?;
            let s = d.status?;
            (pods.len() == replicas
                && s.available_replicas == Some(replicas as i32)
                && s.replicas == Some(replicas as i32))
            .then_some(())
        })
        .await;
    }

    // A new image: a new ReplicaSet, never fewer than 3 ready pods.
    k.kubectl_ok(&[
        "set",
        "image",
        "-n",
        ns,
        "deployment/web",
        "web=registry.local/hello:v2",
    ])
    .await;
    roll(k, "registry.local/hello:v2").await;
    let out = k
        .kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            ns,
            "deployment/web",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = k
        .api::<ReplicaSet>(ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 2, "one replica set per template");
    let second = rss
        .iter()
        .find(|r| r.metadata.name.as_deref() != Some(&first_rs))
        .unwrap();
    assert_eq!(
        annotation(&second.metadata, "deployment.kubernetes.io/revision"),
        Some("2")
    );
    let history = k
        .kubectl_ok(&["rollout", "history", "-n", ns, "deployment/web"])
        .await;
    let revisions = |h: &str| -> BTreeSet<String> {
        h.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.parse::<u32>().is_ok())
            .map(String::from)
            .collect()
    };
    assert_eq!(
        revisions(&history),
        BTreeSet::from(["1".into(), "2".into()]),
        "{history}"
    );

    // Undo: back to the first template, as revision 3.
    k.kubectl_ok(&["rollout", "undo", "-n", ns, "deployment/web"])
        .await;
    roll(k, "registry.local/hello:v1").await;
    let out = k
        .kubectl_ok(&[
            "rollout",
            "status",
            "-n",
            ns,
            "deployment/web",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = deploys.get("web").await.unwrap();
    let template = &d.spec.as_ref().unwrap().template;
    assert_eq!(
        template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.local/hello:v1")
    );
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision"),
        Some("3")
    );
    let reused = k.api::<ReplicaSet>(ns).get(&first_rs).await.unwrap();
    assert_eq!(
        annotation(&reused.metadata, "deployment.kubernetes.io/revision"),
        Some("3")
    );
    assert_eq!(
        annotation(
            &reused.metadata,
            "deployment.kubernetes.io/revision-history"
        ),
        Some("1")
    );
    assert_eq!(reused.spec.as_ref().unwrap().replicas, Some(3));
    let history = k
        .kubectl_ok(&["rollout", "history", "-n", ns, "deployment/web"])
        .await;
    assert_eq!(
        revisions(&history),
        BTreeSet::from(["2".into(), "3".into()]),
        "{history}"
    );
    let events = k.events(ns, "web").await;
    assert!(
        events.iter().any(|(r, m)| r == "ScalingReplicaSet"
            && *m == format!("Scaled up replica set {first_rs} from 0 to 3")),
        "{events:?}"
    );
}

/// Plays the kubelet through a rolling update to `image` (maxSurge 1,
/// maxUnavailable 0 of 3): marks one new pod ready at a time and checks at
/// every step that 3 pods stay ready and at most 4 exist.
async fn roll(k: &Kube, image: &str) {
    let ns = "deploy";
    let deploys = k.api::<Deployment>(ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut marked = 0;
    loop {
        let pods = live(k.pods(ns, "app=web").await);
        let ready = pods.iter().filter(|p| is_ready(p)).count();
        assert!(
            ready >= 3,
            "only {ready} ready pods during the rollout to {image}: {:?}",
            pods.iter().map(name).collect::<Vec<_>>()
        );
        assert!(
            pods.len() <= 4,
            "{} pods exceed replicas + maxSurge",
            pods.len()
        );
        let d = deploys.get("web").await.unwrap();
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(3)
            && s.replicas == Some(3)
            && s.available_replicas == Some(3)
            && pods.len() == 3
            && pods.iter().all(|p| image_of_is(p, image));
        if done {
            break;
        }
        if let Some(p) = pods.iter().find(|p| !is_ready(p) && image_of_is(p, image)) {
            k.mark_ready(p).await;
            marked += 1;
        }
        assert!(
            Instant::now() < deadline,
            "rollout to {image} not done: {s:?}\n{}",
            k.tail()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(marked, 3, "each new pod was made ready once");
}

fn image_of_is(p: &Pod, want: &str) -> bool {
    image(p) == want
}

/// ReplicaSet: adopts a matching orphan, releases a pod that stops matching.
async fn replicaset(k: &Kube) {
    let ns = "rs";
    k.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: orphan
  namespace: rs
  labels: {app: adopt}
spec:
  containers:
  - name: c
    image: registry.local/hello:v1
"#,
    )
    .await;
    k.apply(
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: adopter
  namespace: rs
spec:
  replicas: 2
  selector:
    matchLabels: {app: adopt}
  template:
    metadata:
      labels: {app: adopt}
    spec:
      containers:
      - name: c
        image: registry.local/hello:v1
"#,
    )
    .await;
    let rs = k.api::<ReplicaSet>(ns).get("adopter").await.unwrap();
    let rs_uid = uid(&rs.metadata);
    k.wait("the orphan adopted and one more pod", WAIT, || async {
        let pods = live(k.pods(ns, "app=adopt").await);
        let orphan = pods.iter().find(|p| name(p) == "orphan")?;
        (controlled_by(&orphan.metadata, &rs_uid)
            && pods.len() == 2
            && pods.iter().all(|p| controlled_by(&p.metadata, &rs_uid)))
        .then_some(())
    })
    .await;
    // Still two after a while: the adopted pod counts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live(k.pods(ns, "app=adopt").await).len(), 2);

    k.kubectl_ok(&["label", "-n", ns, "pod/orphan", "app=gone", "--overwrite"])
        .await;
    k.wait("the relabelled pod released and replaced", WAIT, || async {
        let released = k.api::<Pod>(ns).get("orphan").await.ok()?;
        let pods = live(k.pods(ns, "app=adopt").await);
        (controller(&released.metadata).is_none()
            && pods.len() == 2
            && pods.iter().all(|p| controlled_by(&p.metadata, &rs_uid)))
        .then_some(())
    })
    .await;
    let s = k
        .wait("replica set status", WAIT, || async {
            let rs = k.api::<ReplicaSet>(ns).get("adopter").await.ok()?;
            rs.status
                .filter(|s| s.replicas == 2 && s.fully_labeled_replicas == Some(2))
        })
        .await;
    assert_eq!(s.observed_generation, Some(1));
}

/// DaemonSet: one pod per eligible node, pinned by node affinity.
async fn daemonset(k: &Kube) {
    let ns = "ds";
    let nodes = Api::<Node>::all(&k.client);
    for (n, edge) in [("ds-a", true), ("ds-b", true), ("ds-c", false)] {
        let labels = if edge {
            json!({"role": "edge"})
        } else {
            json!({})
        };
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n, "labels": labels},
            // Unschedulable: the other tests' pods are not bound here.
            "spec": {"unschedulable": true},
        }))
        .unwrap();
        nodes.create(&node).await.unwrap();
        let now = now();
        let status = json!({"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }]}});
        nodes
            .patch_status(n, PatchType::Merge, &status)
            .await
            .unwrap();
    }
    k.apply(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: edge-agent
  namespace: ds
spec:
  selector:
    matchLabels: {app: edge-agent}
  template:
    metadata:
      labels: {app: edge-agent}
    spec:
      nodeSelector: {role: edge}
      containers:
      - name: agent
        image: registry.local/agent:v1
"#,
    )
    .await;
    let target = |p: &Pod| -> String {
        let a = p.spec.as_ref().unwrap().affinity.as_ref().unwrap();
        let terms = &a
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms;
        let f = &terms[0].match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (f.key.as_str(), f.operator.as_str()),
            ("metadata.name", "In")
        );
        f.values.as_ref().unwrap()[0].clone()
    };
    let pods = k
        .wait("one daemon pod on each edge node", WAIT, || async {
            let pods = live(k.pods(ns, "app=edge-agent").await);
            (pods.len() == 2).then_some(pods)
        })
        .await;
    let on: BTreeSet<String> = pods.iter().map(target).collect();
    assert_eq!(on, BTreeSet::from(["ds-a".into(), "ds-b".into()]));
    let tolerations = pods[0].spec.as_ref().unwrap().tolerations.clone().unwrap();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ] {
        assert!(
            tolerations.iter().any(|t| t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.toleration_seconds.is_none()),
            "daemon toleration {key}:{effect} missing: {tolerations:?}"
        );
    }
    assert!(label(&pods[0].metadata, "controller-revision-hash").is_some());
    // A node that gains the label gains a pod.
    k.kubectl_ok(&["label", "node", "ds-c", "role=edge"]).await;
    k.wait("a daemon pod on the relabelled node", WAIT, || async {
        let pods = live(k.pods(ns, "app=edge-agent").await);
        let on: BTreeSet<String> = pods.iter().map(target).collect();
        (pods.len() == 3 && on.len() == 3).then_some(())
    })
    .await;
    k.wait("daemon set status", WAIT, || async {
        let ds = k.api::<DaemonSet>(ns).get("edge-agent").await.ok()?;
        let s = ds.status?;
        (s.desired_number_scheduled == 3
            && s.current_number_scheduled == 3
            && s.updated_number_scheduled == Some(3))
        .then_some(())
    })
    .await;
}

fn job_yaml(name: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: jobs
spec:
{extra}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: registry.local/work:v1
"#
    )
}

/// Jobs: completions 3 / parallelism 2 completes; backoffLimit 1 fails.
async fn jobs(k: &Kube) {
    tokio::join!(job_completes(k), job_fails(k));
}

async fn job_completes(k: &Kube) {
    let ns = "jobs";
    k.apply(&job_yaml("ok", "  completions: 3\n  parallelism: 2"))
        .await;
    let job = k.api::<Job>(ns).get("ok").await.unwrap();
    let juid = uid(&job.metadata);
    let active = |pods: &[Pod]| -> Vec<Pod> {
        pods.iter()
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .cloned()
            .collect()
    };
    let first = k
        .wait("2 pods of the job", WAIT, || async {
            let pods = live(k.pods(ns, "job-name=ok").await);
            (pods.len() == 2).then_some(pods)
        })
        .await;
    for p in &first {
        let m = &p.metadata;
        assert_eq!(
            label(m, "batch.kubernetes.io/controller-uid"),
            Some(juid.as_str())
        );
        assert_eq!(label(m, "controller-uid"), Some(juid.as_str()));
        assert_eq!(label(m, "batch.kubernetes.io/job-name"), Some("ok"));
        assert!(
            m.finalizers.iter().flatten().any(|f| f == TRACKING),
            "tracking finalizer"
        );
        assert!(controlled_by(m, &juid));
    }
    k.mark_finished(&first[0], "Succeeded").await;
    let pods = k
        .wait("a third pod after one succeeded", WAIT, || async {
            let pods = live(k.pods(ns, "job-name=ok").await);
            assert!(
                active(&pods).len() <= 2,
                "more active pods than parallelism"
            );
            (pods.len() == 3).then_some(pods)
        })
        .await;
    for p in active(&pods) {
        k.mark_finished(&p, "Succeeded").await;
    }
    let s = k
        .wait("the job complete", WAIT, || async {
            let j = k.api::<Job>(ns).get("ok").await.ok()?;
            let s = j.status?;
            let complete = s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            complete.then_some(s)
        })
        .await;
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(s.active, Some(0));
    assert!(s.completion_time.is_some());
    assert!(
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
    );
    // Counted pods are let go.
    k.wait("finalizers removed", WAIT, || async {
        let pods = k.pods(ns, "job-name=ok").await;
        pods.iter()
            .all(|p| {
                !p.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == TRACKING)
            })
            .then_some(())
    })
    .await;
    let (ok, out, _) = k
        .kubectl(&["get", "job", "-n", ns, "ok", "--no-headers"], None)
        .await;
    assert!(
        ok && out.contains("Complete") && out.contains("3/3"),
        "{out}"
    );
}

async fn job_fails(k: &Kube) {
    let ns = "jobs";
    k.apply(&job_yaml("bad", "  backoffLimit: 1")).await;
    let first = k
        .wait("the failing job's pod", WAIT, || async {
            live(k.pods(ns, "job-name=bad").await).into_iter().next()
        })
        .await;
    k.mark_finished(&first, "Failed").await;
    // The replacement comes after the back-off (10 s for the first failure).
    let second = k
        .wait("a replacement pod", Duration::from_secs(25), || async {
            live(k.pods(ns, "job-name=bad").await)
                .into_iter()
                .find(|p| name(p) != name(&first))
        })
        .await;
    k.mark_finished(&second, "Failed").await;
    let s = k
        .wait("the job failed", WAIT, || async {
            let j = k.api::<Job>(ns).get("bad").await.ok()?;
            let s = j.status?;
            let failed = s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")?;
            assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
            Some(s)
        })
        .await;
    assert_eq!(s.failed, Some(2));
    assert!(
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "FailureTarget")
    );
    assert!(s.completion_time.is_none());
    assert_eq!(
        live(k.pods(ns, "job-name=bad").await).len(),
        2,
        "no third pod"
    );
}

/// StatefulSet: OrderedReady creates web-1 only once web-0 is ready.
async fn statefulset(k: &Kube) {
    let ns = "sts";
    k.apply(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  namespace: sts
spec:
  replicas: 2
  serviceName: web
  selector:
    matchLabels: {app: sts}
  template:
    metadata:
      labels: {app: sts}
    spec:
      containers:
      - name: web
        image: registry.local/hello:v1
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#,
    )
    .await;
    let pods = k.api::<Pod>(ns);
    let web0 = k
        .wait("web-0", WAIT, || async {
            pods.get_opt("web-0").await.ok().flatten()
        })
        .await;
    // While web-0 is not ready, web-1 does not appear.
    for _ in 0..10 {
        assert!(
            pods.get_opt("web-1").await.unwrap().is_none(),
            "web-1 before web-0 is ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = &web0.metadata;
    assert_eq!(
        label(m, "statefulset.kubernetes.io/pod-name"),
        Some("web-0")
    );
    assert_eq!(label(m, "apps.kubernetes.io/pod-index"), Some("0"));
    let spec = web0.spec.as_ref().unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("web-0"), Some("web"))
    );
    let claim = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "data")
        .unwrap();
    assert_eq!(
        claim.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-web-0"
    );
    assert!(
        k.api::<PersistentVolumeClaim>(ns)
            .get_opt("data-web-0")
            .await
            .unwrap()
            .is_some()
    );

    k.mark_ready(&web0).await;
    let web1 = k
        .wait("web-1 after web-0 is ready", WAIT, || async {
            pods.get_opt("web-1").await.ok().flatten()
        })
        .await;
    k.mark_ready(&web1).await;
    k.wait("stateful set status", WAIT, || async {
        let s = k.api::<StatefulSet>(ns).get("web").await.ok()?.status?;
        (s.ready_replicas == Some(2)
            && s.replicas == 2
            && s.current_revision.is_some()
            && s.current_revision == s.update_revision)
            .then_some(())
    })
    .await;
}

fn cronjob_yaml(name: &str, schedule: &str, tz: &str) -> String {
    format!(
        r#"
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
  namespace: cron
spec:
  schedule: "{schedule}"
  timeZone: "{tz}"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: tick
            image: registry.local/tick:v1
"#
    )
}

/// CronJob: a Job at the next minute; a bad schedule and an unknown time
/// zone are refused with events.
async fn cronjob(k: &Kube) {
    let ns = "cron";
    k.apply(&cronjob_yaml("tick", "* * * * *", "Etc/UTC")).await;
    k.apply(&cronjob_yaml("badsched", "61 * * * *", "")).await;
    k.apply(&cronjob_yaml("badtz", "* * * * *", "Mars/Olympus_Mons"))
        .await;
    k.wait("an InvalidSchedule event", WAIT, || async {
        k.events(ns, "badsched")
            .await
            .into_iter()
            .find(|(r, _)| r == "InvalidSchedule")
    })
    .await;
    k.wait("an UnknownTimeZone event", WAIT, || async {
        k.events(ns, "badtz")
            .await
            .into_iter()
            .find(|(r, _)| r == "UnknownTimeZone")
    })
    .await;
    let cj = k.api::<CronJob>(ns).get("tick").await.unwrap();
    let cuid = uid(&cj.metadata);
    // Up to a minute away.
    let job = k
        .wait(
            "the cron job's first job",
            Duration::from_secs(70),
            || async {
                let jobs = k
                    .api::<Job>(ns)
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items;
                jobs.into_iter().find(|j| controlled_by(&j.metadata, &cuid))
            },
        )
        .await;
    let scheduled: Timestamp = annotation(
        &job.metadata,
        "batch.kubernetes.io/cronjob-scheduled-timestamp",
    )
    .expect("scheduled timestamp")
    .parse()
    .unwrap();
    assert_eq!(scheduled.as_second() % 60, 0);
    assert_eq!(
        job.metadata.name.as_deref(),
        Some(format!("tick-{}", scheduled.as_second() / 60).as_str())
    );
    let s = k
        .wait("the cron job's status", WAIT, || async {
            let s = k.api::<CronJob>(ns).get("tick").await.ok()?.status?;
            (s.last_schedule_time.is_some() && s.active.as_ref().is_some_and(|a| !a.is_empty()))
                .then_some(s)
        })
        .await;
    assert_eq!(s.last_schedule_time.unwrap().0, scheduled);
    assert_eq!(s.active.unwrap()[0].name, job.metadata.name);
    for bad in ["badsched", "badtz"] {
        let jobs = k
            .api::<Job>(ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        assert!(!jobs.iter().any(|j| {
            j.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(bad))
        }));
    }
}

#[test]
fn cron_parser_golden_cases() {
    let cases = [
        (
            "*/10 * * * *",
            "2025-06-01T12:01:00Z",
            "2025-06-01T12:10:00Z",
        ),
        (
            "0 */6 * * *",
            "2025-06-01T12:01:00Z",
            "2025-06-01T18:00:00Z",
        ),
        (
            "15 8 * * 1-5",
            "2025-06-06T09:00:00Z",
            "2025-06-09T08:15:00Z",
        ),
        (
            "0 0 1,15 * *",
            "2025-06-02T00:00:00Z",
            "2025-06-15T00:00:00Z",
        ),
        (
            "0 0 * JUN-AUG SUN",
            "2025-08-31T00:00:00Z",
            "2026-06-07T00:00:00Z",
        ),
        ("@hourly", "2025-06-01T12:00:00Z", "2025-06-01T13:00:00Z"),
        ("@weekly", "2025-06-01T12:00:00Z", "2025-06-08T00:00:00Z"),
        ("@every 45s", "2025-06-01T12:00:00Z", "2025-06-01T12:00:45Z"),
    ];
    for (spec, after, want) in cases {
        let s = cron::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let got = s.next(after.parse().unwrap(), &TimeZone::UTC).unwrap();
        assert_eq!(got.to_string(), want, "{spec} after {after}");
    }
    for bad in [
        "* * *",
        "0 25 * * *",
        "@sometimes",
        "*/0 * * * *",
        "0 0 ? * MON-FUNDAY",
    ] {
        assert!(cron::parse(bad).is_err(), "{bad} parsed");
    }
}

/// Two fake nodes that run containers, each filled by a pod; a budget
/// protects the one on the node whose name sorts first.
const CROWDED: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: crowded-a
  labels: {kubernetes.io/hostname: crowded-a, kubernetes.io/os: linux, skiff.dev/runtime-oci: "true"}
---
apiVersion: v1
kind: Node
metadata:
  name: crowded-b
  labels: {kubernetes.io/hostname: crowded-b, kubernetes.io/os: linux, skiff.dev/runtime-oci: "true"}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: crowd, labels: {app: db}}
spec:
  nodeName: crowded-a
  containers:
  - {name: c, image: example.com/db:1, resources: {requests: {cpu: "2"}}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: crowd, labels: {app: web}}
spec:
  nodeName: crowded-b
  containers:
  - {name: c, image: example.com/web:1, resources: {requests: {cpu: "2"}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db, namespace: crowd}
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: db}
"#;

/// PriorityClasses as Kubernetes has them (the system classes, the
/// Priority admission, one global default), and preemption sparing the
/// pods a PodDisruptionBudget protects when another node's pods can make
/// room: without the budget, the tie between the two nodes goes to the
/// first by name, and `db` would be the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes_and_preemption_around_budgets() {
    let tmp = tempfile::tempdir().unwrap();
    let (_m, k) = agentless(tmp.path(), "pre").await;
    let refused =
        |args: &'static [&'static str], stdin: Option<&'static str>, why: &'static str| {
            let k = &k;
            async move {
                let (ok, _, err) = k.kubectl(args, stdin).await;
                assert!(!ok && err.contains(why), "kubectl {args:?}: {err}");
            }
        };

    // The classes: the system ones, a user's (kubectl sends protobuf).
    let table = k.kubectl_ok(&["get", "priorityclasses"]).await;
    for want in [
        "GLOBAL-DEFAULT",
        "system-node-critical",
        "2000001000",
        "system-cluster-critical",
    ] {
        assert!(table.contains(want), "{table}");
    }
    k.kubectl_ok(&["create", "priorityclass", "urgent", "--value=1000"])
        .await;
    refused(
        &["create", "priorityclass", "greedy", "--value=1000000001"],
        None,
        "maximum allowed value of a user defined priority is 1000000000",
    )
    .await;
    refused(
        &["create", "priorityclass", "system-mine", "--value=1"],
        None,
        "reserved for system use only",
    )
    .await;
    refused(
        &["delete", "priorityclass", "system-node-critical"],
        None,
        "this is a system priority class and cannot be deleted",
    )
    .await;
    refused(
        &["patch", "priorityclass", "urgent", "-p", r#"{"value": 7}"#],
        None,
        "may not be changed in an update",
    )
    .await;

    // Pods: the class decides the priority, never the pod's author.
    k.kubectl_ok(&["create", "namespace", "crowd"]).await;
    refused(
        &["apply", "-f", "-"],
        Some("{apiVersion: v1, kind: Pod, metadata: {name: sneaky, namespace: crowd}, spec: {priority: 5, containers: [{name: c, image: x}]}}"),
        "the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 0",
    )
    .await;
    refused(
        &["apply", "-f", "-"],
        Some("{apiVersion: v1, kind: Pod, metadata: {name: lost, namespace: crowd}, spec: {priorityClassName: nope, containers: [{name: c, image: x}]}}"),
        "no PriorityClass with name nope was found",
    )
    .await;

    k.apply(CROWDED).await;
    let pods = k.api::<Pod>("crowd");
    let db = pods.get("db").await.unwrap();
    let spec = db.spec.as_ref().unwrap();
    assert_eq!(
        (spec.priority, spec.preemption_policy.as_deref()),
        (Some(0), Some("PreemptLowerPriority"))
    );
    let room = json!({"cpu": "2", "memory": "4Gi", "pods": "110"});
    for node in ["crowded-a", "crowded-b"] {
        let status = json!({"status": {"capacity": room, "allocatable": room, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
        k.kubectl_ok(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .await;
    }
    // db is not Ready (nothing runs it), so the budget allows no disruption.
    let budgets = k.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>("crowd");
    k.wait("the budget's status", WAIT, || async {
        let s = budgets.get("db").await.ok()?.status?;
        (s.expected_pods == 1 && s.disruptions_allowed == 0).then_some(())
    })
    .await;

    let urgent = "{apiVersion: v1, kind: Pod, metadata: {name: urgent, namespace: crowd}, spec: {priorityClassName: urgent, containers: [{name: c, image: example.com/urgent:1, resources: {requests: {cpu: '1'}}}]}}";
    k.apply(urgent).await;
    let nominated = k
        .wait("urgent to be nominated", WAIT, || async {
            let p = pods.get("urgent").await.ok()?;
            assert_eq!(p.spec.as_ref()?.priority, Some(1000));
            p.status?.nominated_node_name
        })
        .await;
    assert_eq!(nominated, "crowded-b");
    // web is the victim: gone, or going with the reason on it.
    if let Ok(web) = pods.get("web").await {
        assert!(web.metadata.deletion_timestamp.is_some(), "{web:?}");
        let marked = web
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.reason.as_deref() == Some("PreemptionByScheduler")
            });
        assert!(marked, "{web:?}");
    }
    let db = pods.get("db").await.unwrap();
    assert!(db.metadata.deletion_timestamp.is_none(), "db is spared");
    let events = k.events("crowd", "web").await;
    assert!(
        events
            .iter()
            .any(|(reason, message)| reason == "Preempted" && message.contains("crowded-b")),
        "{events:?}"
    );

    // A pod's spec is fixed but for what Kubernetes lets change.
    k.kubectl_ok(&["label", "pod", "db", "-n", "crowd", "tier=data"])
        .await;
    k.kubectl_ok(&[
        "set",
        "image",
        "pod/db",
        "-n",
        "crowd",
        "c=example.com/db:2",
    ])
    .await;
    refused(
        &[
            "patch", "pod", "db", "-n", "crowd", "--type=json", "-p",
            r#"[{"op": "replace", "path": "/spec/containers/0/resources/requests/cpu", "value": "1"}]"#,
        ],
        None,
        "pod updates may not change fields other than `spec.containers[*].image`",
    )
    .await;

    // The deadline may be set, then brought forward, never put off.
    for secs in ["600", "300"] {
        let deadline = format!(r#"{{"spec": {{"activeDeadlineSeconds": {secs}}}}}"#);
        k.kubectl_ok(&[
            "patch",
            "pod",
            "db",
            "-n",
            "crowd",
            "--type=merge",
            "-p",
            &deadline,
        ])
        .await;
    }
    refused(
        &[
            "patch", "pod", "db", "-n", "crowd", "--type=merge", "-p",
            r#"{"spec": {"activeDeadlineSeconds": 400}}"#,
        ],
        None,
        "spec.activeDeadlineSeconds: Invalid value: 400: must be less than or equal to previous value",
    )
    .await;

    // Ephemeral containers (kubectl debug) come through their own
    // subresource: not on create, not in a template, and once added they
    // stay as they are.
    refused(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: early, namespace: crowd}\nspec:\n  \
             containers: [{name: c, image: example.com/a:1}]\n  \
             ephemeralContainers: [{name: d, image: example.com/tools:1}]\n",
        ),
        "spec.ephemeralContainers: Forbidden: cannot be set on create",
    )
    .await;
    k.kubectl_ok(&[
        "debug",
        "db",
        "-n",
        "crowd",
        "--image=example.com/tools:1",
        "--container=dbg",
        "--target=c",
        "--profile=general",
        "--",
        "true",
    ])
    .await;
    let db = pods.get("db").await.unwrap();
    let added = db.spec.unwrap().ephemeral_containers.unwrap_or_default();
    assert_eq!(
        added
            .iter()
            .map(|e| (e.name.as_str(), e.target_container_name.as_deref()))
            .collect::<Vec<_>>(),
        [("dbg", Some("c"))]
    );
    refused(
        &[
            "patch",
            "pod",
            "db",
            "-n",
            "crowd",
            "--subresource=ephemeralcontainers",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "x:2"}]"#,
        ],
        None,
        "existing ephemeral containers \"dbg\" may not be changed",
    )
    .await;
    refused(
        &[
            "patch", "pod", "db", "-n", "crowd", "--subresource=ephemeralcontainers",
            "--type=strategic", "-p",
            r#"{"spec": {"ephemeralContainers": [{"name": "p", "image": "x:1", "ports": [{"containerPort": 80}]}]}}"#,
        ],
        None,
        "ports: Forbidden: cannot be set for an Ephemeral Container",
    )
    .await;

    // A claim's spec is fixed once made (no provisioner here can resize).
    let (ok, _, err) = k
        .kubectl(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: keep, namespace: crowd}\n\
                 spec: {storageClassName: manual, accessModes: [ReadWriteOnce], \
                 resources: {requests: {storage: 1Gi}}}\n",
            ),
        )
        .await;
    assert!(ok, "{err}");
    refused(
        &[
            "patch",
            "pvc",
            "keep",
            "-n",
            "crowd",
            "--type=merge",
            "-p",
            r#"{"spec": {"resources": {"requests": {"storage": "2Gi"}}}}"#,
        ],
        None,
        "only dynamically provisioned pvc can be resized",
    )
    .await;
    refused(
        &[
            "patch",
            "pvc",
            "keep",
            "-n",
            "crowd",
            "--type=merge",
            "-p",
            r#"{"spec": {"accessModes": ["ReadWriteMany"]}}"#,
        ],
        None,
        "spec: Forbidden: spec is immutable after creation",
    )
    .await;

    // kubectl drain cordons the node, then evicts through the budget,
    // which still allows nothing once db runs (a Pending pod, as in
    // Kubernetes, is evicted whatever its budget): db stays, and drain
    // gives up at its timeout.
    k.kubectl_ok(&[
        "patch",
        "pod",
        "db",
        "-n",
        "crowd",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"phase": "Running"}}"#,
    ])
    .await;
    let (ok, out, err) = k
        .kubectl(&["drain", "crowded-a", "--force", "--timeout=4s"], None)
        .await;
    assert!(
        !ok && err.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{out}\n{err}"
    );
    let node = Api::<Node>::all(&k.client).get("crowded-a").await.unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true), "cordoned");
    let db = pods.get("db").await.unwrap();
    assert!(
        db.metadata.deletion_timestamp.is_none(),
        "db is not evicted"
    );

    // One global default, which pods naming no class get.
    k.kubectl_ok(&[
        "create",
        "priorityclass",
        "usual",
        "--value=10",
        "--global-default",
    ])
    .await;
    refused(
        &[
            "create",
            "priorityclass",
            "other",
            "--value=20",
            "--global-default",
        ],
        None,
        "PriorityClass usual is already marked as default. Only one default can exist",
    )
    .await;
    k.apply("{apiVersion: v1, kind: Pod, metadata: {name: plain, namespace: crowd}, spec: {containers: [{name: c, image: x}]}}")
        .await;
    let plain = pods.get("plain").await.unwrap();
    let spec = plain.spec.as_ref().unwrap();
    assert_eq!(
        (spec.priority_class_name.as_deref(), spec.priority),
        (Some("usual"), Some(10))
    );
}
