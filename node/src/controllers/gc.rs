//! The garbage collector, as kube-controller-manager's: objects name their
//! owners in `metadata.ownerReferences`, and go when their owners go.
//!
//! Metadata-only informers over every served kind feed one graph (owner
//! uid → dependents). A dependent whose owners are all gone is deleted
//! (`Background`); one that still has a live owner loses only the dangling
//! references. An owner deleted with `Foreground` carries the
//! `foregroundDeletion` finalizer: its dependents are deleted (in the
//! foreground themselves when they have dependents) and the finalizer is
//! removed once no dependent with `blockOwnerDeletion` is left. An owner
//! deleted with `Orphan` carries the `orphan` finalizer: its references are
//! removed from its dependents, then the finalizer.
//!
//! The graph trails the store, so "gone" is never decided from it: an owner
//! absent from the graph is looked up with a live GET, and deletes carry
//! the dependent's uid as a precondition, so that a successor of the same
//! name is never hit.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::{Metadata, Resource};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skiff_sdk::client::informer::{Event, Informer};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, DeleteParams, ListParams, is_namespaced};
use tokio::sync::watch;

type Result<T, E = client::Error> = std::result::Result<T, E>;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// How often an owner waiting for its dependents is looked at though
/// nothing changed: a safety net under the events that normally wake it.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;

/// An object of kind `K` of which only the metadata is decoded: the
/// collector needs nothing else and keeps every object of the cluster.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<K> {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(skip)]
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Meta<K> {
    fn clone(&self) -> Self {
        Meta {
            metadata: self.metadata.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Meta<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meta")
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<K: Resource> Resource for Meta<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: Resource> Metadata for Meta<K> {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A kind the collector watches: enough to find an owner by reference.
#[derive(Debug, PartialEq, Eq)]
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
}

impl Kind {
    fn of<K: Resource<Scope: 'static>>() -> Kind {
        Kind {
            group: K::GROUP,
            version: K::VERSION,
            kind: K::KIND,
            plural: K::URL_PATH_SEGMENT,
            namespaced: is_namespaced::<K>(),
        }
    }

    /// Whether an owner reference's `apiVersion` and `kind` name this kind
    /// (any version of its group: skiff serves one per group).
    fn is(&self, api_version: &str, kind: &str) -> bool {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kind == kind && self.group == group
    }

    fn path(&self, namespace: Option<&str>, name: &str) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => {
                format!("{base}/namespaces/{ns}/{}/{name}", self.plural)
            }
            _ => format!("{base}/{}/{name}", self.plural),
        }
    }
}

/// One object in the graph.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    kind: Arc<Kind>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    /// `metadata.deletionTimestamp` is set.
    deleting: bool,
    finalizers: Vec<String>,
}

impl Item {
    fn from_meta(kind: &Arc<Kind>, m: &ObjectMeta) -> Item {
        Item {
            kind: kind.clone(),
            namespace: m.namespace.clone().filter(|n| !n.is_empty()),
            name: m.name.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        }
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// Deleted in the foreground and still waiting for its dependents.
    fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.has_finalizer(FOREGROUND)
    }

    fn path(&self) -> String {
        self.kind.path(self.namespace.as_deref(), &self.name)
    }

    fn blocks(&self, owner_uid: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true))
    }
}

/// Owners and dependents by uid.
#[derive(Debug, Default)]
struct Graph {
    items: HashMap<String, Item>,
    /// Owner uid → the uids of the objects that reference it. Entries for
    /// owners that are gone stay until their dependents are gone too.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records an object as it is now; returns the uids worth a look.
    fn upsert(&mut self, uid: &str, item: Item) -> Vec<String> {
        let old = self.items.get(uid);
        if old == Some(&item) {
            return Vec::new();
        }
        let mut wake = Vec::new();
        if item.deleting || !item.owners.is_empty() {
            wake.push(uid.to_string());
        }
        // Owners waiting for their dependents may be unblocked by a
        // dependent that changed its references.
        let old_owners: Vec<OwnerReference> = old.map(|o| o.owners.clone()).unwrap_or_default();
        for r in old_owners.iter().chain(&item.owners) {
            if self
                .items
                .get(&r.uid)
                .is_some_and(Item::waiting_for_dependents)
            {
                wake.push(r.uid.clone());
            }
        }
        for r in &old_owners {
            if !item.owners.iter().any(|n| n.uid == r.uid) {
                self.unlink(&r.uid, uid);
            }
        }
        for r in &item.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        self.items.insert(uid.to_string(), item);
        wake
    }

