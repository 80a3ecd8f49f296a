//! `/healthz` and `/metrics` (Prometheus text format) over plain HTTP.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn serve(listener: tokio::net::TcpListener, registry: Arc<Registry>, cancel: CancellationToken) {
    let app = router(registry);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await {
        tracing::error!(error = %e, "the health and metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_lists_workqueue_depth_per_controller() {
        let mut registry = Registry::default();
        let m = crate::controllers::metrics::Metrics::new(&mut registry);
        m.depth.get_or_create(&crate::controllers::metrics::Metrics::queue("replicaset")).set(3);
        let resp = router(Arc::new(registry))
            .oneshot(axum::http::Request::get("/metrics").body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("workqueue_depth{name=\"replicaset\"} 3"), "{text}");
    }
}
