//! The one RocksDB instance of a member and what identifies it.
//!
//! Column families:
//! - `raft`: log entries keyed by index (u64, big-endian);
//! - `kv`: every revision of every key, keyed by revision (main, sub), so a
//!   watch replays history with one forward scan;
//! - `lease`: granted leases;
//! - `meta`: hard state, conf state, applied index, revisions, members and
//!   the identity of the member and its cluster.
//!
//! All column families share one write-ahead log, so a synced write of the
//! Raft log also makes every earlier state-machine write durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const CF_RAFT: &str = "raft";
pub const CF_KV: &str = "kv";
pub const CF_LEASE: &str = "lease";
pub const CF_META: &str = "meta";

/// Bumped when the on-disk layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

const IDENTITY_KEY: &[u8] = b"identity";

/// Which cluster and member a data directory belongs to. Written once, when
/// the member is created, and checked at every start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    pub cluster_id: u64,
    pub member_id: u64,
    pub name: String,
}

pub struct Db {
    pub db: Arc<DB>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.dir).finish()
    }
}

fn data_dir_err(dir: &Path, why: impl Into<String>) -> Error {
    Error::DataDir {
        dir: dir.display().to_string(),
        why: why.into(),
    }
}

impl Db {
    /// Opens the store under `dir/store`. With `create` false, a missing store
    /// is an error; a store that exists is never reset.
    pub fn open(dir: &Path, create: bool) -> Result<Db> {
        let path = dir.join("store");
        let exists = path.join("CURRENT").exists();
        if !exists {
            if path.exists()
                && path
                    .read_dir()
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                return Err(data_dir_err(
                    &path,
                    "exists but holds no store (no CURRENT file); refusing to overwrite it",
                ));
            }
            if !create {
                return Err(data_dir_err(&path, "no store here"));
            }
        }
        let mut opts = Options::default();
        opts.create_if_missing(create && !exists);
        opts.create_missing_column_families(create && !exists);
        opts.set_paranoid_checks(true);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // Large write buffer: Raft entries are written once and read back
        // only by lagging followers.
        opts.set_write_buffer_size(64 << 20);
        // Synced WAL appends that grow the file also journal its new size:
        // recycled WAL files are overwritten in place, so a sync flushes
        // data only (etcd gets the same by preallocating its WAL).
        opts.set_recycle_log_file_num(4);
        let cfs = [CF_RAFT, CF_KV, CF_LEASE, CF_META].map(|name| {
            let mut o = Options::default();
            o.set_compression_type(DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| {
            data_dir_err(
                &path,
                format!("cannot open the store (corrupt or not a skiff store?): {e}"),
            )
        })?;
        Ok(Db {
            db: Arc::new(db),
            dir: dir.to_path_buf(),
        })
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        // The column families are created with the database: absence is a bug.
        self.db
            .cf_handle(name)
            .expect("column family opened with the database")
    }

    pub fn identity(&self) -> Result<Option<Identity>> {
        match self.db.get_cf(self.cf(CF_META), IDENTITY_KEY)? {
            None => Ok(None),
            Some(raw) => {
                let id: Identity = serde_json::from_slice(&raw).map_err(|e| {
                    data_dir_err(&self.dir, format!("identity record is unreadable: {e}"))
                })?;
                if id.format != FORMAT_VERSION {
                    return Err(data_dir_err(
                        &self.dir,
                        format!(
                            "store format {} is not the format {} this skiff reads",
                            id.format, FORMAT_VERSION
                        ),
                    ));
                }
                Ok(Some(id))
            }
        }
    }

    pub fn write_identity(&self, id: &Identity) -> Result<()> {
        let raw = serde_json::to_vec(id).expect("identity serializes");
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_cf_opt(self.cf(CF_META), IDENTITY_KEY, raw, &wo)?;
        Ok(())
    }
}

/// A stable, non-zero 64-bit id from some text (member names, cluster tokens).
pub fn stable_id(parts: &[&str]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let id = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    if id == 0 { 1 } else { id }
}
