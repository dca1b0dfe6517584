//! A whole control-plane member in one value: what `skiff server` runs, and
//! what an application embeds to carry a cluster inside its own process.
//!
//! [`Server::start`] opens the store (Raft + RocksDB) and, if asked, its
//! etcd v3 API at once; the Kubernetes API (HTTPS, and QUIC for agents on
//! the same port number), the controllers, the scheduler and this host's
//! agent follow as soon as the store has a leader ([`Server::ready`]).
//! [`Server::stop`] shuts everything down and closes the store.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut cfg = skiff_node::ServerConfig::new("/tmp/skiff-embedded");
//! cfg.api_listen = "127.0.0.1:0".parse()?; // any free port
//! let server = skiff_node::Server::start(cfg).await?;
//! server.ready().await?;
//! let client = server.client(); // a skiff_sdk::client::Client, as cluster admin
//! # let _ = client;
//! server.stop().await
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use consensus::{Store, StoreConfig};
use skiff_sdk::client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::{self, ApiServer};
use crate::{agent, controllers, leader, scheduler};

/// What a member runs, with `skiff server`'s defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The store: data directory, member name, peers.
    pub store: StoreConfig,
    /// Where the etcd v3 API listens; `None` serves none (the Kubernetes
    /// API still reaches the store in-process).
    pub etcd_listen: Option<SocketAddr>,
    /// Serve the etcd API over TLS and require client certificates from the
    /// cluster CA (needed to listen beyond loopback).
    pub etcd_client_cert_auth: bool,
    /// The Kubernetes API, TCP (HTTPS) and the same port over UDP (QUIC
    /// for agents); port 0 picks a free one.
    pub api_listen: SocketAddr,
    /// host:port written into the kubeconfig (default: the bound address).
    pub api_advertise: Option<String>,
    /// This host's Node.
    pub node_name: String,
    pub node_labels: BTreeMap<String, String>,
    /// Run this host's agent (pods run here); false for a control-plane-only
    /// member.
    pub agent: bool,
    /// The agent's log endpoint (default: the API's address, any port).
    pub kubelet_listen: Option<SocketAddr>,
    /// The agent's ingress gateway (`skiff server`: ports 80 and 443;
    /// none by default for an embedded node).
    pub ingress: crate::agent::proxy::IngressListen,
    pub controllers: controllers::Settings,
    /// Join the control plane of an existing member (`skiff server --join
    /// URL --token T`) instead of starting a new cluster: only the first
    /// start does it, later starts find the member in their store.
    pub join: Option<JoinConfig>,
}

/// Where and how a new control-plane member joins.
#[derive(Clone)]
pub struct JoinConfig {
    /// `https://host:port` of any member's Kubernetes API.
    pub server: String,
    /// That cluster's server token (`DIR/pki/server.token`).
    pub token: String,
}

impl std::fmt::Debug for JoinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinConfig")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A single-member cluster kept in `data_dir`, as `skiff server
    /// --data-dir` starts it: etcd API on 127.0.0.1:2379, peers on UDP
    /// 127.0.0.1:2380, the Kubernetes API on 127.0.0.1:6443.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            store: StoreConfig::new(data_dir, "default"),
            etcd_listen: Some("127.0.0.1:2379".parse().expect("address")),
            etcd_client_cert_auth: false,
            api_listen: "127.0.0.1:6443".parse().expect("address"),
            api_advertise: None,
            node_name: host_name(),
            node_labels: BTreeMap::new(),
            agent: true,
            kubelet_listen: None,
            ingress: Default::default(),
            controllers: controllers::Settings::default(),
            join: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.store.data_dir
    }
}

