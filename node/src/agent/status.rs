//! The pod's `status` from what the agent knows: phase, conditions,
//! container statuses, addresses. Pure: the worker compares the result with
//! what is stored and patches `pods/status` only when they differ.

use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Map, Value};

use super::plan::{Ended, Phase, Record, RestartPolicy, Shown};

/// The keys of `status` the agent writes; any other key (set by someone
/// else) is left alone.
pub const MANAGED: [&str; 13] = [
    "phase",
    "conditions",
    "message",
    "reason",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
];

/// The condition types the agent owns; others (PodScheduled from the
/// scheduler, DisruptionTarget from an eviction) are kept as they are.
const OWNED_CONDITIONS: [&str; 3] = ["Initialized", "ContainersReady", "Ready"];

/// A pod-level end the containers do not explain: an admission rejection
/// or a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEnd {
    pub phase: Phase,
    pub reason: String,
    pub message: String,
}

/// What the status is built from.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub pod: &'a Pod,
    pub records: &'a [Record],
    pub phase: Phase,
    pub end: Option<&'a PodEnd>,
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    pub start_time: Option<SystemTime>,
    /// False when the pod is finished or being deleted.
    pub restarts_allowed: bool,
    pub now: SystemTime,
}

pub fn time(t: SystemTime) -> Time {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Time(
        k8s_openapi::jiff::Timestamp::from_second(secs)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

pub fn build(i: &Inputs<'_>) -> PodStatus {
    let current = i.pod.status.clone().unwrap_or_default();
    let policy = RestartPolicy::of(i.pod);
    let initialized = i.records.iter().filter(|r| r.init).all(Record::succeeded);
    // containerID's runtime part, as `containerd://...` on a kubelet.
    let scheme = if super::worker::is_wasm(i.pod) {
        "wasm"
    } else {
        "runc"
    };
    let (init, rest): (Vec<&Record>, Vec<&Record>) = i.records.iter().partition(|r| r.init);
    let (ephemeral, main): (Vec<&Record>, Vec<&Record>) =
        rest.into_iter().partition(|r| r.ephemeral);
    let statuses = |recs: &[&Record]| {
        recs.iter()
            .map(|r| container_status(r, policy, i.restarts_allowed, initialized, scheme))
            .collect::<Vec<_>>()
    };
    let rejected = i.end.is_some() && i.records.iter().all(|r| r.run.is_none());
    let terminal = i.phase.is_terminal();

    let mut conditions: Vec<PodCondition> = current
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(time(i.now)),
            ..Default::default()
        });
    }
    if !rejected {
        let not_done: Vec<&str> = init
            .iter()
            .filter(|r| !r.succeeded())
            .map(|r| r.name.as_str())
            .collect();
        let unready: Vec<&str> = main
            .iter()
            .filter(|r| !(r.ready && r.is_running()))
            .map(|r| r.name.as_str())
            .collect();
        let init_cond = if not_done.is_empty() {
            (true, None, None)
        } else if terminal {
            (false, Some("PodCompleted"), None)
        } else {
            (
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    not_done.join(" ")
                )),
            )
        };
        let ready_cond = if unready.is_empty() {
            (true, None, None)
        } else if terminal {
            (false, Some("PodCompleted"), None)
        } else {
            (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        for (type_, (ok, reason, message)) in [
            ("Initialized", init_cond),
            ("ContainersReady", ready_cond.clone()),
            ("Ready", ready_cond),
        ] {
            conditions.push(condition(&current, type_, ok, reason, message, i.now));
        }
    }
    let order = |t: &str| {
        ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .iter()
            .position(|o| *o == t)
            .unwrap_or(usize::MAX)
    };
    conditions.sort_by_key(|c| order(&c.type_));

    let ip = i.pod_ip.map(|ip| ip.to_string());
    let init_statuses = statuses(&init);
    PodStatus {
        phase: Some(i.phase.as_str().into()),
        conditions: Some(conditions),
        reason: i.end.map(|e| e.reason.clone()),
        message: i.end.map(|e| e.message.clone()),
        host_ip: Some(i.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: i.host_ip.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: i.start_time.map(time),
        init_container_statuses: (!init_statuses.is_empty() && !rejected).then_some(init_statuses),
        container_statuses: (!rejected).then(|| statuses(&main)),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then(|| statuses(&ephemeral)),
        qos_class: Some(qos_class(i.pod).into()),
        ..current
    }
}

fn condition(
    current: &PodStatus,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: SystemTime,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = current
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

fn terminated(e: &Ended, scheme: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: e.exit_code,
            reason: Some(e.reason.clone()).filter(|r| !r.is_empty()),
            message: Some(e.message.clone()).filter(|m| !m.is_empty()),
            started_at: e.started_at.map(time),
            finished_at: Some(time(e.finished_at)),
            container_id: e.id.as_ref().map(|id| format!("{scheme}://{id}")),
            signal: None,
        }),
        ..Default::default()
    }
}

