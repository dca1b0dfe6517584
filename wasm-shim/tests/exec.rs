//! exec: another command run in a running container's sandbox (its image,
//! env and mounts), in a fresh instance.

mod common;

use std::time::Duration;

use skiff_sdk::runtime::{Mount, Runtime, RuntimeError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_the_containers_sandbox() {
    let f = common::runtime();
    let data = f.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("state"), "ready\n").unwrap();
    let mut spec = f.command("svc", "job.wasm", &["ticks", "0", "100"]);
    spec.env = vec![("ROLE".into(), "primary".into())];
    spec.mounts = vec![Mount {
        host_path: data,
        container_path: "/data".into(),
        read_only: true,
    }];
    f.runtime.start(spec.clone()).await.expect("starting");

    let out = f
        .runtime
        .exec(
            &spec.id,
            vec![
                "job".into(),
                "env".into(),
                "cat".into(),
                "/data/state".into(),
            ],
        )
        .await
        .expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(
        stdout.contains("ROLE=primary\n") && stdout.ends_with("ready\n"),
        "{stdout}"
    );

    let out = f
        .runtime
        .exec(&spec.id, vec!["job".into(), "exit".into(), "7".into()])
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);
    assert!(String::from_utf8_lossy(&out.stderr).contains("job: exit 7"));
    // The container itself carries on.
    assert!(f.runtime.status(&spec.id).unwrap().is_running());
    f.runtime.stop(&spec.id, Duration::ZERO).await.unwrap();

    // Not into a stopped container, nor into an HTTP handler.
    assert!(matches!(
        f.runtime.exec(&spec.id, vec!["job".into()]).await,
        Err(RuntimeError::InvalidSpec { .. })
    ));
    let handler = f.handler("web", "hello-http.wasm", Duration::from_secs(1));
    f.runtime.start(handler.clone()).await.unwrap();
    assert!(matches!(
        f.runtime.exec(&handler.id, vec!["sh".into()]).await,
        Err(RuntimeError::Unsupported { .. })
    ));
}