/// This machine's host name, lowercased as a node name must be.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A running member. Dropping it without [`stop`](Server::stop) leaves its
/// tasks running until the runtime ends.
pub struct Server {
    store: Store,
    data_dir: PathBuf,
    api_addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    api: watch::Receiver<Option<Arc<ApiServer>>>,
    api_task: JoinHandle<Result<()>>,
    etcd_task: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("data_dir", &self.data_dir)
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts the store, the etcd API and (in the background, once the
    /// store has a leader) the Kubernetes API and the components. Fails at
    /// once on a bad configuration, a data directory it may not use, or an
    /// address already taken.
    pub async fn start(mut cfg: ServerConfig) -> Result<Server> {
        let tls = cfg.etcd_client_cert_auth;
        if let Some(etcd) = cfg.etcd_listen
            && !etcd.ip().is_loopback()
            && !tls
        {
            bail!(
                "--etcd-listen {etcd} is reachable off this machine: add --etcd-client-cert-auth \
                 (mutual TLS with the cluster CA) or listen on loopback"
            );
        }
        // Bound before the store starts, so that a taken port fails the
        // start instead of a background task.
        let (api_listener, quic_socket) = apiserver::bind(cfg.api_listen).await?;
        let api_addr = api_listener.local_addr()?;
        let etcd_listener = match cfg.etcd_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the etcd API to {addr}"))?,
            ),
            None => None,
        };
        if let Some(l) = &etcd_listener {
            let scheme = if tls { "https" } else { "http" };
            cfg.store.client_urls = vec![format!("{scheme}://{}", l.local_addr()?)];
        } else {
            cfg.store.client_urls = Vec::new();
        }
        let data_dir = cfg.store.data_dir.clone();
        if let Some(j) = &cfg.join
            && !data_dir.join("store").exists()
        {
            if !cfg.store.initial_cluster.is_empty() {
                bail!(
                    "--join and --initial-cluster do not go together: the cluster says who its members are"
                );
            }
            let joined = crate::join::join_server(
                &j.server,
                &j.token,
                &cfg.store.name,
                &cfg.store.advertise(),
                &data_dir,
            )
            .await?;
            cfg.store.cluster_state = consensus::ClusterState::Existing;
            cfg.store.initial_cluster = joined.initial_cluster;
            cfg.store.ca_from = Some(joined.ca_dir);
        }
        let store = Store::start(cfg.store.clone(), tokio::runtime::Handle::current())
            .with_context(|| format!("starting the store in {}", data_dir.display()))?;
        tracing::info!(
            member = format!("{:x}", store.identity().member_id),
            cluster = format!("{:x}", store.identity().cluster_id),
            etcd = ?etcd_listener.as_ref().and_then(|l| l.local_addr().ok()),
            peer = ?store.peer_local_addr(),
            "skiff store member started"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        if cfg.join.is_some() {
            tokio::spawn(promote_when_caught_up(store.clone(), stop_rx.clone()));
        }
        let etcd_task = match etcd_listener {
            Some(listener) => Some(spawn_etcd(&store, listener, tls, stop_rx.clone())?),
            None => None,
        };
        let api_cfg = apiserver::ApiConfig {
            listen: api_addr,
            data_dir: data_dir.clone(),
            advertise: cfg.api_advertise.clone(),
            default_toleration_seconds: cfg.controllers.default_toleration_seconds.max(0),
        };
        let components = Components {
            identity: format!("{}-{:x}", cfg.store.name, store.identity().member_id),
            node_name: cfg.node_name.clone(),
            node_labels: cfg.node_labels.clone(),
            agent: cfg.agent,
            kubelet_listen: cfg
                .kubelet_listen
                .unwrap_or_else(|| SocketAddr::new(api_addr.ip(), 0)),
            data_dir: data_dir.clone(),
            settings: cfg.controllers.clone(),
            ingress: cfg.ingress,
        };
        let (api_tx, api_rx) = watch::channel(None);
        let api_store = store.clone();
        let api_task = tokio::spawn(async move {
            let mut stop = stop_rx.clone();
            // The API server needs a store that answers: the first member
            // of a new cluster may wait for the others.
            loop {
                tokio::select! {
                    r = api_store.wait_leader(Duration::from_secs(5)) => if r.is_ok() { break },
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                tracing::info!(
                    "waiting for the store to elect a leader before starting the Kubernetes API"
                );
            }
            let api = ApiServer::new(api_store, &api_cfg)
                .await
                .context("starting the API server")?;
            tracing::info!(kubeconfig = %api_cfg.data_dir.join("kubeconfig.yaml").display(), join_token = %api_cfg.data_dir.join("pki/join.token").display(), "kubeconfig written");
            let agent = components.start(&api, stop_rx.clone());
            let mut quic_stop = stop_rx.clone();
            tokio::spawn(api.clone().serve_quic(quic_socket, async move {
                let _ = quic_stop.wait_for(|s| *s).await;
            }));
            let _ = api_tx.send(Some(api.clone()));
            let mut stop = stop_rx;
            let served = api
                .serve(api_listener, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Some(agent) = agent {
                // The agent takes down what it set up on the host (the
                // service addresses) before the process ends.
                let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
            }
            served
        });
        Ok(Server {
            store,
            data_dir,
            api_addr,
            stop_tx,
            api: api_rx,
            api_task,
            etcd_task,
        })
    }

    /// Waits until the Kubernetes API serves (the store has a leader and
    /// the built-in objects exist).
    pub async fn ready(&self) -> Result<()> {
        let mut api = self.api.clone();
        tokio::select! {
            r = api.wait_for(Option::is_some) => {
                r.map_err(|_| anyhow::anyhow!("the Kubernetes API did not start"))?;
                Ok(())
            }
            _ = async { while !self.api_task.is_finished() { tokio::time::sleep(Duration::from_millis(50)).await } } => {
                bail!("the Kubernetes API did not start (see the log)")
            }
        }
    }

    /// The bound address of the Kubernetes API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The admin kubeconfig, written once the API serves.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// The store, for reads of the raw keys (as `etcdctl` would).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A client that reaches the API server in-process, as `user` in
    /// `groups` — no TLS, no sockets, the same authorization, admission and
    /// validation as over HTTPS. Panics before [`ready`](Server::ready).
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        let api = self.api.borrow().clone().expect("Server::ready first");
        apiserver::local::client(&api, user, groups)
    }

    /// An in-process client as a cluster admin (`system:masters`).
    pub fn client(&self) -> Client {
        self.client_as("skiff-embedded-admin", &["system:masters"])
    }

    /// Stops every component and the store; waits for them.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop_tx.send(true);
        let api = self.api_task.await;
        let etcd = match self.etcd_task {
            Some(t) => Some(t.await),
            None => None,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.stop()).await?;
        api.context("kubernetes API task")?
            .context("kubernetes API")?;
        if let Some(etcd) = etcd {
            etcd.context("etcd API task")??;
        }
        Ok(())
    }

