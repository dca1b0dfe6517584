//! Round trips: objects built with k8s-pb, encoded by prost, wrapped in the
//! `runtime.Unknown` envelope, decoded here and compared with the JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::*;

fn envelope(api_version: &str, kind: &str, obj: &impl Message) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(u.encode_to_vec());
    body
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s("default"),
        labels: BTreeMap::from([("app".into(), name.into())]),
        creation_timestamp: Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        ..Default::default()
    })
}

#[test]
fn configmap() {
    let cm = core::ConfigMap {
        metadata: meta("cm"),
        data: BTreeMap::from([("a".into(), "1".into()), ("empty".into(), String::new())]),
        binary_data: BTreeMap::from([("b".into(), vec![0, 1, 2, 255])]),
        immutable: Some(false),
    };
    let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "cm",
                "namespace": "default",
                "labels": {"app": "cm"},
                "creationTimestamp": "2023-11-14T22:13:20Z",
            },
            "data": {"a": "1", "empty": ""},
            "binaryData": {"b": "AAEC/w=="},
            "immutable": false,
        })
    );
}

#[test]
fn secret_bytes_are_base64() {
    let sec = core::Secret {
        metadata: meta("s"),
        data: BTreeMap::from([("password".into(), b"hunter2".to_vec())]),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let v = decode(&envelope("v1", "Secret", &sec)).unwrap();
    assert_eq!(v["data"], json!({"password": "aHVudGVyMg=="}));
    assert_eq!(v["type"], "Opaque");
}

#[test]
fn deployment() {
    let container = core::Container {
        name: s("web"),
        image: s("nginx"),
        ports: vec![core::ContainerPort {
            container_port: Some(80),
            protocol: s("TCP"),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([("memory".into(), Quantity { string: s("128Mi") })]),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: s("/healthz"),
                    port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("http"),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    };
    let d = apps::Deployment {
        metadata: meta("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: BTreeMap::from([("app".into(), "web".into())]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes: vec![core::Volume {
                        name: s("data"),
                        volume_source: Some(core::VolumeSource {
                            aws_elastic_block_store: Some(core::AwsElasticBlockStoreVolumeSource {
                                volume_id: s("vol-1"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(1),
                        str_val: None,
                    }),
                    max_surge: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: s("25%"),
                    }),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let v = decode(&envelope("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "labels": {"app": "web"},
                "creationTimestamp": "2023-11-14T22:13:20Z",
            },
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "nginx",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"memory": "128Mi"}},
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 5,
                            },
                        }],
                        "volumes": [{
                            "name": "data",
                            "awsElasticBlockStore": {"volumeID": "vol-1"},
                        }],
                    },
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"},
                },
            },
        })
    );
}

#[test]
fn pod_status_and_micro_time() {
    let pod = core::Pod {
        metadata: meta("p"),
        spec: None,
        status: Some(core::PodStatus {
            pod_ip: s("10.0.0.7"),
            pod_ips: vec![core::PodIp { ip: s("10.0.0.7") }],
            ..Default::default()
        }),
    };
    let v = decode(&envelope("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        v["status"],
        json!({"podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}]})
    );

    let lease = k8s_pb::api::coordination::v1::Lease {
        metadata: meta("l"),
        spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        }),
    };
    let v = decode(&envelope("coordination.k8s.io/v1", "Lease", &lease)).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 40,
            "renewTime": "2023-11-14T22:13:20.123456Z",
        })
    );
}

#[test]
fn access_review_and_token_request() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    let r = authz::SelfSubjectAccessReview {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("create"),
                group: s(""),
                resource: s("pods"),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            ..Default::default()
        }),
    };
    let v = decode(&envelope(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &r,
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"resourceAttributes": {
                "namespace": "default", "verb": "create", "resource": "pods",
            }},
            "status": {},
        })
    );

    let t = authn::TokenRequest {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(7200),
            bound_object_ref: None,
        }),
        status: None,
    };
    let v = decode(&envelope("authentication.k8s.io/v1", "TokenRequest", &t)).unwrap();
    assert_eq!(
        v["spec"],
        json!({"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 7200})
    );
}

#[test]
fn delete_options_under_any_group() {
    let d = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let v = decode(&envelope("apps/v1", "DeleteOptions", &d)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "DeleteOptions",
            "gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"],
        })
    );
}

/// Go's marshaller writes every non-pointer field: empty strings are
/// dropped, a zero Time (an empty message) is omitted.
#[test]
fn gogo_zero_values() {
    // ObjectMeta{name: "x" (1), generateName: "" (2), generation: 0 (7),
    // creationTimestamp: {} (8)}
    let om = [0x0a, 1, b'x', 0x12, 0, 0x38, 0, 0x42, 0];
    let mut ns = vec![0x0a, om.len() as u8];
    ns.extend(om);
    ns.extend([0x12, 0, 0x1a, 0]); // spec: {}, status: {}
    let v = decode(&envelope("v1", "Namespace", &RawMsg(ns))).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {}, "status": {}})
    );
}

/// Already-encoded message bytes.
#[derive(Debug, Default, Clone, PartialEq)]
struct RawMsg(Vec<u8>);

impl Message for RawMsg {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[test]
fn errors() {
    assert!(decode(b"{}").unwrap_err().contains("k8s\\0"));
    let e = decode(&envelope("v1", "Gizmo", &RawMsg(vec![]))).unwrap_err();
    assert!(e.contains("unknown kind \"Gizmo\""), "{e}");
    let e = decode(&envelope("v1", "ConfigMap", &RawMsg(vec![0x08, 0x80]))).unwrap_err();
    assert!(e.contains("truncated varint"), "{e}");
    let e = decode(&envelope("v1", "ConfigMap", &RawMsg(vec![0x0b]))).unwrap_err();
    assert!(e.contains("bad wire type"), "{e}");
    // metadata (a message) as a varint.
    let e = decode(&envelope("v1", "ConfigMap", &RawMsg(vec![0x08, 1]))).unwrap_err();
    assert!(e.contains("unexpected varint"), "{e}");
    let e = decode(&envelope("v1", "ConfigMap", &RawMsg(vec![0x0a, 5, 1]))).unwrap_err();
    assert!(e.contains("truncated field"), "{e}");
}

#[test]
fn never_panics() {
    let good = envelope("apps/v1", "Deployment", &apps::Deployment::default());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = 4 + (seed as usize) % (b.len() - 4);
            b[i] = (seed >> 32) as u8;
        }
        b.truncate(4 + (seed as usize >> 8) % (b.len() - 3));
        let _ = decode(&b);
    }
    // Fully random messages into every kind.
    for n in 0..table::MSGS.len() {
        for _ in 0..50 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = message(n, &bytes, 0);
        }
    }
}

#[test]
fn formats() {
    assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(-1, Some(500_000)), "1969-12-31T23:59:59.000500Z");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(300_000_000), "300ms");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
    assert_eq!(go_duration(0), "0s");
}
