//! `skiff describe`: every field of an object, then the Events about it,
//! laid out as kubectl's generic describer lays out kinds it has no
//! describer of its own for (labels and annotations first, then the
//! object's fields in sorted order with kubectl's labels — `apiVersion` is
//! "API Version" — then the Events table).
//!
//! kubectl's per-kind describers (a Pod's Containers and Conditions
//! sections, a Deployment's replica summary) are not reproduced: for those
//! kinds `skiff describe` shows the same facts in the generic layout.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::Value;
use skiff_sdk::client::ListParams;
use skiff_sdk::client::dynamic::DynamicApi;

use super::print::tabwriter;
use super::{Conn, Ctx, Reported, report, type_names};
use crate::apiserver::parse_rfc3339;
use crate::apiserver::table::human_duration;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// TYPE [NAME...] or TYPE/NAME...; without names, every object of the
    /// type (that matches -l).
    #[arg(required = true, value_name = "TYPE [NAME]")]
    args: Vec<String>,
    /// Only objects whose labels match.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Objects of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Also list the Events about each object (kubectl's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    show_events: bool,
    #[command(flatten)]
    conn: Conn,
}

/// The annotation kubectl leaves out of descriptions.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const MAX_ANNOTATION_LEN: usize = 140;

pub async fn run(args: DescribeArgs) -> Result<()> {
    let ctx = Ctx::connect(&args.conn)?;
    let (pairs, lone_type) = type_names(&args.args)?;
    let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
    let mut objects = Vec::new();
    let mut failed = false;
    if let Some(t) = lone_type.filter(|_| pairs.is_empty()) {
        let res = ctx.resource(&t).await?;
        let params = ListParams {
            label_selector: args.selector.clone(),
            ..Default::default()
        };
        let found = DynamicApi::new(&ctx.client, &res, ns).list(&params).await?;
        if found.is_empty() {
            match ns.filter(|_| res.namespaced) {
                Some(n) => eprintln!("No resources found in {n} namespace."),
                None => eprintln!("No resources found"),
            }
        }
        objects.extend(found);
    }
    for (t, name) in pairs {
        let res = ctx.resource(&t).await?;
        match DynamicApi::new(&ctx.client, &res, ns).get(&name).await {
            Ok(o) => objects.push(o),
            Err(e) => {
                report(&e.into(), "");
                failed = true;
            }
        }
    }
    let mut first = true;
    for obj in &objects {
        let events = if args.show_events {
            Some(events_about(&ctx, obj).await?)
        } else {
            None
        };
        let text = describe(obj, events.as_deref());
        if first {
            print!("{text}");
        } else {
            print!("\n\n{text}");
        }
        first = false;
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// The Events whose involvedObject is `obj` (by name, namespace and uid).
async fn events_about(ctx: &Ctx, obj: &Value) -> Result<Vec<Value>> {
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let namespace = meta["namespace"].as_str().unwrap_or("");
    let mut fields = format!("involvedObject.name={name},involvedObject.namespace={namespace}");
    if let Some(uid) = meta["uid"].as_str() {
        fields.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let res = ctx.resource("events").await?;
    let in_ns = (!namespace.is_empty()).then_some(namespace);
    let mut events = DynamicApi::new(&ctx.client, &res, in_ns.or(Some("default")))
        .list(&ListParams::default().fields(fields))
        .await?;
    // Oldest first, by last occurrence, as kubectl sorts them.
    events.sort_by_key(|e| {
        e["lastTimestamp"]
            .as_str()
            .or(e["eventTime"].as_str())
            .and_then(parse_rfc3339)
            .unwrap_or(0)
    });
    Ok(events)
}

/// kubectl's `PrefixWriter`: each level indents two spaces.
struct Out(String);

impl Out {
    fn write(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.0.push_str("  ");
        }
        self.0.push_str(text);
    }
}

/// The description of `obj` (with its Events, if fetched).
pub fn describe(obj: &Value, events: Option<&[Value]>) -> String {
    let meta = &obj["metadata"];
    let mut w = Out(String::new());
    w.write(
        0,
        &format!("Name:\t{}\n", meta["name"].as_str().unwrap_or("")),
    );
    w.write(
        0,
        &format!("Namespace:\t{}\n", meta["namespace"].as_str().unwrap_or("")),
    );
    labels(&mut w, &meta["labels"]);
    annotations(&mut w, &meta["annotations"]);
    if let Value::Object(map) = obj {
        content(
            &mut w,
            0,
            map,
            "",
            &[
                ".metadata.managedFields",
                ".metadata.name",
                ".metadata.namespace",
                ".metadata.labels",
                ".metadata.annotations",
            ],
        );
    }
    match events {
        // kubectl flushes before the table, whose columns align on their
        // own; an empty list is one more line of the description.
        Some(events) if !events.is_empty() => {
            tabwriter(&w.0, 2) + &tabwriter(&events_table(events), 2)
        }
        Some(_) => {
            w.write(0, "Events:\t<none>\n");
            tabwriter(&w.0, 2)
        }
        None => tabwriter(&w.0, 2),
    }
}

fn labels(w: &mut Out, labels: &Value) {
    multiline(w, "Labels", string_map(labels), |w, k, v| {
        w.write(0, &format!("{k}={v}\n"))
    });
}

fn annotations(w: &mut Out, annotations: &Value) {
    let mut map = string_map(annotations);
    map.remove(LAST_APPLIED);
    multiline(w, "Annotations", map, |w, k, v| {
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            w.write(0, &format!("{k}:\n"));
            for line in v.split('\n') {
                w.write(
                    0,
                    &format!("\t  {}\n", shorten(line, MAX_ANNOTATION_LEN - 2)),
                );
            }
        } else {
            w.write(0, &format!("{k}: {v}\n"));
        }
    });
}

/// kubectl's multi-line maps: `Title:\t<none>`, or the entries one under
/// the other in the value column.
fn multiline(
    w: &mut Out,
    title: &str,
    map: BTreeMap<String, String>,
    entry: impl Fn(&mut Out, &str, &str),
) {
    w.write(0, &format!("{title}:\t"));
    if map.is_empty() {
        w.0.push_str("<none>\n");
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            w.write(0, "\t");
        }
        entry(w, k, v);
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s.to_string()
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// kubectl's `printUnstructuredContent`: fields in sorted order, maps and
/// lists as nested blocks, everything else as `Label:\tvalue`.
fn content(
    w: &mut Out,
    level: usize,
    map: &serde_json::Map<String, Value>,
    prefix: &str,
    skip: &[&str],
) {
    let mut fields: Vec<&String> = map.keys().collect();
    fields.sort();
    for field in fields {
        let path = format!("{prefix}.{field}");
        if skip.contains(&path.as_str()) {
            continue;
        }
        match &map[field] {
            Value::Object(m) => {
                w.write(level, &format!("{}:\n", smart_label(field)));
                content(w, level + 1, m, &path, skip);
            }
            Value::Array(items) => {
                w.write(level, &format!("{}:\n", smart_label(field)));
                for item in items {
                    match item {
                        Value::Object(m) => content(w, level + 1, m, &path, skip),
                        other => w.write(level + 1, &format!("{}\n", go_value(other))),
                    }
                }
            }
            other => w.write(
                level,
                &format!("{}:\t{}\n", smart_label(field), go_value(other)),
            ),
        }
    }
}

/// A scalar as Go's `%v` prints the decoded JSON value.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// kubectl's `smartLabelFor`: `apiVersion` → `API Version`,
/// `creationTimestamp` → `Creation Timestamp`; names with characters other
/// than letters and `-` stay as they are.
pub fn smart_label(field: &str) -> String {
    if field.chars().any(|c| !c.is_alphabetic() && c != '-') {
        return field.to_string();
    }
    const ACRONYMS: &[&str] = &["API", "URL", "UID", "OSB", "GUID"];
    camel_split(field)
        .into_iter()
        .filter(|p| p != "_")
        .map(|p| {
            let upper = p.to_uppercase();
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else {
                let mut c = p.chars();
                match c.next() {
                    Some(f) => f
                        .to_uppercase()
                        .chain(c.flat_map(char::to_lowercase))
                        .collect(),
                    None => String::new(),
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `fatih/camelcase.Split`: runs of one character class (lower, upper,
/// digit, other), an upper-case run followed by lower case giving its last
/// letter to the next word (`PDFLoader` → `PDF`, `Loader`).
fn camel_split(s: &str) -> Vec<String> {
    fn class(c: char) -> u8 {
        if c.is_lowercase() {
            1
        } else if c.is_uppercase() {
            2
        } else if c.is_numeric() {
            3
        } else {
            4
        }
    }
    let mut runs: Vec<Vec<char>> = Vec::new();
    let mut last = 0;
    for c in s.chars() {
        let k = class(c);
        match runs.last_mut() {
            Some(r) if k == last => r.push(c),
            _ => runs.push(vec![c]),
        }
        last = k;
    }
    for i in 0..runs.len().saturating_sub(1) {
        if runs[i].first().is_some_and(|c| c.is_uppercase())
            && runs[i + 1].first().is_some_and(|c| c.is_lowercase())
        {
            let moved = runs[i].pop().expect("non-empty run");
            runs[i + 1].insert(0, moved);
        }
    }
    runs.into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.into_iter().collect())
        .collect()
}

/// kubectl's `DescribeEvents`.
fn events_table(events: &[Value]) -> String {
    let mut w = Out(String::new());
    w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    w.write(1, "----\t------\t----\t----\t-------\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let since = |ts: &Value| match ts.as_str().and_then(parse_rfc3339) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    };
    for e in events {
        let first = if e["eventTime"].is_string() {
            since(&e["eventTime"])
        } else {
            since(&e["firstTimestamp"])
        };
        let count = e["count"].as_i64().unwrap_or(0);
        let age = if e["series"].is_object() {
            format!(
                "{} (x{} over {first})",
                since(&e["series"]["lastObservedTime"]),
                e["series"]["count"].as_i64().unwrap_or(0)
            )
        } else if count > 1 {
            format!("{} (x{count} over {first})", since(&e["lastTimestamp"]))
        } else {
            first
        };
        let source = e["source"]["component"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or(e["reportingComponent"].as_str())
            .unwrap_or("");
        w.write(
            1,
            &format!(
                "{}\t{}\t{age}\t{source}\t{}\n",
                e["type"].as_str().unwrap_or(""),
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("").trim()
            ),
        );
    }
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_kubectls() {
        for (field, label) in [
            ("apiVersion", "API Version"),
            ("creationTimestamp", "Creation Timestamp"),
            ("uid", "UID"),
            // Title case lowers the rest of a word: only the listed acronyms stay.
            ("podIP", "Pod Ip"),
            ("holderIdentity", "Holder Identity"),
            ("kubernetes.io/arch", "kubernetes.io/arch"),
            ("leaseDurationSeconds", "Lease Duration Seconds"),
        ] {
            assert_eq!(smart_label(field), label, "{field}");
        }
    }

    #[test]
    fn an_object_is_described_field_by_field() {
        let obj = json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "handler": "wasmtime",
            "metadata": {
                "name": "wasm",
                "uid": "u-1",
                "labels": {"b": "2", "a": "1"},
                "annotations": {LAST_APPLIED: "{}"},
            },
            "scheduling": {"nodeSelector": {"skiff.dev/runtime-wasm": "true"}},
        });
        let out = describe(&obj, Some(&[]));
        assert_eq!(
            out,
            "Name:         wasm\n\
             Namespace:    \n\
             Labels:       a=1\n\
             \x20             b=2\n\
             Annotations:  <none>\n\
             API Version:  node.k8s.io/v1\n\
             Handler:      wasmtime\n\
             Kind:         RuntimeClass\n\
             Metadata:\n\
             \x20 UID:  u-1\n\
             Scheduling:\n\
             \x20 Node Selector:\n\
             \x20   skiff.dev/runtime-wasm:  true\n\
             Events:                      <none>\n"
        );
    }
}
