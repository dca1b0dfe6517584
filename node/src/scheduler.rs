//! The scheduling loop: kube-scheduler's job around the pure placement
//! library in `sched/`.
//!
//! It watches Pods and Nodes. Whenever something changes it takes every
//! pending pod (no `spec.nodeName`, `schedulerName: default-scheduler`, not
//! terminating), builds a [`Snapshot`] of the nodes and the pods bound to
//! them from the informer caches, and places the whole batch at once
//! (highest priority first, each placement counted before the next pod).
//! Placements are written through `pods/binding`, many at a time. A pod
//! that fits nowhere gets `PodScheduled=False` with kube-scheduler's message
//! and a `FailedScheduling` event saying which filter rejected how many
//! nodes; if evicting lower-priority pods would make room, those are
//! deleted (`Preempted`) and the pod nominated to the node. Unschedulable
//! pods are tried again whenever the cluster changes; when nothing waits,
//! only a new pending pod (or a node) starts a round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;
use skiff_sched::{DisruptionBudget, NodeInfo, PodInfo, PreemptionPolicy, Scheduler, Snapshot};
use skiff_sdk::client::informer::Informer;
use skiff_sdk::client::{Api, Client, DeleteParams, ListParams, PatchType, key_of};
use tokio::sync::{Notify, watch};

use crate::controllers::events::{Recorder, reference};

mod platforms;

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// How many bindings are in flight at once.
const BIND_CONCURRENCY: usize = 64;

/// Whether the scheduler should place `pod`.
fn is_pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|s| s == SCHEDULER_NAME);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    unbound
        && ours
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether a bound pod still takes room on its node.
fn occupies(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!node.is_empty() && !matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}

pub async fn run(client: Client, mut stop: watch::Receiver<bool>) {
    let pods = Informer::new(Api::<Pod>::all(&client), ListParams::default());
    let nodes = Informer::new(Api::<Node>::all(&client), ListParams::default());
    // Their labels, for affinity terms' namespaceSelector.
    let namespaces = Informer::new(Api::<Namespace>::all(&client), ListParams::default());
    let volumes = Volumes {
        claims: Informer::new(Api::all(&client), ListParams::default()),
        volumes: Informer::new(Api::all(&client), ListParams::default()),
        classes: Informer::new(Api::all(&client), ListParams::default()),
    };
    let wake = Arc::new(Notify::new());
    let busy = Arc::new(AtomicBool::new(true));
    let mut pod_events = pods.subscribe();
    let mut node_events = nodes.subscribe();
    let mut claim_events = volumes.claims.subscribe();
    let tasks = [
        pods.start(),
        nodes.start(),
        namespaces.start(),
        volumes.claims.start(),
        volumes.volumes.start(),
        volumes.classes.start(),
    ];
    {
        let (wake, busy) = (wake.clone(), busy.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = pod_events.recv() => match e {
                        None => return,
                        // With nothing pending or in flight, only a new
                        // pending pod is news: a cluster creating bound
                        // pods does not make a round of each event.
                        Some(ev) if !busy.load(Ordering::Relaxed) && !is_pending(ev.object()) => {
                            continue
                        }
                        Some(_) => {}
                    },
                    e = node_events.recv() => if e.is_none() { return },
                    // A claim bound may let a waiting pod in.
                    e = claim_events.recv() => match e {
                        None => return,
                        Some(_) if !busy.load(Ordering::Relaxed) => continue,
                        Some(_) => {}
                    },
                }
                wake.notify_one();
            }
        });
    }
    let stopped = tokio::select! {
        _ = async {
            pods.synced().await;
            nodes.synced().await;
            namespaces.synced().await;
            volumes.claims.synced().await;
            volumes.volumes.synced().await;
            volumes.classes.synced().await;
        } => false,
        _ = until_stopped(&mut stop) => true,
    };
    if stopped {
        tasks.iter().for_each(|t| t.abort());
        return;
    }
    let mut loop_state = Loop {
        client: client.clone(),
        scheduler: Scheduler::new(skiff_sched::Config::default()),
        recorder: Recorder::new(&client, SCHEDULER_NAME),
        reported: HashMap::new(),
        in_flight: HashSet::new(),
        platforms: platforms::ImagePlatforms::new(),
        busy,
    };
    tracing::info!("scheduler started");
    loop {
        let retry = loop_state.cycle(&pods, &nodes, &namespaces, &volumes).await;
        let wait = if retry {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = wake.notified() => {
                // Let a burst of events (a ReplicaSet creating pods) land
                // before the next batch.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(wait) => {}
            _ = until_stopped(&mut stop) => break,
        }
    }
    tasks.iter().for_each(|t| t.abort());
}

/// What a pod's persistent volume claims constrain.
struct Volumes {
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
}

