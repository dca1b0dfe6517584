//! The patch client-side `kubectl apply` computes: a three-way diff of the
//! last applied configuration (`original`), the new configuration
//! (`modified`) and the live object (`current`), as
//! `strategicpatch.CreateThreeWayMergePatch` builds it.
//!
//! - A field of `modified` that differs from `current` is set (objects are
//!   walked; fields only the server has, such as defaults and status, are
//!   left alone).
//! - A field of `original` that `modified` no longer has is deleted (`null`),
//!   if the live object still has it: removing a line from a manifest
//!   removes the field, while fields that others set are kept.
//! - Lists with the `merge` strategy are diffed item by item on their merge
//!   key (new items whole, changed items as sub-patches, items dropped from
//!   the configuration as `$patch: delete`), with `$setElementOrder` giving
//!   the configuration's order; lists of primitives that merge use
//!   `$deleteFromPrimitiveList`. Other lists are replaced whole when they
//!   differ.
//!
//! With [`super::meta::OPAQUE`] as the schema the result is a JSON merge
//! patch (what kubectl sends for kinds it has no Go types for).
//!
//! An empty object means there is nothing to change: kubectl then reports
//! the object `unchanged`.
//!
//! ```
//! use serde_json::json;
//! use skiff_sdk::patch::{meta, three_way_patch};
//!
//! let last = json!({"metadata": {"name": "web", "labels": {"tier": "a"}}, "spec": {"replicas": 2}});
//! let new = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}});
//! let live = json!({"metadata": {"name": "web", "uid": "u1", "labels": {"tier": "a"}},
//!                   "spec": {"replicas": 2, "paused": false}});
//! let schema = meta::for_kind("apps/v1", "Deployment").unwrap();
//! let patch = three_way_patch(Some(&last), &new, &live, schema);
//! assert_eq!(patch, json!({"metadata": {"labels": null}, "spec": {"replicas": 3}}));
//! ```

use serde_json::{Map, Value};

use super::meta::{FieldPatch, PatchSchema, PatchStrategy};

/// The patch that takes `current` to `modified`, deleting what `original`
/// had and `modified` dropped. See the module docs.
pub fn three_way_patch(
    original: Option<&Value>,
    modified: &Value,
    current: &Value,
    schema: &dyn PatchSchema,
) -> Value {
    let empty = Map::new();
    match modified {
        Value::Object(m) => Value::Object(diff_map(
            original.and_then(Value::as_object),
            m,
            current.as_object().unwrap_or(&empty),
            schema,
            false,
        )),
        other => other.clone(),
    }
}

fn diff_map(
    o: Option<&Map<String, Value>>,
    m: &Map<String, Value>,
    c: &Map<String, Value>,
    schema: &dyn PatchSchema,
    retain_keys: bool,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, mv) in m {
        let field = schema.field(k);
        let ov = o.and_then(|o| o.get(k));
        match c.get(k) {
            None | Some(Value::Null) => {
                if !mv.is_null() {
                    patch.insert(k.clone(), mv.clone());
                }
            }
            Some(cv) => diff_field(k, ov, mv, cv, field, &mut patch),
        }
    }
    // `$retainKeys` clears what it does not list: no need to delete.
    if let Some(o) = o
        && !retain_keys
    {
        for k in o.keys() {
            if !m.contains_key(k) && c.get(k).is_some_and(|v| !v.is_null()) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    if retain_keys && !patch.is_empty() {
        let keys: Vec<Value> = m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| Value::String(k.clone()))
            .collect();
        patch.insert("$retainKeys".into(), Value::Array(keys));
    }
    patch
}

