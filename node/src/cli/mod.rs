//! The kubectl-like client commands of `skiff` (`get`, `describe`, `logs`,
//! `apply`, `delete`, `scale`, `rollout`, `completion`).
//!
//! They use the SDK's client, the one applications use: the kubeconfig
//! names the server and the credentials, discovery maps `po`, `deploy` or a
//! manifest's kind to a resource, and the server renders the tables
//! (`as=Table`), so `skiff get` prints what `kubectl get` prints.

mod apply;
mod delete;
mod describe;
mod get;
mod logs;
mod manifest;
mod print;
mod rollout;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use skiff_sdk::client::discovery::Discovery;
use skiff_sdk::client::dynamic::ApiResource;
use skiff_sdk::client::https::{Connection, HttpsTransport};
use skiff_sdk::client::{self, Client};

/// The client commands, flattened into `skiff`'s own.
#[derive(Subcommand)]
pub enum Command {
    /// Display one or many resources, as `kubectl get` does.
    Get(get::GetArgs),
    /// Show every field of objects and the Events about them.
    Describe(describe::DescribeArgs),
    /// Print (or follow) a container's log.
    Logs(logs::LogsArgs),
    /// Create or update resources from manifests (client-side apply).
    Apply(apply::ApplyArgs),
    /// Delete resources by type and name, by manifest or by label.
    Delete(delete::DeleteArgs),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(delete::ScaleArgs),
    /// Follow and manage the rollout of a Deployment (status, history, undo).
    Rollout {
        #[command(subcommand)]
        cmd: rollout::RolloutCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How to reach the cluster: the options every client command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// The kubeconfig file (default: the first of $KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

/// An error already reported to the user: exit 1 without saying more.
#[derive(Debug, thiserror::Error)]
#[error("failed")]
struct Reported;

/// Runs a client command; `root` builds the whole command line (for
/// completion scripts).
pub fn run(cmd: Command, root: impl FnOnce() -> clap::Command) -> ExitCode {
    if let Command::Completion { shell } = cmd {
        clap_complete::generate(shell, &mut root(), "skiff", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match cmd {
            Command::Get(a) => get::run(a).await,
            Command::Describe(a) => describe::run(a).await,
            Command::Logs(a) => logs::run(a).await,
            Command::Apply(a) => apply::run(a).await,
            Command::Delete(a) => delete::run(a).await,
            Command::Scale(a) => delete::scale(a).await,
            Command::Rollout { cmd } => rollout::run(cmd).await,
            Command::Completion { .. } => Ok(()),
        }
    });
    // A watch may still be reading: don't wait for it.
    rt.shutdown_background();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("{}", describe(&e));
            }
            ExitCode::FAILURE
        }
    }
}

/// An error as kubectl words it: the server's Status as
/// `Error from server (Reason): message`, anything else as `error: ...`.
pub fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<client::Error>() {
        Some(client::Error::Api(s)) => from_server(s, ""),
        _ => format!("error: {e:#}"),
    }
}

/// `Error from server (NotFound): {context}pods "x" not found`.
fn from_server(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
    context: &str,
) -> String {
    let message = s.message.as_deref().unwrap_or("");
    match s.reason.as_deref().filter(|r| !r.is_empty()) {
        Some(reason) => format!("Error from server ({reason}): {context}{message}"),
        None => format!("Error from server: {context}{message}"),
    }
}

/// Reports a per-object failure and goes on (kubectl reports each and
/// exits 1 at the end).
fn report(e: &anyhow::Error, context: &str) {
    match e.downcast_ref::<client::Error>() {
        Some(client::Error::Api(s)) => eprintln!("{}", from_server(s, context)),
        _ => eprintln!("error: {context}{e:#}"),
    }
}

/// A connected client, its default namespace and (fetched once) what the
/// server serves.
pub struct Ctx {
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
    discovery: tokio::sync::OnceCell<Discovery>,
}

impl Ctx {
    pub fn connect(conn: &Conn) -> Result<Ctx> {
        let path = kubeconfig_path(conn)?;
        let c = Connection::from_kubeconfig(&path)?;
        let namespace = conn
            .namespace
            .clone()
            .or_else(|| c.namespace.clone())
            .unwrap_or_else(|| "default".into());
        Ok(Ctx {
            client: Client::new(HttpsTransport::new(c)?),
            namespace,
            discovery: tokio::sync::OnceCell::new(),
        })
    }

    pub async fn discovery(&self) -> Result<&Discovery> {
        Ok(self
            .discovery
            .get_or_try_init(|| Discovery::run(&self.client))
            .await?)
    }

    /// The resource a command-line name means.
    pub async fn resource(&self, name: &str) -> Result<ApiResource> {
        self.discovery()
            .await?
            .resolve(name)
            .cloned()
            .ok_or_else(|| anyhow!("the server doesn't have a resource type {name:?}"))
    }
}

/// kubectl's order: --kubeconfig, the first file of $KUBECONFIG that
/// exists, ~/.kube/config.
fn kubeconfig_path(conn: &Conn) -> Result<PathBuf> {
    if let Some(p) = &conn.kubeconfig {
        return Ok(p.clone());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if let Some(p) = paths.iter().find(|p| p.exists()).or(paths.first()) {
            return Ok(p.clone());
        }
    }
    let home = std::env::var_os("HOME").context("neither KUBECONFIG nor HOME is set")?;
    let p = PathBuf::from(home).join(".kube/config");
    if !p.exists() {
        bail!(
            "no kubeconfig: {} does not exist (set KUBECONFIG or pass --kubeconfig; \
             `skiff server` writes DIR/kubeconfig.yaml)",
            p.display()
        );
    }
    Ok(p)
}

/// (type, name) pairs, and the type when it was given on its own.
type TypeNames = (Vec<(String, String)>, Option<String>);

/// `TYPE NAME...` or `TYPE/NAME...` into (type, name) pairs; a lone `TYPE`
/// gives no names.
fn type_names(args: &[String]) -> Result<TypeNames> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource (e.g. pods, deploy, svc) and a name");
    };
    if first.contains('/') {
        let pairs = args
            .iter()
            .map(|a| {
                a.split_once('/')
                    .filter(|(t, n)| !t.is_empty() && !n.is_empty())
                    .map(|(t, n)| (t.to_string(), n.to_string()))
                    .with_context(|| {
                        format!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {a:?})")
                    })
            })
            .collect::<Result<_>>()?;
        return Ok((pairs, None));
    }
    let pairs = args[1..]
        .iter()
        .map(|n| (first.clone(), n.clone()))
        .collect();
    Ok((pairs, Some(first.clone())))
}

/// A duration as kubectl's flags take it: `30s`, `5m`, `1h`, `0` (none).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (use s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        let (p, t) = type_names(&["po".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(t.as_deref(), Some("po"));
        assert_eq!(
            p,
            vec![("po".into(), "a".into()), ("po".into(), "b".into())]
        );
        let (p, t) = type_names(&["deploy/web".into(), "svc/web".into()]).unwrap();
        assert!(t.is_none());
        assert_eq!(p[1], ("svc".into(), "web".into()));
        assert!(type_names(&["deploy/web".into(), "web".into()]).is_err());
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("0").unwrap().as_secs(), 0);
        assert!(parse_duration("3 weeks").is_err());
    }
}
