//! Shared by the wasm runtime's integration tests: where the example guests
//! are, and a runtime in a temporary directory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use skiff_sdk::runtime::{ContainerSpec, HttpHandlerSpec, ImageSource, Workload};
use wasm_shim::{RuntimeConfig, WasmRuntime};

/// `$SKIFF_WASM_DIR`, or `wasm/` in the cargo target directory this test
/// binary was built in: where scripts/build-examples puts the guests.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_WASM_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/release/deps/<test binary>
    exe.ancestors()
        .nth(3)
        .expect("the target directory")
        .join("wasm")
}

/// The path of an example guest; panics with what to do when it is missing.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the example guests first with scripts/build-examples \
         (scripts/test does), or point SKIFF_WASM_DIR at them",
        path.display()
    );
    path
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub runtime: WasmRuntime,
}

pub fn runtime() -> Fixture {
    runtime_with(|_| {})
}

pub fn runtime_with(tune: impl FnOnce(&mut RuntimeConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = RuntimeConfig::new(dir.path().join("wasm"));
    tune(&mut config);
    let runtime = WasmRuntime::new(config).expect("building the wasm runtime");
    Fixture { dir, runtime }
}

impl Fixture {
    pub fn log(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(id).join("0.log")
    }

    /// A command container running example `guest` with `args`.
    pub fn command(&self, id: &str, guest: &str, args: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(id, ImageSource::File(wasm(guest)), self.log(id));
        spec.args = args.iter().map(|s| s.to_string()).collect();
        spec
    }

    /// An HTTP-handler container running example `guest`.
    pub fn handler(&self, id: &str, guest: &str, timeout: Duration) -> ContainerSpec {
        let mut spec = ContainerSpec::new(id, ImageSource::File(wasm(guest)), self.log(id));
        spec.workload = Workload::HttpHandler(HttpHandlerSpec {
            request_timeout: timeout,
            max_concurrency: None,
        });
        spec
    }

    pub fn log_text(&self, id: &str) -> String {
        skiff_sdk::runtime::LogReader::read_text(self.log(id)).unwrap_or_default()
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection: status and body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting");
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("sending");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("reading");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, dechunk(&body))
}

fn dechunk(body: &str) -> String {
    // Good enough for the tests' small bodies: undo chunked encoding if used.
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_string();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}