    /// Forgets a deleted object; returns its dependents (whose owner is
    /// gone) and its owners (which may be waiting for it).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(item) = self.items.remove(uid) else {
            return Vec::new();
        };
        let mut wake: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        for r in &item.owners {
            self.unlink(&r.uid, uid);
            wake.push(r.uid.clone());
        }
        wake
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    fn dependents_of(&self, owner: &str) -> Vec<(String, Item)> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d).map(|i| (d.clone(), i.clone())))
            .collect()
    }
}

/// What an owner reference points at, as far as its dependent is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// It exists.
    Solid,
    /// Nothing with its uid exists.
    Dangling,
    /// It is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// What to do with a dependent, given the state of each of its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Keep,
    /// A live owner remains: drop the references to these (gone or going)
    /// owners only.
    RemoveRefs(Vec<String>),
    /// No owner remains: delete it, in the foreground if an owner waits
    /// for it and it has dependents of its own (so that they go first).
    Delete {
        foreground: bool,
    },
}

/// Kubernetes' `attemptToDeleteItem`, as a function of data.
fn decide(owners: &[(String, OwnerState)], has_dependents: bool) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    if solid {
        let gone: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if gone.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveRefs(gone)
        };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    Decision::Delete {
        foreground: waiting && has_dependents,
    }
}

struct Ctx {
    client: Client,
    kinds: Vec<Arc<Kind>>,
    graph: Mutex<Graph>,
    queue: WorkQueue,
}

type Synced = Pin<Box<dyn Future<Output = ()> + Send>>;
type Tasks = Vec<tokio::task::JoinHandle<()>>;
type WatchFn = fn(&Arc<Ctx>, &Arc<Kind>, &mut Tasks) -> Synced;

/// Starts a metadata informer for `K` whose events update the graph.
fn watch_kind<K>(ctx: &Arc<Ctx>, kind: &Arc<Kind>, tasks: &mut Tasks) -> Synced
where
    K: Resource<Scope: 'static> + Send + Sync + 'static,
{
    let inf: Arc<Informer<Meta<K>>> = Informer::new(Api::all(&ctx.client), ListParams::default());
    let mut events = inf.subscribe();
    let (c, k, keep) = (ctx.clone(), kind.clone(), inf.clone());
    tasks.push(tokio::spawn(async move {
        // The informer runs as long as someone holds it: this task does.
        let _informer = keep;
        while let Some(ev) = events.recv().await {
            observe(&c, &k, &ev);
        }
    }));
    tasks.push(inf.start());
    Box::pin(async move { inf.synced().await })
}

fn observe<K: Resource>(ctx: &Ctx, kind: &Arc<Kind>, ev: &Event<Meta<K>>) {
    let wake = {
        let mut g = ctx.graph.lock();
        match ev {
            Event::Applied { old, new } => {
                let uid = new.metadata.uid.clone().unwrap_or_default();
                let mut wake = Vec::new();
                if let Some(old_uid) = old.as_ref().and_then(|o| o.metadata.uid.as_deref())
                    && old_uid != uid
                {
                    // Deleted and recreated under the same name.
                    wake.extend(g.remove(old_uid));
                }
                wake.extend(g.upsert(&uid, Item::from_meta(kind, &new.metadata)));
                wake
            }
            Event::Deleted(o) => g.remove(o.metadata.uid.as_deref().unwrap_or_default()),
        }
    };
    for uid in wake {
        ctx.queue.add(uid);
    }
}

