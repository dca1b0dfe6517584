//! Filters: whether one node can take the pod, in kube-scheduler's plugin
//! order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, then
//! skiff's runtime check, NodeResourcesFit, PodTopologySpread,
//! InterPodAffinity). The first failing plugin decides a node's reason(s).
//!
//! [`Cycle`] holds what kube-scheduler's PreFilter computes once per pod:
//! affinity and anti-affinity counts per topology pair, the forbidden pairs
//! of existing pods' anti-affinity, and spread counts per domain.

use std::fmt;
use std::sync::Arc;

use crate::compiled::{CompiledPod, DomainKey, NodeTaint, NsSet, RuntimeReq, Spread, tolerated};
use crate::intern::{FxHashMap, Sym};
use crate::model::TaintEffect;
use crate::snapshot::{NodeState, Snapshot};

/// Why a node cannot take a pod, with Kubernetes' wording.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// NodeUnschedulable.
    Unschedulable,
    /// NodeName.
    NodeName,
    /// TaintToleration: a NoSchedule / NoExecute taint the pod does not
    /// tolerate.
    UntoleratedTaint { key: Arc<str>, value: Arc<str> },
    /// NodeAffinity: node selector or required node affinity.
    NodeAffinity,
    /// Runtime compatibility: the node lacks the pod's runtime label
    /// (`"wasm"` or `"oci"`).
    RuntimeUnsupported(&'static str),
    /// Runtime compatibility: the node's os/arch is none of the image's.
    ImagePlatform,
    /// NodeResourcesFit: the node is at its pod count.
    TooManyPods,
    /// NodeResourcesFit: not enough of this resource left.
    Insufficient(Arc<str>),
    /// InterPodAffinity: required affinity.
    PodAffinity,
    /// InterPodAffinity: the pod's required anti-affinity.
    PodAntiAffinity,
    /// InterPodAffinity: an existing pod's required anti-affinity.
    ExistingPodsAntiAffinity,
    /// PodTopologySpread: the node lacks a topology key.
    TopologySpreadMissingLabel,
    /// PodTopologySpread: placing here would exceed maxSkew.
    TopologySpread,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NodeName => f.write_str("node(s) didn't match the requested node name"),
            Reason::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::RuntimeUnsupported(rt) => {
                write!(f, "node(s) didn't support the pod's runtime ({rt})")
            }
            Reason::ImagePlatform => f.write_str("node(s) didn't match the image's platforms"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingPodsAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Reason::TopologySpreadMissingLabel => f.write_str(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ),
            Reason::TopologySpread => {
                f.write_str("node(s) didn't match pod topology spread constraints")
            }
        }
    }
}

/// A node's failure as the hot loop records it: small and `Copy`; turned
/// into [`Reason`]s only when a pod fits nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    Unschedulable,
    NodeName,
    /// Index into the node's taints.
    Taint(u16),
    NodeAffinity,
    Runtime,
    Platform,
    /// Which resources are short; `scalar` is a bit set over the pod's
    /// extended resource requests.
    Resources {
        pods: bool,
        cpu: bool,
        memory: bool,
        scalar: u32,
    },
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
    SpreadMissingLabel,
    Spread,
}

impl Fail {
    /// Whether evicting pods could make the node fit (kube-scheduler's
    /// `Unschedulable` as opposed to `UnschedulableAndUnresolvable`).
    pub(crate) fn resolvable(self) -> bool {
        matches!(
            self,
            Fail::Resources { .. }
                | Fail::PodAntiAffinity
                | Fail::ExistingAntiAffinity
                | Fail::Spread
        )
    }

