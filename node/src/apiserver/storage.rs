//! Objects in the replicated store: JSON under
//! `/registry/<group>/<resource>/<namespace>/<name>`, with the store's
//! revision as `resourceVersion`.
//!
//! Only the API server calls this; it talks to the store in-process.
//! Secrets are sealed (AES-256-GCM, see `seal`) before they reach the store.

use std::sync::Arc;

use consensus::Store;
use consensus::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
};
use serde_json::Value;

use super::status::ApiError;

pub struct Objects {
    store: Store,
    decoder: Decoder,
    recent: Arc<super::watch::Recent>,
}

/// Turns stored bytes back into objects; cheap to clone into watch tasks.
#[derive(Clone)]
pub struct Decoder {
    sealer: Arc<super::seal::Sealer>,
}

impl Decoder {
    pub fn decode(&self, key: &[u8], raw: &[u8], rev: i64) -> Result<Value, ApiError> {
        let plain = self.sealer.open(key, raw).map_err(ApiError::internal)?;
        let mut v: Value = serde_json::from_slice(&plain).map_err(|e| {
            ApiError::internal(format!(
                "stored object {} is corrupt: {e}",
                String::from_utf8_lossy(key)
            ))
        })?;
        set_rv(&mut v, rev);
        Ok(v)
    }
}

/// A stored object and the revision it was last written at.
pub struct Stored {
    pub object: Value,
    pub rev: i64,
}

pub enum Precondition {
    /// The key must not exist.
    Absent,
    /// The key must have been last written at this revision.
    ModRevision(i64),
}

impl Objects {
    pub fn new(store: Store, sealer: super::seal::Sealer) -> Objects {
        Objects {
            store,
            decoder: Decoder {
                sealer: Arc::new(sealer),
            },
            recent: Arc::default(),
        }
    }

    /// Another handle on the same store (for background work).
    pub fn clone_handle(&self) -> Objects {
        Objects {
            store: self.store.clone(),
            decoder: self.decoder.clone(),
            recent: self.recent.clone(),
        }
    }

    /// The watch events every watcher of this server shares.
    pub fn recent(&self) -> Arc<super::watch::Recent> {
        self.recent.clone()
    }

    pub fn decoder(&self) -> Decoder {
        self.decoder.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn decode(&self, key: &[u8], raw: &[u8], rev: i64) -> Result<Value, ApiError> {
        self.decoder.decode(key, raw, rev)
    }

    fn encode(&self, key: &str, obj: &Value) -> Result<Vec<u8>, ApiError> {
        let mut o = obj.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        let plain = serde_json::to_vec(&o).map_err(|e| ApiError::internal(e.to_string()))?;
        self.decoder
            .sealer
            .seal(key.as_bytes(), &plain)
            .map_err(ApiError::internal)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        self.get_with(key, false).await
    }

    /// [`Objects::get`] from this member's applied state, without a quorum
    /// round (etcd's serializable read): what an informer cache would say,
    /// for admission checks that Kubernetes answers from one.
    pub async fn get_local(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        self.get_with(key, true).await
    }

    /// [`Objects::get_local`], then a quorum read if this member has not
    /// seen `key`: for admission checks that refuse what is missing, so a
    /// member that is behind does not refuse what was just created.
    pub async fn get_known(&self, key: &str) -> Result<Option<Stored>, ApiError> {
        match self.get_local(key).await? {
            Some(s) => Ok(Some(s)),
            None => self.get(key).await,
        }
    }

    async fn get_with(&self, key: &str, serializable: bool) -> Result<Option<Stored>, ApiError> {
        let r = self
            .store
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable,
                ..Default::default()
            })
            .await?;
        match r.kvs.into_iter().next() {
            None => Ok(None),
            Some(kv) => self.stored(&kv.key, &kv.value, kv.mod_revision).map(Some),
        }
    }

    /// Everything under `prefix` in this member's applied state, without a
    /// quorum round: for admission lookups Kubernetes answers from an
    /// informer cache.
    pub async fn list_local(&self, prefix: &str) -> Result<Vec<Stored>, ApiError> {
        let r = self
            .store
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                serializable: true,
                ..Default::default()
            })
            .await?;
        r.kvs
            .iter()
            .map(|kv| self.stored(&kv.key, &kv.value, kv.mod_revision))
            .collect()
    }

    /// Lists under `prefix` from `start` (a key, for continuing), at most
    /// `limit` (0: all), as of revision `at` (0: now). Returns the objects,
    /// the revision read at, and whether more remain.
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        limit: i64,
        at: i64,
    ) -> Result<(Vec<Stored>, i64, bool), ApiError> {
        let end = prefix_end(prefix.as_bytes());
        let key = start.map_or(prefix.as_bytes().to_vec(), |s| s.as_bytes().to_vec());
        let r = self
            .store
            .range(RangeRequest {
                key,
                range_end: end,
                limit,
                revision: at,
                ..Default::default()
            })
            .await?;
        let rev = r.header.map_or(0, |h| h.revision);
        let rev = if at > 0 { at } else { rev };
        let out = r
            .kvs
            .iter()
            .map(|kv| self.stored(&kv.key, &kv.value, kv.mod_revision))
            .collect::<Result<_, _>>()?;
        Ok((out, rev, r.more))
    }

    /// A stored value, decoded, with its revision.
    fn stored(&self, key: &[u8], value: &[u8], rev: i64) -> Result<Stored, ApiError> {
        Ok(Stored {
            object: self.decode(key, value, rev)?,
            rev,
        })
    }

    /// Writes `obj` at `key` if the precondition holds. Returns the new
    /// revision, or `None` when the precondition failed.
    pub async fn put(
        &self,
        key: &str,
        obj: &Value,
        pre: Precondition,
    ) -> Result<Option<i64>, ApiError> {
        let value = self.encode(key, obj)?;
        let compare = match pre {
            Precondition::Absent => Compare {
                key: key.as_bytes().to_vec(),
                target: CompareTarget::Create as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            },
            Precondition::ModRevision(rev) => Compare {
                key: key.as_bytes().to_vec(),
                target: CompareTarget::Mod as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::ModRevision(rev)),
                ..Default::default()
            },
        };
        let r = self
            .store
            .txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value,
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await?;
        Ok(r.succeeded.then(|| r.header.map_or(0, |h| h.revision)))
    }

    /// Deletes `key` if it was last written at `rev`. Returns the revision
    /// of the delete, or `None` if the object changed meanwhile.
    pub async fn delete(&self, key: &str, rev: i64) -> Result<Option<i64>, ApiError> {
        let r = self
            .store
            .txn(TxnRequest {
                compare: vec![Compare {
                    key: key.as_bytes().to_vec(),
                    target: CompareTarget::Mod as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::ModRevision(rev)),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await?;
        Ok(r.succeeded.then(|| r.header.map_or(0, |h| h.revision)))
    }
}

pub fn set_rv(v: &mut Value, rev: i64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// The smallest key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
