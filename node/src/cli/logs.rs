//! `skiff logs`: a container's log, streamed from `pods/{name}/log` (which
//! the API server reads from the agent of the pod's node) to stdout.

use std::io::Write;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::BodyExt;

use super::{Conn, Ctx, parse_duration};

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The pod: NAME or pod/NAME.
    #[arg(value_name = "POD")]
    pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep streaming new lines until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The previous instance of the container (after a restart).
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    timestamps: bool,
    /// Only lines newer than this (5s, 2m, 1h).
    #[arg(long, value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Stop after this many bytes.
    #[arg(long)]
    limit_bytes: Option<u64>,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(args: LogsArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    let name = match args.pod.split_once('/') {
        None => args.pod.as_str(),
        Some(("pod" | "pods" | "po", n)) if !n.is_empty() => n,
        Some(_) => bail!(
            "skiff logs takes a pod: NAME or pod/NAME (got {:?})",
            args.pod
        ),
    };
    let mut query = Vec::new();
    let container = pick_container(&ctx, name, args.container.as_deref()).await?;
    if let Some(c) = container {
        query.push(format!("container={c}"));
    }
    if args.follow {
        query.push("follow=true".into());
    }
    if args.previous {
        query.push("previous=true".into());
    }
    if args.tail >= 0 {
        query.push(format!("tailLines={}", args.tail));
    }
    if args.timestamps {
        query.push("timestamps=true".into());
    }
    if let Some(s) = args.since {
        query.push(format!("sinceSeconds={}", s.as_secs().max(1)));
    }
    if let Some(n) = args.limit_bytes {
        query.push(format!("limitBytes={n}"));
    }
    let mut path = format!("/api/v1/namespaces/{}/pods/{name}/log", ctx.namespace);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let req = Request::get(path)
        .header(header::ACCEPT, "*/*")
        .body(Bytes::new())
        .context("building the request")?;
    let mut body = ctx.client.send(req).await?.into_body();
    // Written as it comes: with -f, lines appear as the container writes
    // them, until it stops or the command is interrupted.
    let mut out = std::io::stdout().lock();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading the log")?.into_data() {
            out.write_all(&data)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The container to read, as kubectl picks it: the one asked for, which
/// must be the pod's; else, in a pod of several, the
/// `kubectl.kubernetes.io/default-container` annotation or the first, said
/// on stderr.
async fn pick_container(ctx: &Ctx, name: &str, asked: Option<&str>) -> Result<Option<String>> {
    let pods = ctx.resource("pods").await?;
    let pod = skiff_sdk::client::dynamic::DynamicApi::new(&ctx.client, &pods, Some(&ctx.namespace))
        .get(name)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                // kubectl logs words this one its own way.
                anyhow::anyhow!(
                    "error from server (NotFound): pods \"{name}\" not found in namespace \"{}\"",
                    ctx.namespace
                )
            } else {
                e.into()
            }
        })?;
    let names_in = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let names = names_in("containers");
    if let Some(c) = asked {
        let known = names
            .iter()
            .chain(&names_in("initContainers"))
            .chain(&names_in("ephemeralContainers"))
            .any(|n| n == c);
        if !known {
            bail!("container {c} is not valid for pod {name}");
        }
        return Ok(Some(c.to_string()));
    }
    if names.len() < 2 {
        return Ok(None);
    }
    let chosen = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|c| names.iter().any(|n| n == c))
        .unwrap_or(&names[0]);
    eprintln!(
        "Defaulted container \"{chosen}\" out of: {}",
        names.join(", ")
    );
    Ok(Some(chosen.to_string()))
}
