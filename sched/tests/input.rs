//! Quantities and malformed objects: every bad input is a clear error that
//! names the field, never a panic.

mod common;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use skiff_sched::{NodeInfo, PodInfo, Quantity};

#[test]
fn quantities() {
    // (text, milli value, value)
    let table: &[(&str, i64, i64)] = &[
        ("100m", 100, 1),
        ("0.5", 500, 1),
        ("1", 1_000, 1),
        ("1.5", 1_500, 2),
        ("1Gi", 1_073_741_824_000, 1_073_741_824),
        ("500M", 500_000_000_000, 500_000_000),
        ("1e3", 1_000_000, 1_000),
        ("2Ki", 2_048_000, 2_048),
        ("128974848", 128_974_848_000, 128_974_848),
        ("129e6", 129_000_000_000, 129_000_000),
        ("123Mi", 128_974_848_000, 128_974_848),
        ("0", 0, 0),
        ("1m", 1, 1),
        ("+2", 2_000, 2),
        ("250m", 250, 1),
        (".25", 250, 1),
    ];
    for &(text, milli, value) in table {
        let q = Quantity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(q.milli_value().unwrap(), milli, "{text} milli");
        assert_eq!(q.value().unwrap(), value, "{text} value");
    }
}

#[test]
fn random_strings_never_panic() {
    const ALPHABET: &[u8] = b"0123456789.+-eEmkMGTPiKx ";
    let mut state = 0x1234_5678_u64;
    for _ in 0..20_000 {
        let len = 1 + (state % 8) as usize;
        let mut s = String::new();
        for _ in 0..len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push(ALPHABET[(state >> 33) as usize % ALPHABET.len()] as char);
        }
        if let Ok(q) = Quantity::parse(&s) {
            let _ = q.milli_value();
            let _ = q.value();
        }
    }
}

fn pod_error(v: Value) -> String {
    let p: Pod = serde_json::from_value(common::pod_json(&v)).expect("valid Pod JSON");
    PodInfo::from_pod(&p)
        .expect_err("should be rejected")
        .to_string()
}

fn node_error(v: Value) -> String {
    let n: Node = serde_json::from_value(common::node_json(&v)).expect("valid Node JSON");
    NodeInfo::from_node(&n)
        .expect_err("should be rejected")
        .to_string()
}

#[test]
fn malformed_pods_are_errors() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "p", "cpu": "1.5.5"}),
            "spec.containers[0].resources.requests[cpu]: invalid quantity \"1.5.5\": more than one decimal point",
        ),
        (
            json!({"name": "p", "memory": "lots"}),
            "spec.containers[0].resources.requests[memory]: invalid quantity \"lots\": no digits",
        ),
        (
            json!({"name": "p", "memory": "1GB"}),
            "spec.containers[0].resources.requests[memory]: invalid quantity \"1GB\": unknown suffix",
        ),
        (
            json!({"name": "p", "cpu": "-1"}),
            "spec.containers[0].resources.requests[cpu]: must be non-negative, got \"-1\"",
        ),
        (
            json!({"name": "p", "cpu": "1e30"}),
            "spec.containers[0].resources.requests[cpu]: quantity \"1e30\" is too large",
        ),
        (
            json!({"name": "p", "spec": {"overhead": {"cpu": "x"}}}),
            "spec.overhead[cpu]: invalid quantity \"x\": no digits",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Foo", "values": ["v"]}]}]}}}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator \"Foo\"",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In"}]}]}}}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: must be non-empty for In",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["eight"]}]}]}}}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: must be a single integer for Gt",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}]}}}}}),
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key: unsupported field \"metadata.uid\"",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}, "topologyKey": "zone"}]}}}}),
            "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: unknown operator \"Gt\"",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {}, "topologyKey": ""}]}}}}),
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: required",
        ),
        (
            json!({"name": "p", "spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 0, "preference": {}}]}}}}),
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: must be in 1..=100, got 0",
        ),
        (
            json!({"name": "p", "spec": {"tolerations": [{"key": "k", "operator": "Maybe"}]}}),
            "spec.tolerations[0].operator: unknown operator \"Maybe\"",
        ),
        (
            json!({"name": "p", "spec": {"tolerations": [{"operator": "Equal", "value": "v"}]}}),
            "spec.tolerations[0].operator: must be Exists when key is empty",
        ),
        (
            json!({"name": "p", "spec": {"topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes"}]}}),
            "spec.topologySpreadConstraints[0].whenUnsatisfiable: unknown value \"Sometimes\"",
        ),
        (
            json!({"name": "p", "spec": {"topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}]}}),
            "spec.topologySpreadConstraints[0].maxSkew: must be at least 1",
        ),
        (
            json!({"name": "p", "spec": {"preemptionPolicy": "Always"}}),
            "spec.preemptionPolicy: unknown policy \"Always\"",
        ),
        (json!({"name": ""}), "metadata.name: required"),
    ];
    for (pod, want) in cases {
        assert_eq!(pod_error(pod), want);
    }
}

#[test]
fn malformed_nodes_are_errors() {
    assert_eq!(
        node_error(json!({"name": "n", "cpu": "4", "memory": "lots"})),
        "status.allocatable[memory]: invalid quantity \"lots\": no digits"
    );
    assert_eq!(
        node_error(json!({"name": "n", "cpu": "4", "memory": "1Gi", "taints": ["k=v:Sometimes"]})),
        "spec.taints[0].effect: unknown taint effect \"Sometimes\""
    );
    assert_eq!(
        node_error(json!({"name": "n", "cpu": "4", "memory": "1Gi", "pods": "-3"})),
        "status.allocatable[pods]: must be non-negative, got \"-3\""
    );
    let nameless: Node = serde_json::from_value(json!({"metadata": {}})).unwrap();
    assert_eq!(
        NodeInfo::from_node(&nameless).unwrap_err().to_string(),
        "metadata.name: required"
    );
}

#[test]
fn sparse_objects_are_read_with_defaults() {
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
    let p = PodInfo::from_pod(&bare).unwrap();
    assert_eq!(
        (p.namespace.as_str(), p.priority, p.requests.cpu_millis),
        ("default", 0, 0)
    );

    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n"},
        "status": {"capacity": {"cpu": "2", "memory": "1Gi", "pods": "10", "example.com/dongle": "3"}}
    }))
    .unwrap();
    let n = NodeInfo::from_node(&node).unwrap();
    assert_eq!(
        n.allocatable.cpu_millis, 2_000,
        "capacity when there is no allocatable"
    );
    assert_eq!(n.max_pods, 10);
    assert_eq!(n.allocatable.scalar.get("example.com/dongle"), Some(&3));
    assert_eq!(
        n.labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("n")
    );
}
