//! The manifests from the Kubernetes documentation (`../shared/corpus`),
//! applied with the real kubectl: every object of a kind skiff serves is
//! accepted as Kubernetes accepts it, and kinds skiff does not serve
//! (including the removed `batch/v1beta1`) are refused the way Kubernetes
//! refuses a kind it does not have.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Member, kubectl, kubectl_ok};

/// Kinds in the corpus that skiff does not serve (yet), as kubectl names
/// them in its refusal.
const UNSERVED: &[&str] = &[
    "\"LimitRange\" in version \"v1\"",
    "\"ResourceQuota\" in version \"v1\"",
    "\"ReplicationController\" in version \"v1\"",
    "\"NetworkPolicy\" in version \"networking.k8s.io/v1\"",
    "\"HorizontalPodAutoscaler\" in version \"autoscaling/v1\"",
    "\"HorizontalPodAutoscaler\" in version \"autoscaling/v2\"",
    "\"CronJob\" in version \"batch/v1beta1\"",
];

fn corpus() -> PathBuf {
    // Where cargo runs the test from (a shared target directory may hold
    // a binary compiled in another checkout).
    let root =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&root).join("../../shared/corpus/k8s-docs-examples");
    assert!(
        dir.is_dir(),
        "the corpus is expected beside the clone at {}",
        dir.display()
    );
    dir
}

fn manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            manifests(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_docs_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Member::new(tmp.path(), "corpus");
    m.start();
    m.wait_ready(Duration::from_secs(30)).await;
    m.wait_api(Duration::from_secs(30)).await;

    let mut files = Vec::new();
    manifests(&corpus(), &mut files);
    assert!(files.len() >= 80, "only {} manifests found", files.len());
    // Namespaces the manifests expect to exist, as the docs create first.
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for line in text.lines() {
            if let Some(ns) = line.trim().strip_prefix("namespace:") {
                let ns = ns.trim().trim_end_matches(',').trim().trim_matches('"');
                if !ns.is_empty() && !ns.contains(' ') {
                    let _ = kubectl(&m, &["create", "namespace", ns], None);
                }
            }
        }
    }
    let (mut created, mut refused) = (0, 0);
    for f in &files {
        let path = f.display().to_string();
        let (ok, out, err) = kubectl(&m, &["apply", "-f", &path], None);
        created += out
            .lines()
            .filter(|l| {
                l.ends_with(" created") || l.ends_with(" configured") || l.ends_with(" unchanged")
            })
            .count();
        if ok {
            continue;
        }
        // Every error must be a refusal of an unserved kind.
        for line in err
            .lines()
            .filter(|l| l.starts_with("error") || l.starts_with("Error"))
        {
            assert!(
                UNSERVED
                    .iter()
                    .any(|k| line.contains(&format!("no matches for kind {k}"))),
                "{path} was refused: {line}\n{err}"
            );
            refused += 1;
        }
    }
    assert!(created >= 70, "only {created} objects applied");
    assert!(
        refused >= 1,
        "the removed batch/v1beta1 CronJob must be refused"
    );
    // The pods of the docs are stored, pending a scheduler.
    let pods = kubectl_ok(&m, &["get", "pods", "-A", "--no-headers"], None);
    assert!(pods.lines().count() >= 10, "{pods}");
}
