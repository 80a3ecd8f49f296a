//! The kubelet's HTTPS server (upstream's :10250): `/healthz`, `/metrics`, `/stats/summary`,
//! `/containerLogs/{ns}/{pod}/{container}`, and `/exec`, `/attach`, `/portForward`, whose
//! streams are proxied to the runtime's stream server (which listens on the node's loopback,
//! where the apiserver cannot reach it).
//!
//! Authentication is by client certificate against `--client-ca-file` (the apiserver presents
//! its kubelet client certificate); without that flag every client is let in, as upstream's
//! anonymous + AlwaysAllow defaults do. Authorization (upstream's SubjectAccessReview) is not
//! done: a verified client certificate is enough.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::ContainerRuntime;

pub mod logs;
pub mod streaming;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] component_base::tls::TlsError),
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    HalfACert,
}

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub node_name: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    path: String,
    code: String,
}

/// The kubelet's metrics registry and the metrics the server itself keeps.
pub struct Metrics {
    pub registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    pub fn new(node_name: &str) -> Self {
        let mut registry = Registry::default();
        let node_name_metric = Family::<NodeLabel, Gauge>::default();
        node_name_metric.get_or_create(&NodeLabel { node: node_name.to_string() }).set(1);
        registry.register("kubelet_node_name", "The node's name. The count is always 1.", node_name_metric);
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kubelet_http_requests",
            "Number of HTTP requests received since the server started, by method, path and code.",
            http_requests.clone(),
        );
        Metrics { registry, http_requests }
    }

    fn count(&self, method: &str, path: &str, code: StatusCode) {
        let labels =
            RequestLabels { method: method.to_string(), path: path.to_string(), code: code.as_u16().to_string() };
        self.http_requests.get_or_create(&labels).inc();
    }
}

/// What the handlers need.
pub struct State {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub metrics: Metrics,
    pub node_name: String,
    /// The pods bound to this node, as the pod loop's watch sees them (`/pods`).
    pub pods: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
}

pub async fn bind(cfg: &ServerConfig) -> Result<TcpListener, ServerError> {
    TcpListener::bind(cfg.addr).await.map_err(|source| ServerError::Bind { addr: cfg.addr, source })
}

fn read(path: &std::path::Path) -> Result<String, ServerError> {
    std::fs::read_to_string(path).map_err(|source| ServerError::Read { path: path.display().to_string(), source })
}

/// The server's TLS: the serving certificate from the flags (else a self-signed one for the
/// node IP, as upstream generates), client certificates checked against `--client-ca-file`.
pub fn tls_config(cfg: &ServerConfig, node_ip: &str) -> Result<Tls, ServerError> {
    let cert = match (&cfg.tls_cert_file, &cfg.tls_private_key_file) {
        (Some(c), Some(k)) => component_base::tls::CertKey { cert_pem: read(c)?, key_pem: read(k)? },
        (None, None) => {
            let ca = component_base::tls::Ca::generate(&format!("{}-ca", cfg.node_name))?;
            let ips: Vec<std::net::IpAddr> = node_ip.parse().into_iter().collect();
            ca.issue_serving(&cfg.node_name, std::slice::from_ref(&cfg.node_name), &ips)?
        }
        _ => return Err(ServerError::HalfACert),
    };
    let client_ca = cfg.client_ca_file.as_deref().map(read).transpose()?;
    Ok(Tls {
        config: component_base::tls::server_config(&cert, client_ca.as_deref())?,
        client_auth: client_ca.is_some(),
    })
}

/// The server's TLS configuration, and whether it requires a verified client certificate.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub client_auth: bool,
}

/// Whether a request may be served: with a client CA configured, only a verified client
/// certificate gets in.
#[derive(Clone, Copy)]
struct Authenticated(bool);

/// The router; public for tests that drive it without TLS.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/stats/summary", get(stats_summary))
        .route("/pods", get(pods))
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs::container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(streaming::exec))
        .route("/attach/{ns}/{pod}/{container}", any(streaming::attach))
        .route("/portForward/{ns}/{pod}", any(streaming::port_forward))
        .with_state(state)
}

/// A `Status` body, as upstream's handlers answer errors.
pub fn status_error(code: StatusCode, message: impl Into<String>) -> Response {
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        _ => "InternalError",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message.into(), "reason": reason, "code": code.as_u16()});
    (code, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry).is_err() {
        return status_error(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed");
    }
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}

