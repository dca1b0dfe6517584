//! Golden tests: small clusters and pods in compact JSON (see
//! `common/mod.rs`), the expected node, feasible set, ranking or exact
//! kube-scheduler message; and every scored case's per-plugin scores
//! checked against `tests/golden/scores.txt`.
//!
//! After an intended scoring change, regenerate the file with
//! `SKIFF_UPDATE_GOLDEN=1 cargo test --release -p skiff-sched --test golden`
//! and review the diff.

mod common;

use std::fmt::Write as _;

use common::{pod, snapshot};
use serde_json::{Value, json};
use skiff_sched::{Config, Platform, Scheduler, ScoringStrategy};

enum Expect {
    /// `schedule` picks this node.
    Node(&'static str),
    /// Exactly these nodes pass the filters (any order).
    Feasible(&'static [&'static str]),
    /// `score_nodes` ranks the nodes in this order (no ties).
    Ranking(&'static [&'static str]),
    /// `schedule` fails with this message.
    Error(&'static str),
}

struct Case {
    name: &'static str,
    config: Config,
    nodes: Value,
    placed: Value,
    pod: Value,
    expect: Expect,
}

fn case(name: &'static str, nodes: Value, placed: Value, pod: Value, expect: Expect) -> Case {
    Case {
        name,
        config: Config::exhaustive(),
        nodes,
        placed,
        pod,
        expect,
    }
}

fn most_allocated(mut c: Case) -> Case {
    c.config.scoring_strategy = ScoringStrategy::MostAllocated;
    c
}

fn n(name: &str, cpu: &str, memory: &str) -> Value {
    json!({"name": name, "cpu": cpu, "memory": memory})
}

