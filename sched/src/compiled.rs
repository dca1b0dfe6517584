//! Interned forms of the model: what filters and scores compare, node by
//! node, without touching a string.

use std::collections::BTreeMap;

use crate::intern::{Interner, Sym, Symbols, hash_str};
use crate::model::{
    InclusionPolicy, LabelSelector, Namespaces, NodeSelectorTerm, Operator, PodAffinityTerm,
    PodInfo, Requirement, SpreadConstraint, TaintEffect, TolerationOperator, WhenUnsatisfiable,
};

/// Label pairs sorted by key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Labels(Box<[(Sym, Sym)]>);

impl Labels {
    pub(crate) fn build(labels: &BTreeMap<String, String>, syms: &mut impl Symbols) -> Self {
        let mut pairs: Vec<(Sym, Sym)> = labels
            .iter()
            .map(|(k, v)| (syms.sym(k), syms.sym(v)))
            .collect();
        pairs.sort_unstable();
        Labels(pairs.into())
    }

    #[inline]
    pub(crate) fn get(&self, key: Sym) -> Option<Sym> {
        // Nodes carry about ten labels and pods fewer: a scan beats a search.
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Sym, Sym)> + '_ {
        self.0.iter().copied()
    }
}

/// A selector requirement; `number` is the parsed value of `Gt` / `Lt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Req {
    pub(crate) key: Sym,
    pub(crate) op: Operator,
    pub(crate) values: Box<[Sym]>,
    number: i64,
}

impl Req {
    fn build(r: &Requirement, syms: &mut impl Symbols) -> Self {
        let mut values: Vec<Sym> = r.values.iter().map(|v| syms.sym(v)).collect();
        values.sort_unstable();
        values.dedup();
        let number = match r.operator {
            Operator::Gt | Operator::Lt => {
                r.values.first().and_then(|v| v.parse().ok()).unwrap_or(0)
            }
            _ => 0,
        };
        Req {
            key: syms.sym(&r.key),
            op: r.operator,
            values: values.into(),
            number,
        }
    }

    #[inline]
    fn matches(&self, labels: &Labels, strings: &Interner) -> bool {
        let v = labels.get(self.key);
        match self.op {
            Operator::In => v.is_some_and(|v| self.values.contains(&v)),
            Operator::NotIn => v.is_none_or(|v| !self.values.contains(&v)),
            Operator::Exists => v.is_some(),
            Operator::DoesNotExist => v.is_none(),
            Operator::Gt => v
                .and_then(|v| strings.number(v))
                .is_some_and(|n| n > self.number),
            Operator::Lt => v
                .and_then(|v| strings.number(v))
                .is_some_and(|n| n < self.number),
        }
    }
}

/// A pod label selector; `nothing` for a nil selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Selector {
    pub(crate) nothing: bool,
    pub(crate) reqs: Box<[Req]>,
}

impl Selector {
    pub(crate) fn build(s: &LabelSelector, syms: &mut impl Symbols) -> Self {
        match s {
            LabelSelector::Nothing => Selector {
                nothing: true,
                reqs: Box::new([]),
            },
            LabelSelector::Requirements(reqs) => Selector {
                nothing: false,
                reqs: reqs.iter().map(|r| Req::build(r, syms)).collect(),
            },
        }
    }

    /// `matchLabels` equal to all of a pod's labels (default spreading).
    pub(crate) fn equal_to(labels: &Labels) -> Self {
        let reqs = labels.iter().map(|(k, v)| Req {
            key: k,
            op: Operator::In,
            values: Box::new([v]),
            number: 0,
        });
        Selector {
            nothing: false,
            reqs: reqs.collect(),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, labels: &Labels, strings: &Interner) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels, strings))
    }
}

/// The namespaces a term looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NsSet {
    All,
    One(Sym),
    List(Box<[Sym]>),
}

impl NsSet {
    #[inline]
    pub(crate) fn contains(&self, ns: Sym) -> bool {
        match self {
            NsSet::All => true,
            NsSet::One(n) => *n == ns,
            NsSet::List(l) => l.contains(&ns),
        }
    }
}

/// An inter-pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Term {
    pub(crate) selector: Selector,
    pub(crate) namespaces: NsSet,
    pub(crate) topology_key: Sym,
}

