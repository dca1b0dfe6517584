//! The addresses of the gateway's Ingresses (`status.loadBalancer.ingress`,
//! kubectl's ADDRESS column), as k3s shows its Traefik's: the InternalIPs
//! of the Ready nodes that run an ingress gateway (labelled
//! [`LABEL_INGRESS_GATEWAY`] by their agent). Ingresses of other classes
//! are left to their controllers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, ListParams, key_of, split_key};
use tokio::sync::watch;

use crate::agent::proxy::ingress::is_ours;

/// On the Nodes whose agent runs the ingress gateway.
pub const LABEL_INGRESS_GATEWAY: &str = "skiff.dev/ingress-gateway";

struct Ctx {
    client: Client,
    ingresses: Arc<Store<Ingress>>,
    classes: Arc<Store<IngressClass>>,
    nodes: Arc<Store<Node>>,
    queue: WorkQueue,
}

pub async fn run(client: Client, stop: watch::Receiver<bool>) {
    let ingresses: Arc<Informer<Ingress>> = Informer::new(Api::all(&client), ListParams::default());
    let classes: Arc<Informer<IngressClass>> =
        Informer::new(Api::all(&client), ListParams::default());
    let nodes: Arc<Informer<Node>> = Informer::new(
        Api::all(&client),
        ListParams::default().labels(format!("{LABEL_INGRESS_GATEWAY}=true")),
    );
    let ctx = Arc::new(Ctx {
        client,
        ingresses: ingresses.store(),
        classes: classes.store(),
        nodes: nodes.store(),
        queue: WorkQueue::new(),
    });
    let tasks = vec![
        {
            let ctx = ctx.clone();
            let mut rx = ingresses.subscribe();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    if let Event::Applied { new, .. } = &*ev {
                        ctx.queue.add(key_of(&new.metadata));
                    }
                }
            })
        },
        all_on_change(&ctx, classes.subscribe()),
        {
            // Nodes change at every heartbeat; the statuses only when the
            // Ready gateways' addresses do.
            let ctx = ctx.clone();
            let mut rx = nodes.subscribe();
            tokio::spawn(async move {
                let mut last = None;
                while rx.recv().await.is_some() {
                    let now = addresses(&ctx.nodes.list());
                    if last.as_ref() != Some(&now) {
                        last = Some(now);
                        requeue_all(&ctx);
                    }
                }
            })
        },
        ingresses.start(),
        classes.start(),
        nodes.start(),
    ];
    let synced = async {
        ingresses.synced().await;
        classes.synced().await;
        nodes.synced().await;
    };
    let worker = || {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            super::work(
                "ingress-status",
                &ctx.queue,
                |key| sync(ctx.clone(), key),
                |e: &client::Error| e.is_conflict() || e.is_not_found(),
            )
            .await;
        })
    };
    super::run_until_stopped(tasks, synced, &ctx.queue, worker, stop).await;
    drop((ingresses, classes, nodes));
}

/// A class change may change every Ingress's status.
fn all_on_change<K: Send + Sync + 'static>(
    ctx: &Arc<Ctx>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Arc<Event<K>>>,
) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            requeue_all(&ctx);
        }
    })
}

fn requeue_all(ctx: &Ctx) {
    for i in ctx.ingresses.list() {
        ctx.queue.add(key_of(&i.metadata));
    }
}

/// The addresses of the Ready gateway nodes, sorted.
fn addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .flat_map(|n| {
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

async fn sync(ctx: Arc<Ctx>, key: String) -> Result<Option<Duration>, client::Error> {
    let Some(ing) = ctx.ingresses.get(&key) else {
        return Ok(None);
    };
    if !is_ours(&ing, &ctx.classes.list()) {
        return Ok(None);
    }
    let want: Vec<IngressLoadBalancerIngress> = addresses(&ctx.nodes.list())
        .into_iter()
        .map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip),
            ..Default::default()
        })
        .collect();
    let have = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default();
    if have == want {
        return Ok(None);
    }
    let (ns, _) = split_key(&key);
    let api: Api<Ingress> = Api::namespaced(&ctx.client, ns.unwrap_or_default());
    let mut updated = (*ing).clone();
    updated.status = Some(IngressStatus {
        load_balancer: Some(IngressLoadBalancerStatus {
            ingress: (!want.is_empty()).then_some(want),
        }),
    });
    api.replace_status(&updated).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_gateway_nodes_internal_addresses() {
        let node = |name: &str, ip: &str, ready: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "status": {
                        "conditions": [{"type": "Ready", "status": ready}],
                        "addresses": [{"type": "InternalIP", "address": ip},
                                      {"type": "Hostname", "address": name}],
                    },
                }))
                .unwrap(),
            )
        };
        let nodes = [
            node("b", "10.0.0.2", "True"),
            node("a", "10.0.0.1", "True"),
            node("c", "10.0.0.3", "Unknown"),
            node("d", "10.0.0.1", "True"),
        ];
        assert_eq!(addresses(&nodes), ["10.0.0.1", "10.0.0.2"]);
    }
}
