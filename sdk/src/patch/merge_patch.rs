//! JSON merge patch (RFC 7386), `application/merge-patch+json`.

use serde_json::{Map, Value};

/// Apply a JSON merge patch to `doc`.
///
/// An object patch merges into the document key by key, recursively; `null`
/// removes a key; anything else (a list, a scalar, a non-object document)
/// replaces the target whole. It cannot fail: every JSON value is a merge
/// patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let target = match doc {
                Value::Object(d) => d.clone(),
                _ => Map::new(),
            };
            Value::Object(merge_object(target, p))
        }
        other => other.clone(),
    }
}

fn merge_object(mut target: Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
            continue;
        }
        let merged = match (target.get_mut(key), value) {
            (Some(slot), Value::Object(p)) => match std::mem::take(slot) {
                Value::Object(t) => Value::Object(merge_object(t, p)),
                _ => Value::Object(merge_object(Map::new(), p)),
            },
            // A new object still has its nulls removed: "a": {"b": null}
            // adds an empty "a".
            (None, Value::Object(p)) => Value::Object(merge_object(Map::new(), p)),
            (_, other) => other.clone(),
        };
        target.insert(key.clone(), merged);
    }
    target
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_patch;

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn rfc7386_appendix_a() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
    }

    #[test]
    fn lists_are_replaced_not_merged() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "x"}]}});
        assert_eq!(
            merge_patch(&doc, &patch),
            json!({"spec": {"containers": [{"name": "b", "image": "x"}]}})
        );
    }
}
