//! Expectations, as upstream's `UIDTrackingControllerExpectations`: after a controller asks for
//! N creations and some deletions, it does not act on the same owner again until its informer
//! has seen them (or five minutes have passed), so a slow watch never causes a second round
//! of creations.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// upstream: ExpectationsTimeout
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

struct Expected {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The controller for `key` may act: nothing pending, nothing recorded, or the record
    /// is older than the timeout.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.set_at.elapsed() > TIMEOUT,
        }
    }

    pub fn expect_creations(&self, key: &str, n: usize) {
        let mut m = self.lock();
        let e = m.entry(key.to_string()).or_insert_with(|| Expected {
            adds: 0,
            deletes: HashSet::new(),
            set_at: Instant::now(),
        });
        e.adds = n as i64;
        e.set_at = Instant::now();
    }

    /// `pods` are the keys of the pods about to be deleted.
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        let mut m = self.lock();
        let e = m.entry(key.to_string()).or_insert_with(|| Expected {
            adds: 0,
            deletes: HashSet::new(),
            set_at: Instant::now(),
        });
        e.deletes = pods.into_iter().collect();
        e.set_at = Instant::now();
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.adds -= 1;
        }
    }

    /// Idempotent per pod: an update with a deletionTimestamp and the delete itself count once.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.deletes.remove(pod);
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pending_creations_block_until_observed_or_timed_out() {
        let e = Expectations::new();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 1);
        tokio::time::advance(TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied("ns/rs"), "expectations expire");
    }

    #[tokio::test]
    async fn a_deletion_counts_once_per_pod() {
        let e = Expectations::new();
        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
    }
}
