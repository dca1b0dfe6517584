//! `skiff get`: tables rendered by the server (`as=Table`), or the objects
//! as JSON, YAML or `kind/name`; `-w` follows changes.

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde_json::Value;
use skiff_sdk::client::ListParams;
use skiff_sdk::client::dynamic::{ApiResource, DynamicApi};

use super::print::{self, TablePrinter};
use super::{Conn, Ctx, Reported, report, type_names};

#[derive(clap::Args)]
pub struct GetArgs {
    /// TYPE[,TYPE...] [NAME...] or TYPE/NAME...; a type is a plural,
    /// singular or short name (pods, po, deploy, svc) or `all`.
    #[arg(required = true, value_name = "TYPE [NAME]")]
    args: Vec<String>,
    /// Output format (default: a table).
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,
    /// Only objects whose labels match (`app=web`, `tier in (a,b)`, `!canary`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Objects of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// After printing, watch and print each change.
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// The table with its extra columns.
    Wide,
    Json,
    Yaml,
    /// `kind.group/name`
    Name,
}

/// The kinds asked for, each with its names (none: all objects).
async fn targets(ctx: &Ctx, args: &[String]) -> Result<Vec<(ApiResource, Vec<String>)>> {
    let (pairs, lone_type) = type_names(args)?;
    let mut out: Vec<(ApiResource, Vec<String>)> = Vec::new();
    match lone_type {
        None => {
            for (t, name) in pairs {
                let res = ctx.resource(&t).await?;
                match out.last_mut() {
                    Some((r, names)) if *r == res => names.push(name),
                    _ => out.push((res, vec![name])),
                }
            }
        }
        Some(types) => {
            let names: Vec<String> = pairs.into_iter().map(|(_, n)| n).collect();
            let types: Vec<&str> = types.split(',').filter(|t| !t.is_empty()).collect();
            if types.len() > 1 && !names.is_empty() {
                bail!("names cannot be given with several resource types: use TYPE/NAME");
            }
            for t in types {
                if t == "all" {
                    let disc = ctx.discovery().await?;
                    for r in disc.resources() {
                        if r.categories.iter().any(|c| c == "all")
                            && !out
                                .iter()
                                .any(|(o, _)| o.kind == r.kind && o.group == r.group)
                        {
                            out.push((r.clone(), names.clone()));
                        }
                    }
                } else {
                    out.push((ctx.resource(t).await?, names.clone()));
                }
            }
        }
    }
    Ok(out)
}

pub async fn run(args: GetArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    let groups = targets(&ctx, &args.args).await?;
    let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let multi = groups.len() > 1;
    if args.watch && multi {
        bail!("you may only watch a single resource type");
    }
    let mut failed = false;
    let mut found = 0usize;
    let mut named = false;
    match args.output {
        None | Some(Output::Wide) => {
            let mut first = true;
            for (res, names) in &groups {
                named |= !names.is_empty();
                let api = DynamicApi::new(&ctx.client, res, ns);
                let mut tables = Vec::new();
                if names.is_empty() {
                    tables.push(api.table(None, &params).await?);
                }
                for n in names {
                    match api.table(Some(n), &params).await {
                        Ok(t) => tables.push(t),
                        Err(e) => {
                            report(&e.into(), "");
                            failed = true;
                        }
                    }
                }
                let Some(head) = tables.first() else { continue };
                let printer = TablePrinter::new(
                    head,
                    args.output == Some(Output::Wide),
                    args.all_namespaces && res.namespaced,
                    multi.then(|| res.kind_group()),
                );
                let mut lines = vec![printer.header()];
                for t in &tables {
                    lines.extend(printer.rows(t));
                }
                if lines.len() == 1 && !args.watch {
                    continue;
                }
                found += lines.len() - 1;
                if !first {
                    println!();
                }
                first = false;
                print!("{}", print::tabulate(&lines));
                if args.watch {
                    let rv = head["metadata"]["resourceVersion"].as_str().unwrap_or("");
                    return watch_table(&api, &params, names, rv, &printer, lines).await;
                }
            }
        }
        Some(Output::Name) => {
            for (res, names) in &groups {
                named |= !names.is_empty();
                for obj in objects(
                    &DynamicApi::new(&ctx.client, res, ns),
                    names,
                    &params,
                    &mut failed,
                )
                .await?
                {
                    found += 1;
                    println!(
                        "{}/{}",
                        res.kind_group(),
                        obj["metadata"]["name"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Some(out @ (Output::Json | Output::Yaml)) => {
            let mut all = Vec::new();
            for (res, names) in &groups {
                named |= !names.is_empty();
                all.extend(
                    objects(
                        &DynamicApi::new(&ctx.client, res, ns),
                        names,
                        &params,
                        &mut failed,
                    )
                    .await?,
                );
            }
            found = all.len();
            let single = groups.len() == 1 && groups[0].1.len() == 1;
            let doc = match (single, all.len()) {
                (true, 1) => all.pop().unwrap_or_default(),
                (true, _) => Value::Null,
                (false, _) => print::list(all),
            };
            if !doc.is_null() {
                match out {
                    Output::Json => print!("{}", print::json(&doc)),
                    _ => print!("{}", print::yaml(&doc)?),
                }
            }
        }
    }
    if found == 0 && !named && !failed {
        match ns {
            Some(n) if groups.iter().any(|(r, _)| r.namespaced) => {
                eprintln!("No resources found in {n} namespace.")
            }
            _ => eprintln!("No resources found"),
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// The named objects, or the list; a name that fails is reported and
/// skipped.
async fn objects(
    api: &DynamicApi,
    names: &[String],
    params: &ListParams,
    failed: &mut bool,
) -> Result<Vec<Value>> {
    if names.is_empty() {
        return Ok(api.list(params).await?);
    }
    let mut out = Vec::new();
    for n in names {
        match api.get(n).await {
            Ok(o) => out.push(o),
            Err(e) => {
                report(&e.into(), "");
                *failed = true;
            }
        }
    }
    Ok(out)
}

/// `-w`: each event's row, aligned with what was printed before, until the
/// server ends the watch.
async fn watch_table(
    api: &DynamicApi,
    params: &ListParams,
    names: &[String],
    rv: &str,
    printer: &TablePrinter,
    mut printed: Vec<Vec<String>>,
) -> Result<()> {
    let mut params = params.clone();
    params.resource_version = Some(rv.to_string());
    if let [name] = names {
        params.field_selector = Some(format!("metadata.name={name}"));
    }
    let mut w = api.watch(&params, true).await?;
    while let Some((kind, table)) = w.next().await? {
        if kind == "BOOKMARK" {
            continue;
        }
        let rows = printer.rows(&table);
        let n = printed.len();
        printed.extend(rows);
        // Align with everything so far, print only the new lines.
        let text = print::tabulate(&printed);
        let new: Vec<&str> = text.lines().skip(n).collect();
        for l in new {
            println!("{l}");
        }
    }
    Ok(())
}
