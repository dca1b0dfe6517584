//! What the agent knows about a pod's containers, and what to do next: the
//! pure core of the pod worker. Which container to start (init containers
//! one at a time, in order, then the others), which must wait out their
//! back-off, and the pod's phase — the kubelet's `computePodActions` and
//! `getPhase`, as functions of data.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod};

use super::backoff::{self, Backoff};

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> RestartPolicy {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }
}

/// `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// How a run of a container ended, as `state.terminated` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub started_at: Option<SystemTime>,
    pub finished_at: SystemTime,
    /// The runtime's id of the run (`containerID` without the scheme).
    pub id: Option<String>,
}

/// One run of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The runtime's container id.
    pub id: String,
    pub started_at: Option<SystemTime>,
    /// `None` while it runs.
    pub ended: Option<Ended>,
}

impl Run {
    pub fn is_running(&self) -> bool {
        self.ended.is_none()
    }
}

/// Why a container is not running when the pod wants it to: the waiting
/// state's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// Everything the agent tracks about one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub image: String,
    pub init: bool,
    /// An ephemeral container (`kubectl debug`): it runs once, whatever the
    /// restart policy, and counts for neither the phase nor readiness.
    pub ephemeral: bool,
    pub restart_count: i32,
    /// The current run: running, or ended and not replaced yet.
    pub run: Option<Run>,
    /// The run before the current one (`lastState`).
    pub last: Option<Ended>,
    /// Set while a start is held back (back-off, image or config errors).
    pub waiting: Option<Waiting>,
    /// The digest of what runs (`imageID`).
    pub image_id: String,
    /// The startup probe passed (or there is none) in the current run.
    pub started: bool,
    /// The readiness probe passed (or there is none) in the current run.
    pub ready: bool,
    /// Restarts after the container ended.
    pub backoff: Backoff,
    /// Retries of a start that failed before the container existed (image
    /// pull, configuration): not before this time.
    pub setup_retry: Option<SystemTime>,
    pub setup_backoff: Backoff,
}

impl Record {
    pub fn new(name: &str, image: &str, init: bool) -> Record {
        Record {
            name: name.to_string(),
            image: image.to_string(),
            init,
            ephemeral: false,
            restart_count: 0,
            run: None,
            last: None,
            waiting: None,
            image_id: String::new(),
            started: false,
            ready: false,
            backoff: Backoff::default(),
            setup_retry: None,
            setup_backoff: Backoff::default(),
        }
    }

    /// A record for a container that the API says ran before this agent
    /// (re)started: a run it says is running did not survive the agent
    /// (wasm instances live in its process), so it ended at `now` with the
    /// code and reason Kubernetes shows for containers lost with their
    /// node: 255, `Unknown`.
    pub fn seeded(
        name: &str,
        image: &str,
        init: bool,
        s: &ContainerStatus,
        now: SystemTime,
    ) -> Record {
        let mut r = Record::new(name, image, init);
        r.restart_count = s.restart_count;
        r.image_id = s.image_id.clone();
        let id = s
            .container_id
            .as_deref()
            .map(|c| c.split_once("://").map_or(c, |(_, id)| id).to_string());
        let last_terminated = s.last_state.as_ref().and_then(ended_of);
        match s.state.as_ref() {
            Some(ContainerState {
                running: Some(running),
                ..
            }) => {
                r.run = Some(Run {
                    id: id.clone().unwrap_or_default(),
                    started_at: running.started_at.as_ref().map(|t| system_time(&t.0)),
                    ended: Some(Ended {
                        exit_code: 255,
                        reason: "Unknown".into(),
                        message: "the agent restarted: wasm instances do not outlive it".into(),
                        started_at: running.started_at.as_ref().map(|t| system_time(&t.0)),
                        finished_at: now,
                        id,
                    }),
                });
                r.last = last_terminated;
            }
            Some(
                st @ ContainerState {
                    terminated: Some(_),
                    ..
                },
            ) => {
                let e = ended_of(st);
                r.run = e.clone().map(|e| Run {
                    id: e.id.clone().unwrap_or_default(),
                    started_at: e.started_at,
                    ended: Some(e),
                });
                r.last = last_terminated;
            }
            // Waiting: after a run (back-off), the last run is the current
            // one; before any, there is nothing to carry over.
            _ => {
                r.run = last_terminated.map(|e| Run {
                    id: e.id.clone().unwrap_or_default(),
                    started_at: e.started_at,
                    ended: Some(e),
                });
            }
        }
        r
    }

