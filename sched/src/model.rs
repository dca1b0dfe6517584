//! What the scheduler reads from Kubernetes objects: [`NodeInfo`] from a
//! `Node`, [`PodInfo`] from a `Pod`. Converting validates and parses once
//! (quantities, operators, selectors), so scheduling never sees a malformed
//! object and never touches k8s-openapi structs on its hot path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::quantity::{Quantity, QuantityError};

/// `spec.runtimeClassName` of pods that run on skiff's WebAssembly runtime.
pub const WASM_RUNTIME_CLASS: &str = "wasm";
/// Node label (value `"true"`) of nodes that run WebAssembly pods.
pub const LABEL_RUNTIME_WASM: &str = "skiff.dev/runtime-wasm";
/// Node label (value `"true"`) of nodes that run OCI containers.
pub const LABEL_RUNTIME_OCI: &str = "skiff.dev/runtime-oci";
/// The node's name, set by kubelet (and by [`NodeInfo::from_node`] if absent).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The zone topology label, used by default spreading.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// The node's operating system (`linux`), as in an image's platform.
pub const LABEL_OS: &str = "kubernetes.io/os";
/// The node's CPU architecture (`amd64`, `arm64`), as in an image's platform.
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// The taint a node that is not Ready carries.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint a node whose readiness is Unknown carries.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint that `spec.unschedulable` stands for; tolerating it lets a pod
/// onto a cordoned node, as in Kubernetes.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// kube-scheduler's request assumed, for scoring only, for a container that
/// sets no cpu request.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// kube-scheduler's request assumed, for scoring only, for a container that
/// sets no memory request (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A node or pod that cannot be read; `path` is the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Quantity {
        path: String,
        #[source]
        source: QuantityError,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Amounts of resources: cpu in millicores, memory in bytes, every other
/// resource (`ephemeral-storage`, `nvidia.com/gpu`, `hugepages-2Mi`) in
/// whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    fn read(
        list: Option<&BTreeMap<String, K8sQuantity>>,
        path: &str,
        skip: &[&str],
    ) -> Result<Self, ModelError> {
        let mut out = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            if skip.contains(&name.as_str()) {
                continue;
            }
            let field = format!("{path}[{name}]");
            let parsed = Quantity::parse(&q.0).map_err(|source| ModelError::Quantity {
                path: field.clone(),
                source,
            })?;
            if parsed.is_negative() {
                return Err(invalid(
                    field,
                    format!("must be non-negative, got {:?}", q.0),
                ));
            }
            let amount = if name == "cpu" {
                parsed.milli_value()
            } else {
                parsed.value()
            }
            .map_err(|source| ModelError::Quantity {
                path: field,
                source,
            })?;
            match name.as_str() {
                "cpu" => out.cpu_millis = amount,
                "memory" => out.memory = amount,
                _ => {
                    out.scalar.insert(name.clone(), amount);
                }
            }
        }
        Ok(out)
    }

    fn add(&mut self, other: &Resources) {
        self.cpu_millis = self.cpu_millis.saturating_add(other.cpu_millis);
        self.memory = self.memory.saturating_add(other.memory);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    fn max_with(&mut self, other: &Resources) {
        self.cpu_millis = self.cpu_millis.max(other.cpu_millis);
        self.memory = self.memory.max(other.memory);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

/// The effect of a taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    fn parse(s: &str, path: &str) -> Result<Self, ModelError> {
        match s {
            "NoSchedule" => Ok(Self::NoSchedule),
            "PreferNoSchedule" => Ok(Self::PreferNoSchedule),
            "NoExecute" => Ok(Self::NoExecute),
            other => Err(invalid(path, format!("unknown taint effect {other:?}"))),
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: TaintEffect,
}

/// Whether a node's `Ready` condition is True, False or Unknown (absent
/// counts as False: a node that never reported is not ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    Unknown,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub readiness: Readiness,
    /// Allocatable cpu, memory and extended resources (`status.allocatable`,
    /// or `status.capacity` when a node reports no allocatable).
    pub allocatable: Resources,
    /// Allocatable `pods`: how many pods the node takes.
    pub max_pods: i64,
}

impl NodeInfo {
    /// Reads a `Node`. `kubernetes.io/hostname` defaults to the node's name,
    /// as kubelet sets it.
    pub fn from_node(node: &core::Node) -> Result<Self, ModelError> {
        let name = node
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("metadata.name", "required"))?;
        let mut labels = node.metadata.labels.clone().unwrap_or_default();
        labels
            .entry(LABEL_HOSTNAME.to_owned())
            .or_insert_with(|| name.clone());

        let spec = node.spec.as_ref();
        let mut taints = Vec::new();
        for (i, t) in spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let path = format!("spec.taints[{i}]");
            if t.key.is_empty() {
                return Err(invalid(format!("{path}.key"), "required"));
            }
            taints.push(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: TaintEffect::parse(&t.effect, &format!("{path}.effect"))?,
            });
        }

        let status = node.status.as_ref();
        let (list, path) = match status.and_then(|s| s.allocatable.as_ref()) {
            Some(a) => (Some(a), "status.allocatable"),
            None => (status.and_then(|s| s.capacity.as_ref()), "status.capacity"),
        };
        let mut allocatable = Resources::read(list, path, &[])?;
        let max_pods = allocatable.scalar.remove("pods").unwrap_or(0);

        let readiness = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map_or(Readiness::NotReady, |c| match c.status.as_str() {
                "True" => Readiness::Ready,
                "Unknown" => Readiness::Unknown,
                _ => Readiness::NotReady,
            });

        Ok(NodeInfo {
            name,
            labels,
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            readiness,
            allocatable,
            max_pods,
        })
    }
}

