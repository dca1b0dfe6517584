//! The controllers: reconcile loops over informers, each converging what
//! is stored toward what the objects ask for, like kube-controller-manager.
//! Only the member holding the `skiff-controller-manager` lease runs them.

pub mod endpoints;
pub mod events;
pub mod gc;
pub mod nodelifecycle;
pub mod workloads;

use std::time::Duration;

use skiff_sdk::client::Client;
use tokio::sync::watch;

/// Settings of the controllers that users may want to change.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A node whose lease is older than this is NotReady (Kubernetes: 40 s).
    pub node_monitor_grace: Duration,
    /// How long pods stay on a NotReady/unreachable node without a
    /// toleration of their own (Kubernetes: 300 s; the API server adds the
    /// toleration to every pod).
    pub default_toleration_seconds: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_monitor_grace: Duration::from_secs(10),
            default_toleration_seconds: 30,
        }
    }
}

/// Runs every controller until `stop` turns true.
pub async fn run(client: Client, settings: Settings, stop: watch::Receiver<bool>) {
    let tasks = [
        tokio::spawn(workloads::run(client.clone(), stop.clone())),
        tokio::spawn(gc::run(client.clone(), stop.clone())),
        tokio::spawn(endpoints::run(client.clone(), stop.clone())),
        tokio::spawn(nodelifecycle::run(client.clone(), settings, stop.clone())),
    ];
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!("controller task failed: {e}");
        }
    }
}
