//! Golden cases for the strategic merge patch: one file per case in
//! `tests/golden/smp/`, each the kind of patch kubectl sends (apply's
//! three-way patches with `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList`; `kubectl patch` by hand; kubelet status
//! patches), with the object it applies to and the object Kubernetes' API
//! server would store -- or the error it must give.
//!
//! A case file is
//!
//! ```json
//! { "description": "...", "apiVersion": "apps/v1", "kind": "Deployment",
//!   "original": {..}, "patch": {..},
//!   "expected": {..} }          // or "error": {"path": "...", "contains": "..."}
//! ```
//!
//! `apiVersion`/`kind` pick the schema with `meta::for_kind`; a kind it does
//! not know is walked with `meta::OPAQUE`, as the module documents.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use skiff_sdk::patch::{PatchSchema, meta, strategic_merge_patch};

fn cases() -> Vec<(String, Value)> {
    // The directory of the checkout being tested (cargo sets it when it
    // runs the test); the one compiled in only when run by hand, since a
    // shared target directory may hold a binary built from another
    // checkout.
    let root =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let dir = Path::new(&root).join("tests/golden/smp");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            let case = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, case)
        })
        .collect()
}

fn schema(case: &Value) -> &'static dyn PatchSchema {
    let api_version = case["apiVersion"].as_str().expect("apiVersion");
    let kind = case["kind"].as_str().expect("kind");
    match meta::for_kind(api_version, kind) {
        Some(t) => t,
        None => &meta::OPAQUE,
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize")
}

#[test]
fn strategic_merge_patch_golden_cases() {
    let cases = cases();
    assert!(cases.len() >= 40, "only {} golden cases", cases.len());
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let result = strategic_merge_patch(&case["original"], &case["patch"], schema(case));
        match (case.get("expected"), case.get("error")) {
            (Some(expected), None) => {
                if expected == &case["original"] {
                    failures.push(format!(
                        "{name}: expected equals original, so the case tests nothing"
                    ));
                }
                match result {
                    Ok(got) if &got == expected => {}
                    Ok(got) => failures.push(format!(
                        "{name}: {}\n got: {}\nwant: {}",
                        case["description"],
                        pretty(&got),
                        pretty(expected)
                    )),
                    Err(e) => failures.push(format!("{name}: unexpected error: {e}")),
                }
            }
            (None, Some(want)) => {
                let path = want["path"].as_str().expect("error.path");
                let contains = want["contains"].as_str().expect("error.contains");
                match result {
                    Err(e) if e.path == path && e.to_string().contains(contains) => {}
                    Err(e) => failures.push(format!(
                        "{name}: error {e:?} (\"{e}\"), want path {path:?} and a message containing {contains:?}"
                    )),
                    Ok(got) => failures.push(format!(
                        "{name}: patched without error, want {contains:?}; got {}",
                        pretty(&got)
                    )),
                }
            }
            _ => failures.push(format!(
                "{name}: a case needs \"expected\" or \"error\", not both"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Applying the same patch twice changes nothing the second time: this is
/// what lets `kubectl apply` run again and again on an unchanged manifest.
#[test]
fn strategic_merge_patches_are_idempotent() {
    let mut failures = Vec::new();
    for (name, case) in cases() {
        let Some(expected) = case.get("expected") else {
            continue;
        };
        match strategic_merge_patch(expected, &case["patch"], schema(&case)) {
            Ok(again) if &again == expected => {}
            Ok(again) => failures.push(format!(
                "{name}: second application gave {}",
                pretty(&again)
            )),
            Err(e) => failures.push(format!("{name}: second application failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
