//! Telling wasm images from container images at pod admission: a pod that
//! names no RuntimeClass but whose images are all WebAssembly (a wasm OCI
//! artifact in a registry, or a `.wasm` file on the node) gets
//! `runtimeClassName: wasm`, so `kubectl run` and `kubectl create
//! deployment` of a wasm image just work. A mutating admission step, as a
//! webhook would be in Kubernetes; the pod shows what was decided.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;
use skiff_sdk::registry::RegistryClient;
use skiff_sdk::runtime::ImageSource;
use tokio::sync::OnceCell;

/// How long an answer about a registry image is kept (tags move, and a
/// registry that was down may be up again).
const KEEP: Duration = Duration::from_secs(60);
/// The most a pod create waits on a registry to learn an image's kind.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

type Answer = Arc<(Instant, OnceCell<Option<bool>>)>;

struct ImageKinds {
    registry: RegistryClient,
    answers: Mutex<HashMap<String, Answer>>,
}

static KINDS: LazyLock<ImageKinds> = LazyLock::new(|| ImageKinds {
    registry: RegistryClient::new().with_timeout(ASK_TIMEOUT),
    answers: Mutex::new(HashMap::new()),
});

impl ImageKinds {
    /// Some(true) for a wasm image, Some(false) for a container image,
    /// None when it cannot be told (registry unreachable, bad reference).
    /// Concurrent creates of one image share one registry request.
    async fn is_wasm(&self, image: &str) -> Option<bool> {
        let source = ImageSource::parse(image).ok()?;
        let ImageSource::Registry(reference) = source else {
            let ImageSource::File(path) = source else {
                return None;
            };
            return Some(path.extension().is_some_and(|e| e == "wasm"));
        };
        let answer = {
            let mut answers = self.answers.lock();
            answers.retain(|_, a| a.0.elapsed() < KEEP);
            answers
                .entry(image.to_string())
                .or_insert_with(|| Arc::new((Instant::now(), OnceCell::new())))
                .clone()
        };
        *answer
            .1
            .get_or_init(|| async {
                let asked = self.registry.manifest(&reference, "wasip2/wasm");
                match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                    Ok(Ok(m)) => Some(m.manifest.is_wasm()),
                    Ok(Err(e)) => {
                        tracing::debug!(%image, "cannot tell the image's kind: {e}");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%image, "cannot tell the image's kind: the registry did not answer in {ASK_TIMEOUT:?}");
                        None
                    }
                }
            })
            .await
    }
}

/// Sets `spec.runtimeClassName: wasm` on a pod that names no RuntimeClass
/// and whose containers (init containers included) all run wasm images.
/// A pod with any container image, or one whose kind cannot be learned,
/// is left as it is.
pub(super) async fn default_runtime_class(pod: &mut Value) {
    let spec = &pod["spec"];
    if spec["runtimeClassName"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
    {
        return;
    }
    let images: Vec<String> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .filter_map(|c| c["image"].as_str().map(str::to_string))
        .collect();
    if images.is_empty() {
        return;
    }
    for image in &images {
        if KINDS.is_wasm(image).await != Some(true) {
            return;
        }
    }
    pod["spec"]["runtimeClassName"] = Value::from(skiff_sdk::runtime::WASM_RUNTIME_CLASS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn wasm_files_are_told_from_other_images_without_a_registry() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "/srv/app.wasm"}]}});
        default_runtime_class(&mut pod).await;
        assert_eq!(pod["spec"]["runtimeClassName"], "wasm");

        // An explicit class stays, whatever the image.
        let mut pod = json!({"spec": {"runtimeClassName": "runc",
            "containers": [{"name": "a", "image": "/srv/app.wasm"}]}});
        default_runtime_class(&mut pod).await;
        assert_eq!(pod["spec"]["runtimeClassName"], "runc");

        // One container image among wasm ones: not a wasm pod. (A loopback
        // registry that is not there answers at once: unknown.)
        let mut pod = json!({"spec": {
            "initContainers": [{"name": "i", "image": "/srv/init.wasm"}],
            "containers": [{"name": "a", "image": "/bin/sh"},
                           {"name": "b", "image": "127.0.0.1:1/nothing:v1"}]}});
        default_runtime_class(&mut pod).await;
        assert!(pod["spec"]["runtimeClassName"].is_null());
        let mut pod =
            json!({"spec": {"containers": [{"name": "b", "image": "127.0.0.1:1/nothing:v1"}]}});
        default_runtime_class(&mut pod).await;
        assert!(pod["spec"]["runtimeClassName"].is_null());
    }

    /// A registry on loopback that serves one wasm artifact manifest and
    /// one container image manifest, counting the requests.
    async fn registry() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let served = count.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let config = if req.starts_with(b"GET /v2/skiff/app/") {
                        "application/vnd.wasm.config.v0+json"
                    } else {
                        "application/vnd.oci.image.config.v1+json"
                    };
                    let layer = if config.contains("wasm") {
                        "application/wasm"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    };
                    let d = format!("sha256:{}", "a".repeat(64));
                    let body = json!({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": config, "digest": d, "size": 2},
                        "layers": [{"mediaType": layer, "digest": d, "size": 2}]})
                    .to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn registry_images_are_told_by_their_media_type_once() {
        let (addr, count) = registry().await;
        let wasm = format!("{addr}/skiff/app:v1");
        let mut pods: Vec<Value> = (0..4)
            .map(|_| json!({"spec": {"containers": [{"name": "a", "image": wasm}]}}))
            .collect();
        futures::future::join_all(pods.iter_mut().map(default_runtime_class)).await;
        for pod in &pods {
            assert_eq!(pod["spec"]["runtimeClassName"], "wasm");
        }
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "four creates of one image ask the registry once"
        );
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": format!("{addr}/library/nginx:1")}]}});
        default_runtime_class(&mut pod).await;
        assert!(pod["spec"]["runtimeClassName"].is_null(), "{pod}");
    }
}
