//! Leader election on a `coordination.k8s.io/v1` Lease, as upstream client-go's
//! `leaderelection` with a `LeaseLock`: candidates try to take the Lease every retry period;
//! the holder renews it and gives up leadership if it cannot renew within the renew
//! deadline; a Lease counts as expired when its record has not changed for a lease duration
//! *as observed locally* (upstream: no trust in other machines' clocks). On shutdown the
//! holder releases the Lease (upstream `ReleaseOnCancel`) so a successor need not wait.
//!
//! `run` is the whole protocol; the Lease reads and writes sit behind `LeaseStore` (the real
//! one is `KubeLeaseStore`), so the timing is tested with a paused clock and an in-memory
//! store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lease {0}: {1}")]
    Api(String, #[source] kube::Error),
    #[error("leader election lost")]
    Lost,
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(_, kube::Error::Api(s)) if s.code == 409)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    /// Unique per process (upstream: hostname plus a random suffix).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Config {
    /// upstream kube-scheduler/kube-controller-manager defaults: 15 s lease, 10 s renew
    /// deadline, 2 s retry.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Config {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Reads and writes the one Lease.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    async fn get(&self) -> Result<Option<Lease>, Error>;
    async fn create(&self, lease: &Lease) -> Result<(), Error>;
    /// Replaces the Lease, failing with a conflict if its resourceVersion moved.
    async fn replace(&self, lease: &Lease) -> Result<(), Error>;
}

pub struct KubeLeaseStore {
    api: kube::Api<Lease>,
    name: String,
}

impl KubeLeaseStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        KubeLeaseStore { api: kube::Api::namespaced(client, namespace), name: name.into() }
    }
}

#[async_trait::async_trait]
impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.api.get_opt(&self.name).await.map_err(|e| Error::Api(self.name.clone(), e))
    }
    async fn create(&self, lease: &Lease) -> Result<(), Error> {
        self.api.create(&Default::default(), lease).await.map(|_| ()).map_err(|e| Error::Api(self.name.clone(), e))
    }
    async fn replace(&self, lease: &Lease) -> Result<(), Error> {
        self.api
            .replace(&self.name, &Default::default(), lease)
            .await
            .map(|_| ())
            .map_err(|e| Error::Api(self.name.clone(), e))
    }
}

type Record = (Option<String>, Option<MicroTime>, Option<i32>);

struct Elector {
    cfg: Config,
    store: Arc<dyn LeaseStore>,
    /// The last record seen and when it was first seen (local clock).
    observed: Option<(Record, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    fn spec(&self, prev: Option<&LeaseSpec>, release: bool) -> LeaseSpec {
        let changed_hands = prev.and_then(|p| p.holder_identity.as_deref()) != Some(self.cfg.identity.as_str());
        let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
        let now = now_micro();
        LeaseSpec {
            holder_identity: if release { None } else { Some(self.cfg.identity.clone()) },
            lease_duration_seconds: Some(if release { 1 } else { self.cfg.lease_duration.as_secs() as i32 }),
            acquire_time: if changed_hands || release {
                Some(now.clone())
            } else {
                prev.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if changed_hands && prev.is_some() && !release {
                transitions + 1
            } else {
                transitions
            }),
            ..Default::default()
        }
    }

    /// upstream `tryAcquireOrRenew`: true when this candidate holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let Some(mut lease) = self.store.get().await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, false)),
            };
            return match self.store.create(&lease).await {
                Ok(()) => Ok(true),
                Err(e) if e.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record: Record = (spec.holder_identity.clone(), spec.renew_time.clone(), spec.lease_transitions);
        let now = Instant::now();
        if self.observed.as_ref().is_none_or(|(r, _)| *r != record) {
            self.observed = Some((record, now));
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let observed_at = self.observed.as_ref().map(|(_, t)| *t).unwrap_or(now);
        if !holder.is_empty() && holder != self.cfg.identity && observed_at + duration > now {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&spec), false));
        match self.store.replace(&lease).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.store.get().await {
            let spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str()) {
                lease.spec = Some(self.spec(Some(&spec), true));
                if let Err(e) = self.store.replace(&lease).await {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "releasing the lease failed");
                }
            }
        }
    }

    /// One renewal round: retries every retry period until it succeeds or the renew
    /// deadline passes.
    async fn renew(&mut self, cancel: &CancellationToken) -> bool {
        let deadline = Instant::now() + self.cfg.renew_deadline;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.cfg.name, error = %e, "renewing the lease failed"),
            }
            let next = Instant::now() + self.cfg.retry_period;
            if next >= deadline {
                return false;
            }
            tokio::select! {
                _ = cancel.cancelled() => return true,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }
}