/// `n` with extra fields merged in.
fn nx(name: &str, extra: Value) -> Value {
    let mut v = n(name, "4", "8Gi");
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn zone(name: &str, z: &str) -> Value {
    nx(name, json!({"labels": {"topology.kubernetes.io/zone": z}}))
}

fn filter_cases() -> Vec<Case> {
    use Expect::*;
    vec![
        // NodeResourcesFit
        case(
            "fit: insufficient cpu everywhere",
            json!([n("a", "500m", "1Gi"), n("b", "1", "1Gi")]),
            json!([{"node": "b", "name": "x", "cpu": "800m"}]),
            json!({"name": "p", "cpu": "600m"}),
            Error("0/2 nodes are available: 2 Insufficient cpu."),
        ),
        case(
            "fit: the node with room",
            json!([
                n("a", "500m", "1Gi"),
                n("b", "1", "1Gi"),
                n("c", "2", "1Gi")
            ]),
            json!([{"node": "b", "name": "x", "cpu": "800m"}]),
            json!({"name": "p", "cpu": "600m"}),
            Feasible(&["c"]),
        ),
        case(
            "fit: cpu and memory both short count twice",
            json!([n("a", "1", "1Gi")]),
            json!([]),
            json!({"name": "p", "cpu": "2", "memory": "2Gi"}),
            Error("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."),
        ),
        case(
            "fit: pod count",
            json!([nx("a", json!({"pods": "1"}))]),
            json!([{"node": "a", "name": "x"}]),
            json!({"name": "p"}),
            Error("0/1 nodes are available: 1 Too many pods."),
        ),
        case(
            "fit: extended resources",
            json!([
                nx("a", json!({"extended": {"nvidia.com/gpu": "1"}})),
                nx("b", json!({"extended": {"nvidia.com/gpu": "2"}})),
                n("c", "4", "8Gi")
            ]),
            json!([]),
            json!({"name": "p", "extended": {"nvidia.com/gpu": "2"}}),
            Feasible(&["b"]),
        ),
        case(
            "fit: extended resource short",
            json!([nx("a", json!({"extended": {"nvidia.com/gpu": "1"}}))]),
            json!([{"node": "a", "name": "x", "extended": {"nvidia.com/gpu": "1"}}]),
            json!({"name": "p", "extended": {"nvidia.com/gpu": "1"}}),
            Error("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
        ),
        case(
            "fit: a pod without requests fits a full node",
            json!([n("a", "1", "1Gi")]),
            json!([{"node": "a", "name": "x", "cpu": "1", "memory": "1Gi"}]),
            json!({"name": "p"}),
            Node("a"),
        ),
        case(
            "fit: init containers and overhead count",
            json!([n("a", "1", "1Gi"), n("b", "2", "1Gi")]),
            json!([]),
            json!({"name": "p", "cpu": "100m", "spec": {
                "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "900m"}}}],
                "overhead": {"cpu": "200m"}
            }}),
            Feasible(&["b"]),
        ),
        // TaintToleration and readiness
        case(
            "taints: the not-ready example from kube-scheduler",
            json!([
                n("a", "100m", "1Gi"),
                n("b", "100m", "1Gi"),
                nx("c", json!({"ready": "False"})),
                nx("d", json!({"ready": "False"})),
                nx("e", json!({"ready": "False"}))
            ]),
            json!([]),
            json!({"name": "p", "cpu": "500m"}),
            Error(
                "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.",
            ),
        ),
        case(
            "taints: readiness unknown is unreachable, no condition is not ready",
            json!([
                nx("a", json!({"ready": "Unknown"})),
                nx("b", json!({"ready": null}))
            ]),
            json!([]),
            json!({"name": "p"}),
            Error(
                "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.",
            ),
        ),
        case(
            "taints: NoSchedule and NoExecute filter",
            json!([
                nx("a", json!({"taints": ["dedicated=db:NoSchedule"]})),
                nx("b", json!({"taints": ["team=x:NoExecute"]}))
            ]),
            json!([]),
            json!({"name": "p"}),
            Error(
                "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) had untolerated taint {team: x}.",
            ),
        ),
        case(
            "taints: an Equal toleration with the right effect",
            json!([
                nx("a", json!({"taints": ["dedicated=db:NoSchedule"]})),
                nx("b", json!({"taints": ["team=x:NoExecute"]}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"},
                {"key": "team", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
            ]}}),
            Feasible(&["a"]),
        ),
        case(
            "taints: Exists with no key tolerates everything",
            json!([
                nx("a", json!({"taints": ["dedicated=db:NoSchedule"]})),
                nx("b", json!({"ready": "False"}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"tolerations": [{"operator": "Exists"}]}}),
            Feasible(&["a", "b"]),
        ),
        case(
            "taints: PreferNoSchedule does not filter",
            json!([nx("a", json!({"taints": ["x=1:PreferNoSchedule"]}))]),
            json!([]),
            json!({"name": "p"}),
            Node("a"),
        ),
        // NodeUnschedulable
        case(
            "unschedulable: cordoned nodes",
            json!([
                nx("a", json!({"unschedulable": true})),
                nx("b", json!({"unschedulable": true}))
            ]),
            json!([]),
            json!({"name": "p"}),
            Error("0/2 nodes are available: 2 node(s) were unschedulable."),
        ),
        case(
            "unschedulable: tolerating the unschedulable taint",
            json!([nx("a", json!({"unschedulable": true}))]),
            json!([]),
            json!({"name": "p", "spec": {"tolerations": [
                {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
            ]}}),
            Node("a"),
        ),
        // NodeName
        case(
            "nodeName: the named node",
            json!([n("a", "4", "8Gi"), n("b", "4", "8Gi")]),
            json!([]),
            json!({"name": "p", "spec": {"nodeName": "b"}}),
            Node("b"),
        ),
        case(
            "nodeName: a node that does not exist",
            json!([n("a", "4", "8Gi"), n("b", "4", "8Gi")]),
            json!([]),
            json!({"name": "p", "spec": {"nodeName": "zzz"}}),
            Error("0/2 nodes are available: 2 node(s) didn't match the requested node name."),
        ),
        // NodeAffinity
        case(
            "affinity: nodeSelector",
            json!([
                nx("a", json!({"labels": {"disk": "ssd"}})),
                nx("b", json!({"labels": {"disk": "hdd"}}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"nodeSelector": {"disk": "ssd"}}}),
            Node("a"),
        ),
        case(
            "affinity: nodeSelector matching nothing",
            json!([
                nx("a", json!({"labels": {"disk": "ssd"}})),
                nx("b", json!({"labels": {"disk": "hdd"}}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"nodeSelector": {"disk": "nvme"}}}),
            Error("0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."),
        ),
        case(
            "affinity: Gt and DoesNotExist",
            affinity_nodes(),
            json!([]),
            required(json!([{"matchExpressions": [
                {"key": "cores", "operator": "Gt", "values": ["8"]},
                {"key": "gpu", "operator": "DoesNotExist"}
            ]}])),
            Feasible(&["c"]),
        ),
        case(
            "affinity: Lt ignores non-numeric labels",
            affinity_nodes(),
            json!([]),
            required(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["20"]}]}]),
            ),
            Feasible(&["a", "b"]),
        ),
        case(
            "affinity: NotIn matches nodes without the label",
            affinity_nodes(),
            json!([]),
            required(
                json!([{"matchExpressions": [{"key": "gen", "operator": "NotIn", "values": ["2", "3"]}]}]),
            ),
            Feasible(&["c", "d"]),
        ),
        case(
            "affinity: Exists and In",
            affinity_nodes(),
            json!([]),
            required(json!([{"matchExpressions": [
                {"key": "gpu", "operator": "Exists"},
                {"key": "gen", "operator": "In", "values": ["3", "4"]}
            ]}])),
            Feasible(&["b"]),
        ),
        case(
            "affinity: terms are ORed",
            affinity_nodes(),
            json!([]),
            required(json!([
                {"matchExpressions": [{"key": "gen", "operator": "In", "values": ["9"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["20"]}]}
            ])),
            Feasible(&["c"]),
        ),
        case(
            "affinity: matchFields metadata.name",
            affinity_nodes(),
            json!([]),
            required(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b", "d"]}]}]),
            ),
            Feasible(&["b", "d"]),
        ),
        case(
            "affinity: an empty term matches no node",
            affinity_nodes(),
            json!([]),
            required(json!([{}])),
            Error("0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."),
        ),
        // Runtime compatibility
        case(
            "runtime: wasm pods go to wasm nodes of any arch",
            json!([
                nx("a", json!({"labels": {"kubernetes.io/arch": "amd64"}})),
                nx(
                    "b",
                    json!({"runtime": "wasm", "labels": {"kubernetes.io/arch": "arm64"}})
                ),
                nx(
                    "c",
                    json!({"runtime": "both", "labels": {"kubernetes.io/arch": "riscv64"}})
                )
            ]),
            json!([]),
            json!({"name": "p", "spec": {"runtimeClassName": "wasm"}}),
            Feasible(&["b", "c"]),
        ),
        case(
            "runtime: no wasm node",
            json!([n("a", "4", "8Gi"), nx("b", json!({"runtime": "none"}))]),
            json!([]),
            json!({"name": "p", "spec": {"runtimeClassName": "wasm"}}),
            Error("0/2 nodes are available: 2 node(s) didn't support the pod's runtime (wasm)."),
        ),
        case(
            "runtime: OCI pods need OCI nodes",
            json!([
                nx("a", json!({"runtime": "wasm"})),
                nx("b", json!({"runtime": "none"})),
                nx("c", json!({"runtime": "both"}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"runtimeClassName": "runc"}}),
            Feasible(&["c"]),
        ),
        case(
            "runtime: image platforms pick the arch",
            platform_nodes(),
            json!([]),
            json!({"name": "p", "platforms": ["linux/arm64", "linux/s390x"]}),
            Feasible(&["b"]),
        ),
        case(
            "runtime: no node of the image's platforms",
            platform_nodes(),
            json!([]),
            json!({"name": "p", "platforms": ["windows/amd64"]}),
            Error(
                "0/3 nodes are available: 1 node(s) didn't support the pod's runtime (oci), 2 node(s) didn't match the image's platforms.",
            ),
        ),
        case(
            "runtime: wasm pods ignore image platforms",
            platform_nodes(),
            json!([]),
            json!({"name": "p", "platforms": ["windows/amd64"], "spec": {"runtimeClassName": "wasm"}}),
            Feasible(&["c"]),
        ),
        // InterPodAffinity
        case(
            "pod affinity: to the zone of a db pod",
            zones3(),
            json!([{"node": "b", "name": "db-0", "labels": {"app": "db"}}]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({}),
            ),
            Feasible(&["b", "c"]),
        ),
        case(
            "pod affinity: the first pod of a self-affine group goes anywhere",
            zones3(),
            json!([]),
            labelled(
                with_affinity(
                    "podAffinity",
                    "topology.kubernetes.io/zone",
                    json!({"matchLabels": {"app": "db"}}),
                    json!({}),
                ),
                json!({"app": "db"}),
            ),
            Feasible(&["a", "b", "c"]),
        ),
        case(
            "pod affinity: no matching pod",
            zones3(),
            json!([]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({}),
            ),
            Error("0/3 nodes are available: 3 node(s) didn't match pod affinity rules."),
        ),
        case(
            "pod affinity: other namespaces only when named",
            zones3(),
            json!([{"node": "b", "name": "db-0", "ns": "data", "labels": {"app": "db"}}]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({}),
            ),
            Error("0/3 nodes are available: 3 node(s) didn't match pod affinity rules."),
        ),
        case(
            "pod affinity: a named namespace",
            zones3(),
            json!([{"node": "b", "name": "db-0", "ns": "data", "labels": {"app": "db"}}]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({"namespaces": ["data"]}),
            ),
            Feasible(&["b", "c"]),
        ),
        case(
            "pod affinity: an empty namespaceSelector means all namespaces",
            zones3(),
            json!([{"node": "a", "name": "db-0", "ns": "data", "labels": {"app": "db"}}]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({"namespaceSelector": {}}),
            ),
            Feasible(&["a"]),
        ),
        case(
            "pod affinity: nodes without the topology key never match",
            json!([zone("a", "z1"), n("b", "4", "8Gi")]),
            json!([{"node": "a", "name": "db-0", "labels": {"app": "db"}}]),
            with_affinity(
                "podAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "db"}}),
                json!({}),
            ),
            Feasible(&["a"]),
        ),
        case(
            "pod anti-affinity: one per host",
            zones3(),
            json!([{"node": "a", "name": "web-0", "labels": {"app": "web"}}]),
            with_affinity(
                "podAntiAffinity",
                "kubernetes.io/hostname",
                json!({"matchLabels": {"app": "web"}}),
                json!({}),
            ),
            Feasible(&["b", "c"]),
        ),
        case(
            "pod anti-affinity: one per zone",
            zones3(),
            json!([{"node": "b", "name": "web-0", "labels": {"app": "web"}}]),
            with_affinity(
                "podAntiAffinity",
                "topology.kubernetes.io/zone",
                json!({"matchLabels": {"app": "web"}}),
                json!({}),
            ),
            Feasible(&["a"]),
        ),
        case(
            "pod anti-affinity: of an existing pod",
            zones3(),
            json!([{"node": "a", "name": "loner", "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
            ]}}}}]),
            json!({"name": "p", "labels": {"app": "web"}}),
            Feasible(&["b", "c"]),
        ),
        case(
            "pod anti-affinity: of an existing pod, nowhere else to go",
            json!([zone("a", "z1")]),
            json!([{"node": "a", "name": "loner", "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
            ]}}}}]),
            json!({"name": "p", "labels": {"app": "web"}}),
            Error(
                "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules.",
            ),
        ),
        // PodTopologySpread
        case(
            "spread: to the emptiest zone",
            json!([zone("a", "z1"), zone("b", "z2"), zone("c", "z3")]),
            json!([web("w0", "a"), web("w1", "a"), web("w2", "b")]),
            spread(json!({})),
            Feasible(&["c"]),
        ),
        case(
            "spread: tainted domains count unless nodeTaintsPolicy is Honor",
            json!([
                zone("a", "z1"),
                zone("b", "z2"),
                nx(
                    "c",
                    json!({"taints": ["x=y:NoSchedule"], "labels": {"topology.kubernetes.io/zone": "z3"}})
                )
            ]),
            json!([web("w0", "a"), web("w1", "b")]),
            spread(json!({})),
            Error(
                "0/3 nodes are available: 1 node(s) had untolerated taint {x: y}, 2 node(s) didn't match pod topology spread constraints.",
            ),
        ),
        case(
            "spread: nodeTaintsPolicy Honor",
            json!([
                zone("a", "z1"),
                zone("b", "z2"),
                nx(
                    "c",
                    json!({"taints": ["x=y:NoSchedule"], "labels": {"topology.kubernetes.io/zone": "z3"}})
                )
            ]),
            json!([web("w0", "a"), web("w1", "b")]),
            spread(json!({"nodeTaintsPolicy": "Honor"})),
            Feasible(&["a", "b"]),
        ),
        case(
            "spread: nodes without the key",
            json!([zone("a", "z1"), n("b", "4", "8Gi")]),
            json!([]),
            spread(json!({})),
            Feasible(&["a"]),
        ),
        case(
            "spread: missing required label",
            json!([n("b", "4", "8Gi")]),
            json!([]),
            spread(json!({})),
            Error(
                "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label).",
            ),
        ),
        case(
            "spread: balanced domains",
            json!([zone("a", "z1"), zone("b", "z2")]),
            json!([web("w0", "a"), web("w1", "b")]),
            spread(json!({})),
            Feasible(&["a", "b"]),
        ),
        case(
            "spread: fewer domains than minDomains",
            json!([zone("a", "z1"), zone("b", "z2")]),
            json!([web("w0", "a"), web("w1", "b")]),
            spread(json!({"minDomains": 3})),
            Error(
                "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints.",
            ),
        ),
        case(
            "spread: nodeAffinityPolicy Honor leaves unselectable domains out",
            ssd_zones(),
            json!([web("w0", "a"), web("w1", "b")]),
            with_spec(spread(json!({})), json!({"nodeSelector": {"disk": "ssd"}})),
            Feasible(&["a", "b"]),
        ),
        case(
            "spread: nodeAffinityPolicy Ignore counts them",
            ssd_zones(),
            json!([web("w0", "a"), web("w1", "b")]),
            with_spec(
                spread(json!({"nodeAffinityPolicy": "Ignore"})),
                json!({"nodeSelector": {"disk": "ssd"}}),
            ),
            Error(
                "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) didn't match pod topology spread constraints.",
            ),
        ),
    ]
}

