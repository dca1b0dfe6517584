//! The node lifecycle controller, as kube-controller-manager's, with its
//! NoExecute taint manager and the orphan half of pod GC.
//!
//! - **Health.** A node's agent renews a Lease named after the node in
//!   `kube-node-lease`. A node whose lease (or Ready heartbeat) this
//!   controller has not seen change for `node_monitor_grace`, by its own
//!   clock as kube-controller-manager does, gets its Ready, MemoryPressure,
//!   DiskPressure and PIDPressure conditions set to `Unknown`
//!   (`NodeStatusUnknown`), a `NodeNotReady` event, and its pods marked
//!   not Ready (so that endpoints drop them).
//! - **Taints.** Ready=Unknown taints the node `node.kubernetes.io/unreachable`,
//!   Ready=False `node.kubernetes.io/not-ready`, each NoSchedule and
//!   NoExecute; Ready=True removes them.
//! - **Eviction.** A pod on a node with NoExecute taints that it does not
//!   tolerate is deleted at once; one that tolerates them for
//!   `tolerationSeconds` is deleted that long after the taint was added
//!   (its `timeAdded`, so that a new leader keeps the same deadline).
//! - **Pod GC.** Pods bound to a node that no longer exists are deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::json;
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, DeleteParams, ListParams, PatchType};
use tokio::sync::watch;

use super::Settings;
use super::events::{self, Recorder, reference};

type Result<T, E = client::Error> = std::result::Result<T, E>;

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a node named by pods must be missing before its pods are
/// deleted, unless it was seen to go (Kubernetes' pod GC: 40 s).
const POD_GC_QUARANTINE: Duration = Duration::from_secs(40);
/// The conditions that go Unknown with the node (not NetworkUnavailable,
/// which the network plugin owns).
const MONITORED: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const WORKERS: usize = 2;

/// What this controller last saw of a node's signs of life.
#[derive(Debug, Clone)]
struct Health {
    renew: Option<MicroTime>,
    heartbeat: Option<Time>,
    /// When `renew` or `heartbeat` last changed, by this clock.
    probed_at: Instant,
    /// The Ready status last seen (for events on a change).
    ready: Option<String>,
}

struct Ctx {
    client: Client,
    settings: Settings,
    nodes: Arc<Store<Node>>,
    leases: Arc<Store<Lease>>,
    pods: Arc<Store<Pod>>,
    queue: WorkQueue,
    nodes_events: Recorder,
    eviction_events: Recorder,
    health: Mutex<HashMap<String, Health>>,
    /// Nodes named by pods but never seen, and since when.
    missing: Mutex<HashMap<String, Instant>>,
}

impl Ctx {
    /// How often every node is looked at: its lease may have gone stale
    /// without any event saying so.
    fn monitor_period(&self) -> Duration {
        (self.settings.node_monitor_grace / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// Runs the controller until `stop` turns true.
pub async fn run(client: Client, settings: Settings, mut stop: watch::Receiver<bool>) {
    let nodes: Arc<Informer<Node>> = Informer::new(Api::all(&client), ListParams::default());
    let leases: Arc<Informer<Lease>> = Informer::new(
        Api::namespaced(&client, LEASE_NAMESPACE),
        ListParams::default(),
    );
    let pods: Arc<Informer<Pod>> = Informer::new(Api::all(&client), ListParams::default());
    let ctx = Arc::new(Ctx {
        nodes_events: Recorder::new(&client, "node-controller"),
        eviction_events: Recorder::new(&client, "taint-eviction-controller"),
        client,
        settings,
        nodes: nodes.store(),
        leases: leases.store(),
        pods: pods.store(),
        queue: WorkQueue::new(),
        health: Mutex::default(),
        missing: Mutex::default(),
    });
    let mut tasks = Vec::new();
    let mut node_events = nodes.subscribe();
    let c = ctx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(ev) = node_events.recv().await {
            c.queue
                .add(ev.object().metadata.name.clone().unwrap_or_default());
        }
    }));
    let mut pod_events = pods.subscribe();
    let c = ctx.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(ev) = pod_events.recv().await {
            route_pod(&c, &ev);
        }
    }));
    tasks.push(nodes.start());
    tasks.push(leases.start());
    tasks.push(pods.start());
    let synced = async {
        nodes.synced().await;
        leases.synced().await;
        pods.synced().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    tracing::info!(
        grace = ?ctx.settings.node_monitor_grace,
        // Pods get it from the API server's admission; recorded for the log.
        default_toleration_seconds = ctx.settings.default_toleration_seconds,
        "node lifecycle controller started"
    );
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(worker(ctx.clone())));
    }
    let c = ctx.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(c.monitor_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for n in c.nodes.list() {
                c.queue.add(n.metadata.name.clone().unwrap_or_default());
            }
        }
    }));
    let _ = stop.wait_for(|s| *s).await;
    ctx.queue.shut_down();
    for t in tasks {
        t.abort();
    }
    drop((nodes, leases, pods));
}

