//! upstream's container restart backoff: 10 s after the first failure, doubling up to 5 min,
//! and forgotten once a container has run for 10 min. Time comes in as a value, so tests need
//! no clock.

use std::collections::HashMap;
use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long is considered healthy again.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    delay: Duration,
    /// When the last restart was allowed (seconds on the caller's clock).
    last: u64,
}

/// Per-container restart backoff, keyed by pod uid and container name.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<(String, String), Entry>,
}

impl Backoff {
    /// Whether the container may restart at `now` after it finished at `finished_at`; if so,
    /// the next delay grows. `Err(remaining)` while backing off.
    pub fn try_restart(&mut self, pod_uid: &str, container: &str, finished_at: u64, now: u64) -> Result<(), Duration> {
        let key = (pod_uid.to_string(), container.to_string());
        match self.entries.get(&key).copied() {
            None => {
                self.entries.insert(key, Entry { delay: INITIAL, last: now });
                Ok(())
            }
            Some(e) => {
                // A long healthy run resets the backoff.
                if finished_at.saturating_sub(e.last) >= RESET_AFTER.as_secs() {
                    self.entries.insert(key, Entry { delay: INITIAL, last: now });
                    return Ok(());
                }
                let ready_at = finished_at + e.delay.as_secs();
                if now < ready_at {
                    return Err(Duration::from_secs(ready_at - now));
                }
                let next = (e.delay * 2).min(MAX);
                self.entries.insert(key, Entry { delay: next, last: now });
                Ok(())
            }
        }
    }

    /// The delay the next restart of this container will wait.
    pub fn current(&self, pod_uid: &str, container: &str) -> Option<Duration> {
        self.entries.get(&(pod_uid.to_string(), container.to_string())).map(|e| e.delay)
    }

    /// Forgets every container of a pod (the pod is gone).
    pub fn forget_pod(&mut self, pod_uid: &str) {
        self.entries.retain(|(uid, _), _| uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashloop_backoff_doubles_up_to_five_minutes() {
        let mut b = Backoff::default();
        let mut now = 1000;
        let mut delays = Vec::new();
        // The container dies right after each start.
        assert!(b.try_restart("u", "c", now, now).is_ok());
        for _ in 0..8 {
            let finished = now + 1;
            let wait = b.try_restart("u", "c", finished, finished).expect_err("backing off");
            delays.push(wait.as_secs());
            now = finished + wait.as_secs();
            assert!(b.try_restart("u", "c", finished, now).is_ok());
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn a_long_healthy_run_resets_the_backoff() {
        let mut b = Backoff::default();
        assert!(b.try_restart("u", "c", 0, 0).is_ok());
        assert!(b.try_restart("u", "c", 1, 11).is_ok());
        assert_eq!(b.current("u", "c"), Some(Duration::from_secs(20)));
        // Ran for 15 minutes before failing again: restart at once, from 10 s again.
        assert!(b.try_restart("u", "c", 11 + 900, 11 + 900).is_ok());
        assert_eq!(b.current("u", "c"), Some(INITIAL));
    }

    #[test]
    fn forget_pod_drops_its_containers() {
        let mut b = Backoff::default();
        assert!(b.try_restart("u", "c", 0, 0).is_ok());
        b.forget_pod("u");
        assert_eq!(b.current("u", "c"), None);
    }
}
