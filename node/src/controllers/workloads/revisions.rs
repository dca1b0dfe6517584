//! ControllerRevisions: the history of a DaemonSet's or StatefulSet's pod
//! template, as Kubernetes keeps it, so that `kubectl rollout history
//! ds/NAME` (or `sts/NAME`) lists the revisions and `kubectl rollout undo`
//! patches an old template back (the revision's data is that patch:
//! `{"spec":{"template":{..., "$patch":"replace"}}}`).
//!
//! One revision per template hash, named `<owner>-<hash>`, labelled with
//! the template's labels and `controller-revision-hash`, controlled by the
//! owner. The current template's revision always has the highest number:
//! going back to an old template renumbers its revision, as Kubernetes
//! does. Revisions beyond `revisionHistoryLimit` (default 10), oldest
//! first, are deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::json;
use skiff_sdk::client::{Api, DeleteParams, ListParams};

use super::owners::{controlled_by, controller_ref, selector_of};
use super::{Ctx, Error, Result};
use crate::controllers::workloads::daemonset::HASH_LABEL;

const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// What a revision is kept for: the owner and its template.
struct Owner<'a> {
    meta: &'a ObjectMeta,
    owner_ref: OwnerReference,
    template: &'a PodTemplateSpec,
    selector: &'a LabelSelector,
    history_limit: Option<i32>,
}

pub async fn ensure_daemon_set(ctx: &Ctx, ds: &DaemonSet, hash: &str) -> Result<()> {
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(());
    };
    let owner = Owner {
        meta: &ds.metadata,
        owner_ref: controller_ref(ds),
        template: &spec.template,
        selector: &spec.selector,
        history_limit: spec.revision_history_limit,
    };
    ensure(ctx, owner, hash).await
}

/// `revision` is the StatefulSet's update revision, `<name>-<hash>`.
pub async fn ensure_stateful_set(ctx: &Ctx, set: &StatefulSet, revision: &str) -> Result<()> {
    let Some(spec) = set.spec.as_ref() else {
        return Ok(());
    };
    let name = set.metadata.name.as_deref().unwrap_or("");
    let Some(hash) = revision.strip_prefix(&format!("{}-", truncate(name, 223))) else {
        return Ok(());
    };
    let owner = Owner {
        meta: &set.metadata,
        owner_ref: controller_ref(set),
        template: &spec.template,
        selector: &spec.selector,
        history_limit: spec.revision_history_limit,
    };
    ensure(ctx, owner, hash).await
}

/// Makes sure the revision of the owner's current template (`hash`)
/// exists and is the newest; remembers the hash it did this for, so that a
/// sync with no new template costs no request.
async fn ensure(ctx: &Ctx, owner: Owner<'_>, hash: &str) -> Result<()> {
    let Some(uid) = owner.meta.uid.as_deref() else {
        return Ok(());
    };
    let name = owner.meta.name.clone().unwrap_or_default();
    let ns = owner.meta.namespace.clone().unwrap_or_default();
    if ctx.revisions.lock().get(uid).map(String::as_str) == Some(hash) {
        return Ok(());
    }
    let api = Api::<ControllerRevision>::namespaced(&ctx.client, &ns);
    let selector = selector_of(owner.selector)?;
    let listed = api
        .list(&ListParams::default().labels(selector.to_string()))
        .await?;
    let mut mine: Vec<ControllerRevision> = listed
        .items
        .into_iter()
        .filter(|r| controlled_by(&r.metadata, uid))
        .collect();
    let newest = mine.iter().map(|r| r.revision).max().unwrap_or(0);
    let rev_name = format!("{}-{hash}", truncate(&name, 223));
    let cause = owner
        .meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGE_CAUSE))
        .cloned();
    match mine
        .iter_mut()
        .find(|r| r.metadata.name.as_deref() == Some(&rev_name))
    {
        Some(r) if r.revision == newest => {}
        Some(r) => {
            // Back to an old template: it becomes the newest revision.
            r.revision = newest + 1;
            let annotations = r.metadata.annotations.get_or_insert_with(BTreeMap::new);
            match &cause {
                Some(c) => annotations.insert(CHANGE_CAUSE.into(), c.clone()),
                None => annotations.remove(CHANGE_CAUSE),
            };
            *r = api.replace(r).await?;
        }
        None => {
            let mut template =
                serde_json::to_value(owner.template).map_err(|e| Error::Invalid(e.to_string()))?;
            template["$patch"] = json!("replace");
            let mut labels = owner
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.into());
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(rev_name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: cause.map(|c| BTreeMap::from([(CHANGE_CAUSE.to_string(), c)])),
                    owner_references: Some(vec![owner.owner_ref.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(json!({"spec": {"template": template}}))),
                revision: newest + 1,
            };
            match api.create(&rev).await {
                Ok(r) => mine.push(r),
                // A revision of that name from another owner or another
                // time: the next sync sees it in the list.
                Err(e) if e.is_conflict() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
    // History beyond the limit goes, oldest first; never the current one.
    let limit = owner.history_limit.unwrap_or(10).max(0) as usize;
    let mut old: Vec<&ControllerRevision> = mine
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(&rev_name))
        .collect();
    old.sort_by_key(|r| r.revision);
    let excess = old.len().saturating_sub(limit);
    for r in &old[..excess] {
        if let Some(n) = r.metadata.name.as_deref() {
            api.delete(n, &DeleteParams::default()).await?;
        }
    }
    ctx.revisions
        .lock()
        .insert(uid.to_string(), hash.to_string());
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
