//! Preemption: when a pod fits nowhere, find a node where evicting
//! lower-priority pods would make room, as kube-scheduler's
//! DefaultPreemption does (without PodDisruptionBudgets and nominated
//! pods, which the snapshot does not hold).

use std::cmp::Reverse;

use crate::filter::Cycle;
use crate::model::{PodInfo, PreemptionPolicy};
use crate::scheduler::Scheduler;
use crate::snapshot::{PlacedPod, Snapshot};

/// kube-scheduler's `minCandidateNodesPercentage` and
/// `minCandidateNodesAbsolute`: how many nodes with a working set of
/// victims to compare before choosing.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// Evict `victims` (namespace, name) from `node`, then the pod fits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<(String, String)>,
}

/// A node and the fewest pods to evict from it.
struct Candidate {
    node: u32,
    victims: Vec<(String, String, i32)>,
}

impl Candidate {
    /// kube-scheduler's ordering: lowest highest-victim priority, then the
    /// smallest sum of (offset) priorities, then fewest victims; then the
    /// node name, for determinism.
    fn rank(&self, snap: &Snapshot) -> (i32, i64, usize, std::sync::Arc<str>) {
        let highest = self.victims.iter().map(|v| v.2).max().unwrap_or(i32::MIN);
        let sum = self
            .victims
            .iter()
            .map(|v| i64::from(v.2) + i64::from(i32::MAX) + 1)
            .sum();
        (
            highest,
            sum,
            self.victims.len(),
            snap.nodes[self.node as usize].name.clone(),
        )
    }
}

impl Scheduler {
    /// Where `pod` could go by evicting lower-priority pods, and which.
    /// `None` if its preemptionPolicy is Never, if it fits somewhere
    /// already, or if no eviction helps: only nodes failing for resources,
    /// anti-affinity or topology spread are considered; nodes that are
    /// unschedulable, tainted or do not match the pod's selector are not.
    pub fn preempt(&self, pod: &PodInfo, snap: &Snapshot) -> Option<Preemption> {
        if pod.preemption_policy == PreemptionPolicy::Never || snap.nodes.is_empty() {
            return None;
        }
        let cp = self.compile(pod, snap);
        let n = snap.nodes.len();
        let offset = (cp.seed % n as u64) as usize;
        let mut potential = Vec::new();
        {
            let cycle = Cycle::new(snap, &cp);
            for k in 0..n {
                let i = (offset + k) % n;
                let node = &snap.nodes[i];
                match cycle.filter(node) {
                    Ok(()) => return None,
                    Err(f) if f.resolvable() => {
                        let has_lower = node.pods.iter().any(|&id| {
                            snap.pods[id as usize]
                                .as_ref()
                                .is_some_and(|p| p.priority < pod.priority)
                        });
                        if has_lower {
                            potential.push(i as u32);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        if potential.is_empty() {
            return None;
        }

        let wanted = (n * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(n);
        // Victims are tried on a copy, evicted and put back node by node.
        let mut work = snap.clone();
        let mut best: Option<Candidate> = None;
        let mut found = 0;
        for node in potential {
            if found >= wanted {
                break;
            }
            let fits = |s: &Snapshot| Cycle::new(s, &cp).filter(&s.nodes[node as usize]).is_ok();
            let Some(victims) = select_victims(&mut work, pod.priority, node, fits) else {
                continue;
            };
            found += 1;
            let candidate = Candidate { node, victims };
            if best
                .as_ref()
                .is_none_or(|b| candidate.rank(snap) < b.rank(snap))
            {
                best = Some(candidate);
            }
        }
        best.map(|c| Preemption {
            node: snap.nodes[c.node as usize].name.to_string(),
            victims: c
                .victims
                .into_iter()
                .map(|(ns, name, _)| (ns, name))
                .collect(),
        })
    }
}

/// kube-scheduler's `SelectVictimsOnNode`: evict every lower-priority pod;
/// if the pod then fits, put them back one at a time, most important
/// first, keeping each that still lets the pod fit. Leaves `work` as it
/// found it.
fn select_victims(
    work: &mut Snapshot,
    priority: i32,
    node: u32,
    fits: impl Fn(&Snapshot) -> bool,
) -> Option<Vec<(String, String, i32)>> {
    let mut lower: Vec<u32> = work.nodes[node as usize]
        .pods
        .iter()
        .copied()
        .filter(|&id| {
            work.pods[id as usize]
                .as_ref()
                .is_some_and(|p| p.priority < priority)
        })
        .collect();
    lower.sort_by_cached_key(|&id| {
        let p = work.pods[id as usize].as_ref();
        (
            Reverse(p.map_or(0, |p| p.priority)),
            p.map(|p| p.key.clone()),
        )
    });
    let removed: Vec<PlacedPod> = lower.into_iter().map(|id| work.take(id)).collect();
    if !fits(work) {
        for p in removed {
            work.insert(p);
        }
        return None;
    }
    let mut victims = Vec::new();
    for p in removed {
        let id = work.insert(p);
        if !fits(work) {
            victims.push(work.take(id));
        }
    }
    let out = victims
        .iter()
        .map(|p| (p.namespace.to_string(), p.name.to_string(), p.priority))
        .collect();
    for p in victims {
        work.insert(p);
    }
    Some(out)
}
