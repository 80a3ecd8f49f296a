//! /healthz and /metrics over plain HTTP on a loopback address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

async fn metrics(State(reg): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &reg) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response(),
        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response(),
    }
}

pub fn router(reg: Arc<Registry>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/metrics", get(metrics)).with_state(reg)
}

/// Serves until `cancel`; the handle finishes when the server has stopped.
pub async fn start(
    addr: SocketAddr,
    reg: Arc<Registry>,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let serve = axum::serve(listener, router(reg)).with_graceful_shutdown(async move { cancel.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "health server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn healthz_and_metrics_answer() {
        let mut reg = Registry::default();
        let m = crate::metrics::Metrics::new(&mut reg);
        m.attempt("scheduled", 0.01);
        let app = router(Arc::new(reg));
        let res = app
            .clone()
            .oneshot(axum::http::Request::get("/healthz").body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(res.status(), 200);
        let res = app
            .oneshot(axum::http::Request::get("/metrics").body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("response");
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1"),
            "{text}"
        );
    }
}
