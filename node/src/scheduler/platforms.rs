//! The platforms a pod's container images run on, for the scheduler's
//! platform filter (a container pod goes only to nodes whose
//! `kubernetes.io/os`/`arch` an image's index lists). Asked of the registry
//! once per image and kept — a minute when known, half that when the
//! registry could not say — with a short limit per round, so an unreachable
//! registry delays nobody for long and then constrains nothing, as
//! kube-scheduler (which never asks) would place the pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use skiff_sched::model::Platform;
use skiff_sdk::registry::RegistryClient;
use skiff_sdk::runtime::{ImageRef, WASM_RUNTIME_CLASS};

const KEEP_KNOWN: Duration = Duration::from_secs(60);
const KEEP_UNKNOWN: Duration = Duration::from_secs(30);
/// The most one scheduling round waits for registries.
const ASK_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct ImagePlatforms {
    registry: RegistryClient,
    known: HashMap<String, (Instant, Option<Vec<Platform>>)>,
}

impl ImagePlatforms {
    pub fn new() -> Self {
        ImagePlatforms {
            registry: RegistryClient::new().with_timeout(ASK_TIMEOUT),
            known: HashMap::new(),
        }
    }

    /// Learns what it does not know yet about the images of `pods`.
    pub async fn learn(&mut self, pods: &[std::sync::Arc<Pod>]) {
        let now = Instant::now();
        self.known.retain(|_, (at, p)| {
            now.duration_since(*at)
                < if p.is_some() {
                    KEEP_KNOWN
                } else {
                    KEEP_UNKNOWN
                }
        });
        let mut wanted: Vec<String> = pods
            .iter()
            .filter(|p| !is_wasm(p))
            .flat_map(|p| images(p))
            .filter(|i| !self.known.contains_key(i))
            .collect();
        wanted.sort();
        wanted.dedup();
        let asks = wanted.iter().map(|image| {
            let registry = &self.registry;
            async move {
                let Ok(r) = ImageRef::parse(image) else {
                    return None;
                };
                let got = tokio::time::timeout(ASK_TIMEOUT, registry.platforms(&r)).await;
                match got {
                    Ok(Ok(list)) => Some(
                        list.into_iter()
                            .map(|p| Platform::new(&p.os, &p.architecture))
                            .collect(),
                    ),
                    _ => None,
                }
            }
        });
        let answers = futures::future::join_all(asks).await;
        for (image, platforms) in wanted.into_iter().zip(answers) {
            self.known.insert(image, (now, platforms));
        }
    }

    /// The platforms every image of `pod` runs on; `None` when that is not
    /// known for one of them, or any platform will do.
    pub fn of(&self, pod: &Pod) -> Option<Vec<Platform>> {
        if is_wasm(pod) {
            return None;
        }
        let mut common: Option<Vec<Platform>> = None;
        for image in images(pod) {
            let list = self.known.get(&image)?.1.clone()?;
            if list.is_empty() {
                continue;
            }
            common = Some(match common {
                None => list,
                Some(c) => c.into_iter().filter(|p| list.contains(p)).collect(),
            });
        }
        common
    }
}

fn is_wasm(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        == Some(WASM_RUNTIME_CLASS)
}

fn images(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.clone())
        .filter(|i| !i.starts_with('/') && !i.starts_with("file://"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(images: &[&str], class: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "runtimeClassName": class,
                "containers": images.iter().enumerate()
                    .map(|(i, im)| serde_json::json!({"name": format!("c{i}"), "image": im}))
                    .collect::<Vec<_>>(),
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_runs_where_all_its_images_do() {
        let mut ip = ImagePlatforms::new();
        let now = Instant::now();
        let amd = Platform::new("linux", "amd64");
        let arm = Platform::new("linux", "arm64");
        ip.known
            .insert("a".into(), (now, Some(vec![amd.clone(), arm.clone()])));
        ip.known.insert("b".into(), (now, Some(vec![arm.clone()])));
        ip.known.insert("anywhere".into(), (now, Some(vec![])));
        ip.known.insert("unknown".into(), (now, None));
        assert_eq!(ip.of(&pod(&["a"], None)), Some(vec![amd, arm.clone()]));
        assert_eq!(ip.of(&pod(&["a", "b"], None)), Some(vec![arm.clone()]));
        assert_eq!(ip.of(&pod(&["b", "anywhere"], None)), Some(vec![arm]));
        assert_eq!(ip.of(&pod(&["a", "unknown"], None)), None);
        assert_eq!(ip.of(&pod(&["never-asked"], None)), None);
        assert_eq!(ip.of(&pod(&["a"], Some("wasm"))), None);
    }
}
