//! What a controller is waiting to see in its pod cache (client-go's
//! `UIDTrackingControllerExpectations`): the pods it created, deleted or
//! stopped tracking, by name. Until they show up, its informer is behind
//! its own writes, and acting on the cache would create or delete twice.
//!
//! A controller records the names *before* it writes, because the watch
//! event may arrive before the write returns; the pod events clear them.
//! An expectation that is never met (an event lost in a relist, a pod
//! created and deleted by someone else before the cache saw it) expires
//! after [`TTL`], as client-go's do.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;

/// How long an unmet expectation holds a controller back.
pub const TTL: Duration = Duration::from_secs(5 * 60);

/// What a controller did to a pod and waits to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Created: met when the pod appears.
    Create,
    /// Deleted: met when the pod is gone or has a deletion timestamp.
    Delete,
    /// Removed the Job tracking finalizer: met when the pod is gone or no
    /// longer carries it.
    Untrack,
}

/// Pod name → what was done to it and when.
type Pending = HashMap<String, (Op, Instant)>;

#[derive(Debug, Default)]
pub struct Expectations {
    /// Controller key (`Kind/namespace/name`) → what it waits for.
    pending: Mutex<HashMap<String, Pending>>,
}

/// The key expectations use for one controller.
pub fn key(kind: &str, ns_name: &str) -> String {
    format!("{kind}/{ns_name}")
}

impl Expectations {
    pub fn expect(&self, controller: &str, pod: &str, op: Op) {
        self.pending
            .lock()
            .entry(controller.to_string())
            .or_default()
            .insert(pod.to_string(), (op, Instant::now()));
    }

    /// The write for `pod` failed: nothing will show up.
    pub fn forget(&self, controller: &str, pod: &str) {
        let mut pending = self.pending.lock();
        if let Some(ops) = pending.get_mut(controller) {
            ops.remove(pod);
            if ops.is_empty() {
                pending.remove(controller);
            }
        }
    }

    /// A pod event for a pod `controller` owns.
    pub fn observe(&self, controller: &str, pod: &Pod, deleted: bool) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let mut pending = self.pending.lock();
        let Some(ops) = pending.get_mut(controller) else {
            return;
        };
        let met = match ops.get(name) {
            None => return,
            Some((Op::Create, _)) => true,
            Some((Op::Delete, _)) => deleted || pod.metadata.deletion_timestamp.is_some(),
            Some((Op::Untrack, _)) => {
                deleted
                    || !pod
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == super::job::TRACKING_FINALIZER)
            }
        };
        if met {
            ops.remove(name);
            if ops.is_empty() {
                pending.remove(controller);
            }
        }
    }

    /// Whether every create and delete of `controller` has been seen (or
    /// has expired), so that its cache may be trusted to decide more.
    pub fn satisfied(&self, controller: &str) -> bool {
        let pending = self.pending.lock();
        pending.get(controller).is_none_or(|ops| {
            ops.values()
                .all(|(op, at)| *op == Op::Untrack || at.elapsed() > TTL)
        })
    }

    /// Whether the tracking finalizer of `pod` is known to be removed
    /// though the cache may still show it.
    pub fn untracking(&self, controller: &str, pod: &str) -> bool {
        let pending = self.pending.lock();
        pending
            .get(controller)
            .and_then(|ops| ops.get(pod))
            .is_some_and(|(op, at)| *op == Op::Untrack && at.elapsed() <= TTL)
    }

    /// The controller is gone.
    pub fn clear(&self, controller: &str) {
        self.pending.lock().remove(controller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn creates_and_deletes_are_met_by_the_right_events() {
        let e = Expectations::default();
        e.expect("ReplicaSet/a/b", "p1", Op::Create);
        e.expect("ReplicaSet/a/b", "p2", Op::Delete);
        assert!(!e.satisfied("ReplicaSet/a/b"));
        e.observe("ReplicaSet/a/b", &pod("p1"), false);
        assert!(!e.satisfied("ReplicaSet/a/b"));
        // An update of the pod to delete, without a deletion timestamp, is not enough.
        e.observe("ReplicaSet/a/b", &pod("p2"), false);
        assert!(!e.satisfied("ReplicaSet/a/b"));
        let mut p2 = pod("p2");
        p2.metadata.deletion_timestamp = Some(Time(crate::controllers::events::now()));
        e.observe("ReplicaSet/a/b", &p2, false);
        assert!(e.satisfied("ReplicaSet/a/b"));
        assert!(e.satisfied("ReplicaSet/other/x"));
    }

    #[test]
    fn untracking_does_not_hold_back_and_failed_writes_are_forgotten() {
        let e = Expectations::default();
        e.expect("Job/a/j", "p1", Op::Untrack);
        assert!(e.satisfied("Job/a/j"));
        assert!(e.untracking("Job/a/j", "p1"));
        e.observe("Job/a/j", &pod("p1"), false);
        assert!(!e.untracking("Job/a/j", "p1"));
        e.expect("Job/a/j", "p2", Op::Create);
        e.forget("Job/a/j", "p2");
        assert!(e.satisfied("Job/a/j"));
    }
}
