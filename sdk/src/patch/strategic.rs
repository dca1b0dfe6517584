//! Strategic merge patch, as the Kubernetes API server applies it
//! (`k8s.io/apimachinery/pkg/util/strategicpatch`, `StrategicMergeMapPatch`).
//!
//! A strategic merge patch is a JSON merge patch whose lists can merge: a list
//! field tagged `patchStrategy:"merge"` merges item by item on its merge key
//! (or as a set, for primitives), and the patch can carry directives:
//!
//! - `"$patch": "replace"` in an object replaces the object instead of merging
//!   it; as an item of a merging list, it replaces the list by the patch's
//!   other items.
//! - `"$patch": "delete"` in an object empties it; as an item of a merging list
//!   (`{"name": "x", "$patch": "delete"}`), it removes the items with that key.
//! - `"$retainKeys": [..]` clears the fields of the object not listed.
//! - `"$setElementOrder/<list>": [..]` gives the order of a merged list.
//! - `"$deleteFromPrimitiveList/<list>": [..]` removes values from a merging
//!   list of primitives.
//! - `null` deletes a field.
//!
//! Order follows Kubernetes: with `$setElementOrder` the listed items come in
//! that order, with items only the server has kept near their old neighbours;
//! without it, items the patch mentions keep the patch's order, and an item
//! that is new to the list is placed *before* the first server-only item it
//! cannot be ordered against (that is, at the front when it is the only change)
//! -- this is what the Go code does, and kubectl always sends
//! `$setElementOrder` to make the order it wants explicit.
//!
//! Where this walker departs from the Go code, it is to keep directives and
//! nulls out of stored objects: a value that is taken from the patch whole (a
//! new field, a replaced list) has its nested directives applied against an
//! empty original, where Go copies it raw and relies on the typed decoding
//! that follows to drop what it does not know. For the patches kubectl sends
//! the results are the same.

use std::fmt;

use serde_json::{Map, Value};

use super::meta::{FieldPatch, PatchSchema, PatchStrategy};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// A strategic merge patch that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strategic merge patch: {path}: {kind}")]
pub struct SmpError {
    /// Where in the patch the problem is: field names joined by `.`, and
    /// `[i]` for the i-th item of a list *in the patch*; `<root>` for the
    /// patch itself.
    pub path: String,
    pub kind: SmpErrorKind,
}

/// What was wrong; see [`SmpError`] for where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmpErrorKind {
    #[error("the original document is not a JSON object")]
    DocumentNotObject,
    #[error("the patch is not a JSON object")]
    PatchNotObject,
    #[error("unknown patch type {0} (want \"replace\" or \"delete\")")]
    UnknownPatchType(String),
    #[error("merging lists cannot yet be specified in the patch ($patch: merge)")]
    MergeDirectiveInList,
    #[error("unknown patch directive {0:?}")]
    UnknownDirective(String),
    #[error("{0:?} must be followed by \"/\" and a field name")]
    MalformedDirective(String),
    #[error("{0} must be a list")]
    DirectiveNotList(&'static str),
    #[error("list item has no {0:?}, the list's merge key")]
    MissingMergeKey(String),
    #[error("list items must be objects to merge on key {0:?}")]
    ItemNotObject(String),
    #[error("cannot merge a list of objects that has no merge key")]
    NoMergeKey,
    #[error("list element types are not identical")]
    MixedListTypes,
    #[error("lists of lists cannot be merged")]
    ListOfLists,
    #[error("a merging list cannot hold null")]
    NullInList,
    #[error("expected a list, found {0}")]
    NotAList(&'static str),
    #[error("field {0:?} is in the patch but not in $retainKeys")]
    NotInRetainKeys(String),
    #[error("the order of the patch list does not match $setElementOrder")]
    OrderMismatch,
    #[error("$deleteFromPrimitiveList applies to lists of primitives, not objects")]
    DeleteFromObjectList,
}

type Result<T> = std::result::Result<T, SmpError>;

/// Apply a strategic merge patch to `original`, walking both with `schema`
/// (see [`super::meta::for_kind`]).
///
/// Both must be JSON objects, as Kubernetes objects are.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: &dyn PatchSchema,
) -> Result<Value> {
    let Value::Object(original) = original else {
        return Err(error(Path::Root, SmpErrorKind::DocumentNotObject));
    };
    let Value::Object(patch) = patch else {
        return Err(error(Path::Root, SmpErrorKind::PatchNotObject));
    };
    merge_map(original.clone(), patch.clone(), schema, Path::Root).map(Value::Object)
}

