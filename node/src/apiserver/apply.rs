//! Server-side apply (`kubectl apply --server-side`, Flux, Argo CD): a
//! PATCH of `application/apply-patch+yaml` carrying a whole applied
//! configuration and a `fieldManager`.
//!
//! Each applier's fields are recorded in `metadata.managedFields` as a
//! FieldsV1 set (`f:<field>`, `k:{<merge key>}` for an item of a keyed
//! list, `v:<value>` for an item of a set, `.` for the item itself), as
//! Kubernetes records them. Applying again:
//!
//! - sets what the configuration has, merging keyed lists on their keys;
//! - removes what this manager applied before and no longer applies (the
//!   live object projected on the manager's old set is the "original" of a
//!   three-way merge, as client-side apply uses its annotation);
//! - refuses, with 409 Conflict naming each field, to change a value that
//!   another applier owns, unless `force=true`, which moves the field to
//!   this manager.
//!
//! Not done: ownership by non-apply writers (`Update` entries: kubectl
//! edit/scale, controllers), so conflicts arise between appliers only; and
//! the keyed lists use the strategic-merge keys (`containerPort` for ports,
//! where Kubernetes' list-map keys are `containerPort` + `protocol`).

use serde_json::{Map, Value, json};
use skiff_sdk::patch::meta::{PatchSchema, PatchStrategy};

/// Fields of an applied configuration that no manager owns: identity and
/// what the server sets.
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The FieldsV1 set of an applied configuration.
pub fn field_set(obj: &Value, schema: &dyn PatchSchema) -> Value {
    let Some(map) = obj.as_object() else {
        return json!({});
    };
    let mut set = Map::new();
    for (k, v) in map {
        if k == "apiVersion" || k == "kind" || k == "status" {
            continue;
        }
        if k == "metadata" {
            let meta_schema = schema.field("metadata").schema;
            let mut meta = Map::new();
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if !UNOWNED_METADATA.contains(&mk.as_str()) {
                    meta.insert(format!("f:{mk}"), value_set(mv, &meta_schema.field(mk)));
                }
            }
            if !meta.is_empty() {
                set.insert("f:metadata".into(), Value::Object(meta));
            }
            continue;
        }
        set.insert(format!("f:{k}"), value_set(v, &schema.field(k)));
    }
    Value::Object(set)
}

fn value_set(v: &Value, field: &skiff_sdk::patch::meta::FieldPatch<'_>) -> Value {
    match v {
        Value::Object(m) => {
            let mut set = Map::new();
            for (k, v) in m {
                set.insert(format!("f:{k}"), value_set(v, &field.schema.field(k)));
            }
            Value::Object(set)
        }
        Value::Array(items) if field.strategy == PatchStrategy::Merge => {
            let mut set = Map::new();
            for item in items {
                match (item, field.merge_key) {
                    (Value::Object(_), Some(key)) => {
                        let mut child = match value_set(item, &as_item(field)) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        child.insert(".".into(), json!({}));
                        set.insert(item_key(key, item), Value::Object(child));
                    }
                    (Value::Object(_), None) => return json!({}),
                    (primitive, _) => {
                        set.insert(format!("v:{primitive}"), json!({}));
                    }
                }
            }
            Value::Object(set)
        }
        // Atomic lists and scalars: owned whole.
        _ => json!({}),
    }
}

/// The field descriptor of one item of a list field: the same schema.
fn as_item<'a>(
    field: &skiff_sdk::patch::meta::FieldPatch<'a>,
) -> skiff_sdk::patch::meta::FieldPatch<'a> {
    skiff_sdk::patch::meta::FieldPatch {
        strategy: PatchStrategy::Default,
        retain_keys: false,
        merge_key: None,
        schema: field.schema,
    }
}

/// `k:{"name":"web"}` for an item of a list keyed on `name`.
fn item_key(key: &str, item: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), item[key].clone());
    format!("k:{}", Value::Object(m))
}

/// `live` restricted to the fields of `set`: what the manager applied, as
/// it stands now.
pub fn project(live: &Value, set: &Value, schema: &dyn PatchSchema) -> Value {
    let (Some(live), Some(set)) = (live.as_object(), set.as_object()) else {
        return json!({});
    };
    let mut out = Map::new();
    for (sk, child) in set {
        let Some(name) = sk.strip_prefix("f:") else {
            continue;
        };
        let Some(v) = live.get(name) else { continue };
        out.insert(
            name.to_string(),
            project_value(v, child, &schema.field(name)),
        );
    }
    Value::Object(out)
}

