//! Admission: whether this node takes a pod that was bound to it. The
//! scheduler should only bind pods that fit, but a pod created with
//! `spec.nodeName` set skips it, and two schedulers' decisions may race; as
//! the kubelet does, the agent checks again and rejects what cannot run
//! here, with the kubelet's reasons (`OutOfcpu`, `OutOfmemory`,
//! `OutOfpods`) and, for pods that need a runtime this node lacks,
//! `UnsupportedRuntime`.

use k8s_openapi::api::core::v1::Pod;
use skiff_sched::{PodInfo, Resources, WASM_RUNTIME_CLASS};

/// What the node offers (its allocatable resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: i64,
    pub memory: i64,
    pub pods: i64,
}

/// What the pods already admitted here ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: Resources,
    pub pods: i64,
}

impl Usage {
    pub fn add(&mut self, r: &Resources) {
        self.requests.cpu_millis += r.cpu_millis;
        self.requests.memory += r.memory;
        self.pods += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Runs here; these are its requests.
    Admit(Resources),
    /// Does not: the pod fails with this reason and message.
    Reject { reason: String, message: String },
}

/// Decides whether `pod` may run on node `node`.
pub fn admit(pod: &Pod, node: &str, containers: bool, capacity: Capacity, used: &Usage) -> Verdict {
    let reject = |reason: &str, message: String| Verdict::Reject {
        reason: reason.to_string(),
        message: format!("Pod was rejected: {message}"),
    };
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        .filter(|c| !c.is_empty());
    if class != Some(WASM_RUNTIME_CLASS) && !containers {
        let asked = match class {
            Some(c) => format!("runtimeClassName {c:?}"),
            None => "no runtimeClassName".to_string(),
        };
        return reject(
            "UnsupportedRuntime",
            format!(
                "node {node:?} runs WebAssembly pods only (runtimeClassName: \
                 {WASM_RUNTIME_CLASS}); the pod has {asked}, which needs an OCI runtime, \
                 and this node has none"
            ),
        );
    }
    let info = match PodInfo::from_pod(pod) {
        Ok(i) => i,
        Err(e) => return reject("UnexpectedAdmissionError", format!("{e}")),
    };
    let want = info.requests;
    let checks = [
        ("pods", 1, used.pods, capacity.pods),
        (
            "cpu",
            want.cpu_millis,
            used.requests.cpu_millis,
            capacity.cpu_millis,
        ),
        ("memory", want.memory, used.requests.memory, capacity.memory),
    ];
    for (resource, requested, in_use, cap) in checks {
        if requested > 0 && requested > cap - in_use {
            return reject(
                &format!("OutOf{resource}"),
                format!(
                    "Node didn't have enough resource: {resource}, requested: {requested}, \
                     used: {in_use}, capacity: {cap}"
                ),
            );
        }
    }
    Verdict::Admit(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(class: Option<&str>, cpu: &str, memory: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "runtimeClassName": class,
                "containers": [{"name": "c", "image": "/x.wasm",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
            },
        }))
        .unwrap()
    }

    const CAP: Capacity = Capacity {
        cpu_millis: 2000,
        memory: 1 << 30,
        pods: 110,
    };

    #[test]
    fn wasm_pods_that_fit_are_admitted_with_their_requests() {
        let v = admit(
            &pod(Some("wasm"), "500m", "64Mi"),
            "n",
            false,
            CAP,
            &Usage::default(),
        );
        let Verdict::Admit(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!((r.cpu_millis, r.memory), (500, 64 << 20));
    }

    #[test]
    fn container_pods_need_a_node_with_containers() {
        for class in [None, Some("runc")] {
            let Verdict::Reject { reason, message } =
                admit(&pod(class, "1m", "1"), "n", false, CAP, &Usage::default())
            else {
                panic!("admitted")
            };
            assert_eq!(reason, "UnsupportedRuntime");
            assert!(message.contains("OCI runtime"), "{message}");
            // A node with runc takes them.
            let v = admit(&pod(class, "1m", "1"), "n", true, CAP, &Usage::default());
            assert!(matches!(v, Verdict::Admit(_)), "{v:?}");
        }
    }

    #[test]
    fn requests_beyond_what_is_left_are_rejected_like_the_kubelet() {
        let mut used = Usage::default();
        used.add(&Resources {
            cpu_millis: 1800,
            ..Default::default()
        });
        let v = admit(&pod(Some("wasm"), "500m", "1Mi"), "n", true, CAP, &used);
        assert_eq!(
            v,
            Verdict::Reject {
                reason: "OutOfcpu".into(),
                message: "Pod was rejected: Node didn't have enough resource: cpu, \
                          requested: 500, used: 1800, capacity: 2000"
                    .into()
            }
        );
        let v = admit(&pod(Some("wasm"), "1m", "2Gi"), "n", true, CAP, &used);
        assert!(matches!(v, Verdict::Reject { reason, .. } if reason == "OutOfmemory"));
        used.pods = 110;
        let v = admit(
            &pod(Some("wasm"), "1m", "1"),
            "n",
            true,
            CAP,
            &Usage {
                pods: 110,
                ..Default::default()
            },
        );
        assert!(matches!(v, Verdict::Reject { reason, .. } if reason == "OutOfpods"));
    }
}