    pub fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(Run::is_running)
    }

    pub fn ended(&self) -> Option<&Ended> {
        self.run.as_ref().and_then(|r| r.ended.as_ref())
    }

    /// Whether an init container has completed.
    pub fn succeeded(&self) -> bool {
        self.ended().is_some_and(|e| e.exit_code == 0)
    }

    /// One of the pod's `containers`: neither init nor ephemeral.
    pub fn is_main(&self) -> bool {
        !self.init && !self.ephemeral
    }

    /// Whether the ended current run is to be followed by another.
    pub fn restarts(&self, policy: RestartPolicy) -> bool {
        let Some(e) = self.ended() else { return false };
        if self.ephemeral {
            return false;
        }
        match (self.init, policy) {
            // Init containers are re-run until they succeed, unless Never.
            (true, RestartPolicy::Never) => false,
            (true, _) => e.exit_code != 0,
            (false, RestartPolicy::Always) => true,
            (false, RestartPolicy::OnFailure) => e.exit_code != 0,
            (false, RestartPolicy::Never) => false,
        }
    }

    /// What `state` and `lastState` show. `restarts_allowed` is false once
    /// the pod is finished or being deleted: nothing will run again.
    pub fn shown(&self, policy: RestartPolicy, restarts_allowed: bool) -> Shown<'_> {
        let waiting = self.waiting.as_ref();
        let reason = waiting.map(|w| w.reason.as_str());
        let message = waiting.map(|w| w.message.as_str());
        match &self.run {
            Some(Run {
                ended: None,
                started_at,
                ..
            }) => Shown::Running {
                started_at: *started_at,
                last: self.last.as_ref(),
            },
            Some(Run { ended: Some(e), .. }) => {
                if restarts_allowed && self.restarts(policy) && waiting.is_some() {
                    Shown::Waiting {
                        reason,
                        message,
                        last: Some(e),
                    }
                } else {
                    Shown::Terminated {
                        ended: e,
                        last: self.last.as_ref(),
                    }
                }
            }
            None => Shown::Waiting {
                reason,
                message,
                last: self.last.as_ref(),
            },
        }
    }
}

/// A container's state as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown<'a> {
    Running {
        started_at: Option<SystemTime>,
        last: Option<&'a Ended>,
    },
    Terminated {
        ended: &'a Ended,
        last: Option<&'a Ended>,
    },
    /// `reason` `None` means the default (`ContainerCreating` or
    /// `PodInitializing`).
    Waiting {
        reason: Option<&'a str>,
        message: Option<&'a str>,
        last: Option<&'a Ended>,
    },
}

fn ended_of(s: &ContainerState) -> Option<Ended> {
    let t = s.terminated.as_ref()?;
    Some(Ended {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone().unwrap_or_default(),
        started_at: t.started_at.as_ref().map(|t| system_time(&t.0)),
        finished_at: t
            .finished_at
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |t| system_time(&t.0)),
        id: t
            .container_id
            .as_deref()
            .map(|c| c.split_once("://").map_or(c, |(_, id)| id).to_string()),
    })
}

