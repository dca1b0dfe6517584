//! The directories of volumes provisioned on this node (see
//! `controllers::volumes`): `DATA_DIR/storage/pvc-UID_NS_NAME`, made when a
//! pod first mounts the volume. Once the volume's PersistentVolume is gone
//! (its claim deleted, reclaim policy `Delete`), this removes the directory,
//! as k3s' local-path provisioner runs a helper pod to do.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use skiff_sdk::client::{Api, Client, ListParams};
use tokio::sync::watch;

/// How often the directories are compared with the volumes.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub async fn reclaim(client: Client, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let api: Api<PersistentVolume> = Api::all(&client);
        let volumes = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::debug!("listing persistent volumes: {e}");
                continue;
            }
        };
        let live: HashSet<PathBuf> = volumes
            .iter()
            .filter_map(|v| v.spec.as_ref()?.host_path.as_ref())
            .map(|h| PathBuf::from(&h.path))
            .collect();
        for path in orphans(&dir, &live) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "reclaimed volume removed"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "removing a reclaimed volume: {e}")
                }
            }
        }
    }
}

/// The provisioned directories under `dir` that no volume names.
fn orphans(dir: &Path, live: &HashSet<PathBuf>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pvc-"))
        })
        .filter(|p| !live.contains(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provisioned_directories_no_volume_names_are_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["pvc-a_ns_x", "pvc-b_ns_y", "other"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("pvc-file"), "").unwrap();
        let live = HashSet::from([tmp.path().join("pvc-a_ns_x")]);
        assert_eq!(orphans(tmp.path(), &live), [tmp.path().join("pvc-b_ns_y")]);
    }
}