/// Runs the garbage collector until `stop` turns true.
pub async fn run(client: Client, mut stop: watch::Receiver<bool>) {
    let mut kinds = Vec::new();
    let mut watchers: Vec<WatchFn> = Vec::new();
    macro_rules! kinds {
        ($($k:ty),* $(,)?) => {$(
            kinds.push(Arc::new(Kind::of::<$k>()));
            watchers.push(watch_kind::<$k>);
        )*};
    }
    // Every served kind but Events, which nothing owns or is owned by.
    kinds!(
        Pod,
        Service,
        Endpoints,
        ConfigMap,
        Secret,
        ServiceAccount,
        Node,
        Namespace,
        PersistentVolumeClaim,
        Deployment,
        ReplicaSet,
        DaemonSet,
        StatefulSet,
        ControllerRevision,
        Job,
        CronJob,
        Ingress,
        IngressClass,
        EndpointSlice,
        Role,
        RoleBinding,
        ClusterRole,
        ClusterRoleBinding,
        Lease,
        RuntimeClass,
    );
    let ctx = Arc::new(Ctx {
        client,
        kinds: kinds.clone(),
        graph: Mutex::default(),
        queue: WorkQueue::new(),
    });
    let mut tasks = Vec::new();
    let synced: Vec<Synced> = kinds
        .iter()
        .zip(&watchers)
        .map(|(k, w)| w(&ctx, k, &mut tasks))
        .collect();
    // Deciding on a partial graph could remove a foreground finalizer
    // before the dependents are known.
    tokio::select! {
        _ = futures::future::join_all(synced) => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    tracing::info!(
        objects = ctx.graph.lock().items.len(),
        "garbage collector started"
    );
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(worker(ctx.clone())));
    }
    let _ = stop.wait_for(|s| *s).await;
    ctx.queue.shut_down();
    for t in tasks {
        t.abort();
    }
}

async fn worker(ctx: Arc<Ctx>) {
    let sync = |uid: String| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &uid).await }
    };
    // Collection races with owners and dependents changing under it; every
    // failure is retried and none is news.
    super::work("garbagecollector", &ctx.queue, sync, |_: &client::Error| {
        true
    })
    .await;
}

/// Looks at one object: as an owner being deleted (foreground or orphan),
/// or as a dependent whose owners may be gone.
async fn sync(ctx: &Ctx, uid: &str) -> Result<Option<Duration>> {
    let (item, has_dependents) = {
        let g = ctx.graph.lock();
        let Some(item) = g.items.get(uid).cloned() else {
            return Ok(None);
        };
        (item, g.dependents.contains_key(uid))
    };
    if item.deleting {
        if item.has_finalizer(ORPHAN) {
            orphan_dependents(ctx, uid, &item).await?;
            return Ok(None);
        }
        if item.has_finalizer(FOREGROUND) {
            return delete_dependents(ctx, uid, &item).await;
        }
        // Going anyway.
        return Ok(None);
    }
    let mut owners = Vec::with_capacity(item.owners.len());
    for r in &item.owners {
        owners.push((r.uid.clone(), owner_state(ctx, &item, r).await?));
    }
    match decide(&owners, has_dependents) {
        Decision::Keep => Ok(None),
        Decision::RemoveRefs(gone) => {
            tracing::debug!(object = %item.path(), ?gone, "removing references to owners that are gone");
            remove_refs(ctx, &item, &gone).await?;
            Ok(None)
        }
        Decision::Delete { foreground } => {
            let policy = if foreground {
                "Foreground"
            } else {
                "Background"
            };
            tracing::debug!(object = %item.path(), policy, "deleting: every owner is gone");
            let params = DeleteParams {
                propagation_policy: Some(policy.into()),
                ..Default::default()
            }
            .with_uid(uid);
            delete(ctx, &item.path(), &params).await?;
            Ok(None)
        }
    }
}

