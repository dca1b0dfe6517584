//! Persistent volumes, as Kubernetes' PV controller and k3s' local-path
//! provisioner do it between them:
//!
//! - a claim (PVC) is bound to an available volume (PV) that fits it: same
//!   class, the access modes it asks for, at least the storage it requests,
//!   the volume mode, its selector; the smallest such volume wins, and a
//!   volume whose `claimRef` names the claim is taken first;
//! - failing that, a claim of a class whose provisioner is
//!   [`PROVISIONER`] gets a volume made for it: a directory on one node
//!   (under the path that node's agent publishes in
//!   [`ANNOTATION_STORAGE`]), a `hostPath` PV pinned to that node by
//!   node affinity. With `WaitForFirstConsumer` (the default class's mode)
//!   the node is the one the first pod using the claim was scheduled to;
//!   with `Immediate`, the first node (by name) that offers storage;
//! - a volume whose claim is gone is `Released`; with the `Delete` reclaim
//!   policy a volume made here is deleted (its node's agent removes the
//!   directory), with `Retain` it stays for an administrator.
//!
//! In-use protection: a claim keeps [`PVC_PROTECTION`] until no pod that
//! may still run uses it, a volume [`PV_PROTECTION`] until no claim is bound
//! to it, so neither goes from under a running pod.
//!
//! Status: claims `Pending` → `Bound` (capacity and access modes from the
//! volume) or `Lost` when their volume disappears; volumes `Available` →
//! `Bound` → `Released`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, DeleteParams, ListParams, PatchType, key_of};
use skiff_sdk::selector::LabelSelector;
use tokio::sync::watch;

use super::events::{Recorder, reference};

/// The provisioner of the local-path StorageClass every cluster starts with.
pub const PROVISIONER: &str = "skiff.dev/local-path";
/// The name of that class (as in k3s).
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// On a Node: the directory its agent keeps provisioned volumes in.
pub const ANNOTATION_STORAGE: &str = "skiff.dev/local-storage";
/// Kubernetes' storage object in-use protection: a claim keeps this
/// finalizer while a pod uses it, a volume while it is bound.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// On a PV made here: who made it (Kubernetes' annotation).
const ANNOTATION_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim bound here, as Kubernetes marks it.
const ANNOTATION_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const ANNOTATION_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";

/// The StorageClass that claims naming none get (k3s' `local-path`).
pub fn default_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {
            crate::apiserver::table::DEFAULT_CLASS: "true",
        }},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

struct Ctx {
    client: Client,
    recorder: Recorder,
    claims: Arc<Store<PersistentVolumeClaim>>,
    volumes: Arc<Store<PersistentVolume>>,
    classes: Arc<Store<StorageClass>>,
    pods: Arc<Store<Pod>>,
    nodes: Arc<Store<Node>>,
    queue: WorkQueue,
}

pub async fn run(client: Client, stop: watch::Receiver<bool>) {
    let claims: Arc<Informer<PersistentVolumeClaim>> =
        Informer::new(Api::all(&client), ListParams::default());
    let volumes: Arc<Informer<PersistentVolume>> =
        Informer::new(Api::all(&client), ListParams::default());
    let classes: Arc<Informer<StorageClass>> =
        Informer::new(Api::all(&client), ListParams::default());
    let pods: Arc<Informer<Pod>> = Informer::new(Api::all(&client), ListParams::default());
    let nodes: Arc<Informer<Node>> = Informer::new(Api::all(&client), ListParams::default());
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(&client, "persistentvolume-controller"),
        client,
        claims: claims.store(),
        volumes: volumes.store(),
        classes: classes.store(),
        pods: pods.store(),
        nodes: nodes.store(),
        queue: WorkQueue::new(),
    });
    let tasks = vec![
        {
            let ctx = ctx.clone();
            let mut rx = claims.subscribe();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    match &*ev {
                        Event::Applied { new, .. } => ctx.queue.add(key_of(&new.metadata)),
                        // Its volume is released.
                        Event::Deleted(c) => {
                            if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                                ctx.queue.add(v);
                            }
                        }
                    }
                }
            })
        },
        {
            let ctx = ctx.clone();
            let mut rx = volumes.subscribe();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    match &*ev {
                        Event::Applied { new, .. } => {
                            ctx.queue.add(key_of(&new.metadata));
                            // A volume that became available may fit a
                            // waiting claim; one that went away loses its.
                            requeue_pending(&ctx);
                        }
                        Event::Deleted(v) => {
                            if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                                ctx.queue.add(claim_key(r));
                            }
                        }
                    }
                }
            })
        },
        {
            // A pod scheduled with a claim it waits for, or done with a
            // claim that is being deleted.
            let ctx = ctx.clone();
            let mut rx = pods.subscribe();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    let pod = match &*ev {
                        Event::Applied { new, .. } => new,
                        Event::Deleted(p) => p,
                    };
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    for claim in claims_of(pod) {
                        ctx.queue.add(format!("{ns}/{claim}"));
                    }
                }
            })
        },
        {
            let ctx = ctx.clone();
            let mut rx = classes.subscribe();
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    requeue_pending(&ctx);
                }
            })
        },
        claims.start(),
        volumes.start(),
        classes.start(),
        pods.start(),
        nodes.start(),
    ];
    let synced = async {
        claims.synced().await;
        volumes.synced().await;
        classes.synced().await;
        pods.synced().await;
        nodes.synced().await;
    };
    let worker = || {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            super::work(
                "persistentvolume",
                &ctx.queue,
                |key| sync(ctx.clone(), key),
                |e: &client::Error| e.is_conflict() || e.is_not_found(),
            )
            .await;
        })
    };
    tracing::info!("persistent volume controller started");
    super::run_until_stopped(tasks, synced, &ctx.queue, worker, stop).await;
    drop((claims, volumes, classes, pods, nodes));
}