pub fn system_time(t: &k8s_openapi::jiff::Timestamp) -> SystemTime {
    let nanos = t.as_nanosecond();
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// What to do now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Containers (indexes into the records) to start now.
    pub start: Vec<usize>,
    /// Containers held back by their crash back-off, with the delay they
    /// wait (for the message) and how long is left.
    pub back_off: Vec<(usize, Duration, Duration)>,
    /// When to look again even if nothing happens.
    pub wake: Option<Duration>,
}

/// Decides which containers start. Init containers run one at a time, in
/// order, each to success before the next; the others start together once
/// all init containers succeeded. `records` are init containers first, in
/// spec order, then the others, then the ephemeral ones, which start as
/// they are added, as the kubelet starts them, init containers or not.
pub fn decide(policy: RestartPolicy, records: &[Record], now: SystemTime) -> Plan {
    let mut plan = Plan::default();
    let consider = |i: usize, r: &Record, plan: &mut Plan| {
        let wants = match &r.run {
            None => true,
            Some(run) if run.is_running() => false,
            Some(_) => r.restarts(policy),
        };
        if !wants {
            return;
        }
        if let Some(at) = r.setup_retry
            && let Ok(left) = at.duration_since(now)
            && !left.is_zero()
        {
            wake(plan, left);
            return;
        }
        if let Some(e) = r.ended()
            && let Some(left) = r.backoff.remaining(e.finished_at, now)
        {
            plan.back_off
                .push((i, r.backoff.delay().unwrap_or_default(), left));
            wake(plan, left);
            return;
        }
        plan.start.push(i);
    };
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.ephemeral) {
        consider(i, r, &mut plan);
    }
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.init) {
        if r.succeeded() {
            continue;
        }
        consider(i, r, &mut plan);
        return plan;
    }
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.is_main()) {
        consider(i, r, &mut plan);
    }
    plan
}

fn wake(plan: &mut Plan, after: Duration) {
    plan.wake = Some(plan.wake.map_or(after, |w| w.min(after)));
}

