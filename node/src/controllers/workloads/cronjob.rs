//! The CronJob controller: at each time of its schedule (in its time
//! zone) it creates the Job `<cronjob>-<scheduled minutes since epoch>`
//! from the template — unless suspended, past `startingDeadlineSeconds`,
//! or `Forbid`den by a running one (`Replace` deletes the running ones
//! first) — and keeps `successfulJobsHistoryLimit` /
//! `failedJobsHistoryLimit` finished Jobs. It sleeps until the next time.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use skiff_sdk::client::{Api, DeleteParams};

use super::cron::{self, Schedule};
use super::owners::{controlled_by, controller_ref};
use super::{Ctx, Kind, Requeue, Result};
use crate::controllers::events::{self, reference};

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Beyond this many missed times a warning says so (and the last is run).
const TOO_MANY_MISSED: usize = 100;

pub async fn sync(ctx: &Ctx, key: &str) -> Result<Requeue> {
    let Some(cj) = ctx.cron_jobs.get(key) else {
        return Ok(None);
    };
    let Some(spec) = cj.spec.clone() else {
        return Ok(None);
    };
    let ns = cj.metadata.namespace.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let rec = ctx.recorder(Kind::CronJob);
    let me = reference(&*cj);
    let api: Api<CronJob> = Api::namespaced(&ctx.client, &ns);
    let jobs_api: Api<Job> = Api::namespaced(&ctx.client, &ns);
    let now = events::now();
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .list_in(&ns)
        .into_iter()
        .filter(|j| controlled_by(&j.metadata, &uid))
        .collect();

    // What is running, what finished.
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active = status.active.clone().unwrap_or_default();
    for j in &jobs {
        let juid = j.metadata.uid.as_deref();
        let listed = active.iter().any(|r| r.uid.as_deref() == juid);
        match (listed, finished(j)) {
            // Created by a sync whose status write was lost, or by hand.
            (false, None) => active.push(reference(&**j)),
            (true, Some(how)) => {
                active.retain(|r| r.uid.as_deref() != juid);
                let name = j.metadata.name.as_deref().unwrap_or("");
                rec.normal(
                    me.clone(),
                    "SawCompletedJob",
                    format!("Saw completed job: {name}, status: {how}"),
                )
                .await;
            }
            _ => {}
        }
        if finished(j) == Some("Complete")
            && let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status
                .last_successful_time
                .as_ref()
                .is_none_or(|l| l.0 < t.0)
        {
            status.last_successful_time = Some(t);
        }
    }
    let mut kept = Vec::new();
    for r in active {
        let in_cache = jobs.iter().any(|j| j.metadata.uid == r.uid);
        // The cache may not have a Job created a moment ago: ask.
        let exists = in_cache
            || match jobs_api.get_opt(r.name.as_deref().unwrap_or("")).await? {
                Some(j) => j.metadata.uid == r.uid,
                None => false,
            };
        if exists {
            kept.push(r);
        } else {
            rec.normal(
                me.clone(),
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    r.name.as_deref().unwrap_or("")
                ),
            )
            .await;
        }
    }
    status.active = (!kept.is_empty()).then_some(kept);
    let mut cj = (*cj).clone();
    write_status(&api, &mut cj, &status).await?;
    cleanup(ctx, &cj, &jobs).await?;

    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return Ok(None);
    }
    let tz = match cron::time_zone(spec.time_zone.as_deref()) {
        Ok(tz) => tz,
        Err(e) => {
            rec.warning(
                me,
                "UnknownTimeZone",
                format!(
                    "invalid timeZone: {:?}: {e}",
                    spec.time_zone.as_deref().unwrap_or("")
                ),
            )
            .await;
            return Ok(None);
        }
    };
    let schedule = match cron::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            rec.warning(
                me,
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            )
            .await;
            return Ok(None);
        }
    };
    let (scheduled, missed) = most_recent_unmet(&cj, &schedule, &tz, now);
    if missed > TOO_MANY_MISSED {
        rec.warning(
            me.clone(),
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        )
        .await;
    }
    let requeue = schedule.next(now, &tz).map(|t| {
        Duration::from_millis((t.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100)
    });
    let Some(scheduled) = scheduled else {
        return Ok(requeue);
    };
    if spec
        .starting_deadline_seconds
        .is_some_and(|d| scheduled.as_second() + d < now.as_second())
    {
        rec.warning(
            me,
            "MissSchedule",
            format!("Missed scheduled time to start a job: {scheduled}"),
        )
        .await;
        return Ok(requeue);
    }
    let job_name = job_name(&cj, scheduled);
    let mut active = status.active.clone().unwrap_or_default();
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(job_name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled)
    {
        return Ok(requeue);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            rec.normal(me, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
                .await;
            return Ok(requeue);
        }
        Some("Replace") => {
            for r in std::mem::take(&mut active) {
                let name = r.name.clone().unwrap_or_default();
                let params = DeleteParams::background().with_uid(r.uid.clone().unwrap_or_default());
                match jobs_api.delete(&name, &params).await {
                    Ok(_) => {
                        rec.normal(
                            me.clone(),
                            "SuccessfulDelete",
                            format!("Deleted job {name}"),
                        )
                        .await
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => {
                        rec.warning(me.clone(), "FailedDelete", format!("Deleted job: {e}"))
                            .await;
                        return Err(e.into());
                    }
                }
            }
        }
        _ => {}
    }
    let job = job_from_template(&cj, &job_name, scheduled, &tz);
    let created = match jobs_api.create(&job).await {
        Ok(j) => {
            rec.normal(
                me.clone(),
                "SuccessfulCreate",
                format!("Created job {job_name}"),
            )
            .await;
            j
        }
        Err(e) if e.is_already_exists() => {
            let existing = jobs_api.get(&job_name).await?;
            if !controlled_by(&existing.metadata, &uid) {
                rec.warning(me, "FailedCreate", format!("Error creating job: {e}"))
                    .await;
                return Ok(requeue);
            }
            existing
        }
        Err(e) => {
            rec.warning(me, "FailedCreate", format!("Error creating job: {e}"))
                .await;
            return Err(e.into());
        }
    };
    if !active.iter().any(|r| r.uid == created.metadata.uid) {
        active.push(reference(&created));
    }
    status.active = Some(active);
    status.last_schedule_time = Some(Time(scheduled));
    write_status(&api, &mut cj, &status).await?;
    Ok(requeue)
}

async fn write_status(api: &Api<CronJob>, cj: &mut CronJob, status: &CronJobStatus) -> Result<()> {
    if cj.status.as_ref() == Some(status) {
        return Ok(());
    }
    let mut next = cj.clone();
    next.status = Some(status.clone());
    *cj = api.replace_status(&next).await?;
    Ok(())
}

/// `Complete` or `Failed` once the Job has finished.
fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"]
        .into_iter()
        .find(|k| conds.iter().any(|c| c.type_ == *k && c.status == "True"))
}

