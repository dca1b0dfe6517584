//! `skiff bench api`: what the Kubernetes API costs over the store it sits
//! on, in one run against one `skiff server` started here:
//!
//! - **create vs raw put**: a Pod created through the API (HTTPS, token
//!   authentication, RBAC, decoding, validation, defaulting, one store txn,
//!   the answer) against a raw etcd v3 `Put` of the same JSON to the same
//!   store, one at a time, in alternating blocks so that both see the same
//!   machine. The ratio is the API's overhead over the durable write both
//!   share (target: ≤ 1.2×, p99 ≤ 10 ms).
//! - **list**: `GET /api/v1/pods` with the requested number of pods in the
//!   cluster, whole (JSON), as a kubectl Table, and in pages of 500.
//! - **watch fan-out**: that many watchers of one namespace, one Pod
//!   created, the time until each watcher has its ADDED event.
//!
//! The pods are bound to a node that does not exist, so no agent runs them
//! and the scheduler leaves them alone; the server runs no containers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use consensus::pb::etcdserverpb::PutRequest;
use consensus::pb::etcdserverpb::kv_client::KvClient;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_sdk::client::Client;
use tokio::task::JoinSet;

use super::{connect, free_tcp_ports, free_udp_ports, ms, percentile};

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Pods created one at a time through the API (and as many raw puts).
    #[arg(long, default_value_t = 1000)]
    creates: usize,
    /// Pods in the cluster when listing.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Watchers of the one change.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Keep the data directory and the server log.
    #[arg(long)]
    keep: bool,
}

/// Watchers per client connection (HTTP/2 streams on one connection).
const WATCHERS_PER_CONNECTION: usize = 100;
/// Creates in flight while filling the cluster for the list.
const FILL_IN_FLIGHT: usize = 64;

struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench", "tier": "web"}},
        "spec": {
            "nodeName": "bench-nowhere",
            "containers": [{
                "name": "web",
                "image": "registry.local/bench/web:v1",
                "ports": [{"containerPort": 8080}],
                "env": [{"name": "MODE", "value": "bench"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }],
        },
    })
}

async fn create(client: &Client, namespace: &str, body: &Value) -> Result<()> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/namespaces/{namespace}/pods"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Bytes::from(serde_json::to_vec(body)?))?;
    let resp = client.send(req).await?;
    resp.into_body().collect().await?;
    Ok(())
}

/// `GET path` with `accept`; the body's size.
async fn get(client: &Client, path: &str, accept: &str) -> Result<Bytes> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::ACCEPT, accept)
        .body(Bytes::new())?;
    let resp = client.send(req).await?;
    Ok(resp.into_body().collect().await?.to_bytes())
}

fn start(dir: &Path) -> Result<(Server, String, std::path::PathBuf)> {
    let tcp = free_tcp_ports(2)?;
    let udp = free_udp_ports(1)?;
    let data = dir.join("member");
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(std::env::current_exe().context("finding the skiff binary")?)
        .args(["server", "--data-dir"])
        .arg(&data)
        .args(["--etcd-listen", &format!("127.0.0.1:{}", tcp[0])])
        .args(["--api-listen", &format!("127.0.0.1:{}", tcp[1])])
        .args(["--peer-listen", &format!("127.0.0.1:{}", udp[0])])
        .env("SKIFF_AGENT_CONTAINERS", "false")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting skiff server")?;
    Ok((
        Server { child, log },
        format!("http://127.0.0.1:{}", tcp[0]),
        data.join("kubeconfig.yaml"),
    ))
}

