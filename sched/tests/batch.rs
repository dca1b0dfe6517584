//! Batches (priority order, incremental snapshot), preemption choices,
//! percentageOfNodesToScore and tie-breaking.

mod common;

use common::{pod, snapshot};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{Value, json};
use skiff_sched::{
    Config, DisruptionBudget, NodeInfo, PodInfo, Preemption, Scheduler, ScoringStrategy, Snapshot,
};

fn pods(list: Value) -> Vec<PodInfo> {
    list.as_array().unwrap().iter().map(pod).collect()
}

fn outcome(results: &[Result<skiff_sched::Placement, skiff_sched::FitError>]) -> Vec<String> {
    results
        .iter()
        .map(|r| match r {
            Ok(p) => p.node.clone(),
            Err(e) => e.to_string(),
        })
        .collect()
}

#[test]
fn batch_places_higher_priority_first_and_reports_in_input_order() {
    let mut snap = snapshot(
        &json!([{"name": "a", "cpu": "1", "memory": "1Gi"}]),
        &json!([]),
    );
    let batch = pods(json!([
        {"name": "low", "cpu": "1", "priority": 0},
        {"name": "high", "cpu": "1", "priority": 100},
        {"name": "tiny", "cpu": "0", "priority": 50}
    ]));
    let results = Scheduler::new(Config::exhaustive()).schedule_batch(&batch, &mut snap);
    assert_eq!(
        outcome(&results),
        ["0/1 nodes are available: 1 Insufficient cpu.", "a", "a"]
    );
    assert_eq!(snap.pod_node("default", "high"), Some("a"));
    assert_eq!(snap.pod_node("default", "low"), None);
    assert_eq!(snap.node_usage("a").unwrap().requested_cpu_millis, 1000);
}

#[test]
fn batch_sees_its_own_placements() {
    let nodes = json!([
        {"name": "a", "cpu": "4", "memory": "8Gi", "labels": {"topology.kubernetes.io/zone": "z1"}},
        {"name": "b", "cpu": "4", "memory": "8Gi", "labels": {"topology.kubernetes.io/zone": "z2"}}
    ]);
    let replica = |i: usize| {
        json!({"name": format!("web-{i}"), "labels": {"app": "web"}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}}}})
    };
    let mut snap = snapshot(&nodes, &json!([]));
    let batch = pods(json!([replica(0), replica(1), replica(2)]));
    let results = Scheduler::new(Config::exhaustive()).schedule_batch(&batch, &mut snap);
    let got = outcome(&results);
    assert_ne!(got[0], got[1], "one replica per host");
    assert_eq!(
        got[2],
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
    assert_eq!(snap.pod_count(), 2);
}

#[test]
fn batch_spreads_across_zones() {
    let nodes: Value = (0..3)
        .map(|i| json!({"name": format!("n{i}"), "cpu": "8", "memory": "8Gi", "labels": {"topology.kubernetes.io/zone": format!("z{i}")}}))
        .collect();
    let batch: Value = (0..6)
        .map(|i| {
            json!({"name": format!("p{i}"), "labels": {"app": "web"}, "spec": {"topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}
            }]}})
        })
        .collect();
    let mut snap = snapshot(&nodes, &json!([]));
    let results = Scheduler::new(Config::exhaustive()).schedule_batch(&pods(batch), &mut snap);
    assert!(results.iter().all(Result::is_ok));
    for i in 0..3 {
        assert_eq!(snap.node_usage(&format!("n{i}")).unwrap().pods, 2);
    }
}

#[test]
fn most_allocated_packs_a_batch() {
    let nodes = json!([{"name": "a", "cpu": "2", "memory": "4Gi"}, {"name": "b", "cpu": "2", "memory": "4Gi"}]);
    let batch: Value = (0..4)
        .map(|i| json!({"name": format!("p{i}"), "cpu": "1", "memory": "1Gi"}))
        .collect();
    let config = Config {
        scoring_strategy: ScoringStrategy::MostAllocated,
        ..Config::exhaustive()
    };
    let mut snap = snapshot(&nodes, &json!([]));
    let got = outcome(&Scheduler::new(config).schedule_batch(&pods(batch), &mut snap));
    assert_eq!(got[0], got[1], "the second pod joins the first: {got:?}");
    assert_eq!(got[2], got[3]);
    assert_ne!(got[0], got[2]);

    let mut snap = snapshot(&nodes, &json!([]));
    let batch: Value = (0..2)
        .map(|i| json!({"name": format!("p{i}"), "cpu": "1", "memory": "1Gi"}))
        .collect();
    let got =
        outcome(&Scheduler::new(Config::exhaustive()).schedule_batch(&pods(batch), &mut snap));
    assert_ne!(got[0], got[1], "LeastAllocated spreads: {got:?}");
}

