//! The DaemonSet controller: one pod per eligible node, pinned to it by a
//! required node affinity on `metadata.name` (the scheduler binds it), and
//! replaced node by node within `maxUnavailable` when the template changes.
//!
//! A node is eligible when the pod's `nodeName`, `nodeSelector` and
//! required node affinity allow it and its NoSchedule/NoExecute taints are
//! tolerated, counting the tolerations every daemon pod gets; a pod stays
//! on a node that becomes ineligible only through a NoSchedule taint.
//! Revisions are named by the template hash (label
//! `controller-revision-hash`) and kept as ControllerRevisions
//! (`revisions.rs`) for `kubectl rollout history|undo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::Api;

use super::expectations;
use super::owners::{claim, controlled_by, controller_ref, generate_name, scaled, selector_of};
use super::pods::{self, create_all, delete_all, from_template};
use super::{Ctx, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

pub const HASH_LABEL: &str = "controller-revision-hash";

/// What every daemon pod tolerates, so that it runs where ordinary pods
/// may not (`AddOrUpdateDaemonPodTolerations`).
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// Whether a node changed in a way that matters to DaemonSets.
pub fn node_changed(old: &Node, new: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone());
    let unschedulable = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable);
    old.metadata.labels != new.metadata.labels
        || taints(old) != taints(new)
        || unschedulable(old) != unschedulable(new)
        || ready(old) != ready(new)
}

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let exp_key = expectations::key("DaemonSet", key);
    let Some(ds) = ctx.daemon_sets.get(key) else {
        ctx.expectations.clear(&exp_key);
        return Ok(None);
    };
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(None);
    };
    let ns = ds.metadata.namespace.clone().unwrap_or_default();
    let selector = match selector_of(&spec.selector) {
        Ok(s) if !s.is_everything() => s,
        Ok(_) => {
            ctx.recorder(Kind::DaemonSet)
                .warning(
                    reference(&*ds),
                    "SelectingAll",
                    "This daemon set is selecting all pods. A non-empty selector is required.",
                )
                .await;
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(%key, "daemon set has an invalid selector: {e}");
            return Ok(None);
        }
    };
    let hash = super::owners::template_hash(
        &spec.template,
        ds.status.as_ref().and_then(|s| s.collision_count),
    );
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let needs_sync = ctx.expectations.satisfied(&exp_key);
    let mine = claim(
        &ctx.client,
        &controller_ref(&*ds),
        deleting,
        &selector,
        ctx.pods.list_in(&ns),
    )
    .await?;
    let nodes = ctx.nodes.list();
    let now = events::now();

    let mut err = None;
    if !deleting {
        super::revisions::ensure_daemon_set(ctx, &ds, &hash).await?;
    }
    if needs_sync && !deleting {
        err = manage(ctx, &ds, &nodes, &mine, &hash, &exp_key, now)
            .await
            .err();
    }
    let by_node = pods_by_node(&mine);
    let status = status_of(&ds, &nodes, &by_node, &hash, now);
    if ds.status.as_ref() != Some(&status) {
        let mut next = (*ds).clone();
        next.status = Some(status);
        Api::<DaemonSet>::namespaced(&ctx.client, &ns)
            .replace_status(&next)
            .await?;
    }
    if let Some(e) = err {
        return Err(e);
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok(pods::next_available(&mine, min_ready, now))
}

/// Creates the missing daemon pods and deletes surplus and misplaced ones;
/// then, once the cache has caught up, rolls one step of an update.
async fn manage(
    ctx: &Ctx,
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    mine: &[Arc<Pod>],
    hash: &str,
    exp_key: &str,
    now: Timestamp,
) -> Result<()> {
    let by_node = pods_by_node(mine);
    let (create_on, mut delete) = plan(ds, nodes, &by_node);
    // Pods waiting for a node that is gone will never run.
    let known: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node, ps) in &by_node {
        if !known.contains(&node.as_str()) {
            delete.extend(
                ps.iter()
                    .filter(|p| node_name(p).is_none() && p.metadata.deletion_timestamp.is_none())
                    .cloned(),
            );
        }
    }
    sync_nodes(ctx, ds, &create_on, &delete, hash, exp_key).await?;
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete")
        || !ctx.expectations.satisfied(exp_key)
    {
        return Ok(());
    }
    // Read the pods again: what this sync just created is in the cache now
    // (the expectations say so), and a node whose new pod is not yet
    // available must count against maxUnavailable.
    let uid = ds.metadata.uid.as_deref().unwrap_or("");
    let ns = ds.metadata.namespace.as_deref().unwrap_or("");
    let fresh: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| controlled_by(&p.metadata, uid))
        .collect();
    let old = rolling_update_victims(ds, nodes, &pods_by_node(&fresh), hash, now)?;
    sync_nodes(ctx, ds, &[], &old, hash, exp_key).await
}

