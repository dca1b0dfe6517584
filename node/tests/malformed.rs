//! Hundreds of malformed objects, each posted through the real kubectl
//! (`kubectl create --raw`): every one gets a 4xx whose message names the
//! field that is wrong, none gets a 5xx, and the server keeps serving.

mod common;

use std::time::Duration;

use common::{Member, kubectl, kubectl_ok};
use serde_json::{Value, json};

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a"}},
        "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "img:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}]}})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "img:1", "ports": [{"containerPort": 80}]}]}})
}

/// (URL path, object) of each base kind.
fn bases() -> Vec<(&'static str, Value)> {
    vec![
        ("/api/v1/namespaces/default/pods", pod()),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/statefulsets",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"replicas": 1, "serviceName": "s", "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
        ),
        (
            "/apis/apps/v1/namespaces/default/daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
        ),
        (
            "/apis/batch/v1/namespaces/default/jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "img:1", "ports": [{"containerPort": 80}]}]}}}}),
        ),
        (
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
        (
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"app": "a"}}, "data": {"k": "v"}}),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "data": {"k": "dg=="}}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "role"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
    ]
}

/// A change to a base and what the error must mention.
struct Mutation {
    pointer: String,
    value: Option<Value>,
    expect: String,
}

fn m(pointer: &str, value: Option<Value>, expect: &str) -> Mutation {
    Mutation {
        pointer: pointer.into(),
        value,
        expect: expect.into(),
    }
}

/// Mutations that apply to any object.
fn common_mutations() -> Vec<Mutation> {
    vec![
        m("/metadata/name", Some(json!("Upper_Case")), "metadata.name"),
        m(
            "/metadata/name",
            Some(json!("-leading-dash")),
            "metadata.name",
        ),
        m(
            "/metadata/name",
            Some(json!("a".repeat(300))),
            "metadata.name",
        ),
        m("/metadata/name", Some(json!(42)), "metadata.name"),
        m("/metadata/name", None, "metadata.name"),
        m(
            "/metadata/labels",
            Some(json!(["not", "a", "map"])),
            "metadata.labels",
        ),
        m(
            "/metadata/labels",
            Some(json!({"app": "bad value!"})),
            "metadata.labels",
        ),
        m(
            "/metadata/labels",
            Some(json!({"bad key/with/slashes": "v"})),
            "metadata.labels",
        ),
        m(
            "/metadata/labels",
            Some(json!({"app": 5})),
            "metadata.labels",
        ),
        m(
            "/metadata/annotations",
            Some(json!({"a": ["x"]})),
            "metadata.annotations",
        ),
        m(
            "/metadata/finalizers",
            Some(json!("not-a-list")),
            "metadata.finalizers",
        ),
        m(
            "/metadata/bogus",
            Some(json!(1)),
            "unknown field \"metadata.bogus\"",
        ),
        m("/spexx", Some(json!({})), "unknown field \"spexx\""),
        m("/metadata", Some(json!("flat")), "metadata"),
    ]
}