/// The Job name for one scheduled time: stable, so a second attempt at the
/// same time is `AlreadyExists`.
pub fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or(""),
        scheduled.as_second().div_euclid(60)
    )
}

/// The latest schedule time not yet run, after the last one run (or the
/// creation) and within `startingDeadlineSeconds`, and how many were
/// missed.
fn most_recent_unmet(
    cj: &CronJob,
    schedule: &Schedule,
    tz: &TimeZone,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let spec = cj.spec.as_ref().expect("checked by sync");
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if let Some(d) = spec.starting_deadline_seconds
        && let Ok(start) = Timestamp::from_second(now.as_second() - d)
        && start > earliest
    {
        earliest = start;
    }
    let mut latest = None;
    let mut missed = 0;
    let mut t = earliest;
    // Bounded, for a schedule of every second missed for years.
    while missed < 1_000_000 {
        match schedule.next(t, tz) {
            Some(n) if n <= now => {
                latest = Some(n);
                missed += 1;
                t = n;
            }
            _ => break,
        }
    }
    (latest, missed)
}

fn job_from_template(cj: &CronJob, name: &str, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.as_ref().expect("checked by sync");
    let template = &spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let zoned = scheduled.to_zoned(tz.clone());
    let stamp = if zoned.offset().is_zero() {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    };
    annotations.insert(SCHEDULED_TIMESTAMP.into(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn cleanup(ctx: &Ctx, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<()> {
    let spec = cj.spec.as_ref().expect("checked by sync");
    let ns = cj.metadata.namespace.as_deref().unwrap_or("default");
    let rec = ctx.recorder(Kind::CronJob);
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            continue;
        }
        // Oldest start first; never-started last.
        done.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_none(), start, j.metadata.name.clone())
        });
        for j in done.into_iter().take(excess) {
            let name = j.metadata.name.clone().unwrap_or_default();
            let params =
                DeleteParams::background().with_uid(j.metadata.uid.clone().unwrap_or_default());
            match Api::<Job>::namespaced(&ctx.client, ns)
                .delete(&name, &params)
                .await
            {
                Ok(_) => {
                    let me: ObjectReference = reference(cj);
                    rec.normal(me, "SuccessfulDelete", format!("Deleted job {name}"))
                        .await;
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::CronJobSpec;

    fn cj(schedule: &str, created: &str, last: Option<&str>, deadline: Option<i64>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                creation_timestamp: Some(Time(created.parse().unwrap())),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                starting_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(l.parse().unwrap())),
                ..Default::default()
            }),
        }
    }

    fn unmet(c: &CronJob, now: &str) -> (Option<String>, usize) {
        let s = cron::parse(&c.spec.as_ref().unwrap().schedule).unwrap();
        let (t, n) = most_recent_unmet(c, &s, &TimeZone::UTC, now.parse().unwrap());
        (t.map(|t| t.to_string()), n)
    }

    #[test]
    fn unmet_times_start_after_the_last_run() {
        let c = cj("*/5 * * * *", "2025-03-10T10:01:00Z", None, None);
        assert_eq!(unmet(&c, "2025-03-10T10:04:00Z"), (None, 0));
        assert_eq!(
            unmet(&c, "2025-03-10T10:05:00Z"),
            (Some("2025-03-10T10:05:00Z".into()), 1)
        );
        assert_eq!(
            unmet(&c, "2025-03-10T10:17:00Z"),
            (Some("2025-03-10T10:15:00Z".into()), 3)
        );
        let c = cj(
            "*/5 * * * *",
            "2025-03-10T10:01:00Z",
            Some("2025-03-10T10:15:00Z"),
            None,
        );
        assert_eq!(unmet(&c, "2025-03-10T10:17:00Z"), (None, 0));
        // A deadline looks back no further than itself.
        let c = cj("*/5 * * * *", "2025-03-01T00:00:00Z", None, Some(200));
        assert_eq!(
            unmet(&c, "2025-03-10T10:17:00Z"),
            (Some("2025-03-10T10:15:00Z".into()), 1)
        );
    }

    #[test]
    fn jobs_are_named_by_the_scheduled_minute() {
        let c = cj("* * * * *", "2025-03-10T10:01:00Z", None, None);
        let t: Timestamp = "2025-03-10T10:05:00Z".parse().unwrap();
        assert_eq!(job_name(&c, t), format!("hello-{}", t.as_second() / 60));
        let j = job_from_template(&c, "hello-1", t, &TimeZone::UTC);
        assert_eq!(
            j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2025-03-10T10:05:00Z"
        );
    }
}
