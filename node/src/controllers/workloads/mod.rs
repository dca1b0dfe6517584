//! The workload controllers, as kube-controller-manager's: ReplicaSet,
//! Deployment, DaemonSet, StatefulSet, Job and CronJob, and the
//! disruption controller (PodDisruptionBudgets' status).
//!
//! Each is a reconcile loop: informer events name the objects to look at
//! (`namespace/name` keys in the controller's [`WorkQueue`]), and `sync`
//! reads the object and everything related from the shared informer
//! caches, decides, writes, and returns when to look again. One key is
//! never synced twice at once; a failed sync is retried with back-off; a
//! panicking sync is logged and retried like a failed one.
//!
//! The caches trail the controllers' own writes. Three things keep that
//! harmless: [`expectations`] (a controller does not create or delete more
//! pods until it has seen the ones it created or deleted), fixed names
//! where Kubernetes has them (a second create is `AlreadyExists`), and
//! updates guarded by the cached resourceVersion (a stale decision is a
//! conflict, retried from a fresher cache).

pub mod cron;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
pub mod expectations;
mod job;
pub mod owners;
pub mod pods;
mod replicaset;
mod revisions;
mod statefulset;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, ListParams, Object};
use tokio::sync::{mpsc, watch};

use crate::controllers::events::Recorder;
use expectations::Expectations;
use owners::{controller_of, labels, selector_of};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] client::Error),
    /// The object asks for something that cannot be done (a bad selector,
    /// an unparsable schedule); retrying will not help until it changes.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When to sync a key again though nothing changed (a deadline, the next
/// schedule, a pod becoming available).
pub type Requeue = Option<Duration>;

/// The kinds with a controller here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ReplicaSet,
    Deployment,
    DaemonSet,
    StatefulSet,
    Job,
    CronJob,
    DisruptionBudget,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::DaemonSet,
        Kind::StatefulSet,
        Kind::Job,
        Kind::CronJob,
        Kind::DisruptionBudget,
    ];

    fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == kind)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::DisruptionBudget => "PodDisruptionBudget",
        }
    }

    /// The component name its events carry.
    fn component(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "replicaset-controller",
            Kind::Deployment => "deployment-controller",
            Kind::DaemonSet => "daemonset-controller",
            Kind::StatefulSet => "statefulset-controller",
            Kind::Job => "job-controller",
            Kind::CronJob => "cronjob-controller",
            Kind::DisruptionBudget => "disruption-controller",
        }
    }

    /// Workers per controller: pods churn through ReplicaSets and Jobs.
    fn workers(self) -> usize {
        match self {
            Kind::ReplicaSet | Kind::Job => 4,
            _ => 2,
        }
    }
}

/// What every sync reads: the client, the caches, the queues.
pub struct Ctx {
    pub client: Client,
    pub pods: Arc<Store<Pod>>,
    pub replica_sets: Arc<Store<ReplicaSet>>,
    pub deployments: Arc<Store<Deployment>>,
    pub daemon_sets: Arc<Store<DaemonSet>>,
    pub stateful_sets: Arc<Store<StatefulSet>>,
    pub jobs: Arc<Store<Job>>,
    pub cron_jobs: Arc<Store<CronJob>>,
    pub nodes: Arc<Store<Node>>,
    pub claims: Arc<Store<PersistentVolumeClaim>>,
    pub budgets: Arc<Store<PodDisruptionBudget>>,
    pub expectations: Expectations,
    queues: HashMap<Kind, WorkQueue>,
    recorders: HashMap<Kind, Recorder>,
    /// Job uid → (failures since the last success, when the last one was
    /// counted): how long to wait before replacing a failed pod.
    pub job_backoff: Mutex<HashMap<String, (u32, Timestamp)>>,
    /// Owner uid → the template hash whose ControllerRevision is known to
    /// be the newest (see `revisions.rs`).
    pub revisions: Mutex<HashMap<String, String>>,
}

impl Ctx {
    pub fn queue(&self, kind: Kind) -> &WorkQueue {
        &self.queues[&kind]
    }

    pub fn recorder(&self, kind: Kind) -> &Recorder {
        &self.recorders[&kind]
    }
}

