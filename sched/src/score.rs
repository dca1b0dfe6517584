//! Scores: each plugin gives every feasible node 0–100, normalised as
//! kube-scheduler normalises it; the node's score is the weighted sum.

use crate::compiled::tolerated;
use crate::filter::Cycle;
use crate::intern::{FxHashMap, Sym};
use crate::snapshot::{GroupKind, NodeState};

/// The highest score a plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

/// How NodeResourcesFit scores a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Prefer the emptiest node (spreads load; kube-scheduler's default).
    #[default]
    LeastAllocated,
    /// Prefer the fullest node that fits (bin packing).
    MostAllocated,
}

/// Plugin weights; the defaults are kube-scheduler's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub node_resources_fit: i64,
    pub balanced_allocation: i64,
    pub node_affinity: i64,
    pub taint_toleration: i64,
    pub pod_topology_spread: i64,
    pub inter_pod_affinity: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            node_resources_fit: 1,
            balanced_allocation: 1,
            node_affinity: 2,
            taint_toleration: 3,
            pod_topology_spread: 2,
            inter_pod_affinity: 2,
        }
    }
}

/// Per-resource NodeResourcesFit score (cpu and memory, weight 1 each).
fn resource_score(strategy: ScoringStrategy, requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    match strategy {
        ScoringStrategy::LeastAllocated if requested > capacity => 0,
        ScoringStrategy::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
        ScoringStrategy::MostAllocated => requested.min(capacity) * MAX_NODE_SCORE / capacity,
    }
}

/// NodeResourcesFit: requests with the non-zero defaults, pod included.
pub(crate) fn fit(strategy: ScoringStrategy, cyc: &Cycle<'_>, n: &NodeState) -> i64 {
    let cpu = resource_score(strategy, n.score_cpu + cyc.pod.score_cpu, n.alloc_cpu);
    let mem = resource_score(
        strategy,
        n.score_memory + cyc.pod.score_memory,
        n.alloc_memory,
    );
    (cpu + mem) / 2
}