#[test]
fn spread_domains_follow_added_nodes() {
    let ssd = |name: &str, zone: &str| {
        json!({"name": name, "cpu": "4", "memory": "8Gi",
               "labels": {"disk": "ssd", "topology.kubernetes.io/zone": zone}})
    };
    let mut snap = snapshot(
        &json!([ssd("a", "z1"), ssd("b", "z2")]),
        &json!([{"node": "a", "name": "w0", "labels": {"app": "web"}},
                {"node": "b", "name": "w1", "labels": {"app": "web"}}]),
    );
    let p = pod(&json!({"name": "p", "labels": {"app": "web"}, "spec": {
        "nodeSelector": {"disk": "ssd"},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}}));
    let s = Scheduler::new(Config::exhaustive());
    assert_eq!(s.schedule(&p, &snap).unwrap().feasible, 2);
    // A new empty zone lowers the minimum to 0: only it is within maxSkew.
    snap.add_node(common::node(&ssd("c", "z3"))).unwrap();
    let placed = s.schedule(&p, &snap).unwrap();
    assert_eq!((placed.node.as_str(), placed.feasible), ("c", 1));
    assert!(
        snap.add_node(common::node(&ssd("c", "z4"))).is_err(),
        "names are unique"
    );
}

#[test]
fn remove_pod_frees_the_node() {
    let mut snap = snapshot(
        &json!([{"name": "a", "cpu": "1", "memory": "1Gi"}]),
        &json!([{"node": "a", "name": "x", "cpu": "1", "labels": {"app": "x"}}]),
    );
    let s = Scheduler::new(Config::exhaustive());
    let p = pod(&json!({"name": "p", "cpu": "1"}));
    assert!(s.schedule(&p, &snap).is_err());
    assert_eq!(snap.remove_pod("default", "x").as_deref(), Some("a"));
    assert_eq!(snap.remove_pod("default", "x"), None);
    assert_eq!(s.schedule(&p, &snap).unwrap().node, "a");
    assert_eq!(snap.pod_count(), 0);
    assert!(snap.add_pod("nope", &p).is_err());
}

// Preemption --------------------------------------------------------------

struct PreemptCase {
    name: &'static str,
    nodes: Value,
    placed: Value,
    /// PodDisruptionBudgets.
    budgets: Value,
    pod: Value,
    expect: Option<(&'static str, &'static [&'static str])>,
}

/// Node a runs `db` (which the budget in these cases selects), node b
/// `web`; each fills its node.
fn protected() -> Value {
    json!([
        {"node": "a", "name": "db", "cpu": "2", "labels": {"app": "db"}},
        {"node": "b", "name": "web", "cpu": "2", "labels": {"app": "web"}}
    ])
}

/// A PodDisruptionBudget over `app=<app>` in `default`, as the disruption
/// controller leaves it.
fn budget(app: &str, allowed: i32, disrupted: &[&str]) -> Value {
    let disrupted: serde_json::Map<String, Value> = disrupted
        .iter()
        .map(|p| (p.to_string(), json!("2026-11-25T00:00:00Z")))
        .collect();
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}},
        "status": {"currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1,
                   "disruptionsAllowed": allowed, "disruptedPods": disrupted},
    })
}

