//! The StatefulSet controller: pods `<set>-<ordinal>` with a stable
//! hostname under the governing Service and their own claims from
//! `volumeClaimTemplates`; created in order, each waiting for the one
//! before to be running and ready (`OrderedReady`) or all at once
//! (`Parallel`); removed from the highest ordinal down; updated from the
//! highest ordinal down to `partition`, one pod at a time (`RollingUpdate`)
//! or when deleted (`OnDelete`).
//!
//! Revisions are `<set>-<template hash>` (label `controller-revision-hash`).
//! ControllerRevision objects are not kept: a pod below the partition that
//! must be recreated copies a sibling of the current revision, or failing
//! that takes the new template. Claims are created when absent; skiff has
//! no volume provisioner, so they stay Pending unless a matching volume is
//! bound by someone else.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::{Api, DeleteParams};

use super::owners::{claim, controller_ref, selector_of};
use super::pods::{self, from_template};
use super::{Ctx, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let Some(set) = ctx.stateful_sets.get(key) else {
        return Ok(None);
    };
    let Some(spec) = set.spec.as_ref() else {
        return Ok(None);
    };
    let ns = set.metadata.namespace.clone().unwrap_or_default();
    let selector = match selector_of(&spec.selector) {
        Ok(s) if !s.is_everything() => s,
        _ => {
            tracing::warn!(%key, "stateful set has an invalid or empty selector");
            return Ok(None);
        }
    };
    let deleting = set.metadata.deletion_timestamp.is_some();
    let mine = claim(
        &ctx.client,
        &controller_ref(&*set),
        deleting,
        &selector,
        ctx.pods.list_in(&ns),
    )
    .await?;
    let revs = revisions(&set);
    let now = events::now();
    if !deleting {
        super::revisions::ensure_stateful_set(ctx, &set, &revs.update).await?;
        let steps = plan(&set, &mine, &revs, now);
        for step in steps {
            apply(ctx, &set, &mine, &revs, step).await?;
        }
    }
    let status = status_of(&set, &mine, &revs, now);
    if set.status.as_ref() != Some(&status) {
        let mut next = (*set).clone();
        next.status = Some(status);
        Api::<StatefulSet>::namespaced(&ctx.client, &ns)
            .replace_status(&next)
            .await?;
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok(pods::next_available(&mine, min_ready, now))
}

/// The current revision (what the pods below the partition run) and the
/// update revision (the template now).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Revisions {
    current: String,
    update: String,
}

fn revisions(set: &StatefulSet) -> Revisions {
    let name = set.metadata.name.as_deref().unwrap_or("");
    let spec = set.spec.as_ref().expect("checked by sync");
    let status = set.status.clone().unwrap_or_default();
    // Hashed with a count always (0 when unset), as Kubernetes does, so
    // that writing the status does not change the revision.
    let update = format!(
        "{name}-{}",
        super::owners::template_hash(&spec.template, Some(status.collision_count.unwrap_or(0)))
    );
    let current = status
        .current_revision
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update.clone());
    Revisions { current, update }
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The ordinal in a pod's name `<set>-<ordinal>`.
fn ordinal(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let prefix = format!("{}-", set.metadata.name.as_deref()?);
    let n = pod.metadata.name.as_deref()?.strip_prefix(&prefix)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn running_and_ready(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p)
}

fn healthy(set: &StatefulSet, p: &Pod, now: Timestamp) -> bool {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    running_and_ready(p)
        && pods::is_available(p, min_ready, now)
        && p.metadata.deletion_timestamp.is_none()
}

/// One thing to do in a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Create the claims and the pod of this ordinal, at this revision.
    Create { ordinal: i32, revision: String },
    /// Delete this pod (by name): surplus, failed, or of an old revision.
    Delete(String),
}

fn partition(set: &StatefulSet) -> Option<i32> {
    let strategy = set.spec.as_ref()?.update_strategy.as_ref()?;
    if strategy.type_.as_deref() == Some("OnDelete") {
        return None;
    }
    Some(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0),
    )
}