fn requeue_pending(ctx: &Ctx) {
    for c in ctx.claims.list() {
        if c.spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none()
        {
            ctx.queue.add(key_of(&c.metadata));
        }
    }
}

/// The claims a pod's volumes name.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// Claims are keyed `namespace/name`, volumes by their name.
async fn sync(ctx: Arc<Ctx>, key: String) -> Result<Option<Duration>, client::Error> {
    if key.contains('/') {
        match ctx.claims.get(&key) {
            Some(c) => sync_claim(&ctx, &c).await,
            None => Ok(None),
        }
    } else {
        match ctx.volumes.get(&key) {
            Some(v) => sync_volume(&ctx, &v).await,
            None => Ok(None),
        }
    }
}

fn quantity_bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i128 {
    q.and_then(|q| skiff_sched::Quantity::parse(&q.0).ok())
        .and_then(|q| q.value().ok())
        .map_or(0, i128::from)
}

fn requested(c: &PersistentVolumeClaim) -> i128 {
    quantity_bytes(
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

fn capacity(v: &PersistentVolume) -> i128 {
    quantity_bytes(
        v.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

/// The claim's class: `None` for none at all (`""`, or unset once the
/// default class admission has run).
fn class_of_claim(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|s| !s.is_empty())
}

fn class_of_volume(v: &PersistentVolume) -> Option<&str> {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|s| !s.is_empty())
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether volume `v` may be bound to claim `c`, as the PV controller's
/// `FindMatchingVolume` decides.
pub fn fits(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let (Some(cs), Some(vs)) = (c.spec.as_ref(), v.spec.as_ref()) else {
        return false;
    };
    if let Some(r) = &vs.claim_ref {
        // Pre-bound: to this claim only.
        let ours = r.name == c.metadata.name
            && r.namespace == c.metadata.namespace
            && r.uid
                .as_ref()
                .is_none_or(|u| Some(u) == c.metadata.uid.as_ref());
        if !ours {
            return false;
        }
    } else if phase_of_volume(v) != "Available" && !phase_of_volume(v).is_empty() {
        return false;
    }
    if v.metadata.deletion_timestamp.is_some() || class_of_claim(c) != class_of_volume(v) {
        return false;
    }
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    if mode(cs.volume_mode.as_ref()) != mode(vs.volume_mode.as_ref()) {
        return false;
    }
    let offered = vs.access_modes.clone().unwrap_or_default();
    if !cs
        .access_modes
        .iter()
        .flatten()
        .all(|m| offered.contains(m))
    {
        return false;
    }
    if capacity(v) < requested(c) {
        return false;
    }
    if let Some(sel) = &cs.selector {
        let labels = v.metadata.labels.clone().unwrap_or_default();
        let parsed = serde_json::to_value(sel)
            .map_err(|_| ())
            .and_then(|j| LabelSelector::from_json(&j).map_err(|_| ()));
        match parsed {
            Ok(s) if s.matches(&labels) => {}
            _ => return false,
        }
    }
    true
}

async fn sync_claim(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
) -> Result<Option<Duration>, client::Error> {
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    let name = c.metadata.name.clone().unwrap_or_default();
    if c.metadata.deletion_timestamp.is_some() {
        // It goes once no pod that may still run uses it.
        let in_use = ctx.pods.list().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
                && claims_of(p).contains(&name)
        });
        if !in_use {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(&ctx.client, &ns);
            release_finalizer(&claims, &c.metadata, PVC_PROTECTION).await?;
        }
        return Ok(None);
    }
    let bound_to = c.spec.as_ref().and_then(|s| s.volume_name.clone());
    if let Some(vname) = bound_to.filter(|v| !v.is_empty()) {
        let volume = ctx.volumes.get(&vname);
        let ours = volume.as_ref().is_some_and(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.is_none() || r.uid == c.metadata.uid)
        });
        return match volume {
            Some(v) if ours => {
                complete_binding(ctx, c, &v).await?;
                Ok(None)
            }
            // The volume is gone or taken: the data is lost to this claim.
            _ => {
                set_claim_phase(ctx, c, "Lost", None).await?;
                Ok(None)
            }
        };
    }
    // A volume that fits, pre-bound ones first, then the smallest.
    let mut candidates: Vec<Arc<PersistentVolume>> = ctx
        .volumes
        .list()
        .into_iter()
        .filter(|v| fits(c, v))
        .collect();
    candidates.sort_by_key(|v| {
        (
            v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none(),
            capacity(v),
        )
    });
    if let Some(v) = candidates.first() {
        return bind(ctx, c, v).await.map(|()| None);
    }
    let Some(class_name) = class_of_claim(c) else {
        // No class: only a volume made by hand will do.
        return set_claim_phase(ctx, c, "Pending", None)
            .await
            .map(|()| None);
    };
    let Some(class) = ctx.classes.get(class_name) else {
        let message = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
        ctx.recorder
            .warning(reference(c), "ProvisioningFailed", message)
            .await;
        return set_claim_phase(ctx, c, "Pending", None)
            .await
            .map(|()| None);
    };
    if class.provisioner != PROVISIONER {
        ctx.recorder
            .normal(
                reference(c),
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                ),
            )
            .await;
        return set_claim_phase(ctx, c, "Pending", None)
            .await
            .map(|()| None);
    }
    let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    let node = if wait {
        // The node of the first pod scheduled with this claim.
        let pods = ctx.pods.list();
        let consumer = pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
                && p.metadata.deletion_timestamp.is_none()
                && claims_of(p).contains(&name)
        });
        match consumer.and_then(|p| p.spec.as_ref()?.node_name.clone()) {
            Some(n) => n,
            None => {
                ctx.recorder
                    .normal(
                        reference(c),
                        "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding".to_string(),
                    )
                    .await;
                return set_claim_phase(ctx, c, "Pending", None)
                    .await
                    .map(|()| None);
            }
        }
    } else {
        let mut offering: Vec<String> = ctx
            .nodes
            .list()
            .iter()
            .filter(|n| storage_dir(n).is_some())
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        offering.sort();
        match offering.into_iter().next() {
            Some(n) => n,
            None => return Ok(Some(Duration::from_secs(5))),
        }
    };
    let Some(dir) = ctx.nodes.get(&node).as_deref().and_then(storage_dir) else {
        ctx.recorder
            .warning(
                reference(c),
                "ProvisioningFailed",
                format!("node {node} offers no local storage (its agent publishes none)"),
            )
            .await;
        return Ok(Some(Duration::from_secs(10)));
    };
    let volume = provisioned_volume(c, &class, &node, &dir);
    let api: Api<PersistentVolume> = Api::all(&ctx.client);
    let created = match api.create(&volume).await {
        Ok(v) => v,
        Err(e) if e.is_already_exists() => {
            return Ok(Some(Duration::from_millis(200)));
        }
        Err(e) => return Err(e),
    };
    ctx.recorder
        .normal(
            reference(c),
            "ProvisioningSucceeded",
            format!(
                "Successfully provisioned volume {} on node {node}",
                created.metadata.name.as_deref().unwrap_or_default()
            ),
        )
        .await;
    bind(ctx, c, &created).await.map(|()| None)
}