/// A position in the patch, built on the stack as the walk descends and
/// rendered only for an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, k: &'a str) -> Path<'a> {
        Path::Key(self, k)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("<root>"),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(parent, k) => write!(f, "{parent}.{k}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn error(path: Path<'_>, kind: SmpErrorKind) -> SmpError {
    SmpError {
        path: path.to_string(),
        kind,
    }
}

/// Merge `patch` into `original` (Go's `mergeMap`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: &dyn PatchSchema,
    path: Path<'_>,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            // The patch, less the directive, is the new object.
            Some("replace") => merge_map(Map::new(), patch, schema, path),
            Some("delete") => Ok(Map::new()),
            _ => Err(error(
                path.key(DIRECTIVE),
                SmpErrorKind::UnknownPatchType(directive.to_string()),
            )),
        };
    }
    check_directive_keys(&patch, path)?;

    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        apply_retain_keys(&mut original, &patch, retain, path)?;
    }

    // `$setElementOrder/<field>` takes `<field>` out of the patch with it: the
    // list is merged and ordered in one step.
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in order_keys {
        let order = patch.remove(&key).unwrap_or(Value::Null);
        let field = &key[SET_ELEMENT_ORDER.len() + 1..];
        set_element_order(&mut original, &mut patch, field, order, schema, path, &key)?;
    }

    // Deletions from primitive lists go last, so that a value both added and
    // deleted ends up deleted (Go leaves that to map iteration order).
    let mut deletions = Vec::new();
    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            deletions.push((key, value));
            continue;
        }
        merge_field(&mut original, &key, value, schema, path)?;
    }
    for (key, value) in deletions {
        let field = &key[DELETE_FROM_PRIMITIVE_LIST.len() + 1..];
        delete_from_primitive_list(&mut original, field, value, path.key(&key))?;
    }
    Ok(original)
}

/// Every `$`-key of a patch object is a directive, and must be a known one.
fn check_directive_keys(patch: &Map<String, Value>, path: Path<'_>) -> Result<()> {
    for key in patch.keys().filter(|k| k.starts_with('$')) {
        if key == RETAIN_KEYS {
            continue;
        }
        // JSON Schema keywords in a CRD's openAPIV3Schema are data.
        if key == "$ref" || key == "$schema" {
            continue;
        }
        for prefix in [SET_ELEMENT_ORDER, DELETE_FROM_PRIMITIVE_LIST] {
            if let Some(rest) = key.strip_prefix(prefix)
                && (rest.len() < 2 || !rest.starts_with('/'))
            {
                return Err(error(
                    path.key(key),
                    SmpErrorKind::MalformedDirective(prefix.to_owned()),
                ));
            }
        }
        if !key.starts_with(SET_ELEMENT_ORDER) && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            return Err(error(
                path.key(key),
                SmpErrorKind::UnknownDirective(key.clone()),
            ));
        }
    }
    Ok(())
}