/// Whether the owner `r` of `dependent` exists, asking the API server when
/// the graph does not know it.
async fn owner_state(ctx: &Ctx, dependent: &Item, r: &OwnerReference) -> Result<OwnerState> {
    if let Some(owner) = ctx.graph.lock().items.get(&r.uid) {
        return Ok(if owner.waiting_for_dependents() {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        });
    }
    let Some(kind) = ctx.kinds.iter().find(|k| k.is(&r.api_version, &r.kind)) else {
        // A kind skiff does not serve cannot be looked up: keep the
        // dependent rather than guess.
        tracing::debug!(
            object = %dependent.path(),
            owner = %format!("{}/{}", r.kind, r.name),
            "owner of an unknown kind"
        );
        return Ok(OwnerState::Solid);
    };
    if kind.namespaced && dependent.namespace.is_none() {
        // A cluster-scoped object cannot be owned by a namespaced one.
        return Ok(OwnerState::Dangling);
    }
    match ctx
        .client
        .get_json(&kind.path(dependent.namespace.as_deref(), &r.name))
        .await
    {
        Ok(v) if v["metadata"]["uid"].as_str() == Some(r.uid.as_str()) => {
            let waiting = v["metadata"]["deletionTimestamp"].is_string()
                && v["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == FOREGROUND));
            Ok(if waiting {
                OwnerState::Waiting
            } else {
                OwnerState::Solid
            })
        }
        Ok(_) => Ok(OwnerState::Dangling),
        Err(e) if e.is_not_found() => Ok(OwnerState::Dangling),
        Err(e) => Err(e),
    }
}

/// A foreground deletion: deletes the owner's dependents, and lets the
/// owner go once none that blocks it is left.
async fn delete_dependents(ctx: &Ctx, uid: &str, owner: &Item) -> Result<Option<Duration>> {
    let dependents = ctx.graph.lock().dependents_of(uid);
    if !dependents.iter().any(|(_, d)| d.blocks(uid)) {
        tracing::debug!(object = %owner.path(), "no blocking dependents left");
        remove_finalizer(ctx, owner, uid, FOREGROUND).await?;
        return Ok(None);
    }
    for (dep, d) in dependents {
        if !d.deleting {
            ctx.queue.add(dep);
        }
    }
    Ok(Some(FOREGROUND_RECHECK))
}

/// An orphaning deletion: removes the owner's references from its
/// dependents, then the `orphan` finalizer.
async fn orphan_dependents(ctx: &Ctx, uid: &str, owner: &Item) -> Result<()> {
    let dependents = ctx.graph.lock().dependents_of(uid);
    for (_, d) in &dependents {
        remove_refs(ctx, d, &[uid.to_string()]).await?;
    }
    tracing::debug!(object = %owner.path(), orphaned = dependents.len(), "dependents orphaned");
    remove_finalizer(ctx, owner, uid, ORPHAN).await
}

/// Drops the references to `owners` from `item`, by uid: a strategic merge
/// patch, so concurrent changes to other references stay, and a successor
/// of the same name (which cannot reference these owners) is unaffected.
async fn remove_refs(ctx: &Ctx, item: &Item, owners: &[String]) -> Result<()> {
    let refs: Vec<Value> = owners
        .iter()
        .map(|o| json!({"$patch": "delete", "uid": o}))
        .collect();
    let patch = json!({"metadata": {"ownerReferences": refs}});
    match send(
        ctx,
        Method::PATCH,
        &item.path(),
        "application/strategic-merge-patch+json",
        patch,
    )
    .await
    {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map(drop),
    }
}

/// Removes finalizer `f` from the object `uid` (read live, written back
/// guarded by its resourceVersion). With no finalizer left, the API server
/// completes the deletion.
async fn remove_finalizer(ctx: &Ctx, item: &Item, uid: &str, f: &str) -> Result<()> {
    let path = item.path();
    let live = match ctx.client.get_json(&path).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    if live["metadata"]["uid"].as_str() != Some(uid) {
        return Ok(());
    }
    let finalizers: Vec<&Value> = live["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| *x != f)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": if finalizers.is_empty() { Value::Null } else { json!(finalizers) },
        "resourceVersion": live["metadata"]["resourceVersion"],
    }});
    match send(
        ctx,
        Method::PATCH,
        &path,
        "application/merge-patch+json",
        patch,
    )
    .await
    {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map(drop),
    }
}

