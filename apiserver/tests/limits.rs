//! The in-flight limit: once every slot is taken, a request gets 429 TooManyRequests with a
//! Retry-After header (which kubectl honours) and changes nothing. Long-running requests
//! (watches) do not take a slot.

use std::sync::Arc;

use crate::support::{Etcd, Server};
use axum::body::Body;
use http::Request;
use rkube_apiserver::server::{self, App, ConnIdentity};
use tower::ServiceExt;

#[tokio::test]
async fn full_in_flight_limit_answers_429_with_retry_after() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let store = s.running.as_ref().expect("running").store.clone();
    let app = Arc::new(App {
        store,
        auth: server::auth::Authenticator::default(),
        metrics: server::metrics::Metrics::new(&rkube_apiserver::storage::etcd_latency()),
        // No slot free: every non-long-running request must be turned away.
        inflight: Arc::new(tokio::sync::Semaphore::new(0)),
        kubelet: None,
    });
    let admin =
        component_base::tls::PeerIdentity { user: "kubernetes-admin".into(), groups: vec!["system:masters".into()] };
    let request = |uri: &str, method: &str| {
        let mut r = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from("{\"metadata\":{\"name\":\"x\"}}"))
            .expect("request");
        r.extensions_mut().insert(ConnIdentity(Some(admin.clone())));
        r
    };
    let resp = server::router(app.clone())
        .oneshot(request("/api/v1/namespaces/default/configmaps", "POST"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    let st: serde_json::Value = serde_json::from_slice(&body).expect("status");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(s.get("/api/v1/namespaces/default/configmaps/x").await.0, 404);
    // A watch is long-running and is still served.
    let resp = server::router(app)
        .oneshot(request("/api/v1/namespaces/default/configmaps?watch=true", "GET"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
}