fn scoring_cases() -> Vec<Case> {
    use Expect::*;
    let loaded = || {
        (
            json!([n("a", "4", "8Gi"), n("b", "4", "8Gi"), n("c", "4", "8Gi")]),
            json!([
                {"node": "b", "name": "x", "cpu": "2", "memory": "4Gi"},
                {"node": "c", "name": "y", "cpu": "3", "memory": "6Gi"}
            ]),
        )
    };
    let (nodes, placed) = loaded();
    let (nodes2, placed2) = loaded();
    vec![
        case(
            "score: LeastAllocated prefers the emptiest",
            nodes,
            placed,
            json!({"name": "p", "cpu": "500m", "memory": "1Gi"}),
            Ranking(&["a", "b", "c"]),
        ),
        most_allocated(case(
            "score: MostAllocated packs",
            nodes2,
            placed2,
            json!({"name": "p", "cpu": "500m", "memory": "1Gi"}),
            Ranking(&["c", "b", "a"]),
        )),
        case(
            "score: balanced allocation breaks an equal fit",
            json!([n("a", "4", "4Gi"), n("b", "4", "4Gi")]),
            json!([
                {"node": "a", "name": "x", "cpu": "2", "memory": "2Gi"},
                {"node": "b", "name": "y", "cpu": "3", "memory": "1Gi"}
            ]),
            json!({"name": "p", "cpu": "1", "memory": "1Gi"}),
            Ranking(&["a", "b"]),
        ),
        case(
            "score: preferred node affinity weights",
            json!([
                nx("a", json!({"labels": {"disk": "ssd"}})),
                nx("b", json!({"labels": {"disk": "hdd", "gen": "3"}})),
                nx("c", json!({}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "gen", "operator": "Exists"}]}}
            ]}}}}),
            Ranking(&["a", "b", "c"]),
        ),
        case(
            "score: PreferNoSchedule taints",
            json!([
                nx("a", json!({})),
                nx("b", json!({"taints": ["x=1:PreferNoSchedule"]})),
                nx(
                    "c",
                    json!({"taints": ["x=1:PreferNoSchedule", "y:PreferNoSchedule"]})
                )
            ]),
            json!([]),
            json!({"name": "p"}),
            Ranking(&["a", "b", "c"]),
        ),
        case(
            "score: tolerated PreferNoSchedule taints cost nothing",
            json!([
                nx("a", json!({"taints": ["x=1:PreferNoSchedule"]})),
                nx("b", json!({"taints": ["y:PreferNoSchedule"]}))
            ]),
            json!([]),
            json!({"name": "p", "spec": {"tolerations": [{"key": "x", "operator": "Exists", "effect": "PreferNoSchedule"}]}}),
            Ranking(&["a", "b"]),
        ),
        case(
            "score: preferred pod affinity",
            zones3(),
            json!([
                {"node": "a", "name": "cache-0", "labels": {"app": "cache"}},
                {"node": "c", "name": "filler", "labels": {"app": "filler"}, "cpu": "1"}
            ]),
            preferred("podAffinity", 50),
            Ranking(&["a", "b", "c"]),
        ),
        case(
            "score: preferred pod anti-affinity",
            zones3(),
            json!([
                {"node": "a", "name": "cache-0", "labels": {"app": "cache"}},
                {"node": "c", "name": "filler", "labels": {"app": "filler"}, "cpu": "1"}
            ]),
            preferred("podAntiAffinity", 50),
            Ranking(&["b", "c", "a"]),
        ),
        case(
            "score: existing pods' preferred affinity towards the pod",
            zones3(),
            json!([
                {"node": "b", "name": "fan", "spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"role": "star"}}, "topologyKey": "kubernetes.io/hostname"}}
                ]}}}},
                {"node": "a", "name": "filler", "cpu": "1"}
            ]),
            json!({"name": "p", "labels": {"role": "star"}}),
            Ranking(&["b", "c", "a"]),
        ),
        case(
            "score: default spreading by hostname and zone",
            json!([zone("a", "z1"), zone("b", "z2"), zone("c", "z3")]),
            json!([web("w0", "a"), web("w1", "a"), web("w2", "b")]),
            json!({"name": "p", "labels": {"app": "web"}}),
            Ranking(&["c", "b", "a"]),
        ),
        case(
            "score: ScheduleAnyway by zone",
            json!([zone("a", "z1"), zone("b", "z1"), zone("c", "z2")]),
            json!([web("w0", "a"), web("w1", "a"), web("w2", "a")]),
            with_spec(
                json!({"name": "p", "labels": {"app": "web"}}),
                json!({"topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}
                }]}),
            ),
            Ranking(&["c", "b", "a"]),
        ),
    ]
}

