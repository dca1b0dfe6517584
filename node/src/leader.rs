//! Leader election over `coordination.k8s.io/v1` Leases in `kube-system`,
//! as client-go's leaderelection: the holder renews its lease every
//! `duration / 3`; a candidate takes a lease whose record it has seen
//! unchanged for a whole `duration` (by its own clock, so clock skew
//! between members does not matter). Writes are guarded by the lease's
//! resourceVersion, so two candidates never both win. A holder that cannot
//! renew within `duration` stops its work before another may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use skiff_sdk::client::{Api, Client};
use tokio::sync::watch;

/// Runs `work` whenever this member holds lease `name`, until `stop`.
/// `work` gets a receiver that turns true when leadership is lost.
pub async fn run_elected<F, Fut>(
    client: Client,
    name: String,
    identity: String,
    duration: Duration,
    work: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (name, identity) = (name.as_str(), identity.as_str());
    let api: Api<Lease> = Api::namespaced(&client, "kube-system");
    let mut observed: Option<(String, Instant)> = None;
    let mut running: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    let mut last_renew = Instant::now();
    loop {
        let held = try_acquire(&api, name, identity, duration, &mut observed).await;
        match (held, running.is_some()) {
            (true, false) => {
                tracing::info!(lease = name, %identity, "became leader");
                let (tx, rx) = watch::channel(false);
                running = Some((tx, tokio::spawn(work(rx))));
                last_renew = Instant::now();
            }
            (true, true) => last_renew = Instant::now(),
            (false, true) if last_renew.elapsed() >= duration * 2 / 3 => {
                tracing::warn!(lease = name, "lost leadership");
                if let Some((tx, task)) = running.take() {
                    let _ = tx.send(true);
                    let _ = task.await;
                }
            }
            _ => {}
        }
        let wait = if running.is_some() {
            duration / 3
        } else {
            duration / 5
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    if let Some((tx, task)) = running.take() {
        let _ = tx.send(true);
        let _ = task.await;
    }
    // Hand over at once rather than after the lease runs out.
    if let Ok(Some(mut lease)) = api.get_opt(name).await
        && lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(identity)
    {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        let _ = api.replace(&lease).await;
    }
}

/// One round: whether this member holds the lease afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    duration: Duration,
    observed: &mut Option<(String, Instant)>,
) -> bool {
    let now = MicroTime(crate::controllers::events::now());
    let secs = i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let current = match api.get_opt(name).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(lease = name, "reading the lease: {e}");
            return false;
        }
    };
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return api.create(&lease).await.is_ok();
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let record = format!(
        "{holder}/{}",
        lease.metadata.resource_version.as_deref().unwrap_or("")
    );
    let changed = observed.as_ref().is_none_or(|(r, _)| *r != record);
    if changed {
        *observed = Some((record, Instant::now()));
    }
    let lease_for = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(1) as u64);
    let expired = holder.is_empty()
        || observed
            .as_ref()
            .is_some_and(|(_, seen)| seen.elapsed() >= lease_for);
    if holder != identity && !expired {
        return false;
    }
    if holder != identity {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(now);
    match api.replace(&lease).await {
        Ok(l) => {
            *observed = Some((
                format!(
                    "{identity}/{}",
                    l.metadata.resource_version.as_deref().unwrap_or("")
                ),
                Instant::now(),
            ));
            true
        }
        Err(e) => {
            tracing::debug!(lease = name, "renewing the lease: {e}");
            false
        }
    }
}
