//! The sync loop: decides when to sync (changes, `--min-sync-period`, the `--sync-period` full
//! resync, retries) and runs one render + one `iptables-restore` per sync. Upstream:
//! `BoundedFrequencyRunner` + `syncProxyRules` in pkg/proxy/iptables/proxier.go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, linear_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::iptables::render::{self, RenderConfig};
use crate::iptables::{chains_in_save, lines_around, Iptables, IptablesError};
use crate::tracker::{ServiceKey, Tracker};

/// upstream's kube-proxy metric names (pkg/proxy/metrics).
#[derive(Debug)]
pub struct Metrics {
    pub sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub rules: Family<Vec<(String, String)>, Gauge>,
    pub restore_failures: Counter,
    pub partial_restore_failures: Counter,
    pub network_programming_duration: Histogram,
}

/// upstream's `network_programming_duration_seconds` buckets: 0.25 s and 0.5 s, then every
/// second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
pub fn network_programming_buckets() -> Vec<f64> {
    linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
        .collect()
}

/// upstream: once a sync committed, each slice change it applied is observed as `committed -
/// trigger time`, in seconds. Negative when the writer's clock is ahead (upstream observes
/// that as is, too).
pub fn network_programming_latencies(
    trigger_times: &BTreeMap<ServiceKey, Vec<SystemTime>>,
    committed: SystemTime,
) -> Vec<(ServiceKey, f64)> {
    trigger_times
        .iter()
        .flat_map(|(svc, times)| {
            times.iter().map(move |t| {
                let secs = match committed.duration_since(*t) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                (svc.clone(), secs)
            })
        })
        .collect()
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let buckets = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let m = Metrics {
            sync_duration: buckets(),
            partial_sync_duration: buckets(),
            full_sync_duration: buckets(),
            last_sync_timestamp: Gauge::default(),
            rules: Family::default(),
            restore_failures: Counter::default(),
            partial_restore_failures: Counter::default(),
            network_programming_duration: Histogram::new(network_programming_buckets()),
        };
        let r = registry.sub_registry_with_prefix("kubeproxy");
        r.register("sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds", m.sync_duration.clone());
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.rules.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures",
            m.partial_restore_failures.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        m
    }
}

/// What /healthz reports: the last successful sync.
#[derive(Debug, Default)]
pub struct Health {
    last_sync: Mutex<Option<SystemTime>>,
}