/// upstream's `/pods`: a PodList of the pods this kubelet runs.
async fn pods(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let mut items: Vec<_> = state.pods.state().iter().map(|p| p.as_ref().clone()).collect();
    items.sort_by(|a, b| (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name)));
    axum::Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})).into_response()
}

async fn stats_summary(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    match crate::stats::summary(state.runtime.as_ref(), &state.node_name).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => status_error(StatusCode::INTERNAL_SERVER_ERROR, format!("getting the stats summary: {e}")),
    }
}

/// Path parameters of the container endpoints.
#[derive(Debug, serde::Deserialize)]
pub struct ContainerPath {
    pub ns: String,
    pub pod: String,
    pub container: String,
}

/// Path parameters of `/portForward`.
#[derive(Debug, serde::Deserialize)]
pub struct PodPath {
    pub ns: String,
    pub pod: String,
}

pub type Params = Query<Vec<(String, String)>>;
pub type ContainerArgs = Path<ContainerPath>;

/// The route's name for metrics (no pod names: bounded cardinality).
fn route_name(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "healthz" => "healthz",
        "metrics" => "metrics",
        "pods" => "pods",
        "stats" => "stats",
        "containerLogs" => "containerLogs",
        "exec" => "exec",
        "attach" => "attach",
        "portForward" => "portForward",
        _ => "other",
    }
}

/// Serves `router(state)` over TLS on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, tls: Tls, state: Arc<State>, cancel: CancellationToken) {
    let client_auth = tls.client_auth;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    let router = router(state.clone());
    let tracker = tokio_util::task::TaskTracker::new();
    tracing::info!(addr = ?listener.local_addr().ok(), "kubelet server listening");
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let cancel = cancel.clone();
        let state = state.clone();
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let verified = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| component_base::tls::identity_from_cert(c.as_ref()))
                .is_some();
            let authenticated = Authenticated(verified || !client_auth);
            let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let router = router.clone();
                let state = state.clone();
                async move {
                    let method = req.method().to_string();
                    let route = route_name(req.uri().path());
                    let resp = if !authenticated.0 {
                        status_error(StatusCode::UNAUTHORIZED, "Unauthorized")
                    } else {
                        let req: Request = req.map(Body::new);
                        match tower::ServiceExt::oneshot(router, req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        }
                    };
                    state.metrics.count(&method, route, resp.status());
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
}

/// The newest sandbox the runtime has for `ns/pod` (a pod deleted and created again under the
/// same name has an older one too).
pub async fn newest_sandbox(
    rt: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
) -> Result<Option<crate::runtime::api::PodSandbox>, crate::runtime::RuntimeError> {
    use crate::pod_workers::sync::{POD_NAME, POD_NAMESPACE};
    let filter = crate::runtime::sandbox_filter_by_labels([(POD_NAMESPACE, ns), (POD_NAME, pod)]);
    let sandboxes = rt.list_pod_sandbox(Some(filter)).await?;
    // Ready before not ready, then newest.
    Ok(sandboxes
        .into_iter()
        .max_by_key(|s| (s.state == crate::runtime::api::PodSandboxState::SandboxReady as i32, s.created_at)))
}

/// The runtime's containers named `container` of the pod `ns/pod` (its newest sandbox's uid),
/// newest attempt first.
pub async fn pod_containers(
    rt: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Vec<crate::runtime::api::Container>, crate::runtime::RuntimeError> {
    use crate::pod_workers::sync::{CONTAINER_NAME, POD_UID};
    let Some(sandbox) = newest_sandbox(rt, ns, pod).await? else { return Ok(Vec::new()) };
    let Some(uid) = sandbox.labels.get(POD_UID).cloned() else { return Ok(Vec::new()) };
    let filter = crate::runtime::container_filter_by_labels([(POD_UID, uid.as_str()), (CONTAINER_NAME, container)]);
    let mut found = rt.list_containers(Some(filter)).await?;
    found.sort_by_key(|c| std::cmp::Reverse((c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0), c.created_at)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_bounded() {
        assert_eq!(route_name("/containerLogs/ns/p/c"), "containerLogs");
        assert_eq!(route_name("/exec/ns/p/c"), "exec");
        assert_eq!(route_name("/stats/summary"), "stats");
        assert_eq!(route_name("/x/y"), "other");
    }

    #[test]
    fn errors_are_status_objects() {
        let r = status_error(StatusCode::BAD_REQUEST, "nope");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    }
}
