//! `skiff`: one binary for the control plane, the agent and the client.

use skiff_node::server::host_name;
use skiff_node::{Server, ServerConfig, agent, bench, cli, controllers, join};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use consensus::{ClusterState, StoreConfig};

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
    /// Push a directory as a one-layer container image (like `docker
    /// import`), e.g. a root filesystem made by scripts/busybox-rootfs.
    Import {
        /// The root filesystem.
        dir: PathBuf,
        /// Where to push it, as for `push`.
        reference: String,
        /// The image's Entrypoint: a JSON array, or words split on spaces.
        #[arg(long)]
        entrypoint: Option<String>,
        /// The image's Cmd: a JSON array, or words split on spaces.
        #[arg(long)]
        cmd: Option<String>,
        /// An environment variable NAME=value (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        /// The working directory.
        #[arg(long)]
        workdir: Option<String>,
        /// The user (uid[:gid] or name[:group] from the image's /etc/passwd).
        #[arg(long)]
        user: Option<String>,
        /// The platform the image is built for, os/arch (default: this
        /// machine's).
        #[arg(long)]
        platform: Option<String>,
    },
}

/// `--cmd`/`--entrypoint`: a JSON array of strings, or words.
fn argv_flag(flag: &str, value: Option<String>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(v) = value else { return Ok(None) };
    if v.trim_start().starts_with('[') {
        return serde_json::from_str(&v)
            .map(Some)
            .with_context(|| format!("--{flag} {v:?} is not a JSON array of strings"));
    }
    Ok(Some(v.split_whitespace().map(str::to_string).collect()))
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
    /// Join the control plane of the cluster whose API is at this URL
    /// (https://host:port) as a new store member, instead of starting a new
    /// cluster. Needs --token; peers must reach --peer-advertise.
    #[arg(long, value_name = "URL", requires = "token")]
    join: Option<String>,
    /// The server token of the cluster to join (its DIR/pki/server.token).
    #[arg(long, env = "SKIFF_SERVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where this host's agent serves container logs to the API server
    /// (HTTPS, mutual TLS; port 0: any free port). Default: the address of
    /// --api-listen, any free port.
    #[arg(long)]
    kubelet_listen: Option<SocketAddr>,
    #[command(flatten)]
    ingress: IngressArgs,
    /// Seconds without a lease renewal after which a node is NotReady.
    #[arg(long, default_value_t = 10)]
    node_monitor_grace_period: u64,
    /// How long pods without their own toleration stay on a NotReady or
    /// unreachable node before they are evicted (Kubernetes: 300).
    #[arg(long, default_value_t = 30)]
    default_toleration_seconds: i64,
}

/// The ingress gateway's flags, for `server` and `agent` alike.
#[derive(clap::Args)]
struct IngressArgs {
    /// Where the ingress gateway serves HTTP (Ingress rules).
    #[arg(long, default_value = "0.0.0.0:80")]
    ingress_http_listen: SocketAddr,
    /// Where the ingress gateway serves HTTPS (the Ingresses' TLS Secrets).
    #[arg(long, default_value = "0.0.0.0:443")]
    ingress_https_listen: SocketAddr,
    /// Run no ingress gateway on this host.
    #[arg(long)]
    disable_ingress: bool,
}

impl IngressArgs {
    fn listen(&self) -> agent::proxy::IngressListen {
        let on = !self.disable_ingress;
        agent::proxy::IngressListen {
            http: on.then_some(self.ingress_http_listen),
            https: on.then_some(self.ingress_https_listen),
        }
    }
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
    #[command(flatten)]
    ingress: IngressArgs,
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
        ingress: args.ingress.listen(),
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
        Cmd::Image {
            cmd:
                ImageCmd::Import {
                    dir,
                    reference,
                    entrypoint,
                    cmd,
                    env,
                    workdir,
                    user,
                    platform,
                },
        } => rt.block_on(async move {
            let image = skiff_sdk::runtime::ImageRef::parse(&reference)
                .map_err(|e| anyhow::anyhow!("{reference:?}: {e}"))?;
            if !dir.is_dir() {
                bail!("{} is not a directory", dir.display());
            }
            if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
                bail!("--env {bad:?} is not NAME=value");
            }
            let config = oci_bridge::image::ImageConfig {
                entrypoint: argv_flag("entrypoint", entrypoint)?,
                cmd: argv_flag("cmd", cmd)?,
                env: (!env.is_empty()).then_some(env),
                working_dir: workdir,
                user,
            };
            let platform = platform.unwrap_or_else(|| format!("linux/{}", oci_bridge::kube_arch()));
            if platform.split('/').count() != 2 || platform.split('/').any(str::is_empty) {
                bail!("--platform {platform:?} is not os/arch (e.g. linux/arm64)");
            }
            let digest = oci_bridge::image::push_dir(
                &skiff_sdk::registry::RegistryClient::new(),
                &image,
                &dir,
                &config,
                &platform,
            )
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
    let cfg = ServerConfig {
        store: args.member.store_config(Vec::new())?,
        etcd_listen: Some(args.etcd_listen),
        etcd_client_cert_auth: args.etcd_client_cert_auth,
        api_listen: args.api_listen,
        api_advertise: args.api_advertise.clone(),
        node_name: args.node_name.clone().unwrap_or_else(host_name),
        node_labels: parse_labels(&args.node_labels)?,
        agent: !args.disable_agent,
        kubelet_listen: args.kubelet_listen,
        ingress: args.ingress.listen(),
        controllers: controllers::Settings {
            node_monitor_grace: Duration::from_secs(args.node_monitor_grace_period.max(1)),
            default_toleration_seconds: args.default_toleration_seconds.max(0),
            ..Default::default()
        },
        join: args
            .join
            .clone()
            .map(|server| skiff_node::server::JoinConfig {
                server,
                token: args.token.clone().unwrap_or_default(),
            }),
    };
    let server = Server::start(cfg).await?;
    server
        .run_until(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutting down");
        })
        .await
}