/// Operators of label and node selector requirements. `Gt` and `Lt` are
/// only valid in node selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement of a label selector or node selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    fn read(
        key: &str,
        op: &str,
        values: Option<&Vec<String>>,
        path: &str,
        numeric_ops: bool,
    ) -> Result<Self, ModelError> {
        let operator = match op {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" if numeric_ops => Operator::Gt,
            "Lt" if numeric_ops => Operator::Lt,
            other => {
                return Err(invalid(
                    format!("{path}.operator"),
                    format!("unknown operator {other:?}"),
                ));
            }
        };
        let values = values.cloned().unwrap_or_default();
        let ok = match operator {
            Operator::In | Operator::NotIn => !values.is_empty(),
            Operator::Exists | Operator::DoesNotExist => values.is_empty(),
            Operator::Gt | Operator::Lt => values.len() == 1 && values[0].parse::<i64>().is_ok(),
        };
        if !ok {
            let want = match operator {
                Operator::In | Operator::NotIn => "must be non-empty",
                Operator::Exists | Operator::DoesNotExist => "must be empty",
                Operator::Gt | Operator::Lt => "must be a single integer",
            };
            return Err(invalid(
                format!("{path}.values"),
                format!("{want} for {op}"),
            ));
        }
        if key.is_empty() {
            return Err(invalid(format!("{path}.key"), "required"));
        }
        Ok(Requirement {
            key: key.to_owned(),
            operator,
            values,
        })
    }
}

/// A pod label selector. `Nothing` is a nil selector, which in affinity
/// terms and spread constraints matches no pod; `Requirements(vec![])` (an
/// empty `{}` selector) matches every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSelector {
    Nothing,
    Requirements(Vec<Requirement>),
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement (the placement path uses
    /// the compiled form; this one is for the few namespace labels).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let LabelSelector::Requirements(reqs) = self else {
            return false;
        };
        reqs.iter().all(|r| {
            let value = labels.get(&r.key);
            let number = |v: &String| v.parse::<i64>().ok();
            let bound = r.values.first().and_then(number);
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
                Operator::Gt => {
                    matches!((value.and_then(number), bound), (Some(v), Some(b)) if v > b)
                }
                Operator::Lt => {
                    matches!((value.and_then(number), bound), (Some(v), Some(b)) if v < b)
                }
            }
        })
    }
}