    pub(crate) fn reasons(
        self,
        node: &NodeState,
        pod: &CompiledPod,
        snap: &Snapshot,
        out: &mut Vec<Reason>,
    ) {
        let s = &snap.strings;
        out.push(match self {
            Fail::Unschedulable => Reason::Unschedulable,
            Fail::NodeName => Reason::NodeName,
            Fail::Taint(i) => {
                let t = &node.taints[i as usize];
                Reason::UntoleratedTaint {
                    key: s.resolve(t.key).clone(),
                    value: s.resolve(t.value).clone(),
                }
            }
            Fail::NodeAffinity => Reason::NodeAffinity,
            Fail::Runtime => Reason::RuntimeUnsupported(match pod.runtime {
                RuntimeReq::Wasm => "wasm",
                RuntimeReq::Oci(_) => "oci",
            }),
            Fail::Platform => Reason::ImagePlatform,
            Fail::Resources {
                pods,
                cpu,
                memory,
                scalar,
            } => {
                if pods {
                    out.push(Reason::TooManyPods);
                }
                if cpu {
                    out.push(Reason::Insufficient(Arc::from("cpu")));
                }
                if memory {
                    out.push(Reason::Insufficient(Arc::from("memory")));
                }
                for (i, (r, _)) in pod.scalar.iter().enumerate() {
                    if scalar & (1 << i.min(31)) != 0 {
                        out.push(Reason::Insufficient(s.resolve(*r).clone()));
                    }
                }
                return;
            }
            Fail::PodAffinity => Reason::PodAffinity,
            Fail::PodAntiAffinity => Reason::PodAntiAffinity,
            Fail::ExistingAntiAffinity => Reason::ExistingPodsAntiAffinity,
            Fail::SpreadMissingLabel => Reason::TopologySpreadMissingLabel,
            Fail::Spread => Reason::TopologySpread,
        });
    }
}

/// Spread counts of one DoNotSchedule constraint.
#[derive(Debug)]
struct SpreadState {
    counts: FxHashMap<Sym, u32>,
    min: i64,
    self_match: i64,
}

/// Per-pod state of one scheduling cycle, computed once from the snapshot.
#[derive(Debug)]
pub(crate) struct Cycle<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) pod: &'a CompiledPod,
    affinity_counts: FxHashMap<(Sym, Sym), u32>,
    affinity_self: bool,
    anti_counts: FxHashMap<(Sym, Sym), u32>,
    existing_anti: FxHashMap<(Sym, Sym), u32>,
    spread: Vec<SpreadState>,
    unschedulable_taint: NodeTaint,
}

impl<'a> Cycle<'a> {
    pub(crate) fn new(snap: &'a Snapshot, pod: &'a CompiledPod) -> Self {
        let strings = &snap.strings;
        let mut affinity_counts = FxHashMap::default();
        if let Some((first, rest)) = pod.affinity.split_first() {
            // As kube-scheduler: an existing pod counts only if it matches
            // every required affinity term.
            snap.for_each_matching(&first.namespaces, &first.selector, |p| {
                if rest.iter().all(|t| t.matches_pod(p.ns, &p.labels, strings)) {
                    let node = &snap.nodes[p.node as usize];
                    for t in pod.affinity.iter() {
                        if let Some(v) = node.topo(t.topology_key) {
                            *affinity_counts.entry((t.topology_key, v)).or_insert(0) += 1;
                        }
                    }
                }
            });
        }
        let mut anti_counts = FxHashMap::default();
        for t in pod.anti_affinity.iter() {
            snap.for_each_matching(&t.namespaces, &t.selector, |p| {
                if let Some(v) = snap.nodes[p.node as usize].topo(t.topology_key) {
                    *anti_counts.entry((t.topology_key, v)).or_insert(0) += 1;
                }
            });
        }
        let mut existing_anti = FxHashMap::default();
        for &g in &snap.anti_groups {
            let group = &snap.groups[g as usize];
            if group.total > 0 && group.term.matches_pod(pod.ns, &pod.labels, strings) {
                for (&v, &c) in &group.counts {
                    *existing_anti
                        .entry((group.term.topology_key, v))
                        .or_insert(0) += c;
                }
            }
        }
        let mut cycle = Cycle {
            snap,
            pod,
            affinity_self: pod.matches_all(&pod.affinity, strings),
            affinity_counts,
            anti_counts,
            existing_anti,
            spread: Vec::new(),
            unschedulable_taint: NodeTaint {
                key: snap.wk.unschedulable_taint,
                value: snap.wk.empty,
                effect: TaintEffect::NoSchedule,
            },
        };
        cycle.spread = pod
            .hard_spread
            .iter()
            .map(|c| cycle.hard_spread_state(c))
            .collect();
        cycle
    }

    /// Whether a node counts as a domain of constraint `c` (node inclusion
    /// policies, and every constraint's key present).
    pub(crate) fn spread_eligible(&self, c: &Spread, all: &[Spread], node: &NodeState) -> bool {
        all.iter().all(|o| node.topo(o.key).is_some())
            && (!c.honor_affinity
                || self
                    .pod
                    .matches_node_affinity(&node.labels, node.name_sym, &self.snap.strings))
            && (!c.honor_taints || self.pod.tolerates_hard_taints(&node.taints))
    }

