//! The cluster as the scheduler sees it: nodes, the pods placed on them,
//! per-node totals and the indexes that keep inter-pod affinity and
//! topology spread from scanning every pod.
//!
//! Indexes kept up to date by [`Snapshot::add_pod`] / [`Snapshot::remove_pod`]:
//! - nodes by label (key → value → nodes): topology domains, and candidate
//!   lists for pods with a node selector or a runtime label;
//! - pods by label pair and by namespace: the pods a selector matches are
//!   found from its most selective `In` requirement;
//! - existing pods' affinity terms grouped by identical term, with counts
//!   per topology value: an incoming pod checks each distinct term once, not
//!   each pod that carries it.

use std::sync::{Arc, Mutex};

use crate::compiled::{
    DomainKey, HOSTNAME_KEY, Labels, NodeTaint, NsSet, Selector, Term, WellKnown, ZONE_KEY,
};
use crate::intern::{FxHashMap, Interner, Sym, Symbols, hash_str};
use crate::model::{NodeInfo, PodInfo, Readiness, TAINT_NOT_READY, TAINT_UNREACHABLE, TaintEffect};

/// Changes the snapshot refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {0:?} is already in the snapshot")]
    DuplicateNode(String),
    #[error("node {0:?} is not in the snapshot")]
    UnknownNode(String),
}

/// Totals of one node, as [`Snapshot::node_usage`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    pub allocatable_cpu_millis: i64,
    pub allocatable_memory: i64,
    pub max_pods: i64,
    pub requested_cpu_millis: i64,
    pub requested_memory: i64,
    pub pods: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) name: Arc<str>,
    pub(crate) name_sym: Sym,
    pub(crate) name_hash: u64,
    pub(crate) labels: Labels,
    /// The hostname and zone labels, inline: topology lookups on the hot
    /// path then stay in this struct's cache lines.
    hostname: Option<Sym>,
    zone: Option<Sym>,
    /// Including the not-ready / unreachable taint of a node that is not
    /// Ready.
    pub(crate) taints: Box<[NodeTaint]>,
    pub(crate) has_prefer_taints: bool,
    pub(crate) unschedulable: bool,
    pub(crate) wasm: bool,
    pub(crate) oci: bool,
    pub(crate) os: Option<Sym>,
    pub(crate) arch: Option<Sym>,
    pub(crate) alloc_cpu: i64,
    pub(crate) alloc_memory: i64,
    pub(crate) max_pods: i64,
    pub(crate) alloc_scalar: Box<[(Sym, i64)]>,
    pub(crate) req_cpu: i64,
    pub(crate) req_memory: i64,
    pub(crate) req_scalar: Vec<(Sym, i64)>,
    pub(crate) score_cpu: i64,
    pub(crate) score_memory: i64,
    pub(crate) pods: Vec<u32>,
}

impl NodeState {
    /// The node's value for a topology (or any label) key.
    #[inline]
    pub(crate) fn topo(&self, key: Sym) -> Option<Sym> {
        match key {
            HOSTNAME_KEY => self.hostname,
            ZONE_KEY => self.zone,
            _ => self.labels.get(key),
        }
    }

    pub(crate) fn allocatable(&self, r: Sym) -> i64 {
        self.alloc_scalar
            .iter()
            .find(|(k, _)| *k == r)
            .map_or(0, |(_, v)| *v)
    }

    pub(crate) fn requested(&self, r: Sym) -> i64 {
        self.req_scalar
            .iter()
            .find(|(k, _)| *k == r)
            .map_or(0, |(_, v)| *v)
    }
}

/// A pod placed on a node.
#[derive(Debug, Clone)]
pub(crate) struct PlacedPod {
    pub(crate) key: Box<str>,
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) ns: Sym,
    pub(crate) node: u32,
    pub(crate) labels: Labels,
    pub(crate) priority: i32,
    pub(crate) cpu: i64,
    pub(crate) memory: i64,
    pub(crate) scalar: Box<[(Sym, i64)]>,
    pub(crate) score_cpu: i64,
    pub(crate) score_memory: i64,
    /// The term groups this pod counts in.
    pub(crate) groups: Box<[u32]>,
}

