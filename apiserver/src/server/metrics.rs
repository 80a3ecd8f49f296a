//! Prometheus metrics of the apiserver, in a registry owned by the server (not a global).

use std::sync::Mutex;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: String,
}

/// Keeps a watch counted in `apiserver_registered_watchers` while it lives.
pub struct WatchGuard {
    gauge: Family<WatchLabels, Gauge>,
    labels: WatchLabels,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.get_or_create(&self.labels).dec();
    }
}

pub struct Metrics {
    registry: Mutex<Registry>,
    watchers: Family<WatchLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])
}

/// upstream's verb names: LIST and WATCH are told apart from GET.
/// `parsed` is `path` as [`super::path::parse`] reads it.
pub fn verb(method: &Method, path: &str, query: &str, parsed: Option<&super::path::ApiPath>) -> String {
    let is_watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1") || path.contains("/watch/");
    match *method {
        Method::GET if is_watch => "WATCH".into(),
        Method::GET => match parsed {
            Some(p) if p.name.is_none() => "LIST".into(),
            _ => "GET".into(),
        },
        ref m => m.as_str().to_string(),
    }
}

impl Metrics {
    pub fn new(etcd: &crate::storage::EtcdLatency) -> Self {
        let mut registry = Registry::default();
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Number of currently open watches by resource",
            watchers.clone(),
        );
        registry.register(
            "etcd_request_duration_seconds",
            "Latency of etcd requests in seconds by operation and resource type",
            etcd.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests by verb, resource and code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds by verb and resource",
            latency.clone(),
        );
        Self { registry: Mutex::new(registry), watchers, requests, latency }
    }

    pub fn observe(&self, verb: &str, resource: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        if verb != "WATCH" {
            self.latency
                .get_or_create(&LatencyLabels { verb: verb.into(), resource: resource.into() })
                .observe(took.as_secs_f64());
        }
    }

    pub fn watch_started(&self, resource: &str) -> WatchGuard {
        let labels = WatchLabels { resource: resource.to_string() };
        self.watchers.get_or_create(&labels).inc();
        WatchGuard { gauge: self.watchers.clone(), labels }
    }

    pub fn render(&self) -> Response {
        let mut out = String::new();
        let ok = self
            .registry
            .lock()
            .map(|r| prometheus_client::encoding::text::encode(&mut out, &r).is_ok())
            .unwrap_or(false);
        if !ok {
            return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
        }
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
    }
}