impl Health {
    pub fn last_sync(&self) -> Option<SystemTime> {
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn record(&self, t: SystemTime) {
        *self.last_sync.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub min_sync_period: Duration,
    pub sync_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading the tables: {0}")]
    Save(#[source] IptablesError),
    #[error("iptables-restore: {0}")]
    Restore(#[source] IptablesError),
}

/// Owns the state one sync leaves for the next.
pub struct Proxier<I> {
    ipt: I,
    cfg: RenderConfig,
    tracker: Arc<Mutex<Tracker>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    need_full: bool,
    /// Per-service nat chains the kernel holds after the last successful restore.
    active_chains: BTreeSet<String>,
}

impl<I: Iptables> Proxier<I> {
    pub fn new(
        ipt: I,
        cfg: RenderConfig,
        tracker: Arc<Mutex<Tracker>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Proxier { ipt, cfg, tracker, metrics, health, need_full: true, active_chains: BTreeSet::new() }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // Tracker updates are single map operations; a poisoned lock still holds a usable state.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One sync. A full sync re-renders everything (and repairs jump rules and stale chains
    /// found in the kernel); otherwise only the services changed since the last sync get
    /// their chains rewritten. Returns false when there was nothing to do.
    pub async fn sync(&mut self, force_full: bool) -> Result<bool, SyncError> {
        let full = force_full || self.need_full;
        let (changed, trigger_times) = {
            let mut t = self.tracker();
            (t.take_changed(), t.take_trigger_times())
        };
        if !full && changed.is_empty() {
            return Ok(false);
        }
        let start = Instant::now();
        // Until a sync succeeds, the kernel state is unknown: the next one must be full.
        self.need_full = true;
        let render_tables = || render::render_tables(&self.cfg, &self.tracker(), (!full).then_some(&changed));
        let rendered = if full {
            // Both tables at once: the saves are reads, and each is a process start plus a
            // kernel dump, a fixed cost a full sync pays on top of the restore. Polled first
            // (`biased`), the child processes are under way while this task renders; only the
            // chain deletes and the missing jump rules wait for their output.
            let saves = async { tokio::try_join!(self.ipt.save("filter"), self.ipt.save("nat")) };
            let (saved, tables) = tokio::join!(biased; saves, async { render_tables() });
            let (filter, nat) = saved.map_err(SyncError::Save)?;
            let mut jumps = render::missing_jumps("filter", &filter);
            jumps.extend(render::missing_jumps("nat", &nat));
            tables.finish(&[&chains_in_save(&nat), &self.active_chains], &jumps)
        } else {
            render_tables().finish(&[&self.active_chains], &[])
        };
        if let Err(e) = self.ipt.restore(&rendered.text, true).await {
            self.metrics.restore_failures.inc();
            // upstream: the trigger times this sync took are dropped with it, so the retry that
            // commits the change does not report it.
            if !full {
                self.metrics.partial_restore_failures.inc();
            }
            match e.line() {
                Some(line) => {
                    tracing::error!(error = %e, rules = %lines_around(&rendered.text, line, 3), "iptables-restore failed")
                }
                None => tracing::error!(error = %e, "iptables-restore failed"),
            }
            return Err(SyncError::Restore(e));
        }
        self.need_full = false;
        self.active_chains = rendered.active_nat_chains;
        let elapsed = start.elapsed().as_secs_f64();
        self.metrics.sync_duration.observe(elapsed);
        if full { &self.metrics.full_sync_duration } else { &self.metrics.partial_sync_duration }.observe(elapsed);
        let now = SystemTime::now();
        self.metrics
            .last_sync_timestamp
            .set(now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default());
        for (table, n) in [("nat", rendered.nat_rules), ("filter", rendered.filter_rules)] {
            self.metrics.rules.get_or_create(&vec![("table".to_string(), table.to_string())]).set(n as i64);
        }
        self.health.record(now);
        // `now` is after iptables-restore returned: the kernel holds the change.
        for (service, seconds) in network_programming_latencies(&trigger_times, now) {
            self.metrics.network_programming_duration.observe(seconds);
            tracing::debug!(%service, seconds, "network programming");
        }
        tracing::debug!(full, services = changed.len(), seconds = elapsed, "synced iptables rules");
        Ok(true)
    }

    /// Syncs until `cancel`: after `synced` turns true (both informers listed), whenever
    /// `changes` is notified but at most once per `min_sync_period`, and fully every
    /// `sync_period`. A failed sync is retried, as a full sync, after `min_sync_period`.
    pub async fn run(
        mut self,
        changes: Arc<Notify>,
        mut synced: watch::Receiver<bool>,
        timing: Timing,
        cancel: CancellationToken,
    ) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = synced.wait_for(|s| *s) => if r.is_err() { return },
        }
        let mut next_full = Instant::now();
        let mut last_sync: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = changes.notified() => {}
                _ = tokio::time::sleep_until(next_full) => {}
            }
            if let Some(last) = last_sync {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(last + timing.min_sync_period) => {}
                }
            }
            let now = Instant::now();
            let full_due = now >= next_full;
            match self.sync(full_due).await {
                Ok(false) => continue,
                Ok(true) => {
                    if full_due {
                        next_full = now + timing.sync_period;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?timing.min_sync_period, "sync failed; retrying with a full sync");
                    next_full = now + timing.min_sync_period;
                }
            }
            last_sync = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::{Call, Fake};
    use crate::tracker::testutil::{service, slice};

    struct Harness {
        fake: Fake,
        registry: Registry,
        tracker: Arc<Mutex<Tracker>>,
        changes: Arc<Notify>,
        synced: watch::Sender<bool>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    const TIMING: Timing = Timing { min_sync_period: Duration::from_secs(1), sync_period: Duration::from_secs(30) };

    fn start() -> Harness {
        let fake = Fake::new();
        // Started an hour ago, so trigger times the tests write in the past count.
        let tracker = Arc::new(Mutex::new(Tracker::started_at(SystemTime::now() - Duration::from_secs(3600))));
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let cfg = RenderConfig { node_name: "node1".into(), ..Default::default() };
        let p = Proxier::new(fake.clone(), cfg, tracker.clone(), metrics, Arc::new(Health::default()));
        let changes = Arc::new(Notify::new());
        let (synced, rx) = watch::channel(false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(p.run(changes.clone(), rx, TIMING, cancel.clone()));
        Harness { fake, registry, tracker, changes, synced, cancel, task }
    }

    impl Harness {
        fn add_service(&self, n: u32) {
            let mut t = self.tracker.lock().expect("tracker");
            let name = format!("svc{n}");
            t.apply_service(&service("ns", &name, &format!("172.30.0.{n}"), &[("p", 80)]));
            t.apply_slice(&slice("ns", &name, &name, ("p", Some(80)), &[("10.180.0.1", "node1", true, true, false)]));
            drop(t);
            self.changes.notify_one();
        }

        /// Moves svc`n`'s endpoint to `ip` with the slice annotated as written at `written`.
        fn change_endpoint(&self, n: u32, ip: &str, written: SystemTime) {
            let name = format!("svc{n}");
            let mut s = slice("ns", &name, &name, ("p", Some(80)), &[(ip, "node1", true, true, false)]);
            let stamp =
                chrono::DateTime::<chrono::Utc>::from(written).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            s.metadata.annotations = Some([(crate::tracker::LAST_CHANGE_TRIGGER_TIME.to_string(), stamp)].into());
            self.tracker.lock().expect("tracker").apply_slice(&s);
            self.changes.notify_one();
        }

        /// `(count, sum)` of the network programming histogram, as /metrics shows them.
        fn network_programming(&self) -> (u64, f64) {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
            let sample = |suffix: &str| {
                let name = format!("kubeproxy_network_programming_duration_seconds_{suffix} ");
                text.lines().find_map(|l| l.strip_prefix(&name)?.parse::<f64>().ok()).expect("sample")
            };
            (sample("count") as u64, sample("sum"))
        }

        async fn stop(self) {
            self.cancel.cancel();
            self.task.await.expect("sync loop");
        }
    }

    /// Lets the loop run everything that is ready at the current (paused) instant.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_syncs_before_the_informers_have_listed() {
        let h = start();
        h.add_service(1);
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert!(h.fake.calls().is_empty());
        h.synced.send_replace(true);
        settle().await;
        assert_eq!(h.fake.calls()[..2], [Call::Save { table: "filter".into() }, Call::Save { table: "nat".into() }]);
        // The first full sync finds no jump rules and inserts them in the same restore.
        let restores = h.fake.restores();
        assert_eq!(restores.len(), 1);
        assert!(
            restores[0].contains("-I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n")
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn one_restore_per_sync_and_none_without_changes() {
        let h = start();
        h.synced.send_replace(true);
        settle().await;
        assert_eq!(h.fake.restores().len(), 1, "the initial full sync");
        // A notification without a tracked change (a status-only update) restores nothing.
        tokio::time::advance(Duration::from_secs(2)).await;
        h.changes.notify_one();
        settle().await;
        assert_eq!(h.fake.restores().len(), 1);
        // Three changes before the next sync make one restore, a partial one with all three.
        h.add_service(1);
        h.add_service(2);
        h.add_service(3);
        settle().await;
        let restores = h.fake.restores();
        assert_eq!(restores.len(), 2);
        for n in 1..=3 {
            assert!(restores[1].contains(&format!("\"ns/svc{n}:p cluster IP\"")), "{}", restores[1]);
        }
        assert!(h.fake.calls().iter().all(|c| !matches!(c, Call::Restore { noflush: false, .. })));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn syncs_are_at_least_min_sync_period_apart() {
        let h = start();
        h.synced.send_replace(true);
        settle().await;
        h.add_service(1);
        settle().await;
        assert_eq!(h.fake.restores().len(), 1, "a change right after a sync waits for --min-sync-period");
        tokio::time::advance(Duration::from_millis(999)).await;
        settle().await;
        assert_eq!(h.fake.restores().len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(h.fake.restores().len(), 2);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn full_resync_every_sync_period() {
        let h = start();
        h.synced.send_replace(true);
        settle().await;
        let saves = |f: &Fake| f.calls().iter().filter(|c| matches!(c, Call::Save { .. })).count();
        assert_eq!((h.fake.restores().len(), saves(&h.fake)), (1, 2));
        tokio::time::advance(Duration::from_secs(29)).await;
        settle().await;
        assert_eq!(h.fake.restores().len(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        // Nothing changed, but the periodic full sync restores (and re-reads the kernel) anyway.
        assert_eq!((h.fake.restores().len(), saves(&h.fake)), (2, 4));
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn failed_restore_is_retried_as_a_full_sync() {
        let h = start();
        h.synced.send_replace(true);
        settle().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        h.fake.fail_next_restores(1);
        h.add_service(1);
        settle().await;
        // The partial restore failed ...
        assert_eq!(h.fake.restores().len(), 2);
        let saves_before = h.fake.calls().iter().filter(|c| matches!(c, Call::Save { .. })).count();
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        // ... so after --min-sync-period a full one (save both tables + restore) follows,
        // without any new change.
        let restores = h.fake.restores();
        assert_eq!(restores.len(), 3);
        assert!(restores[2].contains("\"ns/svc1:p cluster IP\""));
        let saves_after = h.fake.calls().iter().filter(|c| matches!(c, Call::Save { .. })).count();
        assert_eq!(saves_after, saves_before + 2);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn full_sync_deletes_stale_chains_a_previous_run_left() {
        let h = start();
        h.fake.set_saved_nat("*nat\n:KUBE-SVC-LEFTOVER0000000 - [0:0]\n:KUBE-MARK-DROP - [0:0]\nCOMMIT\n");
        h.synced.send_replace(true);
        settle().await;
        let restores = h.fake.restores();
        assert_eq!(restores.len(), 1);
        assert!(restores[0].contains(":KUBE-SVC-LEFTOVER0000000 - [0:0]\n"), "{}", restores[0]);
        assert!(restores[0].contains("-X KUBE-SVC-LEFTOVER0000000\n"), "{}", restores[0]);
        assert!(!restores[0].contains("KUBE-MARK-DROP"), "{}", restores[0]);
        h.stop().await;
    }

    #[test]
    fn network_programming_buckets_are_upstreams() {
        let b = network_programming_buckets();
        assert_eq!(b.len(), 2 + 59 + 12 + 7);
        assert_eq!(b[..4], [0.25, 0.5, 1.0, 2.0]);
        assert_eq!((b[60], b[61], b[72], b[73]), (59.0, 60.0, 115.0, 120.0));
        assert_eq!(b.last(), Some(&300.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn latencies_are_commit_minus_each_trigger_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let (a, b) = (ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b"));
        let times = BTreeMap::from([
            (a.clone(), vec![t0, t0 + Duration::from_millis(1500)]),
            (b.clone(), vec![t0 + Duration::from_secs(5)]),
        ]);
        let committed = t0 + Duration::from_secs(2);
        assert_eq!(
            network_programming_latencies(&times, committed),
            [(a.clone(), 2.0), (a, 0.5), (b, -3.0)],
            "a writer clock ahead of ours gives a negative latency, as upstream"
        );
        assert!(network_programming_latencies(&BTreeMap::new(), committed).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_committed_slice_change_observes_its_network_programming_latency() {
        let h = start();
        h.add_service(1);
        h.synced.send_replace(true);
        settle().await;
        assert_eq!(h.fake.restores().len(), 1);
        assert_eq!(h.network_programming().0, 0, "the initial slices carry no trigger time");
        tokio::time::advance(Duration::from_secs(2)).await;
        h.change_endpoint(1, "10.180.0.2", SystemTime::now() - Duration::from_secs(3));
        settle().await;
        assert_eq!(h.fake.restores().len(), 2);
        let (count, sum) = h.network_programming();
        assert_eq!(count, 1);
        // Real time passed between the write stamp and the commit: a little over 3 s.
        assert!((3.0..4.0).contains(&sum), "{sum}");

        // A failed restore drops the times it took; its retry (a full sync) reports nothing.
        tokio::time::advance(Duration::from_secs(2)).await;
        h.fake.fail_next_restores(1);
        h.change_endpoint(1, "10.180.0.3", SystemTime::now());
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(h.fake.restores().len(), 4, "the failed partial restore and the full retry");
        assert_eq!(h.network_programming().0, 1);
        h.stop().await;
    }
}
