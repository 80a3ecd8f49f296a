//! The scheduling queue (upstream `internal/queue.PriorityQueue`), pure: time comes in as an
//! argument so backoff and the unschedulable timeout are tested without a clock.
//!
//! - activeQ: pods ready to be tried, highest `spec.priority` first, then oldest.
//! - backoffQ: pods that failed recently, each waiting 1 s doubling per attempt up to 10 s.
//!   As upstream 1.33 (SchedulerPopFromBackoffQ, beta and on by default), an idle scheduler
//!   takes pods that were unschedulable from the backoffQ before their backoff ends; pods
//!   backing off after an error (a failed binding) still wait it out. With the gate off
//!   every pod waits its backoff out, as before 1.33.
//! - unschedulable: pods no node fits; they move back when a cluster event that could help
//!   them happens (an event names the plugins it can help; a pod rejected by other plugins
//!   stays), and after 5 minutes at the latest.
//!
//! Heaps use lazy deletion: each entry carries the pod's `seq`, and an entry whose seq no
//! longer matches the pod's current one is skipped.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::types::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// upstream `DefaultPodMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    /// When the pod entered its current queue.
    timestamp: Instant,
    initial_attempt: Option<Instant>,
    attempts: u32,
    /// Plugins that rejected it last time; empty means "any event may help".
    unschedulable_plugins: Vec<&'static str>,
    location: Location,
    seq: u64,
    /// Set when the pod was deleted or bound by someone else while in flight.
    gone: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveKey {
    priority: i32,
    created: i64,
    seq: u64,
    uid: String,
}

impl Ord for ActiveKey {
    fn cmp(&self, o: &Self) -> Ordering {
        // Max-heap: higher priority first, then earlier creation, then earlier insertion.
        self.priority.cmp(&o.priority).then(o.created.cmp(&self.created)).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A pod handed to a scheduling cycle.
#[derive(Debug, Clone)]
pub struct Popped {
    pub info: Arc<PodInfo>,
    pub attempts: u32,
    pub cycle: u64,
    pub initial_attempt: Instant,
}

#[derive(Debug, Default)]
pub struct Queue {
    /// The SchedulerPopFromBackoffQ feature gate.
    pop_from_backoff: bool,
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Pods backing off after an error: never popped early.
    error_backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// The pods in the unschedulable set, so cluster events cost its size, not the queue's.
    unschedulable_uids: std::collections::HashSet<String>,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
}

/// upstream `calculateBackoffDuration`.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

fn created(info: &PodInfo) -> i64 {
    info.pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_microsecond()).unwrap_or(0)
}

impl Queue {
    pub fn new() -> Self {
        Self::with_pop_from_backoff(true)
    }

    /// A queue with the SchedulerPopFromBackoffQ gate as given.
    pub fn with_pop_from_backoff(on: bool) -> Self {
        Self { pop_from_backoff: on, ..Self::default() }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_active(&mut self, uid: &str, now: Instant) {
        self.unschedulable_uids.remove(uid);
        let seq = self.next_seq();
        let Some(e) = self.pods.get_mut(uid) else { return };
        e.location = Location::Active;
        e.seq = seq;
        e.timestamp = now;
        self.active.push(ActiveKey { priority: e.info.priority, created: created(&e.info), seq, uid: uid.to_string() });
    }

    fn backoff_expiry(e: &Entry) -> Instant {
        e.timestamp + backoff_duration(e.attempts)
    }

    fn push_backoff(&mut self, uid: &str, now: Instant) {
        self.push_backoff_kind(uid, now, false);
    }

    fn push_backoff_kind(&mut self, uid: &str, now: Instant, error: bool) {
        self.unschedulable_uids.remove(uid);
        let seq = self.next_seq();
        let Some(e) = self.pods.get_mut(uid) else { return };
        e.location = Location::Backoff;
        e.seq = seq;
        e.timestamp = now;
        let expiry = Self::backoff_expiry(e);
        let heap = if error { &mut self.error_backoff } else { &mut self.backoff };
        heap.push(Reverse((expiry, seq, uid.to_string())));
    }

    fn push_unschedulable(&mut self, uid: &str, now: Instant) {
        self.unschedulable_uids.insert(uid.to_string());
        let seq = self.next_seq();
        let Some(e) = self.pods.get_mut(uid) else { return };
        e.location = Location::Unschedulable;
        e.seq = seq;
        e.timestamp = now;
        self.unschedulable.push(Reverse((now + MAX_UNSCHEDULABLE, seq, uid.to_string())));
    }

    /// A pod the informer reports waiting for a node (new or updated).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let uid = info.uid.clone();
        match self.pods.get_mut(&uid) {
            None => {
                self.pods.insert(
                    uid.clone(),
                    Entry {
                        info,
                        timestamp: now,
                        initial_attempt: None,
                        attempts: 0,
                        unschedulable_plugins: Vec::new(),
                        location: Location::Active,
                        seq: 0,
                        gone: false,
                    },
                );
                self.push_active(&uid, now);
            }
            Some(e) => {
                // Our own status writes (the PodScheduled condition) come back as updates; only
                // a change to what scheduling reads is worth another try.
                let relevant =
                    e.info.pod.spec != info.pod.spec || e.info.pod.metadata.labels != info.pod.metadata.labels;
                let priority_changed = e.info.priority != info.priority;
                e.info = info;
                match e.location {
                    Location::Unschedulable if relevant => {
                        if Self::backoff_expiry(e) > now {
                            self.push_backoff(&uid, now);
                        } else {
                            self.push_active(&uid, now);
                        }
                    }
                    Location::Active if priority_changed => self.push_active(&uid, now),
                    _ => {}
                }
            }
        }
    }

