//! HTTP handler components: serving, env and mounted config, misbehaving
//! handlers, stop with grace.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skiff_sdk::runtime::{Mount, Runtime, TerminationReason, exit_code};
use wasm_shim::WasmRuntime;

async fn listen(
    rt: &WasmRuntime,
    id: &str,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(wasm_shim::serve(rt.clone(), id.into(), listener));
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_handler_serves_many_requests() {
    let f = common::runtime();
    let spec = f.handler("hello", "hello-http.wasm", Duration::from_secs(5));
    let status = f.runtime.start(spec.clone()).await.expect("starting");
    assert!(status.is_running(), "{status:?}");
    let (addr, server) = listen(&f.runtime, "hello").await;
    let (code, body) = common::get(addr, "/first?x=1").await;
    assert_eq!(
        (code, body.as_str()),
        (200, "hello from skiff, you asked for /first?x=1\n")
    );
    let requests: Vec<_> = (0..64)
        .map(|i| tokio::spawn(common::get(addr, if i % 2 == 0 { "/a" } else { "/b" })))
        .collect();
    for r in requests {
        let (code, body) = r.await.expect("request task");
        assert_eq!(code, 200, "{body}");
    }
    assert!(f.runtime.status(&spec.id).expect("status").is_running());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_handler_sees_env_and_mounted_config() {
    let f = common::runtime();
    let config = f.dir.path().join("configmap");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("app.conf"), "color=blue\nsize=3\n").unwrap();
    let mut spec = f.handler("echo", "echo-http.wasm", Duration::from_secs(5));
    spec.env = vec![
        ("GREETING".into(), "hi there".into()),
        ("DB_PASSWORD".into(), "from-a-secret".into()),
    ];
    spec.mounts = vec![Mount {
        host_path: config,
        container_path: "/config".into(),
        read_only: true,
    }];
    f.runtime.start(spec).await.expect("starting");
    let (addr, server) = listen(&f.runtime, "echo").await;
    let (code, body) = common::get(addr, "/show").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("GET /show\n"), "{body}");
    assert!(body.contains("env GREETING=hi there\n"), "{body}");
    assert!(body.contains("env DB_PASSWORD=from-a-secret\n"), "{body}");
    assert!(
        body.contains("config /config/app.conf:\ncolor=blue\nsize=3\n"),
        "{body}"
    );
    // The handler's stderr is the container's log.
    assert!(
        f.log_text("echo").contains("echo-http: GET /show"),
        "{}",
        f.log_text("echo")
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_requests_fail_alone() {
    let f = common::runtime();
    let mut spec = f.handler("bad", "misbehave-http.wasm", Duration::from_millis(200));
    spec.limits.memory_bytes = Some(32 << 20);
    f.runtime.start(spec.clone()).await.expect("starting");
    let (addr, server) = listen(&f.runtime, "bad").await;

    // An infinite loop is interrupted at its timeout, not 100 ms later, and
    // a well-behaved request meanwhile is not held up by it.
    let t0 = Instant::now();
    let spinning = tokio::spawn(common::get(addr, "/loop"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t1 = Instant::now();
    let (code, _) = common::get(addr, "/fine").await;
    let fine_took = t1.elapsed();
    assert_eq!(code, 200);
    assert!(
        fine_took < Duration::from_millis(100),
        "a request next to a spinning one took {fine_took:?}"
    );
    let (code, body) = spinning.await.unwrap();
    let took = t0.elapsed();
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("timeout"), "{body}");
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(300),
        "interrupted after {took:?}"
    );

    // A memory bomb is capped at the limit.
    let (code, body) = common::get(addr, "/bomb").await;
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("OOMKilled") && body.contains("memory limit of 32Mi"),
        "{body}"
    );

    // A trap is a 500 with the trap in it; the guest's panic message is logged.
    let (code, body) = common::get(addr, "/trap").await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let log = f.log_text("bad");
    assert!(log.contains("misbehave-http asked to trap"), "{log}");
    assert!(log.contains("/loop: 504"), "{log}");

    // None of it hurt the container.
    assert_eq!(common::get(addr, "/after").await.0, 200);
    assert!(f.runtime.status(&spec.id).unwrap().is_running());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_requests_within_grace() {
    let f = common::runtime();
    let spec = f.handler("drain", "misbehave-http.wasm", Duration::from_secs(10));
    f.runtime.start(spec.clone()).await.expect("starting");
    let (addr, server) = listen(&f.runtime, "drain").await;
    let slow = tokio::spawn(common::get(addr, "/sleep?300"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = f
        .runtime
        .stop(&spec.id, Duration::from_secs(3))
        .await
        .expect("stopping");
    let t = status.termination().expect("terminated").clone();
    assert_eq!(
        (t.exit_code, t.reason),
        (0, TerminationReason::Completed),
        "{t:?}"
    );
    assert_eq!(slow.await.unwrap(), (200, "slept 300 ms\n".to_string()));
    // New requests are refused.
    assert_eq!(common::get(addr, "/").await.0, 503);
    server.abort();

    // Past the grace period, requests in flight are cancelled.
    let spec = f.handler("cut", "misbehave-http.wasm", Duration::from_secs(10));
    f.runtime.start(spec.clone()).await.expect("starting");
    let (addr, server) = listen(&f.runtime, "cut").await;
    let slow = tokio::spawn(common::get(addr, "/sleep?5000"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let status = f
        .runtime
        .stop(&spec.id, Duration::from_millis(200))
        .await
        .expect("stopping");
    assert!(t0.elapsed() < Duration::from_secs(1));
    let t = status.termination().expect("terminated").clone();
    assert_eq!(
        (t.exit_code, t.reason),
        (exit_code::KILLED, TerminationReason::Error),
        "{t:?}"
    );
    assert!(t.message.contains("1 requests still in flight"), "{t:?}");
    assert_eq!(slow.await.unwrap().0, 503);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_shapes_are_start_errors() {
    let f = common::runtime();
    let cases = [
        (
            f.command("handler-as-command", "hello-http.wasm", &[]),
            "wasi:cli/run",
        ),
        (
            f.handler("command-as-handler", "job.wasm", Duration::from_secs(1)),
            "wasi:http/incoming-handler",
        ),
        (
            f.handler("module-as-handler", "job.p1.wasm", Duration::from_secs(1)),
            "core module cannot be an http handler",
        ),
    ];
    for (spec, want) in cases {
        let status = f
            .runtime
            .start(spec.clone())
            .await
            .expect("a bad workload is not a failed call");
        let t = status.termination().unwrap_or_else(|| panic!("{status:?}"));
        assert_eq!(
            (t.reason, t.exit_code),
            (TerminationReason::StartError, exit_code::START_ERROR)
        );
        assert!(t.message.contains(want), "{}: {:?}", spec.id, t.message);
        assert!(t.started_at.is_none());
        assert!(f.log_text(spec.id.as_str()).contains(want));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_ends_at_its_active_deadline() {
    let f = common::runtime();
    let mut spec = f.handler("short", "hello-http.wasm", Duration::from_secs(5));
    spec.active_deadline = Some(Duration::from_millis(300));
    f.runtime.start(spec.clone()).await.expect("starting");
    let (addr, server) = listen(&f.runtime, "short").await;
    assert_eq!(common::get(addr, "/").await.0, 200);
    let status = f.runtime.wait(&spec.id).await.expect("waiting");
    let t = status.termination().expect("terminated");
    assert_eq!(
        (t.reason, t.exit_code),
        (TerminationReason::DeadlineExceeded, exit_code::KILLED)
    );
    assert_eq!(common::get(addr, "/").await.0, 503);
    server.abort();
}