/// What an existing pod's term asks of the pods that come after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum GroupKind {
    /// Required anti-affinity: a filter on incoming pods.
    RequiredAnti,
    /// Required affinity: scored with the hard pod affinity weight.
    RequiredAffinity,
    PreferredAffinity,
    PreferredAnti,
}

/// Existing pods that carry the same term, counted per value of its
/// topology key.
#[derive(Debug, Clone)]
pub(crate) struct TermGroup {
    pub(crate) kind: GroupKind,
    pub(crate) weight: i64,
    pub(crate) term: Term,
    pub(crate) counts: FxHashMap<Sym, u32>,
    pub(crate) total: u32,
}

/// The cluster as the scheduler sees it. Build it from nodes, add the pods
/// already bound, then schedule against it; [`crate::Scheduler::schedule_batch`]
/// adds each placement as it goes. Nodes are only added: when a node
/// changes, build a new snapshot (10,000 nodes take milliseconds).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) strings: Interner,
    pub(crate) wk: WellKnown,
    pub(crate) nodes: Vec<NodeState>,
    node_by_name: FxHashMap<Arc<str>, u32>,
    /// label key → value → nodes, in insertion order.
    pub(crate) label_nodes: FxHashMap<Sym, FxHashMap<Sym, Vec<u32>>>,
    pub(crate) pods: Vec<Option<PlacedPod>>,
    free: Vec<u32>,
    pod_by_key: FxHashMap<Box<str>, u32>,
    by_label: FxHashMap<(Sym, Sym), Vec<u32>>,
    by_ns: FxHashMap<Sym, Vec<u32>>,
    pub(crate) groups: Vec<TermGroup>,
    group_ids: FxHashMap<(GroupKind, i64, Term), u32>,
    pub(crate) anti_groups: Vec<u32>,
    pub(crate) score_groups: Vec<u32>,
    pub(crate) domains: DomainCache,
}

/// Eligible topology domains per [`DomainKey`]: finding them means looking
/// at every node of every domain, which kube-scheduler does for every pod;
/// here it is done once per distinct set of constraints until a node is
/// added.
#[derive(Debug, Default)]
pub(crate) struct DomainCache(Mutex<FxHashMap<DomainKey, Arc<[Sym]>>>);

impl Clone for DomainCache {
    fn clone(&self) -> Self {
        DomainCache(Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
}

impl DomainCache {
    pub(crate) fn get_or_insert(
        &self,
        key: Option<DomainKey>,
        compute: impl FnOnce() -> Arc<[Sym]>,
    ) -> Arc<[Sym]> {
        let Some(key) = key else { return compute() };
        if let Some(hit) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return hit.clone();
        }
        let value = compute();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value.clone());
        value
    }

    fn clear(&mut self) {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

fn pod_key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into()
}

impl Snapshot {
    pub fn new() -> Self {
        let mut strings = Interner::default();
        let wk = WellKnown::new(&mut strings);
        Snapshot {
            strings,
            wk,
            nodes: Vec::new(),
            node_by_name: FxHashMap::default(),
            label_nodes: FxHashMap::default(),
            pods: Vec::new(),
            free: Vec::new(),
            pod_by_key: FxHashMap::default(),
            by_label: FxHashMap::default(),
            by_ns: FxHashMap::default(),
            groups: Vec::new(),
            group_ids: FxHashMap::default(),
            anti_groups: Vec::new(),
            score_groups: Vec::new(),
            domains: DomainCache::default(),
        }
    }

