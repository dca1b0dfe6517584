//! An application that carries a whole skiff node in its own process: the
//! replicated store, the Kubernetes API, the controllers, the scheduler and
//! an agent running wasm pods — no other process, no kubectl.
//!
//! It starts a single-member cluster in a temporary directory, creates a
//! Deployment of the example wasm HTTP app through the SDK's typed client,
//! waits for its pods to be Ready, asks each one for a page over HTTP, and
//! stops the node. The kubeconfig it prints works with the real kubectl
//! while it runs.
//!
//! ```sh
//! ./scripts/build-examples   # the wasm guests, into $CARGO_TARGET_DIR/wasm
//! cargo run --release -p embed-node [-- path/to/hello-http.wasm]
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use skiff_node::{Server, ServerConfig};
use skiff_sdk::client::{Api, ListParams};

fn hello_wasm() -> Result<PathBuf> {
    if let Some(p) = std::env::args_os().nth(1) {
        return Ok(PathBuf::from(p));
    }
    let dir = match std::env::var_os("SKIFF_WASM_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| {
            format!(
                "{}/.cache/skiff-target",
                std::env::var("HOME").unwrap_or_default()
            )
        }))
        .join("wasm"),
    };
    let p = dir.join("hello-http.wasm");
    if !p.exists() {
        bail!(
            "{} is missing: run ./scripts/build-examples, or pass the path of hello-http.wasm",
            p.display()
        );
    }
    Ok(p)
}

#[tokio::main]
async fn main() -> Result<()> {
    let wasm = hello_wasm()?;
    let dir = tempfile::tempdir()?;

    // A node of its own: every address on loopback, any free port, and no
    // etcd API (the application reaches the store through the API server).
    let mut cfg = ServerConfig::new(dir.path());
    cfg.api_listen = "127.0.0.1:0".parse()?;
    cfg.store.peer_listen = "127.0.0.1:0".parse()?;
    cfg.etcd_listen = None;
    cfg.node_name = "embedded".into();
    let t0 = Instant::now();
    let server = Server::start(cfg).await?;
    server.ready().await?;
    println!(
        "node up in {:?}: API https://{} (KUBECONFIG={})",
        t0.elapsed(),
        server.api_addr(),
        server.kubeconfig().display()
    );

    let client = server.client();
    let deployments = Api::<Deployment>::namespaced(&client, "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "runtimeClassName": "wasm",
                    "containers": [{
                        "name": "hello",
                        "image": format!("file://{}", wasm.display()),
                        "ports": [{"containerPort": 8080}],
                    }],
                },
            },
        },
    }))?;
    deployments.create(&deployment).await?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = deployments.get("hello").await?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        if ready == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the Deployment has {ready} of 2 pods ready after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("deployment hello: 2/2 ready after {:?}", t0.elapsed());

    let pods = Api::<Pod>::namespaced(&client, "default")
        .list(&ListParams::default().labels("app=hello"))
        .await?;
    for pod in &pods.items {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .with_context(|| format!("pod {name} has no IP"))?;
        let body = http_get(&format!("{ip}:8080"), "/from-the-app")?;
        println!("{name} ({ip}) answered: {}", body.trim());
    }

    server.stop().await?;
    println!("node stopped");
    Ok(())
}

/// One HTTP/1.1 GET; the body.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}