    /// The pod was deleted, or bound (by us or anyone): it leaves the queue.
    pub fn delete(&mut self, uid: &str) {
        self.unschedulable_uids.remove(uid);
        if let Some(e) = self.pods.get_mut(uid) {
            if e.location == Location::InFlight {
                e.gone = true;
            } else {
                self.pods.remove(uid);
            }
        }
    }

    /// Moves the first pod of `heap` (a backoff heap) to the activeQ if `early` or its backoff
    /// is over; returns whether one moved. Stale entries are dropped on the way.
    fn flush_one(&mut self, error: bool, now: Instant, early: bool) -> bool {
        loop {
            let heap = if error { &mut self.error_backoff } else { &mut self.backoff };
            let Some(Reverse((t, seq, uid))) = heap.peek().cloned() else { return false };
            let live = self.pods.get(&uid).is_some_and(|e| e.seq == seq && e.location == Location::Backoff);
            if live && t > now && !early {
                return false;
            }
            heap.pop();
            if live {
                self.push_active(&uid, now);
                return true;
            }
        }
    }

    /// Moves pods whose backoff or unschedulable time is over.
    fn flush(&mut self, now: Instant) {
        while self.flush_one(false, now, false) {}
        while self.flush_one(true, now, false) {}
        while let Some(Reverse((t, seq, uid))) = self.unschedulable.peek().cloned() {
            let live = self.pods.get(&uid).is_some_and(|e| e.seq == seq && e.location == Location::Unschedulable);
            if live && t > now {
                break;
            }
            self.unschedulable.pop();
            if live {
                self.move_one(&uid, now);
            }
        }
    }

    fn move_one(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.pods.get(uid) else { return };
        if Self::backoff_expiry(e) > now {
            self.push_backoff(uid, now);
        } else {
            self.push_active(uid, now);
        }
    }

    /// The next pod to schedule, if one is ready.
    pub fn pop(&mut self, now: Instant) -> Option<Popped> {
        self.flush(now);
        if let Some(p) = self.pop_active(now) {
            return Some(p);
        }
        // upstream SchedulerPopFromBackoffQ: nothing else to do, so the pod whose backoff
        // ends first goes now (the claim or node it waited for may be there already).
        while self.pop_from_backoff && self.flush_one(false, now, true) {
            if let Some(p) = self.pop_active(now) {
                return Some(p);
            }
        }
        None
    }