/// The pod's phase from its containers, as the kubelet's `getPhase`.
/// `deleting`: the pod is being deleted and its containers were stopped.
pub fn phase(policy: RestartPolicy, records: &[Record], deleting: bool) -> Phase {
    let restarts_allowed = !deleting;
    let (mut pending_init, mut failed_init) = (0, 0);
    for r in records.iter().filter(|r| r.init) {
        match r.shown(policy, restarts_allowed) {
            Shown::Running { .. } => pending_init += 1,
            Shown::Terminated { ended, .. } => {
                if ended.exit_code != 0 {
                    failed_init += 1;
                }
            }
            Shown::Waiting { last: Some(e), .. } => {
                if e.exit_code != 0 {
                    failed_init += 1;
                }
            }
            Shown::Waiting { last: None, .. } => pending_init += 1,
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for r in records.iter().filter(|r| r.is_main()) {
        match r.shown(policy, restarts_allowed) {
            Shown::Running { .. } => running += 1,
            Shown::Terminated { ended, .. } => {
                stopped += 1;
                if ended.exit_code == 0 {
                    succeeded += 1;
                }
            }
            Shown::Waiting { last: Some(_), .. } => stopped += 1,
            Shown::Waiting { last: None, .. } => waiting += 1,
        }
    }
    let phase = if failed_init > 0 && policy == RestartPolicy::Never {
        Phase::Failed
    } else if pending_init > 0 || waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped == 0 {
        Phase::Pending
    } else if deleting || policy != RestartPolicy::Always {
        match policy {
            _ if stopped == succeeded => Phase::Succeeded,
            RestartPolicy::OnFailure if !deleting => Phase::Running,
            _ => Phase::Failed,
        }
    } else {
        // Always: the containers are on their way back.
        Phase::Running
    };
    // A deleted pod whose containers are stopped ends in a terminal phase,
    // as the kubelet has done since 1.27.
    if deleting && !phase.is_terminal() {
        Phase::Failed
    } else {
        phase
    }
}

/// The kubelet's CrashLoopBackOff message.
pub fn backoff_message(delay: Duration, container: &str, pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "back-off {} restarting failed container={container} pod={}_{}({})",
        backoff::go_duration(delay),
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::backoff::Policy;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn ended(code: i32, secs: u64) -> Run {
        Run {
            id: "x".into(),
            started_at: Some(at(secs)),
            ended: Some(Ended {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: String::new(),
                started_at: Some(at(secs)),
                finished_at: at(secs),
                id: Some("x".into()),
            }),
        }
    }

    fn running() -> Run {
        Run {
            id: "x".into(),
            started_at: Some(at(0)),
            ended: None,
        }
    }

    fn pod_of(init: &[Option<Run>], main: &[Option<Run>]) -> Vec<Record> {
        let mut v = Vec::new();
        for (i, r) in init.iter().enumerate() {
            let mut rec = Record::new(&format!("init{i}"), "/i.wasm", true);
            rec.run = r.clone();
            v.push(rec);
        }
        for (i, r) in main.iter().enumerate() {
            let mut rec = Record::new(&format!("c{i}"), "/c.wasm", false);
            rec.run = r.clone();
            v.push(rec);
        }
        v
    }

    use RestartPolicy::*;

    #[test]
    fn init_containers_run_one_at_a_time_before_the_others() {
        let recs = pod_of(&[None, None], &[None, None]);
        assert_eq!(decide(Always, &recs, at(0)).start, [0]);
        assert_eq!(phase(Always, &recs, false), Phase::Pending);
        let recs = pod_of(&[Some(running()), None], &[None, None]);
        assert!(decide(Always, &recs, at(0)).start.is_empty());
        let recs = pod_of(&[Some(ended(0, 0)), None], &[None, None]);
        assert_eq!(decide(Always, &recs, at(0)).start, [1]);
        let recs = pod_of(&[Some(ended(0, 0)), Some(ended(0, 1))], &[None, None]);
        assert_eq!(decide(Always, &recs, at(2)).start, [2, 3]);
    }

    #[test]
    fn ephemeral_containers_start_at_once_run_once_and_leave_the_phase_alone() {
        let with = |recs: &mut Vec<Record>, run: Option<Run>| {
            let mut e = Record::new("dbg", "/d.wasm", false);
            e.ephemeral = true;
            e.run = run;
            recs.push(e);
        };
        // Added while an init container runs: it starts all the same.
        let mut recs = pod_of(&[Some(running())], &[None]);
        with(&mut recs, None);
        assert_eq!(decide(Always, &recs, at(0)).start, [2]);
        // Ended, with failure, under Always: it is not run again, and the
        // pod is as its own containers say.
        let mut recs = pod_of(&[], &[Some(running())]);
        with(&mut recs, Some(ended(1, 0)));
        assert!(decide(Always, &recs, at(5)).start.is_empty());
        assert_eq!(phase(Always, &recs, false), Phase::Running);
        let mut recs = pod_of(&[], &[Some(ended(0, 0))]);
        with(&mut recs, Some(running()));
        assert_eq!(phase(Never, &recs, false), Phase::Succeeded);
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_only_under_never() {
        let recs = pod_of(&[Some(ended(1, 0))], &[None]);
        assert!(decide(Never, &recs, at(1)).start.is_empty());
        assert_eq!(phase(Never, &recs, false), Phase::Failed);
        assert_eq!(decide(OnFailure, &recs, at(1)).start, [0]);
        assert_eq!(phase(OnFailure, &recs, false), Phase::Pending);
    }

    #[test]
    fn restart_policies_and_phases() {
        // A job that exited 0.
        let done = pod_of(&[], &[Some(ended(0, 0))]);
        assert_eq!(phase(Never, &done, false), Phase::Succeeded);
        assert_eq!(phase(OnFailure, &done, false), Phase::Succeeded);
        assert!(decide(OnFailure, &done, at(1)).start.is_empty());
        // Always restarts even a success, and the pod stays Running.
        assert_eq!(decide(Always, &done, at(1)).start, [0]);
        assert_eq!(phase(Always, &done, false), Phase::Running);
        // A failure.
        let failed = pod_of(&[], &[Some(ended(3, 0))]);
        assert_eq!(phase(Never, &failed, false), Phase::Failed);
        assert_eq!(phase(OnFailure, &failed, false), Phase::Running);
        assert_eq!(decide(OnFailure, &failed, at(1)).start, [0]);
        // Mixed: one still runs.
        let mixed = pod_of(&[], &[Some(ended(3, 0)), Some(running())]);
        assert_eq!(phase(Never, &mixed, false), Phase::Running);
        // Deleted: stopped containers decide.
        let stopped = pod_of(&[], &[Some(ended(143, 0))]);
        assert_eq!(phase(Always, &stopped, true), Phase::Failed);
        let stopped = pod_of(&[], &[Some(ended(0, 0))]);
        assert_eq!(phase(Always, &stopped, true), Phase::Succeeded);
    }

    #[test]
    fn crashes_wait_out_the_back_off() {
        let p = Policy::default();
        let mut recs = pod_of(&[], &[Some(ended(1, 0))]);
        // First restart: at once.
        assert_eq!(decide(Always, &recs, at(0)).start, [0]);
        recs[0].backoff.next(p, at(0));
        recs[0].run = Some(ended(1, 5));
        let plan = decide(Always, &recs, at(7));
        assert!(plan.start.is_empty());
        assert_eq!(
            plan.back_off,
            [(0, Duration::from_secs(10), Duration::from_secs(8))]
        );
        assert_eq!(plan.wake, Some(Duration::from_secs(8)));
        assert_eq!(decide(Always, &recs, at(15)).start, [0]);
        // While waiting, the status shows the back-off with the last run.
        recs[0].waiting = Some(Waiting {
            reason: "CrashLoopBackOff".into(),
            message: "m".into(),
        });
        assert!(matches!(
            recs[0].shown(Always, true),
            Shown::Waiting {
                reason: Some("CrashLoopBackOff"),
                last: Some(_),
                ..
            }
        ));
        assert_eq!(phase(Always, &recs, false), Phase::Running);
        assert!(matches!(
            recs[0].shown(Always, false),
            Shown::Terminated { .. }
        ));
    }

    #[test]
    fn seeded_running_containers_count_as_lost() {
        let s: ContainerStatus = serde_json::from_value(serde_json::json!({
            "name": "c", "image": "/c.wasm", "imageID": "sha256:ab", "ready": true,
            "restartCount": 2, "containerID": "wasm://u_c_2",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "finishedAt": "2025-12-31T23:59:00Z", "containerID": "wasm://u_c_1"}},
        }))
        .unwrap();
        let r = Record::seeded("c", "/c.wasm", false, &s, at(0));
        assert_eq!(r.restart_count, 2);
        let e = r.ended().unwrap();
        assert_eq!((e.exit_code, e.reason.as_str()), (255, "Unknown"));
        assert_eq!(e.id.as_deref(), Some("u_c_2"));
        assert_eq!(r.last.as_ref().unwrap().id.as_deref(), Some("u_c_1"));
        let recs = vec![r];
        assert_eq!(decide(Always, &recs, at(0)).start, [0]);
        assert_eq!(phase(Never, &recs, false), Phase::Failed);
    }

    #[test]
    fn setup_failures_retry_later() {
        let mut recs = pod_of(&[], &[None]);
        recs[0].setup_retry = Some(at(10));
        let plan = decide(Always, &recs, at(4));
        assert!(plan.start.is_empty());
        assert_eq!(plan.wake, Some(Duration::from_secs(6)));
        assert_eq!(decide(Always, &recs, at(10)).start, [0]);
    }
}
