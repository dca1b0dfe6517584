//! The Job controller: runs pods until `completions` of them succeed
//! (`NonIndexed`, or one per index with `Indexed`), `parallelism` at a
//! time; fails the Job after more than `backoffLimit` failed pods or past
//! `activeDeadlineSeconds`; honours `suspend`; deletes a finished Job after
//! `ttlSecondsAfterFinished`.
//!
//! Finished pods are counted exactly once, as Kubernetes does since 1.26:
//! every pod carries the finalizer `batch.kubernetes.io/job-tracking`, so
//! it cannot vanish before it is counted. A sync (1) records the uids of
//! newly finished pods in `status.uncountedTerminatedPods` (for `Indexed`,
//! their index in `completedIndexes`), (2) removes their finalizers, then
//! (3) moves them into `succeeded`/`failed`. A crash between the steps
//! repeats a step, never a count; counting from the informer instead would
//! lose pods deleted before the controller saw them finish.
//!
//! The final condition (`Complete`, `Failed`) follows the interim one
//! (`SuccessCriteriaMet`, `FailureTarget`) once no pod is left running or
//! uncounted, as v1.33 does.
//!
//! The API server generates `spec.selector` (the Job's uid) as
//! Kubernetes' does; a Job stored without one (by an older skiff) selects
//! the pods labelled with its uid, which are the pods it creates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use skiff_sdk::client::{Api, DeleteParams, PatchType};
use skiff_sdk::selector::{LabelSelector, Operator, Requirement};

use super::expectations::{self, Op};
use super::owners::{claim, controller_of, controller_ref, generate_name, selector_of};
use super::pods::{self, create_all, delete_all, sort_for_deletion};
use super::{Ctx, Error, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";
/// The wait before replacing a failed pod doubles from this...
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(600);
const BURST: usize = 500;

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let exp_key = expectations::key("Job", key);
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let job = ctx.jobs.get(key);
    release_orphans(
        ctx,
        ns,
        name,
        job.as_ref().and_then(|j| j.metadata.uid.as_deref()),
    )
    .await?;
    let Some(job) = job else {
        ctx.expectations.clear(&exp_key);
        return Ok(None);
    };
    let Some(spec) = job.spec.as_ref() else {
        return Ok(None);
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let selector = match &spec.selector {
        Some(s) => match selector_of(s) {
            Ok(s) if !s.is_everything() => s,
            _ => {
                tracing::warn!(%key, "job has an invalid or empty selector");
                return Ok(None);
            }
        },
        None => LabelSelector::from_requirements(vec![
            Requirement::new(CONTROLLER_UID, Operator::Equals, [uid.as_str()])
                .map_err(Error::Invalid)?,
        ]),
    };
    let now = events::now();
    let status = job.status.clone().unwrap_or_default();
    if let Some(finished_at) = finished_at(&status) {
        // Pods left with the finalizer (a sync cut short) are released.
        let mine = claim(
            &ctx.client,
            &controller_ref(&*job),
            true,
            &selector,
            ctx.pods.list_in(ns),
        )
        .await?;
        let tracked: Vec<Arc<Pod>> = mine.into_iter().filter(|p| has_finalizer(p)).collect();
        untrack(ctx, &exp_key, &tracked).await?;
        return expire(ctx, &job, finished_at, now).await;
    }
    let needs_sync = ctx.expectations.satisfied(&exp_key);
    let deleting = job.metadata.deletion_timestamp.is_some();
    let mine = claim(
        &ctx.client,
        &controller_ref(&*job),
        deleting,
        &selector,
        ctx.pods.list_in(ns),
    )
    .await?;
    let mut t = Tracker {
        ctx,
        job: (*job).clone(),
        exp_key,
        now,
    };
    t.sync(&mine, needs_sync).await
}

/// When the Job finished, if it has.
fn finished_at(s: &JobStatus) -> Option<Timestamp> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        .map(|c| {
            s.completion_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
                .map_or_else(events::now, |t| t.0)
        })
}