/// Waits to become leader, then runs `lead` with a token that is cancelled when leadership
/// ends. Returns Ok after `cancel` (having released the Lease), or `Error::Lost` when the
/// Lease could not be renewed in time (upstream's callers then exit).
pub async fn run<F, Fut>(
    cfg: Config,
    store: Arc<dyn LeaseStore>,
    cancel: CancellationToken,
    lead: F,
) -> Result<(), Error>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut e = Elector { cfg, store, observed: None };
    loop {
        match e.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => tracing::warn!(lease = %e.cfg.name, error = %err, "acquiring the lease failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(e.cfg.retry_period) => {}
        }
    }
    tracing::info!(lease = %e.cfg.name, identity = %e.cfg.identity, "became leader");
    let leading = cancel.child_token();
    // Dropping `run` (an aborted task) must not leave a leader running without a Lease.
    let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(lead(leading.clone())));
    let lost = loop {
        tokio::select! {
            _ = cancel.cancelled() => break false,
            _ = tokio::time::sleep(e.cfg.retry_period) => {}
        }
        if !e.renew(&cancel).await {
            break true;
        }
    };
    leading.cancel();
    let _ = task.await;
    if lost {
        tracing::error!(lease = %e.cfg.name, "leader election lost");
        return Err(Error::Lost);
    }
    e.release().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// One Lease in memory with resourceVersion checks; `down` makes every call fail.
    #[derive(Default)]
    struct MemStore {
        lease: Mutex<Option<Lease>>,
        rv: Mutex<u64>,
        down: AtomicBool,
    }

    fn unavailable() -> Error {
        Error::Api(
            "l".into(),
            kube::Error::Api(kube::core::Status::failure("down", "ServiceUnavailable").with_code(503).boxed()),
        )
    }

    fn conflict() -> Error {
        Error::Api(
            "l".into(),
            kube::Error::Api(kube::core::Status::failure("conflict", "Conflict").with_code(409).boxed()),
        )
    }

    #[async_trait::async_trait]
    impl LeaseStore for MemStore {
        async fn get(&self) -> Result<Option<Lease>, Error> {
            if self.down.load(Ordering::SeqCst) {
                return Err(unavailable());
            }
            Ok(self.lease.lock().expect("lock").clone())
        }
        async fn create(&self, lease: &Lease) -> Result<(), Error> {
            let mut l = self.lease.lock().expect("lock");
            if l.is_some() {
                return Err(conflict());
            }
            let mut rv = self.rv.lock().expect("lock");
            *rv += 1;
            let mut lease = lease.clone();
            lease.metadata.resource_version = Some(rv.to_string());
            *l = Some(lease);
            Ok(())
        }
        async fn replace(&self, lease: &Lease) -> Result<(), Error> {
            if self.down.load(Ordering::SeqCst) {
                return Err(unavailable());
            }
            let mut l = self.lease.lock().expect("lock");
            let mut rv = self.rv.lock().expect("lock");
            if l.as_ref().and_then(|x| x.metadata.resource_version.clone()) != lease.metadata.resource_version {
                return Err(conflict());
            }
            *rv += 1;
            let mut lease = lease.clone();
            lease.metadata.resource_version = Some(rv.to_string());
            *l = Some(lease);
            Ok(())
        }
    }

    fn holder(s: &MemStore) -> Option<String> {
        s.lease.lock().expect("lock").as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone())
    }

    fn candidate(
        store: &Arc<MemStore>,
        id: &str,
        cancel: &CancellationToken,
        leading: &Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<Result<(), Error>> {
        let (store, cancel, leading) = (store.clone() as Arc<dyn LeaseStore>, cancel.clone(), leading.clone());
        let cfg = Config::new("kube-system", "l", id);
        tokio::spawn(async move {
            run(cfg, store, cancel, move |t| async move {
                leading.store(true, Ordering::SeqCst);
                t.cancelled().await;
                leading.store(false, Ordering::SeqCst);
            })
            .await
        })
    }

    async fn advance(secs: u64) {
        for _ in 0..secs * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_candidate_leads_and_release_hands_over_at_once() {
        let store = Arc::new(MemStore::default());
        let (c1, c2) = (CancellationToken::new(), CancellationToken::new());
        let (l1, l2) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let h1 = candidate(&store, "a", &c1, &l1);
        advance(1).await;
        let h2 = candidate(&store, "b", &c2, &l2);
        advance(30).await;
        assert!(l1.load(Ordering::SeqCst) && !l2.load(Ordering::SeqCst));
        assert_eq!(holder(&store).as_deref(), Some("a"));
        c1.cancel();
        h1.await.expect("joined").expect("clean stop");
        advance(3).await;
        assert!(l2.load(Ordering::SeqCst), "b takes over within a retry period of the release");
        assert_eq!(
            store.lease.lock().expect("lock").as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions),
            Some(1)
        );
        c2.cancel();
        h2.await.expect("joined").expect("clean stop");
    }

    #[tokio::test(start_paused = true)]
    async fn crashed_leader_is_replaced_after_the_lease_duration() {
        let store = Arc::new(MemStore::default());
        let (c1, c2) = (CancellationToken::new(), CancellationToken::new());
        let (l1, l2) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let h1 = candidate(&store, "a", &c1, &l1);
        advance(1).await;
        let h2 = candidate(&store, "b", &c2, &l2);
        advance(5).await;
        h1.abort(); // dies without releasing
        let t0 = Instant::now();
        while !l2.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(t0.elapsed() < Duration::from_secs(20), "b never took over");
        }
        assert!(
            t0.elapsed() >= Duration::from_secs(10) && t0.elapsed() <= Duration::from_secs(17),
            "{:?}",
            t0.elapsed()
        );
        c2.cancel();
        h2.await.expect("joined").expect("clean stop");
    }

    #[tokio::test(start_paused = true)]
    async fn leader_that_cannot_renew_steps_down_within_the_renew_deadline() {
        let store = Arc::new(MemStore::default());
        let c = CancellationToken::new();
        let l = Arc::new(AtomicBool::new(false));
        let h = candidate(&store, "a", &c, &l);
        advance(1).await;
        assert!(l.load(Ordering::SeqCst));
        store.down.store(true, Ordering::SeqCst);
        advance(13).await;
        assert!(!l.load(Ordering::SeqCst), "stopped leading");
        assert!(matches!(h.await.expect("joined"), Err(Error::Lost)));
    }
}
