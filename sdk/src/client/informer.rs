//! List-and-watch informers: each keeps a local cache of one kind (optionally
//! filtered by selectors), current to a resourceVersion, and tells its
//! subscribers what changed. A watch that ends is resumed from the last
//! resourceVersion seen; one that is too old (410 Gone) is replaced by a
//! fresh list, the cache diffed against it so subscribers still see every
//! change — as client-go's reflector does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};

use super::{Api, Error, ListParams, Object, WatchEvent, key_of};

/// What changed in an informer's cache.
#[derive(Debug)]
pub enum Event<K> {
    /// Created (`old` is `None`) or changed.
    Applied {
        old: Option<Arc<K>>,
        new: Arc<K>,
    },
    Deleted(Arc<K>),
}

impl<K> Event<K> {
    /// The object as it is now (or was when deleted).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Event::Applied { new, .. } => new,
            Event::Deleted(o) => o,
        }
    }
}

/// A read-only view of an informer's cache, keyed by `namespace/name`.
#[derive(Debug)]
pub struct Store<K> {
    map: RwLock<BTreeMap<String, Arc<K>>>,
}

impl<K: Object> Store<K> {
    fn new() -> Store<K> {
        Store {
            map: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.map.read().get(key).cloned()
    }

    pub fn get_in(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        match namespace {
            Some(ns) => self.get(&format!("{ns}/{name}")),
            None => self.get(name),
        }
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.map.read().values().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_in(&self, namespace: &str) -> Vec<Arc<K>> {
        let start = format!("{namespace}/");
        self.map
            .read()
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn filter(&self, f: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.map.read().values().filter(|o| f(o)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

/// Keeps a [`Store`] of one kind in step with the API server.
pub struct Informer<K> {
    api: Api<K>,
    params: ListParams,
    store: Arc<Store<K>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<Event<K>>>>>,
    synced: watch::Sender<bool>,
}

impl<K> std::fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl<K: Object> Informer<K> {
    pub fn new(api: Api<K>, params: ListParams) -> Arc<Informer<K>> {
        Arc::new(Informer {
            api,
            params,
            store: Arc::new(Store::new()),
            subscribers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        })
    }

    pub fn store(&self) -> Arc<Store<K>> {
        self.store.clone()
    }

    /// Every change from now on. Subscribe before [`Informer::start`] to see
    /// the initial list as `Applied` events.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<Event<K>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().push(tx);
        rx
    }

    /// Resolves once the first list is in the cache.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Runs the list-and-watch loop in a task until the informer is dropped
    /// by every holder but the task itself.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            let mut rv: Option<String> = None;
            loop {
                let Some(inf) = me.upgrade() else { return };
                let result = match &rv {
                    None => inf.relist().await.map(Some),
                    Some(from) => inf.watch_from(from).await,
                };
                match result {
                    Ok(next) => {
                        rv = next;
                        backoff = Duration::from_millis(200);
                        continue;
                    }
                    Err(e) if e.is_gone() => {
                        tracing::debug!(kind = K::KIND, "watch expired, relisting");
                        rv = None;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(kind = K::KIND, error = %e, "list/watch failed, retrying");
                        rv = None;
                    }
                }
                drop(inf);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }

    fn emit(&self, ev: Event<K>) {
        let ev = Arc::new(ev);
        self.subscribers
            .lock()
            .retain(|tx| tx.send(ev.clone()).is_ok());
    }

    /// Lists everything and makes the cache equal to it; returns the list's
    /// resourceVersion.
    async fn relist(&self) -> Result<String, Error> {
        let list = self.api.list_all(&self.params).await?;
        let mut fresh: BTreeMap<String, Arc<K>> = BTreeMap::new();
        for item in list.items {
            fresh.insert(key_of(item.metadata()), Arc::new(item));
        }
        let mut events = Vec::new();
        {
            let mut map = self.store.map.write();
            for (k, old) in map.iter() {
                if !fresh.contains_key(k) {
                    events.push(Event::Deleted(old.clone()));
                }
            }
            for (k, new) in &fresh {
                let old = map.get(k);
                let unchanged = old.is_some_and(|o| {
                    o.metadata().resource_version == new.metadata().resource_version
                });
                if !unchanged {
                    events.push(Event::Applied {
                        old: old.cloned(),
                        new: new.clone(),
                    });
                }
            }
            *map = fresh;
        }
        for ev in events {
            self.emit(ev);
        }
        self.synced.send_replace(true);
        Ok(list.resource_version)
    }

    /// Watches from `rv` until the server ends the watch; returns where to
    /// resume.
    async fn watch_from(&self, rv: &str) -> Result<Option<String>, Error> {
        let mut params = self.params.clone();
        params.resource_version = Some(rv.to_string());
        params.timeout_seconds = Some(300 + rand_jitter());
        let mut stream = self.api.watch(&params).await?;
        let mut rv = rv.to_string();
        while let Some(ev) = stream.next().await? {
            let (obj, deleted) = match ev {
                WatchEvent::Bookmark(r) => {
                    if !r.is_empty() {
                        rv = r;
                    }
                    continue;
                }
                WatchEvent::Added(o) | WatchEvent::Modified(o) => (o, false),
                WatchEvent::Deleted(o) => (o, true),
            };
            if let Some(r) = &obj.metadata().resource_version {
                rv = r.clone();
            }
            let key = key_of(obj.metadata());
            let obj = Arc::new(obj);
            let ev = if deleted {
                self.store.map.write().remove(&key);
                Event::Deleted(obj)
            } else {
                let old = self.store.map.write().insert(key, obj.clone());
                Event::Applied { old, new: obj }
            };
            self.emit(ev);
        }
        Ok(Some(rv))
    }
}

fn rand_jitter() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 60)
        .unwrap_or(0)
}