async fn sync_nodes(
    ctx: &Ctx,
    ds: &DaemonSet,
    create_on: &[String],
    delete: &[Arc<Pod>],
    hash: &str,
    exp_key: &str,
) -> Result<()> {
    let rec = ctx.recorder(Kind::DaemonSet);
    let me = reference(ds);
    if !delete.is_empty() {
        delete_all(ctx, rec, &me, exp_key, delete).await?;
    }
    if create_on.is_empty() {
        return Ok(());
    }
    let new: Vec<Pod> = create_on.iter().map(|n| daemon_pod(ds, n, hash)).collect();
    let (_, err) = create_all(ctx, rec, &me, exp_key, new).await;
    err.map_or(Ok(()), Err)
}

/// The pod of `ds` for `node`: the template, the revision label, the
/// daemon tolerations, and a required affinity to that node alone.
fn daemon_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let spec = ds.spec.as_ref().expect("checked by sync");
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let name = ds.metadata.name.as_deref().unwrap_or("");
    let mut pod = from_template(
        &spec.template,
        ns,
        &generate_name(&format!("{name}-")),
        controller_ref(ds),
    );
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let ps = pod.spec.get_or_insert_with(PodSpec::default);
    add_daemon_tolerations(ps);
    let affinity = ps.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    pod
}

fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted: Vec<(&str, &str)> = DAEMON_TOLERATIONS.to_vec();
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let present = list.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some(effect)
                && t.toleration_seconds.is_none()
        });
        if !present {
            list.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    }
}

fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The node a daemon pod is for: where it is bound, or where its affinity
/// pins it (`GetTargetNodeName`).
fn target_node(p: &Pod) -> Option<&str> {
    if let Some(n) = node_name(p) {
        return Some(n);
    }
    let terms = &p
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| {
            f.key == "metadata.name"
                && f.operator == "In"
                && f.values.as_ref().is_some_and(|v| v.len() == 1)
        })
        .and_then(|f| f.values.as_ref()?.first().map(String::as_str))
}

fn pods_by_node(pods: &[Arc<Pod>]) -> HashMap<String, Vec<Arc<Pod>>> {
    let mut out: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods {
        if let Some(n) = target_node(p) {
            out.entry(n.to_string()).or_default().push(p.clone());
        }
    }
    out
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// Whether `node` satisfies a node selector term (an empty term matches
/// nothing, as in Kubernetes).
fn term_matches(t: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// Whether a daemon pod should be started on `node`, and whether one
/// already there should stay (`NodeShouldRunDaemonPod`).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return (false, false);
    };
    let name = node.metadata.name.as_deref().unwrap_or("");
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node))
        });
    if !selector_ok || !affinity_ok {
        return (false, false);
    }
    let mut with_defaults = spec.clone();
    add_daemon_tolerations(&mut with_defaults);
    let tolerations = with_defaults.tolerations.unwrap_or_default();
    let untolerated = |effects: &[&str]| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .any(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// Scheduled first, then oldest, then by name: the pod to keep first.
fn by_creation_and_phase(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    node_name(b)
        .is_some()
        .cmp(&node_name(a).is_some())
        .then_with(|| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Nodes that need a pod, and pods to delete: failed ones, duplicates, and
/// those on nodes they may no longer stay on (`podsShouldBeOnNode`).
fn plan(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
) -> (Vec<String>, Vec<Arc<Pod>>) {
    let mut create_on = Vec::new();
    let mut delete = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let (run, stay) = should_run(ds, node);
        let here = by_node.get(&name).map(Vec::as_slice).unwrap_or_default();
        if run && here.is_empty() {
            create_on.push(name);
        } else if stay {
            let mut running: Vec<Arc<Pod>> = Vec::new();
            for p in here {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if pods::phase(p) == "Failed" {
                    delete.push(p.clone());
                } else {
                    running.push(p.clone());
                }
            }
            running.sort_by(by_creation_and_phase);
            delete.extend(running.into_iter().skip(1));
        } else {
            delete.extend(
                here.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .cloned(),
            );
        }
    }
    (create_on, delete)
}

fn is_updated(p: &Pod, hash: &str) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
        == Some(hash)
}

/// One step of a rolling update (`maxSurge` 0): old pods to delete now —
/// every unavailable one, plus available ones while fewer than
/// `maxUnavailable` daemon pods are unavailable.
fn rolling_update_victims(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Result<Vec<Arc<Pod>>> {
    let spec = ds.spec.as_ref().expect("checked by sync");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let desired = nodes.iter().filter(|n| should_run(ds, n).0).count() as i32;
    let max_unavailable = {
        let ru = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
            Some(v) => scaled(Some(v), "0%", desired, true)?,
            None => 1,
        };
        let surge = match ru.and_then(|r| r.max_surge.as_ref()) {
            Some(v) => scaled(Some(v), "0%", desired, true)?,
            None => 0,
        };
        if unavailable == 0 && surge == 0 {
            1
        } else {
            unavailable
        }
    };
    let mut unavailable = 0;
    let mut replace = Vec::new();
    let mut candidates = Vec::new();
    let mut names: Vec<&String> = by_node.keys().collect();
    names.sort();
    for node in names {
        let mut new = None;
        let mut old = None;
        let mut duplicate = false;
        for p in by_node[node]
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let slot = if is_updated(p, hash) {
                &mut new
            } else {
                &mut old
            };
            if slot.is_some() {
                duplicate = true;
            }
            *slot = Some(p.clone());
        }
        match (duplicate, new, old) {
            // The manage step sorts these out; count them as unavailable.
            (true, _, _) | (false, None, None) | (false, Some(_), Some(_)) => unavailable += 1,
            (false, Some(n), None) => {
                if !pods::is_available(&n, min_ready, now) {
                    unavailable += 1;
                }
            }
            (false, None, Some(o)) => {
                if !pods::is_available(&o, min_ready, now) {
                    replace.push(o);
                } else if unavailable < max_unavailable {
                    candidates.push(o);
                }
            }
        }
    }
    let room = (max_unavailable - unavailable).max(0) as usize;
    replace.extend(candidates.into_iter().take(room));
    Ok(replace)
}

