//! `skiff rollout status|history|undo` for Deployments (and `status` for
//! DaemonSets), with kubectl's messages. These know their kinds, so they
//! use the SDK's typed API.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use serde_json::json;
use skiff_sdk::client::{Api, ListParams, Object, PatchType, WatchEvent};

use super::{Conn, Ctx, parse_duration, print, type_names};

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Watch the rollout until it completes.
    Status {
        /// deployment/NAME, daemonset/NAME, or TYPE NAME.
        #[arg(required = true, value_name = "TYPE/NAME")]
        args: Vec<String>,
        /// Wait for the rollout (`--watch=false` to print the state once).
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        watch: bool,
        /// Give up after this long (`0`: wait as long as it takes).
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        conn: Conn,
    },
    /// The revisions of a Deployment.
    History {
        #[arg(required = true, value_name = "TYPE/NAME")]
        args: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Roll a Deployment back to its previous (or a given) revision.
    Undo {
        #[arg(required = true, value_name = "TYPE/NAME")]
        args: Vec<String>,
        /// The revision to go back to (0: the one before the current).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: RolloutCmd) -> Result<()> {
    match cmd {
        RolloutCmd::Status {
            args,
            watch,
            timeout,
            conn,
        } => {
            let ctx = Ctx::connect(&conn)?;
            let (kind, name) = target(&ctx, &args).await?;
            let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
            match kind.as_str() {
                "Deployment" => {
                    let api = Api::<Deployment>::namespaced(&ctx.client, &ctx.namespace);
                    follow(&api, &name, watch, deadline, deployment_status).await
                }
                "DaemonSet" => {
                    let api = Api::<DaemonSet>::namespaced(&ctx.client, &ctx.namespace);
                    follow(&api, &name, watch, deadline, daemonset_status).await
                }
                other => bail!("no status viewer has been implemented for {other}"),
            }
        }
        RolloutCmd::History { args, conn } => {
            let ctx = Ctx::connect(&conn)?;
            let name = deployment_name(&ctx, &args).await?;
            let api = Api::<Deployment>::namespaced(&ctx.client, &ctx.namespace);
            let d = api.get(&name).await?;
            let history = history(&ctx, &d).await?;
            let mut lines = vec![vec!["REVISION".to_string(), "CHANGE-CAUSE".to_string()]];
            for (rev, rs) in &history {
                let cause = annotation(&rs.metadata.annotations, CHANGE_CAUSE)
                    .filter(|c| !c.is_empty())
                    .unwrap_or("<none>");
                lines.push(vec![rev.to_string(), cause.to_string()]);
            }
            // kubectl: the name, a space, then the table (padding 2).
            println!("deployment.apps/{name} ");
            print!("{}", print::tabulate_padded(&lines, 2));
            println!();
            Ok(())
        }
        RolloutCmd::Undo {
            args,
            to_revision,
            conn,
        } => {
            let ctx = Ctx::connect(&conn)?;
            let name = deployment_name(&ctx, &args).await?;
            let api = Api::<Deployment>::namespaced(&ctx.client, &ctx.namespace);
            let d = api.get(&name).await?;
            let history = history(&ctx, &d).await?;
            let current = annotation(&d.metadata.annotations, REVISION)
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0);
            let target = if to_revision == 0 {
                history
                    .iter()
                    .rev()
                    .find(|(r, _)| *r != current)
                    .ok_or_else(|| anyhow!("no rollout history found for deployment {name:?}"))?
            } else {
                history
                    .iter()
                    .find(|(r, _)| *r == to_revision)
                    .ok_or_else(|| {
                        anyhow!("unable to find specified revision {to_revision} in history")
                    })?
            };
            let mut template = serde_json::to_value(
                target
                    .1
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.clone())
                    .unwrap_or_default(),
            )?;
            if let Some(l) = template["metadata"]["labels"].as_object_mut() {
                l.remove("pod-template-hash");
            }
            let live = serde_json::to_value(d.spec.as_ref().map(|s| &s.template))?;
            if live == template {
                println!(
                    "deployment.apps/{name} skipped rollback (current template already matches revision {})",
                    target.0
                );
                return Ok(());
            }
            let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            api.patch(&name, PatchType::Json, &patch).await?;
            println!("deployment.apps/{name} rolled back");
            Ok(())
        }
    }
}

fn annotation<'a>(
    a: &'a Option<std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    a.as_ref()?.get(key).map(String::as_str)
}

/// The kind and name of `TYPE/NAME` or `TYPE NAME`.
async fn target(ctx: &Ctx, args: &[String]) -> Result<(String, String)> {
    let (pairs, _) = type_names(args)?;
    let [(t, name)] = pairs.as_slice() else {
        bail!("give exactly one resource, as TYPE/NAME");
    };
    Ok((ctx.resource(t).await?.kind, name.clone()))
}