fn preempt_cases() -> Vec<PreemptCase> {
    let two = || json!([{"name": "a", "cpu": "2", "memory": "4Gi"}, {"name": "b", "cpu": "2", "memory": "4Gi"}]);
    vec![
        PreemptCase {
            name: "the fewest victims, reprieving what still fits",
            nodes: two(),
            placed: json!([
                {"node": "a", "name": "low-0", "cpu": "1", "priority": 0},
                {"node": "a", "name": "low-1", "cpu": "1", "priority": 0},
                {"node": "b", "name": "mid-0", "cpu": "2", "priority": 500}
            ]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            budgets: json!([]),
            expect: Some(("a", &["low-1"])),
        },
        PreemptCase {
            name: "the lowest highest-victim priority",
            nodes: two(),
            placed: json!([
                {"node": "a", "name": "hundred", "cpu": "2", "priority": 100},
                {"node": "b", "name": "ten", "cpu": "2", "priority": 10}
            ]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            budgets: json!([]),
            expect: Some(("b", &["ten"])),
        },
        PreemptCase {
            name: "fewer victims at equal priority",
            nodes: two(),
            placed: json!([
                {"node": "a", "name": "small-0", "cpu": "1", "priority": 0},
                {"node": "a", "name": "small-1", "cpu": "1", "priority": 0},
                {"node": "b", "name": "big", "cpu": "2", "priority": 0}
            ]),
            pod: json!({"name": "p", "cpu": "2", "priority": 1000}),
            budgets: json!([]),
            expect: Some(("b", &["big"])),
        },
        PreemptCase {
            name: "anti-affinity resolved by evicting the matching pod",
            nodes: json!([{"name": "a", "cpu": "4", "memory": "4Gi"}]),
            placed: json!([
                {"node": "a", "name": "web-old", "labels": {"app": "web"}, "priority": 0},
                {"node": "a", "name": "other", "labels": {"app": "other"}, "priority": 0}
            ]),
            pod: json!({"name": "p", "priority": 1000, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
            ]}}}}),
            budgets: json!([]),
            expect: Some(("a", &["web-old"])),
        },
        PreemptCase {
            name: "preemptionPolicy Never",
            nodes: two(),
            placed: json!([{"node": "a", "name": "low", "cpu": "2"}, {"node": "b", "name": "low2", "cpu": "2"}]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000, "spec": {"preemptionPolicy": "Never"}}),
            budgets: json!([]),
            expect: None,
        },
        PreemptCase {
            name: "taints are not fixed by evictions",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi", "taints": ["x=y:NoSchedule"]}]),
            placed: json!([{"node": "a", "name": "low", "cpu": "2", "spec": {"tolerations": [{"operator": "Exists"}]}}]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            budgets: json!([]),
            expect: None,
        },
        PreemptCase {
            name: "selectors are not fixed by evictions",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
            placed: json!([{"node": "a", "name": "low", "cpu": "2"}]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000, "spec": {"nodeSelector": {"disk": "ssd"}}}),
            budgets: json!([]),
            expect: None,
        },
        PreemptCase {
            name: "only lower priorities are victims",
            nodes: two(),
            placed: json!([
                {"node": "a", "name": "same", "cpu": "2", "priority": 1000},
                {"node": "b", "name": "higher", "cpu": "2", "priority": 2000}
            ]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            budgets: json!([]),
            expect: None,
        },
        PreemptCase {
            name: "evicting everything is still not enough",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
            placed: json!([{"node": "a", "name": "low", "cpu": "1"}]),
            pod: json!({"name": "p", "cpu": "3", "priority": 1000}),
            budgets: json!([]),
            expect: None,
        },
        PreemptCase {
            name: "a budget steers preemption to pods it does not protect",
            nodes: two(),
            placed: protected(),
            budgets: json!([budget("db", 0, &[])]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("b", &["web"])),
        },
        PreemptCase {
            name: "a budget with room to spare protects nothing",
            nodes: two(),
            placed: protected(),
            budgets: json!([budget("db", 1, &[])]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("a", &["db"])),
        },
        PreemptCase {
            name: "a pod the budget already counts as disrupted is not protected",
            nodes: two(),
            placed: protected(),
            budgets: json!([budget("db", 0, &["db"])]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("a", &["db"])),
        },
        PreemptCase {
            name: "budgets are violated when nothing else makes room",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
            placed: json!([{"node": "a", "name": "db", "cpu": "2", "labels": {"app": "db"}}]),
            budgets: json!([budget("db", 0, &[])]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("a", &["db"])),
        },
        PreemptCase {
            name: "protected pods are reprieved first",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
            placed: json!([
                {"node": "a", "name": "web", "cpu": "1", "labels": {"app": "web"}},
                {"node": "a", "name": "zdb", "cpu": "1", "labels": {"app": "db"}}
            ]),
            budgets: json!([budget("db", 0, &[])]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("a", &["web"])),
        },
        PreemptCase {
            name: "without the budget, the same node loses the pod sorted last",
            nodes: json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
            placed: json!([
                {"node": "a", "name": "web", "cpu": "1", "labels": {"app": "web"}},
                {"node": "a", "name": "zdb", "cpu": "1", "labels": {"app": "db"}}
            ]),
            budgets: json!([]),
            pod: json!({"name": "p", "cpu": "1", "priority": 1000}),
            expect: Some(("a", &["zdb"])),
        },
    ]
}