/// `$retainKeys`: every non-null field of the patch must be listed, and the
/// original keeps only listed fields.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: Value,
    path: Path<'_>,
) -> Result<()> {
    let Value::Array(retain) = retain else {
        return Err(error(
            path.key(RETAIN_KEYS),
            SmpErrorKind::DirectiveNotList(RETAIN_KEYS),
        ));
    };
    let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (key, value) in patch {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(key) {
            return Err(error(
                path.key(RETAIN_KEYS),
                SmpErrorKind::NotInRetainKeys(key.clone()),
            ));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Merge one field of the patch into the original.
fn merge_field(
    original: &mut Map<String, Value>,
    key: &str,
    value: Value,
    schema: &dyn PatchSchema,
    parent: Path<'_>,
) -> Result<()> {
    let path = parent.key(key);
    if value.is_null() {
        original.remove(key);
        return Ok(());
    }
    let field = schema.field(key);
    let Some(slot) = original.get_mut(key) else {
        if let Some(v) = materialize(value, &field, path)? {
            original.insert(key.to_owned(), v);
        }
        return Ok(());
    };
    let merged = match (std::mem::take(slot), value) {
        (Value::Object(o), Value::Object(p)) if field.strategy != PatchStrategy::Replace => {
            Some(Value::Object(merge_map(o, p, field.schema, path)?))
        }
        (Value::Array(o), Value::Array(p)) => {
            Some(Value::Array(merge_list_field(o, p, &field, path)?))
        }
        // Scalars, a changed type, a replace strategy: the patch's value wins.
        (_, p) => materialize(p, &field, path)?,
    };
    match merged {
        Some(v) => *slot = v,
        None => {
            original.remove(key);
        }
    }
    Ok(())
}

/// Merge two lists as the field's strategy says (Go's `mergeSliceHandler`).
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: &FieldPatch<'_>,
    path: Path<'_>,
) -> Result<Vec<Value>> {
    if field.strategy == PatchStrategy::Merge {
        merge_list(original, patch, field.merge_key, field.schema, path)
    } else {
        materialize_list(patch, field.schema, path)
    }
}

/// A patch value that is taken whole (there is nothing to merge it into): its
/// directives are applied against nothing. `None` when the value deletes
/// itself (`{"$patch": "delete"}`).
fn materialize(value: Value, field: &FieldPatch<'_>, path: Path<'_>) -> Result<Option<Value>> {
    match value {
        Value::Object(m) => {
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return Ok(None);
            }
            Ok(Some(Value::Object(merge_map(
                Map::new(),
                m,
                field.schema,
                path,
            )?)))
        }
        Value::Array(items) => Ok(Some(Value::Array(materialize_list(
            items,
            field.schema,
            path,
        )?))),
        other => Ok(Some(other)),
    }
}

/// A list taken whole: items carrying `$patch` are dropped, as apimachinery's
/// `removeDirectives` does, and the rest materialized.
fn materialize_list(
    items: Vec<Value>,
    schema: &dyn PatchSchema,
    path: Path<'_>,
) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(m) if m.contains_key(DIRECTIVE) => {}
            Value::Object(m) => out.push(Value::Object(merge_map(
                Map::new(),
                m,
                schema,
                path.index(i),
            )?)),
            Value::Array(inner) => out.push(Value::Array(materialize_list(
                inner,
                schema,
                path.index(i),
            )?)),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The kind of the items of a list, as Go's `sliceElementType` tells them
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Object,
    String,
    Number,
    Bool,
}