impl Volumes {
    /// `pod` with the node affinity of the volumes its claims are bound to
    /// added to its own required terms (all must hold), as kube-scheduler's
    /// VolumeBinding plugin filters; `Err` is why it cannot be placed yet.
    fn constrain(&self, pod: &Arc<Pod>) -> Result<Arc<Pod>, String> {
        let terms = crate::controllers::volumes::volume_node_terms(
            pod,
            &self.claims.store(),
            &self.volumes.store(),
            &self.classes.store(),
        )?;
        if terms.is_empty() {
            return Ok(pod.clone());
        }
        let mut p = (**pod).clone();
        let spec = p.spec.get_or_insert_with(Default::default);
        let affinity = spec.affinity.get_or_insert_with(Default::default);
        let node = affinity.node_affinity.get_or_insert_with(Default::default);
        let required = node
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Default::default);
        for alternatives in terms {
            required.node_selector_terms = and_terms(&required.node_selector_terms, &alternatives);
        }
        Ok(Arc::new(p))
    }
}

/// Two sets of node selector terms, each satisfied by any of its terms,
/// as one: every pair of terms joined. An empty set is no constraint.
fn and_terms(a: &[NodeSelectorTerm], b: &[NodeSelectorTerm]) -> Vec<NodeSelectorTerm> {
    if a.is_empty() {
        return b.to_vec();
    }
    if b.is_empty() {
        return a.to_vec();
    }
    let join = |x: &Option<Vec<_>>, y: &Option<Vec<_>>| {
        let v: Vec<_> = x.iter().chain(y.iter()).flatten().cloned().collect();
        (!v.is_empty()).then_some(v)
    };
    a.iter()
        .flat_map(|x| {
            b.iter().map(move |y| NodeSelectorTerm {
                match_expressions: join(&x.match_expressions, &y.match_expressions),
                match_fields: join(&x.match_fields, &y.match_fields),
            })
        })
        .collect()
}

struct Loop {
    client: Client,
    scheduler: Scheduler,
    recorder: Recorder,
    /// The last FailedScheduling message per pod uid (an event is recorded
    /// when it changes, not on every attempt).
    reported: HashMap<String, String>,
    /// Pods bound but not yet seen bound in the cache.
    in_flight: HashSet<String>,
    /// What platforms container images run on, from their registries.
    platforms: platforms::ImagePlatforms,
    /// Some pod waits (pending, or bound and not yet seen so): every pod
    /// event may matter. Otherwise only a new pending pod does.
    busy: Arc<AtomicBool>,
}

