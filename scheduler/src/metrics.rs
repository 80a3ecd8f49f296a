//! The scheduler's Prometheus metrics, upstream's names, registered into a registry passed in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
    pub profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: &'static str,
    pub extension_point: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    /// `scheduler_schedule_attempts_total{result=scheduled|unschedulable|error}`.
    pub attempts: Family<ResultLabels, Counter>,
    /// `scheduler_scheduling_attempt_duration_seconds`: one cycle, by result.
    pub attempt_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    /// `scheduler_pod_scheduling_sli_duration_seconds`: first attempt to bound, per pod.
    pub e2e: Histogram,
    /// `scheduler_pending_pods{queue=active|backoff|unschedulable}`.
    pub pending: Family<QueueLabels, Gauge>,
    /// `scheduler_plugin_execution_duration_seconds` (sampled cycles, as upstream samples).
    pub plugin_duration: Family<PluginLabels, Histogram, fn() -> Histogram>,
}

fn attempt_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn plugin_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00001, 1.5, 20))
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_histogram),
            e2e: Histogram::new(exponential_buckets(0.01, 2.0, 20)),
            pending: Family::default(),
            plugin_duration: Family::new_with_constructor(plugin_histogram),
        };
        let r = registry.sub_registry_with_prefix("scheduler");
        r.register("schedule_attempts", "Number of attempts to schedule pods, by the result.", m.attempts.clone());
        r.register(
            "scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
            m.attempt_duration.clone(),
        );
        r.register(
            "pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue.",
            m.e2e.clone(),
        );
        r.register("pending_pods", "Number of pending pods, by the queue type.", m.pending.clone());
        r.register(
            "plugin_execution_duration_seconds",
            "Duration for running a plugin at a specific extension point.",
            m.plugin_duration.clone(),
        );
        m
    }

    pub fn attempt(&self, result: &'static str, seconds: f64) {
        let l = ResultLabels { result, profile: crate::SCHEDULER_NAME };
        self.attempts.get_or_create(&l).inc();
        self.attempt_duration.get_or_create(&l).observe(seconds);
    }

    pub fn set_pending(&self, (active, backoff, unschedulable): (usize, usize, usize)) {
        self.pending.get_or_create(&QueueLabels { queue: "active" }).set(active as i64);
        self.pending.get_or_create(&QueueLabels { queue: "backoff" }).set(backoff as i64);
        self.pending.get_or_create(&QueueLabels { queue: "unschedulable" }).set(unschedulable as i64);
    }
}
