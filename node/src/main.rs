//! `skiff`: one binary for the control plane, the agent and the client.

mod agent;
mod apiserver;
mod bench;
mod cli;
mod controllers;
mod join;
mod leader;
mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use consensus::{ClusterState, Store, StoreConfig};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A WebAssembly-first orchestrator with Kubernetes' API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a control-plane member: the replicated store and its etcd v3 API.
    Server(ServerArgs),
    /// Run a worker node: this host's agent, joined to a cluster.
    Agent(AgentArgs),
    /// Work with images in an OCI registry.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Work with store snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Benchmarks that run skiff and a peer side by side.
    Bench {
        #[command(subcommand)]
        cmd: bench::BenchCmd,
    },
    /// The kubectl-like client commands (cli/).
    #[command(flatten)]
    Client(cli::Command),
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Push a .wasm module or component to a registry as a wasm OCI
    /// artifact (what a Pod's `image` then names).
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Where to push it: registry/repository:tag, e.g.
        /// localhost:5000/skiff/hello-http:v1 (loopback registries are
        /// spoken to over plain HTTP, all others over HTTPS).
        reference: String,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Create a data directory for a new cluster from a snapshot file
    /// (written by `etcdctl snapshot save` against skiff).
    Restore {
        /// The snapshot file.
        file: PathBuf,
        #[command(flatten)]
        member: MemberArgs,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum InitialState {
    New,
    Existing,
}

#[derive(clap::Args, Clone)]
struct MemberArgs {
    /// Where this member keeps its store, certificates and state.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// This member's name, unique in the cluster.
    #[arg(long, default_value = "default")]
    name: String,
    /// UDP address of the QUIC endpoint for Raft traffic between members.
    #[arg(long, default_value = "127.0.0.1:2380")]
    peer_listen: SocketAddr,
    /// host:port other members reach this one at (default: --peer-listen).
    #[arg(long)]
    peer_advertise: Option<String>,
    /// The initial members, as name=host:port,... (default: just this one).
    #[arg(long, value_delimiter = ',')]
    initial_cluster: Vec<String>,
    /// `new` bootstraps a cluster; `existing` joins one that already lists
    /// this member (after `etcdctl member add`).
    #[arg(long, value_enum, default_value = "new")]
    initial_cluster_state: InitialState,
    /// Directory with the cluster CA (ca.crt, ca.key) to issue this member's
    /// certificate from; every member but the first needs it.
    #[arg(long)]
    ca_from: Option<PathBuf>,
    /// Raft tick, in milliseconds.
    #[arg(long, default_value_t = 20)]
    tick_ms: u64,
    /// Ticks without a leader before an election (randomized up to twice).
    #[arg(long, default_value_t = 7)]
    election_ticks: usize,
}

#[derive(clap::Args)]
struct ServerArgs {
    #[command(flatten)]
    member: MemberArgs,
    /// Address of the etcd v3 gRPC API. Beyond loopback it requires
    /// --etcd-client-cert-auth.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd_listen: SocketAddr,
    /// Serve the etcd API over TLS and require client certificates signed by
    /// the cluster CA.
    #[arg(long)]
    etcd_client_cert_auth: bool,
    /// Address of the Kubernetes API (HTTPS, always authenticated); the
    /// same port over UDP takes the agents' QUIC connections.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: SocketAddr,
    /// host:port written into DIR/kubeconfig.yaml (default: --api-listen).
    #[arg(long)]
    api_advertise: Option<String>,
    /// The name of this host's Node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// A label for this host's Node, key=value (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// Run no pods here: a control-plane-only member.
    #[arg(long)]
    disable_agent: bool,
    /// Where this host's agent serves container logs to the API server
    /// (HTTPS, mutual TLS; port 0: any free port). Default: the address of
    /// --api-listen, any free port.
    #[arg(long)]
    kubelet_listen: Option<SocketAddr>,
    /// Seconds without a lease renewal after which a node is NotReady.
    #[arg(long, default_value_t = 10)]
    node_monitor_grace_period: u64,
    /// How long pods without their own toleration stay on a NotReady or
    /// unreachable node before they are evicted (Kubernetes: 300).
    #[arg(long, default_value_t = 30)]
    default_toleration_seconds: i64,
}

/// This machine's host name, lowercased as a node name must be.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server to join, https://host:port.
    #[arg(long)]
    server: String,
    /// The join token (the server's DIR/pki/join.token).
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: String,
    /// Where the agent keeps its certificate, pods' logs and volumes.
    #[arg(long, default_value = "/var/lib/skiff-agent")]
    data_dir: PathBuf,
    /// The name of this host's Node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// A label for this host's Node, key=value (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    node_labels: Vec<String>,
    /// Where the agent serves container logs to the API server (HTTPS,
    /// mutual TLS, as the kubelet's port; port 0: any free port). A
    /// specific address is also advertised as the Node's InternalIP.
    #[arg(long, default_value = "0.0.0.0:10250")]
    kubelet_listen: SocketAddr,
    /// Open no log port: serve container logs only on the QUIC connection
    /// to the control plane (needs --transport quic).
    #[arg(long)]
    disable_kubelet_port: bool,
    /// How the agent talks to the control plane: `quic` (UDP, the API
    /// server's port number; every request on its own stream) or `https`
    /// (TCP, for networks that drop UDP).
    #[arg(long, value_enum, default_value = "quic")]
    transport: AgentTransport,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AgentTransport {
    Quic,
    Https,
}

fn parse_labels(labels: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--node-label {l:?} is not key=value"))
        })
        .collect()
}

