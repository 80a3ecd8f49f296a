//! `/metrics` (Prometheus text), `/health` (CoreDNS's health plugin: 200 `OK` while the
//! process serves) and `/ready` (CoreDNS's ready plugin: 200 once the Services and
//! EndpointSlices have been listed, 503 before).

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::zone::Zone;

#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub zone: Arc<RwLock<Zone>>,
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(s): State<Shared>) -> impl IntoResponse {
    let synced = s.zone.read().map(|z| z.synced()).unwrap_or(false);
    if synced {
        (StatusCode::OK, "OK")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the Service and EndpointSlice watches have not listed yet")
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: Shared, cancel: CancellationToken) {
    if let Err(e) =
        axum::serve(listener, router(state)).with_graceful_shutdown(async move { cancel.cancelled().await }).await
    {
        tracing::error!(error = %e, "the metrics and health server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, Observation};
    use tower::ServiceExt;

    async fn get(state: Shared, path: &str) -> (StatusCode, String) {
        let resp = router(state)
            .oneshot(axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("response");
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn ready_waits_for_the_first_list_and_metrics_use_coredns_names() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.observe(&Observation {
            zone: "cluster.local.",
            proto: "udp",
            ipv6_client: false,
            qtype: "A",
            rcode: "NXDOMAIN",
            seconds: 0.0001,
        });
        let zone = Arc::new(RwLock::new(Zone::new("cluster.local", 1).expect("zone")));
        let state = Shared { registry: Arc::new(registry), zone: zone.clone() };
        assert_eq!(get(state.clone(), "/health").await, (StatusCode::OK, "OK".to_owned()));
        assert_eq!(get(state.clone(), "/ready").await.0, StatusCode::SERVICE_UNAVAILABLE);
        zone.write().expect("lock").mark_synced();
        assert_eq!(get(state.clone(), "/ready").await, (StatusCode::OK, "OK".to_owned()));
        let (code, body) = get(state, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        for want in [
            r#"coredns_dns_requests_total{zone="cluster.local.",proto="udp",family="1",type="A"} 1"#,
            r#"coredns_dns_responses_total{zone="cluster.local.",rcode="NXDOMAIN"} 1"#,
            r#"coredns_dns_request_duration_seconds_bucket{le="0.00025",zone="cluster.local.",type="A"} 1"#,
            "coredns_forward_requests_total 0",
        ] {
            assert!(body.contains(want), "{want} missing in\n{body}");
        }
    }
}