/// The informers, one per kind, shared by every controller.
struct Informers {
    pods: Arc<Informer<Pod>>,
    replica_sets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    daemon_sets: Arc<Informer<DaemonSet>>,
    stateful_sets: Arc<Informer<StatefulSet>>,
    jobs: Arc<Informer<Job>>,
    cron_jobs: Arc<Informer<CronJob>>,
    nodes: Arc<Informer<Node>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    budgets: Arc<Informer<PodDisruptionBudget>>,
}

fn informer<K: Object>(client: &Client) -> Arc<Informer<K>> {
    Informer::new(Api::all(client), ListParams::default())
}

/// Runs the workload controllers until `stop` turns true.
pub async fn run(client: Client, mut stop: watch::Receiver<bool>) {
    let inf = Informers {
        pods: informer(&client),
        replica_sets: informer(&client),
        deployments: informer(&client),
        daemon_sets: informer(&client),
        stateful_sets: informer(&client),
        jobs: informer(&client),
        cron_jobs: informer(&client),
        nodes: informer(&client),
        claims: informer(&client),
        budgets: informer(&client),
    };
    let ctx = Arc::new(Ctx {
        pods: inf.pods.store(),
        replica_sets: inf.replica_sets.store(),
        deployments: inf.deployments.store(),
        daemon_sets: inf.daemon_sets.store(),
        stateful_sets: inf.stateful_sets.store(),
        jobs: inf.jobs.store(),
        cron_jobs: inf.cron_jobs.store(),
        nodes: inf.nodes.store(),
        claims: inf.claims.store(),
        budgets: inf.budgets.store(),
        expectations: Expectations::default(),
        queues: Kind::ALL.map(|k| (k, WorkQueue::new())).into(),
        recorders: Kind::ALL
            .map(|k| (k, Recorder::new(&client, k.component())))
            .into(),
        job_backoff: Mutex::default(),
        revisions: Mutex::default(),
        client,
    });

    let mut tasks = Vec::new();
    // Subscribe before starting, so that the first lists arrive as events
    // and every existing object is synced once.
    tasks.push(route(&ctx, inf.pods.subscribe(), route_pod));
    tasks.push(route(&ctx, inf.replica_sets.subscribe(), route_replica_set));
    tasks.push(route(&ctx, inf.deployments.subscribe(), |c, e| {
        enqueue(c, Kind::Deployment, &**e.object());
        budgets_in(c, e.object().metadata.namespace.as_deref());
    }));
    tasks.push(route(&ctx, inf.daemon_sets.subscribe(), |c, e| {
        enqueue(c, Kind::DaemonSet, &**e.object())
    }));
    tasks.push(route(&ctx, inf.stateful_sets.subscribe(), |c, e| {
        enqueue(c, Kind::StatefulSet, &**e.object());
        budgets_in(c, e.object().metadata.namespace.as_deref());
    }));
    tasks.push(route(&ctx, inf.budgets.subscribe(), |c, e| {
        enqueue(c, Kind::DisruptionBudget, &**e.object())
    }));
    tasks.push(route(&ctx, inf.jobs.subscribe(), route_job));
    tasks.push(route(&ctx, inf.cron_jobs.subscribe(), |c, e| {
        enqueue(c, Kind::CronJob, &**e.object())
    }));
    tasks.push(route(&ctx, inf.nodes.subscribe(), route_node));
    tasks.push(inf.pods.start());
    tasks.push(inf.replica_sets.start());
    tasks.push(inf.deployments.start());
    tasks.push(inf.daemon_sets.start());
    tasks.push(inf.stateful_sets.start());
    tasks.push(inf.jobs.start());
    tasks.push(inf.cron_jobs.start());
    tasks.push(inf.nodes.start());
    tasks.push(inf.claims.start());
    tasks.push(inf.budgets.start());

    let synced = async {
        inf.pods.synced().await;
        inf.replica_sets.synced().await;
        inf.deployments.synced().await;
        inf.daemon_sets.synced().await;
        inf.stateful_sets.synced().await;
        inf.jobs.synced().await;
        inf.cron_jobs.synced().await;
        inf.nodes.synced().await;
        inf.claims.synced().await;
        inf.budgets.synced().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    tracing::info!("workload controllers started");

    for kind in Kind::ALL {
        for _ in 0..kind.workers() {
            tasks.push(tokio::spawn(worker(ctx.clone(), kind)));
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    for q in ctx.queues.values() {
        q.shut_down();
    }
    for t in tasks {
        t.abort();
    }
    drop(inf);
}

type SyncFuture = Pin<Box<dyn Future<Output = Result<Requeue>> + Send>>;

fn sync_fn(kind: Kind) -> fn(Arc<Ctx>, String) -> SyncFuture {
    match kind {
        Kind::ReplicaSet => |c, k| Box::pin(async move { replicaset::sync(&c, &k).await }),
        Kind::Deployment => |c, k| Box::pin(async move { deployment::sync(&c, &k).await }),
        Kind::DaemonSet => |c, k| Box::pin(async move { daemonset::sync(&c, &k).await }),
        Kind::StatefulSet => |c, k| Box::pin(async move { statefulset::sync(&c, &k).await }),
        Kind::Job => |c, k| Box::pin(async move { job::sync(&c, &k).await }),
        Kind::CronJob => |c, k| Box::pin(async move { cronjob::sync(&c, &k).await }),
        Kind::DisruptionBudget => |c, k| Box::pin(async move { disruption::sync(&c, &k).await }),
    }
}

/// One worker of one controller: takes keys until the queue shuts down.
async fn worker(ctx: Arc<Ctx>, kind: Kind) {
    let sync = sync_fn(kind);
    let queue = ctx.queue(kind).clone();
    super::work(
        kind.name(),
        &queue,
        |key| sync(ctx.clone(), key),
        |e: &Error| matches!(e, Error::Api(a) if a.is_conflict()),
    )
    .await;
}

/// Feeds one informer's events to `f` in a task.
fn route<K: Object>(
    ctx: &Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<Arc<Event<K>>>,
    f: fn(&Ctx, &Event<K>),
) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            f(&ctx, &ev);
        }
    })
}

