//! Watch: a chunked stream of `{"type": ..., "object": ...}` lines, from the
//! store's revision stream.
//!
//! Each watching client is a watcher in the store's in-process watch hub
//! (no per-client store connection). With no `resourceVersion` the stream
//! starts with ADDED events for every current object; with one, it replays
//! from just after it, or ends with a 410 `Expired` ERROR event if that
//! history was compacted. Objects entering or leaving a label/field
//! selector arrive as ADDED/DELETED, as in Kubernetes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use consensus::mvcc::KeyRange;
use consensus::watch::{EventKind, WatchSpec};
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
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
                            EventKind::Put => objects_decode.decode(&e.kv.key, &e.kv.value, rev).ok(),
                            EventKind::Delete => None,
                        };
                        let prev = e.prev_kv.as_ref().and_then(|p| {
                            let mut v = objects_decode.decode(&p.key, &p.value, p.mod_revision).ok()?;
                            super::storage::set_rv(&mut v, rev);
                            Some(v)
                        });
                        let now_in = cur.as_ref().is_some_and(|o| filter.matches(o));
                        let was_in = prev.as_ref().is_some_and(|o| filter.matches(o));
                        let line = match (was_in, now_in) {
                            (false, true) => event_line("ADDED", &render(cur.as_ref().expect("current"))),
                            (true, true) => event_line("MODIFIED", &render(cur.as_ref().expect("current"))),
                            (true, false) => {
                                // Deleted, or no longer selected: the last
                                // state the client saw, at this revision.
                                event_line("DELETED", &render(prev.as_ref().expect("previous")))
                            }
                            (false, false) => continue,
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