fn has_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// Pods still tracked for a Job `name` that is gone (or is another Job of
/// that name): nothing will count them, so they are let go.
async fn release_orphans(ctx: &Ctx, ns: &str, name: &str, uid: Option<&str>) -> Result<()> {
    let orphans: Vec<Arc<Pod>> = ctx
        .pods
        .list_in(ns)
        .into_iter()
        .filter(|p| has_finalizer(p))
        .filter(|p| {
            controller_of(&p.metadata)
                .is_some_and(|r| r.kind == "Job" && r.name == name && Some(r.uid.as_str()) != uid)
        })
        .collect();
    let key = expectations::key("Job", &format!("{ns}/{name}#orphans"));
    untrack(ctx, &key, &orphans).await.map(drop)
}

/// Removes the tracking finalizer from `pods`.
async fn untrack(ctx: &Ctx, exp_key: &str, pods: &[Arc<Pod>]) -> Result<Vec<String>> {
    let results = futures::future::join_all(pods.iter().filter(|p| has_finalizer(p)).map(|p| async move {
        let name = p.metadata.name.clone().unwrap_or_default();
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let rest: Vec<&String> = p
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        let rest = if rest.is_empty() { serde_json::Value::Null } else { json!(rest) };
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": p.metadata.resource_version}});
        ctx.expectations.expect(exp_key, &name, Op::Untrack);
        match Api::<Pod>::namespaced(&ctx.client, ns)
            .patch(&name, PatchType::Merge, &patch)
            .await
        {
            Ok(_) => Ok(p.metadata.uid.clone().unwrap_or_default()),
            // Gone: it was the finalizer that kept it, so it was removed.
            Err(e) if e.is_not_found() => Ok(p.metadata.uid.clone().unwrap_or_default()),
            Err(e) => {
                ctx.expectations.forget(exp_key, &name);
                Err(Error::from(e))
            }
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Deletes a finished Job once its `ttlSecondsAfterFinished` has passed.
async fn expire(ctx: &Ctx, job: &Job, finished_at: Timestamp, now: Timestamp) -> Result<Requeue> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(None);
    };
    let left = finished_at.as_millisecond() + i64::from(ttl) * 1000 - now.as_millisecond();
    if left > 0 {
        return Ok(Some(Duration::from_millis(left as u64)));
    }
    let ns = job.metadata.namespace.as_deref().unwrap_or("default");
    let name = job.metadata.name.as_deref().unwrap_or("");
    tracing::info!(job = %name, namespace = %ns, "deleting finished job after its TTL");
    let params = DeleteParams::background().with_uid(job.metadata.uid.clone().unwrap_or_default());
    match Api::<Job>::namespaced(&ctx.client, ns)
        .delete(name, &params)
        .await
    {
        Ok(_) => Ok(None),
        Err(e) if e.is_conflict() => Ok(None), // another Job of that name now
        Err(e) => Err(e.into()),
    }
}

/// The completion index of an `Indexed` Job's pod.
fn index_of(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX))
        })
        .and_then(|v| v.parse().ok())
        .filter(|i| *i >= 0)
}

/// Parses `completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as `completedIndexes` does: ascending, runs as ranges.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn condition_true(s: &JobStatus, kind: &str) -> Option<JobCondition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == "True")
        .cloned()
}

/// Sets a condition; returns whether anything changed. A False condition
/// that is absent stays absent.
fn ensure_condition(
    s: &mut JobStatus,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == kind) {
        if c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    if status == "False" {
        return false;
    }
    conds.push(JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// How the Job ends, once decided.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finish {
    /// `Complete` or `Failed`.
    kind: &'static str,
    reason: String,
    message: String,
}

impl Finish {
    fn interim(&self) -> &'static str {
        if self.kind == "Complete" {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        }
    }
}

/// What one look at the pods found: what is newly finished and what runs.
#[derive(Debug, Default)]
struct Census {
    new_succeeded: Vec<Arc<Pod>>,
    new_failed: Vec<Arc<Pod>>,
    /// Indexes (of `Indexed` Jobs) that newly succeeded.
    new_indexes: BTreeSet<i32>,
    active: Vec<Arc<Pod>>,
    terminating: usize,
}

