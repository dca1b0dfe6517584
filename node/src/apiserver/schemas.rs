//! The OpenAPI v3 schemas of the kinds skiff serves, for the
//! `components.schemas` of `/openapi/v3/...` documents: what `kubectl
//! explain` reads (it finds a kind's schema by its
//! `x-kubernetes-group-version-kind` and follows `$ref`s down the field
//! path).
//!
//! The schemas, descriptions included, come from `k8s-openapi` (generated
//! from Kubernetes' own OpenAPI), through `schemars` with OpenAPI 3
//! settings, so references read `#/components/schemas/io.k8s.api...` as
//! Kubernetes' do. Kubernetes also marks the fields that strategic merge
//! patch treats specially (`x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`); those come from skiff's own table
//! ([`skiff_sdk::patch::meta`]), the one the server applies patches with.
//!
//! Documents carry only the schemas their kinds reach. kubectl builds apply
//! patches from these schemas only for kinds whose `PATCH` operation lists
//! the strategic-merge-patch body type, which skiff's do not: kubectl keeps
//! using its compiled-in patch metadata, as before.

use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use skiff_sdk::patch::meta::{self, PatchStrategy, TypeMeta};

/// One served kind: its group, version, kind and schema name.
struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    name: String,
}

fn add<T: JsonSchema + k8s_openapi::Resource>(g: &mut SchemaGenerator, kinds: &mut Vec<Kind>) {
    g.subschema_for::<T>();
    kinds.push(Kind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        name: T::schema_name().into_owned(),
    });
}

/// Every served kind's schema and what it references, by name; built once.
static ALL: LazyLock<(Map<String, Value>, Vec<Kind>)> = LazyLock::new(build);

fn build() -> (Map<String, Value>, Vec<Kind>) {
    use k8s_openapi::api::{
        apps, batch, coordination, core, discovery, networking, node, policy, rbac, scheduling,
    };
    let mut g = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    let k = &mut kinds;
    add::<core::v1::Namespace>(&mut g, k);
    add::<core::v1::Pod>(&mut g, k);
    add::<core::v1::Service>(&mut g, k);
    add::<core::v1::Endpoints>(&mut g, k);
    add::<core::v1::ConfigMap>(&mut g, k);
    add::<core::v1::Secret>(&mut g, k);
    add::<core::v1::ServiceAccount>(&mut g, k);
    add::<core::v1::Node>(&mut g, k);
    add::<core::v1::Event>(&mut g, k);
    add::<core::v1::PersistentVolumeClaim>(&mut g, k);
    add::<core::v1::PersistentVolume>(&mut g, k);
    add::<k8s_openapi::api::storage::v1::StorageClass>(&mut g, k);
    add::<apps::v1::Deployment>(&mut g, k);
    add::<apps::v1::ReplicaSet>(&mut g, k);
    add::<apps::v1::DaemonSet>(&mut g, k);
    add::<apps::v1::StatefulSet>(&mut g, k);
    add::<apps::v1::ControllerRevision>(&mut g, k);
    add::<batch::v1::Job>(&mut g, k);
    add::<batch::v1::CronJob>(&mut g, k);
    add::<networking::v1::Ingress>(&mut g, k);
    add::<networking::v1::IngressClass>(&mut g, k);
    add::<discovery::v1::EndpointSlice>(&mut g, k);
    add::<rbac::v1::Role>(&mut g, k);
    add::<rbac::v1::RoleBinding>(&mut g, k);
    add::<rbac::v1::ClusterRole>(&mut g, k);
    add::<rbac::v1::ClusterRoleBinding>(&mut g, k);
    add::<coordination::v1::Lease>(&mut g, k);
    add::<node::v1::RuntimeClass>(&mut g, k);
    add::<policy::v1::PodDisruptionBudget>(&mut g, k);
    add::<scheduling::v1::PriorityClass>(&mut g, k);
    let mut defs = g.take_definitions(true);
    for k in &kinds {
        if let Some(Value::Object(s)) = defs.get_mut(&k.name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": k.group, "version": k.version, "kind": k.kind}]),
            );
        }
        let api_version = if k.group.is_empty() {
            k.version.to_string()
        } else {
            format!("{}/{}", k.group, k.version)
        };
        if let Some(m) = meta::for_kind(&api_version, k.kind) {
            annotate(&mut defs, &k.name, m, &mut HashSet::new());
        }
    }
    (defs, kinds)
}