impl LabelSelector {
    pub(crate) fn read(sel: Option<&meta::LabelSelector>, path: &str) -> Result<Self, ModelError> {
        let Some(sel) = sel else {
            return Ok(LabelSelector::Nothing);
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            if k.is_empty() {
                return Err(invalid(format!("{path}.matchLabels"), "empty key"));
            }
            reqs.push(Requirement {
                key: k.clone(),
                operator: Operator::In,
                values: vec![v.clone()],
            });
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            reqs.push(Requirement::read(
                &e.key,
                &e.operator,
                e.values.as_ref(),
                &p,
                false,
            )?);
        }
        Ok(LabelSelector::Requirements(reqs))
    }

    /// Adds `key In (value)` for each of `keys` the pod carries
    /// (`matchLabelKeys`), or `key NotIn (value)` (`mismatchLabelKeys`).
    fn merge_keys(
        &mut self,
        keys: Option<&Vec<String>>,
        labels: &BTreeMap<String, String>,
        operator: Operator,
    ) {
        if let LabelSelector::Requirements(reqs) = self {
            for k in keys.into_iter().flatten() {
                if let Some(v) = labels.get(k) {
                    reqs.push(Requirement {
                        key: k.clone(),
                        operator,
                        values: vec![v.clone()],
                    });
                }
            }
        }
    }
}

/// A node selector term: all expressions and fields must match. The only
/// field is `metadata.name` (operators `In`, `NotIn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<Requirement>,
    pub match_fields: Vec<Requirement>,
}

impl NodeSelectorTerm {
    fn read(term: &core::NodeSelectorTerm, path: &str) -> Result<Self, ModelError> {
        let mut match_expressions = Vec::new();
        for (i, e) in term.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            match_expressions.push(Requirement::read(
                &e.key,
                &e.operator,
                e.values.as_ref(),
                &p,
                true,
            )?);
        }
        let mut match_fields = Vec::new();
        for (i, e) in term.match_fields.iter().flatten().enumerate() {
            let p = format!("{path}.matchFields[{i}]");
            if e.key != "metadata.name" {
                return Err(invalid(
                    format!("{p}.key"),
                    format!("unsupported field {:?}", e.key),
                ));
            }
            let r = Requirement::read(&e.key, &e.operator, e.values.as_ref(), &p, false)?;
            if !matches!(r.operator, Operator::In | Operator::NotIn) {
                return Err(invalid(format!("{p}.operator"), "must be In or NotIn"));
            }
            match_fields.push(r);
        }
        Ok(NodeSelectorTerm {
            match_expressions,
            match_fields,
        })
    }
}

/// A preferred node affinity term and its weight (1–100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredNodeTerm {
    pub weight: i32,
    pub term: NodeSelectorTerm,
}

/// How a toleration compares the taint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

