//! A rate-limited work queue of object keys, as upstream's client-go `workqueue`:
//! - a key is queued at most once (`dirty`), however many events name it;
//! - a key being processed is never handed to a second worker; if it is added meanwhile it is
//!   queued again when the first worker calls `done`;
//! - `add_after` delays a key; `add_rate_limited` delays it by a per-key exponential backoff
//!   (5 ms doubling up to 1000 s, upstream's default item limiter) until `forget`.
//!
//! Workers call `get` (which also wakes for delayed keys coming due), then `done`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    delayed: BTreeMap<(Instant, u64), String>,
    delayed_at: HashMap<String, Instant>,
    failures: HashMap<String, u32>,
    seq: u64,
    shut_down: bool,
}

impl State {
    fn add(&mut self, key: String) -> bool {
        if self.shut_down || self.dirty.contains(&key) {
            return false;
        }
        self.dirty.insert(key.clone());
        if self.processing.contains(&key) {
            return false;
        }
        self.queue.push_back(key);
        true
    }

    /// Moves delayed keys that are due into the queue; returns the next deadline, if any.
    fn promote(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let mut woke = false;
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                return (woke, Some(entry.key().0));
            }
            let key = entry.remove();
            self.delayed_at.remove(&key);
            woke |= self.add(key);
        }
        (woke, None)
    }
}

#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the sets consistent (each step is one
        // insert/remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        if self.lock().add(key.into()) {
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`; an earlier pending delay for the same key wins.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.lock();
        if s.shut_down {
            return;
        }
        if let Some(&prev) = s.delayed_at.get(&key) {
            if prev <= at {
                return;
            }
            s.delayed.retain(|(t, _), k| !(*t == prev && *k == key));
        }
        s.seq += 1;
        let seq = s.seq;
        s.delayed.insert((at, seq), key.clone());
        s.delayed_at.insert(key, at);
        drop(s);
        // A worker may be sleeping until a later deadline.
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Queues `key` after its backoff, which doubles with every call until `forget`.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let d = backoff(*n);
            *n = n.saturating_add(1);
            d
        };
        self.add_after(key, delay);
    }

    /// Clears `key`'s backoff (it succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How many times `key` has been rate-limited since its last `forget`.
    pub fn requeues(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to work on, or `None` once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut s = self.lock();
                let (_, next) = s.promote(Instant::now());
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        // Hand the rest to another idle worker.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if s.shut_down {
                    return None;
                }
                next
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// `key` is finished; if it was added while being processed, it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Keys waiting to be processed now (upstream's `workqueue_depth`).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

fn backoff(failures: u32) -> Duration {
    BASE_DELAY.checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX)).unwrap_or(MAX_DELAY).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_however_often_it_is_added() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = Queue::new();
        q.add("a");
        let k = q.get().await.expect("a key");
        q.add("a");
        assert!(q.is_empty(), "not handed to a second worker while processing");
        q.done(&k);
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_waits_for_the_delay() {
        let q = Queue::new();
        q.add_after("a", Duration::from_secs(3));
        let start = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_earlier_of_two_delays_wins() {
        let q = Queue::new();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_from_5ms_up_to_1000s() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_requeues_back_off_until_forget() {
        let q = Queue::new();
        q.add_rate_limited("a");
        q.add_rate_limited("a");
        assert_eq!(q.requeues("a"), 2);
        q.forget("a");
        assert_eq!(q.requeues("a"), 0);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q = std::sync::Arc::new(Queue::new());
        let w = {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        };
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(w.await.expect("join"), None);
    }
}
