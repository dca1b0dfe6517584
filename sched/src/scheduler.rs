//! The entry point: [`Scheduler::schedule`] picks a node for one pod,
//! [`Scheduler::schedule_batch`] places many, updating the snapshot.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::compiled::{CompiledPod, RuntimeReq};
use crate::filter::{Cycle, Reason};
use crate::intern::{Lookup, mix};
use crate::model::PodInfo;
use crate::score::{self, ScoringStrategy, Weights};
use crate::snapshot::{NodeState, Snapshot};

/// Below this many nodes every node is checked (kube-scheduler's
/// `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// Scheduler settings. The defaults are kube-scheduler's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Stop filtering once this percentage of the nodes (at least 100) has
    /// been found feasible. `None` (or `Some(0)`) is kube-scheduler's
    /// adaptive value, `max(5, 50 - nodes/125)`; `Some(100)` checks every
    /// node, which makes results independent of the rotating start.
    pub percentage_of_nodes_to_score: Option<u32>,
    pub scoring_strategy: ScoringStrategy,
    pub weights: Weights,
    /// Apply kube-scheduler's default spread constraints (hostname maxSkew
    /// 3, zone maxSkew 5, ScheduleAnyway) to pods that have none. Simplified:
    /// kube-scheduler selects the pods of the same Services / ReplicaSets /
    /// StatefulSets; the snapshot holds no such objects, so the selector is
    /// "every label of the incoming pod", in its namespace (pods without
    /// labels are not spread).
    pub default_spreading: bool,
    /// Score weight of existing pods' required affinity towards the pod.
    pub hard_pod_affinity_weight: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            percentage_of_nodes_to_score: None,
            scoring_strategy: ScoringStrategy::LeastAllocated,
            weights: Weights::default(),
            default_spreading: true,
            hard_pod_affinity_weight: 1,
        }
    }
}

impl Config {
    /// Checks every node: deterministic, for tests and small clusters.
    pub fn exhaustive() -> Self {
        Config {
            percentage_of_nodes_to_score: Some(100),
            ..Config::default()
        }
    }
}

/// Where a pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// The weighted sum of the plugin scores on that node.
    pub score: i64,
    /// Nodes run through the filters.
    pub evaluated: usize,
    /// Of those, how many could take the pod.
    pub feasible: usize,
}

/// A feasible node's score, as [`Scheduler::score_nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScore {
    pub node: String,
    /// The weighted sum.
    pub total: i64,
    /// Each plugin's normalised score (0–100) before weighting.
    pub plugins: Vec<(&'static str, i64)>,
}

/// One node's reason for refusing a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: Arc<str>,
    pub reason: Reason,
}

/// No node can take the pod. `Display` is kube-scheduler's event message,
/// e.g. `0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had
/// untolerated taint {node.kubernetes.io/not-ready: }.`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// `namespace/name`.
    pub pod: String,
    pub num_nodes: usize,
    /// Every node's reasons (a node short of cpu and memory has two).
    pub failures: Vec<NodeFailure>,
}

impl FitError {
    /// Reasons per node, for events and debugging.
    pub fn node_reasons(&self) -> BTreeMap<&str, Vec<&Reason>> {
        let mut out: BTreeMap<&str, Vec<&Reason>> = BTreeMap::new();
        for f in &self.failures {
            out.entry(&f.node).or_default().push(&f.reason);
        }
        out
    }

    /// How many nodes gave each reason.
    pub fn histogram(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for f in &self.failures {
            *out.entry(f.reason.to_string()).or_insert(0) += 1;
        }
        out
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        // As kube-scheduler: "<count> <reason>" strings, sorted as strings.
        let mut parts: Vec<String> = self
            .histogram()
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.num_nodes,
            parts.join(", ")
        )
    }
}

impl std::error::Error for FitError {}

/// The nodes a pod can possibly go to, found from the label index.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Candidates<'s> {
    All(usize),
    List(&'s [u32]),
    One(u32),
}

impl Candidates<'_> {
    fn len(&self) -> usize {
        match self {
            Candidates::All(n) => *n,
            Candidates::List(l) => l.len(),
            Candidates::One(_) => 1,
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Candidates::All(_) => i as u32,
            Candidates::List(l) => l[i],
            Candidates::One(n) => *n,
        }
    }
}