fn diff_field(
    k: &str,
    ov: Option<&Value>,
    mv: &Value,
    cv: &Value,
    field: FieldPatch<'_>,
    patch: &mut Map<String, Value>,
) {
    match (mv, cv) {
        (Value::Object(mm), Value::Object(cm)) if field.strategy != PatchStrategy::Replace => {
            let sub = diff_map(
                ov.and_then(Value::as_object),
                mm,
                cm,
                field.schema,
                field.retain_keys,
            );
            if !sub.is_empty() {
                patch.insert(k.to_string(), Value::Object(sub));
            }
        }
        (Value::Array(ml), Value::Array(cl)) if field.strategy == PatchStrategy::Merge => {
            let ol = ov.and_then(Value::as_array).map(Vec::as_slice);
            let objects = ml.iter().chain(cl).all(Value::is_object);
            let primitives = ml
                .iter()
                .chain(cl)
                .all(|v| !v.is_object() && !v.is_array() && !v.is_null());
            match field.merge_key {
                Some(key) if objects => diff_object_list(k, key, ol, ml, cl, field, patch),
                _ if primitives => diff_primitive_list(k, ol, ml, cl, patch),
                _ => {
                    if mv != cv {
                        patch.insert(k.to_string(), mv.clone());
                    }
                }
            }
        }
        _ => {
            if mv != cv {
                patch.insert(k.to_string(), mv.clone());
            }
        }
    }
}

fn diff_object_list(
    k: &str,
    key: &str,
    ol: Option<&[Value]>,
    ml: &[Value],
    cl: &[Value],
    field: FieldPatch<'_>,
    patch: &mut Map<String, Value>,
) {
    let find = |list: &[Value], id: &Value| -> Option<Value> {
        list.iter().find(|i| i.get(key) == Some(id)).cloned()
    };
    let mut items = Vec::new();
    for mi in ml {
        let Some(id) = mi.get(key) else {
            // An item without its merge key cannot be merged: send the list.
            patch.insert(k.to_string(), Value::Array(ml.to_vec()));
            return;
        };
        match find(cl, id) {
            None => items.push(mi.clone()),
            Some(ci) => {
                let oi = ol.and_then(|ol| find(ol, id));
                let empty = Map::new();
                let mut sub = diff_map(
                    oi.as_ref().and_then(Value::as_object),
                    mi.as_object().unwrap_or(&empty),
                    ci.as_object().unwrap_or(&empty),
                    field.schema,
                    field.retain_keys,
                );
                if !sub.is_empty() {
                    sub.insert(key.to_string(), id.clone());
                    items.push(Value::Object(sub));
                }
            }
        }
    }
    for oi in ol.unwrap_or_default() {
        let Some(id) = oi.get(key) else { continue };
        if find(ml, id).is_none() && find(cl, id).is_some() {
            let mut del = Map::new();
            del.insert(key.to_string(), id.clone());
            del.insert("$patch".into(), Value::String("delete".into()));
            items.push(Value::Object(del));
        }
    }
    if !items.is_empty() {
        patch.insert(k.to_string(), Value::Array(items));
        let order = ml
            .iter()
            .filter_map(|i| i.get(key))
            .map(|id| {
                let mut m = Map::new();
                m.insert(key.to_string(), id.clone());
                Value::Object(m)
            })
            .collect();
        patch.insert(format!("$setElementOrder/{k}"), Value::Array(order));
    }
}

