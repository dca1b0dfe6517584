//! The Endpoints and EndpointSlice controllers, as kube-controller-manager's:
//! for every Service with a selector, the addresses of the pods it selects.
//!
//! - `v1` Endpoints, named after the Service: subsets of ready
//!   `addresses` and `notReadyAddresses`, each with the ports resolved
//!   from the Service's `targetPort` (a number, or a named container port).
//!   Terminating pods are left out, unless the Service publishes not-ready
//!   addresses.
//! - `discovery.k8s.io/v1` EndpointSlices named `<service>-<random>`,
//!   labelled with the Service's name and this controller, owned by the
//!   Service, at most 100 endpoints each, one slice set per port list and
//!   address type. Terminating pods stay, not ready but still serving if
//!   they are. A Service without pods keeps one empty placeholder slice.
//!
//! Endpoints stay in the slice they are in (updates touch only the slices
//! whose content changed); the cache trails this controller's own slice
//! writes, so a Service is not synced again until its slices in the cache
//! are at least as new as what it last wrote (client-go's
//! `EndpointSliceTracker`). Services without a selector are left to their
//! users.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, DeleteParams, ListParams, Object, key_of, split_key};
use tokio::sync::{mpsc, watch};

use super::workloads::pods::is_ready;

type Result<T, E = client::Error> = std::result::Result<T, E>;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// How long a slice write may stay unseen by the cache before it is
/// presumed overtaken (deleted by someone else, say).
const TRACKER_TIMEOUT: Duration = Duration::from_secs(5);
const WORKERS: usize = 2;

struct Ctx {
    client: Client,
    services: Arc<Store<Service>>,
    pods: Arc<Store<Pod>>,
    endpoints: Arc<Store<Endpoints>>,
    slices: Arc<Store<EndpointSlice>>,
    queue: WorkQueue,
    /// Service key → slice name → what was last written.
    written: Mutex<HashMap<String, HashMap<String, Written>>>,
}

/// A slice write: the resourceVersion it made (`None`: a delete), and when.
type Written = (Option<u64>, Instant);

/// Runs both controllers until `stop` turns true.
pub async fn run(client: Client, mut stop: watch::Receiver<bool>) {
    let services: Arc<Informer<Service>> = Informer::new(Api::all(&client), ListParams::default());
    let pods: Arc<Informer<Pod>> = Informer::new(Api::all(&client), ListParams::default());
    let endpoints: Arc<Informer<Endpoints>> =
        Informer::new(Api::all(&client), ListParams::default());
    let slices: Arc<Informer<EndpointSlice>> = Informer::new(
        Api::all(&client),
        ListParams::default().labels(format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    );
    let ctx = Arc::new(Ctx {
        client,
        services: services.store(),
        pods: pods.store(),
        endpoints: endpoints.store(),
        slices: slices.store(),
        queue: WorkQueue::new(),
        written: Mutex::default(),
    });
    let mut tasks = vec![
        route(&ctx, services.subscribe(), |c, e| {
            c.queue.add(key_of(&e.object().metadata))
        }),
        route(&ctx, pods.subscribe(), route_pod),
        route(&ctx, endpoints.subscribe(), route_endpoints),
        route(&ctx, slices.subscribe(), route_slice),
        services.start(),
        pods.start(),
        endpoints.start(),
        slices.start(),
    ];
    let synced = async {
        services.synced().await;
        pods.synced().await;
        endpoints.synced().await;
        slices.synced().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    tracing::info!("endpoints controllers started");
    for _ in 0..WORKERS {
        tasks.push(tokio::spawn(worker(ctx.clone())));
    }
    let _ = stop.wait_for(|s| *s).await;
    ctx.queue.shut_down();
    for t in tasks {
        t.abort();
    }
    drop((services, pods, endpoints, slices));
}

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

/// A pod wakes the Services that select it, before or after the change,
/// if anything endpoints show of it changed.
fn route_pod(ctx: &Ctx, ev: &Event<Pod>) {
    let pod = ev.object();
    let old = match ev {
        Event::Applied {
            old: Some(old),
            new,
        } => {
            if PodView::of(old) == PodView::of(new) {
                return;
            }
            Some(old)
        }
        _ => None,
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    for svc in ctx.services.list_in(ns) {
        if selects(&svc, pod) || old.is_some_and(|o| selects(&svc, o)) {
            ctx.queue.add(key_of(&svc.metadata));
        }
    }
}

/// Endpoints written by someone else are put back; deleted ones recreated.
fn route_endpoints(ctx: &Ctx, ev: &Event<Endpoints>) {
    let key = key_of(&ev.object().metadata);
    let managed = ctx
        .services
        .get(&key)
        .is_some_and(|s| selector(&s).is_some());
    if managed || matches!(ev, Event::Deleted(_)) {
        ctx.queue.add(key);
    }
}

fn route_slice(ctx: &Ctx, ev: &Event<EndpointSlice>) {
    let m = &ev.object().metadata;
    if let Some(svc) = m.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
        let ns = m.namespace.as_deref().unwrap_or("");
        ctx.queue.add(format!("{ns}/{svc}"));
    }
}

/// What Endpoints and slices show of a pod: a change elsewhere (most status
/// updates) wakes no Service.
#[derive(PartialEq)]
struct PodView<'a> {
    labels: Option<&'a BTreeMap<String, String>>,
    ip: Option<&'a str>,
    ready: bool,
    terminating: bool,
    phase: Option<&'a str>,
    node: Option<&'a str>,
    hostname: Option<&'a str>,
    subdomain: Option<&'a str>,
}

impl PodView<'_> {
    fn of(pod: &Pod) -> PodView<'_> {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        PodView {
            labels: pod.metadata.labels.as_ref(),
            ip: status.and_then(|s| s.pod_ip.as_deref()),
            ready: is_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            phase: status.and_then(|s| s.phase.as_deref()),
            node: spec.and_then(|s| s.node_name.as_deref()),
            hostname: spec.and_then(|s| s.hostname.as_deref()),
            subdomain: spec.and_then(|s| s.subdomain.as_deref()),
        }
    }
}