fn pod_spec_mutations(prefix: &str, field: &str) -> Vec<Mutation> {
    let p = |s: &str| format!("{prefix}{s}");
    let f = |s: &str| format!("{field}{s}");
    vec![
        m(
            &p("/containers"),
            Some(json!([])),
            &f(".containers: Required value"),
        ),
        m(&p("/containers"), Some(json!("c")), &f(".containers")),
        m(
            &p("/containers/0/image"),
            None,
            &f(".containers[0].image: Required value"),
        ),
        m(
            &p("/containers/0/image"),
            Some(json!(7)),
            &f(".containers[0].image"),
        ),
        m(
            &p("/containers/0/name"),
            Some(json!("Bad Name")),
            &f(".containers[0].name"),
        ),
        m(&p("/containers/0/name"), None, &f(".containers[0].name")),
        m(
            &p("/containers/0/ports/0/containerPort"),
            Some(json!(0)),
            &f(".containers[0].ports[0].containerPort"),
        ),
        m(
            &p("/containers/0/ports/0/containerPort"),
            Some(json!(70000)),
            &f(".containers[0].ports[0].containerPort"),
        ),
        m(
            &p("/containers/0/ports/0/containerPort"),
            Some(json!("http")),
            &f(".containers[0].ports[0].containerPort"),
        ),
        m(
            &p("/containers/0/ports"),
            Some(json!({"containerPort": 80})),
            &f(".containers[0].ports"),
        ),
        m(
            &p("/containers/0/imagee"),
            Some(json!("x")),
            &format!("unknown field \"{}\"", f(".containers[0].imagee")),
        ),
        m(
            &p("/containers/0/resources"),
            Some(json!({"limits": {"cpu": [1]}})),
            &f(".containers[0].resources.limits"),
        ),
        m(
            &p("/containers/0/args"),
            Some(json!("not-a-list")),
            &f(".containers[0].args"),
        ),
        m(
            &p("/restartPolicy"),
            Some(json!("Sometimes")),
            &f(".restartPolicy"),
        ),
        m(
            &p("/terminationGracePeriodSeconds"),
            Some(json!("long")),
            &f(".terminationGracePeriodSeconds"),
        ),
        m(&p("/nodeSelector"), Some(json!(["x"])), &f(".nodeSelector")),
        m(
            &p("/volumes"),
            Some(json!([{"name": "v", "emptyDir": "x"}])),
            &f(".volumes[0].emptyDir"),
        ),
        m(
            &p("/containers/1"),
            Some(json!({"name": "c", "image": "i"})),
            &f(".containers[1].name"),
        ),
    ]
}

fn kind_mutations(kind: &str) -> Vec<Mutation> {
    match kind {
        "Pod" => pod_spec_mutations("/spec", "spec"),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            let mut v = pod_spec_mutations("/spec/template/spec", "spec.template.spec");
            v.push(m("/spec/selector", None, "spec.selector"));
            v.push(m(
                "/spec/template/metadata/labels",
                Some(json!({"app": "other"})),
                "spec.template.metadata.labels",
            ));
            v.push(m(
                "/spec/selector/matchLabels",
                Some(json!("app=a")),
                "spec.selector.matchLabels",
            ));
            if kind != "DaemonSet" {
                v.push(m("/spec/replicas", Some(json!(-1)), "spec.replicas"));
                v.push(m("/spec/replicas", Some(json!("three")), "spec.replicas"));
            }
            v
        }
        "Job" => {
            let mut v = pod_spec_mutations("/spec/template/spec", "spec.template.spec");
            v.retain(|x| !x.pointer.ends_with("restartPolicy"));
            v.push(m(
                "/spec/backoffLimit",
                Some(json!("six")),
                "spec.backoffLimit",
            ));
            v
        }
        "Service" => vec![
            m("/spec/ports", Some(json!([])), "spec.ports: Required value"),
            m("/spec/ports/0/port", Some(json!(0)), "spec.ports[0].port"),
            m(
                "/spec/ports/0/port",
                Some(json!(99999)),
                "spec.ports[0].port",
            ),
            m(
                "/spec/ports/0/port",
                Some(json!("eighty")),
                "spec.ports[0].port",
            ),
            m("/spec/type", Some(json!("Sideways")), "spec.type"),
            m("/spec/selector", Some(json!(["app"])), "spec.selector"),
            m(
                "/spec/clusterIP",
                Some(json!("192.168.1.1")),
                "spec.clusterIP",
            ),
        ],
        "ConfigMap" => vec![
            m("/data", Some(json!(["k"])), "data"),
            m("/data", Some(json!({"bad key!": "v"})), "data[bad key!]"),
            m("/data", Some(json!({"k": 1})), "data"),
            m(
                "/binaryData",
                Some(json!({"k": "not base64!!"})),
                "binaryData",
            ),
        ],
        "Secret" => vec![
            m("/data", Some(json!({"k": "%%%not-base64"})), "data"),
            m("/data", Some(json!({"bad/key": "dg=="})), "data[bad/key]"),
            m("/type", Some(json!(5)), "type"),
        ],
        "Role" => vec![
            m("/rules", Some(json!("all")), "rules"),
            m("/rules/0/verbs", Some(json!("get")), "rules[0].verbs"),
        ],
        _ => vec![],
    }
}