/// What to do now, in order (`updateStatefulSet`): fill the ordinals (in
/// order and one at a time when `OrderedReady`), remove the condemned
/// from the highest ordinal, then roll one pod to the update revision.
fn plan(set: &StatefulSet, mine: &[Arc<Pod>], revs: &Revisions, now: Timestamp) -> Vec<Step> {
    let spec = set.spec.as_ref().expect("checked by sync");
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let start = start_ordinal(set);
    let end = start + replicas(set).max(0);
    let by_ordinal: BTreeMap<i32, &Arc<Pod>> = mine
        .iter()
        .filter_map(|p| ordinal(set, p).map(|o| (o, p)))
        .collect();
    let name_of = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    let mut steps = Vec::new();
    let part = partition(set);
    for ord in start..end {
        match by_ordinal.get(&ord) {
            None => {
                let below_partition = part.is_some_and(|p| ord - start < p);
                let revision = if below_partition {
                    &revs.current
                } else {
                    &revs.update
                };
                steps.push(Step::Create {
                    ordinal: ord,
                    revision: revision.clone(),
                });
                if monotonic {
                    return steps;
                }
            }
            Some(p) if pods::is_terminal(p) && p.metadata.deletion_timestamp.is_none() => {
                steps.push(Step::Delete(name_of(p)));
                if monotonic {
                    return steps;
                }
            }
            Some(p) => {
                if monotonic && !healthy(set, p, now) {
                    return steps;
                }
            }
        }
    }
    let mut condemned: Vec<(i32, &Arc<Pod>)> = by_ordinal
        .iter()
        .filter(|(o, _)| **o < start || **o >= end)
        .map(|(o, p)| (*o, *p))
        .collect();
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    for (i, (_, p)) in condemned.iter().enumerate() {
        if p.metadata.deletion_timestamp.is_some() {
            if monotonic {
                return steps;
            }
            continue;
        }
        // In order, the highest first; an unhealthy one goes only if no
        // lower one is unhealthy too (it is the first unhealthy pod).
        if monotonic
            && !healthy(set, p, now)
            && condemned[i + 1..]
                .iter()
                .any(|(_, q)| !healthy(set, q, now))
        {
            return steps;
        }
        steps.push(Step::Delete(name_of(p)));
        if monotonic {
            return steps;
        }
    }
    let Some(part) = part else {
        return steps;
    };
    for ord in (start + part.max(0)..end).rev() {
        let Some(p) = by_ordinal.get(&ord) else {
            return steps;
        };
        if revision_of(p) != Some(revs.update.as_str()) && p.metadata.deletion_timestamp.is_none() {
            steps.push(Step::Delete(name_of(p)));
            return steps;
        }
        if !healthy(set, p, now) {
            return steps;
        }
    }
    steps
}