/// A pod wakes its node when the node may have something to do with it:
/// the node is gone, tainted NoExecute, or not Ready.
fn route_pod(ctx: &Ctx, ev: &Event<Pod>) {
    if matches!(ev, Event::Deleted(_)) {
        return;
    }
    let pod = ev.object();
    let Some(name) = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    else {
        return;
    };
    let wake = match ctx.nodes.get(name) {
        // A node already in its quarantine comes back when it ends: its
        // pods' events need not collect them again, one scan each.
        None => !ctx.missing.lock().contains_key(name),
        Some(node) => ready_status(&node) != Some("True") || !no_execute(&node).is_empty(),
    };
    if wake {
        ctx.queue.add(name.to_string());
    }
}

async fn worker(ctx: Arc<Ctx>) {
    let sync = |name: String| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &name).await }
    };
    super::work(
        "nodelifecycle",
        &ctx.queue,
        sync,
        client::Error::is_conflict,
    )
    .await;
}

async fn sync(ctx: &Ctx, name: &str) -> Result<Option<Duration>> {
    let Some(cached) = ctx.nodes.get(name) else {
        return collect_pods(ctx, name).await;
    };
    ctx.missing.lock().remove(name);
    let mut node = (*cached).clone();
    let api: Api<Node> = Api::all(&ctx.client);

    // Health: has the node shown a sign of life within the grace period?
    let now = Instant::now();
    let lease = ctx.leases.get(&format!("{LEASE_NAMESPACE}/{name}"));
    let renew = lease.and_then(|l| l.spec.as_ref()?.renew_time.clone());
    let heartbeat = condition(&node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
    let (probed_at, previous) = {
        let mut health = ctx.health.lock();
        let h = health.entry(name.to_string()).or_insert_with(|| Health {
            renew: renew.clone(),
            heartbeat: heartbeat.clone(),
            probed_at: now,
            ready: ready_status(&node).map(str::to_string),
        });
        if h.renew != renew || h.heartbeat != heartbeat {
            h.renew = renew;
            h.heartbeat = heartbeat;
            h.probed_at = now;
        }
        (h.probed_at, h.ready.clone())
    };
    let silent = now.duration_since(probed_at);
    if silent >= ctx.settings.node_monitor_grace && mark_unknown(&mut node, events::now()) {
        tracing::info!(node = name, silent = ?silent, "node stopped posting status");
        node = api.replace_status(&node).await?;
    }
    let ready = ready_status(&node).map(str::to_string);
    if previous.as_deref() == Some("True") && ready.as_deref() != Some("True") {
        ctx.nodes_events
            .normal(
                reference(&node),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
    }
    if let Some(h) = ctx.health.lock().get_mut(name) {
        h.ready = ready.clone();
    }

    // Taints follow Ready.
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want = taints_for(
        ready.as_deref(),
        &current,
        Time(whole_second_up(events::now())),
    );
    if want != current {
        tracing::info!(node = name, ready = ?ready, "updating node taints");
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": if want.is_empty() { json!(null) } else { json!(want) }},
        });
        node = api.patch(name, PatchType::Merge, &patch).await?;
    }

    // Its pods.
    let taints = no_execute(&node);
    let not_ready = ready.is_some() && ready.as_deref() != Some("True");
    if taints.is_empty() && !not_ready {
        return Ok(None);
    }
    let pods = ctx.pods.filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name)
            && p.metadata.deletion_timestamp.is_none()
    });
    if not_ready {
        for pod in &pods {
            mark_pod_not_ready(ctx, pod).await?;
        }
    }
    let now = events::now();
    let mut next: Option<Timestamp> = None;
    for pod in &pods {
        match eviction(pod, &taints, now) {
            Eviction::Now => evict(ctx, pod).await?,
            Eviction::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
            Eviction::Never => {}
        }
    }
    // The monitor's ticks come back soon enough for later deadlines.
    Ok(next
        .map(|t| Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64))
        .filter(|d| *d < ctx.monitor_period()))
}

