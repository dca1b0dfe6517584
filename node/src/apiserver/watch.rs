//! Watch: a chunked stream of `{"type": ..., "object": ...}` lines, from the
//! store's revision stream.
//!
//! Each watching client is a watcher in the store's in-process watch hub
//! (no per-client store connection). With no `resourceVersion` the stream
//! starts with ADDED events for every current object; with one, it replays
//! from just after it, or ends with a 410 `Expired` ERROR event if that
//! history was compacted. Objects entering or leaving a label/field
//! selector arrive as ADDED/DELETED, as in Kubernetes. An event's object
//! is decoded, and its line written, once for all watchers ([`Recent`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use consensus::mvcc::KeyRange;
use consensus::watch::{EventKind, WatchSpec};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::handlers::{Filter, Target};
use super::status::ApiError;
use super::storage::{Objects, prefix_end};
use super::{Body, table};

const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

/// How many recent objects [`Recent`] keeps.
const RECENT_OBJECTS: usize = 512;

/// The objects of recent watch events, decoded once and their event lines
/// encoded once for all the watchers that get them, as kube-apiserver's
/// watch cache serializes an event once per format: with the scheduler,
/// the controllers and the agents all watching pods, every pod write
/// would otherwise be parsed and written out once per watcher.
#[derive(Default)]
pub struct Recent {
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    objects: HashMap<RecentKey, Arc<EventObject>>,
    order: VecDeque<RecentKey>,
}

/// (key, the event's revision, whether it is the object before it).
type RecentKey = (Vec<u8>, i64, bool);

/// An object as one event shows it, and its lines once written.
pub struct EventObject {
    object: Value,
    lines: Mutex<Vec<(&'static str, Bytes)>>,
}

impl EventObject {
    /// The event line of `kind` with this object, written the first time.
    fn line(&self, kind: &'static str) -> Bytes {
        let mut lines = self.lines.lock();
        if let Some((_, l)) = lines.iter().find(|(k, _)| *k == kind) {
            return l.clone();
        }
        let l = event_line(kind, &self.object);
        lines.push((kind, l.clone()));
        l
    }
}

impl Recent {
    /// The object at `key` as the event at `rev` shows it (`before`: the
    /// previous state), made by `decode` unless a watcher already did.
    fn object(
        &self,
        key: &[u8],
        rev: i64,
        before: bool,
        decode: impl FnOnce() -> Option<Value>,
    ) -> Option<Arc<EventObject>> {
        let k = (key.to_vec(), rev, before);
        if let Some(o) = self.inner.lock().objects.get(&k) {
            return Some(o.clone());
        }
        let o = Arc::new(EventObject {
            object: decode()?,
            lines: Mutex::new(Vec::new()),
        });
        let mut inner = self.inner.lock();
        if inner.objects.insert(k.clone(), o.clone()).is_none() {
            inner.order.push_back(k);
            while inner.order.len() > RECENT_OBJECTS {
                if let Some(old) = inner.order.pop_front() {
                    inner.objects.remove(&old);
                }
            }
        }
        Some(o)
    }
}

pub async fn serve(
    objects: &Objects,
    t: &Target,
    q: &BTreeMap<String, String>,
    as_table: bool,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(q)?;
    let prefix = t.res.prefix(t.namespace.as_deref());
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30 * 60));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let rv = q
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
        .cloned();
    let send_initial = match q.get("sendInitialEvents").map(String::as_str) {
        Some("true") => true,
        Some("false") => false,
        _ => rv.is_none(),
    };
    let (initial, start_rev) = match &rv {
        Some(rv) if !send_initial => {
            let r: i64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            (Vec::new(), r + 1)
        }
        _ => {
            let (items, rev, _) = objects.list(&prefix, None, 0, 0).await?;
            (
                items
                    .into_iter()
                    .map(|s| s.object)
                    .filter(|o| filter.matches(o))
                    .collect::<Vec<_>>(),
                rev + 1,
            )
        }
    };
    let spec = WatchSpec {
        range: KeyRange::new(prefix.as_bytes(), &prefix_end(prefix.as_bytes())),
        start_rev,
        prev_kv: true,
        no_put: false,
        no_delete: false,
    };
    let mut watcher = objects.store().watch(spec);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(256);
    let res = t.res;
    let objects_decode = objects.decoder();
    let recent = objects.recent();
    tokio::spawn(async move {
        let render = |o: &Value| {
            if as_table {
                table::to_table(
                    res,
                    std::slice::from_ref(o),
                    o["metadata"]["resourceVersion"].as_str().unwrap_or(""),
                    None,
                )
            } else {
                o.clone()
            }
        };
        for o in &initial {
            if tx
                .send(Ok(Frame::data(event_line("ADDED", &render(o)))))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    if let Some(rev) = watcher.progress_rev() {
                        let o = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
                        if tx.send(Ok(Frame::data(event_line("BOOKMARK", &o)))).await.is_err() {
                            return;
                        }
                    }
                }
                r = watcher.next() => {
                    let events = match r {
                        Ok(e) => e,
                        Err(consensus::Error::Compacted) => {
                            let st = ApiError::gone("too old resource version").to_status();
                            let _ = tx.send(Ok(Frame::data(event_line("ERROR", &st)))).await;
                            return;
                        }
                        Err(e) => {
                            let st = ApiError::internal(e.to_string()).to_status();
                            let _ = tx.send(Ok(Frame::data(event_line("ERROR", &st)))).await;
                            return;
                        }
                    };
                    for e in events {
                        let rev = e.rev.main;
                        let cur = match e.kind {
                            EventKind::Put => recent.object(&e.kv.key, rev, false, || {
                                objects_decode.decode(&e.kv.key, &e.kv.value, rev).ok()
                            }),
                            EventKind::Delete => None,
                        };
                        let prev = e.prev_kv.as_ref().and_then(|p| {
                            recent.object(&p.key, rev, true, || {
                                let mut v = objects_decode.decode(&p.key, &p.value, p.mod_revision).ok()?;
                                super::storage::set_rv(&mut v, rev);
                                Some(v)
                            })
                        });
                        let now_in = cur.as_ref().is_some_and(|o| filter.matches(&o.object));
                        let was_in = prev.as_ref().is_some_and(|o| filter.matches(&o.object));
                        // Deleted, or no longer selected: the last state the
                        // client saw, at this revision.
                        let (kind, o) = match (was_in, now_in) {
                            (false, true) => ("ADDED", cur.expect("current")),
                            (true, true) => ("MODIFIED", cur.expect("current")),
                            (true, false) => ("DELETED", prev.expect("previous")),
                            (false, false) => continue,
                        };
                        let line = if as_table {
                            event_line(kind, &render(&o.object))
                        } else {
                            o.line(kind)
                        };
                        if tx.send(Ok(Frame::data(line))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let body: Body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}
