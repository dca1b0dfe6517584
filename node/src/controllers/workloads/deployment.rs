//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, and a rollout that moves replicas
//! from the old ones to the new one — all at once (`Recreate`) or within
//! `maxSurge` / `maxUnavailable` (`RollingUpdate`) — as Kubernetes'
//! `pkg/controller/deployment` does, annotations and conditions included,
//! so that `kubectl rollout status|history|undo|pause|resume` work.
//!
//! The arithmetic (how far to scale, which ReplicaSet, what status) is in
//! plain functions of the objects; [`Rollout`] does the writes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::{Api, DeleteParams};

use super::owners::{claim, controlled_by, controller_of, controller_ref, scaled, selector_of};
use super::pods;
use super::{Ctx, Error, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision history annotation is cut to this length.
const MAX_HISTORY_CHARS: usize = 2000;
/// Annotations of the Deployment that its ReplicaSets do not copy.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let Some(d) = ctx.deployments.get(key) else {
        return Ok(None);
    };
    let Some(spec) = d.spec.clone() else {
        return Ok(None);
    };
    let mut r = Rollout {
        ctx,
        ns: d.metadata.namespace.clone().unwrap_or_default(),
        me: reference(&*d),
        d: (*d).clone(),
    };
    let selector = match selector_of(&spec.selector) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%key, "deployment has an invalid selector: {e}");
            return Ok(None);
        }
    };
    if selector.is_everything() {
        ctx.recorder(Kind::Deployment)
            .warning(
                r.me.clone(),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
        let mut status = d.status.clone().unwrap_or_default();
        if status.observed_generation < d.metadata.generation {
            status.observed_generation = d.metadata.generation;
            r.write_status(status).await?;
        }
        return Ok(None);
    }
    let deleting = d.metadata.deletion_timestamp.is_some();
    let candidates = ctx.replica_sets.list_in(&r.ns);
    let mine = claim(
        &ctx.client,
        &controller_ref(&*d),
        deleting,
        &selector,
        candidates,
    )
    .await?;
    let rss: Vec<ReplicaSet> = mine.iter().map(|rs| (**rs).clone()).collect();

    if deleting {
        let (rss, new) = r.all_replica_sets(rss, false).await?;
        r.sync_status(&rss, new).await?;
        return Ok(None);
    }
    r.check_paused_condition().await?;
    if paused(&r.d) || is_scaling_event(&r.d, &rss) {
        return r.sync_scale(rss).await;
    }
    if strategy(&r.d) == "Recreate" {
        r.rollout_recreate(rss).await
    } else {
        r.rollout_rolling(rss).await
    }
}

// ---------------------------------------------------------------------------
// The arithmetic, on plain objects.

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

fn strategy(d: &Deployment) -> &str {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

fn progress_deadline(d: &Deployment) -> Option<i64> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
        .map(i64::from)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet, f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs_status(rs, |s| s.available_replicas.unwrap_or(0))
}

fn annotation<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    m.annotations.as_ref()?.get(key).map(String::as_str)
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `maxSurge` and `maxUnavailable` of a rolling update against `desired`:
/// surge rounds up, unavailability down, and both zero means one may be
/// unavailable (`ResolveFenceposts`).
fn fenceposts(d: &Deployment) -> Result<(i32, i32)> {
    let desired = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), "25%", desired, true)?;
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        desired,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn max_surge(d: &Deployment) -> Result<i32> {
    if strategy(d) == "Recreate" {
        return Ok(0);
    }
    Ok(fenceposts(d)?.0)
}

fn max_unavailable(d: &Deployment) -> Result<i32> {
    if strategy(d) == "Recreate" || replicas(d) == 0 {
        return Ok(0);
    }
    Ok(fenceposts(d)?.1.min(replicas(d)))
}

fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            m.labels = None;
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Whether two templates are the same but for `pod-template-hash`.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    a.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The ReplicaSet of the Deployment's current template: the oldest one
/// whose template matches.
fn find_new(d: &Deployment, rss: &[ReplicaSet]) -> Option<usize> {
    let t = template(d);
    let mut idx: Vec<usize> = (0..rss.len()).collect();
    idx.sort_by(|&a, &b| by_creation(&rss[a], &rss[b]));
    idx.into_iter().find(|&i| {
        rss[i]
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|rt| equal_ignore_hash(rt, &t))
    })
}