fn enqueue<K: Object>(ctx: &Ctx, kind: Kind, obj: &K) {
    ctx.queue(kind).add(owners::ns_name(obj.metadata()));
}

/// A change of scale wakes the budgets of its namespace (a percentage or
/// maxUnavailable counts the controllers' replicas).
fn budgets_in(ctx: &Ctx, ns: Option<&str>) {
    for b in ctx.budgets.list_in(ns.unwrap_or("")) {
        enqueue(ctx, Kind::DisruptionBudget, &*b);
    }
}

/// Pods wake their controller (and tell its expectations what happened);
/// an orphan wakes every controller in its namespace whose selector
/// matches it, which may adopt it.
fn route_pod(ctx: &Ctx, ev: &Event<Pod>) {
    let pod = ev.object();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    // The budgets that count it, before and after.
    let old = match ev {
        Event::Applied { old, .. } => old.clone(),
        _ => None,
    };
    for b in ctx.budgets.list_in(ns) {
        if disruption::selects(&b, pod) || old.as_ref().is_some_and(|o| disruption::selects(&b, o))
        {
            enqueue(ctx, Kind::DisruptionBudget, &*b);
        }
    }
    let deleted = matches!(ev, Event::Deleted(_));
    let owner_kind =
        |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| match controller_of(m) {
            Some(r) => Kind::from_name(&r.kind).map(|k| (k, format!("{ns}/{}", r.name))),
            None => None,
        };
    let owner = owner_kind(&pod.metadata);
    if let Some((kind, key)) = &owner {
        ctx.expectations
            .observe(&expectations::key(kind.name(), key), pod, deleted);
        ctx.queue(*kind).add(key.clone());
    } else if !deleted && pod.metadata.deletion_timestamp.is_none() {
        let l = labels(&pod.metadata);
        let matches =
            |sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
                sel.and_then(|s| selector_of(s).ok())
                    .is_some_and(|s| !s.is_everything() && s.matches(l))
            };
        for rs in ctx.replica_sets.list_in(ns) {
            if matches(rs.spec.as_ref().map(|s| &s.selector)) {
                enqueue(ctx, Kind::ReplicaSet, &*rs);
            }
        }
        for ds in ctx.daemon_sets.list_in(ns) {
            if matches(ds.spec.as_ref().map(|s| &s.selector)) {
                enqueue(ctx, Kind::DaemonSet, &*ds);
            }
        }
        for sts in ctx.stateful_sets.list_in(ns) {
            if matches(sts.spec.as_ref().map(|s| &s.selector)) {
                enqueue(ctx, Kind::StatefulSet, &*sts);
            }
        }
        for j in ctx.jobs.list_in(ns) {
            if matches(j.spec.as_ref().and_then(|s| s.selector.as_ref())) {
                enqueue(ctx, Kind::Job, &*j);
            }
        }
    }
    if let Event::Applied { old: Some(old), .. } = ev
        && let Some((kind, key)) = owner_kind(&old.metadata)
        && owner.as_ref().is_none_or(|(k, n)| (*k, n) != (kind, &key))
    {
        ctx.queue(kind).add(key);
    }
}