async fn worker(ctx: Arc<Ctx>) {
    let sync = |key: String| {
        let ctx = ctx.clone();
        async move { sync(&ctx, &key).await }
    };
    super::work("endpoints", &ctx.queue, sync, |e: &client::Error| {
        e.is_conflict() || e.is_already_exists()
    })
    .await;
}

async fn sync(ctx: &Ctx, key: &str) -> Result<Option<Duration>> {
    let (ns, name) = split_key(key);
    let ns = ns.unwrap_or("default");
    let Some(svc) = ctx.services.get(key) else {
        // The Service is gone: so are its endpoints.
        if let Some(ep) = ctx.endpoints.get(key) {
            let params =
                DeleteParams::default().with_uid(ep.metadata.uid.clone().unwrap_or_default());
            Api::<Endpoints>::namespaced(&ctx.client, ns)
                .delete(name, &params)
                .await?;
        }
        for s in slices_of(ctx, ns, name) {
            delete_slice(ctx, key, ns, &s).await?;
        }
        return Ok(None);
    };
    let spec = svc.spec.as_ref();
    if selector(&svc).is_none() || spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Ok(None);
    }
    if key == "default/kubernetes" && ctx.endpoints.get(key).is_some() {
        // The API server's own address, not pods'.
        return Ok(None);
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| selects(&svc, p))
        .collect();
    sync_endpoints(ctx, &svc, &pods).await?;

    let existing = slices_of(ctx, ns, name);
    if cache_is_behind(ctx, key, &existing) {
        return Ok(Some(Duration::from_millis(200)));
    }
    let plan = plan_slices(&svc, desired_slices(&svc, &pods), &existing);
    let api: Api<EndpointSlice> = Api::namespaced(&ctx.client, ns);
    for s in &plan.create {
        let created = api.create(s).await?;
        track(ctx, key, &created.metadata, false);
    }
    for s in &plan.update {
        let updated = api.replace(s).await?;
        track(ctx, key, &updated.metadata, false);
    }
    for s in &plan.delete {
        delete_slice(ctx, key, ns, s).await?;
    }
    Ok(None)
}

async fn sync_endpoints(ctx: &Ctx, svc: &Service, pods: &[Arc<Pod>]) -> Result<()> {
    let subsets = desired_subsets(svc, pods);
    let labels = endpoints_labels(svc);
    let key = key_of(&svc.metadata);
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Endpoints> = Api::namespaced(&ctx.client, ns);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    match ctx.endpoints.get(&key) {
        Some(ep) => {
            let same = ep.subsets.as_deref().unwrap_or_default()
                == subsets.as_deref().unwrap_or_default()
                && ep.metadata.labels.clone().unwrap_or_default() == labels;
            if !same {
                let mut ep = (*ep).clone();
                ep.subsets = subsets;
                ep.metadata.labels = Some(labels);
                api.replace(&ep).await?;
            }
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: svc.metadata.name.clone(),
                    namespace: Some(ns.to_string()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets,
            };
            api.create(&ep).await?;
        }
    }
    Ok(())
}

