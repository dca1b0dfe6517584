//! Scheduling throughput on simulated clusters.
//!
//! ```text
//! cargo run --release -p skiff-sched --example placements [-- --nodes N --pods N]
//! ```
//!
//! Without flags: 100,000 pods on 5,000 and on 10,000 nodes. See
//! `skiff_sched::bench` for the cluster and the workload.

use skiff_sched::bench;

/// kube-scheduler's published throughput range (pods/s).
const KUBE_SCHEDULER: (f64, f64) = (100.0, 300.0);
/// Nomad's C1M challenge: a million containers in about 267 s.
const NOMAD_C1M: f64 = 3_750.0;
/// What skiff aims for on a 2-core machine.
const TARGET: f64 = 10_000.0;

fn main() {
    let mut nodes: Vec<usize> = vec![5_000, 10_000];
    let mut pods = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| -> usize {
            match args.next().map(|v| v.replace('_', "").parse()) {
                Some(Ok(v)) => v,
                _ => {
                    eprintln!("{flag} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match arg.as_str() {
            "--nodes" => nodes = vec![value("--nodes")],
            "--pods" => pods = value("--pods"),
            "-h" | "--help" => {
                println!("usage: bench [--nodes N] [--pods N]");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: bench [--nodes N] [--pods N]");
                std::process::exit(2);
            }
        }
    }

    for n in nodes {
        let r = bench::run(n, pods);
        println!("cluster: {} nodes, {} pods", r.nodes, r.pods);
        println!(
            "  setup: {:.2} s (of which PodInfo::from_pod {:.2} s)",
            r.setup_seconds, r.parse_seconds
        );
        println!(
            "  schedule_batch: {:.2} s, placed {}, unschedulable {}",
            r.schedule_seconds, r.placed, r.unschedulable
        );
        for (reason, n) in r.unschedulable_reasons.iter().take(4) {
            println!("    {n} unschedulable mostly for: {reason}");
        }
        println!(
            "  nodes filtered per placed pod {:.0}, feasible nodes scored {:.0}",
            r.mean_evaluated, r.mean_feasible
        );
        println!(
            "  {:.0} placements/s ({:.0} pods decided/s)",
            r.placements_per_second, r.pods_per_second
        );
        println!(
            "  vs kube-scheduler {}-{} pods/s: {:.0}x-{:.0}x; vs Nomad C1M {} /s: {:.1}x; target {} /s: {}",
            KUBE_SCHEDULER.0,
            KUBE_SCHEDULER.1,
            r.placements_per_second / KUBE_SCHEDULER.1,
            r.placements_per_second / KUBE_SCHEDULER.0,
            NOMAD_C1M,
            r.placements_per_second / NOMAD_C1M,
            TARGET,
            if r.placements_per_second >= TARGET {
                "met"
            } else {
                "missed"
            }
        );
    }
}