/// The one kind shared by all items of `lists`; `None` if they are empty.
fn item_kind(lists: [&[Value]; 2], path: Path<'_>) -> Result<Option<ItemKind>> {
    let mut kind = None;
    for item in lists.into_iter().flatten() {
        let k = match item {
            Value::Object(_) => ItemKind::Object,
            Value::String(_) => ItemKind::String,
            Value::Number(_) => ItemKind::Number,
            Value::Bool(_) => ItemKind::Bool,
            Value::Array(_) => return Err(error(path, SmpErrorKind::ListOfLists)),
            Value::Null => return Err(error(path, SmpErrorKind::NullInList)),
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => return Err(error(path, SmpErrorKind::MixedListTypes)),
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Equality as Go's `==` on decoded JSON: numbers are all float64.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// What identifies a list item for ordering: its merge key's value, or the
/// item itself for primitives. A missing merge key reads as null, as Go's nil.
fn order_key(item: &Value, merge_key: Option<&str>) -> Value {
    match merge_key {
        Some(k) => item.get(k).cloned().unwrap_or(Value::Null),
        None => item.clone(),
    }
}

fn position(keys: &[Value], key: &Value) -> Option<usize> {
    keys.iter().position(|k| scalar_eq(k, key))
}

/// Merge two lists under the `merge` strategy (Go's `mergeSlice`).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: Option<&str>,
    schema: &dyn PatchSchema,
    path: Path<'_>,
) -> Result<Vec<Value>> {
    let Some(kind) = item_kind([&original, &patch], path)? else {
        return Ok(original);
    };
    if kind != ItemKind::Object {
        // A set union: the original's values, then the patch's new ones, each
        // once.
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.iter().any(|m| scalar_eq(m, v)) {
                merged.push(v.clone());
            }
        }
        return Ok(order_keyed(merged, &patch, &original, None));
    }
    let Some(merge_key) = merge_key else {
        return Err(error(path, SmpErrorKind::NoMergeKey));
    };

    // Deletions and replacement first (Go's `mergeSliceWithSpecialElements`).
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for (i, item) in patch.into_iter().enumerate() {
        let Value::Object(item) = item else {
            unreachable!("item_kind found only objects");
        };
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push((i, item));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(key) = item.get(merge_key) else {
                    return Err(error(
                        path.index(i),
                        SmpErrorKind::MissingMergeKey(merge_key.to_owned()),
                    ));
                };
                original.retain(|o| !o.get(merge_key).is_some_and(|k| scalar_eq(k, key)));
            }
            // Keep going: the other directives must still be dropped.
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(error(path.index(i), SmpErrorKind::MergeDirectiveInList));
            }
            _ => {
                return Err(error(
                    path.index(i).key(DIRECTIVE),
                    SmpErrorKind::UnknownPatchType(directive.to_string()),
                ));
            }
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for (i, item) in plain {
            if !item.contains_key(merge_key) {
                return Err(error(
                    path.index(i),
                    SmpErrorKind::MissingMergeKey(merge_key.to_owned()),
                ));
            }
            out.push(Value::Object(merge_map(
                Map::new(),
                item,
                schema,
                path.index(i),
            )?));
        }
        return Ok(out);
    }

    // Every item of the list must be identifiable by its key.
    if original.iter().any(|o| o.get(merge_key).is_none()) {
        return Err(error(
            path,
            SmpErrorKind::MissingMergeKey(merge_key.to_owned()),
        ));
    }
    let server_order: Vec<Value> = original
        .iter()
        .map(|o| order_key(o, Some(merge_key)))
        .collect();
    let mut patch_order = Vec::with_capacity(plain.len());
    let mut merged = original;
    for (i, item) in plain {
        let Some(key) = item.get(merge_key).cloned() else {
            return Err(error(
                path.index(i),
                SmpErrorKind::MissingMergeKey(merge_key.to_owned()),
            ));
        };
        let at = merged
            .iter()
            .position(|o| o.get(merge_key).is_some_and(|k| scalar_eq(k, &key)));
        match at {
            Some(at) => {
                let Value::Object(o) = std::mem::take(&mut merged[at]) else {
                    unreachable!("item_kind found only objects");
                };
                merged[at] = Value::Object(merge_map(o, item, schema, path.index(i))?);
            }
            None => merged.push(Value::Object(merge_map(
                Map::new(),
                item,
                schema,
                path.index(i),
            )?)),
        }
        patch_order.push(key);
    }
    Ok(order_keyed(
        merged,
        &patch_order,
        &server_order,
        Some(merge_key),
    ))
}