fn container_status(
    r: &Record,
    policy: RestartPolicy,
    restarts_allowed: bool,
    initialized: bool,
    scheme: &str,
) -> ContainerStatus {
    let default_reason = if r.init || (!initialized && !r.ephemeral) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let (state, last) = match r.shown(policy, restarts_allowed) {
        Shown::Running { started_at, last } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: started_at.map(time),
                }),
                ..Default::default()
            },
            last,
        ),
        Shown::Terminated { ended, last } => (terminated(ended, scheme), last),
        Shown::Waiting {
            reason,
            message,
            last,
        } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.unwrap_or(default_reason).to_string()),
                    message: message.map(str::to_string),
                }),
                ..Default::default()
            },
            last,
        ),
    };
    let running = r.is_running();
    ContainerStatus {
        name: r.name.clone(),
        image: r.image.clone(),
        image_id: r.image_id.clone(),
        container_id: r
            .run
            .as_ref()
            .filter(|run| !run.id.is_empty())
            .map(|run| format!("{scheme}://{}", run.id)),
        state: Some(state),
        last_state: Some(last.map(|e| terminated(e, scheme)).unwrap_or_default()),
        // An ephemeral container has no readiness (Kubernetes shows false).
        ready: running && r.ready && !r.ephemeral,
        started: Some(running && r.started),
        restart_count: r.restart_count,
        ..Default::default()
    }
}

/// Kubernetes' QoS class: Guaranteed when every container limits cpu and
/// memory and requests the same, BestEffort when none asks for anything.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let res = c.resources.clone().unwrap_or_default();
        let (req, lim) = (
            res.requests.unwrap_or_default(),
            res.limits.unwrap_or_default(),
        );
        any |= !req.is_empty() || !lim.is_empty();
        for k in ["cpu", "memory"] {
            let Some(l) = lim.get(k) else {
                guaranteed = false;
                continue;
            };
            if req.get(k).is_some_and(|r| r != l) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// `status` as JSON, reduced to the keys the agent manages, for comparing
/// what is stored with what the agent would write.
pub fn managed(status: &PodStatus) -> Value {
    let v = serde_json::to_value(status).unwrap_or(Value::Null);
    let mut out = Map::new();
    for k in MANAGED {
        out.insert(k.to_string(), v.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::plan::Run;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"runtimeClassName": "wasm", "containers": [{"name": "c", "image": "/c.wasm"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:01Z"}]},
        }))
        .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_ready_running_pod() {
        let pod = pod();
        let mut r = Record::new("c", "/c.wasm", false);
        r.run = Some(Run {
            id: "u1_c_0".into(),
            started_at: Some(at(1)),
            ended: None,
        });
        r.ready = true;
        r.started = true;
        r.image_id = "sha256:aa".into();
        let recs = [r];
        let s = build(&Inputs {
            pod: &pod,
            records: &recs,
            phase: Phase::Running,
            end: None,
            pod_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 42, 3, 2))),
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            start_time: Some(at(0)),
            restarts_allowed: true,
            now: at(5),
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIP"], "127.42.3.2");
        assert_eq!(v["podIPs"][0]["ip"], "127.42.3.2");
        assert_eq!(v["qosClass"], "BestEffort");
        let types: Vec<_> = v["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("PodScheduled", "True"),
                ("Initialized", "True"),
                ("ContainersReady", "True"),
                ("Ready", "True")
            ]
        );
        // Ready changed: its transition time is now; PodScheduled kept its.
        assert_eq!(
            v["conditions"][3]["lastTransitionTime"],
            "2027-01-15T08:00:05Z"
        );
        assert_eq!(
            v["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        let c = &v["containerStatuses"][0];
        assert_eq!(c["containerID"], "wasm://u1_c_0");
        // A container pod's ID names runc, as a kubelet's names containerd.
        let mut oci = pod.clone();
        oci.spec.as_mut().unwrap().runtime_class_name = None;
        let s2 = build(&Inputs {
            pod: &oci,
            records: &recs,
            phase: Phase::Running,
            end: None,
            pod_ip: None,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            start_time: Some(at(0)),
            restarts_allowed: true,
            now: at(5),
        });
        assert_eq!(
            s2.container_statuses.unwrap()[0].container_id.as_deref(),
            Some("runc://u1_c_0")
        );
        assert_eq!(c["state"]["running"]["startedAt"], "2027-01-15T08:00:01Z");
        assert_eq!(
            (c["ready"].as_bool(), c["started"].as_bool()),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn rejected_pods_carry_the_reason_and_no_containers() {
        let pod = pod();
        let recs = [Record::new("c", "/c.wasm", false)];
        let end = PodEnd {
            phase: Phase::Failed,
            reason: "OutOfcpu".into(),
            message: "Pod was rejected: ...".into(),
        };
        let s = build(&Inputs {
            pod: &pod,
            records: &recs,
            phase: Phase::Failed,
            end: Some(&end),
            pod_ip: None,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            start_time: Some(at(0)),
            restarts_allowed: false,
            now: at(1),
        });
        assert_eq!(s.reason.as_deref(), Some("OutOfcpu"));
        assert!(s.container_statuses.is_none());
        let m = managed(&s);
        assert_eq!(m["podIP"], Value::Null);
        assert_eq!(m["phase"], "Failed");
    }

    #[test]
    fn qos_classes() {
        let with = |res: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "i", "resources": res}]},
            }))
            .unwrap()
        };
        assert_eq!(qos_class(&with(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&with(
                serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&with(serde_json::json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