    /// A snapshot of these nodes, with no pods.
    pub fn with_nodes(nodes: impl IntoIterator<Item = NodeInfo>) -> Result<Self, SnapshotError> {
        let mut s = Snapshot::new();
        for n in nodes {
            s.add_node(n)?;
        }
        Ok(s)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn pod_count(&self) -> usize {
        self.pod_by_key.len()
    }

    /// Adds a node. A node that is not Ready gets the taint the node
    /// lifecycle controller would give it (`node.kubernetes.io/not-ready`,
    /// or `unreachable` when readiness is Unknown, effect NoSchedule), so
    /// only pods tolerating it land there.
    pub fn add_node(&mut self, node: NodeInfo) -> Result<(), SnapshotError> {
        if self.node_by_name.contains_key(node.name.as_str()) {
            return Err(SnapshotError::DuplicateNode(node.name));
        }
        let idx = self.nodes.len() as u32;
        let s = &mut self.strings;
        let labels = Labels::build(&node.labels, s);
        let mut taints: Vec<NodeTaint> = node
            .taints
            .iter()
            .map(|t| NodeTaint {
                key: s.intern(&t.key),
                value: s.intern(&t.value),
                effect: t.effect,
            })
            .collect();
        let condition_taint = match node.readiness {
            Readiness::Ready => None,
            Readiness::NotReady => Some(TAINT_NOT_READY),
            Readiness::Unknown => Some(TAINT_UNREACHABLE),
        };
        if let Some(key) = condition_taint {
            let key = s.intern(key);
            if !taints.iter().any(|t| t.key == key) {
                taints.push(NodeTaint {
                    key,
                    value: self.wk.empty,
                    effect: TaintEffect::NoSchedule,
                });
            }
        }
        let name_sym = s.intern(&node.name);
        let name: Arc<str> = self.strings.resolve(name_sym).clone();
        let wk = self.wk;
        let state = NodeState {
            name_hash: hash_str(&name),
            name: name.clone(),
            name_sym,
            has_prefer_taints: taints
                .iter()
                .any(|t| t.effect == TaintEffect::PreferNoSchedule),
            taints: taints.into(),
            unschedulable: node.unschedulable,
            wasm: labels.get(wk.runtime_wasm) == Some(wk.true_),
            oci: labels.get(wk.runtime_oci) == Some(wk.true_),
            os: labels.get(wk.os),
            hostname: labels.get(HOSTNAME_KEY),
            zone: labels.get(ZONE_KEY),
            arch: labels.get(wk.arch),
            alloc_cpu: node.allocatable.cpu_millis,
            alloc_memory: node.allocatable.memory,
            max_pods: node.max_pods,
            alloc_scalar: node
                .allocatable
                .scalar
                .iter()
                .map(|(k, v)| (self.strings.intern(k), *v))
                .collect(),
            req_cpu: 0,
            req_memory: 0,
            req_scalar: Vec::new(),
            score_cpu: 0,
            score_memory: 0,
            pods: Vec::new(),
            labels,
        };
        for (k, v) in state.labels.iter() {
            self.label_nodes
                .entry(k)
                .or_default()
                .entry(v)
                .or_default()
                .push(idx);
        }
        self.nodes.push(state);
        self.node_by_name.insert(name, idx);
        self.domains.clear();
        Ok(())
    }

    pub(crate) fn node_index(&self, name: &str) -> Option<u32> {
        self.node_by_name.get(name).copied()
    }

    /// Requested and allocatable totals of a node.
    pub fn node_usage(&self, node: &str) -> Option<NodeUsage> {
        let n = &self.nodes[self.node_index(node)? as usize];
        Some(NodeUsage {
            allocatable_cpu_millis: n.alloc_cpu,
            allocatable_memory: n.alloc_memory,
            max_pods: n.max_pods,
            requested_cpu_millis: n.req_cpu,
            requested_memory: n.req_memory,
            pods: n.pods.len(),
        })
    }

    /// The node a pod is placed on.
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<&str> {
        let id = *self.pod_by_key.get(&pod_key(namespace, name))?;
        let p = self.pods[id as usize].as_ref()?;
        Some(&self.nodes[p.node as usize].name)
    }

    /// Places `pod` on `node`. A pod with the same namespace and name that is
    /// already placed is replaced (as an informer's update would).
    pub fn add_pod(&mut self, node: &str, pod: &PodInfo) -> Result<(), SnapshotError> {
        let idx = self
            .node_index(node)
            .ok_or_else(|| SnapshotError::UnknownNode(node.to_owned()))?;
        self.add_pod_at(idx, pod);
        Ok(())
    }

    /// Removes a pod; returns the node it was on.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> Option<String> {
        let id = *self.pod_by_key.get(&pod_key(namespace, name))?;
        let p = self.take(id);
        Some(self.nodes[p.node as usize].name.to_string())
    }