/// The directory a node's agent keeps provisioned volumes in.
pub fn storage_dir(n: &Node) -> Option<String> {
    n.metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_STORAGE)
        .filter(|d| d.starts_with('/'))
        .cloned()
}

/// The volume made for claim `c` on `node`: `DIR/pvc-UID_NS_NAME`.
fn provisioned_volume(
    c: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    dir: &str,
) -> PersistentVolume {
    let uid = c.metadata.uid.clone().unwrap_or_default();
    let ns = c.metadata.namespace.clone().unwrap_or_default();
    let name = c.metadata.name.clone().unwrap_or_default();
    let spec = c.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map_or_else(|| "0".to_string(), |q| q.0.clone());
    let v = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {
            "name": format!("pvc-{uid}"),
            "annotations": {ANNOTATION_PROVISIONED_BY: PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {
                "path": format!("{}/pvc-{uid}_{ns}_{name}", dir.trim_end_matches('/')),
                "type": "DirectoryOrCreate",
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
            ]}]}},
            "claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": ns, "name": name, "uid": uid,
            },
        },
    });
    serde_json::from_value(v).expect("a PersistentVolume")
}

/// Binds `v` to `c`: the volume's `claimRef` first (so that no other claim
/// takes it), then the claim's `volumeName`, then both statuses.
async fn bind(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
    v: &PersistentVolume,
) -> Result<(), client::Error> {
    let vname = v.metadata.name.clone().unwrap_or_default();
    let volumes: Api<PersistentVolume> = Api::all(&ctx.client);
    let claim_ref = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "namespace": c.metadata.namespace, "name": c.metadata.name,
        "uid": c.metadata.uid, "resourceVersion": c.metadata.resource_version,
    });
    let v = volumes
        .patch(
            &vname,
            PatchType::Merge,
            &json!({
                "metadata": {"resourceVersion": v.metadata.resource_version},
                "spec": {"claimRef": claim_ref},
            }),
        )
        .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        &ctx.client,
        c.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let c = claims
        .patch(
            c.metadata.name.as_deref().unwrap_or_default(),
            PatchType::Merge,
            &json!({
                "metadata": {
                    "resourceVersion": c.metadata.resource_version,
                    "annotations": {
                        ANNOTATION_BIND_COMPLETED: "yes",
                        ANNOTATION_BOUND_BY_CONTROLLER: "yes",
                    },
                },
                "spec": {"volumeName": vname},
            }),
        )
        .await?;
    complete_binding(ctx, &c, &v).await
}

