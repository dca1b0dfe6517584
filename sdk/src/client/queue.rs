//! The controllers' work queue, as client-go's: a key is queued at most once
//! however many events name it, is never handed to two workers at once (one
//! added while being processed is queued again when it is done), and a key
//! that failed comes back after an exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting in `queue`, or to be re-queued when processing ends.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    shut_down: bool,
}

#[derive(Debug, Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.state.lock();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Queues `key` again after a back-off that doubles with each failure
    /// (5 ms up to 60 s, like client-go's default rate limiter).
    pub fn retry(&self, key: &str) {
        let n = {
            let mut s = self.state.lock();
            let n = s.failures.entry(key.to_string()).or_default();
            *n += 1;
            *n
        };
        let delay =
            Duration::from_millis(5u64.saturating_mul(1 << n.min(14))).min(Duration::from_secs(60));
        self.add_after(key.to_string(), delay);
    }

    /// Clears `key`'s failure count.
    pub fn forget(&self, key: &str) {
        self.state.lock().failures.remove(key);
    }

    /// The next key to work on; `None` after [`WorkQueue::shut_down`].
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if s.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_processed_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await.unwrap();
        assert_eq!(k, "a");
        q.add("a"); // while processing: held back
        assert_eq!(q.next().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await.unwrap(), "a");
        q.done("a");
        q.done("b");
        assert!(q.is_empty());
        q.shut_down();
        assert!(q.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_forget_resets() {
        let q = WorkQueue::new();
        q.retry("k");
        q.retry("k");
        let t0 = tokio::time::Instant::now();
        assert_eq!(q.next().await.unwrap(), "k");
        assert!(t0.elapsed() >= Duration::from_millis(10));
        q.forget("k");
        assert!(q.state.lock().failures.is_empty());
    }
}