fn affinity_nodes() -> Value {
    json!([
        nx("a", json!({"labels": {"cores": "4", "gen": "2"}})),
        nx(
            "b",
            json!({"labels": {"cores": "16", "gen": "3", "gpu": "yes"}})
        ),
        nx("c", json!({"labels": {"cores": "32"}})),
        nx("d", json!({"labels": {"cores": "many"}}))
    ])
}

fn platform_nodes() -> Value {
    json!([
        nx(
            "a",
            json!({"labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}})
        ),
        nx(
            "b",
            json!({"labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}})
        ),
        nx(
            "c",
            json!({"runtime": "wasm", "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "arm64"}})
        )
    ])
}

fn zones3() -> Value {
    json!([zone("a", "z1"), zone("b", "z2"), zone("c", "z2")])
}

fn ssd_zones() -> Value {
    json!([
        nx(
            "a",
            json!({"labels": {"topology.kubernetes.io/zone": "z1", "disk": "ssd"}})
        ),
        nx(
            "b",
            json!({"labels": {"topology.kubernetes.io/zone": "z2", "disk": "ssd"}})
        ),
        nx(
            "c",
            json!({"labels": {"topology.kubernetes.io/zone": "z3", "disk": "hdd"}})
        )
    ])
}

fn required(terms: Value) -> Value {
    json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
    }}}})
}

fn with_affinity(kind: &str, key: &str, selector: Value, extra: Value) -> Value {
    let mut term = json!({"labelSelector": selector, "topologyKey": key});
    term.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"name": "p", "spec": {"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}}})
}

fn preferred(kind: &str, weight: i32) -> Value {
    json!({"name": "p", "spec": {"affinity": {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": weight, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}}
    ]}}}})
}