    /// Matching pods per domain of `c`, counted on eligible nodes only.
    pub(crate) fn spread_counts(&self, c: &Spread, all: &[Spread]) -> FxHashMap<Sym, u32> {
        self.spread_counts_shared(std::slice::from_ref(c), all)
            .pop()
            .unwrap_or_default()
    }

    /// [`Cycle::spread_counts`] for each of `constraints`; those with the
    /// same selector and policies (the default hostname and zone pair)
    /// share one pass over the matching pods.
    pub(crate) fn spread_counts_all(&self, constraints: &[Spread]) -> Vec<FxHashMap<Sym, u32>> {
        let shared = constraints.windows(2).all(|w| {
            w[0].selector == w[1].selector
                && w[0].honor_affinity == w[1].honor_affinity
                && w[0].honor_taints == w[1].honor_taints
        });
        if shared {
            self.spread_counts_shared(constraints, constraints)
        } else {
            constraints
                .iter()
                .map(|c| self.spread_counts(c, constraints))
                .collect()
        }
    }

    /// Counts for `group`, constraints with one selector and one set of
    /// inclusion policies; `all` are the constraints whose keys every
    /// counted node must have.
    fn spread_counts_shared(&self, group: &[Spread], all: &[Spread]) -> Vec<FxHashMap<Sym, u32>> {
        let snap = self.snap;
        let mut counts: Vec<FxHashMap<Sym, u32>> =
            group.iter().map(|_| FxHashMap::default()).collect();
        let Some(first) = group.first() else {
            return counts;
        };
        snap.for_each_matching(&NsSet::One(self.pod.ns), &first.selector, |p| {
            let node = &snap.nodes[p.node as usize];
            if self.spread_eligible(first, all, node) {
                for (c, m) in group.iter().zip(counts.iter_mut()) {
                    if let Some(v) = node.topo(c.key) {
                        *m.entry(v).or_insert(0) += 1;
                    }
                }
            }
        });
        counts
    }

    /// Whether every node with `c`'s key is eligible, so domains can be
    /// read off the label index without checking nodes.
    pub(crate) fn all_nodes_eligible(&self, c: &Spread, all: &[Spread]) -> bool {
        all.len() == 1 && !(c.honor_affinity && self.pod.has_node_constraints()) && !c.honor_taints
    }

    /// The domains of `c` that hold at least one eligible node, sorted.
    pub(crate) fn eligible_domains(&self, c: &Spread, all: &[Spread]) -> std::sync::Arc<[Sym]> {
        let snap = self.snap;
        snap.domains
            .get_or_insert(DomainKey::new(self.pod, c, all), || {
                let mut out: Vec<Sym> = snap
                    .label_nodes
                    .get(&c.key)
                    .into_iter()
                    .flatten()
                    .filter(|(_, nodes)| {
                        nodes
                            .iter()
                            .any(|&i| self.spread_eligible(c, all, &snap.nodes[i as usize]))
                    })
                    .map(|(v, _)| *v)
                    .collect();
                out.sort_unstable();
                out.into()
            })
    }

    fn hard_spread_state(&self, c: &Spread) -> SpreadState {
        let all = &self.pod.hard_spread;
        let counts = self.spread_counts(c, all);
        let need = c.min_domains.unwrap_or(1);
        // Whether some eligible domain holds no matching pod, and how many
        // eligible domains there are.
        let (has_empty, domain_count) = if self.all_nodes_eligible(c, all) {
            let n = self.snap.label_nodes.get(&c.key).map_or(0, |d| d.len());
            (n > counts.len(), n)
        } else {
            let domains = self.eligible_domains(c, all);
            (
                domains.iter().any(|v| !counts.contains_key(v)),
                domains.len(),
            )
        };
        let min = if has_empty || domain_count < need {
            0
        } else {
            counts.values().copied().min().map_or(0, i64::from)
        };
        let self_match = i64::from(c.selector.matches(&self.pod.labels, &self.snap.strings));
        SpreadState {
            counts,
            min,
            self_match,
        }
    }