/// A pod scheduler over [`Snapshot`]s. Holds only settings and the
/// rotating start of the feasible-node search, so one instance can serve
/// any number of snapshots (and threads).
#[derive(Debug)]
pub struct Scheduler {
    pub(crate) config: Config,
    next_start: AtomicUsize,
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Scheduler {
            config,
            next_start: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many feasible nodes to find before scoring, out of `nodes`
    /// (kube-scheduler's `numFeasibleNodesToFind`).
    pub fn num_feasible_nodes_to_find(&self, nodes: usize) -> usize {
        let percentage = match self.config.percentage_of_nodes_to_score {
            Some(p) if p > 0 => (p as usize).min(100),
            _ => 50usize
                .saturating_sub(nodes / 125)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE),
        };
        if nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
            return nodes;
        }
        (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    pub(crate) fn compile(&self, pod: &PodInfo, snap: &Snapshot) -> CompiledPod {
        CompiledPod::build(
            pod,
            &mut Lookup::new(&snap.strings),
            &snap.wk,
            self.config.default_spreading,
        )
    }

    /// Picks a node for `pod`, or says why none fits.
    pub fn schedule(&self, pod: &PodInfo, snap: &Snapshot) -> Result<Placement, FitError> {
        let cp = self.compile(pod, snap);
        self.schedule_compiled(pod, &cp, snap).map(|(_, p)| p)
    }

    /// Places `pods` in order of priority (highest first, then as given),
    /// adding each placement to `snap` before the next pod is scheduled.
    /// Results are in the order of `pods`.
    pub fn schedule_batch(
        &self,
        pods: &[PodInfo],
        snap: &mut Snapshot,
    ) -> Vec<Result<Placement, FitError>> {
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_by_key(|&i| Reverse(pods[i].priority));
        let mut results: Vec<Option<Result<Placement, FitError>>> =
            (0..pods.len()).map(|_| None).collect();
        for i in order {
            let pod = &pods[i];
            let cp = self.compile(pod, snap);
            let result = self.schedule_compiled(pod, &cp, snap);
            drop(cp);
            results[i] = Some(result.map(|(node, placement)| {
                snap.add_pod_at(node, pod);
                placement
            }));
        }
        results.into_iter().flatten().collect()
    }

    fn candidates<'s>(&self, cp: &CompiledPod, snap: &'s Snapshot) -> Candidates<'s> {
        let all = snap.nodes.len();
        if let Some(name) = cp.node_name {
            return match snap.node_index(snap.strings.resolve(name)) {
                Some(i) if snap.nodes[i as usize].name_sym == name => Candidates::One(i),
                _ => Candidates::List(&[]),
            };
        }
        let wk = &snap.wk;
        let runtime_label = match cp.runtime {
            RuntimeReq::Wasm => wk.runtime_wasm,
            RuntimeReq::Oci(_) => wk.runtime_oci,
        };
        let mut best: &[u32] = snap.nodes_with(runtime_label, wk.true_);
        for &(k, v) in cp.node_selector.iter() {
            let list = snap.nodes_with(k, v);
            if list.len() < best.len() {
                best = list;
            }
        }
        if best.len() < all {
            Candidates::List(best)
        } else {
            Candidates::All(all)
        }
    }

    /// Filters (from the rotating start, until enough feasible nodes are
    /// found), scores and picks. Returns the node's index too.
    pub(crate) fn schedule_compiled(
        &self,
        pod: &PodInfo,
        cp: &CompiledPod,
        snap: &Snapshot,
    ) -> Result<(u32, Placement), FitError> {
        let cycle = Cycle::new(snap, cp);
        let candidates = self.candidates(cp, snap);
        let len = candidates.len();
        let to_find = self.num_feasible_nodes_to_find(snap.nodes.len());
        let start = if len == 0 {
            0
        } else {
            self.next_start.load(Ordering::Relaxed) % len
        };
        let mut feasible: Vec<u32> = Vec::with_capacity(to_find.min(len));
        let mut processed = 0;
        for k in 0..len {
            let mut i = start + k;
            if i >= len {
                i -= len;
            }
            let idx = candidates.get(i);
            processed += 1;
            if cycle.filter(&snap.nodes[idx as usize]).is_ok() {
                feasible.push(idx);
                if feasible.len() >= to_find {
                    break;
                }
            }
        }
        self.next_start.store(start + processed, Ordering::Relaxed);

        if feasible.is_empty() {
            return Err(self.diagnose(pod, &cycle));
        }
        let (node, score) = self.pick(&cycle, &feasible);
        let placement = Placement {
            node: snap.nodes[node as usize].name.to_string(),
            score,
            evaluated: processed,
            feasible: feasible.len(),
        };
        Ok((node, placement))
    }

    /// Scores the feasible nodes and picks the best; ties go to the node
    /// whose name hashes highest with the pod's seed, so equal nodes share
    /// the load but a rerun picks the same node.
    fn pick(&self, cycle: &Cycle<'_>, feasible: &[u32]) -> (u32, i64) {
        let nodes: Vec<&NodeState> = feasible
            .iter()
            .map(|&i| &cycle.snap.nodes[i as usize])
            .collect();
        let total = self.weighted_scores(cycle, &nodes, None);
        let seed = cycle.pod.seed;
        let best = (0..nodes.len())
            .max_by_key(|&i| (total[i], mix(seed ^ nodes[i].name_hash)))
            .unwrap_or(0);
        (feasible[best], total[best])
    }

    /// Each node's weighted total; with `detail`, each plugin's normalised
    /// (unweighted) scores too.
    fn weighted_scores(
        &self,
        cycle: &Cycle<'_>,
        nodes: &[&NodeState],
        mut detail: Option<&mut Vec<(&'static str, Vec<i64>)>>,
    ) -> Vec<i64> {
        let w = &self.config.weights;
        let mut total = vec![0i64; nodes.len()];
        let mut raw = vec![0i64; nodes.len()];
        let mut add = |name: &'static str, weight: i64, raw: &[i64]| {
            for (t, s) in total.iter_mut().zip(raw) {
                *t += weight * s;
            }
            if let Some(d) = detail.as_deref_mut() {
                d.push((name, raw.to_vec()));
            }
        };
        for (s, n) in raw.iter_mut().zip(nodes) {
            *s = score::fit(self.config.scoring_strategy, cycle, n);
        }
        add("NodeResourcesFit", w.node_resources_fit, &raw);
        for (s, n) in raw.iter_mut().zip(nodes) {
            *s = score::balanced(cycle, n);
        }
        add(
            "NodeResourcesBalancedAllocation",
            w.balanced_allocation,
            &raw,
        );
        score::taints(cycle, nodes, &mut raw);
        add("TaintToleration", w.taint_toleration, &raw);
        if score::node_affinity(cycle, nodes, &mut raw) {
            add("NodeAffinity", w.node_affinity, &raw);
        }
        if score::spread(cycle, nodes, &mut raw) {
            add("PodTopologySpread", w.pod_topology_spread, &raw);
        }
        if score::inter_pod(cycle, self.config.hard_pod_affinity_weight, nodes, &mut raw) {
            add("InterPodAffinity", w.inter_pod_affinity, &raw);
        }
        total
    }

    /// Every feasible node's score, best first (ties in the order
    /// [`Scheduler::schedule`] breaks them), with each plugin's normalised
    /// score before weighting. Filters every node, whatever
    /// `percentage_of_nodes_to_score` says. For tests, golden files and
    /// explaining a decision.
    pub fn score_nodes(&self, pod: &PodInfo, snap: &Snapshot) -> Result<Vec<NodeScore>, FitError> {
        let cp = self.compile(pod, snap);
        let cycle = Cycle::new(snap, &cp);
        let feasible: Vec<&NodeState> = snap
            .nodes
            .iter()
            .filter(|n| cycle.filter(n).is_ok())
            .collect();
        if feasible.is_empty() {
            return Err(self.diagnose(pod, &cycle));
        }
        let mut detail = Vec::new();
        let total = self.weighted_scores(&cycle, &feasible, Some(&mut detail));
        let mut out: Vec<(u64, NodeScore)> = feasible
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let plugins = detail
                    .iter()
                    .map(|(name, scores)| (*name, scores[i]))
                    .collect();
                let tie = mix(cp.seed ^ n.name_hash);
                (
                    tie,
                    NodeScore {
                        node: n.name.to_string(),
                        total: total[i],
                        plugins,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(tie, s)| Reverse((s.total, *tie)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Every node's reasons, for a pod that fits nowhere: all nodes are
    /// filtered again, so the search above need not record failures (it
    /// may also have skipped nodes outside its candidate list).
    fn diagnose(&self, pod: &PodInfo, cycle: &Cycle<'_>) -> FitError {
        let snap = cycle.snap;
        let mut failures = Vec::with_capacity(snap.nodes.len());
        let mut reasons = Vec::new();
        for node in &snap.nodes {
            if let Err(f) = cycle.filter(node) {
                f.reasons(node, cycle.pod, snap, &mut reasons);
                failures.extend(reasons.drain(..).map(|reason| NodeFailure {
                    node: node.name.clone(),
                    reason,
                }));
            }
        }
        FitError {
            pod: format!("{}/{}", pod.namespace, pod.name),
            num_nodes: snap.nodes.len(),
            failures,
        }
    }
}