/// A pod toleration. An empty key with `Exists` tolerates every taint; no
/// effect tolerates every effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub operator: TolerationOperator,
    pub value: String,
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`, by Kubernetes' rules.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }
}

/// The namespaces an affinity term's selector looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
    /// `namespaces` plus those whose labels a `namespaceSelector` matches,
    /// not yet resolved against the cluster's Namespaces
    /// ([`PodInfo::resolve_namespaces`]); until then only the listed ones.
    Selected {
        listed: Vec<String>,
        selector: LabelSelector,
    },
}

impl Namespaces {
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::List(l) | Namespaces::Selected { listed: l, .. } => {
                l.iter().any(|n| n == ns)
            }
        }
    }

    /// Resolves a `namespaceSelector` against the cluster's namespaces and
    /// their labels.
    fn resolve(&mut self, namespaces: &BTreeMap<String, BTreeMap<String, String>>) {
        if let Namespaces::Selected { listed, selector } = self {
            let mut all = std::mem::take(listed);
            all.extend(
                namespaces
                    .iter()
                    .filter(|(_, labels)| selector.matches(labels))
                    .map(|(name, _)| name.clone()),
            );
            all.sort_unstable();
            all.dedup();
            *self = Namespaces::List(all);
        }
    }
}

/// An inter-pod affinity or anti-affinity term.
///
/// Namespaces as in Kubernetes: the union of `namespaces` and the
/// namespaces `namespaceSelector` matches; an empty selector (`{}`) means
/// all namespaces; with neither, the pod's own namespace. A non-empty
/// selector needs the cluster's namespaces: [`PodInfo::resolve_namespaces`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAffinityTerm {
    pub selector: LabelSelector,
    pub namespaces: Namespaces,
    pub topology_key: String,
}

impl PodAffinityTerm {
    fn read(
        t: &core::PodAffinityTerm,
        pod_ns: &str,
        labels: &BTreeMap<String, String>,
        path: &str,
    ) -> Result<Self, ModelError> {
        if t.topology_key.is_empty() {
            return Err(invalid(format!("{path}.topologyKey"), "required"));
        }
        let mut selector =
            LabelSelector::read(t.label_selector.as_ref(), &format!("{path}.labelSelector"))?;
        selector.merge_keys(t.match_label_keys.as_ref(), labels, Operator::In);
        selector.merge_keys(t.mismatch_label_keys.as_ref(), labels, Operator::NotIn);
        let all = t.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        });
        let listed = t.namespaces.clone().unwrap_or_default();
        let namespaces = match &t.namespace_selector {
            _ if all => Namespaces::All,
            Some(sel) => Namespaces::Selected {
                listed,
                selector: LabelSelector::read(Some(sel), &format!("{path}.namespaceSelector"))?,
            },
            None if listed.is_empty() => Namespaces::List(vec![pod_ns.to_owned()]),
            None => Namespaces::List(listed),
        };
        Ok(PodAffinityTerm {
            selector,
            namespaces,
            topology_key: t.topology_key.clone(),
        })
    }
}

/// A preferred inter-pod (anti-)affinity term and its weight (1–100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub term: PodAffinityTerm,
}

/// `whenUnsatisfiable` of a topology spread constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

/// `nodeAffinityPolicy` / `nodeTaintsPolicy` of a spread constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InclusionPolicy {
    Honor,
    Ignore,
}

/// A topology spread constraint; the selector looks in the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    pub selector: LabelSelector,
    pub min_domains: Option<i32>,
    /// Default `Honor`: only nodes matching the pod's node affinity and
    /// selector count as domains.
    pub node_affinity_policy: InclusionPolicy,
    /// Default `Ignore`: tainted nodes count as domains.
    pub node_taints_policy: InclusionPolicy,
}

/// `spec.preemptionPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreemptionPolicy {
    PreemptLowerPriority,
    Never,
}

/// One platform an image is built for, as in an OCI image index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    pub fn new(os: &str, arch: &str) -> Self {
        Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        }
    }
}

/// A pod as the scheduler sees it: what it asks for and where it may go,
/// parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.priority`, 0 when unset.
    pub priority: i32,
    pub preemption_policy: PreemptionPolicy,
    /// `spec.nodeName`, if the pod names its node.
    pub node_name: Option<String>,
    pub runtime_class: Option<String>,
    /// The platforms of the pod's images, resolved by the caller from the
    /// image index; `None` (or an empty list) when unknown. Ignored for
    /// wasm pods, which run on any architecture.
    pub image_platforms: Option<Vec<Platform>>,
    /// Requests as kube-scheduler sums them (containers, init containers,
    /// sidecars, overhead). A pod with no requests fits anywhere.
    pub requests: Resources,
    /// Cpu and memory requests for scoring, with kube-scheduler's defaults
    /// (100m, 200Mi) for containers that set none.
    pub score_cpu_millis: i64,
    pub score_memory: i64,
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: any term must match. `None` when absent.
    pub required_node_affinity: Option<Vec<NodeSelectorTerm>>,
    pub preferred_node_affinity: Vec<PreferredNodeTerm>,
    pub tolerations: Vec<Toleration>,
    pub pod_affinity: Vec<PodAffinityTerm>,
    pub pod_anti_affinity: Vec<PodAffinityTerm>,
    pub preferred_pod_affinity: Vec<WeightedPodAffinityTerm>,
    pub preferred_pod_anti_affinity: Vec<WeightedPodAffinityTerm>,
    pub spread_constraints: Vec<SpreadConstraint>,
}

impl PodInfo {
    /// Whether the pod runs on skiff's WebAssembly runtime.
    pub fn is_wasm(&self) -> bool {
        self.runtime_class.as_deref() == Some(WASM_RUNTIME_CLASS)
    }