/// Sorts the Job's pods (`mine`). A pod is newly finished when it still
/// has the finalizer, is not already uncounted and not already being
/// untracked; a pod deleted before it finished counts as failed, and so
/// does every unfinished pod of a failing Job.
fn census(
    job: &Job,
    mine: &[Arc<Pod>],
    failing: bool,
    untracking: impl Fn(&Pod) -> bool,
) -> Census {
    let spec = job.spec.as_ref().expect("checked by sync");
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    let counted: BTreeSet<&String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions.unwrap_or(1);
    let done_indexes = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut c = Census::default();
    for p in mine {
        let terminating = p.metadata.deletion_timestamp.is_some() && !pods::is_terminal(p);
        if pods::is_active(p) {
            c.active.push(p.clone());
        } else if terminating {
            c.terminating += 1;
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if !has_finalizer(p) || counted.contains(&uid) || untracking(p) {
            continue;
        }
        // A pod of an Indexed Job without a valid index counts for nothing.
        let index = index_of(p).filter(|i| *i < completions);
        if indexed && index.is_none() {
            continue;
        }
        match pods::phase(p) {
            "Succeeded" => {
                if let Some(i) = index.filter(|i| indexed && !done_indexes.contains(i)) {
                    c.new_indexes.insert(i);
                }
                c.new_succeeded.push(p.clone());
            }
            "Failed" => c.new_failed.push(p.clone()),
            _ if terminating || (failing && !pods::is_active(p)) => c.new_failed.push(p.clone()),
            _ => {}
        }
    }
    c
}

/// One sync of one Job, keeping `job` current with every write.
struct Tracker<'a> {
    ctx: &'a Ctx,
    job: Job,
    exp_key: String,
    now: Timestamp,
}