impl Term {
    pub(crate) fn build(t: &PodAffinityTerm, syms: &mut impl Symbols) -> Self {
        let namespaces = match &t.namespaces {
            Namespaces::All => NsSet::All,
            Namespaces::List(l) | Namespaces::Selected { listed: l, .. } => {
                let mut v: Vec<Sym> = l.iter().map(|n| syms.sym(n)).collect();
                v.sort_unstable();
                v.dedup();
                NsSet::List(v.into())
            }
        };
        Term {
            selector: Selector::build(&t.selector, syms),
            namespaces,
            topology_key: syms.sym(&t.topology_key),
        }
    }

    #[inline]
    pub(crate) fn matches_pod(&self, ns: Sym, labels: &Labels, strings: &Interner) -> bool {
        self.namespaces.contains(ns) && self.selector.matches(labels, strings)
    }
}

/// A node selector term; one with neither expressions nor fields matches
/// no node, as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NodeTerm {
    exprs: Box<[Req]>,
    /// `metadata.name` requirements: (is `In`, names).
    fields: Box<[(bool, Box<[Sym]>)]>,
}

impl NodeTerm {
    fn build(t: &NodeSelectorTerm, syms: &mut impl Symbols) -> Self {
        NodeTerm {
            exprs: t
                .match_expressions
                .iter()
                .map(|r| Req::build(r, syms))
                .collect(),
            fields: t
                .match_fields
                .iter()
                .map(|r| {
                    (
                        r.operator == Operator::In,
                        r.values.iter().map(|v| syms.sym(v)).collect(),
                    )
                })
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, labels: &Labels, name: Sym, strings: &Interner) -> bool {
        if self.exprs.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.exprs.iter().all(|r| r.matches(labels, strings))
            && self
                .fields
                .iter()
                .all(|(is_in, names)| names.contains(&name) == *is_in)
    }
}

/// A taint on a node in the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct NodeTaint {
    pub(crate) key: Sym,
    pub(crate) value: Sym,
    pub(crate) effect: TaintEffect,
}

/// A toleration; `key: None` is the empty key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Tol {
    key: Option<Sym>,
    exists: bool,
    value: Sym,
    effect: Option<TaintEffect>,
}

impl Tol {
    #[inline]
    fn tolerates(&self, t: &NodeTaint) -> bool {
        self.effect.is_none_or(|e| e == t.effect)
            && self.key.is_none_or(|k| k == t.key)
            && (self.exists || self.value == t.value)
    }
}

pub(crate) fn tolerated(tols: &[Tol], taint: &NodeTaint) -> bool {
    tols.iter().any(|t| t.tolerates(taint))
}

/// A topology spread constraint.
#[derive(Debug, Clone)]
pub(crate) struct Spread {
    pub(crate) max_skew: i64,
    pub(crate) key: Sym,
    pub(crate) selector: Selector,
    pub(crate) min_domains: Option<usize>,
    pub(crate) honor_affinity: bool,
    pub(crate) honor_taints: bool,
}

impl Spread {
    fn build(c: &SpreadConstraint, syms: &mut impl Symbols) -> Self {
        Spread {
            max_skew: i64::from(c.max_skew),
            key: syms.sym(&c.topology_key),
            selector: Selector::build(&c.selector, syms),
            min_domains: c.min_domains.map(|m| m.max(1) as usize),
            honor_affinity: c.node_affinity_policy == InclusionPolicy::Honor,
            honor_taints: c.node_taints_policy == InclusionPolicy::Honor,
        }
    }
}

/// What runtime a pod needs.
#[derive(Debug, Clone)]
pub(crate) enum RuntimeReq {
    Wasm,
    /// OCI, on a node matching one of these (os, arch) pairs if any.
    Oci(Box<[(Sym, Sym)]>),
}

/// Symbols the scheduler itself refers to, interned when the snapshot is
/// made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WellKnown {
    pub(crate) hostname: Sym,
    pub(crate) zone: Sym,
    pub(crate) os: Sym,
    pub(crate) arch: Sym,
    pub(crate) runtime_wasm: Sym,
    pub(crate) runtime_oci: Sym,
    pub(crate) true_: Sym,
    pub(crate) unschedulable_taint: Sym,
    pub(crate) empty: Sym,
}

/// The hostname and zone label keys are the first strings every snapshot
/// interns, so nodes can keep their values inline (see `NodeState::topo`).
pub(crate) const HOSTNAME_KEY: Sym = Sym(0);
pub(crate) const ZONE_KEY: Sym = Sym(1);

