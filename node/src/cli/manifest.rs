//! Reading manifests as `kubectl -f` does: files, directories (their
//! `.yaml`, `.yml` and `.json` files, sorted) or `-` for stdin; YAML
//! streams of several documents; `kind: List` expanded into its items.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One object and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source: String,
    pub object: Value,
}

pub fn read(files: &[String], recursive: bool) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading manifests from stdin")?;
            out.extend(parse("STDIN", &text)?);
            continue;
        }
        let path = Path::new(f);
        let mut paths = Vec::new();
        if path.is_dir() {
            walk(path, recursive, &mut paths)?;
        } else if path.exists() {
            paths.push(path.to_path_buf());
        } else {
            bail!("the path {f:?} does not exist");
        }
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            out.extend(parse(&p.display().to_string(), &text)?);
        }
    }
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// The objects of one YAML (or JSON) stream.
pub fn parse(source: &str, text: &str) -> Result<Vec<Manifest>> {
    // Empty documents (`---` twice, only comments) are skipped, as kubectl
    // skips them; documents are numbered among the others.
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).with_context(|| format!("{source}: not valid YAML"))?;
    let mut out = Vec::new();
    for (i, object) in docs.into_iter().enumerate() {
        if object.is_null() {
            continue;
        }
        if !object.is_object() {
            bail!("{source}: document {} is not an object", i + 1);
        }
        if object["kind"].as_str().is_some_and(|k| k.ends_with("List"))
            && let Some(items) = object["items"].as_array()
        {
            out.extend(items.iter().map(|o| Manifest {
                source: source.to_string(),
                object: o.clone(),
            }));
            continue;
        }
        if object["apiVersion"].as_str().unwrap_or("").is_empty()
            || object["kind"].as_str().unwrap_or("").is_empty()
        {
            bail!(
                "error validating {source:?}: document {} has no apiVersion or kind",
                i + 1
            );
        }
        out.push(Manifest {
            source: source.to_string(),
            object,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_streams_and_lists() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  n: \"1\"\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata:\n    name: b\n";
        let m = parse("x.yaml", text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].object["data"]["n"], "1");
        assert_eq!(m[1].object["kind"], "Secret");
        assert!(parse("y.yaml", "kind: ConfigMap\n").is_err());
        let json = parse(
            "z.json",
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}"#,
        )
        .unwrap();
        assert_eq!(json[0].object["metadata"]["name"], "n");
    }
}
