//! JSON Patch (RFC 6902), `application/json-patch+json`, with JSON Pointers
//! (RFC 6901).
//!
//! The patch applies whole or not at all: the document is patched on a copy.
//! Where Kubernetes' library (evanphx/json-patch) is laxer than the RFC --
//! negative array indexes, `test` of a missing value against `null` -- this
//! follows the RFC.

use serde_json::Value;

/// A JSON patch that cannot be applied. Operations are numbered from 0, in
/// the order of the patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPatchError {
    #[error("json patch: the patch is not a JSON array of operations")]
    NotAnArray,
    /// The operation itself is not well formed (no `op`, a bad pointer, ...).
    #[error("json patch: operation {index}: {reason}")]
    Malformed { index: usize, reason: String },
    /// A well-formed operation that does not apply to the document.
    #[error("json patch: operation {index} ({op} {path:?}): {reason}")]
    Failed {
        index: usize,
        op: String,
        path: String,
        reason: String,
    },
    /// A `test` operation whose value differs from the document's.
    #[error("json patch: operation {index} (test {path:?}): the value does not match")]
    TestFailed { index: usize, path: String },
}

/// Apply the RFC 6902 `patch` (a JSON array of operations) to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, JsonPatchError> {
    let Value::Array(ops) = patch else {
        return Err(JsonPatchError::NotAnArray);
    };
    let mut doc = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        apply(&mut doc, index, op)?;
    }
    Ok(doc)
}

fn apply(doc: &mut Value, index: usize, op: &Value) -> Result<(), JsonPatchError> {
    let malformed = |reason: String| JsonPatchError::Malformed { index, reason };
    let Value::Object(fields) = op else {
        return Err(malformed("an operation must be a JSON object".into()));
    };
    let string_field = |name: &str| match fields.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(malformed(format!("{name:?} must be a string"))),
        None => Err(malformed(format!("missing {name:?}"))),
    };
    let name = string_field("op")?;
    let path_str = string_field("path")?;
    let path = parse_pointer(path_str).map_err(|e| malformed(format!("path {path_str:?}: {e}")))?;
    let value = || {
        fields
            .get("value")
            .cloned()
            .ok_or_else(|| malformed(format!("{name} needs a \"value\"")))
    };
    let from = || -> Result<(&str, Vec<String>), JsonPatchError> {
        let from_str = string_field("from")?;
        let from =
            parse_pointer(from_str).map_err(|e| malformed(format!("from {from_str:?}: {e}")))?;
        Ok((from_str, from))
    };
    let failed = |reason: String| JsonPatchError::Failed {
        index,
        op: name.to_owned(),
        path: path_str.to_owned(),
        reason,
    };

    match name {
        "add" => add(doc, &path, value()?).map_err(failed),
        "remove" => remove(doc, &path).map(drop).map_err(failed),
        "replace" => {
            let value = value()?;
            let target =
                get_mut(doc, &path).ok_or_else(|| failed("no value at the path".into()))?;
            *target = value;
            Ok(())
        }
        "move" => {
            let (from_str, from) = from()?;
            if from == path {
                return get_mut(doc, &from)
                    .map(drop)
                    .ok_or_else(|| failed(format!("no value at from {from_str:?}")));
            }
            if path.starts_with(&from) {
                return Err(failed(format!(
                    "cannot move {from_str:?} into one of its own children"
                )));
            }
            let moved =
                remove(doc, &from).map_err(|e| failed(format!("from {from_str:?}: {e}")))?;
            add(doc, &path, moved).map_err(failed)
        }
        "copy" => {
            let (from_str, from) = from()?;
            let copied = get_mut(doc, &from)
                .map(|v| v.clone())
                .ok_or_else(|| failed(format!("no value at from {from_str:?}")))?;
            add(doc, &path, copied).map_err(failed)
        }
        "test" => {
            let want = value()?;
            match get_mut(doc, &path) {
                Some(have) if json_eq(have, &want) => Ok(()),
                Some(_) => Err(JsonPatchError::TestFailed {
                    index,
                    path: path_str.to_owned(),
                }),
                None => Err(failed("no value at the path".into())),
            }
        }
        other => Err(malformed(format!(
            "unknown op {other:?} (want add, remove, replace, move, copy or test)"
        ))),
    }
}