async fn delete(ctx: &Ctx, path: &str, params: &DeleteParams) -> Result<()> {
    let body = serde_json::to_value(params).unwrap_or_default();
    match send(ctx, Method::DELETE, path, "application/json", body).await {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map(drop),
    }
}

async fn send(
    ctx: &Ctx,
    method: Method,
    path: &str,
    content_type: &str,
    body: Value,
) -> Result<Value> {
    ctx.client
        .request(method, path, content_type, Bytes::from(body.to_string()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("cm-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: Some(block),
        }
    }

    fn item(owners: Vec<OwnerReference>) -> Item {
        Item {
            kind: Arc::new(Kind::of::<ConfigMap>()),
            namespace: Some("default".into()),
            name: "x".into(),
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    #[test]
    fn a_dependent_goes_only_when_every_owner_is_gone() {
        use OwnerState::*;
        let s = |v: &[(&str, OwnerState)]| -> Vec<(String, OwnerState)> {
            v.iter().map(|(u, s)| (u.to_string(), *s)).collect()
        };
        assert_eq!(decide(&[], false), Decision::Keep);
        assert_eq!(decide(&s(&[("a", Solid)]), false), Decision::Keep);
        assert_eq!(
            decide(&s(&[("a", Dangling), ("b", Solid), ("c", Waiting)]), true),
            Decision::RemoveRefs(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            decide(&s(&[("a", Dangling)]), true),
            Decision::Delete { foreground: false }
        );
        assert_eq!(
            decide(&s(&[("a", Dangling), ("b", Waiting)]), true),
            Decision::Delete { foreground: true }
        );
        assert_eq!(
            decide(&s(&[("b", Waiting)]), false),
            Decision::Delete { foreground: false }
        );
    }

    #[test]
    fn the_graph_wakes_owners_and_dependents() {
        let mut g = Graph::default();
        assert!(g.upsert("o", item(vec![])).is_empty());
        assert_eq!(g.upsert("d", item(vec![owner("o", true)])), vec!["d"]);
        // Nothing changed: nothing to do.
        assert!(g.upsert("d", item(vec![owner("o", true)])).is_empty());
        // The owner starts waiting for its dependents.
        let mut waiting = item(vec![]);
        waiting.deleting = true;
        waiting.finalizers = vec![FOREGROUND.into()];
        assert_eq!(g.upsert("o", waiting), vec!["o"]);
        assert_eq!(g.dependents_of("o").len(), 1);
        assert!(g.dependents_of("o")[0].1.blocks("o"));
        // The dependent goes: its owner is woken.
        assert_eq!(g.remove("d"), vec!["o"]);
        assert!(g.dependents_of("o").is_empty());
        // An owner that goes wakes its dependents.
        g.upsert("d2", item(vec![owner("o", false)]));
        let mut woken = g.remove("o");
        woken.sort();
        assert_eq!(woken, vec!["d2"]);
        // A dependent dropping its reference unlinks it.
        g.upsert("d2", item(vec![]));
        assert!(!g.dependents.contains_key("o"));
    }

    #[test]
    fn kinds_match_references_and_paths() {
        let k = Kind::of::<ReplicaSet>();
        assert!(k.is("apps/v1", "ReplicaSet"));
        assert!(!k.is("v1", "ReplicaSet"));
        assert_eq!(
            k.path(Some("web"), "r"),
            "/apis/apps/v1/namespaces/web/replicasets/r"
        );
        assert_eq!(Kind::of::<Node>().path(Some("x"), "n"), "/api/v1/nodes/n");
    }
}
