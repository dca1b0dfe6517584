//! The ReplicaSet controller: keeps `spec.replicas` active pods of the
//! template, adopting matching orphans and releasing pods that stop
//! matching, and reports how many are labelled, ready and available.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use skiff_sdk::client::Api;

use super::expectations;
use super::owners::{
    claim, controlled_by, controller_of, controller_ref, generate_name, labels, selector_of,
};
use super::pods::{self, create_all, delete_all, from_template, sort_for_deletion};
use super::{Ctx, Error, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

/// At most this many pods are created or deleted in one sync (Kubernetes'
/// `burstReplicas`).
const BURST: usize = 500;

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let exp_key = expectations::key("ReplicaSet", key);
    let Some(rs) = ctx.replica_sets.get(key) else {
        ctx.expectations.clear(&exp_key);
        return Ok(None);
    };
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(None);
    };
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let selector = match selector_of(&spec.selector) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%key, "replica set has an invalid selector: {e}");
            return Ok(None);
        }
    };
    // Read before the pods: if the last creations show up between the two
    // reads, the worst case is one sync that waits, never one that doubles.
    let needs_sync = ctx.expectations.satisfied(&exp_key);
    let active: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(&ns)
        .into_iter()
        .filter(|p| pods::is_active(p))
        .collect();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mine = claim(
        &ctx.client,
        &controller_ref(&*rs),
        deleting,
        &selector,
        active,
    )
    .await?;

    let mut manage_err = None;
    if needs_sync && !deleting {
        manage_err = manage(ctx, &rs, &mine, &exp_key).await.err();
    }
    let now = events::now();
    let status = status_of(&rs, &mine, manage_err.as_ref(), now);
    if rs.status.as_ref() != Some(&status) {
        let mut next = (*rs).clone();
        next.status = Some(status);
        Api::<ReplicaSet>::namespaced(&ctx.client, &ns)
            .replace_status(&next)
            .await?;
    }
    if let Some(e) = manage_err {
        return Err(e);
    }
    // Look again when the next ready pod becomes available.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok(pods::next_available(&mine, min_ready, now))
}

/// Creates or deletes pods toward `spec.replicas`.
async fn manage(ctx: &Ctx, rs: &ReplicaSet, mine: &[Arc<Pod>], exp_key: &str) -> Result<()> {
    let spec = rs.spec.as_ref().expect("checked by sync");
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let ns = rs.metadata.namespace.as_deref().unwrap_or("default");
    let name = rs.metadata.name.as_deref().unwrap_or("");
    let rec = ctx.recorder(Kind::ReplicaSet);
    let me = reference(rs);
    if mine.len() < want {
        let template = spec
            .template
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("replica set {ns}/{name} has no template")))?;
        let owner = controller_ref(rs);
        let n = (want - mine.len()).min(BURST);
        let new: Vec<Pod> = (0..n)
            .map(|_| {
                from_template(
                    template,
                    ns,
                    &generate_name(&format!("{name}-")),
                    owner.clone(),
                )
            })
            .collect();
        let (_, err) = create_all(ctx, rec, &me, exp_key, new).await;
        return err.map_or(Ok(()), Err);
    }
    if mine.len() > want {
        let n = (mine.len() - want).min(BURST);
        let related = related_pods(ctx, rs);
        let mut victims = mine.to_vec();
        sort_for_deletion(&mut victims, &related);
        victims.truncate(n);
        return delete_all(ctx, rec, &me, exp_key, &victims).await;
    }
    Ok(())
}

/// The active pods of every ReplicaSet with the same controller as `rs`
/// (the Deployment's other revisions): deleting from the nodes where they
/// crowd spreads what stays.
fn related_pods(ctx: &Ctx, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
    let ns = rs.metadata.namespace.as_deref().unwrap_or("");
    let Some(owner) = controller_of(&rs.metadata) else {
        let uid = rs.metadata.uid.as_deref().unwrap_or("");
        return ctx.pods.filter(|p| controlled_by(&p.metadata, uid));
    };
    let siblings: Vec<String> = ctx
        .replica_sets
        .list_in(ns)
        .iter()
        .filter(|r| controlled_by(&r.metadata, &owner.uid))
        .filter_map(|r| r.metadata.uid.clone())
        .collect();
    ctx.pods
        .list_in(ns)
        .into_iter()
        .filter(|p| pods::is_active(p))
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| siblings.contains(&r.uid)))
        .collect()
}

/// The status `rs` should report for its active pods `mine`.
fn status_of(
    rs: &ReplicaSet,
    mine: &[Arc<Pod>],
    err: Option<&Error>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = mine
        .iter()
        .filter(|p| {
            let l = labels(&p.metadata);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = mine.iter().filter(|p| pods::is_ready(p)).count();
    let available = mine
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default();
    let failure = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
    match (err, failure) {
        (Some(e), None) => {
            let want = spec.and_then(|s| s.replicas).unwrap_or(1);
            let reason = if (mine.len() as i64) < i64::from(want) {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(e.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    ReplicaSetStatus {
        replicas: count(mine.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(labels: &[(&str, &str)], ready_at: Option<i64>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn status_counts_labelled_ready_and_available_pods() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(10),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([
                            ("app".into(), "web".into()),
                            ("tier".into(), "front".into()),
                        ])),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        };
        let mine = [
            pod(&[("app", "web"), ("tier", "front")], Some(0)),
            pod(&[("app", "web")], Some(95)),
            pod(&[("app", "web"), ("tier", "front")], None),
        ];
        let s = status_of(&rs, &mine, None, Timestamp::from_second(100).unwrap());
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(4));
        let s = status_of(
            &rs,
            &mine[..1],
            Some(&Error::Invalid("quota".into())),
            Timestamp::from_second(100).unwrap(),
        );
        let c = &s.conditions.unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("ReplicaFailure", Some("FailedCreate"))
        );
    }
}
