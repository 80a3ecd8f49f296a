//! The HTTP side: TLS listener with client-certificate and token authentication, routing of
//! every path (health, metrics, version, discovery, OpenAPI, resources), the in-flight limit,
//! and request metrics.

pub mod auth;
pub mod discovery;
pub mod handlers;
pub mod kubelet_proxy;
pub mod metrics;
pub mod negotiation;
pub mod openapi;
pub mod path;
pub mod protobuf;
pub mod table;
pub mod tokenrequest;
pub mod version;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use apimachinery::status::ApiError;
use component_base::tls::PeerIdentity;

use crate::registry::store::Store;
use negotiation::{error_response, json_response, MAX_BODY};

pub struct App {
    pub store: Arc<Store>,
    pub auth: auth::Authenticator,
    pub metrics: metrics::Metrics,
    pub inflight: Arc<Semaphore>,
    /// How to reach kubelets for logs, exec, attach and port-forward.
    pub kubelet: Option<kubelet_proxy::KubeletClient>,
}

/// The client certificate's identity, put on each request by the TLS accept loop.
#[derive(Clone, Default)]
pub struct ConnIdentity(pub Option<PeerIdentity>);

pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(dispatch).with_state(app)
}

fn is_health(path: &str) -> bool {
    matches!(path.split('/').nth(1), Some("healthz" | "livez" | "readyz"))
}

fn long_running(path: &str, query: &str, method: &Method) -> bool {
    (*method == Method::GET
        && (query.contains("watch=true")
            || query.contains("watch=1")
            || path.contains("/watch/")
            || query.contains("follow=true")))
        || path.ends_with("/exec")
        || path.ends_with("/attach")
        || path.ends_with("/portforward")
}

async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let audit_id = crate::registry::random_uuid().to_string();
    // Parsed once for the route and the metrics' labels.
    let parsed = path::parse(&path);
    let verb = metrics::verb(&method, &path, &query, parsed.as_ref());
    let resource = parsed.as_ref().map(|p| p.plural.clone()).unwrap_or_default();
    let mut resp = if is_health(&path) {
        health(&app, &path).await
    } else {
        let conn = req.extensions().get::<ConnIdentity>().cloned().unwrap_or_default();
        let live = |plural: &str, ns: Option<&str>, name: &str| app.store.cached_uid("", plural, ns, name);
        match app.auth.authenticate(req.headers(), conn.0.as_ref(), &live) {
            None => error_response(&ApiError::unauthorized()),
            Some(_user) => {
                let _permit = if long_running(&path, &query, &method) {
                    None
                } else {
                    match app.inflight.clone().try_acquire_owned() {
                        Ok(p) => Some(p),
                        Err(_) => {
                            let e = ApiError::too_many_requests("Too many requests, please try again later.", 1);
                            return finish_metrics(&app, &verb, &resource, started, error_response(&e), &audit_id);
                        }
                    }
                };
                route(&app, req, &method, &path, &query, parsed).await
            }
        }
    };
    resp = finish_metrics(&app, &verb, &resource, started, resp, &audit_id);
    resp
}

fn finish_metrics(
    app: &App,
    verb: &str,
    resource: &str,
    started: Instant,
    mut resp: Response,
    audit_id: &str,
) -> Response {
    app.metrics.observe(verb, resource, resp.status().as_u16(), started.elapsed());
    if let Ok(v) = HeaderValue::from_str(audit_id) {
        resp.headers_mut().insert("audit-id", v);
    }
    resp
}

async fn health(app: &App, path: &str) -> Response {
    let ready = path.starts_with("/readyz");
    let etcd_ok = app.store.etcd.healthy().await;
    let caches_ok = !ready || app.store.caches_ready();
    if etcd_ok && caches_ok {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
    } else {
        let why = if !etcd_ok { "[-]etcd failed: etcd does not answer" } else { "[-]watch-cache failed: not synced" };
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}\n{} check failed", &path[1..]),
        )
            .into_response()
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::too_large("the request body is larger than the limit of 3145728 bytes"))
        }
        Err(e) => Err(ApiError::bad_request(format!("error reading the request body: {e}"))),
    }
}

/// `parsed` is `path` as [`path::parse`] reads it.
async fn route(
    app: &Arc<App>,
    req: Request,
    method: &Method,
    path: &str,
    query: &str,
    parsed: Option<path::ApiPath>,
) -> Response {
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if *method == Method::GET {
        match path.trim_end_matches('/') {
            "/version" => return json_response(StatusCode::OK, &version::info(), "application/json"),
            "/metrics" => return app.metrics.render(),
            "/api" | "/apis" => {
                let core = path.trim_end_matches('/') == "/api";
                return match discovery::wants_aggregated(&accept) {
                    Some(v) => {
                        let ct = if v == "v2" {
                            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
                        } else {
                            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
                        };
                        let mut r = json_response(StatusCode::OK, &discovery::aggregated(core, v), ct);
                        r.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
                        r
                    }
                    None => {
                        let doc = if core { discovery::api_versions() } else { discovery::api_group_list() };
                        json_response(StatusCode::OK, &doc, "application/json")
                    }
                };
            }
            "/openapi/v2" => return openapi::v2_response(&accept).await,
            "/openapi/v3" => return json_response(StatusCode::OK, &openapi::v3_root().await, "application/json"),
            _ => {}
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            return openapi::v3_group_version(gv, query, &accept).await;
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api", "v1"] => {
                return json_response(
                    StatusCode::OK,
                    &discovery::resource_list("", "v1").expect("core/v1 is served"),
                    "application/json",
                )
            }
            ["api", _] => return error_response(&ApiError::not_found_path()),
            ["apis", g] => {
                return match discovery::api_group(g) {
                    Some(d) => json_response(StatusCode::OK, &d, "application/json"),
                    None => error_response(&ApiError::not_found_path()),
                }
            }
            ["apis", g, v] => {
                return match discovery::resource_list(g, v) {
                    Some(d) => json_response(StatusCode::OK, &d, "application/json"),
                    None => error_response(&ApiError::not_found_path()),
                }
            }
            _ => {}
        }
    }
    let Some(p) = parsed else {
        return error_response(&ApiError::not_found_path());
    };
    if kubelet_proxy::is_kubelet_subresource(&p) {
        return handlers::finish(kubelet_proxy::proxy(app, &p, req).await);
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let r = handlers::Req {
        method,
        headers: &parts.headers,
        query: crate::registry::options::query_map(Some(query)),
        body,
    };
    handlers::finish(handlers::resource(app, p, r).await)
}

/// Serves HTTPS on `listener` until `cancel`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = tokio_util::task::TaskTracker::new();
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
            let ident = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| component_base::tls::identity_from_cert(c.as_ref()));
            let conn_ident = ConnIdentity(ident);
            let svc = tower::ServiceExt::map_request(router, move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(conn_ident.clone());
                req
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc);
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
