//! `skiff apply -f`: kubectl's client-side apply.
//!
//! skiff's API server does not do server-side apply yet (it answers
//! `application/apply-patch+yaml` with 415), so this is what `kubectl
//! apply` does without `--server-side`: the configuration is kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, and an
//! existing object gets the three-way patch of that annotation, the new
//! configuration and the live object (`skiff_sdk::patch::three_way_patch`)
//! — a strategic merge patch for the built-in kinds. An empty patch is not
//! sent: the object is `unchanged`.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use skiff_sdk::client::PatchType;
use skiff_sdk::client::dynamic::DynamicApi;
use skiff_sdk::patch::{PatchSchema, meta, three_way_patch};

use super::manifest::{self, Manifest};
use super::{Conn, Ctx, Reported, report};

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Manifests: a file, a directory (its .yaml, .yml and .json files) or
    /// `-` for stdin; repeatable. Several YAML documents per file.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<String>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    recursive: bool,
    #[command(flatten)]
    conn: Conn,
}

pub async fn run(args: ApplyArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    let manifests = manifest::read(&args.files, args.recursive)?;
    if manifests.is_empty() {
        bail!("no objects passed to apply");
    }
    let mut failed = false;
    for m in &manifests {
        match apply_one(&ctx, m).await {
            Ok(line) => println!("{line}"),
            Err((context, e)) => {
                report(&e, &context);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// The configuration as applied: `obj` with the annotation holding `obj`
/// without it, written as kubectl writes it (compact JSON, keys sorted, a
/// final newline, and `"annotations":{}` when there are no others), so
/// that kubectl and skiff can take turns applying.
pub fn with_last_applied(mut obj: Value) -> Value {
    match obj["metadata"]["annotations"].as_object_mut() {
        Some(a) => {
            a.remove(LAST_APPLIED);
        }
        None => obj["metadata"]["annotations"] = json!({}),
    }
    let last = format!("{obj}\n");
    obj["metadata"]["annotations"][LAST_APPLIED] = json!(last);
    obj
}

type Failure = (String, anyhow::Error);

async fn apply_one(ctx: &Ctx, m: &Manifest) -> Result<String, Failure> {
    let fail =
        |context: String| move |e: skiff_sdk::client::Error| (context, anyhow::Error::from(e));
    let api_version = m.object["apiVersion"].as_str().unwrap_or("");
    let kind = m.object["kind"].as_str().unwrap_or("");
    let name = m.object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let disc = ctx.discovery().await.map_err(|e| (String::new(), e))?;
    let Some(res) = disc.by_kind(api_version, kind).cloned() else {
        return Err((
            String::new(),
            anyhow!(
                "resource mapping not found for name: {name:?} namespace: {:?} from {:?}: no matches for kind {kind:?} in version {api_version:?}",
                m.object["metadata"]["namespace"].as_str().unwrap_or(""),
                m.source
            ),
        ));
    };
    if name.is_empty() {
        return Err((
            String::new(),
            anyhow!(
                "error when retrieving current configuration of {kind} from {:?}: resource name may not be empty",
                m.source
            ),
        ));
    }
    let mut obj = m.object.clone();
    let ns = if res.namespaced {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(&ctx.namespace)
            .to_string();
        obj["metadata"]["namespace"] = json!(ns);
        Some(ns)
    } else {
        None
    };
    let modified = with_last_applied(obj);
    let api = DynamicApi::new(&ctx.client, &res, ns.as_deref());
    let what = format!("{}/{name}", res.kind_group());
    let current = api.get_opt(&name).await.map_err(fail(format!(
        "error when retrieving current configuration of {what} from {:?}: ",
        m.source
    )))?;
    let Some(current) = current else {
        api.create(&modified)
            .await
            .map_err(fail(format!("error when creating {:?}: ", m.source)))?;
        return Ok(format!("{what} created"));
    };
    let original: Option<Value> = current["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok());
    if original.is_none() {
        eprintln!(
            "Warning: resource {}/{name} is missing the {LAST_APPLIED} annotation which is required by skiff apply. \
             skiff apply should only be used on resources created declaratively by skiff apply or kubectl apply. \
             The missing annotation will be patched automatically.",
            res.plural
        );
    }
    let (patch_type, schema): (PatchType, &dyn PatchSchema) =
        match meta::for_kind(api_version, kind) {
            Some(s) => (PatchType::Strategic, s),
            None => (PatchType::Merge, &meta::OPAQUE),
        };
    let patch = three_way_patch(original.as_ref(), &modified, &current, schema);
    if patch.as_object().is_some_and(|p| p.is_empty()) {
        return Ok(format!("{what} unchanged"));
    }
    api.patch(&name, None, patch_type, &patch)
        .await
        .map_err(fail(format!(
            "error when applying patch to {what} from {:?}: ",
            m.source
        )))?;
    Ok(format!("{what} configured"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_holds_the_configuration_without_itself() {
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "c",
            "annotations": {LAST_APPLIED: "old"}}, "data": {"b": "2", "a": "1"}});
        let m = with_last_applied(obj);
        let last = m["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap();
        assert_eq!(
            last,
            "{\"data\":{\"a\":\"1\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"annotations\":{},\"name\":\"c\"}}\n"
        );
        // Applying the result again gives the same annotation.
        assert_eq!(with_last_applied(m.clone()), m);
    }
}