fn labelled(mut pod: Value, labels: Value) -> Value {
    pod["labels"] = labels;
    pod
}

fn with_spec(mut pod: Value, spec: Value) -> Value {
    let s = pod
        .as_object_mut()
        .unwrap()
        .entry("spec")
        .or_insert(json!({}));
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    pod
}

fn web(name: &str, node: &str) -> Value {
    json!({"node": node, "name": name, "labels": {"app": "web"}})
}

/// An app=web pod with a DoNotSchedule zone constraint (maxSkew 1) plus
/// `extra` fields.
fn spread(extra: Value) -> Value {
    let mut c = json!({
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"name": "p", "labels": {"app": "web"}, "spec": {"topologySpreadConstraints": [c]}})
}

fn pod_info(v: &Value) -> skiff_sched::PodInfo {
    let mut p = pod(v);
    if let Some(platforms) = v.get("platforms").and_then(Value::as_array) {
        p.image_platforms = Some(
            platforms
                .iter()
                .map(|s| {
                    let (os, arch) = s.as_str().unwrap().split_once('/').unwrap();
                    Platform::new(os, arch)
                })
                .collect(),
        );
    }
    p
}

/// Runs a case; returns its score table for the golden file, if it has one.
fn run(c: &Case) -> Option<String> {
    let snap = snapshot(&c.nodes, &c.placed);
    let scheduler = Scheduler::new(c.config.clone());
    let p = pod_info(&c.pod);
    let result = scheduler.schedule(&p, &snap);
    let scores = scheduler.score_nodes(&p, &snap);
    match &c.expect {
        Expect::Error(msg) => {
            let err = result.expect_err(c.name);
            assert_eq!(err.to_string(), *msg, "{}", c.name);
            assert_eq!(
                scores.expect_err(c.name),
                err,
                "{}: score_nodes agrees",
                c.name
            );
            return None;
        }
        Expect::Node(node) => {
            assert_eq!(result.expect(c.name).node, *node, "{}", c.name);
        }
        Expect::Feasible(want) => {
            let mut got: Vec<String> = scores
                .as_ref()
                .expect(c.name)
                .iter()
                .map(|s| s.node.clone())
                .collect();
            got.sort();
            assert_eq!(got, *want, "{}: feasible nodes", c.name);
            let placed = result.expect(c.name);
            assert!(want.contains(&placed.node.as_str()), "{}", c.name);
            assert_eq!(placed.feasible, want.len(), "{}", c.name);
        }
        Expect::Ranking(want) => {
            let scores = scores.as_ref().expect(c.name);
            let got: Vec<&str> = scores.iter().map(|s| s.node.as_str()).collect();
            assert_eq!(got, *want, "{}: ranking", c.name);
            for w in scores.windows(2) {
                assert!(
                    w[0].total > w[1].total,
                    "{}: the ranking has a tie: {scores:?}",
                    c.name
                );
            }
            let placed = result.expect(c.name);
            assert_eq!(placed.node, want[0], "{}", c.name);
            assert_eq!(placed.score, scores[0].total, "{}", c.name);
        }
    }
    let mut out = format!("## {}\n", c.name);
    for s in scores.expect(c.name) {
        let plugins: Vec<String> = s
            .plugins
            .iter()
            .map(|(name, v)| format!("{name}={v}"))
            .collect();
        writeln!(out, "{:<3} {:>5}  {}", s.node, s.total, plugins.join(" ")).unwrap();
    }
    Some(out)
}

#[test]
fn filters_and_scores_match_golden() {
    let mut golden = String::new();
    let cases: Vec<Case> = filter_cases().into_iter().chain(scoring_cases()).collect();
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {}", c.name);
        if let Some(table) = run(c) {
            golden.push_str(&table);
            golden.push('\n');
        }
    }
    // The package's directory now, not where the binary was first built.
    let dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&dir).join("tests/golden/scores.txt");
    if std::env::var_os("SKIFF_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &golden).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .expect("tests/golden/scores.txt (SKIFF_UPDATE_GOLDEN=1 writes it)");
    if want != golden {
        let first = want.lines().zip(golden.lines()).position(|(a, b)| a != b);
        panic!(
            "scores differ from tests/golden/scores.txt at line {:?}:\n--- want\n{}\n--- got\n{}",
            first.map(|l| l + 1),
            first.map_or("", |l| want.lines().nth(l).unwrap_or("")),
            first.map_or("", |l| golden.lines().nth(l).unwrap_or("")),
        );
    }
}
