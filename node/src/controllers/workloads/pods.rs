//! Pods as the workload controllers see them: whether one counts (active,
//! ready, available), which to delete first, building one from a template,
//! and creating or deleting many with expectations and events.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodCondition, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::{Api, DeleteParams};

use super::expectations::Op;
use super::{Ctx, Error, Result};
use crate::controllers::events::Recorder;

/// Kubernetes' annotation: pods with a lower cost are deleted first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Succeeded or Failed: the pod will not run again.
pub fn is_terminal(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// Neither finished nor being deleted: the pod counts toward replicas.
pub fn is_active(p: &Pod) -> bool {
    !is_terminal(p) && p.metadata.deletion_timestamp.is_none()
}

fn condition<'a>(p: &'a Pod, kind: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

pub fn is_ready(p: &Pod) -> bool {
    condition(p, "Ready").is_some_and(|c| c.status == "True")
}

fn ready_since(p: &Pod) -> Option<Timestamp> {
    condition(p, "Ready")
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` (strictly longer, as Kubernetes).
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(p) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(p).is_some_and(|t| {
        t.as_millisecond() + i64::from(min_ready_seconds) * 1000 < now.as_millisecond()
    })
}

/// When `p` becomes available if it stays ready, for a requeue.
pub fn available_in(
    p: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(p)?;
    let at = since.as_millisecond() + i64::from(min_ready_seconds) * 1000 + 1;
    let left = at - now.as_millisecond();
    (left > 0).then(|| std::time::Duration::from_millis(left as u64))
}

/// When a workload should look again: the soonest a ready pod of `mine`
/// that is not yet available becomes available.
pub fn next_available(
    mine: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    mine.iter()
        .filter(|p| is_ready(p) && !is_available(p, min_ready_seconds, now))
        .filter_map(|p| available_in(p, min_ready_seconds, now))
        .min()
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn node_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Later first, unset before anything (`afterOrZero`).
fn after_or_zero(a: Option<Timestamp>, b: Option<Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(&a),
    }
}

/// Sorts `pods` so that the ones to delete first come first, as
/// Kubernetes' `ActivePodsWithRanks`: unscheduled before scheduled,
/// pending before unknown before running, not ready before ready, lower
/// deletion cost first, pods sharing a node with more `related` pods first,
/// ready for a shorter time first, more restarts first, newer first.
pub fn sort_for_deletion(pods: &mut [Arc<Pod>], related: &[Arc<Pod>]) {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *on_node.entry(node_name(p)).or_default() += 1;
    }
    let rank = |p: &Pod| on_node.get(node_name(p)).copied().unwrap_or(0);
    let phase_ordinal = |p: &Pod| match phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let ranks: HashMap<String, usize> = pods
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), rank(p)))
        .collect();
    let rank_of = |p: &Pod| {
        ranks
            .get(p.metadata.name.as_deref().unwrap_or(""))
            .copied()
            .unwrap_or(0)
    };
    pods.sort_by(|a, b| {
        let (na, nb) = (node_name(a), node_name(b));
        if na != nb && (na.is_empty() || nb.is_empty()) {
            return if na.is_empty() {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        phase_ordinal(a)
            .cmp(&phase_ordinal(b))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
            .then_with(|| rank_of(b).cmp(&rank_of(a)))
            .then_with(|| {
                if is_ready(a) && is_ready(b) {
                    after_or_zero(ready_since(a), ready_since(b))
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| max_restarts(b).cmp(&max_restarts(a)))
            .then_with(|| {
                after_or_zero(
                    a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            })
    });
}

/// A pod of `template`, named `name`, controlled by `owner`.
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Runs `f(0..count)` in batches of 1, 2, 4, … and stops after the first
/// batch with a failure: a controller that cannot create (a bad template,
/// a terminating namespace) fails a few times, not a hundred. Returns how
/// many succeeded and the first error.
pub async fn slow_start<F, Fut>(count: usize, mut f: F) -> (usize, Option<Error>)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let (mut done, mut ok, mut batch) = (0, 0, 1);
    while done < count {
        let n = batch.min(count - done);
        let results = futures::future::join_all((done..done + n).map(&mut f)).await;
        done += n;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (ok, first_err);
        }
        batch *= 2;
    }
    (ok, None)
}

/// Creates `pods` in slow-start batches, expecting each in the cache and
/// recording SuccessfulCreate / FailedCreate on `owner`.
pub async fn create_all(
    ctx: &Ctx,
    rec: &Recorder,
    owner: &ObjectReference,
    exp_key: &str,
    pods: Vec<Pod>,
) -> (usize, Option<Error>) {
    let total = pods.len();
    for p in &pods {
        ctx.expectations.expect(
            exp_key,
            p.metadata.name.as_deref().unwrap_or(""),
            Op::Create,
        );
    }
    let pods = &pods;
    let mut started = 0;
    let (ok, err) = slow_start(total, |i| {
        started += 1;
        async move {
            let pod = &pods[i];
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            match Api::<Pod>::namespaced(&ctx.client, ns).create(pod).await {
                Ok(_) => {
                    rec.normal(
                        owner.clone(),
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
                    Ok(())
                }
                Err(e) => {
                    ctx.expectations.forget(exp_key, name);
                    // A terminating namespace refuses everything: not worth an event.
                    if e.code() != Some(403) {
                        rec.warning(
                            owner.clone(),
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        )
                        .await;
                    }
                    Err(e.into())
                }
            }
        }
    })
    .await;
    // The batches never started: nothing of theirs will show up.
    for p in pods.iter().skip(started) {
        ctx.expectations
            .forget(exp_key, p.metadata.name.as_deref().unwrap_or(""));
    }
    (ok, err)
}

/// Deletes `pods` (each only if it is still the same pod), expecting the
/// deletions and recording SuccessfulDelete / FailedDelete on `owner`.
pub async fn delete_all(
    ctx: &Ctx,
    rec: &Recorder,
    owner: &ObjectReference,
    exp_key: &str,
    pods: &[Arc<Pod>],
) -> Result<()> {
    let results = futures::future::join_all(pods.iter().map(|p| async move {
        let name = p.metadata.name.as_deref().unwrap_or("");
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        ctx.expectations.expect(exp_key, name, Op::Delete);
        let params = DeleteParams::default().with_uid(p.metadata.uid.clone().unwrap_or_default());
        match Api::<Pod>::namespaced(&ctx.client, ns)
            .delete(name, &params)
            .await
        {
            Ok(true) => {
                rec.normal(
                    owner.clone(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                )
                .await;
                Ok(())
            }
            Ok(false) => {
                ctx.expectations.forget(exp_key, name);
                Ok(())
            }
            Err(e) => {
                ctx.expectations.forget(exp_key, name);
                rec.warning(
                    owner.clone(),
                    "FailedDelete",
                    format!("Error deleting: {e}"),
                )
                .await;
                Err(Error::from(e))
            }
        }
    }))
    .await;
    results.into_iter().collect::<Result<Vec<()>>>().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        ready_at: Option<i64>,
        restarts: i32,
        created: i64,
    ) -> Arc<Pod> {
        let conditions = ready_at.map(|t| {
            vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(ts(t))),
                ..Default::default()
            }]
        });
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions,
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn deletion_order_follows_kubernetes() {
        let mut pods = vec![
            pod("ready-old", "n1", "Running", Some(100), 0, 10),
            pod("ready-new", "n1", "Running", Some(200), 0, 20),
            pod("running-unready", "n1", "Running", None, 0, 30),
            pod("pending", "n1", "Pending", None, 0, 40),
            pod("unscheduled", "", "Pending", None, 0, 5),
            pod("restarty", "n1", "Running", None, 5, 1),
        ];
        sort_for_deletion(&mut pods, &[]);
        assert_eq!(
            names(&pods),
            [
                "unscheduled",
                "pending",
                "restarty",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn doubled_up_pods_go_first() {
        let a = pod("a", "n1", "Running", Some(100), 0, 10);
        let b = pod("b", "n2", "Running", Some(100), 0, 10);
        let other = pod("other", "n2", "Running", Some(100), 0, 10);
        let mut pods = vec![a.clone(), b.clone()];
        sort_for_deletion(&mut pods, &[a, b, other]);
        assert_eq!(names(&pods), ["b", "a"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", "n1", "Running", Some(100), 0, 0);
        assert!(is_available(&p, 0, ts(100)));
        assert!(!is_available(&p, 10, ts(110)));
        assert!(is_available(&p, 10, ts(111)));
        assert_eq!(
            available_in(&p, 10, ts(105)),
            Some(std::time::Duration::from_millis(5001))
        );
    }

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_the_first_failing_batch() {
        let calls = parking_lot::Mutex::new(Vec::new());
        let (ok, err) = slow_start(10, |i| {
            calls.lock().push(i);
            async move {
                if i == 4 {
                    Err(Error::Invalid("no".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches: [0], [1,2], [3,4,5,6] (fails) → 6 succeeded, 7.. never tried.
        assert_eq!(ok, 6);
        assert!(err.is_some());
        assert_eq!(calls.lock().len(), 7);
    }
}