/// Whether a slice is labelled as one of `service`'s.
pub fn belongs_to(slice: &EndpointSlice, service: &str) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .is_some_and(|n| n == service)
}

fn slices_of(ctx: &Ctx, ns: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
    let mut v: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .list_in(ns)
        .into_iter()
        .filter(|s| belongs_to(s, service))
        .collect();
    v.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    v
}

async fn delete_slice(ctx: &Ctx, key: &str, ns: &str, s: &EndpointSlice) -> Result<()> {
    let name = s.metadata.name.as_deref().unwrap_or("");
    let params = DeleteParams::default().with_uid(s.metadata.uid.clone().unwrap_or_default());
    Api::<EndpointSlice>::namespaced(&ctx.client, ns)
        .delete(name, &params)
        .await?;
    track(ctx, key, &s.metadata, true);
    Ok(())
}

fn rv_of(m: &ObjectMeta) -> Option<u64> {
    m.resource_version.as_deref().and_then(|r| r.parse().ok())
}

/// Remembers a slice write, until the cache shows it.
fn track(ctx: &Ctx, key: &str, m: &ObjectMeta, deleted: bool) {
    let Some(name) = m.name.clone() else { return };
    let rv = if deleted { None } else { rv_of(m) };
    ctx.written
        .lock()
        .entry(key.to_string())
        .or_default()
        .insert(name, (rv, Instant::now()));
}

/// Whether the cache has yet to show a slice write of this Service;
/// forgets the writes it shows.
fn cache_is_behind(ctx: &Ctx, key: &str, cached: &[Arc<EndpointSlice>]) -> bool {
    let mut written = ctx.written.lock();
    let Some(mine) = written.get_mut(key) else {
        return false;
    };
    mine.retain(|name, (rv, at)| {
        let seen = cached
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name.as_str()));
        let caught_up = match (rv, seen) {
            (None, seen) => seen.is_none(),
            (Some(rv), Some(s)) => rv_of(&s.metadata).is_some_and(|c| c >= *rv),
            (Some(_), None) => false,
        };
        !caught_up && at.elapsed() < TRACKER_TIMEOUT
    });
    let behind = !mine.is_empty();
    if !behind {
        written.remove(key);
    }
    behind
}

// ---------------------------------------------------------------------------
// What the endpoints should be: functions of the Service and its pods.

fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn publishes_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