#[test]
fn preemption_chooses_like_kube_scheduler() {
    let s = Scheduler::new(Config::exhaustive());
    for c in preempt_cases() {
        let snap = snapshot(&c.nodes, &c.placed);
        let p = pod(&c.pod);
        assert!(
            s.schedule(&p, &snap).is_err(),
            "{}: the pod must not fit as is",
            c.name
        );
        let want = c.expect.map(|(node, victims)| Preemption {
            node: node.to_owned(),
            victims: victims
                .iter()
                .map(|v| ("default".to_owned(), v.to_string()))
                .collect(),
        });
        let budgets: Vec<DisruptionBudget> = c
            .budgets
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let pdb: PodDisruptionBudget = serde_json::from_value(b.clone()).unwrap();
                DisruptionBudget::from_pdb(&pdb).expect("a budget with a selector")
            })
            .collect();
        let got = s.preempt(&p, &snap, &budgets);
        assert_eq!(got, want, "{}", c.name);
        // Evicting the victims makes the pod fit on the chosen node.
        if let Some(pre) = got {
            let mut after = snap.clone();
            for (ns, name) in &pre.victims {
                after.remove_pod(ns, name).unwrap();
            }
            let placed = s
                .schedule(&p, &after)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(placed.node, pre.node, "{}", c.name);
        }
    }
}

#[test]
fn preempt_is_none_when_the_pod_fits() {
    let snap = snapshot(
        &json!([{"name": "a", "cpu": "2", "memory": "4Gi"}]),
        &json!([]),
    );
    let p = pod(&json!({"name": "p", "cpu": "1", "priority": 10}));
    assert_eq!(
        Scheduler::new(Config::default()).preempt(&p, &snap, &[]),
        None
    );
}

// percentageOfNodesToScore and ties ----------------------------------------

fn identical_nodes(n: usize) -> Snapshot {
    let nodes: Value = (0..n)
        .map(|i| json!({"name": format!("n{i:04}"), "cpu": "8", "memory": "16Gi"}))
        .collect();
    Snapshot::with_nodes(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .map(common::node)
            .collect::<Vec<NodeInfo>>(),
    )
    .unwrap()
}

#[test]
fn feasible_nodes_to_find_follow_kube_scheduler() {
    let s = Scheduler::new(Config::default());
    for (nodes, want) in [
        (50, 50),
        (99, 99),
        (100, 100),
        (150, 100),
        (1_000, 420),
        (5_000, 500),
        (10_000, 500),
        (100_000, 5_000),
    ] {
        assert_eq!(s.num_feasible_nodes_to_find(nodes), want, "{nodes} nodes");
    }
    let fixed = Scheduler::new(Config {
        percentage_of_nodes_to_score: Some(30),
        ..Config::default()
    });
    assert_eq!(fixed.num_feasible_nodes_to_find(1_000), 300);
    assert_eq!(fixed.num_feasible_nodes_to_find(200), 100);
    assert_eq!(
        Scheduler::new(Config::exhaustive()).num_feasible_nodes_to_find(10_000),
        10_000
    );
}

#[test]
fn large_clusters_stop_early_and_rotate() {
    let snap = identical_nodes(1_000);
    let s = Scheduler::new(Config::default());
    let first = s.schedule(&pod(&json!({"name": "p0"})), &snap).unwrap();
    assert_eq!((first.evaluated, first.feasible), (420, 420));
    // The next search starts where this one stopped, so it scores other nodes.
    let scored_first: Vec<String> = (0..420).map(|i| format!("n{i:04}")).collect();
    assert!(scored_first.contains(&first.node));
    let second = s.schedule(&pod(&json!({"name": "p0"})), &snap).unwrap();
    assert!(
        !scored_first.contains(&second.node),
        "{} was in the first window",
        second.node
    );
}

#[test]
fn ties_are_spread_but_deterministic() {
    let snap = identical_nodes(10);
    let s = Scheduler::new(Config::exhaustive());
    let mut chosen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let p = pod(&json!({"name": format!("p{i}")}));
        let a = s.schedule(&p, &snap).unwrap().node;
        let b = s.schedule(&p, &snap).unwrap().node;
        assert_eq!(a, b, "same pod, same snapshot, same node");
        chosen.insert(a);
    }
    assert!(chosen.len() >= 5, "equal nodes share the load: {chosen:?}");
}
