//! `skiff delete` (waiting for the objects to be gone, as kubectl does) and
//! `skiff scale` (the scale subresource).

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde_json::json;
use skiff_sdk::client::dynamic::{ApiResource, DynamicApi};
use skiff_sdk::client::{DeleteParams, ListParams, PatchType};

use super::{Conn, Ctx, Reported, manifest, parse_duration, report, type_names};

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// TYPE NAME... or TYPE/NAME... (or -f, or TYPE -l SELECTOR).
    #[arg(value_name = "TYPE [NAME]")]
    args: Vec<String>,
    /// Delete the objects of these manifests (files, directories, -).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<String>,
    /// Delete every object of TYPE whose labels match.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Wait until the objects are gone (`--wait=false` to return at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    wait: bool,
    /// Give up waiting after this long (`0`: wait as long as it takes).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    timeout: Duration,
    /// Seconds the objects get to shut down (-1: their own default).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    grace_period: i64,
    /// A missing object is not an error.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(args: DeleteArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    // (resource, namespace, name)
    let mut targets: Vec<(ApiResource, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.args.is_empty() {
            bail!("resource types and names cannot be given with -f");
        }
        let manifests = manifest::read(&args.files, false)?;
        if manifests.is_empty() {
            bail!("no objects passed to delete");
        }
        let disc = ctx.discovery().await?;
        for m in manifests {
            let av = m.object["apiVersion"].as_str().unwrap_or("");
            let kind = m.object["kind"].as_str().unwrap_or("");
            let res = disc.by_kind(av, kind).cloned().ok_or_else(|| {
                anyhow!(
                    "resource mapping not found from {:?}: no matches for kind {kind:?} in version {av:?}",
                    m.source
                )
            })?;
            let ns = res.namespaced.then(|| {
                m.object["metadata"]["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&ctx.namespace)
                    .to_string()
            });
            let name = m.object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            targets.push((res, ns, name));
        }
    } else if let Some(sel) = &args.selector {
        let [kind] = args.args.as_slice() else {
            bail!("with -l, give one resource type and no names");
        };
        let res = ctx.resource(kind).await?;
        let api = DynamicApi::new(&ctx.client, &res, Some(&ctx.namespace));
        let items = api.list(&ListParams::default().labels(sel.clone())).await?;
        if items.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
        for o in items {
            let ns = o["metadata"]["namespace"].as_str().map(str::to_string);
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            targets.push((res.clone(), ns, name));
        }
    } else {
        let (pairs, lone) = type_names(&args.args)?;
        if pairs.is_empty() {
            bail!(
                "resource(s) were provided, but no name was specified: give names, -l SELECTOR or -f FILE (type {:?})",
                lone.unwrap_or_default()
            );
        }
        for (t, name) in pairs {
            let res = ctx.resource(&t).await?;
            let ns = res.namespaced.then(|| ctx.namespace.clone());
            targets.push((res, ns, name));
        }
    }

    let mut params = DeleteParams::background();
    if args.grace_period >= 0 {
        params = params.grace(args.grace_period);
    }
    let mut failed = false;
    let mut waiting = Vec::new();
    for (res, ns, name) in targets {
        let api = DynamicApi::new(&ctx.client, &res, ns.as_deref());
        match api.delete(&name, &params).await {
            Ok(answer) => {
                println!("{} \"{name}\" deleted", res.kind_group());
                // The answer is the object (still finalizing) or a Status.
                let uid = answer["metadata"]["uid"].as_str().unwrap_or("").to_string();
                waiting.push((api, name, uid));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) => {
                report(&e.into(), "");
                failed = true;
            }
        }
    }
    if args.wait {
        let deadline = (!args.timeout.is_zero()).then(|| Instant::now() + args.timeout);
        for (api, name, uid) in waiting {
            loop {
                match api.get_opt(&name).await? {
                    None => break,
                    // A new object of the same name: the old one is gone.
                    Some(o) if !uid.is_empty() && o["metadata"]["uid"] != json!(uid) => break,
                    Some(_) => {}
                }
                if deadline.is_some_and(|d| Instant::now() > d) {
                    bail!(
                        "timed out waiting for the condition on {}/{name}",
                        api.resource().plural_group()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    /// TYPE/NAME... or TYPE NAME... (deployments, replicasets, statefulsets).
    #[arg(required = true, value_name = "TYPE/NAME")]
    args: Vec<String>,
    /// The number of replicas wanted.
    #[arg(long, required = true)]
    replicas: u32,
    #[command(flatten)]
    conn: Conn,
}

pub async fn scale(args: ScaleArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    let (pairs, _) = type_names(&args.args)?;
    if pairs.is_empty() {
        bail!("resource(s) were provided, but no name was specified");
    }
    let mut failed = false;
    for (t, name) in pairs {
        let res = ctx.resource(&t).await?;
        let api = DynamicApi::new(&ctx.client, &res, Some(&ctx.namespace));
        let patch = json!({"spec": {"replicas": args.replicas}});
        match api
            .patch(&name, Some("scale"), PatchType::Merge, &patch)
            .await
        {
            Ok(_) => println!("{}/{name} scaled", res.kind_group()),
            Err(e) => {
                report(&e.into(), "");
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}