/// Order a merged list as Go's `normalizeElementOrder` does: the items named in
/// `patch_order` in that order, the others (server-only) in `server_order`'s,
/// and the two interleaved by their positions in `server_order`, a patch item
/// going first whenever the two cannot be compared.
fn order_keyed(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| position(patch_order, &order_key(v, merge_key)).is_some());
    let rank = |order: &[Value], v: &Value| {
        position(order, &order_key(v, merge_key)).unwrap_or(usize::MAX)
    };
    from_patch.sort_by_key(|v| rank(patch_order, v));
    server_only.sort_by_key(|v| rank(server_order, v));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let (li, ri) = (
                    position(server_order, &order_key(l, merge_key)),
                    position(server_order, &order_key(r, merge_key)),
                );
                matches!((li, ri), (Some(li), Some(ri)) if li < ri)
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// `$setElementOrder/<field>`: merge `<field>` and put its items in the given
/// order (Go's `mergePatchIntoOriginal`).
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: Value,
    schema: &dyn PatchSchema,
    parent: Path<'_>,
    directive_key: &str,
) -> Result<()> {
    let directive_path = parent.key(directive_key);
    let list_path = parent.key(field);
    let Value::Array(order) = order else {
        return Err(error(
            directive_path,
            SmpErrorKind::DirectiveNotList(SET_ELEMENT_ORDER),
        ));
    };
    let meta = schema.field(field);
    let original_list = match original.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(other) => return Err(error(list_path, SmpErrorKind::NotAList(type_name(other)))),
    };
    let patch_list = match patch.remove(field) {
        None => None,
        Some(Value::Array(a)) => Some(a),
        Some(other) => return Err(error(list_path, SmpErrorKind::NotAList(type_name(&other)))),
    };
    let kind = item_kind(
        [
            original_list.as_deref().unwrap_or_default(),
            patch_list.as_deref().unwrap_or_default(),
        ],
        list_path,
    )?;
    // Items are told apart by merge key only in lists of objects.
    let merge_key = meta.merge_key.filter(|_| kind == Some(ItemKind::Object));
    validate_order(
        patch_list.as_deref().unwrap_or_default(),
        &order,
        merge_key,
        list_path,
        directive_path,
    )?;

    let server_order: Vec<Value> = original_list
        .iter()
        .flatten()
        .map(|v| order_key(v, merge_key))
        .collect();
    let merged = match (original_list, patch_list) {
        (Some(o), None) => o,
        (None, Some(p)) => materialize_list(p, meta.schema, list_path)?,
        (Some(o), Some(p)) => merge_list_field(o, p, &meta, list_path)?,
        (None, None) => return Ok(()),
    };
    if let Some(k) = merge_key
        && merged.iter().any(|v| v.get(k).is_none())
    {
        return Err(error(
            list_path,
            SmpErrorKind::MissingMergeKey(k.to_owned()),
        ));
    }
    let order_keys: Vec<Value> = order.iter().map(|v| order_key(v, merge_key)).collect();
    let ordered = order_keyed(merged, &order_keys, &server_order, merge_key);
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(())
}