impl Loop {
    /// One scheduling round; whether something should be retried soon.
    async fn cycle(
        &mut self,
        pods: &Informer<Pod>,
        nodes: &Informer<Node>,
        namespaces: &Informer<Namespace>,
        volumes: &Volumes,
    ) -> bool {
        let all_pods = pods.store().list();
        self.in_flight.retain(|uid| {
            all_pods
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid) && is_pending(p))
        });
        let pending: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| is_pending(p))
            .filter(|p| {
                !self
                    .in_flight
                    .contains(p.metadata.uid.as_deref().unwrap_or(""))
            })
            .cloned()
            .collect();
        let live: HashSet<&str> = all_pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.reported.retain(|uid, _| live.contains(uid.as_str()));
        self.busy.store(
            !pending.is_empty() || !self.in_flight.is_empty(),
            Ordering::Relaxed,
        );
        if pending.is_empty() {
            return false;
        }
        let mut snapshot = Snapshot::new();
        for node in nodes.store().list() {
            match NodeInfo::from_node(&node) {
                Ok(info) => {
                    if let Err(e) = snapshot.add_node(info) {
                        tracing::warn!(node = ?node.metadata.name, "node left out of scheduling: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(node = ?node.metadata.name, "node left out of scheduling: {e}")
                }
            }
        }
        let ns_labels: BTreeMap<String, BTreeMap<String, String>> = namespaces
            .store()
            .list()
            .iter()
            .filter_map(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                n.metadata.name.clone().map(|name| (name, labels))
            })
            .collect();
        for pod in &all_pods {
            let Some(node) = occupies(pod) else { continue };
            if let Ok(mut info) = PodInfo::from_pod(pod) {
                info.resolve_namespaces(&ns_labels);
                let _ = snapshot.add_pod(node, &info);
            }
        }
        self.platforms.learn(&pending).await;
        let mut infos = Vec::with_capacity(pending.len());
        let mut batch = Vec::with_capacity(pending.len());
        for pod in pending {
            let constrained = match volumes.constrain(&pod) {
                Ok(p) => p,
                Err(why) => {
                    self.unschedulable(&pod, &why, "Unschedulable").await;
                    continue;
                }
            };
            match PodInfo::from_pod(&constrained) {
                Ok(mut info) => {
                    info.resolve_namespaces(&ns_labels);
                    info.image_platforms = self.platforms.of(&pod);
                    infos.push(info);
                    batch.push(pod);
                }
                Err(e) => {
                    self.unschedulable(&pod, &format!("invalid pod: {e}"), "Unschedulable")
                        .await;
                }
            }
        }
        let before = snapshot.clone();
        let results = self.scheduler.schedule_batch(&infos, &mut snapshot);
        let mut binds = Vec::new();
        let mut retry = false;
        let mut budgets = None;
        for ((pod, info), result) in batch.iter().zip(&infos).zip(results) {
            match result {
                Ok(placement) => binds.push((pod.clone(), placement.node)),
                Err(fit) => {
                    let message = fit.to_string();
                    // Read once per round, and only for a pod that may preempt.
                    if budgets.is_none() && info.preemption_policy != PreemptionPolicy::Never {
                        budgets = Some(self.disruption_budgets().await);
                    }
                    let budgets = budgets.as_deref().unwrap_or_default();
                    if let Some(p) = self.scheduler.preempt(info, &before, budgets) {
                        retry = true;
                        self.preempt(pod, &p, &message).await;
                    } else {
                        self.unschedulable(pod, &message, "Unschedulable").await;
                    }
                }
            }
        }
        let results: Vec<(Arc<Pod>, String, Result<(), String>)> =
            futures::stream::iter(binds.into_iter().map(|(pod, node)| {
                let client = self.client.clone();
                async move {
                    let r = bind(&client, &pod, &node).await;
                    (pod, node, r)
                }
            }))
            .buffer_unordered(BIND_CONCURRENCY)
            .collect()
            .await;
        for (pod, node, r) in results {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            match r {
                Ok(()) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.in_flight.insert(uid.clone());
                        self.reported.remove(uid);
                    }
                    self.recorder
                        .normal(
                            reference(pod.as_ref()),
                            "Scheduled",
                            format!("Successfully assigned {ns}/{name} to {node}"),
                        )
                        .await;
                }
                Err(e) => {
                    retry = true;
                    tracing::debug!(pod = %key_of(&pod.metadata), %node, "binding failed: {e}");
                }
            }
        }
        retry
    }

    /// Records that `pod` fits nowhere: the PodScheduled condition and,
    /// when the reason is new, a FailedScheduling event.
    async fn unschedulable(&mut self, pod: &Pod, message: &str, reason: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.reported.get(&uid).map(String::as_str) == Some(message) {
            return;
        }
        self.reported.insert(uid, message.to_string());
        let api: Api<Pod> = Api::all(&self.client);
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::controllers::events::now()),
        }]}});
        let _ = api
            .patch_sub(
                pod.metadata.namespace.as_deref(),
                pod.metadata.name.as_deref().unwrap_or(""),
                Some("status"),
                PatchType::Strategic,
                &patch,
            )
            .await;
        self.recorder
            .warning(reference(pod), "FailedScheduling", message.to_string())
            .await;
    }

    /// The PodDisruptionBudgets, read when a pod fits nowhere: preemption
    /// spares the pods they protect where it can (read from the API, not
    /// cached: preemption is rare, and a budget's allowance changes with
    /// every eviction).
    async fn disruption_budgets(&self) -> Vec<DisruptionBudget> {
        let api: Api<PodDisruptionBudget> = Api::all(&self.client);
        match api.list_all(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter_map(DisruptionBudget::from_pdb)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing PodDisruptionBudgets for preemption");
                Vec::new()
            }
        }
    }

    /// Evicts the victims and nominates the node for `pod`.
    async fn preempt(&mut self, pod: &Pod, p: &skiff_sched::Preemption, message: &str) {
        let api: Api<Pod> = Api::all(&self.client);
        let preemptor = key_of(&pod.metadata);
        for (ns, name) in &p.victims {
            let victim = api.get_in(Some(ns), name).await.ok();
            let params = DeleteParams::default();
            let params = match victim.as_ref().and_then(|v| v.metadata.uid.clone()) {
                Some(uid) => params.with_uid(uid),
                None => params,
            };
            if victim.is_some() {
                // Why it goes, on the victim itself, as kube-scheduler marks it.
                let patch = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::controllers::events::now()),
                }]}});
                let _ = api
                    .patch_sub(Some(ns), name, Some("status"), PatchType::Strategic, &patch)
                    .await;
            }
            if api.delete_in(Some(ns), name, &params).await.is_ok()
                && let Some(v) = &victim
            {
                self.recorder
                    .normal(
                        reference(v),
                        "Preempted",
                        format!("Preempted by pod {preemptor} on node {}", p.node),
                    )
                    .await;
            }
        }
        let _ = api
            .patch_sub(
                pod.metadata.namespace.as_deref(),
                pod.metadata.name.as_deref().unwrap_or(""),
                Some("status"),
                PatchType::Merge,
                &json!({"status": {"nominatedNodeName": p.node}}),
            )
            .await;
        self.unschedulable(
            pod,
            &format!(
                "{message} preemption: evicting {} pod(s) on node {}.",
                p.victims.len(),
                p.node
            ),
            "Unschedulable",
        )
        .await;
    }
}

/// Binds `pod` to `node` through `pods/binding`, guarded by the pod's uid.
async fn bind(client: &Client, pod: &Pod, node: &str) -> Result<(), String> {
    let api: Api<Pod> = Api::all(client);
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": pod.metadata.namespace, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_sub(pod.metadata.namespace.as_deref(), name, "binding", &binding)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Resolves when `stop` turns true (the guard `wait_for` returns is not
/// `Send`, so it must not live in a `select!` across awaits).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
