//! `/metrics` (Prometheus text) and `/healthz` (upstream's proxier health shape:
//! `lastUpdated` and `currentTime`, 503 when no sync succeeded within twice the sync period).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::proxier::Health;

#[derive(Clone)]
pub struct State {
    pub registry: Arc<Registry>,
    pub health: Arc<Health>,
    pub sync_period: Duration,
}

pub fn router(state: State) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(axum::extract::State(s): axum::extract::State<State>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn healthz(axum::extract::State(s): axum::extract::State<State>) -> impl IntoResponse {
    let now = SystemTime::now();
    let last = s.health.last_sync();
    let healthy = last.is_some_and(|l| now.duration_since(l).unwrap_or_default() <= 2 * s.sync_period);
    let body = serde_json::json!({
        "lastUpdated": last.map(rfc3339).unwrap_or_default(),
        "currentTime": rfc3339(now),
    });
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

pub async fn serve(listener: tokio::net::TcpListener, state: State, cancel: CancellationToken) {
    if let Err(e) =
        axum::serve(listener, router(state)).with_graceful_shutdown(async move { cancel.cancelled().await }).await
    {
        tracing::error!(error = %e, "the health and metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxier::Metrics;
    use tower::ServiceExt;

    async fn get(state: State, path: &str) -> (StatusCode, String) {
        let resp = router(state)
            .oneshot(axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("response");
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_is_unavailable_until_a_sync_succeeds_and_metrics_list_upstream_names() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        m.rules.get_or_create(&vec![("table".into(), "nat".into())]).set(7);
        let state = State {
            registry: Arc::new(registry),
            health: Arc::new(Health::default()),
            sync_period: Duration::from_secs(30),
        };
        let (code, body) = get(state.clone(), "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let (code, body) = get(state, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        for name in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"} 7",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
        ] {
            assert!(body.contains(name), "{name} missing in\n{body}");
        }
    }

    #[tokio::test]
    async fn healthz_reports_the_last_sync_and_goes_stale_after_two_sync_periods() {
        let health = Arc::new(Health::default());
        let state = State {
            registry: Arc::new(Registry::default()),
            health: health.clone(),
            sync_period: Duration::from_secs(30),
        };
        health.record(SystemTime::now());
        let (code, body) = get(state.clone(), "/healthz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(v["lastUpdated"].as_str().is_some_and(|s| s.ends_with('Z')), "{body}");
        health.record(SystemTime::now() - Duration::from_secs(61));
        let (code, _) = get(state, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    }
}