fn old_of(rss: &[ReplicaSet], new: Option<usize>) -> Vec<usize> {
    (0..rss.len()).filter(|i| Some(*i) != new).collect()
}

fn sum(rss: &[ReplicaSet], idx: &[usize], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    idx.iter().map(|&i| f(&rss[i])).sum()
}

fn all_idx(rss: &[ReplicaSet]) -> Vec<usize> {
    (0..rss.len()).collect()
}

/// How many replicas the new ReplicaSet should have now
/// (`NewRSNewReplicas`).
fn new_rs_replicas(d: &Deployment, rss: &[ReplicaSet], new: usize) -> Result<i32> {
    let want = replicas(d);
    if strategy(d) == "Recreate" {
        return Ok(want);
    }
    let current = sum(rss, &all_idx(rss), rs_replicas);
    let max_total = want + max_surge(d)?;
    let new_replicas = rs_replicas(&rss[new]);
    if current >= max_total {
        return Ok(new_replicas);
    }
    let up = (max_total - current).min(want - new_replicas);
    Ok(new_replicas + up.max(0))
}

/// Whether `spec.replicas` changed since the active ReplicaSets were
/// annotated: a scaling event, handled by proportional scaling.
fn is_scaling_event(d: &Deployment, rss: &[ReplicaSet]) -> bool {
    rss.iter().filter(|rs| rs_replicas(rs) > 0).any(|rs| {
        annotation(&rs.metadata, DESIRED_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|v| v != replicas(d))
    })
}

fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS) != Some(&desired.to_string())
        || annotation(&rs.metadata, MAX_REPLICAS) != Some(&max.to_string())
}

fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// Copies the Deployment's annotations to its new ReplicaSet and gives it
/// `new_revision`; a ReplicaSet that had a revision (a rollback to it)
/// keeps the old ones in the revision history (`SetNewReplicaSetAnnotations`).
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> Result<bool> {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION).cloned().unwrap_or_default();
    let old_n: i64 = if old.is_empty() {
        0
    } else {
        old.parse().unwrap_or(0)
    };
    if old_n < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if !old.is_empty() {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut revisions: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                while total > MAX_HISTORY_CHARS && !revisions.is_empty() {
                    total -= revisions.remove(0).len() + 1;
                }
                revisions.push(&old);
                let joined = revisions.join(",");
                a.insert(REVISION_HISTORY.into(), joined);
            }
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)?) {
        changed = true;
    }
    Ok(changed)
}

fn condition<'a>(s: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

fn new_condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition; one with the same status and reason is left alone,
/// one with the same status keeps its transition time.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(s: &mut DeploymentStatus, kind: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|x| x.type_ != kind);
    }
}

/// The status the ReplicaSets add up to (`calculateStatus`).
fn calculate_status(
    d: &Deployment,
    rss: &[ReplicaSet],
    new: Option<usize>,
    now: Timestamp,
) -> Result<DeploymentStatus> {
    let all = all_idx(rss);
    let available = sum(rss, &all, rs_available);
    let total = sum(rss, &all, rs_replicas);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(rss, &all, |rs| rs_status(rs, |s| s.replicas))),
        updated_replicas: Some(new.map_or(0, |i| rs_status(&rss[i], |s| s.replicas))),
        ready_replicas: Some(sum(rss, &all, |rs| {
            rs_status(rs, |s| s.ready_replicas.unwrap_or(0))
        })),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= replicas(d) - max_unavailable(d)? {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    Ok(status)
}

/// Every replica updated and available, and the latest spec observed.
fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// Whether `new` shows progress over the Deployment's last status.
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let v = |x: Option<i32>| x.unwrap_or(0);
    let old_old = v(old.replicas) - v(old.updated_replicas);
    let new_old = v(new.replicas) - v(new.updated_replicas);
    v(new.updated_replicas) > v(old.updated_replicas)
        || new_old < old_old
        || v(new.ready_replicas) > v(old.ready_replicas)
        || v(new.available_replicas) > v(old.available_replicas)
}

fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + deadline < now.as_second()),
    }
}

