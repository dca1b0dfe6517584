//! The controllers: reconcile loops over informers, each converging what
//! is stored toward what the objects ask for, like kube-controller-manager.
//! Only the member holding the `skiff-controller-manager` lease runs them.

pub mod endpoints;
pub mod events;
pub mod gc;
pub mod ingressstatus;
pub mod nodelifecycle;
pub mod serviceaccounts;
pub mod volumes;
pub mod workloads;

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use skiff_sdk::client::Client;
use skiff_sdk::client::queue::WorkQueue;
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
    /// The cluster CA (PEM) published in every namespace's
    /// `kube-root-ca.crt`; empty publishes nothing.
    pub root_ca_pem: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node_monitor_grace: Duration::from_secs(10),
            default_toleration_seconds: 30,
            root_ca_pem: String::new(),
        }
    }
}

/// Runs every controller until `stop` turns true.
pub async fn run(client: Client, settings: Settings, stop: watch::Receiver<bool>) {
    let tasks = [
        tokio::spawn(workloads::run(client.clone(), stop.clone())),
        tokio::spawn(gc::run(client.clone(), stop.clone())),
        tokio::spawn(endpoints::run(client.clone(), stop.clone())),
        tokio::spawn(ingressstatus::run(client.clone(), stop.clone())),
        tokio::spawn(volumes::run(client.clone(), stop.clone())),
        tokio::spawn(serviceaccounts::run(
            client.clone(),
            settings.root_ca_pem.clone(),
            stop.clone(),
        )),
        tokio::spawn(nodelifecycle::run(client.clone(), settings, stop.clone())),
    ];
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!("controller task failed: {e}");
        }
    }
}

/// One worker of a controller, as client-go's `processNextWorkItem`: takes
/// keys from `queue` until it shuts down and runs `sync` for each in its own
/// task, so that a panic is one failed sync, not a dead worker. Success
/// forgets the key's back-off (`Ok(Some(d))` looks again after `d`); failure
/// requeues it with back-off, logged at debug level when `expected` says the
/// error is routine (a conflict with a concurrent write).
/// The common shape of a controller's run: once `synced` (its informers'
/// first lists) is done, starts `worker`, then waits for `stop` and shuts
/// the queue and every task down. A stop before the sync ends it at once.
pub(crate) async fn run_until_stopped(
    mut tasks: Vec<tokio::task::JoinHandle<()>>,
    synced: impl Future<Output = ()>,
    queue: &WorkQueue,
    worker: impl FnOnce() -> tokio::task::JoinHandle<()>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = synced => {}
        _ = stop.wait_for(|s| *s) => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    tasks.push(worker());
    let _ = stop.wait_for(|s| *s).await;
    queue.shut_down();
    for t in tasks {
        t.abort();
    }
}

pub(crate) async fn work<E, Fut>(
    controller: &'static str,
    queue: &WorkQueue,
    sync: impl Fn(String) -> Fut,
    expected: fn(&E) -> bool,
) where
    E: Display + Send + 'static,
    Fut: Future<Output = Result<Option<Duration>, E>> + Send + 'static,
{
    while let Some(key) = queue.next().await {
        match tokio::spawn(sync(key.clone())).await {
            Ok(Ok(requeue)) => {
                queue.forget(&key);
                if let Some(after) = requeue {
                    queue.add_after(key.clone(), after);
                }
            }
            Ok(Err(e)) => {
                if expected(&e) {
                    tracing::debug!(controller, %key, "sync: {e}; retrying");
                } else {
                    tracing::warn!(controller, %key, "sync failed: {e}; retrying");
                }
                queue.retry(&key);
            }
            Err(e) => {
                tracing::error!(controller, %key, "sync panicked: {e}; retrying");
                queue.retry(&key);
            }
        }
        queue.done(&key);
    }
}