    /// Runs until `shutdown` resolves, then stops. What `skiff server` does.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let failed = tokio::select! {
            () = &mut shutdown => false,
            // The API task ends early only if it failed.
            () = async { while !self.api_task.is_finished() { tokio::time::sleep(Duration::from_millis(200)).await } } => true,
        };
        let r = self.stop().await;
        if failed && r.is_ok() {
            bail!("the Kubernetes API stopped");
        }
        r
    }
}

/// A member that joined as a learner becomes a voter once it has caught up
/// with the leader (it has applied all it knows to be committed), so that
/// a member still copying the snapshot never counts toward the quorum.
async fn promote_when_caught_up(store: Store, mut stop: watch::Receiver<bool>) {
    let me = store.identity().member_id;
    loop {
        let learner = store
            .members()
            .iter()
            .find(|m| m.id == me)
            .map(|m| m.is_learner);
        match learner {
            Some(false) => return,
            Some(true) => {
                let st = store.raft_status();
                if st.leader != 0 && st.commit > 0 && st.applied >= st.commit {
                    match store.member_promote(me).await {
                        Ok(_) => {
                            tracing::info!(member = format!("{me:x}"), "promoted to voter");
                            return;
                        }
                        Err(e) => tracing::debug!("promoting this member: {e}"),
                    }
                }
            }
            // The member table arrives with the leader's snapshot.
            None => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn spawn_etcd(
    store: &Store,
    listener: tokio::net::TcpListener,
    tls: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<Result<()>>> {
    let tls_cfg = if tls {
        let t = store.tls().context("no certificates")?;
        Some(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    &t.cert_pem,
                    &t.key_pem,
                ))
                .client_ca_root(tonic::transport::Certificate::from_pem(&t.ca_pem)),
        )
    } else {
        None
    };
    let addr = listener.local_addr()?;
    let store = store.clone();
    Ok(tokio::spawn(async move {
        consensus::etcd::serve_on(store, listener, tls_cfg, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .with_context(|| format!("etcd API on {addr}"))
    }))
}

/// What runs beside the API server: the controllers and the scheduler (on
/// the elected member only) and this host's agent. Each reaches the API
/// server through the in-process transport, as its own user.
struct Components {
    identity: String,
    node_name: String,
    node_labels: BTreeMap<String, String>,
    agent: bool,
    kubelet_listen: SocketAddr,
    data_dir: PathBuf,
    settings: controllers::Settings,
    ingress: crate::agent::proxy::IngressListen,
}

impl Components {
    /// The in-process agent's serving certificate, issued by this member's
    /// CA at each start (it is never written to disk).
    fn serving_tls(&self) -> Option<consensus::pki::NodeTls> {
        let issued = consensus::pki::ClusterCa::load(&self.data_dir.join("pki")).and_then(|ca| {
            let cert = ca.issue_for(
                &format!("system:node:{}", self.node_name),
                &["system:nodes"],
                std::slice::from_ref(&self.node_name),
            )?;
            Ok(consensus::pki::NodeTls {
                ca_pem: ca.cert_pem().to_string(),
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
            })
        });
        issued
            .inspect_err(|e| tracing::warn!("no serving certificate for the agent: {e}"))
            .ok()
    }

    /// Starts them; the agent's task is returned, to be awaited at stop.
    fn start(
        &self,
        api: &Arc<ApiServer>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<JoinHandle<()>> {
        use apiserver::local::client;
        let lease = Duration::from_secs(15);
        let cm = client(api, "system:kube-controller-manager", &["system:masters"]);
        let mut settings = self.settings.clone();
        settings.root_ca_pem = api.ca_pem().to_string();
        tokio::spawn(leader::run_elected(
            cm.clone(),
            "skiff-controller-manager".into(),
            self.identity.clone(),
            lease,
            move |stop| controllers::run(cm.clone(), settings.clone(), stop),
            stop.clone(),
        ));
        let sched = client(api, "system:kube-scheduler", &["system:masters"]);
        tokio::spawn(leader::run_elected(
            sched.clone(),
            "skiff-scheduler".into(),
            self.identity.clone(),
            lease,
            move |stop| scheduler::run(sched.clone(), stop),
            stop.clone(),
        ));
        if self.agent {
            let node = client(
                api,
                &format!("system:node:{}", self.node_name),
                &["system:nodes", "system:masters"],
            );
            let cfg = agent::AgentConfig {
                node_name: self.node_name.clone(),
                data_dir: self.data_dir.join("agent"),
                // A server's node carries the control-plane role, as
                // kubeadm and k3s label theirs (kubectl's ROLES column).
                labels: {
                    let mut labels = self.node_labels.clone();
                    labels
                        .entry("node-role.kubernetes.io/control-plane".into())
                        .or_insert_with(|| "true".into());
                    labels
                },
                kubelet_listen: Some(self.kubelet_listen),
                serving: self.serving_tls(),
                control_streams: None,
                ingress: self.ingress,
            };
            return Some(tokio::spawn(async move {
                if let Err(e) = agent::run(node, cfg, stop).await {
                    tracing::error!("agent: {e:#}");
                }
            }));
        }
        None
    }
}