/// When to look again for a rollout that may run out of time.
fn requeue_stuck(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Requeue {
    let deadline = progress_deadline(d)?;
    let c = condition(s, "Progressing")?;
    if complete(d, s) || c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0.as_second();
    let after = from + deadline - now.as_second();
    Some(Duration::from_secs(after.max(1) as u64))
}

/// Sorting for proportional scaling: larger first, then newer (or older).
fn by_size(rss: &[ReplicaSet], idx: &mut [usize], newer_first: bool) {
    idx.sort_by(|&a, &b| {
        rs_replicas(&rss[b])
            .cmp(&rs_replicas(&rss[a]))
            .then_with(|| {
                let o = by_creation(&rss[a], &rss[b]);
                if newer_first { o.reverse() } else { o }
            })
    });
}

/// How many replicas to add to (or take from) one ReplicaSet when the
/// Deployment is scaled mid-rollout (`GetProportion`).
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> Result<i32> {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return Ok(0);
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let deployment_replicas = replicas(d) + max_surge(d)?;
        let annotated = annotation(&rs.metadata, MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let size =
                f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
            size.round() as i32 - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    Ok(if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    })
}

/// The one ReplicaSet that may simply take the new size: the only active
/// one, or the newest when none is active (`FindActiveOrLatest`).
fn active_or_latest(rss: &[ReplicaSet], new: Option<usize>) -> Option<usize> {
    if rss.is_empty() {
        return None;
    }
    let mut old = old_of(rss, new);
    old.sort_by(|&a, &b| by_creation(&rss[b], &rss[a]));
    let active: Vec<usize> = all_idx(rss)
        .into_iter()
        .filter(|&i| rs_replicas(&rss[i]) > 0)
        .collect();
    match active.len() {
        0 => new.or_else(|| old.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let want = replicas(d);
    rs_replicas(rs) == want
        && annotation(&rs.metadata, DESIRED_REPLICAS) == Some(&want.to_string())
        && rs_available(rs) == want
}

// ---------------------------------------------------------------------------
// The writes.

/// One sync of one Deployment: `d` is kept current with every write.
struct Rollout<'a> {
    ctx: &'a Ctx,
    ns: String,
    me: ObjectReference,
    d: Deployment,
}

impl Rollout<'_> {
    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(&self.ctx.client, &self.ns)
    }

    fn replica_sets(&self) -> Api<ReplicaSet> {
        Api::namespaced(&self.ctx.client, &self.ns)
    }

    fn name(&self) -> &str {
        self.d.metadata.name.as_deref().unwrap_or("")
    }

    async fn write_status(&mut self, status: DeploymentStatus) -> Result<()> {
        let mut next = self.d.clone();
        next.status = Some(status);
        self.d = self.deployments().replace_status(&next).await?;
        Ok(())
    }

    /// Writes the Deployment's revision annotation if it changed.
    async fn set_revision(&mut self, revision: &str) -> Result<()> {
        if annotation(&self.d.metadata, REVISION) == Some(revision) {
            return Ok(());
        }
        let mut next = self.d.clone();
        next.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.into(), revision.into());
        self.d = self.deployments().replace(&next).await?;
        Ok(())
    }

    /// The ReplicaSets split into the new one (created when `create` and
    /// missing) and the old ones, with revisions brought up to date
    /// (`getAllReplicaSetsAndSyncRevision`).
    async fn all_replica_sets(
        &mut self,
        mut rss: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Vec<ReplicaSet>, Option<usize>)> {
        let new = find_new(&self.d, &rss);
        let max_old = old_of(&rss, new)
            .iter()
            .map(|&i| revision(&rss[i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let now = events::now();
        if let Some(i) = new {
            let mut rs = rss[i].clone();
            let mut changed = set_new_rs_annotations(&self.d, &mut rs, new_revision, true)?;
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if let Some(spec) = rs.spec.as_mut()
                && spec.min_ready_seconds != min_ready
            {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                rs = self.replica_sets().replace(&rs).await?;
            }
            let rev = annotation(&rs.metadata, REVISION).unwrap_or("").to_string();
            rss[i] = rs;
            self.set_revision(&rev).await?;
            let mut status = self.d.status.clone().unwrap_or_default();
            if progress_deadline(&self.d).is_some() && condition(&status, "Progressing").is_none() {
                let msg = format!(
                    "Found new replica set {:?}",
                    rss[i].metadata.name.as_deref().unwrap_or("")
                );
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", "FoundNewReplicaSet", msg, now),
                );
                self.write_status(status).await?;
            }
            return Ok((rss, Some(i)));
        }
        if !create {
            return Ok((rss, None));
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let template = template(&self.d);
        let hash = super::owners::template_hash(&template, status.collision_count);
        let mut rs_template = template.clone();
        rs_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.ns.clone()),
                labels: rs_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(rs_template),
            }),
            status: None,
        };
        rss.push(rs.clone());
        let i = rss.len() - 1;
        let count = new_rs_replicas(&self.d, &rss, i)?;
        rs.spec.as_mut().expect("set above").replicas = Some(count);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false)?;
        let rec = self.ctx.recorder(Kind::Deployment);
        let (created, existed) = match self.replica_sets().create(&rs).await {
            Ok(c) => (c, false),
            Err(e) if e.is_already_exists() => {
                let existing = self.replica_sets().get(&name).await?;
                let same = controlled_by(
                    &existing.metadata,
                    self.d.metadata.uid.as_deref().unwrap_or(""),
                ) && existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template));
                if !same {
                    // A hash collision: another template got this name.
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(status).await?;
                    return Err(Error::Invalid(format!(
                        "replica set {name} exists with another template; retrying with collision count {}",
                        self.d
                            .status
                            .as_ref()
                            .and_then(|s| s.collision_count)
                            .unwrap_or(0)
                    )));
                }
                (existing, true)
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {e}");
                rec.warning(self.me.clone(), "FailedCreate", msg.clone())
                    .await;
                if progress_deadline(&self.d).is_some() {
                    set_condition(
                        &mut status,
                        new_condition("Progressing", "False", "ReplicaSetCreateError", msg, now),
                    );
                    self.write_status(status).await?;
                }
                return Err(e.into());
            }
        };
        if !existed && count > 0 {
            rec.normal(
                self.me.clone(),
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {count}"),
            )
            .await;
        }
        rss[i] = created;
        self.set_revision(&new_revision.to_string()).await?;
        if !existed && progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                    now,
                ),
            );
            self.write_status(status).await?;
        }
        Ok((rss, Some(i)))
    }

    /// Sets one ReplicaSet's size and replica annotations; returns whether
    /// the size changed (`scaleReplicaSet`).
    async fn scale_rs(&mut self, rs: &mut ReplicaSet, to: i32) -> Result<bool> {
        let from = rs_replicas(rs);
        let desired = replicas(&self.d);
        let max = desired + max_surge(&self.d)?;
        let resize = from != to;
        if !resize && !replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let mut next = rs.clone();
        next.spec.get_or_insert_with(Default::default).replicas = Some(to);
        set_replicas_annotations(&mut next, desired, max);
        *rs = self.replica_sets().replace(&next).await?;
        if resize {
            let op = if to > from { "up" } else { "down" };
            let name = rs.metadata.name.as_deref().unwrap_or("");
            self.ctx
                .recorder(Kind::Deployment)
                .normal(
                    self.me.clone(),
                    "ScalingReplicaSet",
                    format!("Scaled {op} replica set {name} from {from} to {to}"),
                )
                .await;
        }
        Ok(resize)
    }

    /// `scaleReplicaSetAndRecordEvent`: only a change of size is written.
    async fn resize(&mut self, rs: &mut ReplicaSet, to: i32) -> Result<bool> {
        if rs_replicas(rs) == to {
            return Ok(false);
        }
        self.scale_rs(rs, to).await
    }

    /// Brings the ReplicaSets to the Deployment's size without rolling
    /// anything: the active one takes the new size, or all of them share
    /// the difference in proportion to their size (`scale`).
    async fn scale(&mut self, rss: &mut [ReplicaSet], new: Option<usize>) -> Result<()> {
        let want = replicas(&self.d);
        if let Some(i) = active_or_latest(rss, new) {
            if rs_replicas(&rss[i]) != want {
                self.scale_rs(&mut rss[i], want).await?;
            }
            return Ok(());
        }
        if let Some(n) = new
            && saturated(&self.d, &rss[n])
        {
            for i in old_of(rss, new) {
                if rs_replicas(&rss[i]) > 0 {
                    self.scale_rs(&mut rss[i], 0).await?;
                }
            }
            return Ok(());
        }
        if strategy(&self.d) == "Recreate" {
            return Ok(());
        }
        let mut active: Vec<usize> = all_idx(rss)
            .into_iter()
            .filter(|&i| rs_replicas(&rss[i]) > 0)
            .collect();
        let current = sum(rss, &active, rs_replicas);
        let allowed = if want > 0 {
            want + max_surge(&self.d)?
        } else {
            0
        };
        let to_add = allowed - current;
        by_size(rss, &mut active, to_add > 0);
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        let mut added = 0;
        for &i in &active {
            let mut size = rs_replicas(&rss[i]);
            if to_add != 0 {
                let p = proportion(&self.d, &rss[i], to_add, added)?;
                size += p;
                added += p;
            }
            sizes.push((i, size));
        }
        // What is left goes to (or comes from) the largest.
        if to_add != added && !sizes.is_empty() {
            sizes[0].1 = (sizes[0].1 + to_add - added).max(0);
        }
        for (i, size) in sizes {
            self.scale_rs(&mut rss[i], size).await?;
        }
        Ok(())
    }

    /// A paused Deployment or a scaling event: scale, and when paused
    /// clean up old revisions (`sync`).
    async fn sync_scale(&mut self, rss: Vec<ReplicaSet>) -> Result<Requeue> {
        let (mut rss, new) = self.all_replica_sets(rss, false).await?;
        self.scale(&mut rss, new).await?;
        if paused(&self.d) {
            self.cleanup(&rss, new).await?;
        }
        self.sync_status(&rss, new).await?;
        Ok(None)
    }

    async fn rollout_rolling(&mut self, rss: Vec<ReplicaSet>) -> Result<Requeue> {
        let (mut rss, new) = self.all_replica_sets(rss, true).await?;
        let new = new.expect("created when missing");
        if self.reconcile_new(&mut rss, new).await? || self.reconcile_old(&mut rss, new).await? {
            return self.sync_rollout_status(&rss, Some(new)).await;
        }
        if complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&rss, Some(new)).await?;
        }
        self.sync_rollout_status(&rss, Some(new)).await
    }

    /// Scales the new ReplicaSet up within `maxSurge` (or down to the
    /// Deployment's size).
    async fn reconcile_new(&mut self, rss: &mut [ReplicaSet], new: usize) -> Result<bool> {
        let want = replicas(&self.d);
        let have = rs_replicas(&rss[new]);
        if have == want {
            return Ok(false);
        }
        if have > want {
            return self.resize(&mut rss[new], want).await;
        }
        let to = new_rs_replicas(&self.d, rss, new)?;
        self.resize(&mut rss[new], to).await
    }

    /// Scales old ReplicaSets down, never below `replicas - maxUnavailable`
    /// available pods: first their unhealthy replicas, then healthy ones,
    /// oldest ReplicaSet first.
    async fn reconcile_old(&mut self, rss: &mut [ReplicaSet], new: usize) -> Result<bool> {
        let mut old: Vec<usize> = old_of(rss, Some(new))
            .into_iter()
            .filter(|&i| rs_replicas(&rss[i]) > 0)
            .collect();
        if old.is_empty() {
            return Ok(false);
        }
        let all = all_idx(rss);
        let all_pods = sum(rss, &all, rs_replicas);
        let min_available = replicas(&self.d) - max_unavailable(&self.d)?;
        let new_unavailable = rs_replicas(&rss[new]) - rs_available(&rss[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(|&a, &b| by_creation(&rss[a], &rss[b]));
        // Unhealthy replicas first: removing them costs no availability.
        let mut cleaned = 0;
        for &i in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let (have, available) = (rs_replicas(&rss[i]), rs_available(&rss[i]));
            if have == 0 || have == available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(have - available);
            self.resize(&mut rss[i], have - down).await?;
            cleaned += down;
        }
        // Then healthy ones, as far as availability allows.
        let available = sum(rss, &all, rs_available);
        let mut scaled_down = 0;
        if available > min_available {
            let total = available - min_available;
            for &i in &old {
                if scaled_down >= total {
                    break;
                }
                let have = rs_replicas(&rss[i]);
                if have == 0 {
                    continue;
                }
                let down = have.min(total - scaled_down);
                self.resize(&mut rss[i], have - down).await?;
                scaled_down += down;
            }
        }
        Ok(cleaned + scaled_down > 0)
    }

    async fn rollout_recreate(&mut self, rss: Vec<ReplicaSet>) -> Result<Requeue> {
        let (mut rss, mut new) = self.all_replica_sets(rss, false).await?;
        let mut scaled = false;
        for i in old_of(&rss, new) {
            if rs_replicas(&rss[i]) > 0 {
                scaled |= self.resize(&mut rss[i], 0).await?;
            }
        }
        if scaled || self.old_pods_running(&rss, new) {
            return self.sync_rollout_status(&rss, new).await;
        }
        if new.is_none() {
            (rss, new) = self.all_replica_sets(rss, true).await?;
        }
        let n = new.expect("created when missing");
        let want = replicas(&self.d);
        if self.resize(&mut rss[n], want).await? {
            return self.sync_rollout_status(&rss, new).await;
        }
        if complete(&self.d, &self.d.status.clone().unwrap_or_default()) {
            self.cleanup(&rss, new).await?;
        }
        self.sync_rollout_status(&rss, new).await
    }

    /// Whether any pod of an old ReplicaSet may still run.
    fn old_pods_running(&self, rss: &[ReplicaSet], new: Option<usize>) -> bool {
        let old = old_of(rss, new);
        if sum(rss, &old, |rs| rs_status(rs, |s| s.replicas)) > 0 {
            return true;
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|&i| rss[i].metadata.uid.as_deref())
            .collect();
        self.ctx.pods.list_in(&self.ns).iter().any(|p: &Arc<Pod>| {
            controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
                && !pods::is_terminal(p)
        })
    }

    /// Deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, rss: &[ReplicaSet], new: Option<usize>) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut old: Vec<usize> = old_of(rss, new)
            .into_iter()
            .filter(|&i| rss[i].metadata.deletion_timestamp.is_none())
            .collect();
        let excess = old.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        old.sort_by(|&a, &b| {
            revision(&rss[a])
                .cmp(&revision(&rss[b]))
                .then_with(|| by_creation(&rss[a], &rss[b]))
        });
        for &i in old.iter().take(excess as usize) {
            let rs = &rss[i];
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > st.observed_generation
            {
                continue;
            }
            let name = rs.metadata.name.as_deref().unwrap_or("");
            tracing::debug!(
                deployment = self.name(),
                rs = name,
                "deleting old replica set"
            );
            let params =
                DeleteParams::background().with_uid(rs.metadata.uid.clone().unwrap_or_default());
            self.replica_sets().delete(name, &params).await?;
        }
        Ok(())
    }

    /// Writes the status the ReplicaSets add up to (`syncDeploymentStatus`).
    async fn sync_status(&mut self, rss: &[ReplicaSet], new: Option<usize>) -> Result<()> {
        let status = calculate_status(&self.d, rss, new, events::now())?;
        if self.d.status.as_ref() != Some(&status) {
            self.write_status(status).await?;
        }
        Ok(())
    }

    /// The status plus the Progressing condition: complete, progressing,
    /// or out of time (`syncRolloutStatus`).
    async fn sync_rollout_status(
        &mut self,
        rss: &[ReplicaSet],
        new: Option<usize>,
    ) -> Result<Requeue> {
        let now = events::now();
        let d = &self.d;
        let mut status = calculate_status(d, rss, new, now)?;
        if progress_deadline(d).is_none() {
            remove_condition(&mut status, "Progressing");
        }
        let old = d.status.clone().unwrap_or_default();
        let current = condition(&old, "Progressing").cloned();
        let done = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        let what = match new {
            Some(i) => format!(
                "ReplicaSet {:?}",
                rss[i].metadata.name.as_deref().unwrap_or("")
            ),
            None => format!("Deployment {:?}", d.metadata.name.as_deref().unwrap_or("")),
        };
        if progress_deadline(d).is_some() && !done {
            if complete(d, &status) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("{what} has successfully progressed."),
                        now,
                    ),
                );
            } else if progressing(d, &status) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("{what} is progressing."),
                    now,
                );
                // Progress renews lastUpdateTime even with the same reason.
                if let Some(cur) = &current
                    && cur.status == "True"
                {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut status, "Progressing");
                set_condition(&mut status, c);
            } else if timed_out(d, &status, now) {
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("{what} has timed out progressing."),
                        now,
                    ),
                );
            }
        }
        if old == status {
            return Ok(requeue_stuck(d, &status, now));
        }
        let timed_out_now = condition(&status, "Progressing").and_then(|c| c.reason.as_deref())
            == Some("ProgressDeadlineExceeded")
            && current.as_ref().and_then(|c| c.reason.as_deref())
                != Some("ProgressDeadlineExceeded");
        self.write_status(status.clone()).await?;
        if timed_out_now {
            self.ctx
                .recorder(Kind::Deployment)
                .warning(
                    self.me.clone(),
                    "ProgressDeadlineExceeded",
                    format!("{what} has timed out progressing."),
                )
                .await;
        }
        Ok(requeue_stuck(&self.d, &status, now))
    }

    /// Marks a paused Deployment's Progressing condition (and a resumed
    /// one's), unless it already timed out.
    async fn check_paused_condition(&mut self) -> Result<()> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let is_paused = reason.as_deref() == Some("DeploymentPaused");
        let now = events::now();
        let c = if paused(&self.d) && !is_paused {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                now,
            )
        } else if !paused(&self.d) && is_paused {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                now,
            )
        } else {
            return Ok(());
        };
        set_condition(&mut status, c);
        self.write_status(status).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, created: i64, replicas: i32, available: i32, rev: i64) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                annotations: Some(BTreeMap::from([(REVISION.into(), rev.to_string())])),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailability_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        let d = deployment(10, pct("25%"), pct("25%"));
        assert_eq!(fenceposts(&d).unwrap(), (3, 2));
        let d = deployment(3, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(fenceposts(&d).unwrap(), (0, 1));
        let d = deployment(1, pct("10%"), pct("10%"));
        assert_eq!(fenceposts(&d).unwrap(), (1, 0));
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d).unwrap(), 2);
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let rss = vec![rs("old", 1, 3, 3, 1), rs("new", 2, 0, 0, 2)];
        assert_eq!(new_rs_replicas(&d, &rss, 1).unwrap(), 1);
        let rss = vec![rs("old", 1, 3, 3, 1), rs("new", 2, 1, 0, 2)];
        assert_eq!(new_rs_replicas(&d, &rss, 1).unwrap(), 1);
        let rss = vec![rs("old", 1, 2, 2, 1), rs("new", 2, 1, 1, 2)];
        assert_eq!(new_rs_replicas(&d, &rss, 1).unwrap(), 2);
    }

    #[test]
    fn rollback_keeps_the_revision_history() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let mut r = rs("web-a", 1, 0, 0, 1);
        assert!(set_new_rs_annotations(&d, &mut r, 3, true).unwrap());
        let a = r.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert!(set_new_rs_annotations(&d, &mut r, 5, true).unwrap());
        assert_eq!(
            r.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY],
            "1,3"
        );
        // Already at that revision: nothing to do.
        assert!(!set_new_rs_annotations(&d, &mut r, 5, true).unwrap());
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let mut a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: None,
        };
        let b = a.clone();
        a.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "abc".into());
        assert!(equal_ignore_hash(&a, &b));
        a.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert!(!equal_ignore_hash(&a, &b));
    }

    #[test]
    fn proportional_scaling_shares_by_size() {
        let mut d = deployment(20, IntOrString::Int(3), IntOrString::Int(2));
        d.status = Some(DeploymentStatus {
            replicas: Some(13),
            ..Default::default()
        });
        // Scaled from 10 (max 13) to 20 (max 23): 8 and 5 become 14 and 9.
        let mut a = rs("a", 1, 8, 8, 1);
        let mut b = rs("b", 2, 5, 0, 2);
        for r in [&mut a, &mut b] {
            r.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(MAX_REPLICAS.into(), "13".into());
        }
        let pa = proportion(&d, &a, 10, 0).unwrap();
        let pb = proportion(&d, &b, 10, pa).unwrap();
        assert_eq!((pa, pb), (6, 4));
    }

    #[test]
    fn status_and_conditions() {
        let d = deployment(3, IntOrString::Int(1), IntOrString::Int(0));
        let rss = vec![rs("old", 1, 2, 2, 1), rs("new", 2, 2, 1, 2)];
        let now = Timestamp::from_second(1000).unwrap();
        let s = calculate_status(&d, &rss, Some(1), now).unwrap();
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(condition(&s, "Available").unwrap().status, "True");
        assert!(!complete(&d, &s));
        assert!(progressing(&d, &s));
        let mut s2 = s.clone();
        set_condition(
            &mut s2,
            new_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                "x".into(),
                Timestamp::from_second(100).unwrap(),
            ),
        );
        let mut d2 = d.clone();
        d2.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
        assert!(timed_out(&d2, &s2, now));
        assert_eq!(
            requeue_stuck(&d2, &s2, Timestamp::from_second(500).unwrap()),
            Some(Duration::from_secs(200))
        );
    }
}
