//! The per-node backoff for failed daemon pods, as upstream's `flowcontrol.Backoff` (1 s
//! doubling to 15 min): a kubelet that keeps rejecting a daemon pod must not make the
//! controller delete and recreate it in a hot loop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// upstream: failedPodsBackoff = flowcontrol.NewBackOff(1*time.Second, 15*time.Minute)
pub const INITIAL: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct Backoff {
    entries: Mutex<HashMap<String, (Duration, Instant)>>,
}

impl Backoff {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Duration, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// upstream `IsInBackOffSinceUpdate`: `Some(remaining wait)` while the last step's delay
    /// has not passed.
    pub fn waiting(&self, key: &str) -> Option<Duration> {
        let (delay, at) = *self.lock().get(key)?;
        let since = at.elapsed();
        (since < delay).then(|| delay - since)
    }

    /// upstream `Next`: the delay doubles (up to `MAX`) each step, and starts again at
    /// `INITIAL` once an entry has been quiet for twice `MAX`.
    pub fn step(&self, key: &str) -> Duration {
        let now = Instant::now();
        let mut m = self.lock();
        let delay = match m.get(key) {
            Some((d, at)) if now.duration_since(*at) <= 2 * MAX => (*d * 2).min(MAX),
            _ => INITIAL,
        };
        m.insert(key.to_string(), (delay, now));
        delay
    }

    /// Drops entries quiet for twice `MAX` (upstream `GC`).
    pub fn gc(&self) {
        let now = Instant::now();
        self.lock().retain(|_, (_, at)| now.duration_since(*at) <= 2 * MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_to_the_cap_and_reset_after_quiet() {
        let b = Backoff::new();
        assert_eq!(b.waiting("k"), None);
        assert_eq!(b.step("k"), INITIAL);
        assert_eq!(b.waiting("k"), Some(INITIAL));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(b.waiting("k"), Some(Duration::from_millis(600)));
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(b.waiting("k"), None);
        assert_eq!(b.step("k"), Duration::from_secs(2));
        for _ in 0..20 {
            b.step("k");
        }
        assert_eq!(b.step("k"), MAX);
        tokio::time::advance(2 * MAX + Duration::from_secs(1)).await;
        assert_eq!(b.step("k"), INITIAL, "quiet for twice the cap starts over");
        tokio::time::advance(2 * MAX + Duration::from_secs(1)).await;
        b.gc();
        assert_eq!(b.waiting("k"), None);
    }
}