/// The patch's items (less deletions and directives) must appear in
/// `$setElementOrder`, in the same relative order (Go's
/// `validatePatchWithSetOrderList`).
fn validate_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    list_path: Path<'_>,
    directive_path: Path<'_>,
) -> Result<()> {
    if let Some(k) = merge_key {
        for (i, item) in order.iter().enumerate() {
            match item {
                Value::Object(m) if m.contains_key(k) => {}
                Value::Object(_) => {
                    return Err(error(
                        directive_path.index(i),
                        SmpErrorKind::MissingMergeKey(k.to_owned()),
                    ));
                }
                _ => {
                    return Err(error(
                        directive_path.index(i),
                        SmpErrorKind::ItemNotObject(k.to_owned()),
                    ));
                }
            }
        }
    }
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let mut order_index = 0;
    for (i, item) in patch.iter().enumerate() {
        if item.get(DIRECTIVE).is_some() {
            continue;
        }
        let key = match merge_key {
            Some(k) => match item.get(k) {
                Some(v) => v,
                None => {
                    return Err(error(
                        list_path.index(i),
                        SmpErrorKind::MissingMergeKey(k.to_owned()),
                    ));
                }
            },
            None => item,
        };
        loop {
            let Some(o) = order.get(order_index) else {
                return Err(error(directive_path, SmpErrorKind::OrderMismatch));
            };
            order_index += 1;
            if scalar_eq(&order_key(o, merge_key), key) {
                break;
            }
        }
    }
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: remove the listed values from the
/// original's list, if it has one.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    value: Value,
    path: Path<'_>,
) -> Result<()> {
    let Value::Array(delete) = value else {
        return Err(error(
            path,
            SmpErrorKind::DirectiveNotList(DELETE_FROM_PRIMITIVE_LIST),
        ));
    };
    let Some(Value::Array(list)) = original.get_mut(field) else {
        return Ok(());
    };
    if item_kind([list.as_slice(), delete.as_slice()], path)? == Some(ItemKind::Object) {
        return Err(error(path, SmpErrorKind::DeleteFromObjectList));
    }
    list.retain(|v| !delete.iter().any(|d| scalar_eq(v, d)));
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::patch::meta::{OPAQUE, POD, for_kind};

    fn pod(original: Value, patch: Value) -> Result<Value> {
        strategic_merge_patch(&original, &patch, &POD)
    }

    #[test]
    fn null_deletes_and_objects_merge() {
        let out = pod(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn untagged_list_is_replaced() {
        let out = pod(
            json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
            json!({"spec": {"tolerations": [{"key": "c"}]}}),
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"tolerations": [{"key": "c"}]}}));
    }

    #[test]
    fn merging_list_merges_by_key_and_puts_new_items_first() {
        let out = pod(
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"name": "b", "image": "b:2"}]}}),
        )
        .unwrap();
        // c is new and cannot be placed against a, so it comes first; b keeps
        // its place after a.
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn numeric_merge_keys_compare_as_numbers() {
        let out = pod(
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80.0, "protocol": "TCP"}]}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80.0, "name": "http", "protocol": "TCP"}])
        );
    }

    #[test]
    fn errors_name_the_path() {
        let err = pod(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a"}, {"image": "x"}]}}),
        )
        .unwrap_err();
        assert_eq!(err.path, "spec.containers[1]");
        assert_eq!(err.kind, SmpErrorKind::MissingMergeKey("name".into()));
        assert_eq!(
            err.to_string(),
            "strategic merge patch: spec.containers[1]: list item has no \"name\", the list's merge key"
        );
    }

    #[test]
    fn unknown_directives_are_errors() {
        let err = pod(json!({}), json!({"metadata": {"$bogus": 1}})).unwrap_err();
        assert_eq!(err.path, "metadata.$bogus");
        assert_eq!(err.kind, SmpErrorKind::UnknownDirective("$bogus".into()));
        let err = pod(json!({"spec": {}}), json!({"spec": {"$patch": "merge"}})).unwrap_err();
        assert_eq!(err.path, "spec.$patch");
        let err = pod(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
        )
        .unwrap_err();
        assert_eq!(err.kind, SmpErrorKind::MergeDirectiveInList);
        let err = pod(json!({}), json!({"spec": {"$setElementOrder": []}})).unwrap_err();
        assert!(matches!(err.kind, SmpErrorKind::MalformedDirective(_)));
    }

    #[test]
    fn opaque_schema_is_merge_patch_with_directives() {
        let out = strategic_merge_patch(
            &json!({"spec": {"list": [1, 2], "obj": {"a": 1, "b": 2}}}),
            &json!({"spec": {"list": [3], "obj": {"a": null, "$patch": "replace", "c": 3}}}),
            &OPAQUE,
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"list": [3], "obj": {"c": 3}}}));
    }

    #[test]
    fn non_objects_are_rejected() {
        let d = for_kind("apps/v1", "Deployment").unwrap();
        let err = strategic_merge_patch(&json!([]), &json!({}), d).unwrap_err();
        assert_eq!(err.kind, SmpErrorKind::DocumentNotObject);
        let err = strategic_merge_patch(&json!({}), &json!("x"), d).unwrap_err();
        assert_eq!(err.kind, SmpErrorKind::PatchNotObject);
    }

    #[test]
    fn mixed_list_types_are_rejected() {
        let err = pod(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [{"name": "b"}]}}),
        )
        .unwrap_err();
        assert_eq!(err.path, "metadata.finalizers");
        assert_eq!(err.kind, SmpErrorKind::MixedListTypes);
    }
}
