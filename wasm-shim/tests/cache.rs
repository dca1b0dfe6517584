//! The compile cache: a module is compiled once per node and engine, then
//! loaded from memory or from disk (after a restart); a damaged artifact is
//! recompiled.

mod common;

use std::time::Duration;

use skiff_sdk::runtime::{ImageSource, Runtime};
use wasm_shim::{CompileSource, RuntimeConfig, WasmRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_are_compiled_once_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wasm");
    let image = ImageSource::File(common::wasm("hello-http.wasm"));

    let rt = WasmRuntime::new(RuntimeConfig::new(&data)).unwrap();
    assert!(
        rt.fingerprint()
            .starts_with(&format!("wasmtime48-{}-", std::env::consts::ARCH))
    );
    let (first, source) = rt.prepare_image(&image).await.unwrap();
    assert_eq!((source, first.cached), (CompileSource::Compiled, false));
    assert!(first.digest.starts_with("sha256:"));
    let (again, source) = rt.prepare_image(&image).await.unwrap();
    assert_eq!(
        (source, again.cached, &again.digest),
        (CompileSource::Memory, true, &first.digest)
    );
    let artifact = data.join("compiled").join(rt.fingerprint()).join(format!(
        "{}.component.cwasm",
        first.digest.trim_start_matches("sha256:")
    ));
    assert!(artifact.is_file(), "{} missing", artifact.display());
    drop(rt);

    // A restarted node loads it from disk and runs it.
    let rt = WasmRuntime::new(RuntimeConfig::new(&data)).unwrap();
    let (_, source) = rt.prepare_image(&image).await.unwrap();
    assert_eq!(source, CompileSource::Disk);
    let f = common::Fixture {
        dir: tempfile::tempdir().unwrap(),
        runtime: rt.clone(),
    };
    let spec = f.handler("from-disk", "hello-http.wasm", Duration::from_secs(5));
    assert!(rt.start(spec).await.unwrap().is_running());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(wasm_shim::serve(rt.clone(), "from-disk".into(), listener));
    assert_eq!(common::get(addr, "/").await.0, 200);
    server.abort();
    rt.forget_compiled();
    assert_eq!(
        rt.prepare_image(&image).await.unwrap().1,
        CompileSource::Disk
    );
    drop((f, rt));

    // A damaged artifact is thrown away and the module compiled again. The
    // damage arrives as a new file: the old one may still be mapped by the
    // instance that was started from it, and truncating a mapped file under a
    // running process is a SIGBUS in any program, not a cache failure.
    let damaged = artifact.with_extension("damaged");
    std::fs::write(&damaged, b"not an artifact").unwrap();
    std::fs::rename(&damaged, &artifact).unwrap();
    let rt = WasmRuntime::new(RuntimeConfig::new(&data)).unwrap();
    let (_, source) = rt.prepare_image(&image).await.unwrap();
    assert_eq!(source, CompileSource::Compiled);
    assert_eq!(
        rt.prepare_image(&image).await.unwrap().1,
        CompileSource::Memory
    );
}

/// Replicas of one new image start at once: one compile, every start
/// succeeds, and what is on disk is one whole artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_share_one_compile() {
    let f = common::runtime();
    let rt = f.runtime.clone();
    let starts = (0..4).map(|i| {
        let rt = rt.clone();
        let spec = f.handler(
            &format!("replica-{i}"),
            "hello-http.wasm",
            Duration::from_secs(5),
        );
        tokio::spawn(async move { rt.start(spec).await })
    });
    for s in starts.collect::<Vec<_>>() {
        let status = s.await.unwrap().unwrap();
        assert!(status.is_running(), "{status:?}");
    }
    let compiled = f.dir.path().join("wasm/compiled").join(rt.fingerprint());
    let names: Vec<String> = std::fs::read_dir(&compiled)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "one artifact and no leftovers: {names:?}");
    assert!(names[0].ends_with(".component.cwasm"), "{names:?}");
}

/// A local module file is hashed once per version: replacing it (same
/// path, new content) is noticed, also by a restarted node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_local_module_is_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("wasm");
    let path = dir.path().join("app.wasm");
    std::fs::copy(common::wasm("hello-http.wasm"), &path).unwrap();
    let image = ImageSource::File(path.clone());

    let rt = WasmRuntime::new(RuntimeConfig::new(&data)).unwrap();
    let (first, _) = rt.prepare_image(&image).await.unwrap();
    assert_eq!(
        rt.prepare_image(&image).await.unwrap().0.digest,
        first.digest
    );
    drop(rt);

    // The same path now holds another module; the restarted node must not
    // trust its record of the old one.
    let other = dir.path().join("other.wasm");
    std::fs::copy(common::wasm("echo-http.wasm"), &other).unwrap();
    std::fs::rename(&other, &path).unwrap();
    let rt = WasmRuntime::new(RuntimeConfig::new(&data)).unwrap();
    let (second, source) = rt.prepare_image(&image).await.unwrap();
    assert_ne!(second.digest, first.digest);
    assert_eq!(source, CompileSource::Compiled);
    // Unchanged since: known without reading it, and loaded from disk.
    rt.forget_compiled();
    let (third, source) = rt.prepare_image(&image).await.unwrap();
    assert_eq!((third.digest, source), (second.digest, CompileSource::Disk));
}