fn apply(obj: &mut Value, mu: &Mutation) {
    let (parent, last) = mu.pointer.rsplit_once('/').expect("pointer");
    let target = obj
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the object"));
    match (target, &mu.value) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.to_string(), v.clone());
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(list), Some(v)) => {
            let i: usize = last.parse().unwrap();
            if i < list.len() {
                list[i] = v.clone();
            } else {
                list.push(v.clone());
            }
        }
        (other, _) => panic!("cannot mutate {other} at {}", mu.pointer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_objects_get_4xx_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut member = Member::new(tmp.path(), "bad");
    member.start();
    member.wait_ready(Duration::from_secs(30)).await;
    member.wait_api(Duration::from_secs(30)).await;
    let dir = tmp.path().join("cases");
    std::fs::create_dir_all(&dir).unwrap();

    let mut count = 0;
    for (path, base) in bases() {
        let kind = base["kind"].as_str().unwrap().to_string();
        for mu in common_mutations().into_iter().chain(kind_mutations(&kind)) {
            let mut obj = base.clone();
            apply(&mut obj, &mu);
            let file = dir.join(format!("case-{count}.json"));
            std::fs::write(&file, serde_json::to_vec(&obj).unwrap()).unwrap();
            let url = format!("{path}?fieldValidation=Strict");
            let (ok, out, err) = kubectl(
                &member,
                &["create", "--raw", &url, "-f", file.to_str().unwrap()],
                None,
            );
            assert!(
                !ok,
                "{kind} with {} = {:?} was accepted: {out}",
                mu.pointer, mu.value
            );
            assert!(
                err.contains("(BadRequest)")
                    || err.contains("(Invalid)")
                    || err.contains("is invalid")
                    || err.contains("BadRequest")
                    || err.contains("Invalid value"),
                "{kind} {}: expected a 4xx, got: {err}",
                mu.pointer
            );
            assert!(
                !err.contains("InternalError") && !err.contains("(500)"),
                "{kind} {}: {err}",
                mu.pointer
            );
            assert!(
                err.contains(&mu.expect),
                "{kind} with {} = {:?}: error does not name {:?}:\n{err}",
                mu.pointer,
                mu.value,
                mu.expect
            );
            count += 1;
        }
    }
    // Bodies that are not objects at all.
    for (i, body) in [
        "",
        "{",
        "[]",
        "null",
        "\"pod\"",
        "{\"apiVersion\": \"v1\"}",
        "{\"kind\": \"Pod\", \"apiVersion\": \"apps/v1\", \"metadata\": {\"name\": \"x\"}}",
    ]
    .iter()
    .enumerate()
    {
        let file = dir.join(format!("raw-{i}.json"));
        std::fs::write(&file, body).unwrap();
        let (ok, _, err) = kubectl(
            &member,
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/pods",
                "-f",
                file.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            !ok && !err.contains("InternalError"),
            "body {body:?}: {err}"
        );
        count += 1;
    }
    assert!(count >= 200, "only {count} malformed cases");
    // Nothing was stored, and the server still answers.
    let pods = kubectl_ok(
        &member,
        &["get", "pods,deploy,svc,cm,secrets,jobs,roles", "-o", "name"],
        None,
    );
    assert!(
        !pods.contains("pod/p") && !pods.contains("deployment.apps/d"),
        "{pods}"
    );
}