fn claim_name(template: &PersistentVolumeClaim, set: &str, ordinal: i32) -> String {
    format!(
        "{}-{set}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod of `ordinal`: from the template (or a sibling of the current
/// revision), with its identity and claims.
fn new_pod(
    set: &StatefulSet,
    mine: &[Arc<Pod>],
    revs: &Revisions,
    ordinal: i32,
    revision: &str,
) -> Pod {
    let spec = set.spec.as_ref().expect("checked by sync");
    let ns = set.metadata.namespace.as_deref().unwrap_or("default");
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    let name = format!("{set_name}-{ordinal}");
    let sibling = (revision != revs.update)
        .then(|| mine.iter().find(|p| revision_of(p) == Some(revision)))
        .flatten();
    let mut pod = match sibling {
        Some(s) => {
            let mut p = Pod {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.into()),
                    labels: s.metadata.labels.clone(),
                    annotations: s.metadata.annotations.clone(),
                    owner_references: Some(vec![controller_ref(set)]),
                    ..Default::default()
                },
                spec: s.spec.clone(),
                status: None,
            };
            if let Some(ps) = p.spec.as_mut() {
                ps.node_name = None;
            }
            p
        }
        None => from_template(&spec.template, ns, &name, controller_ref(set)),
    };
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let ps = pod.spec.get_or_insert_with(PodSpec::default);
    ps.hostname = Some(name.clone());
    ps.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
    let volumes = ps.volumes.get_or_insert_with(Vec::new);
    for t in spec.volume_claim_templates.iter().flatten() {
        let vname = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(t, set_name, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    pod
}

/// The claims of `ordinal`, from the templates. They belong to the set
/// only if it asks for them to go with it (`whenDeleted: Delete`);
/// otherwise they outlive it, as Kubernetes keeps data by default.
fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = set.spec.as_ref().expect("checked by sync");
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    let owned = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(t, set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owned.then(|| vec![controller_ref(set)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

async fn apply(
    ctx: &Ctx,
    set: &StatefulSet,
    mine: &[Arc<Pod>],
    revs: &Revisions,
    step: Step,
) -> Result<()> {
    let ns = set.metadata.namespace.as_deref().unwrap_or("default");
    let rec = ctx.recorder(Kind::StatefulSet);
    let me = reference(set);
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    match step {
        Step::Create { ordinal, revision } => {
            let claims = Api::<PersistentVolumeClaim>::namespaced(&ctx.client, ns);
            let pod = new_pod(set, mine, revs, ordinal, &revision);
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            for c in new_claims(set, ordinal) {
                let cname = c.metadata.name.clone().unwrap_or_default();
                if ctx.claims.get_in(Some(ns), &cname).is_some() {
                    continue;
                }
                match claims.create(&c).await {
                    Ok(_) => {
                        rec.normal(me.clone(), "SuccessfulCreate", format!("create Claim {cname} Pod {pod_name} in StatefulSet {set_name} success"))
                            .await;
                    }
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => {
                        rec.warning(me.clone(), "FailedCreate", format!("create Claim {cname} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"))
                            .await;
                        return Err(e.into());
                    }
                }
            }
            match Api::<Pod>::namespaced(&ctx.client, ns).create(&pod).await {
                Ok(_) => {
                    rec.normal(
                        me,
                        "SuccessfulCreate",
                        format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                    )
                    .await;
                    Ok(())
                }
                // The cache is behind: it exists, and its event is coming.
                Err(e) if e.is_already_exists() => Ok(()),
                Err(e) => {
                    rec.warning(
                        me,
                        "FailedCreate",
                        format!(
                            "create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                        ),
                    )
                    .await;
                    Err(e.into())
                }
            }
        }
        Step::Delete(pod_name) => {
            let uid = mine
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str()))
                .and_then(|p| p.metadata.uid.clone())
                .unwrap_or_default();
            match Api::<Pod>::namespaced(&ctx.client, ns)
                .delete(&pod_name, &DeleteParams::default().with_uid(uid))
                .await
            {
                Ok(_) => {
                    rec.normal(
                        me,
                        "SuccessfulDelete",
                        format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
                    )
                    .await;
                    Ok(())
                }
                Err(e) => {
                    rec.warning(
                        me,
                        "FailedDelete",
                        format!(
                            "delete Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
                        ),
                    )
                    .await;
                    Err(e.into())
                }
            }
        }
    }
}

fn status_of(
    set: &StatefulSet,
    mine: &[Arc<Pod>],
    revs: &Revisions,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let old = set.status.clone().unwrap_or_default();
    let (mut created, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
    for p in mine {
        let is_created = !pods::phase(p).is_empty();
        if is_created {
            created += 1;
        }
        if running_and_ready(p) {
            ready += 1;
            if pods::is_available(p, min_ready, now) {
                available += 1;
            }
        }
        if is_created && p.metadata.deletion_timestamp.is_none() {
            if revision_of(p) == Some(revs.current.as_str()) {
                current += 1;
            }
            if revision_of(p) == Some(revs.update.as_str()) {
                updated += 1;
            }
        }
    }
    let mut status = StatefulSetStatus {
        replicas: created,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(revs.current.clone()),
        update_revision: Some(revs.update.clone()),
        observed_generation: set.metadata.generation,
        collision_count: old.collision_count.or(Some(0)),
        conditions: old.conditions,
    };
    // The rollout is complete: the update revision becomes the current one.
    if partition(set).is_some()
        && updated == created
        && ready == created
        && created == replicas(set)
    {
        status.current_replicas = Some(updated);
        status.current_revision = Some(revs.update.clone());
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn set(replicas: i32, policy: &str, partition: Option<i32>) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some(policy.into()),
                service_name: Some("nginx".into()),
                template: PodTemplateSpec::default(),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition,
                        max_unavailable: None,
                    }),
                }),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, rev: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(REVISION_LABEL.into(), rev.into())])),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(if ready { "Running" } else { "Pending" }.into()),
                conditions: ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(1).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    fn revs(current: &str, update: &str) -> Revisions {
        Revisions {
            current: current.into(),
            update: update.into(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(100).unwrap()
    }

    fn create(ordinal: i32, rev: &str) -> Step {
        Step::Create {
            ordinal,
            revision: rev.into(),
        }
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let s = set(3, "OrderedReady", Some(0));
        let r = revs("a", "a");
        assert_eq!(plan(&s, &[], &r, now()), [create(0, "a")]);
        assert_eq!(plan(&s, &[pod("web-0", "a", false)], &r, now()), []);
        assert_eq!(
            plan(&s, &[pod("web-0", "a", true)], &r, now()),
            [create(1, "a")]
        );
        let p = set(3, "Parallel", Some(0));
        assert_eq!(
            plan(&p, &[], &r, now()),
            [create(0, "a"), create(1, "a"), create(2, "a")]
        );
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal() {
        let s = set(1, "OrderedReady", Some(0));
        let r = revs("a", "a");
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "a", true),
            pod("web-2", "a", true),
        ];
        assert_eq!(plan(&s, &all, &r, now()), [Step::Delete("web-2".into())]);
        // Both unhealthy: web-2 waits, it is not the first unhealthy pod.
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "a", false),
            pod("web-2", "a", false),
        ];
        assert_eq!(plan(&s, &all, &r, now()), []);
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "a", true),
            pod("web-2", "a", false),
        ];
        assert_eq!(plan(&s, &all, &r, now()), [Step::Delete("web-2".into())]);
    }

    #[test]
    fn rolling_update_goes_down_to_the_partition() {
        let s = set(3, "OrderedReady", Some(1));
        let r = revs("a", "b");
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "a", true),
            pod("web-2", "a", true),
        ];
        assert_eq!(plan(&s, &all, &r, now()), [Step::Delete("web-2".into())]);
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "a", true),
            pod("web-2", "b", true),
        ];
        assert_eq!(plan(&s, &all, &r, now()), [Step::Delete("web-1".into())]);
        let all = [
            pod("web-0", "a", true),
            pod("web-1", "b", true),
            pod("web-2", "b", true),
        ];
        assert_eq!(plan(&s, &all, &r, now()), []);
        // Below the partition a missing pod comes back at the current revision.
        let all = [pod("web-1", "b", true), pod("web-2", "b", true)];
        assert_eq!(plan(&s, &all, &r, now()), [create(0, "a")]);
    }

    #[test]
    fn pods_have_identity_and_claims() {
        let s = set(3, "OrderedReady", Some(0));
        let p = new_pod(&s, &[], &revs("web-x", "web-x"), 2, "web-x");
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-2"
        );
        let c = new_claims(&s, 2);
        assert_eq!(c[0].metadata.name.as_deref(), Some("data-web-2"));
        assert!(c[0].metadata.owner_references.is_none());
    }

    #[test]
    fn ordinals_parse_strictly() {
        let s = set(1, "OrderedReady", None);
        let named = |n: &str| Pod {
            metadata: ObjectMeta {
                name: Some(n.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ordinal(&s, &named("web-12")), Some(12));
        assert_eq!(ordinal(&s, &named("web-01")), None);
        assert_eq!(ordinal(&s, &named("web-x")), None);
        assert_eq!(ordinal(&s, &named("webby-1")), None);
    }
}
