//! The disruption controller, as kube-controller-manager's: the status of
//! each PodDisruptionBudget — how many of its pods are expected and
//! healthy, how many must stay so, how many may be disrupted now — which
//! the eviction subresource (`apiserver::handlers::evict`, what `kubectl
//! drain` calls) reads and spends.
//!
//! With an integer `minAvailable` the expected pods are the pods the
//! selector matches. With a percentage, or with `maxUnavailable`, they are
//! the scale of the pods' controllers (a ReplicaSet, or the Deployment
//! owning it, or a StatefulSet), as Kubernetes counts them; a matching pod
//! with no such controller makes the budget fail to sync (`SyncFailed`),
//! allowing no disruption. A healthy pod is Ready, not terminating and not
//! just evicted: pods in `disruptedPods` (recorded by the eviction) count
//! as gone until they are, or for two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::Api;
use skiff_sdk::selector::LabelSelector;

use super::owners::{controller_of, labels, scaled, selector_of};
use super::pods::is_ready;
use super::{Ctx, Error, Requeue, Result};

/// How long an evicted pod that has not started terminating counts as
/// disrupted (Kubernetes' DeletionTimeout).
const DISRUPTED_FOR: Duration = Duration::from_secs(120);

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let Some(pdb) = ctx.budgets.get(key) else {
        return Ok(None);
    };
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = pdb.metadata.namespace.as_deref().unwrap_or("");
    let pods = budget_pods(ctx, &pdb);
    let now = crate::controllers::events::now();
    let (disrupted, recheck) = disrupted_pods(&pdb, &pods, now);
    let counted = count(ctx, &pdb, &pods);
    let healthy = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or(""))
                && is_ready(p)
        })
        .count() as i32;
    let generation = pdb.metadata.generation;
    let old = pdb.status.clone().unwrap_or_default();
    let condition = |status: &str, reason: &str, message: String| {
        let unchanged =
            old.conditions.iter().flatten().find(|c| {
                c.type_ == "DisruptionAllowed" && c.status == status && c.reason == reason
            });
        Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: unchanged
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now)),
        }
    };
    let status = match counted {
        Ok((expected, desired)) => {
            let allowed = if expected <= 0 {
                0
            } else {
                (healthy - desired).max(0)
            };
            PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: generation,
                conditions: Some(vec![if allowed > 0 {
                    condition("True", "SufficientPods", String::new())
                } else {
                    condition("False", "InsufficientPods", String::new())
                }]),
            }
        }
        Err(e) => PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: old.desired_healthy,
            expected_pods: old.expected_pods,
            disruptions_allowed: 0,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: generation,
            conditions: Some(vec![condition("False", "SyncFailed", e)]),
        },
    };
    if status != old {
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        Api::<PodDisruptionBudget>::namespaced(&ctx.client, ns)
            .replace_status(&updated)
            .await?;
    }
    Ok(recheck)
}

/// The pods in the budget's namespace its selector matches (a missing
/// selector matches none; an empty one, all).
fn budget_pods(ctx: &Ctx, pdb: &PodDisruptionBudget) -> Vec<Arc<Pod>> {
    let ns = pdb.metadata.namespace.as_deref().unwrap_or("");
    let selector = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(s) => selector_of(s).unwrap_or_else(|_| LabelSelector::nothing()),
        None => LabelSelector::nothing(),
    };
    ctx.pods
        .list_in(ns)
        .into_iter()
        .filter(|p| selector.matches(labels(&p.metadata)))
        .collect()
}

/// Whether `pod` is one of `pdb`'s (for routing pod events).
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.metadata.namespace == pod.metadata.namespace
        && pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| selector_of(s).ok())
            .is_some_and(|s| s.matches(labels(&pod.metadata)))
}

/// The recorded evictions still in force, and when to look again for the
/// oldest one to lapse.
fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Requeue) {
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for (name, at) in recorded {
        let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let lapses = at.0 + DISRUPTED_FOR;
        if lapses <= now {
            tracing::info!(pod = %name, "an evicted pod was not deleted in time; counting it again");
            continue;
        }
        let left = Duration::try_from(now.duration_until(lapses)).unwrap_or_default();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        kept.insert(name, at);
    }
    (kept, recheck)
}

/// (expected pods, desired healthy), as Kubernetes' disruption controller
/// counts them; an error says why the budget cannot be evaluated.
fn count(ctx: &Ctx, pdb: &PodDisruptionBudget, pods: &[Arc<Pod>]) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let invalid = |e: Error| e.to_string();
    match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => Ok((pods.len() as i32, *n)),
        (Some(min @ IntOrString::String(_)), _) => {
            let expected = controllers_scale(ctx, pods)?;
            Ok((
                expected,
                scaled(Some(min), "0", expected, true).map_err(invalid)?,
            ))
        }
        (None, Some(max)) => {
            let expected = controllers_scale(ctx, pods)?;
            let max = scaled(Some(max), "0", expected, true).map_err(invalid)?;
            Ok((expected, (expected - max).max(0)))
        }
        (None, None) => Ok((pods.len() as i32, 0)),
    }
}

/// The summed scale of the controllers of `pods` (each counted once).
fn controllers_scale(ctx: &Ctx, pods: &[Arc<Pod>]) -> Result<i32, String> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    for pod in pods {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        let Some(owner) = controller_of(&pod.metadata) else {
            // Kubernetes leaves unmanaged pods out of a percentage.
            continue;
        };
        let missing = || format!("found no controllers for pod \"{pod_name}\"");
        let (uid, replicas) = match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = ctx
                    .replica_sets
                    .get_in(Some(ns), &owner.name)
                    .ok_or_else(missing)?;
                // A Deployment's ReplicaSet counts as the Deployment.
                match controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                    Some(d) => {
                        let dep = ctx
                            .deployments
                            .get_in(Some(ns), &d.name)
                            .ok_or_else(missing)?;
                        (
                            d.uid.clone(),
                            dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        )
                    }
                    None => (
                        owner.uid.clone(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    ),
                }
            }
            "StatefulSet" => {
                let sts = ctx
                    .stateful_sets
                    .get_in(Some(ns), &owner.name)
                    .ok_or_else(missing)?;
                (
                    owner.uid.clone(),
                    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                )
            }
            _ => return Err(missing()),
        };
        scales.insert(uid, replicas);
    }
    Ok(scales.values().sum())
}
