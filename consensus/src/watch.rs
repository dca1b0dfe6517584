//! Watches: the revision stream of the store, fanned out to watchers.
//!
//! A watcher is either *synced* — it gets events as they are applied,
//! through a bounded channel — or *unsynced*, catching up by reading
//! history from RocksDB. A new watcher starts unsynced at its start
//! revision. A synced watcher whose channel is full is dropped back to
//! unsynced (its channel is closed) and catches up from history, so a slow
//! client never blocks the apply path nor loses an event. This is etcd's
//! synced/unsynced watcher-group design.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::Result;
use crate::mvcc::{KeyRange, Mvcc, Rev};
use crate::pb::mvccpb::KeyValue;

/// Events replayed from history per batch.
const HISTORY_BATCH: usize = 1000;
/// Event batches buffered per synced watcher before it is dropped to
/// unsynced.
const CHANNEL_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub rev: Rev,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// What a watcher selects.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// First revision to deliver; 0 means "after the current revision".
    pub start_rev: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

impl WatchSpec {
    fn selects(&self, e: &Event) -> bool {
        self.range.contains(&e.kv.key)
            && !(self.no_put && e.kind == EventKind::Put)
            && !(self.no_delete && e.kind == EventKind::Delete)
    }
}

struct Synced {
    spec: Arc<WatchSpec>,
    next_rev: i64,
    tx: mpsc::Sender<Vec<Event>>,
}

/// The fan-out point. Published to under the state machine's write lock.
#[derive(Default)]
pub struct WatchHub {
    synced: Mutex<HashMap<u64, Synced>>,
    next_id: Mutex<u64>,
    prev_kv_watchers: AtomicUsize,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHub")
            .field("synced", &self.synced.lock().len())
            .finish()
    }
}

impl WatchHub {
    pub fn new() -> Arc<WatchHub> {
        Arc::new(WatchHub::default())
    }

    /// Whether apply should look up previous values for events.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::Relaxed) > 0
    }

    /// Number of watchers currently receiving live events.
    pub fn synced_count(&self) -> usize {
        self.synced.lock().len()
    }

    pub(crate) fn publish(&self, events: &[Event], _rev: i64) {
        if events.is_empty() {
            return;
        }
        let mut synced = self.synced.lock();
        let mut lagged = Vec::new();
        for (id, w) in synced.iter_mut() {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.rev.main >= w.next_rev && w.spec.selects(e))
                .cloned()
                .collect();
            let Some(last) = mine.last() else { continue };
            let last = last.rev.main;
            match w.tx.try_send(mine) {
                Ok(()) => w.next_rev = last + 1,
                // Full or gone: closing the channel tells the watcher to
                // catch up from history after what it already received.
                Err(_) => lagged.push(*id),
            }
        }
        for id in lagged {
            synced.remove(&id);
        }
    }

    /// After a snapshot replaced the state machine, no watcher can trust its
    /// position: every channel is closed and each catches up from history.
    pub(crate) fn reset_all(&self, _rev: i64) {
        self.synced.lock().clear();
    }

    fn remove(&self, id: u64) {
        self.synced.lock().remove(&id);
    }
}

/// One watcher. Dropping it unregisters it.
pub struct Watcher {
    id: u64,
    spec: Arc<WatchSpec>,
    mvcc: Arc<Mvcc>,
    next_rev: i64,
    rx: Option<mpsc::Receiver<Vec<Event>>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("id", &self.id)
            .field("next_rev", &self.next_rev)
            .finish()
    }
}

impl Watcher {
    pub fn new(mvcc: Arc<Mvcc>, spec: WatchSpec) -> Watcher {
        let hub = mvcc.hub().clone();
        let id = {
            let mut n = hub.next_id.lock();
            *n += 1;
            *n
        };
        if spec.prev_kv {
            hub.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
        }
        let next_rev = if spec.start_rev > 0 {
            spec.start_rev
        } else {
            mvcc.revision() + 1
        };
        Watcher {
            id,
            spec: Arc::new(spec),
            mvcc,
            next_rev,
            rx: None,
        }
    }

    pub fn spec(&self) -> &WatchSpec {
        &self.spec
    }

    /// The next revision this watcher will deliver.
    pub fn next_rev(&self) -> i64 {
        self.next_rev
    }

    /// The revision a progress notification may claim: every event up to it
    /// has been delivered. `None` while catching up.
    pub fn progress_rev(&self) -> Option<i64> {
        let rx = self.rx.as_ref()?;
        // Reading the revision first: apply queues its events before the new
        // revision becomes readable, so an empty channel afterwards means
        // nothing up to `rev` is undelivered.
        let rev = self.mvcc.revision();
        rx.is_empty().then_some(rev)
    }

    /// Waits for the next events. Fails with [`Error::Compacted`] when the
    /// watcher needs history that compaction removed.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        loop {
            if let Some(rx) = &mut self.rx {
                match rx.recv().await {
                    Some(events) => {
                        if let Some(last) = events.last() {
                            self.next_rev = last.rev.main + 1;
                        }
                        return Ok(events);
                    }
                    // Dropped by the hub for lagging (or by a snapshot
                    // restore): catch up from history.
                    None => self.rx = None,
                }
                continue;
            }
            let cur = self.mvcc.revision();
            if self.next_rev <= cur {
                let mut events = self.mvcc.history(self.next_rev, cur, HISTORY_BATCH)?;
                match events.last() {
                    Some(last) => self.next_rev = last.rev.main + 1,
                    None => self.next_rev = cur + 1,
                }
                events.retain(|e| self.spec.selects(e));
                if self.spec.prev_kv {
                    for e in &mut events {
                        e.prev_kv = self.mvcc.prev_of(&e.kv.key, e.rev)?;
                    }
                }
                if !events.is_empty() {
                    return Ok(events);
                }
                continue;
            }
            self.try_sync();
        }
    }

    /// Joins the synced group if no revision was applied since we last read
    /// history; otherwise the loop reads history again.
    fn try_sync(&mut self) {
        let hub = self.mvcc.hub().clone();
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let joined = self.mvcc.with_revision(|cur| {
            if self.next_rev <= cur {
                return false;
            }
            hub.synced.lock().insert(
                self.id,
                Synced {
                    spec: self.spec.clone(),
                    next_rev: self.next_rev,
                    tx,
                },
            );
            true
        });
        if joined {
            self.rx = Some(rx);
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let hub = self.mvcc.hub();
        hub.remove(self.id);
        if self.spec.prev_kv {
            hub.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
