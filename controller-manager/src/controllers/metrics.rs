//! Per-controller metrics, registered into the registry `run` serves on `/metrics`:
//! upstream's `workqueue_depth` / `workqueue_adds_total` / `workqueue_retries_total` (label
//! `name`), and the reconcile duration and error count per controller.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, &'static str)>;

fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    pub depth: Family<Labels, Gauge>,
    pub adds: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub errors: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            duration: Family::new_with_constructor(reconcile_histogram),
            errors: Family::default(),
        };
        registry.register("workqueue_depth", "Current depth of the workqueue", m.depth.clone());
        registry.register("workqueue_adds", "Keys the workqueue handed to a worker", m.adds.clone());
        registry.register("workqueue_retries", "Rate-limited requeues", m.retries.clone());
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time one reconcile took, per controller",
            m.duration.clone(),
        );
        registry.register("controller_reconcile_errors", "Reconciles that failed, per controller", m.errors.clone());
        m
    }

    pub fn queue(name: &'static str) -> Labels {
        vec![("name", name)]
    }

    pub fn controller(name: &'static str) -> Labels {
        vec![("controller", name)]
    }
}
