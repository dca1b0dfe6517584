//! Who owns what: controller references, adopting and releasing dependents
//! (client-go's `ControllerRefManager`), template hashes and generated
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{Metadata, Resource};
use serde_json::json;
use skiff_sdk::client::{Api, Client, Object, PatchType};
use skiff_sdk::selector::LabelSelector;

use super::{Error, Result};

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta`'s controller is the object with this uid.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner`, as every controller sets it on what
/// it creates: the garbage collector deletes the dependent with its owner,
/// and a foreground deletion of the owner waits for it.
pub fn controller_ref<K: Resource + Metadata<Ty = ObjectMeta>>(owner: &K) -> OwnerReference {
    let m = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `namespace/name` of an object.
pub fn ns_name(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

pub fn labels(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    meta.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// A workload's `spec.selector` as a matcher. Unlike a null selector, an
/// empty one selects everything (as `LabelSelectorAsSelector`).
pub fn selector_of(sel: &meta::LabelSelector) -> Result<LabelSelector> {
    let v = serde_json::to_value(sel).map_err(|e| Error::Invalid(e.to_string()))?;
    LabelSelector::from_json(&v).map_err(|e| Error::Invalid(e.to_string()))
}

/// Keeps the dependents an owner should have: those it controls that
/// still match its selector, plus orphans that match, which it adopts.
/// Those it controls that no longer match are released. Nothing is adopted
/// while the owner (or the orphan) is being deleted.
pub async fn claim<D: Object>(
    client: &Client,
    owner: &OwnerReference,
    owner_deleting: bool,
    selector: &LabelSelector,
    candidates: Vec<Arc<D>>,
) -> Result<Vec<Arc<D>>> {
    let mut mine = Vec::with_capacity(candidates.len());
    for c in candidates {
        let m = c.metadata();
        let matches = selector.matches(labels(m));
        match controller_of(m) {
            Some(r) if r.uid != owner.uid => {}
            Some(_) if matches => mine.push(c),
            Some(_) => {
                if !owner_deleting {
                    release(client, owner, &*c).await?;
                }
            }
            None => {
                if owner_deleting || !matches || m.deletion_timestamp.is_some() {
                    continue;
                }
                if let Some(adopted) = adopt(client, owner, &*c).await? {
                    mine.push(Arc::new(adopted));
                }
            }
        }
    }
    Ok(mine)
}

fn api_for<D: Object>(client: &Client, m: &ObjectMeta) -> Api<D> {
    match m.namespace.as_deref() {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Adds `owner` as the controller of an orphan, guarded by its
/// resourceVersion: a stale cache makes this a conflict, never a second
/// controller. `None` if it is gone.
async fn adopt<D: Object>(client: &Client, owner: &OwnerReference, dep: &D) -> Result<Option<D>> {
    let m = dep.metadata();
    let mut refs = m.owner_references.clone().unwrap_or_default();
    refs.push(owner.clone());
    let patch =
        json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
    let name = m.name.as_deref().unwrap_or("");
    match api_for::<D>(client, m)
        .patch(name, PatchType::Merge, &patch)
        .await
    {
        Ok(d) => {
            tracing::info!(owner = %owner.name, kind = D::KIND, name, "adopted");
            Ok(Some(d))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `owner`'s reference from a dependent that no longer matches.
async fn release<D: Object>(client: &Client, owner: &OwnerReference, dep: &D) -> Result<()> {
    let m = dep.metadata();
    let refs: Vec<&OwnerReference> = m
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner.uid)
        .collect();
    let refs = if refs.is_empty() {
        serde_json::Value::Null
    } else {
        json!(refs)
    };
    let patch =
        json!({"metadata": {"ownerReferences": refs, "resourceVersion": m.resource_version}});
    let name = m.name.as_deref().unwrap_or("");
    match api_for::<D>(client, m)
        .patch(name, PatchType::Merge, &patch)
        .await
    {
        Ok(_) => {
            tracing::info!(owner = %owner.name, kind = D::KIND, name, "released");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// FNV-1a, 32 bits, as Go's `hash/fnv`.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The characters Kubernetes uses in generated names and hashes: no vowels
/// (no words) and no look-alikes.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The hash of a pod template that names a Deployment's ReplicaSets and a
/// DaemonSet's or StatefulSet's revisions (`ComputeHash`: FNV-1a over the
/// template, then the collision count, safe-encoded). Kubernetes hashes
/// Go's printout of the struct and skiff its JSON, so the values differ
/// from Kubernetes' but have the same form and stability.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(&(c as u32).to_le_bytes());
        data.extend_from_slice(&[0; 4]);
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// `n` random characters of [`ALPHANUMS`].
pub fn random_suffix(n: usize) -> String {
    (0..n)
        .map(|_| ALPHANUMS[rand::random_range(0..ALPHANUMS.len())] as char)
        .collect()
}

/// A name from a prefix, as `generateName` makes one: the prefix cut to 58
/// characters, then 5 random ones.
pub fn generate_name(prefix: &str) -> String {
    let cut: String = prefix.chars().take(58).collect();
    format!("{cut}{}", random_suffix(5))
}

/// An `IntOrString` count resolved against `total` (`"25%"` of 10 is 3
/// rounding up, 2 rounding down), as `GetScaledValueFromIntOrPercent`.
pub fn scaled(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> Result<i32> {
    let s = match v {
        Some(IntOrString::Int(i)) => return Ok(*i),
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let pct = s
        .strip_suffix('%')
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "invalid value {s:?}: not an integer or a percentage"
            ))
        })?;
    let scaled = i64::from(total) * pct;
    let v = if round_up {
        (scaled + 99).div_euclid(100)
    } else {
        scaled.div_euclid(100)
    };
    Ok(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_and_encoding_match_go() {
        // Go: fnv.New32a().Write([]byte("hello")) → 0x4f9f2cab
        assert_eq!(fnv32a(b"hello"), 0x4f9f_2cab);
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        // '0' is 48, and 48 % 27 = 21 → the 22nd character, '4'.
        assert_eq!(safe_encode("0123"), "4567");
        let t = PodTemplateSpec::default();
        assert_eq!(template_hash(&t, None), template_hash(&t, None));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert!(
            template_hash(&t, None)
                .bytes()
                .all(|b| ALPHANUMS.contains(&b))
        );
    }

    #[test]
    fn generated_names_are_bounded() {
        let n = generate_name(&format!("{}-", "x".repeat(80)));
        assert_eq!(n.len(), 63);
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|b| ALPHANUMS.contains(&b)));
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), "0", 10, true).unwrap(), 3);
        assert_eq!(scaled(Some(&pct("25%")), "0", 10, false).unwrap(), 2);
        assert_eq!(
            scaled(Some(&IntOrString::Int(4)), "0", 10, false).unwrap(),
            4
        );
        assert_eq!(scaled(None, "25%", 3, true).unwrap(), 1);
        assert_eq!(scaled(None, "25%", 3, false).unwrap(), 0);
        assert!(scaled(Some(&pct("x")), "0", 3, false).is_err());
    }
}