    /// A pod with no requests or constraints, in `namespace`; for callers
    /// that build pods directly (tests, benchmarks).
    pub fn new(namespace: &str, name: &str) -> Self {
        PodInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: BTreeMap::new(),
            priority: 0,
            preemption_policy: PreemptionPolicy::PreemptLowerPriority,
            node_name: None,
            runtime_class: None,
            image_platforms: None,
            requests: Resources::default(),
            score_cpu_millis: DEFAULT_MILLI_CPU_REQUEST,
            score_memory: DEFAULT_MEMORY_REQUEST,
            node_selector: BTreeMap::new(),
            required_node_affinity: None,
            preferred_node_affinity: Vec::new(),
            tolerations: Vec::new(),
            pod_affinity: Vec::new(),
            pod_anti_affinity: Vec::new(),
            preferred_pod_affinity: Vec::new(),
            preferred_pod_anti_affinity: Vec::new(),
            spread_constraints: Vec::new(),
        }
    }

    /// Resolves the `namespaceSelector`s of the pod's affinity terms
    /// against the cluster's namespaces (name → labels).
    pub fn resolve_namespaces(&mut self, namespaces: &BTreeMap<String, BTreeMap<String, String>>) {
        let terms = self
            .pod_affinity
            .iter_mut()
            .chain(self.pod_anti_affinity.iter_mut())
            .chain(
                self.preferred_pod_affinity
                    .iter_mut()
                    .chain(self.preferred_pod_anti_affinity.iter_mut())
                    .map(|w| &mut w.term),
            );
        for t in terms {
            t.namespaces.resolve(namespaces);
        }
    }

    /// Reads a `Pod`. The namespace defaults to `default`.
    pub fn from_pod(pod: &core::Pod) -> Result<Self, ModelError> {
        let name = pod
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("metadata.name", "required"))?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let mut info = PodInfo::new(&namespace, &name);
        info.labels = pod.metadata.labels.clone().unwrap_or_default();
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(info);
        };

        info.priority = spec.priority.unwrap_or(0);
        info.preemption_policy = match spec.preemption_policy.as_deref() {
            None | Some("PreemptLowerPriority") => PreemptionPolicy::PreemptLowerPriority,
            Some("Never") => PreemptionPolicy::Never,
            Some(other) => {
                return Err(invalid(
                    "spec.preemptionPolicy",
                    format!("unknown policy {other:?}"),
                ));
            }
        };
        info.node_name = spec.node_name.clone().filter(|n| !n.is_empty());
        info.runtime_class = spec.runtime_class_name.clone().filter(|n| !n.is_empty());
        info.node_selector = spec.node_selector.clone().unwrap_or_default();

        let (requests, cpu, memory) = aggregate_requests(spec)?;
        info.requests = requests;
        info.score_cpu_millis = cpu;
        info.score_memory = memory;

        for (i, t) in spec.tolerations.iter().flatten().enumerate() {
            let path = format!("spec.tolerations[{i}]");
            let operator = match t.operator.as_deref() {
                None | Some("Equal") | Some("") => TolerationOperator::Equal,
                Some("Exists") => TolerationOperator::Exists,
                Some(other) => {
                    return Err(invalid(
                        format!("{path}.operator"),
                        format!("unknown operator {other:?}"),
                    ));
                }
            };
            let effect = match t.effect.as_deref() {
                None | Some("") => None,
                Some(e) => Some(TaintEffect::parse(e, &format!("{path}.effect"))?),
            };
            let key = t.key.clone().unwrap_or_default();
            if key.is_empty() && operator == TolerationOperator::Equal {
                return Err(invalid(
                    format!("{path}.operator"),
                    "must be Exists when key is empty",
                ));
            }
            info.tolerations.push(Toleration {
                key,
                operator,
                value: t.value.clone().unwrap_or_default(),
                effect,
            });
        }

        if let Some(aff) = spec.affinity.as_ref() {
            read_affinity(aff, &mut info)?;
        }

        for (i, c) in spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .enumerate()
        {
            let path = format!("spec.topologySpreadConstraints[{i}]");
            if c.max_skew < 1 {
                return Err(invalid(format!("{path}.maxSkew"), "must be at least 1"));
            }
            if c.topology_key.is_empty() {
                return Err(invalid(format!("{path}.topologyKey"), "required"));
            }
            if c.min_domains.is_some_and(|m| m < 1) {
                return Err(invalid(format!("{path}.minDomains"), "must be at least 1"));
            }
            let when_unsatisfiable = match c.when_unsatisfiable.as_str() {
                "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
                "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
                other => {
                    return Err(invalid(
                        format!("{path}.whenUnsatisfiable"),
                        format!("unknown value {other:?}"),
                    ));
                }
            };
            let policy = |v: Option<&String>, default, field: &str| match v.map(String::as_str) {
                None => Ok(default),
                Some("Honor") => Ok(InclusionPolicy::Honor),
                Some("Ignore") => Ok(InclusionPolicy::Ignore),
                Some(other) => Err(invalid(
                    format!("{path}.{field}"),
                    format!("unknown policy {other:?}"),
                )),
            };
            let mut selector =
                LabelSelector::read(c.label_selector.as_ref(), &format!("{path}.labelSelector"))?;
            selector.merge_keys(c.match_label_keys.as_ref(), &info.labels, Operator::In);
            info.spread_constraints.push(SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key.clone(),
                when_unsatisfiable,
                selector,
                min_domains: c
                    .min_domains
                    .filter(|_| when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule),
                node_affinity_policy: policy(
                    c.node_affinity_policy.as_ref(),
                    InclusionPolicy::Honor,
                    "nodeAffinityPolicy",
                )?,
                node_taints_policy: policy(
                    c.node_taints_policy.as_ref(),
                    InclusionPolicy::Ignore,
                    "nodeTaintsPolicy",
                )?,
            });
        }
        Ok(info)
    }
}