    pub(crate) fn add_pod_at(&mut self, node: u32, pod: &PodInfo) {
        let key = pod_key(&pod.namespace, &pod.name);
        if let Some(&old) = self.pod_by_key.get(&key) {
            self.take(old);
        }
        let s = &mut self.strings;
        let ns = s.intern(&pod.namespace);
        let namespace = s.resolve(ns).clone();
        let labels = Labels::build(&pod.labels, s);
        let mut terms: Vec<(GroupKind, i64, Term)> = Vec::new();
        // Terms that name no namespace look in the pod's own; Term::build
        // resolved that already (model::PodAffinityTerm).
        for t in &pod.pod_anti_affinity {
            terms.push((GroupKind::RequiredAnti, 0, Term::build(t, s)));
        }
        for t in &pod.pod_affinity {
            terms.push((GroupKind::RequiredAffinity, 0, Term::build(t, s)));
        }
        for w in &pod.preferred_pod_affinity {
            terms.push((
                GroupKind::PreferredAffinity,
                i64::from(w.weight),
                Term::build(&w.term, s),
            ));
        }
        for w in &pod.preferred_pod_anti_affinity {
            terms.push((
                GroupKind::PreferredAnti,
                i64::from(w.weight),
                Term::build(&w.term, s),
            ));
        }
        let scalar: Box<[(Sym, i64)]> = pod
            .requests
            .scalar
            .iter()
            .map(|(k, v)| (s.sym(k), *v))
            .collect();
        let groups = terms.into_iter().map(|t| self.group_id(t)).collect();
        let placed = PlacedPod {
            key,
            name: Arc::from(pod.name.as_str()),
            namespace,
            ns,
            node,
            labels,
            priority: pod.priority,
            cpu: pod.requests.cpu_millis,
            memory: pod.requests.memory,
            scalar,
            score_cpu: pod.score_cpu_millis,
            score_memory: pod.score_memory,
            groups,
        };
        self.insert(placed);
    }

    fn group_id(&mut self, key: (GroupKind, i64, Term)) -> u32 {
        if let Some(&id) = self.group_ids.get(&key) {
            return id;
        }
        let id = self.groups.len() as u32;
        let (kind, weight, term) = key.clone();
        if kind == GroupKind::RequiredAnti {
            self.anti_groups.push(id);
        } else {
            self.score_groups.push(id);
        }
        self.groups.push(TermGroup {
            kind,
            weight,
            term,
            counts: FxHashMap::default(),
            total: 0,
        });
        self.group_ids.insert(key, id);
        id
    }