impl WellKnown {
    pub(crate) fn new(strings: &mut Interner) -> Self {
        use crate::model::*;
        assert_eq!(strings.len(), 0, "well-known strings are interned first");
        WellKnown {
            hostname: strings.intern(LABEL_HOSTNAME),
            zone: strings.intern(LABEL_ZONE),
            os: strings.intern(LABEL_OS),
            arch: strings.intern(LABEL_ARCH),
            runtime_wasm: strings.intern(LABEL_RUNTIME_WASM),
            runtime_oci: strings.intern(LABEL_RUNTIME_OCI),
            true_: strings.intern("true"),
            unschedulable_taint: strings.intern(TAINT_UNSCHEDULABLE),
            empty: strings.intern(""),
        }
    }
}

/// An incoming pod, interned against one snapshot.
#[derive(Debug)]
pub(crate) struct CompiledPod {
    pub(crate) ns: Sym,
    pub(crate) labels: Labels,
    /// Per-pod seed that spreads ties between equal nodes.
    pub(crate) seed: u64,
    pub(crate) node_name: Option<Sym>,
    pub(crate) node_selector: Box<[(Sym, Sym)]>,
    pub(crate) required_terms: Option<Box<[NodeTerm]>>,
    pub(crate) preferred_terms: Box<[(i64, NodeTerm)]>,
    pub(crate) tolerations: Box<[Tol]>,
    pub(crate) affinity: Box<[Term]>,
    pub(crate) anti_affinity: Box<[Term]>,
    pub(crate) preferred_affinity: Box<[(i64, Term)]>,
    pub(crate) preferred_anti_affinity: Box<[(i64, Term)]>,
    pub(crate) hard_spread: Box<[Spread]>,
    /// ScheduleAnyway constraints, or the default ones.
    pub(crate) soft_spread: Box<[Spread]>,
    pub(crate) runtime: RuntimeReq,
    pub(crate) cpu: i64,
    pub(crate) memory: i64,
    pub(crate) scalar: Box<[(Sym, i64)]>,
    pub(crate) score_cpu: i64,
    pub(crate) score_memory: i64,
    /// Whether the node selector, node affinity and tolerations use only
    /// strings the snapshot knows, so results that depend on them alone can
    /// be cached in the snapshot (see `DomainKey`).
    pub(crate) node_constraints_cacheable: bool,
}

/// What decides which topology domains a spread constraint counts: its
/// key, every constraint's key, and (by the inclusion policies) the pod's
/// node selector and affinity and its tolerations. Nodes only change by
/// `Snapshot::add_node`, so the eligible domains can be cached per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DomainKey {
    key: Sym,
    all_keys: Box<[Sym]>,
    /// Empty / `None` when the node affinity policy is Ignore.
    node_selector: Box<[(Sym, Sym)]>,
    required_terms: Option<Box<[NodeTerm]>>,
    /// `None` when the node taints policy is Ignore.
    tolerations: Option<Box<[Tol]>>,
}

impl DomainKey {
    pub(crate) fn new(pod: &CompiledPod, c: &Spread, all: &[Spread]) -> Option<Self> {
        if !pod.node_constraints_cacheable {
            return None;
        }
        Some(DomainKey {
            key: c.key,
            all_keys: all.iter().map(|o| o.key).collect(),
            node_selector: if c.honor_affinity {
                pod.node_selector.clone()
            } else {
                Box::new([])
            },
            required_terms: if c.honor_affinity {
                pod.required_terms.clone()
            } else {
                None
            },
            tolerations: c.honor_taints.then(|| pod.tolerations.clone()),
        })
    }
}