fn read_affinity(aff: &core::Affinity, info: &mut PodInfo) -> Result<(), ModelError> {
    if let Some(na) = aff.node_affinity.as_ref() {
        let base = "spec.affinity.nodeAffinity";
        if let Some(req) = na
            .required_during_scheduling_ignored_during_execution
            .as_ref()
        {
            let mut terms = Vec::new();
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                let p = format!(
                    "{base}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
                );
                terms.push(NodeSelectorTerm::read(t, &p)?);
            }
            info.required_node_affinity = Some(terms);
        }
        for (i, p) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let path = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            check_weight(p.weight, &path)?;
            let term = NodeSelectorTerm::read(&p.preference, &format!("{path}.preference"))?;
            info.preferred_node_affinity.push(PreferredNodeTerm {
                weight: p.weight,
                term,
            });
        }
    }
    let ns = info.namespace.clone();
    let labels = info.labels.clone();
    let read_terms = |terms: Option<&Vec<core::PodAffinityTerm>>,
                      base: &str|
     -> Result<Vec<PodAffinityTerm>, ModelError> {
        let mut out = Vec::new();
        for (i, t) in terms.into_iter().flatten().enumerate() {
            let p = format!("{base}.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
            out.push(PodAffinityTerm::read(t, &ns, &labels, &p)?);
        }
        Ok(out)
    };
    let read_weighted = |terms: Option<&Vec<core::WeightedPodAffinityTerm>>,
                         base: &str|
     -> Result<Vec<WeightedPodAffinityTerm>, ModelError> {
        let mut out = Vec::new();
        for (i, t) in terms.into_iter().flatten().enumerate() {
            let p = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            check_weight(t.weight, &p)?;
            let term = PodAffinityTerm::read(
                &t.pod_affinity_term,
                &ns,
                &labels,
                &format!("{p}.podAffinityTerm"),
            )?;
            out.push(WeightedPodAffinityTerm {
                weight: t.weight,
                term,
            });
        }
        Ok(out)
    };
    if let Some(pa) = aff.pod_affinity.as_ref() {
        let base = "spec.affinity.podAffinity";
        info.pod_affinity = read_terms(
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            base,
        )?;
        info.preferred_pod_affinity = read_weighted(
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            base,
        )?;
    }
    if let Some(pa) = aff.pod_anti_affinity.as_ref() {
        let base = "spec.affinity.podAntiAffinity";
        info.pod_anti_affinity = read_terms(
            pa.required_during_scheduling_ignored_during_execution
                .as_ref(),
            base,
        )?;
        info.preferred_pod_anti_affinity = read_weighted(
            pa.preferred_during_scheduling_ignored_during_execution
                .as_ref(),
            base,
        )?;
    }
    Ok(())
}

