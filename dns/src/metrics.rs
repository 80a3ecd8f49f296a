//! CoreDNS's metric names, so dashboards and alerts written for CoreDNS read ours:
//! `coredns_dns_requests_total{zone,proto,family,type}`,
//! `coredns_dns_responses_total{zone,rcode}`,
//! `coredns_dns_request_duration_seconds{zone,type}` and `coredns_forward_requests_total`.
//! Label sets are fixed-size arrays of static strings: counting a query allocates nothing.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// upstream CoreDNS: `prometheus.ExponentialBuckets(0.00025, 2, 16)`.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

pub struct Metrics {
    pub requests: Family<Labels<4>, Counter>,
    pub responses: Family<Labels<2>, Counter>,
    pub duration: Family<Labels<2>, Histogram, fn() -> Histogram>,
    pub forwards: Counter,
}

/// One answered query, for the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The cluster domain (`cluster.local.`) or `.` for forwarded names.
    pub zone: &'static str,
    pub proto: &'static str,
    pub ipv6_client: bool,
    pub qtype: &'static str,
    pub rcode: &'static str,
    pub seconds: f64,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            forwards: Counter::default(),
        };
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            m.requests.clone(),
        );
        registry.register("coredns_dns_responses", "Counter of response status codes.", m.responses.clone());
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            m.duration.clone(),
        );
        registry.register("coredns_forward_requests", "Counter of requests made per upstream.", m.forwards.clone());
        m
    }

    pub fn observe(&self, o: &Observation) {
        let family = if o.ipv6_client { "2" } else { "1" };
        self.requests
            .get_or_create(&[("zone", o.zone), ("proto", o.proto), ("family", family), ("type", o.qtype)])
            .inc();
        self.responses.get_or_create(&[("zone", o.zone), ("rcode", o.rcode)]).inc();
        self.duration.get_or_create(&[("zone", o.zone), ("type", o.qtype)]).observe(o.seconds);
    }
}