/// Pod GC: deletes the pods bound to a node that does not exist (asked
/// live: the cache may trail a node's creation). A node this controller
/// saw go has its pods deleted at once; one never seen, after a quarantine.
async fn collect_pods(ctx: &Ctx, name: &str) -> Result<Option<Duration>> {
    let pods = ctx
        .pods
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name));
    if pods.is_empty() {
        ctx.health.lock().remove(name);
        ctx.missing.lock().remove(name);
        return Ok(None);
    }
    if Api::<Node>::all(&ctx.client).get_opt(name).await?.is_some() {
        return Ok(None);
    }
    let seen = ctx.health.lock().contains_key(name);
    if !seen {
        let since = *ctx
            .missing
            .lock()
            .entry(name.to_string())
            .or_insert_with(Instant::now);
        if since.elapsed() < POD_GC_QUARANTINE {
            return Ok(Some(POD_GC_QUARANTINE - since.elapsed()));
        }
    }
    for pod in &pods {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        tracing::info!(node = name, pod = %format!("{ns}/{pod_name}"), "deleting a pod of a node that is gone");
        let params = DeleteParams::background()
            .grace(0)
            .with_uid(pod.metadata.uid.clone().unwrap_or_default());
        Api::<Pod>::namespaced(&ctx.client, ns)
            .delete(pod_name, &params)
            .await?;
    }
    ctx.health.lock().remove(name);
    ctx.missing.lock().remove(name);
    Ok(None)
}

/// Kubernetes' `MarkPodsNotReady`: a pod whose node is not Ready is not
/// Ready either, whatever its agent last said.
async fn mark_pod_not_ready(ctx: &Ctx, pod: &Pod) -> Result<()> {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    if ready.is_none_or(|c| c.status == "False") {
        return Ok(());
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let patch = json!({"status": {"conditions": [{
        "type": "Ready",
        "status": "False",
        "lastTransitionTime": Time(events::now()),
    }]}});
    match Api::<Pod>::namespaced(&ctx.client, ns)
        .patch_status(name, PatchType::Strategic, &patch)
        .await
    {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map(drop),
    }
}

/// Deletes a pod that does not tolerate its node's NoExecute taints (any
/// longer). The node is not Ready, so the API server deletes it at once
/// and its controller makes a replacement elsewhere.
async fn evict(ctx: &Ctx, pod: &Pod) -> Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let api: Api<Pod> = Api::namespaced(&ctx.client, ns);
    ctx.eviction_events
        .normal(
            reference(pod),
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        )
        .await;
    let condition = json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": Time(events::now()),
    }]}});
    if let Err(e) = api
        .patch_status(name, PatchType::Strategic, &condition)
        .await
    {
        tracing::debug!(pod = %format!("{ns}/{name}"), "marking a disruption target: {e}");
    }
    tracing::info!(pod = %format!("{ns}/{name}"), "evicting: NoExecute taint not tolerated");
    let params = DeleteParams::background().with_uid(pod.metadata.uid.clone().unwrap_or_default());
    match api.delete(name, &params).await {
        Err(e) if e.is_conflict() => Ok(()), // a successor of the same name
        r => r.map(drop),
    }
}

// ---------------------------------------------------------------------------
// Decisions, as functions of data.

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect()
}

/// Sets the monitored conditions of a silent node to Unknown (adding those
/// it never posted); whether anything changed.
fn mark_unknown(node: &mut Node, now: Timestamp) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let conditions = node
        .status
        .get_or_insert_default()
        .conditions
        .get_or_insert_default();
    let mut changed = false;
    for type_ in MONITORED {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// The node's taints as its Ready status asks: not-ready for False,
/// unreachable for Unknown (each NoSchedule and NoExecute, added at
/// `now`), neither for True. A node that never posted Ready is left as is.
fn taints_for(ready: Option<&str>, current: &[Taint], now: Time) -> Vec<Taint> {
    let want = match ready {
        None => return current.to_vec(),
        Some("False") => Some(NOT_READY_TAINT),
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        Some(_) => None,
    };
    let ours = |t: &Taint| {
        (t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT)
            && (t.effect == "NoSchedule" || t.effect == "NoExecute")
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: Some(now.clone()),
                });
            }
        }
    }
    out
}