async fn deployment_name(ctx: &Ctx, args: &[String]) -> Result<String> {
    let (kind, name) = target(ctx, args).await?;
    if kind != "Deployment" {
        bail!("no history viewer has been implemented for {kind}");
    }
    Ok(name)
}

/// The Deployment's ReplicaSets by revision, oldest first.
async fn history(ctx: &Ctx, d: &Deployment) -> Result<Vec<(i64, ReplicaSet)>> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let rs = Api::<ReplicaSet>::namespaced(&ctx.client, &ctx.namespace)
        .list_all(&ListParams::default())
        .await?;
    let mut out: Vec<(i64, ReplicaSet)> = rs
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .filter_map(|r| {
            let rev = annotation(&r.metadata.annotations, REVISION)?
                .parse()
                .ok()?;
            Some((rev, r))
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

/// kubectl's `DeploymentStatusViewer`: the message, and whether the
/// rollout is done.
pub fn deployment_status(d: &Deployment) -> Result<(String, bool)> {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let generation = d.metadata.generation.unwrap_or(0);
    let s = d.status.clone().unwrap_or_default();
    if generation > s.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    let progressing = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        bail!("deployment {name:?} exceeded its progress deadline");
    }
    let updated = s.updated_replicas.unwrap_or(0);
    let replicas = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < want
    {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
            ),
            false,
        ));
    }
    if replicas > updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
            false,
        ));
    }
    if available < updated {
        return Ok((
            format!(
                "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
            ),
            false,
        ));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

/// kubectl's `DaemonSetStatusViewer`.
pub fn daemonset_status(d: &DaemonSet) -> Result<(String, bool)> {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let s = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > s.observed_generation.unwrap_or(0) {
        return Ok((
            "Waiting for daemon set spec update to be observed...".into(),
            false,
        ));
    }
    let updated = s.updated_number_scheduled.unwrap_or(0);
    let desired = s.desired_number_scheduled;
    if updated < desired {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
            ),
            false,
        ));
    }
    let available = s.number_available.unwrap_or(0);
    if available < desired {
        return Ok((
            format!(
                "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
            ),
            false,
        ));
    }
    Ok((format!("daemon set {name:?} successfully rolled out"), true))
}

/// Prints `status` of the object until it says done: a get, then a watch
/// of that one object (started again if the server ends it).
async fn follow<K: Object>(
    api: &Api<K>,
    name: &str,
    watch: bool,
    deadline: Option<Instant>,
    status: fn(&K) -> Result<(String, bool)>,
) -> Result<()> {
    let mut last = String::new();
    let mut show = |obj: &K| -> Result<bool> {
        let (msg, done) = status(obj)?;
        if msg != last {
            println!("{msg}");
            last = msg;
        }
        Ok(done)
    };
    loop {
        let obj = api.get(name).await?;
        if show(&obj)? || !watch {
            return Ok(());
        }
        let mut params = ListParams::default().fields(format!("metadata.name={name}"));
        params.resource_version = obj.metadata().resource_version.clone();
        params.timeout_seconds = Some(300);
        let mut w = api.watch(&params).await?;
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            let ev = match tokio::time::timeout(left, w.next()).await {
                Err(_) => bail!("timed out waiting for the condition"),
                Ok(ev) => ev,
            };
            match ev {
                Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    if show(&o)? {
                        return Ok(());
                    }
                }
                Ok(Some(WatchEvent::Deleted(_))) => {
                    bail!("object has been deleted")
                }
                Ok(Some(WatchEvent::Bookmark(_))) => {}
                // Ended, or history compacted away: look again.
                Ok(None) => break,
                Err(e) if e.is_gone() => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn deploy(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn messages_follow_kubectl() {
        let base = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "generation": 2}, "spec": {"replicas": 3,
            "selector": {}, "template": {}}});
        let mut d = base.clone();
        d["status"] = json!({"observedGeneration": 1});
        assert_eq!(
            deployment_status(&deploy(d)).unwrap().0,
            "Waiting for deployment spec update to be observed..."
        );
        let mut d = base.clone();
        d["status"] = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1});
        assert_eq!(
            deployment_status(&deploy(d)).unwrap(),
            (
                "Waiting for deployment \"x\" rollout to finish: 1 of 3 updated replicas are available...".into(),
                false
            )
        );
        let mut d = base.clone();
        d["status"] = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(
            deployment_status(&deploy(d))
                .unwrap()
                .0
                .contains("1 old replicas are pending termination")
        );
        let mut d = base;
        d["status"] = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            deployment_status(&deploy(d)).unwrap(),
            ("deployment \"x\" successfully rolled out".into(), true)
        );
    }
}
