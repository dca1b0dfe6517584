//! kube-controller-manager's ServiceAccount controller and root CA
//! publisher, as one loop over namespaces: every active namespace has a
//! `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap holding the
//! cluster CA. One deleted is made again; a ConfigMap whose `ca.crt`
//! differs is set back.
//!
//! The API server makes both when it creates a namespace; this keeps them
//! (and gives them to namespaces of a store written by an older skiff).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_sdk::client::informer::{Event, Informer, Store};
use skiff_sdk::client::queue::WorkQueue;
use skiff_sdk::client::{self, Api, Client, ListParams, Object};
use tokio::sync::{mpsc, watch};

use crate::apiserver::serviceaccount::{
    DEFAULT_ACCOUNT, ROOT_CA_CONFIGMAP as ROOT_CA, default_account, root_ca_configmap,
};

struct Ctx {
    client: Client,
    ca_pem: String,
    namespaces: Arc<Store<Namespace>>,
    accounts: Arc<Store<ServiceAccount>>,
    configmaps: Arc<Store<ConfigMap>>,
    queue: WorkQueue,
}

/// Runs until `stop` turns true. Without a CA (`ca_pem` empty) only the
/// accounts are kept.
pub async fn run(client: Client, ca_pem: String, stop: watch::Receiver<bool>) {
    let namespaces: Arc<Informer<Namespace>> =
        Informer::new(Api::all(&client), ListParams::default());
    let accounts: Arc<Informer<ServiceAccount>> = Informer::new(
        Api::all(&client),
        ListParams::default().fields(format!("metadata.name={DEFAULT_ACCOUNT}")),
    );
    let configmaps: Arc<Informer<ConfigMap>> = Informer::new(
        Api::all(&client),
        ListParams::default().fields(format!("metadata.name={ROOT_CA}")),
    );
    let ctx = Arc::new(Ctx {
        client,
        ca_pem,
        namespaces: namespaces.store(),
        accounts: accounts.store(),
        configmaps: configmaps.store(),
        queue: WorkQueue::new(),
    });
    let tasks = vec![
        route(&ctx, namespaces.subscribe(), |m| m.name.clone()),
        route(&ctx, accounts.subscribe(), |m| m.namespace.clone()),
        route(&ctx, configmaps.subscribe(), |m| m.namespace.clone()),
        namespaces.start(),
        accounts.start(),
        configmaps.start(),
    ];
    let synced = async {
        namespaces.synced().await;
        accounts.synced().await;
        configmaps.synced().await;
    };
    let worker = || {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            super::work(
                "serviceaccounts",
                &ctx.queue,
                |ns| sync(ctx.clone(), ns),
                |e: &client::Error| e.is_conflict() || e.is_already_exists(),
            )
            .await;
        })
    };
    super::run_until_stopped(tasks, synced, &ctx.queue, worker, stop).await;
    drop((namespaces, accounts, configmaps));
}

/// Every event queues the namespace it is in (or is).
fn route<K: Object>(
    ctx: &Arc<Ctx>,
    mut events: mpsc::UnboundedReceiver<Arc<Event<K>>>,
    namespace: fn(&ObjectMeta) -> Option<String>,
) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let meta = match &*ev {
                Event::Applied { new, .. } => new.metadata(),
                Event::Deleted(old) => old.metadata(),
            };
            if let Some(ns) = namespace(meta) {
                ctx.queue.add(ns);
            }
        }
    })
}

async fn sync(ctx: Arc<Ctx>, ns: String) -> Result<Option<Duration>, client::Error> {
    let Some(namespace) = ctx.namespaces.get(&ns) else {
        return Ok(None);
    };
    let terminating =
        namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating || namespace.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let key = format!("{ns}/{DEFAULT_ACCOUNT}");
    if ctx.accounts.get(&key).is_none() {
        let api: Api<ServiceAccount> = Api::namespaced(&ctx.client, &ns);
        let sa: ServiceAccount = from_json(default_account(&ns))?;
        match api.create(&sa).await {
            Ok(_) => tracing::info!(namespace = %ns, "created the default service account"),
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
    }
    if ctx.ca_pem.is_empty() {
        return Ok(None);
    }
    let api: Api<ConfigMap> = Api::namespaced(&ctx.client, &ns);
    let want = Some(ctx.ca_pem.clone());
    match ctx.configmaps.get(&format!("{ns}/{ROOT_CA}")) {
        None => {
            let cm: ConfigMap = from_json(root_ca_configmap(&ns, &ctx.ca_pem))?;
            match api.create(&cm).await {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Some(cm) if cm.data.as_ref().and_then(|d| d.get("ca.crt")) != want.as_ref() => {
            let mut cm = (*cm).clone();
            cm.data
                .get_or_insert_default()
                .insert("ca.crt".into(), ctx.ca_pem.clone());
            api.replace(&cm).await?;
            tracing::info!(namespace = %ns, "set kube-root-ca.crt back to the cluster CA");
        }
        Some(_) => {}
    }
    Ok(None)
}

fn from_json<K: Object>(v: serde_json::Value) -> Result<K, client::Error> {
    serde_json::from_value(v).map_err(|e| client::Error::Decode {
        what: "a default object".into(),
        message: e.to_string(),
    })
}