fn project_value(v: &Value, set: &Value, field: &skiff_sdk::patch::meta::FieldPatch<'_>) -> Value {
    let owned_whole = set.as_object().is_none_or(|s| s.is_empty());
    if owned_whole {
        return v.clone();
    }
    match v {
        Value::Object(_) => project(v, set, field.schema),
        Value::Array(items) => {
            let set = set.as_object().expect("checked above");
            items
                .iter()
                .filter_map(|item| match (item, field.merge_key) {
                    (Value::Object(_), Some(key)) => {
                        let child = set.get(&item_key(key, item))?;
                        let inner: Map<String, Value> = child
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| k.as_str() != ".")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        let mut p = project(item, &Value::Object(inner), field.schema);
                        // The key identifies the item: always kept.
                        p[key] = item[key].clone();
                        Some(p)
                    }
                    (primitive, _) => set
                        .contains_key(&format!("v:{primitive}"))
                        .then(|| primitive.clone()),
                })
                .collect()
        }
        other => other.clone(),
    }
}

/// The leaves of a set (fields owned whole), as paths of set keys.
pub fn leaves(set: &Value) -> Vec<Vec<String>> {
    fn walk(set: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(m) = set.as_object() else { return };
        if m.is_empty() {
            out.push(path.clone());
            return;
        }
        for (k, v) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            walk(v, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(set, &mut Vec::new(), &mut out);
    out
}

/// The value at a set path in an object (`None` when absent).
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for p in path {
        if let Some(name) = p.strip_prefix("f:") {
            cur = cur.get(name)?;
        } else if let Some(k) = p.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|item| want.iter().all(|(wk, wv)| item.get(wk) == Some(wv)))?;
        } else if let Some(v) = p.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|item| **item == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes one leaf path from a set, and the parents it leaves empty.
pub fn remove_leaf(set: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(m) = set.as_object_mut() else { return };
    if rest.is_empty() {
        m.remove(first);
        return;
    }
    if let Some(child) = m.get_mut(first) {
        remove_leaf(child, rest);
        let emptied = child
            .as_object()
            .is_some_and(|c| c.is_empty() || (c.len() == 1 && c.contains_key(".")));
        if emptied {
            m.remove(first);
        }
    }
}

/// How a set path reads in a conflict message: `.spec.replicas`,
/// `.spec.containers[name="web"].image`.
pub fn describe(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if let Some(name) = p.strip_prefix("f:") {
            s.push('.');
            s.push_str(name);
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = p.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// One applier's conflicts: paths of `new_set` that another Apply manager
/// owns in `managed`, whose applied value differs from the live one.
pub fn conflicts(
    manager: &str,
    managed: &[Value],
    new_set: &Value,
    applied: &Value,
    live: &Value,
) -> Vec<(String, Vec<String>)> {
    let mine = leaves(new_set);
    let mut out = Vec::new();
    for entry in managed {
        let other = entry["manager"].as_str().unwrap_or("");
        if other == manager || entry["operation"] != "Apply" {
            continue;
        }
        let theirs = leaves(&entry["fieldsV1"]);
        for path in &mine {
            if theirs.contains(path) && value_at(applied, path) != value_at(live, path) {
                out.push((other.to_string(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_sdk::patch::meta::for_kind;

    fn deploy_schema() -> &'static dyn PatchSchema {
        for_kind("apps/v1", "Deployment").unwrap()
    }

    #[test]
    fn sets_name_fields_keyed_items_and_set_items_as_kubernetes_does() {
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "args": ["-v"]}]}}}});
        let set = field_set(&applied, deploy_schema());
        assert_eq!(
            set,
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"a\"": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}}}}}
            })
        );
        let mut l = leaves(&set);
        l.sort();
        assert!(l.contains(&vec![
            "f:spec".into(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:image".into()
        ]));
        assert_eq!(
            describe(&l[l.len() - 1]),
            ".spec.template.spec.containers[name=\"web\"].name"
        );
    }

    #[test]
    fn the_live_object_projected_on_a_set_is_what_was_applied() {
        let live = json!({"metadata": {"name": "web", "labels": {"app": "web", "other": "x"}},
            "spec": {"replicas": 3, "paused": false, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "imagePullPolicy": "Always"},
                {"name": "side", "image": "side:1"}]}}}});
        let set = json!({"f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}});
        assert_eq!(
            project(&live, &set, deploy_schema()),
            json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [
                    {"name": "web", "image": "web:2"}]}}}})
        );
    }

    #[test]
    fn another_appliers_changed_field_conflicts_and_force_takes_it() {
        let live = json!({"spec": {"replicas": 3}});
        let applied = json!({"spec": {"replicas": 5}});
        let set = field_set(&applied, deploy_schema());
        let mut managed = vec![
            json!({"manager": "ci", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:paused": {}}}}),
            json!({"manager": "me", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}),
        ];
        let c = conflicts("me", &managed, &set, &applied, &live);
        assert_eq!(
            c,
            vec![("ci".to_string(), vec!["f:spec".into(), "f:replicas".into()])]
        );
        // The same value is shared ownership, not a conflict.
        assert!(conflicts("me", &managed, &set, &live, &live).is_empty());
        remove_leaf(&mut managed[0]["fieldsV1"], &c[0].1);
        assert_eq!(managed[0]["fieldsV1"], json!({"f:spec": {"f:paused": {}}}));
    }
}