fn status_of(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let (mut desired, mut current, mut ready, mut available, mut updated, mut misscheduled) =
        (0, 0, 0, 0, 0, 0);
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let (run, _) = should_run(ds, node);
        let mut here: Vec<Arc<Pod>> = by_node.get(name).cloned().unwrap_or_default();
        if run {
            desired += 1;
            if here.is_empty() {
                continue;
            }
            current += 1;
            here.sort_by(by_creation_and_phase);
            let p = &here[0];
            if pods::is_ready(p) {
                ready += 1;
                if pods::is_available(p, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(p, hash) {
                updated += 1;
            }
        } else if !here.is_empty() {
            misscheduled += 1;
        }
    }
    let old = ds.status.clone().unwrap_or_default();
    DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        updated_number_scheduled: Some(updated),
        number_misscheduled: misscheduled,
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn ds(spec: PodSpec) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let mut spec = PodSpec {
            node_selector: Some(BTreeMap::from([("disk".into(), "ssd".into())])),
            ..Default::default()
        };
        let d = ds(spec.clone());
        assert_eq!(
            should_run(&d, &node("a", &[("disk", "ssd")], &[])),
            (true, true)
        );
        assert_eq!(should_run(&d, &node("b", &[], &[])), (false, false));
        // Daemon tolerations: not-ready NoExecute, unschedulable NoSchedule.
        let tainted = node(
            "c",
            &[("disk", "ssd")],
            &[
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ],
        );
        assert_eq!(should_run(&d, &tainted), (true, true));
        // A foreign NoSchedule taint: no new pod, but one there may stay.
        let dedicated = node("d", &[("disk", "ssd")], &[("dedicated", "NoSchedule")]);
        assert_eq!(should_run(&d, &dedicated), (false, true));
        let evicting = node("e", &[("disk", "ssd")], &[("dedicated", "NoExecute")]);
        assert_eq!(should_run(&d, &evicting), (false, false));
        spec.tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert_eq!(should_run(&ds(spec.clone()), &evicting), (true, true));
        spec.node_selector = None;
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "cores".into(),
                            operator: "Gt".into(),
                            values: Some(vec!["4".into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let d = ds(spec);
        assert!(should_run(&d, &node("f", &[("cores", "8")], &[])).0);
        assert!(!should_run(&d, &node("g", &[("cores", "2")], &[])).0);
    }

    #[test]
    fn daemon_pods_are_pinned_and_tolerant() {
        let d = ds(PodSpec::default());
        let p = daemon_pod(&d, "n1", "abc");
        assert_eq!(target_node(&p), Some("n1"));
        assert_eq!(p.metadata.labels.as_ref().unwrap()[HASH_LABEL], "abc");
        let t = p.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(t.len(), DAEMON_TOLERATIONS.len());
        assert!(p.metadata.name.as_ref().unwrap().starts_with("agent-"));
    }

    #[test]
    fn plan_creates_missing_and_deletes_duplicates() {
        let d = ds(PodSpec::default());
        let nodes = vec![node("a", &[], &[]), node("b", &[], &[])];
        let mut older = daemon_pod(&d, "b", "h");
        older.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(1).unwrap(),
            ));
        let mut newer = daemon_pod(&d, "b", "h");
        newer.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(2).unwrap(),
            ));
        let newer = Arc::new(newer);
        let by_node = pods_by_node(&[Arc::new(older), newer.clone()]);
        let (create, delete) = plan(&d, &nodes, &by_node);
        assert_eq!(create, ["a"]);
        assert_eq!(delete.len(), 1);
        assert_eq!(delete[0].metadata.name, newer.metadata.name);
    }
}