fn check_weight(weight: i32, path: &str) -> Result<(), ModelError> {
    if (1..=100).contains(&weight) {
        Ok(())
    } else {
        Err(invalid(
            format!("{path}.weight"),
            format!("must be in 1..=100, got {weight}"),
        ))
    }
}

/// Sums requests as kube-scheduler's `AggregateContainerRequests` does:
/// regular containers and restartable init containers (sidecars) run
/// together; each other init container runs alone beside the sidecars
/// started before it; the pod needs the larger of the two, plus overhead.
/// Returns the requests and the cpu / memory used for scoring, where a
/// container without a cpu or memory request counts 100m / 200Mi.
fn aggregate_requests(spec: &core::PodSpec) -> Result<(Resources, i64, i64), ModelError> {
    let read = |c: &core::Container, path: String| -> Result<(Resources, i64, i64), ModelError> {
        let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let r = Resources::read(list, &format!("{path}.resources.requests"), &[])?;
        let has = |k: &str| list.is_some_and(|l| l.contains_key(k));
        let cpu = if has("cpu") {
            r.cpu_millis
        } else {
            DEFAULT_MILLI_CPU_REQUEST
        };
        let mem = if has("memory") {
            r.memory
        } else {
            DEFAULT_MEMORY_REQUEST
        };
        Ok((r, cpu, mem))
    };

    let mut sum = Resources::default();
    let (mut score_cpu, mut score_mem) = (0i64, 0i64);
    for (i, c) in spec.containers.iter().enumerate() {
        let (r, cpu, mem) = read(c, format!("spec.containers[{i}]"))?;
        sum.add(&r);
        score_cpu += cpu;
        score_mem += mem;
    }

    let mut init_max = Resources::default();
    let (mut init_cpu_max, mut init_mem_max) = (0i64, 0i64);
    let mut sidecars = Resources::default();
    let (mut sidecar_cpu, mut sidecar_mem) = (0i64, 0i64);
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let (r, cpu, mem) = read(c, format!("spec.initContainers[{i}]"))?;
        let (running, run_cpu, run_mem);
        if c.restart_policy.as_deref() == Some("Always") {
            sum.add(&r);
            score_cpu += cpu;
            score_mem += mem;
            sidecars.add(&r);
            sidecar_cpu += cpu;
            sidecar_mem += mem;
            running = sidecars.clone();
            run_cpu = sidecar_cpu;
            run_mem = sidecar_mem;
        } else {
            let mut alone = sidecars.clone();
            alone.add(&r);
            running = alone;
            run_cpu = sidecar_cpu + cpu;
            run_mem = sidecar_mem + mem;
        }
        init_max.max_with(&running);
        init_cpu_max = init_cpu_max.max(run_cpu);
        init_mem_max = init_mem_max.max(run_mem);
    }
    sum.max_with(&init_max);
    score_cpu = score_cpu.max(init_cpu_max);
    score_mem = score_mem.max(init_mem_max);

    if let Some(overhead) = spec.overhead.as_ref() {
        let o = Resources::read(Some(overhead), "spec.overhead", &[])?;
        sum.add(&o);
        score_cpu += o.cpu_millis;
        score_mem += o.memory;
    }
    sum.scalar.retain(|_, v| *v > 0);
    Ok((sum, score_cpu, score_mem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(requests: &[(&str, &str)], restart: Option<&str>) -> core::Container {
        core::Container {
            name: "c".into(),
            restart_policy: restart.map(str::to_owned),
            resources: Some(core::ResourceRequirements {
                requests: Some(
                    requests
                        .iter()
                        .map(|(k, v)| (k.to_string(), K8sQuantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn namespace_selectors_resolve_against_namespace_labels() {
        let pod: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "mine"},
            "spec": {"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "zone", "labelSelector": {}, "namespaces": ["x"],
                     "namespaceSelector": {"matchLabels": {"team": "a"}}},
                    {"topologyKey": "zone", "labelSelector": {}, "namespaceSelector": {}},
                    {"topologyKey": "zone", "labelSelector": {}},
                    {"topologyKey": "zone", "labelSelector": {},
                     "namespaceSelector": {"matchExpressions": [
                         {"key": "team", "operator": "NotIn", "values": ["a"]}]}},
                ]}}},
        }))
        .unwrap();
        let mut info = PodInfo::from_pod(&pod).unwrap();
        let ns = |i: usize, info: &PodInfo| info.pod_anti_affinity[i].namespaces.clone();
        // Unresolved, a selector counts only the listed namespaces.
        assert!(ns(0, &info).contains("x") && !ns(0, &info).contains("n1"));
        assert_eq!(ns(1, &info), Namespaces::All);
        assert_eq!(ns(2, &info), Namespaces::List(vec!["mine".into()]));
        let labels = |team: Option<&str>| {
            team.map(|t| [("team".to_string(), t.to_string())].into())
                .unwrap_or_default()
        };
        let cluster: BTreeMap<String, BTreeMap<String, String>> = [
            ("n1".to_string(), labels(Some("a"))),
            ("n2".to_string(), labels(Some("b"))),
            ("n3".to_string(), labels(None)),
        ]
        .into();
        info.resolve_namespaces(&cluster);
        assert_eq!(
            ns(0, &info),
            Namespaces::List(vec!["n1".into(), "x".into()])
        );
        assert_eq!(ns(1, &info), Namespaces::All);
        assert_eq!(ns(2, &info), Namespaces::List(vec!["mine".into()]));
        // NotIn matches namespaces without the label too, as in Kubernetes.
        assert_eq!(
            ns(3, &info),
            Namespaces::List(vec!["n2".into(), "n3".into()])
        );
    }

    #[test]
    fn requests_follow_kube_scheduler() {
        let spec = core::PodSpec {
            containers: vec![
                container(&[("cpu", "100m"), ("memory", "1Gi")], None),
                container(&[("cpu", "200m")], None),
            ],
            init_containers: Some(vec![
                container(&[("cpu", "1"), ("memory", "10Mi")], None),
                container(&[("cpu", "50m"), ("nvidia.com/gpu", "1")], Some("Always")),
                container(&[("cpu", "500m")], None),
            ]),
            overhead: Some([("cpu".to_string(), K8sQuantity("10m".into()))].into()),
            ..Default::default()
        };
        let (r, cpu, mem) = aggregate_requests(&spec).unwrap();
        // Regular 300m + sidecar 50m = 350m; init max(1000m, 50m + 500m) = 1000m; + 10m overhead.
        assert_eq!(r.cpu_millis, 1010);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.scalar.get("nvidia.com/gpu"), Some(&1));
        // Scoring: the second container and sidecar count 200Mi memory.
        assert_eq!(mem, (1 << 30) + 2 * DEFAULT_MEMORY_REQUEST);
        assert_eq!(cpu, 1010);
    }

    #[test]
    fn no_requests_fit_anywhere_but_score_as_defaults() {
        let spec = core::PodSpec {
            containers: vec![core::Container::default()],
            ..Default::default()
        };
        let (r, cpu, mem) = aggregate_requests(&spec).unwrap();
        assert_eq!(r, Resources::default());
        assert_eq!(
            (cpu, mem),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let spec = core::PodSpec {
            containers: vec![container(&[("cpu", "1.5.5")], None)],
            ..Default::default()
        };
        let err = aggregate_requests(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.containers[0].resources.requests[cpu]: invalid quantity \"1.5.5\": more than one decimal point"
        );
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: TaintEffect::NoSchedule,
        };
        let tol = |key: &str, op, value: &str, effect| Toleration {
            key: key.into(),
            operator: op,
            value: value.into(),
            effect,
        };
        use TolerationOperator::*;
        assert!(tol("k", Equal, "v", None).tolerates(&taint));
        assert!(tol("k", Equal, "v", Some(TaintEffect::NoSchedule)).tolerates(&taint));
        assert!(!tol("k", Equal, "v", Some(TaintEffect::NoExecute)).tolerates(&taint));
        assert!(!tol("k", Equal, "w", None).tolerates(&taint));
        assert!(tol("k", Exists, "", None).tolerates(&taint));
        assert!(tol("", Exists, "", None).tolerates(&taint));
        assert!(!tol("j", Exists, "", None).tolerates(&taint));
    }
}