fn diff_primitive_list(
    k: &str,
    ol: Option<&[Value]>,
    ml: &[Value],
    cl: &[Value],
    patch: &mut Map<String, Value>,
) {
    let added: Vec<Value> = ml.iter().filter(|v| !cl.contains(v)).cloned().collect();
    let removed: Vec<Value> = ol
        .unwrap_or_default()
        .iter()
        .filter(|v| !ml.contains(v) && cl.contains(v))
        .cloned()
        .collect();
    if added.is_empty() && removed.is_empty() {
        return;
    }
    if !added.is_empty() {
        patch.insert(k.to_string(), Value::Array(added));
    }
    if !removed.is_empty() {
        patch.insert(
            format!("$deleteFromPrimitiveList/{k}"),
            Value::Array(removed),
        );
    }
    patch.insert(format!("$setElementOrder/{k}"), Value::Array(ml.to_vec()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{meta, strategic_merge_patch};
    use serde_json::json;

    fn deployment(image: &str, env: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "env": env}]}}}
        })
    }

    /// What the server stores: defaults, status, server-set metadata.
    fn live(of: &Value) -> Value {
        let mut l = of.clone();
        l["metadata"]["uid"] = json!("u1");
        l["metadata"]["resourceVersion"] = json!("7");
        l["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}});
        let c = &mut l["spec"]["template"]["spec"]["containers"][0];
        c["imagePullPolicy"] = json!("IfNotPresent");
        c["terminationMessagePath"] = json!("/dev/termination-log");
        l["status"] = json!({"replicas": 2});
        l
    }

    #[test]
    fn the_same_configuration_is_an_empty_patch() {
        let schema = meta::for_kind("apps/v1", "Deployment").unwrap();
        let cfg = deployment("web:1", json!([{"name": "A", "value": "1"}]));
        let patch = three_way_patch(Some(&cfg), &cfg, &live(&cfg), schema);
        assert_eq!(patch, json!({}));
    }

    #[test]
    fn changed_items_are_patched_on_their_merge_key() {
        let schema = meta::for_kind("apps/v1", "Deployment").unwrap();
        let old = deployment(
            "web:1",
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
        );
        let new = deployment(
            "web:2",
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}]),
        );
        let current = live(&old);
        let patch = three_way_patch(Some(&old), &new, &current, schema);
        assert_eq!(
            patch,
            json!({"spec": {"template": {"spec": {
                "containers": [{"name": "web", "image": "web:2",
                    "env": [{"name": "C", "value": "3"}, {"name": "B", "$patch": "delete"}],
                    "$setElementOrder/env": [{"name": "C"}, {"name": "A"}]}],
                "$setElementOrder/containers": [{"name": "web"}]}}}})
        );
        // Applied, the live object has the new configuration and keeps the
        // server's defaults.
        let applied = strategic_merge_patch(&current, &patch, schema).unwrap();
        let c = &applied["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "web:2");
        assert_eq!(
            c["env"],
            json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}])
        );
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            three_way_patch(Some(&new), &new, &applied, schema),
            json!({})
        );
    }

    #[test]
    fn fields_set_by_others_survive_and_dropped_ones_go() {
        let schema = meta::for_kind("v1", "ConfigMap").unwrap();
        let old =
            json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
        let new = json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}});
        let mut current = old.clone();
        current["metadata"]["labels"]["other"] = json!("kept");
        let patch = three_way_patch(Some(&old), &new, &current, schema);
        assert_eq!(patch, json!({"data": {"y": null}}));
        // Without a last-applied configuration nothing is deleted.
        assert_eq!(three_way_patch(None, &new, &current, schema), json!({}));
    }

    #[test]
    fn opaque_lists_are_replaced_and_primitive_sets_merge() {
        let old = json!({"spec": {"items": [1, 2]}});
        let new = json!({"spec": {"items": [1, 3]}});
        assert_eq!(
            three_way_patch(Some(&old), &new, &old, &meta::OPAQUE),
            json!({"spec": {"items": [1, 3]}})
        );
        let schema = meta::for_kind("v1", "Pod").unwrap();
        let old = json!({"metadata": {"finalizers": ["a", "b"]}});
        let new = json!({"metadata": {"finalizers": ["a", "c"]}});
        let patch = three_way_patch(Some(&old), &new, &old, schema);
        assert_eq!(
            patch,
            json!({"metadata": {"finalizers": ["c"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "$setElementOrder/finalizers": ["a", "c"]}})
        );
        let applied = strategic_merge_patch(&old, &patch, schema).unwrap();
        assert_eq!(applied["metadata"]["finalizers"], json!(["a", "c"]));
    }
}