const PREFIX: &str = "#/components/schemas/";

/// The component a property refers to: directly, through `allOf`, or as
/// the items of a list or the values of a map.
fn referenced(prop: &Value) -> Option<String> {
    let direct = |v: &Value| {
        v["$ref"]
            .as_str()
            .or_else(|| v["allOf"][0]["$ref"].as_str())
            .map(str::to_string)
    };
    direct(prop)
        .or_else(|| direct(&prop["items"]))
        .or_else(|| direct(&prop["additionalProperties"]))
        .and_then(|r| r.strip_prefix(PREFIX).map(str::to_string))
}

/// Marks the fields of component `name` that `meta` gives a patch strategy,
/// and walks on into the types they lead to.
fn annotate(
    defs: &mut Map<String, Value>,
    name: &str,
    meta: &'static TypeMeta,
    seen: &mut HashSet<(String, &'static str)>,
) {
    if !seen.insert((name.to_string(), meta.name)) {
        return;
    }
    let mut next = Vec::new();
    if let Some(Value::Object(props)) = defs.get_mut(name).map(|d| &mut d["properties"]) {
        for f in meta.fields {
            let Some(Value::Object(prop)) = props.get_mut(f.name) else {
                continue;
            };
            let mut strategy: Vec<&str> = match f.strategy {
                PatchStrategy::Merge => vec!["merge"],
                PatchStrategy::Replace => vec!["replace"],
                PatchStrategy::Default => vec![],
            };
            if f.retain_keys {
                strategy.push("retainKeys");
            }
            if !strategy.is_empty() {
                prop.insert(
                    "x-kubernetes-patch-strategy".into(),
                    json!(strategy.join(",")),
                );
            }
            if let Some(key) = f.merge_key {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
            if let (Some(ty), Some(target)) = (f.ty, referenced(&Value::Object(prop.clone()))) {
                next.push((target, ty));
            }
        }
    }
    for (target, ty) in next {
        annotate(defs, &target, ty, seen);
    }
}

/// The components of the document of `group`/`version`: its kinds'
/// schemas and every schema they reach.
pub fn components(group: &str, version: &str) -> Map<String, Value> {
    let (defs, kinds) = &*ALL;
    let mut todo: Vec<String> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| k.name.clone())
        .collect();
    let mut reached = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !reached.insert(name.clone()) {
            continue;
        }
        if let Some(d) = defs.get(&name) {
            refs(d, &mut todo);
        }
    }
    reached
        .into_iter()
        .filter_map(|n| defs.get(&n).map(|d| (n, d.clone())))
        .collect()
}

/// Every component `v` refers to.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(PREFIX))
            {
                out.push(r.to_string());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_their_gvk_descriptions_and_patch_strategies() {
        let apps = components("apps", "v1");
        let d = &apps["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(
            d["description"]
                .as_str()
                .unwrap()
                .contains("declarative updates")
        );
        assert_eq!(
            referenced(&d["properties"]["spec"]).as_deref(),
            Some("io.k8s.api.apps.v1.DeploymentSpec")
        );
        // A Deployment reaches the pod template, whose containers merge by
        // name, as kube-apiserver's document says.
        let pod_spec = &apps["io.k8s.api.core.v1.PodSpec"];
        let containers = &pod_spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            pod_spec["properties"]["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        // Every reference resolves inside the document.
        let mut all = Vec::new();
        for d in apps.values() {
            refs(d, &mut all);
        }
        for r in all {
            assert!(apps.contains_key(&r), "{r} is referenced but missing");
        }
        // The core group has Pods but not Deployments.
        let core = components("", "v1");
        assert!(core.contains_key("io.k8s.api.core.v1.Pod"));
        assert!(!core.contains_key("io.k8s.api.apps.v1.Deployment"));
        assert!(components("nope", "v1").is_empty());
    }
}