impl Tracker<'_> {
    fn spec(&self) -> &k8s_openapi::api::batch::v1::JobSpec {
        self.job.spec.as_ref().expect("checked by sync")
    }

    fn indexed(&self) -> bool {
        self.spec().completion_mode.as_deref() == Some("Indexed")
    }

    fn suspended(&self) -> bool {
        self.spec().suspend.unwrap_or(false)
    }

    async fn write_status(&mut self, mut status: JobStatus) -> Result<()> {
        // Empty lists are left out, as Kubernetes' `omitempty` does.
        if status.conditions.as_ref().is_some_and(Vec::is_empty) {
            status.conditions = None;
        }
        if let Some(u) = status.uncounted_terminated_pods.as_mut() {
            u.succeeded = u.succeeded.take().filter(|v| !v.is_empty());
            u.failed = u.failed.take().filter(|v| !v.is_empty());
        }
        if self.job.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = self.job.clone();
        next.status = Some(status);
        let ns = self.job.metadata.namespace.clone().unwrap_or_default();
        self.job = Api::<Job>::namespaced(&self.ctx.client, &ns)
            .replace_status(&next)
            .await?;
        Ok(())
    }

    /// The finish already decided (an interim condition), or one due now.
    fn finish(
        &self,
        status: &JobStatus,
        succeeded: i32,
        failed: i32,
        completed: usize,
        active: usize,
    ) -> Option<Finish> {
        if let Some(c) = condition_true(status, "FailureTarget") {
            return Some(Finish {
                kind: "Failed",
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            });
        }
        if let Some(c) = condition_true(status, "SuccessCriteriaMet") {
            return Some(Finish {
                kind: "Complete",
                reason: c.reason.unwrap_or_default(),
                message: c.message.unwrap_or_default(),
            });
        }
        let spec = self.spec();
        if failed > spec.backoff_limit.unwrap_or(6) {
            return Some(Finish {
                kind: "Failed",
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            });
        }
        if self.past_deadline(status) {
            return Some(Finish {
                kind: "Failed",
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            });
        }
        let complete = if self.indexed() {
            completed as i32 >= spec.completions.unwrap_or(1)
        } else {
            match spec.completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active == 0,
            }
        };
        complete.then(|| Finish {
            kind: "Complete",
            reason: "CompletionsReached".into(),
            message: "Reached expected number of succeeded pods".into(),
        })
    }

    fn deadline_left(&self, status: &JobStatus) -> Option<i64> {
        let ads = self.spec().active_deadline_seconds?;
        let start = status.start_time.as_ref()?.0;
        Some(start.as_millisecond() + ads * 1000 - self.now.as_millisecond())
    }

    fn past_deadline(&self, status: &JobStatus) -> bool {
        !self.suspended() && self.deadline_left(status).is_some_and(|l| l <= 0)
    }

    async fn sync(&mut self, mine: &[Arc<Pod>], needs_sync: bool) -> Result<Requeue> {
        let now = self.now;
        let uid = self.job.metadata.uid.clone().unwrap_or_default();
        let me = reference(&self.job);
        let rec = self.ctx.recorder(Kind::Job).clone();
        let mut status = self.job.status.clone().unwrap_or_default();
        let failing_before = condition_true(&status, "FailureTarget").is_some();
        let exp_key = self.exp_key.clone();
        let untracking = |p: &Pod| {
            self.ctx
                .expectations
                .untracking(&exp_key, p.metadata.name.as_deref().unwrap_or(""))
        };
        let mut c = census(&self.job, mine, failing_before, untracking);

        // Step 1: newly finished pods become uncounted (indexes completed).
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        let uids = |ps: &[Arc<Pod>]| {
            ps.iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect::<Vec<_>>()
        };
        if self.indexed() {
            completed.extend(c.new_indexes.iter().copied());
        } else {
            uncounted
                .succeeded
                .get_or_insert_with(Vec::new)
                .extend(uids(&c.new_succeeded));
        }
        uncounted
            .failed
            .get_or_insert_with(Vec::new)
            .extend(uids(&c.new_failed));
        let n = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len) as i32;
        let succeeded = if self.indexed() {
            completed.len() as i32
        } else {
            status.succeeded.unwrap_or(0) + n(&uncounted.succeeded)
        };
        let failed = status.failed.unwrap_or(0) + n(&uncounted.failed);
        if !c.new_failed.is_empty() || !c.new_succeeded.is_empty() {
            let mut b = self.ctx.job_backoff.lock();
            let rec = b.entry(uid.clone()).or_insert((0, now));
            if !c.new_succeeded.is_empty() {
                rec.0 = 0;
            }
            if !c.new_failed.is_empty() {
                rec.0 += c.new_failed.len() as u32;
                rec.1 = now;
            }
        }

        // Decide: finish, suspend, or run pods.
        if status.start_time.is_none() && !self.suspended() {
            status.start_time = Some(Time(now));
        }
        let finish = self.finish(&status, succeeded, failed, completed.len(), c.active.len());
        let mut requeue = None;
        let mut manage_err = None;
        if let Some(f) = &finish {
            if ensure_condition(&mut status, f.interim(), "True", &f.reason, &f.message, now) {
                tracing::info!(job = %me.name.as_deref().unwrap_or(""), reason = %f.reason, "job finishing");
            }
            if !c.active.is_empty() {
                if let Err(e) = delete_all(self.ctx, &rec, &me, &self.exp_key, &c.active).await {
                    manage_err = Some(e);
                }
                c.terminating += c.active.len();
                if f.kind == "Failed" {
                    // Every unfinished pod of a failing Job is a failure.
                    uncounted
                        .failed
                        .get_or_insert_with(Vec::new)
                        .extend(uids(&c.active));
                    c.new_failed.append(&mut c.active);
                } else {
                    c.active.clear();
                }
            }
        } else if self.suspended() {
            if ensure_condition(
                &mut status,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            ) {
                rec.normal(me.clone(), "Suspended", "Job suspended").await;
            }
            if !c.active.is_empty() && needs_sync {
                if let Err(e) = delete_all(self.ctx, &rec, &me, &self.exp_key, &c.active).await {
                    manage_err = Some(e);
                }
                c.terminating += c.active.len();
                c.active.clear();
            }
        } else {
            if ensure_condition(
                &mut status,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                // The deadline starts anew when a suspended Job resumes.
                status.start_time = Some(Time(now));
                rec.normal(me.clone(), "Resumed", "Job resumed").await;
            }
            if needs_sync {
                match self.manage(mine, &c, succeeded, &completed, failed).await {
                    Ok((created, deleted, wait)) => {
                        requeue = wait;
                        c.active.retain(|p| {
                            !deleted.contains(&p.metadata.name.clone().unwrap_or_default())
                        });
                        c.active.extend(created.into_iter().map(Arc::new));
                    }
                    Err(e) => manage_err = Some(e),
                }
            }
            if let Some(left) = self.deadline_left(&status).filter(|l| *l > 0) {
                let at = Duration::from_millis(left as u64 + 1);
                requeue = Some(requeue.map_or(at, |r: Duration| r.min(at)));
            }
        }

        status.active = Some(c.active.len() as i32);
        status.ready = Some(c.active.iter().filter(|p| pods::is_ready(p)).count() as i32);
        status.terminating = Some(c.terminating as i32);
        if self.indexed() {
            status.completed_indexes = Some(format_indexes(&completed));
            status.succeeded = Some(succeeded);
        }
        status.uncounted_terminated_pods = Some(uncounted.clone());
        status.failed = Some(status.failed.unwrap_or(0));
        status.succeeded = Some(status.succeeded.unwrap_or(0));
        self.write_status(status).await?;

        // Step 2: let the counted pods go. An Indexed Job's finished pods
        // are counted by their index (or not at all, without a valid one).
        let indexed = self.indexed();
        let to_untrack: Vec<Arc<Pod>> = mine
            .iter()
            .filter(|p| has_finalizer(p))
            .filter(|p| {
                !self
                    .ctx
                    .expectations
                    .untracking(&self.exp_key, p.metadata.name.as_deref().unwrap_or(""))
            })
            .filter(|p| {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                (indexed && (pods::is_terminal(p) || p.metadata.deletion_timestamp.is_some()))
                    || uncounted.succeeded.iter().flatten().any(|u| *u == uid)
                    || uncounted.failed.iter().flatten().any(|u| *u == uid)
            })
            .cloned()
            .collect();
        let released = untrack(self.ctx, &self.exp_key, &to_untrack).await?;

        // Step 3: count what is let go, and finish when nothing is left.
        let gone = |u: &String| {
            released.contains(u)
                || !mine
                    .iter()
                    .any(|p| p.metadata.uid.as_ref() == Some(u) && has_finalizer(p))
        };
        let mut status = self.job.status.clone().unwrap_or_default();
        let mut left = UncountedTerminatedPods::default();
        let (mut s, mut f) = (status.succeeded.unwrap_or(0), status.failed.unwrap_or(0));
        for u in uncounted.succeeded.iter().flatten() {
            if gone(u) {
                s += 1;
            } else {
                left.succeeded.get_or_insert_with(Vec::new).push(u.clone());
            }
        }
        for u in uncounted.failed.iter().flatten() {
            if gone(u) {
                f += 1;
            } else {
                left.failed.get_or_insert_with(Vec::new).push(u.clone());
            }
        }
        if !self.indexed() {
            status.succeeded = Some(s);
        }
        status.failed = Some(f);
        let nothing_left = left.succeeded.is_none() && left.failed.is_none();
        status.uncounted_terminated_pods = Some(left);
        let mut finished_now = None;
        if let Some(fin) = &finish
            && nothing_left
            && c.terminating == 0
            && ensure_condition(
                &mut status,
                fin.kind,
                "True",
                &fin.reason,
                &fin.message,
                now,
            )
        {
            if fin.kind == "Complete" {
                status.completion_time = Some(Time(now));
            }
            finished_now = Some(fin.clone());
        }
        self.write_status(status).await?;
        if let Some(fin) = finished_now {
            self.ctx.job_backoff.lock().remove(&uid);
            if fin.kind == "Complete" {
                rec.normal(me, "Completed", "Job completed").await;
            } else {
                rec.warning(me, &fin.reason, fin.message.clone()).await;
            }
            return expire(self.ctx, &self.job, now, now).await;
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        Ok(requeue)
    }

    /// Creates and deletes pods toward the parallelism still wanted.
    /// Returns the pods created, the names deleted, and when to look again
    /// if a back-off holds creations back.
    async fn manage(
        &self,
        mine: &[Arc<Pod>],
        c: &Census,
        succeeded: i32,
        completed: &BTreeSet<i32>,
        failed: i32,
    ) -> Result<(Vec<k8s_openapi::api::core::v1::Pod>, Vec<String>, Requeue)> {
        let spec = self.spec();
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let active = c.active.len() as i32;
        let rec = self.ctx.recorder(Kind::Job);
        let me = reference(&self.job);
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut wanted_indexes: Vec<Option<i32>> = Vec::new();
        if self.indexed() {
            let completions = spec.completions.unwrap_or(1);
            let mut seen: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
            for p in &c.active {
                match index_of(p).filter(|i| *i < completions && !completed.contains(i)) {
                    Some(i) if !seen.contains_key(&i) => {
                        seen.insert(i, p.clone());
                    }
                    _ => delete.push(p.clone()),
                }
            }
            let want = parallelism.min(completions - completed.len() as i32).max(0) as usize;
            if seen.len() > want {
                let excess: Vec<i32> = seen.keys().rev().take(seen.len() - want).copied().collect();
                for i in excess {
                    delete.extend(seen.remove(&i));
                }
            }
            let missing =
                (0..completions).filter(|i| !completed.contains(i) && !seen.contains_key(i));
            wanted_indexes = missing.take(want - seen.len()).map(Some).collect();
        } else {
            let want = match spec.completions {
                None if succeeded > 0 => active,
                None => parallelism,
                Some(n) => (n - succeeded).clamp(0, parallelism),
            };
            if active > want {
                let mut victims = c.active.clone();
                sort_for_deletion(&mut victims, mine);
                victims.truncate((active - want) as usize);
                delete = victims;
            } else {
                wanted_indexes = vec![None; (want - active) as usize];
            }
        }
        let deleted: Vec<String> = delete
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        if !delete.is_empty() {
            delete_all(self.ctx, rec, &me, &self.exp_key, &delete).await?;
        }
        wanted_indexes.truncate(BURST);
        if wanted_indexes.is_empty() {
            return Ok((Vec::new(), deleted, None));
        }
        // Failures since the last success hold replacements back.
        if failed > 0
            && let Some(wait) = self.backoff_left()
        {
            return Ok((Vec::new(), deleted, Some(wait)));
        }
        let new: Vec<Pod> = wanted_indexes.iter().map(|i| self.new_pod(*i)).collect();
        let (ok, err) = create_all(self.ctx, rec, &me, &self.exp_key, new.clone()).await;
        if let Some(e) = err {
            return Err(e);
        }
        Ok((new.into_iter().take(ok).collect(), deleted, None))
    }

    fn backoff_left(&self) -> Option<Duration> {
        let uid = self.job.metadata.uid.clone().unwrap_or_default();
        let (failures, last) = *self.ctx.job_backoff.lock().get(&uid)?;
        if failures == 0 {
            return None;
        }
        let delay = BACKOFF_BASE
            .saturating_mul(1 << (failures - 1).min(16))
            .min(BACKOFF_MAX);
        let left = last.as_millisecond() + delay.as_millis() as i64 - self.now.as_millisecond();
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    /// A pod of the Job (of `index`, for `Indexed`): the template, the Job
    /// labels, the tracking finalizer.
    fn new_pod(&self, index: Option<i32>) -> Pod {
        let ns = self.job.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.job.metadata.name.as_deref().unwrap_or("");
        let uid = self.job.metadata.uid.as_deref().unwrap_or("");
        let prefix = match index {
            Some(i) => format!("{name}-{i}-"),
            None => format!("{name}-"),
        };
        let mut pod = pods::from_template(
            &self.spec().template,
            ns,
            &generate_name(&prefix),
            controller_ref(&self.job),
        );
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in [
            (CONTROLLER_UID, uid),
            (LEGACY_CONTROLLER_UID, uid),
            (JOB_NAME, name),
            (LEGACY_JOB_NAME, name),
        ] {
            labels.insert(k.into(), v.into());
        }
        pod.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(TRACKING_FINALIZER.into());
        if let Some(i) = index {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(spec) = pod.spec.as_mut() {
                spec.hostname = Some(format!("{name}-{i}"));
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                        ..Default::default()
                    }),
                };
                for c in spec
                    .containers
                    .iter_mut()
                    .chain(spec.init_containers.iter_mut().flatten())
                {
                    let list = c.env.get_or_insert_with(Vec::new);
                    if !list.iter().any(|e| e.name == "JOB_COMPLETION_INDEX") {
                        list.push(env.clone());
                    }
                }
            }
        }
        pod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn completed_indexes_round_trip() {
        let s = parse_indexes("1,3-5,7");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5, 7]);
        assert_eq!(format_indexes(&s), "1,3-5,7");
        assert_eq!(format_indexes(&BTreeSet::from([0, 1, 2])), "0-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("").is_empty());
    }

    fn job(mode: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("j1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions: Some(3),
                parallelism: Some(2),
                completion_mode: Some(mode.into()),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(uid: &str, phase: &str, tracked: bool, deleting: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("pi-{uid}")),
                uid: Some(uid.into()),
                finalizers: tracked.then(|| vec![TRACKING_FINALIZER.to_string()]),
                deletion_timestamp: deleting.then(|| Time(Timestamp::from_second(1).unwrap())),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn census_counts_each_finished_pod_once() {
        let mut j = job("NonIndexed");
        j.status = Some(JobStatus {
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into()]),
                failed: None,
            }),
            ..Default::default()
        });
        let mine = [
            pod("a", "Succeeded", true, false),  // already uncounted
            pod("b", "Succeeded", true, false),  // new
            pod("c", "Succeeded", false, false), // counted and released
            pod("d", "Failed", true, false),     // new failure
            pod("e", "Running", true, true),     // deleted while running: failure
            pod("f", "Running", true, false),    // active
            pod("g", "Succeeded", true, false),  // being untracked
        ];
        let c = census(&j, &mine, false, |p| p.metadata.uid.as_deref() == Some("g"));
        let uids = |v: &[Arc<Pod>]| {
            v.iter()
                .map(|p| p.metadata.uid.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(uids(&c.new_succeeded), ["b"]);
        assert_eq!(uids(&c.new_failed), ["d", "e"]);
        assert_eq!(uids(&c.active), ["f"]);
        assert_eq!(c.terminating, 1);
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let j = job("Indexed");
        let c = Ctx::for_tests();
        let t = Tracker {
            ctx: &c,
            job: j,
            exp_key: "Job/default/pi".into(),
            now: Timestamp::from_second(1).unwrap(),
        };
        let p = t.new_pod(Some(2));
        assert!(p.metadata.name.as_ref().unwrap().starts_with("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "2"
        );
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[CONTROLLER_UID], "j1");
        assert_eq!(labels[LEGACY_JOB_NAME], "pi");
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&[TRACKING_FINALIZER.to_string()][..])
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        // Three failures back off 40 s.
        c.job_backoff
            .lock()
            .insert("j1".into(), (3, Timestamp::from_second(0).unwrap()));
        assert_eq!(t.backoff_left(), Some(Duration::from_secs(39)));
    }

    #[test]
    fn finishing_conditions() {
        let c = Ctx::for_tests();
        let mut j = job("NonIndexed");
        j.spec.as_mut().unwrap().backoff_limit = Some(1);
        let t = Tracker {
            ctx: &c,
            job: j,
            exp_key: "Job/default/pi".into(),
            now: Timestamp::from_second(100).unwrap(),
        };
        let s = JobStatus::default();
        assert_eq!(t.finish(&s, 2, 1, 0, 1), None);
        assert_eq!(
            t.finish(&s, 3, 0, 0, 0).unwrap().reason,
            "CompletionsReached"
        );
        assert_eq!(
            t.finish(&s, 0, 2, 0, 0).unwrap().reason,
            "BackoffLimitExceeded"
        );
        let mut s2 = s.clone();
        assert!(ensure_condition(
            &mut s2,
            "FailureTarget",
            "True",
            "DeadlineExceeded",
            "late",
            t.now
        ));
        assert!(!ensure_condition(
            &mut s2,
            "FailureTarget",
            "True",
            "DeadlineExceeded",
            "late",
            t.now
        ));
        let f = t.finish(&s2, 3, 0, 0, 0).unwrap();
        assert_eq!((f.kind, f.reason.as_str()), ("Failed", "DeadlineExceeded"));
        // Absent False conditions are not added.
        assert!(!ensure_condition(
            &mut s2,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            t.now
        ));
    }
}