/// ReplicaSets wake themselves and their Deployment; an orphan wakes the
/// Deployments that may adopt it.
fn route_replica_set(ctx: &Ctx, ev: &Event<ReplicaSet>) {
    let rs = ev.object();
    enqueue(ctx, Kind::ReplicaSet, &**rs);
    budgets_in(ctx, rs.metadata.namespace.as_deref());
    let ns = rs.metadata.namespace.as_deref().unwrap_or("");
    let mut owners = Vec::new();
    if let Event::Applied { old: Some(old), .. } = ev {
        owners.push(controller_of(&old.metadata).cloned());
    }
    owners.push(controller_of(&rs.metadata).cloned());
    let mut orphan = true;
    for r in owners.into_iter().flatten() {
        if r.kind == "Deployment" {
            ctx.queue(Kind::Deployment).add(format!("{ns}/{}", r.name));
        }
        orphan = false;
    }
    if orphan {
        for d in ctx.deployments.list_in(ns) {
            let sel = d.spec.as_ref().map(|s| &s.selector);
            if sel
                .and_then(|s| selector_of(s).ok())
                .is_some_and(|s| !s.is_everything() && s.matches(labels(&rs.metadata)))
            {
                enqueue(ctx, Kind::Deployment, &*d);
            }
        }
    }
}

/// Jobs wake themselves and their CronJob.
fn route_job(ctx: &Ctx, ev: &Event<Job>) {
    let job = ev.object();
    enqueue(ctx, Kind::Job, &**job);
    if let Some(r) = controller_of(&job.metadata)
        && r.kind == "CronJob"
    {
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        ctx.queue(Kind::CronJob).add(format!("{ns}/{}", r.name));
    }
}

/// A node that appears, goes, or changes what DaemonSets look at (labels,
/// taints, schedulability, readiness) wakes every DaemonSet.
fn route_node(ctx: &Ctx, ev: &Event<Node>) {
    if let Event::Applied {
        old: Some(old),
        new,
    } = ev
        && !daemonset::node_changed(old, new)
    {
        return;
    }
    for ds in ctx.daemon_sets.list() {
        enqueue(ctx, Kind::DaemonSet, &*ds);
    }
}

#[cfg(test)]
impl Ctx {
    /// A context whose client reaches no server and whose caches stay
    /// empty: for unit tests of the pure parts.
    pub fn for_tests() -> Ctx {
        struct Offline;
        impl client::Transport for Offline {
            fn send(
                &self,
                _: http::Request<bytes::Bytes>,
            ) -> Pin<
                Box<
                    dyn Future<Output = Result<http::Response<client::Body>, client::Error>>
                        + Send
                        + '_,
                >,
            > {
                Box::pin(async { Err(client::Error::Transport("offline".into())) })
            }
        }
        let client = Client::new(Offline);
        Ctx {
            pods: informer(&client).store(),
            replica_sets: informer(&client).store(),
            deployments: informer(&client).store(),
            daemon_sets: informer(&client).store(),
            stateful_sets: informer(&client).store(),
            jobs: informer(&client).store(),
            cron_jobs: informer(&client).store(),
            nodes: informer(&client).store(),
            claims: informer(&client).store(),
            budgets: informer(&client).store(),
            expectations: Expectations::default(),
            queues: Kind::ALL.map(|k| (k, WorkQueue::new())).into(),
            recorders: Kind::ALL
                .map(|k| (k, Recorder::new(&client, k.component())))
                .into(),
            job_backoff: Mutex::default(),
            revisions: Mutex::default(),
            client,
        }
    }
}
