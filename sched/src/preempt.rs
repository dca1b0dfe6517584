//! Preemption: when a pod fits nowhere, find a node where evicting
//! lower-priority pods would make room, as kube-scheduler's
//! DefaultPreemption does: sparing the pods PodDisruptionBudgets protect
//! where it can, violating the fewest budgets where it cannot (nominated
//! pods, which the snapshot does not hold, are not weighed).

use std::cmp::Reverse;
use std::collections::HashSet;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::compiled::Selector;
use crate::filter::Cycle;
use crate::intern::Interner;
use crate::model::{LabelSelector, PodInfo, PreemptionPolicy};
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

/// A PodDisruptionBudget as preemption weighs it: how many more of the
/// pods it selects may be disrupted now.
#[derive(Debug, Clone)]
pub struct DisruptionBudget {
    namespace: String,
    selector: LabelSelector,
    allowed: i32,
    /// `status.disruptedPods`: evictions the API server has already
    /// counted against the budget.
    disrupted: HashSet<String>,
}

impl DisruptionBudget {
    /// `None` for a budget whose selector is missing, empty or invalid: as
    /// for kube-scheduler, it protects no pod from preemption.
    pub fn from_pdb(pdb: &PodDisruptionBudget) -> Option<DisruptionBudget> {
        let selector =
            LabelSelector::read(pdb.spec.as_ref()?.selector.as_ref(), "spec.selector").ok()?;
        if !matches!(&selector, LabelSelector::Requirements(r) if !r.is_empty()) {
            return None;
        }
        let status = pdb.status.as_ref();
        Some(DisruptionBudget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        })
    }
}

/// A budget with its selector compiled against a snapshot's strings.
struct Budget<'a> {
    of: &'a DisruptionBudget,
    selector: Selector,
}

impl Budget<'_> {
    fn selects(&self, p: &PlacedPod, strings: &Interner) -> bool {
        *p.namespace == *self.of.namespace
            && self.selector.matches(&p.labels, strings)
            && !self.of.disrupted.contains(&*p.name)
    }
}

/// A pod to evict: namespace, name, priority.
type Victim = (String, String, i32);

/// A node and the fewest pods to evict from it.
struct Candidate {
    node: u32,
    victims: Vec<Victim>,
    /// How many victims a budget does not allow.
    violations: usize,
}

impl Candidate {
    /// kube-scheduler's ordering: fewest budget violations, then the lowest
    /// highest-victim priority, then the smallest sum of (offset)
    /// priorities, then fewest victims; then the node name, for
    /// determinism.
    fn rank(&self, snap: &Snapshot) -> (usize, i32, i64, usize, std::sync::Arc<str>) {
        let highest = self.victims.iter().map(|v| v.2).max().unwrap_or(i32::MIN);
        let sum = self
            .victims
            .iter()
            .map(|v| i64::from(v.2) + i64::from(i32::MAX) + 1)
            .sum();
        (
            self.violations,
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
    /// `budgets` are the cluster's PodDisruptionBudgets.
    pub fn preempt(
        &self,
        pod: &PodInfo,
        snap: &Snapshot,
        budgets: &[DisruptionBudget],
    ) -> Option<Preemption> {
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
        let budgets: Vec<Budget<'_>> = budgets
            .iter()
            .map(|of| Budget {
                of,
                selector: Selector::build(&of.selector, &mut work.strings),
            })
            .collect();
        let mut best: Option<Candidate> = None;
        let mut found = 0;
        for node in potential {
            if found >= wanted {
                break;
            }
            let fits = |s: &Snapshot| Cycle::new(s, &cp).filter(&s.nodes[node as usize]).is_ok();
            let Some((victims, violations)) =
                select_victims(&mut work, pod.priority, node, &budgets, fits)
            else {
                continue;
            };
            found += 1;
            let candidate = Candidate {
                node,
                victims,
                violations,
            };
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
/// first — those whose eviction would violate a budget before the others —
/// keeping each that still lets the pod fit. The victims, and how many of
/// them violate a budget. Leaves `work` as it found it.
fn select_victims(
    work: &mut Snapshot,
    priority: i32,
    node: u32,
    budgets: &[Budget<'_>],
    fits: impl Fn(&Snapshot) -> bool,
) -> Option<(Vec<Victim>, usize)> {
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
    // kube-scheduler's filterPodsWithPDBViolation: in that order, each pod
    // spends a disruption from every budget selecting it; one that
    // overdraws a budget would violate it.
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.of.allowed).collect();
    let (violating, sparing): (Vec<PlacedPod>, Vec<PlacedPod>) =
        removed.into_iter().partition(|p| {
            let mut violated = false;
            for (b, left) in budgets.iter().zip(allowed.iter_mut()) {
                if b.selects(p, &work.strings) {
                    *left -= 1;
                    violated |= *left < 0;
                }
            }
            violated
        });
    let mut victims = Vec::new();
    let mut violations = 0;
    let tries = violating
        .into_iter()
        .map(|p| (p, true))
        .chain(sparing.into_iter().map(|p| (p, false)));
    for (p, violates) in tries {
        let id = work.insert(p);
        if !fits(work) {
            victims.push(work.take(id));
            violations += usize::from(violates);
        }
    }
    let out = victims
        .iter()
        .map(|p| (p.namespace.to_string(), p.name.to_string(), p.priority))
        .collect();
    for p in victims {
        work.insert(p);
    }
    Some((out, violations))
}