/// The statuses of a bound pair: the volume `Bound`, the claim `Bound`
/// with the volume's capacity and access modes.
async fn complete_binding(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
    v: &PersistentVolume,
) -> Result<(), client::Error> {
    if phase_of_volume(v) != "Bound" {
        set_volume_phase(ctx, v, "Bound").await?;
    }
    let spec = v.spec.clone().unwrap_or_default();
    let extra = json!({
        "accessModes": spec.access_modes.unwrap_or_default(),
        "capacity": spec.capacity.unwrap_or_default(),
    });
    set_claim_phase(ctx, c, "Bound", Some(extra)).await
}

async fn set_claim_phase(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
    phase: &str,
    extra: Option<Value>,
) -> Result<(), client::Error> {
    let mut status = json!({"phase": phase});
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            status[k] = v;
        }
    }
    let current = serde_json::to_value(c.status.clone().unwrap_or_default()).unwrap_or_default();
    let unchanged = status
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| current.get(k) == Some(v)));
    if unchanged {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        &ctx.client,
        c.metadata.namespace.as_deref().unwrap_or_default(),
    );
    claims
        .patch_status(
            c.metadata.name.as_deref().unwrap_or_default(),
            PatchType::Merge,
            &json!({"status": status}),
        )
        .await
        .map(|_| ())
}

async fn set_volume_phase(
    ctx: &Ctx,
    v: &PersistentVolume,
    phase: &str,
) -> Result<(), client::Error> {
    let volumes: Api<PersistentVolume> = Api::all(&ctx.client);
    volumes
        .patch_status(
            v.metadata.name.as_deref().unwrap_or_default(),
            PatchType::Merge,
            &json!({"status": {"phase": phase}}),
        )
        .await
        .map(|_| ())
}