    /// Adds a placed pod to the totals and indexes.
    pub(crate) fn insert(&mut self, p: PlacedPod) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.pods.push(None);
                (self.pods.len() - 1) as u32
            }
        };
        let node = &mut self.nodes[p.node as usize];
        node.req_cpu += p.cpu;
        node.req_memory += p.memory;
        node.score_cpu += p.score_cpu;
        node.score_memory += p.score_memory;
        for &(r, v) in p.scalar.iter() {
            match node.req_scalar.iter_mut().find(|(k, _)| *k == r) {
                Some((_, total)) => *total += v,
                None => node.req_scalar.push((r, v)),
            }
        }
        node.pods.push(id);
        for &g in p.groups.iter() {
            let group = &mut self.groups[g as usize];
            group.total += 1;
            if let Some(v) = node.topo(group.term.topology_key) {
                *group.counts.entry(v).or_insert(0) += 1;
            }
        }
        for (k, v) in p.labels.iter() {
            self.by_label.entry((k, v)).or_default().push(id);
        }
        self.by_ns.entry(p.ns).or_default().push(id);
        self.pod_by_key.insert(p.key.clone(), id);
        self.pods[id as usize] = Some(p);
        id
    }

    /// Removes a placed pod from the totals and indexes and returns it.
    pub(crate) fn take(&mut self, id: u32) -> PlacedPod {
        let p = self.pods[id as usize]
            .take()
            .expect("pod ids in indexes are live");
        self.free.push(id);
        let node = &mut self.nodes[p.node as usize];
        node.req_cpu -= p.cpu;
        node.req_memory -= p.memory;
        node.score_cpu -= p.score_cpu;
        node.score_memory -= p.score_memory;
        for &(r, v) in p.scalar.iter() {
            if let Some((_, total)) = node.req_scalar.iter_mut().find(|(k, _)| *k == r) {
                *total -= v;
            }
        }
        if let Some(pos) = node.pods.iter().position(|&x| x == id) {
            node.pods.swap_remove(pos);
        }
        for &g in p.groups.iter() {
            let group = &mut self.groups[g as usize];
            group.total -= 1;
            if let Some(v) = node.topo(group.term.topology_key)
                && let Some(c) = group.counts.get_mut(&v)
            {
                *c -= 1;
                if *c == 0 {
                    group.counts.remove(&v);
                }
            }
        }
        for (k, v) in p.labels.iter() {
            if let Some(list) = self.by_label.get_mut(&(k, v)) {
                list.retain(|&x| x != id);
            }
        }
        if let Some(list) = self.by_ns.get_mut(&p.ns) {
            list.retain(|&x| x != id);
        }
        self.pod_by_key.remove(&p.key);
        p
    }

    /// Calls `f` with each placed pod in `namespaces` that `selector`
    /// matches. Candidates come from the selector's most selective `In`
    /// requirement when it has one, else from the namespaces' pods.
    pub(crate) fn for_each_matching(
        &self,
        namespaces: &NsSet,
        selector: &Selector,
        mut f: impl FnMut(&PlacedPod),
    ) {
        if selector.nothing {
            return;
        }
        let strings = &self.strings;
        let mut check = |id: &u32| {
            if let Some(p) = self.pods[*id as usize].as_ref()
                && namespaces.contains(p.ns)
                && selector.matches(&p.labels, strings)
            {
                f(p);
            }
        };
        let mut best: Option<(usize, &crate::compiled::Req)> = None;
        for r in selector
            .reqs
            .iter()
            .filter(|r| r.op == crate::model::Operator::In)
        {
            let total: usize = r
                .values
                .iter()
                .map(|v| self.by_label.get(&(r.key, *v)).map_or(0, Vec::len))
                .sum();
            if best.is_none_or(|(b, _)| total < b) {
                best = Some((total, r));
            }
        }
        if let Some((_, r)) = best {
            for v in r.values.iter() {
                self.by_label
                    .get(&(r.key, *v))
                    .into_iter()
                    .flatten()
                    .for_each(&mut check);
            }
            return;
        }
        match namespaces {
            NsSet::One(ns) => self
                .by_ns
                .get(ns)
                .into_iter()
                .flatten()
                .for_each(&mut check),
            NsSet::List(list) => {
                for ns in list.iter() {
                    self.by_ns
                        .get(ns)
                        .into_iter()
                        .flatten()
                        .for_each(&mut check);
                }
            }
            NsSet::All => {
                for ids in self.by_ns.values() {
                    ids.iter().for_each(&mut check);
                }
            }
        }
    }

    /// The nodes with label `key=value`, in insertion order.
    pub(crate) fn nodes_with(&self, key: Sym, value: Sym) -> &[u32] {
        self.label_nodes
            .get(&key)
            .and_then(|m| m.get(&value))
            .map_or(&[], Vec::as_slice)
    }
}
