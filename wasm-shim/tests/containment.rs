//! Guests that misbehave: infinite loops, memory bombs, traps, CPU hogs,
//! and binaries that are not runnable. Each ends with a clear reason in its
//! status and never disturbs the host or the other guests.

mod common;

use std::time::{Duration, Instant};

use skiff_sdk::runtime::{
    ContainerSpec, ImageSource, Runtime, RuntimeError, Termination, TerminationReason, exit_code,
};

async fn run(rt: &wasm_shim::WasmRuntime, spec: ContainerSpec) -> Termination {
    rt.start(spec.clone()).await.expect("starting");
    let status = rt.wait(&spec.id).await.expect("waiting");
    status
        .termination()
        .cloned()
        .unwrap_or_else(|| panic!("{status:?}"))
}

/// These tests take turns: on a two-core machine a neighbour spinning a
/// guest or compiling one would be in the timings they assert.
static CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_ends_at_its_deadline() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    for guest in ["misbehave.wasm", "misbehave.p1.wasm"] {
        let mut spec = f.command(&format!("loop-{guest}"), guest, &["loop"]);
        f.runtime.prepare(&spec.image).await.expect("compiling");
        let deadline = Duration::from_millis(300);
        spec.active_deadline = Some(deadline);
        let t0 = Instant::now();
        let t = run(&f.runtime, spec).await;
        let took = t0.elapsed();
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::DeadlineExceeded, exit_code::KILLED),
            "{t:?}"
        );
        assert!(
            took >= deadline && took < deadline + Duration::from_millis(100),
            "{guest}: ended after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_interrupts_a_spinning_guest_at_once() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    let spec = f.command("spin", "misbehave.wasm", &["loop"]);
    f.runtime.start(spec.clone()).await.expect("starting");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let status = f
        .runtime
        .stop(&spec.id, Duration::from_secs(30))
        .await
        .expect("stopping");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "stopping a spinning guest took {took:?}"
    );
    assert_eq!(
        status.termination().map(|t| t.exit_code),
        Some(exit_code::TERMINATED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_capped_and_neighbours_carry_on() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    let neighbour = f.command("neighbour", "job.wasm", &["ticks", "0", "20"]);
    f.runtime
        .start(neighbour.clone())
        .await
        .expect("starting the neighbour");
    for guest in ["misbehave.wasm", "misbehave.p1.wasm"] {
        let id = format!("bomb-{guest}");
        let mut spec = f.command(&id, guest, &["bomb"]);
        spec.limits.memory_bytes = Some(64 << 20);
        let t = run(&f.runtime, spec).await;
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::OomKilled, exit_code::KILLED),
            "{t:?}"
        );
        assert!(t.message.contains("memory limit of 64Mi exceeded"), "{t:?}");
        let log = f.log_text(&id);
        assert!(log.contains("holding 48 MiB"), "{log}");
        assert!(
            !log.contains("holding 64 MiB"),
            "went past its limit:\n{log}"
        );
    }
    let before = f.log_text("neighbour").lines().count();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(f.runtime.status(&neighbour.id).unwrap().is_running());
    assert!(
        f.log_text("neighbour").lines().count() > before,
        "the neighbour stopped logging"
    );
    f.runtime.stop(&neighbour.id, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_end_the_container_with_the_trap() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    for guest in ["misbehave.wasm", "misbehave.p1.wasm"] {
        let id = format!("trap-{guest}");
        let t = run(&f.runtime, f.command(&id, guest, &["trap"])).await;
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::Error, exit_code::TRAPPED),
            "{t:?}"
        );
        assert!(t.message.contains("unreachable"), "{t:?}");
        assert!(
            f.log_text(&id).contains("misbehave asked to trap"),
            "{}",
            f.log_text(&id)
        );
        let id = format!("stack-{guest}");
        let t = run(&f.runtime, f.command(&id, guest, &["recurse"])).await;
        assert_eq!(t.exit_code, exit_code::TRAPPED, "{t:?}");
        // Rust keeps most frames on a shadow stack in linear memory: running
        // off its end is an out-of-bounds access rather than wasm's own
        // stack check.
        assert!(
            t.message.contains("call stack exhausted")
                || t.message.contains("out of bounds memory access"),
            "{t:?}"
        );
    }
}

/// A core module importing a function no host provides.
const UNKNOWN_IMPORT: &[u8] = &[
    0, b'a', b's', b'm', 1, 0, 0, 0, // preamble
    1, 4, 1, 0x60, 0, 0, // type section: () -> ()
    2, 12, 1, 3, b'e', b'n', b'v', 4, b'n', b'o', b'p', b'e', 0, 0, // import env.nope
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrunnable_binaries_are_start_errors() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    let dir = f.dir.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let job = std::fs::read(common::wasm("job.wasm")).unwrap();
    let module = std::fs::read(common::wasm("job.p1.wasm")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"#!/bin/sh\necho not wasm\n".to_vec(),
            "not a webassembly module or component",
        ),
        (
            "empty-file",
            Vec::new(),
            "not a webassembly module or component",
        ),
        (
            "truncated-component",
            job[..job.len() / 2].to_vec(),
            "invalid wasm component",
        ),
        (
            "truncated-module",
            module[..module.len() / 3].to_vec(),
            "invalid wasm module",
        ),
        (
            "no-start",
            b"\0asm\x01\0\0\0".to_vec(),
            "exports no _start function",
        ),
        ("unknown-import", UNKNOWN_IMPORT.to_vec(), "env::nope"),
    ];
    for (name, bytes, want) in cases {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).unwrap();
        let spec = ContainerSpec::new(name, ImageSource::File(path), f.log(name));
        let status = f
            .runtime
            .start(spec)
            .await
            .expect("a bad image is not a failed call");
        let t = status
            .termination()
            .unwrap_or_else(|| panic!("{name}: {status:?}"));
        assert_eq!(t.reason, TerminationReason::StartError, "{name}: {t:?}");
        assert!(
            t.message.to_lowercase().contains(want),
            "{name}: {:?} lacks {want:?}",
            t.message
        );
    }
    // A missing file is an image that could not be fetched: the call fails.
    let spec = ContainerSpec::new(
        "missing",
        ImageSource::File(dir.join("nope.wasm")),
        f.log("missing"),
    );
    match f.runtime.start(spec).await {
        Err(RuntimeError::Pull { message, .. }) => {
            assert!(message.contains("nope.wasm"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limit_slices_time() {
    let _cores = CORES.lock().await;
    let f = common::runtime();
    let args = ["500000", "1"];
    let image = f.command("cpu-free", "cpu-worker.wasm", &args).image;
    f.runtime.prepare(&image).await.expect("compiling");
    let t0 = Instant::now();
    let t = run(&f.runtime, f.command("cpu-free", "cpu-worker.wasm", &args)).await;
    let free = t0.elapsed();
    assert_eq!(t.exit_code, 0);
    let mut spec = f.command("cpu-200m", "cpu-worker.wasm", &args);
    spec.limits.cpu_millis = Some(200);
    let t0 = Instant::now();
    let t = run(&f.runtime, spec).await;
    let limited = t0.elapsed();
    assert_eq!(t.exit_code, 0);
    let ratio = limited.as_secs_f64() / free.as_secs_f64();
    // 200m is a fifth of a core: about 5x slower, allowing for noise.
    assert!(
        ratio > 3.0,
        "unlimited {free:?}, at 200m {limited:?}: only {ratio:.1}x slower"
    );
}