async fn agent_main(args: AgentArgs) -> Result<()> {
    let node = args.node_name.clone().unwrap_or_else(host_name);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    if args.disable_kubelet_port && args.transport != AgentTransport::Quic {
        bail!("--disable-kubelet-port needs --transport quic: logs would have no way out");
    }
    let conn = join::node_connection(&args.server, &args.token, &node, &args.data_dir).await?;
    let (client, control_streams) = match args.transport {
        AgentTransport::Quic => {
            let (t, streams) = skiff_sdk::client::quic::QuicTransport::with_incoming(&conn)?;
            let streams =
                agent::logs::ControlStreams(std::sync::Arc::new(tokio::sync::Mutex::new(streams)));
            (skiff_sdk::client::Client::new(t), Some(streams))
        }
        AgentTransport::Https => (
            skiff_sdk::client::Client::new(skiff_sdk::client::https::HttpsTransport::new(conn)?),
            None,
        ),
    };
    let cfg = agent::AgentConfig {
        node_name: node,
        data_dir: args.data_dir.clone(),
        labels: parse_labels(&args.node_labels)?,
        kubelet_listen: (!args.disable_kubelet_port).then_some(args.kubelet_listen),
        serving: Some(join::serving_tls(&args.data_dir)?),
        control_streams,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    agent::run(client, cfg, stop_rx).await
}

impl MemberArgs {
    fn store_config(&self, client_urls: Vec<String>) -> Result<StoreConfig> {
        let mut cfg = StoreConfig::new(&self.data_dir, &self.name);
        cfg.peer_listen = self.peer_listen;
        cfg.peer_advertise = self.peer_advertise.clone();
        cfg.client_urls = client_urls;
        cfg.initial_cluster = self
            .initial_cluster
            .iter()
            .map(|m| {
                m.split_once('=')
                    .map(|(n, a)| (n.to_string(), a.to_string()))
                    .with_context(|| format!("--initial-cluster entry {m:?} is not name=host:port"))
            })
            .collect::<Result<_>>()?;
        cfg.cluster_state = match self.initial_cluster_state {
            InitialState::New => ClusterState::New,
            InitialState::Existing => ClusterState::Existing,
        };
        cfg.ca_from = self.ca_from.clone();
        if self.tick_ms == 0 || self.election_ticks < 2 {
            bail!("--tick-ms must be positive and --election-ticks at least 2");
        }
        cfg.tick = Duration::from_millis(self.tick_ms);
        cfg.election_ticks = self.election_ticks;
        Ok(cfg)
    }
}

fn main() -> std::process::ExitCode {
    let cmd = match Cli::parse().cmd {
        Cmd::Client(cmd) => {
            // A client prints what it was asked for: only warnings go to stderr.
            init_tracing("warn");
            return cli::run(cmd, Cli::command);
        }
        other => other,
    };
    init_tracing("info");
    match run(cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cmd: Cmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff")
        .build()?;
    match cmd {
        Cmd::Server(args) => rt.block_on(server(args)),
        Cmd::Agent(args) => rt.block_on(agent_main(args)),
        Cmd::Image {
            cmd: ImageCmd::Push { file, reference },
        } => rt.block_on(async move {
            let image = skiff_sdk::runtime::ImageRef::parse(&reference)
                .map_err(|e| anyhow::anyhow!("{reference:?}: {e}"))?;
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            if !wasm.starts_with(b"\0asm") {
                bail!("{} is not a WebAssembly binary", file.display());
            }
            let digest = skiff_sdk::registry::RegistryClient::new()
                .push_wasm(&image, wasm.into())
                .await?;
            println!("pushed {reference} ({digest})");
            Ok(())
        }),
        Cmd::Snapshot {
            cmd: SnapshotCmd::Restore { file, member },
        } => {
            let cfg = member.store_config(Vec::new())?;
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let data = consensus::etcd::verify_checksum(&data)
                .with_context(|| format!("snapshot {}", file.display()))?;
            consensus::server::restore(&cfg, data)?;
            println!(
                "restored {} into {}",
                file.display(),
                cfg.data_dir.display()
            );
            Ok(())
        }
        Cmd::Bench { cmd } => rt.block_on(bench::run(cmd)),
        Cmd::Client(_) => unreachable!("client commands return from main"),
    }
}

async fn server(args: ServerArgs) -> Result<()> {
    let tls = args.etcd_client_cert_auth;
    if !args.etcd_listen.ip().is_loopback() && !tls {
        bail!(
            "--etcd-listen {} is reachable off this machine: add --etcd-client-cert-auth \
             (mutual TLS with the cluster CA) or listen on loopback",
            args.etcd_listen
        );
    }
    let scheme = if tls { "https" } else { "http" };
    let cfg = args
        .member
        .store_config(vec![format!("{scheme}://{}", args.etcd_listen)])?;
    let data_dir = cfg.data_dir.clone();
    let store = Store::start(cfg, tokio::runtime::Handle::current())
        .with_context(|| format!("starting the store in {}", data_dir.display()))?;
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
    tracing::info!(
        member = format!("{:x}", store.identity().member_id),
        cluster = format!("{:x}", store.identity().cluster_id),
        etcd = %args.etcd_listen,
        peer = ?store.peer_local_addr(),
        "skiff store member started"
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    // The API server needs a store that answers: it starts once the
    // members have elected a leader (the first member of a new cluster may
    // wait for the others), while the etcd API serves from the start.
    let api_cfg = apiserver::ApiConfig {
        listen: args.api_listen,
        data_dir: data_dir.clone(),
        advertise: args.api_advertise.clone(),
        default_toleration_seconds: args.default_toleration_seconds.max(0),
    };
    let (api_listener, quic_socket) = apiserver::bind(args.api_listen).await?;
    let components = Components {
        identity: format!("{}-{:x}", args.member.name, store.identity().member_id),
        node_name: args.node_name.clone().unwrap_or_else(host_name),
        node_labels: parse_labels(&args.node_labels)?,
        agent: !args.disable_agent,
        kubelet_listen: args
            .kubelet_listen
            .unwrap_or_else(|| SocketAddr::new(args.api_listen.ip(), 0)),

        data_dir: data_dir.clone(),
        settings: controllers::Settings {
            node_monitor_grace: Duration::from_secs(args.node_monitor_grace_period.max(1)),
            default_toleration_seconds: args.default_toleration_seconds.max(0),
        },
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_store = store.clone();
    let api_task = tokio::spawn(async move {
        let mut stop = stop_rx.clone();
        loop {
            tokio::select! {
                r = api_store.wait_leader(Duration::from_secs(5)) => if r.is_ok() { break },
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            tracing::info!(
                "waiting for the store to elect a leader before starting the Kubernetes API"
            );
        }
        let api = apiserver::ApiServer::new(api_store, &api_cfg)
            .await
            .context("starting the API server")?;
        tracing::info!(kubeconfig = %api_cfg.data_dir.join("kubeconfig.yaml").display(), join_token = %api_cfg.data_dir.join("pki/join.token").display(), "kubeconfig written");
        components.start(&api, stop_rx.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(api.clone().serve_quic(quic_socket, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        let mut stop = stop_rx;
        api.serve(api_listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    });
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let served = consensus::etcd::serve(store.clone(), args.etcd_listen, tls_cfg, shutdown).await;
    match api_task.await {
        Ok(Err(e)) => tracing::error!("kubernetes API: {e:#}"),
        Err(e) => tracing::error!("kubernetes API task: {e}"),
        Ok(Ok(())) => {}
    }
    let stop = store.clone();
    tokio::task::spawn_blocking(move || stop.stop()).await?;
    served.with_context(|| format!("etcd API on {}", args.etcd_listen))?;
    Ok(())
}

/// What runs beside the API server in `skiff server`: the controllers and
/// the scheduler (on the elected member only) and this host's agent. Each
/// reaches the API server through the in-process transport, as its own user.
struct Components {
    identity: String,
    node_name: String,
    node_labels: std::collections::BTreeMap<String, String>,
    agent: bool,
    kubelet_listen: SocketAddr,
    data_dir: PathBuf,
    settings: controllers::Settings,
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

    fn start(
        &self,
        api: &std::sync::Arc<apiserver::ApiServer>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        use apiserver::local::client;
        let lease = Duration::from_secs(15);
        let cm = client(api, "system:kube-controller-manager", &["system:masters"]);
        let settings = self.settings.clone();
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
                labels: self.node_labels.clone(),
                kubelet_listen: Some(self.kubelet_listen),
                serving: self.serving_tls(),
                control_streams: None,
            };
            tokio::spawn(async move {
                if let Err(e) = agent::run(node, cfg, stop).await {
                    tracing::error!("agent: {e:#}");
                }
            });
        }
    }
}