/// The `namespace/name` key of the claim a volume's `claimRef` names.
fn claim_key(r: &ObjectReference) -> String {
    format!(
        "{}/{}",
        r.namespace.as_deref().unwrap_or_default(),
        r.name.as_deref().unwrap_or_default()
    )
}

/// The claim a volume's `claimRef` names, if it is still that claim (a
/// reference without a uid is a pre-binding: the claim of that name).
fn referenced_claim(ctx: &Ctx, r: &ObjectReference) -> Option<Arc<PersistentVolumeClaim>> {
    ctx.claims
        .get(&claim_key(r))
        .filter(|c| r.uid.is_none() || c.metadata.uid == r.uid)
}

/// Takes finalizer `f` off an object being deleted (the API server then
/// completes the deletion if it was the last).
async fn release_finalizer<K>(
    api: &Api<K>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> Result<(), client::Error>
where
    K: client::Object,
{
    let list = meta.finalizers.clone().unwrap_or_default();
    if !list.iter().any(|x| x == f) {
        return Ok(());
    }
    let rest: Vec<&String> = list.iter().filter(|x| *x != f).collect();
    let patch = json!({"metadata": {
        "resourceVersion": meta.resource_version,
        "finalizers": rest,
    }});
    match api
        .patch(
            meta.name.as_deref().unwrap_or_default(),
            PatchType::Merge,
            &patch,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

async fn sync_volume(ctx: &Ctx, v: &PersistentVolume) -> Result<Option<Duration>, client::Error> {
    if v.metadata.deletion_timestamp.is_some() {
        // It goes once no claim is bound to it.
        let bound = phase_of_volume(v) == "Bound"
            && v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| referenced_claim(ctx, r).is_some());
        if !bound {
            let volumes: Api<PersistentVolume> = Api::all(&ctx.client);
            release_finalizer(&volumes, &v.metadata, PV_PROTECTION).await?;
        }
        return Ok(None);
    }
    let spec = v.spec.clone().unwrap_or_default();
    let Some(r) = spec.claim_ref.as_ref() else {
        if phase_of_volume(v) != "Available" {
            set_volume_phase(ctx, v, "Available").await?;
        }
        return Ok(None);
    };
    let claimed = referenced_claim(ctx, r).is_some();
    if claimed || r.uid.is_none() {
        // Bound, or pre-bound and waiting for its claim.
        if r.uid.is_none() && phase_of_volume(v) != "Available" && !claimed {
            set_volume_phase(ctx, v, "Available").await?;
        }
        return Ok(None);
    }
    // The claim is gone: released, then reclaimed as the policy says.
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    let ours = v
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER);
    if policy == "Delete" && ours {
        let volumes: Api<PersistentVolume> = Api::all(&ctx.client);
        let name = v.metadata.name.clone().unwrap_or_default();
        match volumes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        return Ok(None);
    }
    if phase_of_volume(v) != "Released" {
        set_volume_phase(ctx, v, "Released").await?;
        if policy == "Delete" {
            ctx.recorder
                .warning(
                    reference(v),
                    "VolumeFailedDelete",
                    "a volume skiff did not provision is not deleted: it stays Released"
                        .to_string(),
                )
                .await;
        }
    }
    Ok(None)
}

/// The node constraints of the volumes a pod's claims are bound to
/// (`spec.nodeAffinity.required` of each), for the scheduler: every one
/// must hold. `Err` says why the pod cannot be placed yet.
pub fn volume_node_terms(
    pod: &Pod,
    claims: &Store<PersistentVolumeClaim>,
    volumes: &Store<PersistentVolume>,
    classes: &Store<StorageClass>,
) -> Result<Vec<Vec<k8s_openapi::api::core::v1::NodeSelectorTerm>>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Vec::new();
    for name in claims_of(pod) {
        let Some(c) = claims.get(&format!("{ns}/{name}")) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if c.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        match c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
            Some(v) if !v.is_empty() => {
                let Some(pv) = volumes.get(v) else {
                    return Err(format!(
                        "persistentvolumeclaim \"{name}\" is bound to a missing volume {v}"
                    ));
                };
                if let Some(terms) = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                {
                    out.push(terms.node_selector_terms.clone());
                }
            }
            _ => {
                let waits = class_of_claim(&c)
                    .and_then(|k| classes.get(k))
                    .is_some_and(|k| {
                        k.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                    });
                if !waits {
                    return Err("pod has unbound immediate PersistentVolumeClaims".into());
                }
            }
        }
    }
    Ok(out)
}