/// `t` rounded up to a whole second. A taint's `timeAdded` is stored with
/// seconds only; rounding up means no pod is evicted before its
/// `tolerationSeconds` have passed (at worst, up to a second after).
fn whole_second_up(t: Timestamp) -> Timestamp {
    let up = i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(t.as_second() + up).unwrap_or(t)
}

/// Kubernetes' `Toleration.ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    Now,
    At(Timestamp),
    Never,
}

/// When a pod must leave a node with these NoExecute taints: at once if
/// one is not tolerated; else at the earliest `timeAdded +
/// tolerationSeconds` of the toleration matching each taint; never if
/// every such toleration is unbounded.
fn eviction(pod: &Pod, taints: &[Taint], now: Timestamp) -> Eviction {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for taint in taints {
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        if let Some(secs) = t.toleration_seconds {
            let since = taint.time_added.as_ref().map_or(now, |t| t.0);
            let deadline = Timestamp::from_millisecond(
                since.as_millisecond() + secs.max(0).saturating_mul(1000),
            )
            .unwrap_or(now);
            at = Some(at.map_or(deadline, |a| a.min(deadline)));
        }
    }
    match at {
        None => Eviction::Never,
        Some(t) if t <= now => Eviction::Now,
        Some(t) => Eviction::At(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, PodSpec};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn taint(key: &str, effect: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: Some(Time(ts(added))),
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn toleration(key: &str, op: &str, value: Option<&str>, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: value.map(str::to_string),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
        }
    }

    #[test]
    fn pods_leave_when_their_tolerations_run_out() {
        let taints = [taint(UNREACHABLE_TAINT, "NoExecute", 0)];
        // Nothing tolerates it: at once.
        assert_eq!(eviction(&pod(vec![]), &taints, ts(1)), Eviction::Now);
        // A toleration for another value does not count.
        let wrong = toleration(UNREACHABLE_TAINT, "Equal", Some("x"), None);
        assert_eq!(eviction(&pod(vec![wrong]), &taints, ts(1)), Eviction::Now);
        // Tolerated for 30 s after the taint was added.
        let for30 = toleration(UNREACHABLE_TAINT, "Exists", None, Some(30));
        assert_eq!(
            eviction(&pod(vec![for30.clone()]), &taints, ts(1)),
            Eviction::At(ts(30))
        );
        assert_eq!(eviction(&pod(vec![for30]), &taints, ts(30)), Eviction::Now);
        // Tolerated forever, by key or by everything.
        let forever = toleration(UNREACHABLE_TAINT, "Exists", None, None);
        assert_eq!(
            eviction(&pod(vec![forever]), &taints, ts(99)),
            Eviction::Never
        );
        let all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(eviction(&pod(vec![all]), &taints, ts(99)), Eviction::Never);
    }

    #[test]
    fn taints_follow_ready() {
        let now = Time(ts(5));
        let user = taint("dedicated", "NoSchedule", 0);
        let unknown = taints_for(Some("Unknown"), std::slice::from_ref(&user), now.clone());
        assert_eq!(
            unknown,
            vec![
                user.clone(),
                taint(UNREACHABLE_TAINT, "NoSchedule", 5),
                taint(UNREACHABLE_TAINT, "NoExecute", 5)
            ]
        );
        // Already there: unchanged (timeAdded kept).
        assert_eq!(taints_for(Some("Unknown"), &unknown, Time(ts(9))), unknown);
        // Not ready instead of unreachable.
        let not_ready = taints_for(Some("False"), &unknown, Time(ts(9)));
        assert_eq!(
            not_ready,
            vec![
                user.clone(),
                taint(NOT_READY_TAINT, "NoSchedule", 9),
                taint(NOT_READY_TAINT, "NoExecute", 9)
            ]
        );
        assert_eq!(
            taints_for(Some("True"), &not_ready, now.clone()),
            vec![user.clone()]
        );
        assert_eq!(taints_for(None, &not_ready, now), not_ready);
    }

    #[test]
    fn a_silent_node_goes_unknown_once() {
        let mut node = Node {
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_heartbeat_time: Some(Time(ts(0))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(mark_unknown(&mut node, ts(50)));
        let ready = condition(&node, "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.last_heartbeat_time, Some(Time(ts(0))));
        assert_eq!(
            condition(&node, "DiskPressure").unwrap().reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
        assert!(!mark_unknown(&mut node, ts(60)));
    }
}