/// Split a JSON Pointer into its unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer must be empty or start with \"/\"".into());
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "bad escape in {token:?}: \"~\" must be followed by 0 or 1"
                        ));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get_mut(token),
        Value::Array(a) => array_index(token).and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

fn render(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, init)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    let target = get_mut(doc, init).ok_or_else(|| format!("no value at {:?}", render(init)))?;
    match target {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) if last == "-" => {
            a.push(value);
            Ok(())
        }
        Value::Array(a) => match array_index(last) {
            Some(i) if i <= a.len() => {
                a.insert(i, value);
                Ok(())
            }
            Some(i) => Err(format!(
                "index {i} is out of bounds (the list has {} items)",
                a.len()
            )),
            None => Err(format!("{last:?} is not an array index")),
        },
        other => Err(format!("cannot add a member to {}", kind(other))),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, init)) = path.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    let target = get_mut(doc, init).ok_or_else(|| format!("no value at {:?}", render(init)))?;
    match target {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("no member {last:?}")),
        Value::Array(a) => match array_index(last) {
            Some(i) if i < a.len() => Ok(a.remove(i)),
            Some(i) => Err(format!(
                "index {i} is out of bounds (the list has {} items)",
                a.len()
            )),
            None => Err(format!("{last:?} is not an array index")),
        },
        other => Err(format!("cannot remove a member of {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// JSON equality: numbers by value (1 equals 1.0), objects regardless of
/// member order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{JsonPatchError, json_patch};

    fn apply(doc: Value, patch: Value) -> Result<Value, JsonPatchError> {
        json_patch(&doc, &patch)
    }

    /// Examples of RFC 6902, appendix A.
    #[test]
    fn rfc6902_examples() {
        assert_eq!(
            apply(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}])
            )
            .unwrap(),
            json!({"baz": "qux", "foo": "bar"})
        );
        assert_eq!(
            apply(
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}])
            )
            .unwrap(),
            json!({"foo": ["bar", "qux", "baz"]})
        );
        assert_eq!(
            apply(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}])
            )
            .unwrap(),
            json!({"foo": "bar"})
        );
        assert_eq!(
            apply(
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}])
            )
            .unwrap(),
            json!({"foo": ["bar", "baz"]})
        );
        assert_eq!(
            apply(
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}])
            )
            .unwrap(),
            json!({"baz": "boo", "foo": "bar"})
        );
        assert_eq!(
            apply(
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}])
            )
            .unwrap(),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}})
        );
        assert_eq!(
            apply(
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}])
            )
            .unwrap(),
            json!({"foo": ["all", "cows", "eat", "grass"]})
        );
        assert_eq!(
            apply(
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([
                    {"op": "test", "path": "/baz", "value": "qux"},
                    {"op": "test", "path": "/foo/1", "value": 2}
                ])
            )
            .unwrap(),
            json!({"baz": "qux", "foo": ["a", 2, "c"]})
        );
        assert_eq!(
            apply(
                json!({"baz": "qux"}),
                json!([{"op": "test", "path": "/baz", "value": "bar"}])
            ),
            Err(JsonPatchError::TestFailed {
                index: 0,
                path: "/baz".into()
            })
        );
        assert_eq!(
            apply(
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}])
            )
            .unwrap(),
            json!({"foo": "bar", "child": {"grandchild": {}}})
        );
        assert_eq!(
            apply(
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}])
            )
            .unwrap(),
            json!({"foo": ["bar", ["abc", "def"]]})
        );
        assert_eq!(
            apply(
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}])
            )
            .unwrap(),
            json!({"/": 9, "~1": 10})
        );
        assert_eq!(
            apply(
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": "10"}])
            ),
            Err(JsonPatchError::TestFailed {
                index: 0,
                path: "/~01".into()
            })
        );
    }

    #[test]
    fn missing_target_names_op_index_and_path() {
        let err = apply(
            json!({"foo": "bar"}),
            json!([
                {"op": "add", "path": "/a", "value": 1},
                {"op": "add", "path": "/baz/bat", "value": "qux"}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "json patch: operation 1 (add \"/baz/bat\"): no value at \"/baz\""
        );
        let err = apply(
            json!({"a": 1}),
            json!([{"op": "replace", "path": "/b", "value": 2}]),
        )
        .unwrap_err();
        assert!(
            matches!(err, JsonPatchError::Failed { index: 0, .. }),
            "{err}"
        );
        let err = apply(json!({"a": [1]}), json!([{"op": "remove", "path": "/a/1"}])).unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
    }

    #[test]
    fn escapes_and_indexes() {
        let doc =
            json!({"metadata": {"annotations": {"example.com/x": "1", "a~b": "2"}}, "l": [0, 1]});
        let out = apply(
            doc,
            json!([
                {"op": "remove", "path": "/metadata/annotations/example.com~1x"},
                {"op": "replace", "path": "/metadata/annotations/a~0b", "value": "3"},
                {"op": "add", "path": "/l/2", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {"a~b": "3"}}, "l": [0, 1, 2]})
        );
        for bad in ["/l/01", "/l/-1", "/l/x", "/l/3"] {
            assert!(
                apply(
                    json!({"l": [0, 1]}),
                    json!([{"op": "add", "path": bad, "value": 0}])
                )
                .is_err(),
                "{bad}"
            );
        }
        let err = apply(
            json!({}),
            json!([{"op": "add", "path": "/a~2", "value": 0}]),
        )
        .unwrap_err();
        assert!(
            matches!(err, JsonPatchError::Malformed { index: 0, .. }),
            "{err}"
        );
        let err = apply(json!({}), json!([{"op": "add", "path": "a", "value": 0}])).unwrap_err();
        assert!(matches!(err, JsonPatchError::Malformed { .. }), "{err}");
    }

    #[test]
    fn root_and_atomicity() {
        assert_eq!(
            apply(
                json!({"a": 1}),
                json!([{"op": "replace", "path": "", "value": [1]}])
            )
            .unwrap(),
            json!([1])
        );
        assert!(apply(json!({"a": 1}), json!([{"op": "remove", "path": ""}])).is_err());
        // The first op applied, the second failed: the caller's document is untouched.
        let doc = json!({"a": 1});
        assert!(
            json_patch(
                &doc,
                &json!([{"op": "remove", "path": "/a"}, {"op": "test", "path": "/a", "value": 1}])
            )
            .is_err()
        );
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn move_copy_and_malformed_ops() {
        assert_eq!(
            apply(
                json!({"a": {"b": 1}}),
                json!([{"op": "copy", "from": "/a", "path": "/c"}])
            )
            .unwrap(),
            json!({"a": {"b": 1}, "c": {"b": 1}})
        );
        let err = apply(
            json!({"a": {"b": 1}}),
            json!([{"op": "move", "from": "/a", "path": "/a/b/c"}]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("its own children"), "{err}");
        assert_eq!(
            apply(
                json!({"a": 1}),
                json!([{"op": "move", "from": "/a", "path": "/a"}])
            )
            .unwrap(),
            json!({"a": 1})
        );
        assert!(
            apply(
                json!({}),
                json!([{"op": "copy", "from": "/x", "path": "/y"}])
            )
            .is_err()
        );
        let err = apply(json!({}), json!([{"op": "frob", "path": "/a"}])).unwrap_err();
        assert!(err.to_string().contains("unknown op \"frob\""), "{err}");
        let err = apply(json!({}), json!([{"op": "add", "path": "/a"}])).unwrap_err();
        assert!(err.to_string().contains("needs a \"value\""), "{err}");
        assert_eq!(
            apply(json!({}), json!({"op": "add"})),
            Err(JsonPatchError::NotAnArray)
        );
        // null is a value, not a missing one.
        assert_eq!(
            apply(
                json!({}),
                json!([{"op": "add", "path": "/a", "value": null}])
            )
            .unwrap(),
            json!({"a": null})
        );
        assert!(
            apply(
                json!({"n": 1.0}),
                json!([{"op": "test", "path": "/n", "value": 1}])
            )
            .is_ok()
        );
    }
}