pub async fn run(args: ApiArgs) -> Result<()> {
    let mut dir = tempfile::Builder::new()
        .prefix("skiff-bench-api-")
        .tempdir()?;
    let (mut server, etcd, kubeconfig) = start(dir.path())?;
    let result = measure(&args, &etcd, &kubeconfig, &mut server).await;
    if let Err(e) = &result {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("{e:#}\nserver log (last lines):");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    drop(server);
    if args.keep {
        dir.disable_cleanup(true);
        eprintln!(
            "kept the data and the server log in {}",
            dir.path().display()
        );
    }
    result
}

async fn measure(args: &ApiArgs, etcd: &str, kubeconfig: &Path, server: &mut Server) -> Result<()> {
    // Ready: the kubeconfig is written and the API answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("skiff server exited at start ({status})");
        }
        if kubeconfig.exists()
            && let Ok(c) = Client::from_kubeconfig(kubeconfig)
            && c.get_json("/version").await.is_ok()
        {
            break c;
        }
        if Instant::now() > deadline {
            bail!("skiff server did not become ready within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for ns in ["bench", "fanout"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        client
            .request::<Value>(
                Method::POST,
                "/api/v1/namespaces",
                "application/json",
                Bytes::from(body.to_string()),
            )
            .await?;
    }
    let mut kv = KvClient::new(connect(etcd).await?);

    // Create vs raw put, alternating blocks of 50.
    eprintln!("== {} creates and as many raw puts", args.creates);
    let (mut creates, mut puts) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < args.creates {
        let block = (args.creates - i).min(50);
        for j in i..i + block {
            let body = pod("bench", &format!("p-{j:06}"));
            let t = Instant::now();
            create(&client, "bench", &body).await?;
            creates.push(t.elapsed());
        }
        for j in i..i + block {
            let value = serde_json::to_vec(&pod("bench", &format!("raw-{j:06}")))?;
            let t = Instant::now();
            kv.put(PutRequest {
                key: format!("/bench/raw/{j:06}").into_bytes(),
                value,
                ..Default::default()
            })
            .await?;
            puts.push(t.elapsed());
        }
        i += block;
    }

    // Fill the cluster up to `pods`, then list.
    let have = args.creates;
    eprintln!("== filling to {} pods", args.pods);
    let client = Arc::new(client);
    let mut next = have;
    let mut tasks = JoinSet::new();
    while next < args.pods || !tasks.is_empty() {
        while next < args.pods && tasks.len() < FILL_IN_FLIGHT {
            let (c, body) = (client.clone(), pod("bench", &format!("p-{next:06}")));
            tasks.spawn(async move { create(&c, "bench", &body).await });
            next += 1;
        }
        if let Some(r) = tasks.join_next().await {
            r??;
        }
    }
    eprintln!("== listing");
    let mut whole = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = get(&client, "/api/v1/pods", "application/json").await?;
        whole.push(t.elapsed());
        let list: Value = serde_json::from_slice(&body)?;
        let n = list["items"].as_array().map_or(0, Vec::len);
        if n < args.pods {
            bail!("the list has {n} pods, not {}", args.pods);
        }
        size = body.len();
    }
    let mut table = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        get(
            &client,
            "/api/v1/pods",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .await?;
        table.push(t.elapsed());
    }
    let mut paged = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut token = String::new();
        let mut n = 0;
        loop {
            let path = if token.is_empty() {
                "/api/v1/pods?limit=500".to_string()
            } else {
                format!(
                    "/api/v1/pods?limit=500&continue={}",
                    skiff_sdk::client::encode(&token)
                )
            };
            let page: Value =
                serde_json::from_slice(&get(&client, &path, "application/json").await?)?;
            n += page["items"].as_array().map_or(0, Vec::len);
            token = page["metadata"]["continue"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if token.is_empty() {
                break;
            }
        }
        if n < args.pods {
            bail!("the pages held {n} pods, not {}", args.pods);
        }
        paged.push(t.elapsed());
    }

    // Watch fan-out.
    eprintln!("== {} watchers", args.watchers);
    let connections = args.watchers.div_ceil(WATCHERS_PER_CONNECTION).max(1);
    let clients: Vec<Arc<Client>> = (0..connections)
        .map(|_| Client::from_kubeconfig(kubeconfig).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let start_rv =
        client.get_json("/api/v1/namespaces/fanout/pods").await?["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.watchers);
    let go = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut watchers = JoinSet::new();
    for w in 0..args.watchers {
        let c = clients[w % connections].clone();
        let (ready, go, rv) = (ready_tx.clone(), go.clone(), start_rv.clone());
        watchers.spawn(async move {
            let path = format!("/api/v1/namespaces/fanout/pods?watch=true&resourceVersion={rv}");
            let req = Request::builder()
                .uri(path)
                .header(header::ACCEPT, "application/json")
                .body(Bytes::new())?;
            let mut body = c.send(req).await?.into_body();
            ready.send(()).await.ok();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.windows(5).any(|w| w == b"ADDED") && buf.contains(&b'\n') {
                    let at = go.get().copied().unwrap_or_else(Instant::now);
                    return Ok::<Duration, anyhow::Error>(at.elapsed());
                }
            }
            bail!("the watch ended before the event")
        });
    }
    drop(ready_tx);
    for _ in 0..args.watchers {
        if tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            bail!("not every watcher was established within a minute");
        }
    }
    let _ = go.set(Instant::now());
    create(&client, "fanout", &pod("fanout", "the-change")).await?;
    let mut delivered = Vec::new();
    let mut failed = 0;
    let collect = async {
        while let Some(r) = watchers.join_next().await {
            match r {
                Ok(Ok(d)) => delivered.push(d),
                _ => failed += 1,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .is_err()
    {
        bail!("watchers were still waiting a minute after the change");
    }

    // The report.
    for v in [
        &mut puts,
        &mut creates,
        &mut whole,
        &mut table,
        &mut paged,
        &mut delivered,
    ] {
        v.sort_unstable();
    }
    let p = |v: &[Duration], q: f64| ms(percentile(v, q));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!();
    println!("measurement                               | metric     |     value | target");
    println!(
        "------------------------------------------+------------+-----------+-----------------"
    );
    let row = |what: &str, metric: &str, value: String, target: &str| {
        println!("{what:<41} | {metric:<10} | {value:>9} | {target}");
    };
    row(
        "raw etcd v3 put of the pod's JSON",
        "p50 ms",
        format!("{:.2}", p(&puts, 0.5)),
        "",
    );
    row("", "p99 ms", format!("{:.2}", p(&puts, 0.99)), "");
    row(
        "API create (POST pods)",
        "p50 ms",
        format!("{:.2}", p(&creates, 0.5)),
        "",
    );
    row(
        "",
        "p99 ms",
        format!("{:.2}", p(&creates, 0.99)),
        "<= 10 ms",
    );
    row(
        "API create / raw put",
        "p50 ratio",
        format!("{:.2}x", ratio(p(&creates, 0.5), p(&puts, 0.5))),
        "<= 1.2x",
    );
    row(
        "",
        "p99 ratio",
        format!("{:.2}x", ratio(p(&creates, 0.99), p(&puts, 0.99))),
        "<= 1.2x",
    );
    let pods = format!(
        "list {} pods (JSON, {:.1} MB)",
        args.pods,
        size as f64 / 1e6
    );
    row(&pods, "p50 ms", format!("{:.1}", p(&whole, 0.5)), "");
    row("", "max ms", format!("{:.1}", p(&whole, 1.0)), "");
    row(
        "  as a Table (kubectl get)",
        "p50 ms",
        format!("{:.1}", p(&table, 0.5)),
        "",
    );
    row(
        "  in pages of 500",
        "p50 ms",
        format!("{:.1}", p(&paged, 0.5)),
        "",
    );
    let fan = format!("one change to {} watchers", args.watchers);
    row(&fan, "delivered", format!("{}", delivered.len()), "");
    row("", "failed", format!("{failed}"), "");
    row("", "p50 ms", format!("{:.1}", p(&delivered, 0.5)), "");
    row("", "p99 ms", format!("{:.1}", p(&delivered, 0.99)), "");
    row("", "max ms", format!("{:.1}", p(&delivered, 1.0)), "");
    Ok(())
}
