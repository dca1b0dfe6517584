//! The secrets every API server of a cluster must share — the
//! service-account signing key, the secrets encryption key, the admin,
//! join and server tokens — kept in the store so that members agree
//! however they were started (`--join`, or `--initial-cluster` with
//! `--ca-from`).
//!
//! The first API server to start publishes its files under
//! `/skiff/bootstrap` ("create if absent"); every member adopts what is
//! stored there before it loads them, so a member that made its own at
//! first start replaces them with the cluster's. The record is sealed with
//! AES-256-GCM under a key derived from the cluster CA's private key, which
//! only members hold: someone who reads the store (a backup, `etcdctl
//! get`) learns nothing from it.
//!
//! A record that does not open with this cluster's CA key was sealed by
//! another cluster: the store was restored from that cluster's snapshot
//! into a new one (with a new CA). It is replaced by this member's files,
//! as the first start of a new cluster would have written them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use consensus::Store;
use consensus::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

const KEY: &[u8] = b"/skiff/bootstrap";

/// The shared files, in `DIR/pki`.
pub const FILES: &[&str] = &[
    "sa.key",
    "secrets.key",
    "admin.token",
    "join.token",
    "server.token",
];

fn cipher(pki: &Path) -> Result<LessSafeKey> {
    let ca_key = std::fs::read(pki.join("ca.key"))
        .with_context(|| format!("reading {}", pki.join("ca.key").display()))?;
    let key = Sha256::new()
        .chain_update(b"skiff bootstrap secrets\0")
        .chain_update(&ca_key)
        .finalize();
    Ok(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key).expect("32-byte key"),
    ))
}

/// What the store holds under [`KEY`].
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing yet: this member may publish.
    Absent,
    /// This cluster's record, now written into `pki`.
    Adopted,
    /// A record sealed by another cluster's CA, last written at this
    /// revision.
    Foreign(i64),
}

/// Writes the cluster's shared files into `pki` if the store has them.
pub async fn adopt(store: &Store, pki: &Path) -> Result<Record> {
    let r = store
        .range(RangeRequest {
            key: KEY.to_vec(),
            ..Default::default()
        })
        .await?;
    let Some(kv) = r.kvs.first() else {
        return Ok(Record::Absent);
    };
    let sealed = &kv.value;
    if sealed.len() < NONCE_LEN {
        anyhow::bail!("the cluster's bootstrap record is truncated");
    }
    let (nonce, data) = sealed.split_at(NONCE_LEN);
    let mut buf = data.to_vec();
    let Ok(plain) = cipher(pki)?.open_in_place(
        Nonce::try_assume_unique_for_key(nonce).expect("nonce length"),
        Aad::from(KEY),
        &mut buf,
    ) else {
        tracing::warn!(
            "the store's bootstrap record was sealed by another cluster's CA (a restored \
             snapshot?): replacing it with this member's keys and tokens"
        );
        return Ok(Record::Foreign(kv.mod_revision));
    };
    let files: BTreeMap<String, String> =
        serde_json::from_slice(plain).context("the cluster's bootstrap record")?;
    for f in FILES {
        let Some(text) = files.get(*f) else { continue };
        let path = pki.join(f);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            super::write_private(&path, text.as_bytes())?;
            tracing::info!(file = %path.display(), "adopted the cluster's copy");
        }
    }
    Ok(Record::Adopted)
}

/// Publishes this member's shared files over what `found` found (absent,
/// or another cluster's record); false if the record changed meanwhile (a
/// member published first: the caller adopts theirs).
pub async fn publish(store: &Store, pki: &Path, found: &Record) -> Result<bool> {
    let (target, at) = match found {
        Record::Foreign(rev) => (CompareTarget::Mod, TargetUnion::ModRevision(*rev)),
        _ => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
    };
    let mut files = BTreeMap::new();
    for f in FILES {
        let path = pki.join(f);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.insert(f.to_string(), text);
    }
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| anyhow::anyhow!("no randomness for a nonce"))?;
    let mut buf = serde_json::to_vec(&files)?;
    cipher(pki)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(KEY),
            &mut buf,
        )
        .map_err(|_| anyhow::anyhow!("sealing the bootstrap record failed"))?;
    let mut value = nonce.to_vec();
    value.extend_from_slice(&buf);
    let r = store
        .txn(TxnRequest {
            compare: vec![Compare {
                key: KEY.to_vec(),
                target: target as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(at),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: KEY.to_vec(),
                    value,
                    ..Default::default()
                })),
            }],
            failure: vec![],
        })
        .await?;
    Ok(r.succeeded)
}