/// NodeResourcesBalancedAllocation: 100 × (1 − the spread of the cpu and
/// memory fractions), on actual requests, pod included.
pub(crate) fn balanced(cyc: &Cycle<'_>, n: &NodeState) -> i64 {
    let fraction = |req: i64, alloc: i64| (alloc > 0).then(|| (req as f64 / alloc as f64).min(1.0));
    let cpu = fraction(n.req_cpu + cyc.pod.cpu, n.alloc_cpu);
    let mem = fraction(n.req_memory + cyc.pod.memory, n.alloc_memory);
    let std = match (cpu, mem) {
        (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// kube-scheduler's `DefaultNormalizeScore`: scale to the highest raw
/// score; `reverse` makes the lowest raw score best.
fn default_normalize(raw: &mut [i64], reverse: bool) {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            raw.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for s in raw {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// TaintToleration: fewer untolerated PreferNoSchedule taints is better.
pub(crate) fn taints(cyc: &Cycle<'_>, nodes: &[&NodeState], out: &mut [i64]) {
    for (s, n) in out.iter_mut().zip(nodes) {
        *s = if n.has_prefer_taints {
            n.taints
                .iter()
                .filter(|t| {
                    t.effect == crate::model::TaintEffect::PreferNoSchedule
                        && !tolerated(&cyc.pod.tolerations, t)
                })
                .count() as i64
        } else {
            0
        };
    }
    default_normalize(out, true);
}

/// NodeAffinity: sum of the weights of matching preferred terms.
pub(crate) fn node_affinity(cyc: &Cycle<'_>, nodes: &[&NodeState], out: &mut [i64]) -> bool {
    if cyc.pod.preferred_terms.is_empty() {
        return false;
    }
    let strings = &cyc.snap.strings;
    for (s, n) in out.iter_mut().zip(nodes) {
        *s = cyc
            .pod
            .preferred_terms
            .iter()
            .filter(|(_, t)| t.matches(&n.labels, n.name_sym, strings))
            .map(|(w, _)| *w)
            .sum();
    }
    default_normalize(out, false);
    true
}

/// PodTopologySpread for ScheduleAnyway constraints (or the defaults):
/// fewer matching pods in the node's domains is better, as
/// kube-scheduler's `scoreForCount` and `NormalizeScore` compute it.
pub(crate) fn spread(cyc: &Cycle<'_>, nodes: &[&NodeState], out: &mut [i64]) -> bool {
    let constraints = &cyc.pod.soft_spread;
    if constraints.is_empty() {
        return false;
    }
    let snap = cyc.snap;
    // Nodes missing a key are not scored (kube-scheduler's ignored nodes).
    for (s, n) in out.iter_mut().zip(nodes) {
        *s = if constraints.iter().all(|c| n.topo(c.key).is_some()) {
            0
        } else {
            -1
        };
    }
    let scored = out.iter().filter(|s| **s == 0).count();
    let mut state: Vec<(FxHashMap<Sym, u32>, f64)> = Vec::with_capacity(constraints.len());
    for (c, counts) in constraints.iter().zip(cyc.spread_counts_all(constraints)) {
        // Topology normalising weight ln(domains + 2). For the hostname key
        // the domains are the scored nodes; for others the eligible domains
        // in the cluster.
        let domains = if c.key == snap.wk.hostname {
            scored
        } else {
            if cyc.all_nodes_eligible(c, constraints) {
                snap.label_nodes.get(&c.key).map_or(0, |d| d.len())
            } else {
                cyc.eligible_domains(c, constraints).len()
            }
        };
        state.push((counts, ((domains + 2) as f64).ln()));
    }
    let (mut min, mut max) = (i64::MAX, 0i64);
    for (s, n) in out.iter_mut().zip(nodes) {
        if *s < 0 {
            continue;
        }
        let mut raw = 0.0;
        for (c, (counts, weight)) in constraints.iter().zip(&state) {
            let count = n
                .topo(c.key)
                .and_then(|v| counts.get(&v))
                .copied()
                .unwrap_or(0);
            raw += f64::from(count) * weight + (c.max_skew - 1) as f64;
        }
        // raw >= 0: adding ½ and truncating rounds it (without libm).
        *s = (raw + 0.5) as i64;
        min = min.min(*s);
        max = max.max(*s);
    }
    for s in out.iter_mut() {
        *s = if *s < 0 {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
    true
}

/// InterPodAffinity: the pod's preferred terms towards existing pods, and
/// existing pods' terms towards the pod (required affinity with the hard
/// pod affinity weight, preferred affinity and anti-affinity), summed per
/// topology pair and scaled between the lowest and highest node.
pub(crate) fn inter_pod(
    cyc: &Cycle<'_>,
    hard_weight: i64,
    nodes: &[&NodeState],
    out: &mut [i64],
) -> bool {
    let snap = cyc.snap;
    let pod = cyc.pod;
    let mut pairs: FxHashMap<(Sym, Sym), i64> = FxHashMap::default();
    for (sign, terms) in [
        (1, &pod.preferred_affinity),
        (-1, &pod.preferred_anti_affinity),
    ] {
        for (w, t) in terms.iter() {
            snap.for_each_matching(&t.namespaces, &t.selector, |p| {
                if let Some(v) = snap.nodes[p.node as usize].topo(t.topology_key) {
                    *pairs.entry((t.topology_key, v)).or_insert(0) += sign * w;
                }
            });
        }
    }
    for &g in &snap.score_groups {
        let group = &snap.groups[g as usize];
        if group.total == 0 || !group.term.matches_pod(pod.ns, &pod.labels, &snap.strings) {
            continue;
        }
        let w = match group.kind {
            GroupKind::RequiredAffinity => hard_weight,
            GroupKind::PreferredAffinity => group.weight,
            GroupKind::PreferredAnti => -group.weight,
            GroupKind::RequiredAnti => 0,
        };
        for (&v, &c) in &group.counts {
            *pairs.entry((group.term.topology_key, v)).or_insert(0) += w * i64::from(c);
        }
    }
    if pairs.is_empty() {
        return false;
    }
    let mut keys: Vec<Sym> = pairs.keys().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for (s, n) in out.iter_mut().zip(nodes) {
        *s = keys
            .iter()
            .filter_map(|&k| n.topo(k).and_then(|v| pairs.get(&(k, v))))
            .sum();
        min = min.min(*s);
        max = max.max(*s);
    }
    let diff = max.saturating_sub(min);
    for s in out.iter_mut() {
        *s = if diff > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
    true
}