    /// Runs every filter on `node`; the first failing plugin's reason.
    #[inline]
    pub(crate) fn filter(&self, node: &NodeState) -> Result<(), Fail> {
        let pod = self.pod;
        let strings = &self.snap.strings;

        if node.unschedulable && !tolerated(&pod.tolerations, &self.unschedulable_taint) {
            return Err(Fail::Unschedulable);
        }
        if pod.node_name.is_some_and(|n| n != node.name_sym) {
            return Err(Fail::NodeName);
        }
        for (i, t) in node.taints.iter().enumerate() {
            if t.effect != TaintEffect::PreferNoSchedule && !tolerated(&pod.tolerations, t) {
                return Err(Fail::Taint(i as u16));
            }
        }
        if !pod.matches_node_affinity(&node.labels, node.name_sym, strings) {
            return Err(Fail::NodeAffinity);
        }
        match &pod.runtime {
            RuntimeReq::Wasm if !node.wasm => return Err(Fail::Runtime),
            RuntimeReq::Wasm => {}
            RuntimeReq::Oci(_) if !node.oci => return Err(Fail::Runtime),
            RuntimeReq::Oci(platforms) => {
                if !platforms.is_empty()
                    && !platforms
                        .iter()
                        .any(|&(os, arch)| node.os == Some(os) && node.arch == Some(arch))
                {
                    return Err(Fail::Platform);
                }
            }
        }
        self.fits_resources(node)?;
        self.fits_spread(node)?;
        self.fits_inter_pod(node)
    }

    #[inline]
    fn fits_resources(&self, node: &NodeState) -> Result<(), Fail> {
        let pod = self.pod;
        let pods = node.pods.len() as i64 + 1 > node.max_pods;
        let cpu = pod.cpu > 0 && pod.cpu > node.alloc_cpu - node.req_cpu;
        let memory = pod.memory > 0 && pod.memory > node.alloc_memory - node.req_memory;
        let mut scalar = 0u32;
        for (i, &(r, amount)) in pod.scalar.iter().enumerate() {
            if amount > 0 && amount > node.allocatable(r) - node.requested(r) {
                scalar |= 1 << i.min(31);
            }
        }
        if pods || cpu || memory || scalar != 0 {
            return Err(Fail::Resources {
                pods,
                cpu,
                memory,
                scalar,
            });
        }
        Ok(())
    }

    #[inline]
    fn fits_spread(&self, node: &NodeState) -> Result<(), Fail> {
        let constraints = &self.pod.hard_spread;
        if constraints.is_empty() {
            return Ok(());
        }
        // kube-scheduler checks every key before any skew.
        if constraints.iter().any(|c| node.topo(c.key).is_none()) {
            return Err(Fail::SpreadMissingLabel);
        }
        for (c, st) in constraints.iter().zip(&self.spread) {
            let count = node
                .topo(c.key)
                .and_then(|v| st.counts.get(&v))
                .copied()
                .map_or(0, i64::from);
            if count + st.self_match - st.min > c.max_skew {
                return Err(Fail::Spread);
            }
        }
        Ok(())
    }

    #[inline]
    fn fits_inter_pod(&self, node: &NodeState) -> Result<(), Fail> {
        let pod = self.pod;
        if !pod.affinity.is_empty() {
            let mut pods_exist = true;
            for t in pod.affinity.iter() {
                let Some(v) = node.topo(t.topology_key) else {
                    return Err(Fail::PodAffinity);
                };
                if !self.affinity_counts.contains_key(&(t.topology_key, v)) {
                    pods_exist = false;
                }
            }
            // The first pod of a group with affinity to itself may go
            // anywhere that has the topology labels.
            let first_of_group = self.affinity_counts.is_empty() && self.affinity_self;
            if !pods_exist && !first_of_group {
                return Err(Fail::PodAffinity);
            }
        }
        if !self.anti_counts.is_empty() {
            for t in pod.anti_affinity.iter() {
                if let Some(v) = node.topo(t.topology_key)
                    && self.anti_counts.contains_key(&(t.topology_key, v))
                {
                    return Err(Fail::PodAntiAffinity);
                }
            }
        }
        if !self.existing_anti.is_empty()
            && node
                .labels
                .iter()
                .any(|kv| self.existing_anti.contains_key(&kv))
        {
            return Err(Fail::ExistingAntiAffinity);
        }
        Ok(())
    }
}