impl CompiledPod {
    pub(crate) fn build(
        pod: &PodInfo,
        syms: &mut impl Symbols,
        wk: &WellKnown,
        default_spreading: bool,
    ) -> Self {
        let ns = syms.sym(&pod.namespace);
        let labels = Labels::build(&pod.labels, syms);
        let unseen_before = syms.unseen();
        let required_terms = pod
            .required_node_affinity
            .as_ref()
            .map(|terms| terms.iter().map(|t| NodeTerm::build(t, syms)).collect());
        let tolerations = pod
            .tolerations
            .iter()
            .map(|t| Tol {
                key: (!t.key.is_empty()).then(|| syms.sym(&t.key)),
                exists: t.operator == TolerationOperator::Exists,
                value: syms.sym(&t.value),
                effect: t.effect,
            })
            .collect();
        let mut node_selector: Vec<(Sym, Sym)> = pod
            .node_selector
            .iter()
            .map(|(k, v)| (syms.sym(k), syms.sym(v)))
            .collect();
        node_selector.sort_unstable();
        let node_constraints_cacheable = syms.unseen() == unseen_before;
        let affinity = pod
            .pod_affinity
            .iter()
            .map(|t| Term::build(t, syms))
            .collect();
        let anti_affinity = pod
            .pod_anti_affinity
            .iter()
            .map(|t| Term::build(t, syms))
            .collect();
        let preferred_affinity = pod
            .preferred_pod_affinity
            .iter()
            .map(|w| (i64::from(w.weight), Term::build(&w.term, syms)))
            .collect();
        let preferred_anti_affinity = pod
            .preferred_pod_anti_affinity
            .iter()
            .map(|w| (i64::from(w.weight), Term::build(&w.term, syms)))
            .collect();

        let hard_spread = pod
            .spread_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule)
            .map(|c| Spread::build(c, syms))
            .collect();
        let mut soft_spread: Vec<Spread> = pod
            .spread_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == WhenUnsatisfiable::ScheduleAnyway)
            .map(|c| Spread::build(c, syms))
            .collect();
        if default_spreading && pod.spread_constraints.is_empty() && !pod.labels.is_empty() {
            // kube-scheduler's system defaults (hostname maxSkew 3, zone
            // maxSkew 5, ScheduleAnyway), with the selector simplified to
            // "the incoming pod's labels" instead of the selectors of its
            // Services and ReplicaSets, which the snapshot does not hold.
            let selector = Selector::equal_to(&labels);
            for (key, max_skew) in [(wk.hostname, 3), (wk.zone, 5)] {
                soft_spread.push(Spread {
                    max_skew,
                    key,
                    selector: selector.clone(),
                    min_domains: None,
                    honor_affinity: true,
                    honor_taints: false,
                });
            }
        }

        let runtime = if pod.is_wasm() {
            RuntimeReq::Wasm
        } else {
            let platforms = pod
                .image_platforms
                .iter()
                .flatten()
                .map(|p| (syms.sym(&p.os), syms.sym(&p.arch)));
            RuntimeReq::Oci(platforms.collect())
        };

        CompiledPod {
            ns,
            labels,
            seed: hash_str(&pod.namespace) ^ hash_str(&pod.name).rotate_left(17),
            node_name: pod.node_name.as_deref().map(|n| syms.sym(n)),
            node_selector: node_selector.into(),
            required_terms,
            preferred_terms: pod
                .preferred_node_affinity
                .iter()
                .map(|p| (i64::from(p.weight), NodeTerm::build(&p.term, syms)))
                .collect(),
            tolerations,
            affinity,
            anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            hard_spread,
            soft_spread: soft_spread.into(),
            runtime,
            cpu: pod.requests.cpu_millis,
            memory: pod.requests.memory,
            scalar: pod
                .requests
                .scalar
                .iter()
                .map(|(k, v)| (syms.sym(k), *v))
                .collect(),
            score_cpu: pod.score_cpu_millis,
            score_memory: pod.score_memory,
            node_constraints_cacheable,
        }
    }

    /// Whether the pod has node affinity or a node selector.
    pub(crate) fn has_node_constraints(&self) -> bool {
        !self.node_selector.is_empty() || self.required_terms.is_some()
    }

    /// The node selector and required node affinity (NodeAffinity's filter).
    #[inline]
    pub(crate) fn matches_node_affinity(
        &self,
        labels: &Labels,
        name: Sym,
        strings: &Interner,
    ) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(*k) == Some(*v))
            && self
                .required_terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(labels, name, strings)))
    }

    /// Whether the pod tolerates every NoSchedule / NoExecute taint.
    #[inline]
    pub(crate) fn tolerates_hard_taints(&self, taints: &[NodeTaint]) -> bool {
        taints
            .iter()
            .all(|t| t.effect == TaintEffect::PreferNoSchedule || tolerated(&self.tolerations, t))
    }

    /// Whether the pod's labels and namespace match all its own terms.
    pub(crate) fn matches_all(&self, terms: &[Term], strings: &Interner) -> bool {
        terms
            .iter()
            .all(|t| t.matches_pod(self.ns, &self.labels, strings))
    }
}