    fn pop_active(&mut self, now: Instant) -> Option<Popped> {
        while let Some(k) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&k.uid) else { continue };
            if e.seq != k.seq || e.location != Location::Active {
                continue;
            }
            self.scheduling_cycle += 1;
            e.location = Location::InFlight;
            e.attempts += 1;
            let initial = *e.initial_attempt.get_or_insert(now);
            return Some(Popped {
                info: e.info.clone(),
                attempts: e.attempts,
                cycle: self.scheduling_cycle,
                initial_attempt: initial,
            });
        }
        None
    }

    /// When `pop` may next have something without an event: the earliest backoff or
    /// unschedulable expiry.
    pub fn next_wakeup(&self) -> Option<Instant> {
        [&self.backoff, &self.error_backoff, &self.unschedulable]
            .into_iter()
            .filter_map(|h| h.peek().map(|Reverse((t, _, _))| *t))
            .min()
    }

    /// The in-flight pod was bound (or its binding is under way): it is done here.
    pub fn done(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|e| e.location == Location::InFlight) {
            self.pods.remove(uid);
        }
    }

    /// The in-flight pod fit nowhere. It waits for a cluster event that involves one of
    /// `plugins` — unless such an event already happened during its cycle, in which case it
    /// only backs off (upstream `moveRequestCycle`).
    pub fn requeue_unschedulable(&mut self, uid: &str, cycle: u64, plugins: Vec<&'static str>, now: Instant) {
        let Some(e) = self.pods.get_mut(uid) else { return };
        if e.gone {
            self.pods.remove(uid);
            return;
        }
        e.unschedulable_plugins = plugins;
        if self.move_request_cycle >= cycle {
            self.push_backoff(uid, now);
        } else {
            self.push_unschedulable(uid, now);
        }
    }

    /// The in-flight pod hit an error (a failed binding, say): it backs off and retries.
    pub fn requeue_backoff(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.pods.get(uid) else { return };
        if e.gone {
            self.pods.remove(uid);
            return;
        }
        self.push_backoff_kind(uid, now, true);
    }

    /// A pod whose binding failed after it left the queue comes back for another try.
    pub fn readd_after_error(&mut self, info: Arc<PodInfo>, attempts: u32, now: Instant) {
        let uid = info.uid.clone();
        self.pods.insert(
            uid.clone(),
            Entry {
                info,
                timestamp: now,
                initial_attempt: Some(now),
                attempts,
                unschedulable_plugins: Vec::new(),
                location: Location::Backoff,
                seq: 0,
                gone: false,
            },
        );
        self.push_backoff_kind(&uid, now, true);
    }

    /// A cluster event happened that could make pods rejected by `plugins` fit (None: any
    /// pod). upstream `MoveAllToActiveOrBackoffQueue`.
    pub fn move_for_event(&mut self, plugins: Option<&[&str]>, now: Instant) {
        self.move_request_cycle = self.scheduling_cycle;
        let uids: Vec<String> = self
            .unschedulable_uids
            .iter()
            .filter_map(|u| self.pods.get(u).map(|e| (u, e)))
            .filter(|(_, e)| match plugins {
                None => true,
                Some(ps) => {
                    e.unschedulable_plugins.is_empty() || e.unschedulable_plugins.iter().any(|p| ps.contains(p))
                }
            })
            .map(|(u, _)| u.clone())
            .collect();
        for uid in uids {
            self.move_one(&uid, now);
        }
    }

    /// Every pod in the queue (for dropping the ones a re-list no longer shows).
    pub fn uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    pub fn location(&self, uid: &str) -> Option<Location> {
        self.pods.get(uid).map(|e| e.location)
    }

    /// (active, backoff, unschedulable) counts, for the pending_pods metric.
    pub fn lens(&self) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for e in self.pods.values() {
            match e.location {
                Location::Active => n.0 += 1,
                Location::Backoff => n.1 += 1,
                Location::Unschedulable => n.2 += 1,
                Location::InFlight => {}
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;

    /// Pod "p" added, popped and rejected by `plugin` at the returned instant.
    fn rejected_once(q: &mut Queue, plugin: &'static str) -> (Instant, Popped) {
        let t0 = Instant::now();
        q.add_or_update(info("p", 0, 0), t0);
        let p = q.pop(t0).expect("ready");
        q.requeue_unschedulable(&p.info.uid, p.cycle, vec![plugin], t0);
        (t0, p)
    }

    fn info(name: &str, priority: i32, created_s: i64) -> Arc<PodInfo> {
        let mut p = pod(name, "100m", "");
        p.spec.as_mut().expect("spec").priority = Some(priority);
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created_s).expect("valid"),
        ));
        Arc::new(PodInfo::new(p))
    }

    #[test]
    fn active_queue_orders_by_priority_then_creation_time() {
        let mut q = Queue::new();
        let now = Instant::now();
        q.add_or_update(info("low-old", 0, 0), now);
        q.add_or_update(info("high-new", 10, 5), now);
        q.add_or_update(info("low-new", 0, 3), now);
        q.add_or_update(info("high-old", 10, 1), now);
        let order: Vec<String> = std::iter::from_fn(|| q.pop(now)).map(|p| p.info.name.clone()).collect();
        assert_eq!(order, ["high-old", "high-new", "low-old", "low-new"]);
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let got: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn failed_pod_waits_out_its_backoff() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.add_or_update(info("p", 0, 0), t0);
        let p = q.pop(t0).expect("ready");
        q.requeue_backoff(&p.info.uid, t0);
        assert!(q.pop(t0 + Duration::from_millis(999)).is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        let p = q.pop(t0 + Duration::from_secs(1)).expect("backoff over");
        assert_eq!(p.attempts, 2);
        q.requeue_backoff(&p.info.uid, t0 + Duration::from_secs(1));
        assert!(q.pop(t0 + Duration::from_millis(2999)).is_none(), "second failure waits 2 s");
        assert!(q.pop(t0 + Duration::from_secs(3)).is_some());
    }

    #[test]
    fn unschedulable_pod_moves_on_a_relevant_event_only() {
        let mut q = Queue::new();
        let (t0, p) = rejected_once(&mut q, "NodeResourcesFit");
        let later = t0 + Duration::from_secs(20);
        q.move_for_event(Some(&["InterPodAffinity"]), later);
        assert_eq!(q.location(&p.info.uid), Some(Location::Unschedulable));
        q.move_for_event(Some(&["NodeResourcesFit"]), later);
        assert_eq!(q.location(&p.info.uid), Some(Location::Active));
    }

    #[test]
    fn event_during_the_cycle_sends_the_pod_to_backoff_not_unschedulable() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.add_or_update(info("p", 0, 0), t0);
        let p = q.pop(t0).expect("ready");
        q.move_for_event(None, t0);
        q.requeue_unschedulable(&p.info.uid, p.cycle, vec!["NodeResourcesFit"], t0);
        assert_eq!(q.location(&p.info.uid), Some(Location::Backoff));
    }

    #[test]
    fn an_idle_queue_pops_a_pod_from_backoff_early_but_not_one_that_hit_an_error() {
        let mut q = Queue::new();
        let (t0, p) = rejected_once(&mut q, "VolumeBinding");
        // The claim it waited for appears 10 ms later: the pod is in backoff until t0 + 1 s...
        let t1 = t0 + Duration::from_millis(10);
        q.move_for_event(Some(&["VolumeBinding"]), t1);
        assert_eq!(q.location(&p.info.uid), Some(Location::Backoff));
        // ...but a pod that is ready now goes first, and then, with nothing else to do, it.
        q.add_or_update(info("other", 0, 1), t1);
        assert_eq!(q.pop(t1).expect("active first").info.name, "other");
        let again = q.pop(t1).expect("popped from backoff early");
        assert_eq!((again.info.name.as_str(), again.attempts), ("p", 2));
        // An error backoff (a failed binding) is a rate limit and is waited out.
        q.requeue_backoff(&again.info.uid, t1);
        assert!(q.pop(t1 + Duration::from_millis(100)).is_none());
    }

    #[test]
    fn with_the_gate_off_an_idle_queue_waits_the_backoff_out() {
        let mut q = Queue::with_pop_from_backoff(false);
        let (t0, p) = rejected_once(&mut q, "VolumeBinding");
        let t1 = t0 + Duration::from_millis(10);
        q.move_for_event(Some(&["VolumeBinding"]), t1);
        assert!(q.pop(t1).is_none(), "idle, but the pod is still backing off");
        assert_eq!(q.location(&p.info.uid), Some(Location::Backoff));
        let again = q.pop(t1 + Duration::from_secs(1)).expect("backoff over");
        assert_eq!((again.info.name.as_str(), again.attempts), ("p", 2));
    }

    #[test]
    fn unschedulable_pods_are_retried_after_five_minutes_at_the_latest() {
        let mut q = Queue::new();
        let (t0, _) = rejected_once(&mut q, "NodeResourcesFit");
        assert!(q.pop(t0 + Duration::from_secs(299)).is_none());
        assert!(q.pop(t0 + MAX_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn status_only_update_does_not_retry_an_unschedulable_pod() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        let i = info("p", 0, 0);
        q.add_or_update(i.clone(), t0);
        let p = q.pop(t0).expect("ready");
        q.requeue_unschedulable(&p.info.uid, p.cycle, vec![], t0);
        let mut changed = (*i.pod).clone();
        changed.status = Some(Default::default());
        q.add_or_update(Arc::new(PodInfo::new(changed.clone())), t0 + Duration::from_secs(30));
        assert_eq!(q.location(&p.info.uid), Some(Location::Unschedulable));
        changed.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.add_or_update(Arc::new(PodInfo::new(changed)), t0 + Duration::from_secs(30));
        assert_eq!(q.location(&p.info.uid), Some(Location::Active));
    }

    #[test]
    fn pod_deleted_in_flight_is_not_requeued() {
        let mut q = Queue::new();
        let t0 = Instant::now();
        q.add_or_update(info("p", 0, 0), t0);
        let p = q.pop(t0).expect("ready");
        q.delete(&p.info.uid);
        q.requeue_backoff(&p.info.uid, t0);
        assert_eq!(q.location(&p.info.uid), None);
    }
}