/// Kubernetes' `ShouldPodBeInEndpoints`: a pod with an address that has
/// not finished for good.
fn in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => !matches!(phase, Some("Failed" | "Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The container port a Service port sends to on this pod (Kubernetes'
/// `FindPort`): a number as is, a name looked up with the same protocol.
fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// `spec.hostname`, when the pod names this Service as its subdomain.
fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// One port of a subset: name, number, protocol, appProtocol. `None` is
/// the "no ports" of a headless Service without any.
type PortKey = Option<(String, i32, String, Option<String>)>;
/// An address in a subset: (ip, pod uid).
type AddressKey = (String, String);
/// An address and whether it is ready.
type Address = (EndpointAddress, bool);

/// The Endpoints controller's subsets (with `RepackSubsets`): every
/// address under every port it has, then ports with the same addresses
/// share a subset.
fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = publishes_not_ready(svc);
    let ports = service_ports(svc);
    // Port → address (ip, pod uid) → (address, ready).
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddressKey, Address>> = BTreeMap::new();
    for pod in pods {
        if !in_endpoints(pod, publish) {
            continue;
        }
        let ip = pod_ip(pod).unwrap_or_default().to_string();
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = publish || is_ready(pod);
        let addr_key = (ip, pod.metadata.uid.clone().unwrap_or_default());
        let mut keys: Vec<PortKey> = Vec::new();
        if ports.is_empty() {
            if headless(svc) {
                keys.push(None);
            }
        } else {
            for sp in ports {
                if let Some(n) = find_port(pod, sp) {
                    keys.push(Some((
                        sp.name.clone().unwrap_or_default(),
                        n,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        sp.app_protocol.clone(),
                    )));
                }
            }
        }
        for k in keys {
            by_port
                .entry(k)
                .or_default()
                .insert(addr_key.clone(), (address.clone(), ready));
        }
    }
    // Address set → its ports.
    type AddressSet = Vec<(AddressKey, bool)>;
    let mut by_addresses: BTreeMap<AddressSet, (Vec<PortKey>, Vec<Address>)> = BTreeMap::new();
    for (port, addrs) in by_port {
        let set: AddressSet = addrs.iter().map(|(k, (_, r))| (k.clone(), *r)).collect();
        let entry = by_addresses
            .entry(set)
            .or_insert_with(|| (Vec::new(), addrs.into_values().collect()));
        entry.0.push(port);
    }
    by_addresses
        .into_values()
        .map(|(ports, addrs)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|(_, r)| *r);
            let list = |v: Vec<Address>| {
                let v: Vec<EndpointAddress> = v.into_iter().map(|(a, _)| a).collect();
                (!v.is_empty()).then_some(v)
            };
            let ports: Vec<CorePort> = ports
                .into_iter()
                .flatten()
                .map(|(name, port, protocol, app_protocol)| CorePort {
                    name: (!name.is_empty()).then_some(name),
                    port,
                    protocol: Some(protocol),
                    app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: list(ready),
                not_ready_addresses: list(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// Endpoints that share an address type and a port list, which go into
/// the same slices.
#[derive(Debug, Default)]
struct SliceGroup {
    address_type: String,
    ports: Vec<EndpointPort>,
    /// Sorted by address.
    endpoints: Vec<Endpoint>,
}

fn group_key(address_type: &str, ports: &[EndpointPort]) -> String {
    serde_json::to_string(&(address_type, ports)).unwrap_or_default()
}

/// The endpoints of every selected pod, grouped for slices. A Service
/// without any gets the placeholder group (IPv4, no ports, no endpoints).
fn desired_slices(svc: &Service, pods: &[Arc<Pod>]) -> BTreeMap<String, SliceGroup> {
    let publish = publishes_not_ready(svc);
    let mut groups: BTreeMap<String, SliceGroup> = BTreeMap::new();
    for pod in pods {
        if !in_endpoints(pod, true) {
            continue;
        }
        let ip = pod_ip(pod).unwrap_or_default().to_string();
        let address_type = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let ports: Vec<EndpointPort> = service_ports(svc)
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let serving = is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                // Never ready while terminating, unless everything is
                // published regardless.
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname(svc, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        };
        groups
            .entry(group_key(address_type, &ports))
            .or_insert_with(|| SliceGroup {
                address_type: address_type.into(),
                ports,
                endpoints: Vec::new(),
            })
            .endpoints
            .push(endpoint);
    }
    for g in groups.values_mut() {
        g.endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    if groups.is_empty() {
        groups.insert(
            group_key("IPv4", &[]),
            SliceGroup {
                address_type: "IPv4".into(),
                ..Default::default()
            },
        );
    }
    groups
}

/// The slice writes that turn `existing` into `groups`.
#[derive(Debug, Default)]
struct SlicePlan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<Arc<EndpointSlice>>,
}

fn service_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints_labels(svc);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// Keeps every endpoint in the slice it is in, fills slices with room
/// before making new ones, and deletes slices left empty (but one
/// placeholder) or whose port list no endpoint has any more.
fn plan_slices(
    svc: &Service,
    groups: BTreeMap<String, SliceGroup>,
    existing: &[Arc<EndpointSlice>],
) -> SlicePlan {
    let labels = slice_labels(svc);
    let owners = vec![service_ref(svc)];
    let mut plan = SlicePlan::default();
    let mut by_group: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
    for s in existing {
        let key = group_key(&s.address_type, s.ports.as_deref().unwrap_or_default());
        by_group.entry(key).or_default().push(s.clone());
    }
    let shape = |group: &SliceGroup, mut endpoints: Vec<Endpoint>, base: Option<&EndpointSlice>| {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let mut s = base.cloned().unwrap_or_else(|| EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", svc.metadata.name.as_deref().unwrap_or(""))),
                namespace: svc.metadata.namespace.clone(),
                ..Default::default()
            },
            ..Default::default()
        });
        s.address_type = group.address_type.clone();
        s.endpoints = endpoints;
        s.ports = (!group.ports.is_empty()).then(|| group.ports.clone());
        s.metadata.labels = Some(labels.clone());
        s.metadata.owner_references = Some(owners.clone());
        s
    };
    for (key, group) in &groups {
        let slices = by_group.remove(key).unwrap_or_default();
        let placeholder = group.endpoints.is_empty();
        let mut remaining: BTreeMap<&[String], &Endpoint> = group
            .endpoints
            .iter()
            .map(|e| (e.addresses.as_slice(), e))
            .collect();
        let mut filled: Vec<(Arc<EndpointSlice>, Vec<Endpoint>)> = slices
            .into_iter()
            .map(|s| {
                let kept = s
                    .endpoints
                    .iter()
                    .filter_map(|e| remaining.remove(e.addresses.as_slice()).cloned())
                    .collect();
                (s, kept)
            })
            .collect();
        let mut rest: Vec<Endpoint> = remaining.into_values().cloned().collect();
        for (_, eps) in filled.iter_mut() {
            let room = MAX_ENDPOINTS_PER_SLICE
                .saturating_sub(eps.len())
                .min(rest.len());
            eps.extend(rest.drain(..room));
        }
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            plan.create.push(shape(group, chunk.to_vec(), None));
        }
        if placeholder && filled.is_empty() {
            plan.create.push(shape(group, Vec::new(), None));
        }
        for (i, (s, eps)) in filled.into_iter().enumerate() {
            if eps.is_empty() && !(placeholder && i == 0) {
                plan.delete.push(s);
                continue;
            }
            let want = shape(group, eps, Some(&s));
            if !same_slice(&want, &s) {
                plan.update.push(want);
            }
        }
    }
    plan.delete.extend(by_group.into_values().flatten());
    plan
}

fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let mut b_endpoints = b.endpoints.clone();
    b_endpoints.sort_by(|x, y| x.addresses.cmp(&y.addresses));
    a.address_type == b.address_type
        && a.endpoints == b_endpoints
        && a.ports.as_deref().unwrap_or_default() == b.ports.as_deref().unwrap_or_default()
        && a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn svc(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..Default::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn subsets_split_ready_from_not_ready_and_resolve_named_ports() {
        let s = svc(vec![
            port("http", 80, IntOrString::String("http".into())),
            port("metrics", 9090, IntOrString::Int(9100)),
        ]);
        let mut terminating = (*pod("c", "10.0.0.3", true)).clone();
        terminating.metadata.deletion_timestamp = Some(Time(crate::controllers::events::now()));
        let pods = vec![
            pod("b", "10.0.0.2", false),
            pod("a", "10.0.0.1", true),
            Arc::new(terminating),
        ];
        let subsets = desired_subsets(&s, &pods);
        assert_eq!(subsets.len(), 1);
        let ips = |v: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            v.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), vec!["10.0.0.1"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.0.0.2"]);
        let ports: Vec<(Option<String>, i32)> = subsets[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![(Some("http".into()), 8080), (Some("metrics".into()), 9100)]
        );

        // Slices keep the terminating pod: serving, not ready.
        let groups = desired_slices(&s, &pods);
        assert_eq!(groups.len(), 1);
        let g = groups.values().next().unwrap();
        let conds: Vec<(String, EndpointConditions)> = g
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.clone().unwrap()))
            .collect();
        let c = |r, s, t| EndpointConditions {
            ready: Some(r),
            serving: Some(s),
            terminating: Some(t),
        };
        assert_eq!(
            conds,
            vec![
                ("10.0.0.1".into(), c(true, true, false)),
                ("10.0.0.2".into(), c(false, false, false)),
                ("10.0.0.3".into(), c(false, true, true)),
            ]
        );
    }

    #[test]
    fn slices_hold_at_most_100_and_change_only_what_changed() {
        let s = svc(vec![port("http", 80, IntOrString::Int(8080))]);
        let pods: Vec<Arc<Pod>> = (0..150)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    true,
                )
            })
            .collect();
        let plan = plan_slices(&s, desired_slices(&s, &pods), &[]);
        assert_eq!(plan.create.len(), 2);
        assert_eq!(plan.create[0].endpoints.len(), 100);
        assert_eq!(plan.create[1].endpoints.len(), 50);
        assert!(
            plan.create
                .iter()
                .all(|c| c.metadata.generate_name.as_deref() == Some("web-"))
        );

        // As stored: named. Nothing changed, nothing to write.
        let stored: Vec<Arc<EndpointSlice>> = plan
            .create
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c.metadata.name = Some(format!("web-{i}"));
                Arc::new(c)
            })
            .collect();
        let plan = plan_slices(&s, desired_slices(&s, &pods), &stored);
        assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());

        // One pod turns unready: only its slice is rewritten (the second:
        // endpoints are ordered by address, and 10.1.0.99 comes last).
        let mut pods2 = pods.clone();
        pods2[99] = pod("p99", "10.1.0.99", false);
        let plan = plan_slices(&s, desired_slices(&s, &pods2), &stored);
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-1"));

        // No pods: an empty placeholder slice (without ports) replaces them.
        let plan = plan_slices(&s, desired_slices(&s, &[]), &stored);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty() && plan.create[0].ports.is_none());
        assert_eq!(plan.delete.len(), 2);
    }
}
