//! A simulated cluster and workload, for `examples/bench.rs` and
//! `skiff bench sched`: [`run`] builds the nodes and pods (as Kubernetes
//! objects, converted once), schedules every pod with
//! [`Scheduler::schedule_batch`] and reports the rate.
//!
//! The cluster: six zones, 70% amd64 / 30% arm64, 10% wasm-only nodes and
//! half the rest able to run both runtimes, four sizes, 3% GPU nodes
//! tainted for GPU pods, 5% with a PreferNoSchedule taint, 2% cordoned, 1%
//! not Ready. The workload: pods of deployments of about 50 replicas, each
//! deployment one of: plain requests, a node selector, required node
//! affinity (In / NotIn / Gt), GPU pods with a toleration, zone spread
//! (DoNotSchedule), hostname anti-affinity, preferred affinities, wasm, OCI
//! with known image platforms; 10% at a higher priority; 0.5% with a
//! selector no node matches.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::intern::mix;
use crate::model::*;
use crate::{Config, Scheduler, Snapshot};

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub nodes: usize,
    pub pods: usize,
    pub placed: usize,
    pub unschedulable: usize,
    /// Building Node/Pod objects, converting them and building the snapshot.
    pub setup_seconds: f64,
    /// Converting the pods alone (`PodInfo::from_pod`), part of setup.
    pub parse_seconds: f64,
    /// `schedule_batch` over all pods.
    pub schedule_seconds: f64,
    /// Pods decided (placed or found unschedulable) per second.
    pub pods_per_second: f64,
    /// Pods placed per second.
    pub placements_per_second: f64,
    /// Mean nodes filtered and feasible nodes scored per placed pod.
    pub mean_evaluated: f64,
    pub mean_feasible: f64,
    /// Unschedulable pods by the reason most of the nodes gave, most common
    /// first.
    pub unschedulable_reasons: Vec<(String, usize)>,
}

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent`% of the time.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ZONES: [&str; 6] = ["zone-a", "zone-b", "zone-c", "zone-d", "zone-e", "zone-f"];

fn q(s: &str) -> K8sQuantity {
    K8sQuantity(s.to_owned())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `i`th simulated node.
pub fn node(i: usize, rng_seed: u64) -> core::Node {
    let mut rng = Rng(rng_seed ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let name = format!("node-{i:05}");
    let zone = ZONES[i % ZONES.len()];
    let arch = if rng.chance(70) { "amd64" } else { "arm64" };
    let (cores, memory, size) = match rng.below(4) {
        0 => (4, "16Gi", "small"),
        1 => (8, "32Gi", "medium"),
        2 => (16, "64Gi", "large"),
        _ => (32, "128Gi", "xlarge"),
    };
    let mut l = labels(&[
        (LABEL_ZONE, zone),
        ("topology.kubernetes.io/region", "region-1"),
        (LABEL_OS, "linux"),
        (LABEL_ARCH, arch),
        ("node.kubernetes.io/instance-type", size),
        ("disktype", if rng.chance(40) { "ssd" } else { "hdd" }),
        (LABEL_HOSTNAME, &name),
    ]);
    l.insert("skiff.dev/cores".into(), cores.to_string());
    let roll = rng.below(100);
    if roll < 10 {
        l.insert(LABEL_RUNTIME_WASM.into(), "true".into());
    } else {
        l.insert(LABEL_RUNTIME_OCI.into(), "true".into());
        if roll < 55 {
            l.insert(LABEL_RUNTIME_WASM.into(), "true".into());
        }
    }
    let mut allocatable: BTreeMap<String, K8sQuantity> = [
        ("cpu".to_string(), q(&cores.to_string())),
        ("memory".to_string(), q(memory)),
        ("pods".to_string(), q("110")),
        ("ephemeral-storage".to_string(), q("100Gi")),
    ]
    .into();
    let mut taints = Vec::new();
    if rng.chance(3) {
        l.insert("accelerator".into(), "nvidia".into());
        allocatable.insert("nvidia.com/gpu".into(), q("8"));
        taints.push(core::Taint {
            key: "nvidia.com/gpu".into(),
            value: Some("present".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    if rng.chance(5) {
        taints.push(core::Taint {
            key: "maintenance".into(),
            value: Some("soon".into()),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        });
    }
    let ready = if rng.chance(1) { "False" } else { "True" };
    core::Node {
        metadata: meta::ObjectMeta {
            name: Some(name),
            labels: Some(l),
            ..Default::default()
        },
        spec: Some(core::NodeSpec {
            unschedulable: Some(rng.chance(2)),
            taints: Some(taints),
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            allocatable: Some(allocatable),
            conditions: Some(vec![core::NodeCondition {
                type_: "Ready".into(),
                status: ready.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn selector(app: &str) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: Some(labels(&[("app", app)])),
        ..Default::default()
    }
}

fn node_term(key: &str, op: &str, values: &[&str]) -> core::NodeSelectorTerm {
    core::NodeSelectorTerm {
        match_expressions: Some(vec![core::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    }
}

/// The kinds of deployment the workload mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    NodeSelector,
    NodeAffinity,
    Gpu,
    ZoneSpread,
    AntiAffinity,
    Preferred,
    Wasm,
    Platforms,
    Impossible,
}

fn kind_of(app: usize, seed: u64) -> Kind {
    let roll = mix(seed ^ (app as u64).wrapping_mul(0x9e37_79b9)) % 1000;
    match roll {
        0..5 => Kind::Impossible,
        5..10 => Kind::Gpu,
        10..360 => Kind::Plain,
        360..480 => Kind::NodeSelector,
        480..580 => Kind::NodeAffinity,
        580..680 => Kind::ZoneSpread,
        680..730 => Kind::AntiAffinity,
        730..800 => Kind::Preferred,
        800..900 => Kind::Wasm,
        _ => Kind::Platforms,
    }
}

/// The `j`th simulated pod, of one of `apps` deployments, and whether its
/// image platforms are known (linux/amd64 only).
pub fn pod(j: usize, apps: usize, seed: u64) -> (core::Pod, bool) {
    let mut rng = Rng(seed ^ (j as u64).wrapping_mul(0x5851_f42d_4c95_7f2d));
    let app_index = rng.below(apps as u64) as usize;
    let app = format!("app-{app_index:05}");
    let kind = kind_of(app_index, seed);
    let mut app_rng = Rng(seed ^ 0xa5a5 ^ app_index as u64);
    let cpu = format!("{}m", 50 + 50 * app_rng.below(20));
    let memory = format!("{}Mi", 64 * (1 + app_rng.below(32)));
    let priority = if app_rng.chance(10) { 1000 } else { 0 };
    let best_effort = app_rng.chance(5);

    let mut requests: BTreeMap<String, K8sQuantity> = BTreeMap::new();
    if !best_effort {
        requests.insert("cpu".into(), q(&cpu));
        requests.insert("memory".into(), q(&memory));
    }
    let mut spec = core::PodSpec {
        priority: Some(priority),
        ..Default::default()
    };
    let mut affinity = core::Affinity::default();
    match kind {
        Kind::Plain | Kind::Platforms => {}
        Kind::Impossible => spec.node_selector = Some(labels(&[(LABEL_ZONE, "zone-nowhere")])),
        Kind::NodeSelector => {
            let sel = if app_rng.chance(50) {
                labels(&[("disktype", "ssd")])
            } else {
                labels(&[(LABEL_ZONE, ZONES[app_index % ZONES.len()])])
            };
            spec.node_selector = Some(sel);
        }
        Kind::NodeAffinity => {
            let term = match app_rng.below(3) {
                0 => node_term(LABEL_ARCH, "In", &["arm64"]),
                1 => node_term("node.kubernetes.io/instance-type", "NotIn", &["small"]),
                _ => node_term("skiff.dev/cores", "Gt", &["8"]),
            };
            affinity.node_affinity = Some(core::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                    node_selector_terms: vec![term],
                }),
                ..Default::default()
            });
        }
        Kind::Gpu => {
            requests.insert("nvidia.com/gpu".into(), q("1"));
            spec.node_selector = Some(labels(&[("accelerator", "nvidia")]));
            spec.tolerations = Some(vec![core::Toleration {
                key: Some("nvidia.com/gpu".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]);
        }
        Kind::ZoneSpread => {
            spec.topology_spread_constraints = Some(vec![core::TopologySpreadConstraint {
                max_skew: 1,
                topology_key: LABEL_ZONE.into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                label_selector: Some(selector(&app)),
                ..Default::default()
            }]);
        }
        Kind::AntiAffinity => {
            affinity.pod_anti_affinity = Some(core::PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![
                    core::PodAffinityTerm {
                        label_selector: Some(selector(&app)),
                        topology_key: LABEL_HOSTNAME.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            });
        }
        Kind::Preferred => {
            affinity.node_affinity = Some(core::NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    core::PreferredSchedulingTerm {
                        weight: 50,
                        preference: node_term("disktype", "In", &["ssd"]),
                    },
                ]),
                ..Default::default()
            });
            affinity.pod_affinity = Some(core::PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    core::WeightedPodAffinityTerm {
                        weight: 20,
                        pod_affinity_term: core::PodAffinityTerm {
                            label_selector: Some(selector(&app)),
                            topology_key: LABEL_ZONE.into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            });
        }
        Kind::Wasm => spec.runtime_class_name = Some(WASM_RUNTIME_CLASS.into()),
    }
    if affinity != core::Affinity::default() {
        spec.affinity = Some(affinity);
    }
    spec.containers = vec![core::Container {
        name: "app".into(),
        resources: Some(core::ResourceRequirements {
            requests: Some(requests),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let pod = core::Pod {
        metadata: meta::ObjectMeta {
            name: Some(format!("{app}-{j:06}")),
            namespace: Some(format!("ns-{}", app_index % 20)),
            labels: Some(labels(&[("app", &app)])),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    (pod, kind == Kind::Platforms)
}

/// Builds a cluster of `nodes` and schedules `pods` on it with kube-scheduler's
/// default settings.
pub fn run(nodes: usize, pods: usize) -> BenchResult {
    run_with(nodes, pods, Config::default())
}

/// [`run`] with a given scheduler configuration.
pub fn run_with(nodes: usize, pods: usize, config: Config) -> BenchResult {
    const SEED: u64 = 0x5c1f_f5c4_ed00_0001;
    let setup = Instant::now();
    let node_infos = (0..nodes).filter_map(|i| NodeInfo::from_node(&node(i, SEED)).ok());
    let mut snapshot = Snapshot::with_nodes(node_infos).unwrap_or_default();
    let apps = (pods / 50).max(1);
    let objects: Vec<(core::Pod, bool)> = (0..pods).map(|j| pod(j, apps, SEED)).collect();
    let parse = Instant::now();
    let infos: Vec<PodInfo> = objects
        .iter()
        .filter_map(|(p, platforms)| {
            let mut info = PodInfo::from_pod(p).ok()?;
            if *platforms {
                info.image_platforms = Some(vec![Platform::new("linux", "amd64")]);
            }
            Some(info)
        })
        .collect();
    let parse_seconds = parse.elapsed().as_secs_f64();
    drop(objects);
    let setup_seconds = setup.elapsed().as_secs_f64();

    let scheduler = Scheduler::new(config);
    let start = Instant::now();
    let results = scheduler.schedule_batch(&infos, &mut snapshot);
    let schedule_seconds = start.elapsed().as_secs_f64();

    let placed: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        let mut counts: std::collections::HashMap<&crate::Reason, usize> =
            std::collections::HashMap::new();
        for f in &err.failures {
            *counts.entry(&f.reason).or_insert(0) += 1;
        }
        if let Some((reason, _)) = counts
            .into_iter()
            .max_by_key(|(r, n)| (*n, std::cmp::Reverse(*r)))
        {
            *reasons.entry(reason.to_string()).or_insert(0) += 1;
        }
    }
    let mut unschedulable_reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    unschedulable_reasons.sort_by_key(|(r, n)| (std::cmp::Reverse(*n), r.clone()));
    let n = placed.len().max(1) as f64;
    BenchResult {
        nodes: snapshot.node_count(),
        pods: infos.len(),
        placed: placed.len(),
        unschedulable: results.len() - placed.len(),
        setup_seconds,
        parse_seconds,
        schedule_seconds,
        pods_per_second: results.len() as f64 / schedule_seconds,
        placements_per_second: placed.len() as f64 / schedule_seconds,
        mean_evaluated: placed.iter().map(|p| p.evaluated as f64).sum::<f64>() / n,
        mean_feasible: placed.iter().map(|p| p.feasible as f64).sum::<f64>() / n,
        unschedulable_reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_objects_convert() {
        for i in 0..200 {
            NodeInfo::from_node(&node(i, 7)).unwrap();
            PodInfo::from_pod(&pod(i, 10, 7).0).unwrap();
        }
    }

    #[test]
    fn small_run_places_most_pods() {
        let r = run(200, 2_000);
        assert_eq!(r.pods, 2_000);
        assert!(r.placed > 1_800, "{r:?}");
        assert_eq!(r.placed + r.unschedulable, r.pods);
    }
}
