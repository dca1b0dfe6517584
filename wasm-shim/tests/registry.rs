//! Pulling wasm OCI artifacts from a real registry (Debian's
//! docker-registry on 127.0.0.1), pushed with the sdk's own client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use skiff_sdk::registry::testing::LocalRegistry;
use skiff_sdk::registry::{RegistryClient, RegistryError};
use skiff_sdk::runtime::{ContainerSpec, ImageRef, ImageSource, Runtime, RuntimeError};
use wasm_shim::{RuntimeConfig, WasmRuntime};

async fn registry() -> LocalRegistry {
    LocalRegistry::start().await
}

async fn http_get(addr: SocketAddr, path: &str) -> u16 {
    common::get(addr, path).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_wasm_artifacts_from_a_registry() {
    let reg = registry().await;
    let client = RegistryClient::new();
    let wasm = Bytes::from(std::fs::read(common::wasm("hello-http.wasm")).unwrap());
    let image = ImageRef::parse(&format!("{}/wasm/hello:v1", reg.addr)).unwrap();
    let manifest_digest = client
        .push_wasm(&image, wasm.clone())
        .await
        .expect("pushing");
    let fetched = client
        .manifest(&image, "wasip2/wasm")
        .await
        .expect("manifest");
    assert_eq!(fetched.digest, manifest_digest);
    assert!(fetched.manifest.is_wasm());
    let pulled = client.pull_wasm(&image).await.expect("pulling");
    assert_eq!(pulled.bytes, wasm);

    // Run it, by tag and by digest.
    let data = tempfile::tempdir().unwrap();
    let rt = WasmRuntime::new(RuntimeConfig::new(data.path().join("wasm"))).unwrap();
    let f = common::Fixture {
        dir: tempfile::tempdir().unwrap(),
        runtime: rt.clone(),
    };
    for (id, reference) in [
        ("by-tag", format!("{}/wasm/hello:v1", reg.addr)),
        (
            "by-digest",
            format!("{}/wasm/hello@{manifest_digest}", reg.addr),
        ),
    ] {
        let mut spec = f.handler(id, "hello-http.wasm", Duration::from_secs(5));
        spec.image = ImageSource::parse(&reference).unwrap();
        let status = rt.start(spec).await.expect("starting from the registry");
        assert!(status.is_running(), "{status:?}");
        assert_eq!(status.image_digest.as_deref(), Some(pulled.digest.as_str()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(wasm_shim::serve(rt.clone(), id.into(), listener));
        assert_eq!(common::get(addr, "/").await.0, 200);
        server.abort();
    }

    // Compiled once per node: with the blob gone from the registry, a
    // restarted runtime on the same data dir still starts it.
    let path = format!("/v2/wasm/hello/blobs/{}", pulled.digest);
    assert_eq!(delete(reg.addr, &path).await, 202);
    assert_eq!(http_get(reg.addr, &path).await, 404);
    drop(f);
    drop(rt);
    let rt = WasmRuntime::new(RuntimeConfig::new(data.path().join("wasm"))).unwrap();
    let prepared = rt
        .prepare(&ImageSource::Registry(image.clone()))
        .await
        .expect("prepared from the cache");
    assert!(prepared.cached);

    // An unknown tag is a pull error.
    let missing = ImageSource::parse(&format!("{}/wasm/hello:nope", reg.addr)).unwrap();
    let spec = ContainerSpec::new("missing", missing, data.path().join("missing.log"));
    match rt.start(spec).await {
        Err(RuntimeError::Pull { message, .. }) => {
            assert!(message.contains("not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

async fn delete(addr: SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("DELETE {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_are_not_wasm_are_refused() {
    let reg = registry().await;
    let client = RegistryClient::new();
    let image = ImageRef::parse(&format!("{}/linux/app:v1", reg.addr)).unwrap();
    let config = client
        .push_blob(
            &image,
            Bytes::from_static(b"{\"architecture\":\"amd64\",\"os\":\"linux\"}"),
        )
        .await
        .unwrap();
    let layer = client
        .push_blob(&image, Bytes::from_static(b"not really a tarball"))
        .await
        .unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":38}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":20}}]}}"#
    );
    client
        .push_manifest(
            &image,
            "application/vnd.oci.image.manifest.v1+json",
            Bytes::from(manifest),
        )
        .await
        .expect("pushing the manifest");
    match client.pull_wasm(&image).await {
        Err(RegistryError::NotWasm {
            config_media_type, ..
        }) => {
            assert_eq!(
                config_media_type,
                "application/vnd.oci.image.config.v1+json"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A "registry" that answers every request with the same bytes.
async fn liar(body: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_checked_against_its_digest() {
    let addr = liar(b"tampered").await;
    let client = RegistryClient::new();
    let digest = skiff_sdk::registry::sha256_digest(b"the real module");
    let image = ImageRef::parse(&format!("{addr}/wasm/app:v1")).unwrap();
    match client.blob(&image, &digest).await {
        Err(RegistryError::DigestMismatch { expected, .. }) => assert_eq!(expected, digest),
        other => panic!("{other:?}"),
    }
    let by_digest = ImageRef::parse(&format!("{addr}/wasm/app@{digest}")).unwrap();
    assert!(matches!(
        client.manifest(&by_digest, "wasip2/wasm").await,
        Err(RegistryError::DigestMismatch { .. })
    ));
}
