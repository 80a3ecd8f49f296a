//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`, proxied to the kubelet of the
//! pod's node (`https://<node InternalIP>:<kubelet port>/containerLogs|exec|attach|portForward/…`).
//! Upgrades (SPDY/3.1 and WebSocket) are passed through byte for byte: the kubelet's answer to
//! the upgrade request goes back to the client unchanged, so a kubelet that refuses WebSocket
//! makes kubectl fall back to SPDY exactly as against upstream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderMap, HeaderName, Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use apimachinery::status::ApiError;

use super::path::ApiPath;
use super::App;
use crate::registry::options::{first, query_map};

/// How the apiserver reaches kubelets: its client certificate and the CA kubelets' serving
/// certificates are checked against.
pub struct KubeletClient {
    pub tls: Arc<rustls::ClientConfig>,
}

/// Headers that carry the upgrade handshake; everything else of the client's request
/// (its credentials above all) stays here.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "accept",
    "content-type",
    "content-length",
];

pub fn is_kubelet_subresource(p: &ApiPath) -> bool {
    p.group.is_empty()
        && p.plural == "pods"
        && p.name.is_some()
        && matches!(p.subresource.as_deref(), Some("log" | "exec" | "attach" | "portforward"))
}

fn default_container(pod: &Value) -> Option<String> {
    if let Some(c) =
        pod.pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container").and_then(Value::as_str)
    {
        return Some(c.to_string());
    }
    pod.pointer("/spec/containers/0/name").and_then(Value::as_str).map(str::to_string)
}

fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod["spec"].get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The kubelet's address for `node`: its InternalIP (else the first address) and port.
fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array)?;
    let pick = |t: &str| {
        addrs.iter().find(|a| a["type"] == t).and_then(|a| a.get("address")).and_then(Value::as_str).map(str::to_string)
    };
    let host = pick("InternalIP").or_else(|| pick("ExternalIP")).or_else(|| pick("Hostname"))?;
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250);
    Some((host, u16::try_from(port).unwrap_or(10250)))
}

/// upstream's translation of the pod subresource's query into the kubelet's.
fn kubelet_path(sub: &str, ns: &str, pod: &str, container: &str, query: &str) -> String {
    let q = query_map(Some(query));
    let mut out: Vec<(String, String)> = Vec::new();
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    match sub {
        "log" => {
            for k in ["follow", "previous", "sinceSeconds", "sinceTime", "tailLines", "timestamps", "limitBytes"] {
                if let Some(v) = first(&q, k) {
                    out.push((k.to_string(), v.to_string()));
                }
            }
            let qs = out.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
            format!("/containerLogs/{ns}/{pod}/{container}{}{qs}", if qs.is_empty() { "" } else { "?" })
        }
        "portforward" => format!("/portForward/{ns}/{pod}"),
        _ => {
            for (from, to) in [("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty")] {
                if let Some(v) = first(&q, from) {
                    if v == "true" || v == "1" {
                        out.push((to.to_string(), "1".to_string()));
                    }
                }
            }
            for c in q.get("command").into_iter().flatten() {
                out.push(("command".into(), c.clone()));
            }
            let qs = out.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&");
            format!("/{sub}/{ns}/{pod}/{container}{}{qs}", if qs.is_empty() { "" } else { "?" })
        }
    }
}

fn backend_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("error dialing backend: {e}"))
}

/// Proxies one pod subresource request to the kubelet.
pub async fn proxy(app: &Arc<App>, p: &ApiPath, mut req: Request) -> Result<Response, ApiError> {
    let Some(client) = &app.kubelet else {
        return Err(ApiError::service_unavailable("no kubelet client is configured"));
    };
    let store = &app.store;
    let (ns, name, sub) = (
        p.namespace.clone().unwrap_or_default(),
        p.name.clone().unwrap_or_default(),
        p.subresource.clone().unwrap_or_default(),
    );
    let pods = store.registry.get("", "pods").ok_or_else(ApiError::not_found_path)?;
    let pod = store.get(&pods, Some(&ns), &name, None).await?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let q = query_map(Some(&query));
    let container = match first(&q, "container").filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None => default_container(&pod).unwrap_or_default(),
    };
    if sub != "portforward" && !container_names(&pod).contains(&container) {
        return Err(ApiError::bad_request(format!("container {container} is not valid for pod {name}")));
    }
    let nodes = store.registry.get("", "nodes").ok_or_else(ApiError::not_found_path)?;
    let node = store.get(&nodes, None, &node_name, None).await?;
    let (host, port) = kubelet_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no address to reach its kubelet")))?;
    let path = kubelet_path(&sub, &ns, &name, &container, &query);

    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| backend_error(format!("dial tcp {host}:{port}: i/o timeout")))?
        .map_err(|e| backend_error(format!("dial tcp {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(backend_error)?;
    let tls =
        tokio_rustls::TlsConnector::from(client.tls.clone()).connect(server_name, tcp).await.map_err(backend_error)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(backend_error)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });

    let mut out = http::Request::builder().method(req.method().clone()).uri(&path);
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if FORWARDED.contains(&k.as_str()) || k.as_str().starts_with("x-stream-") {
            headers.append(k.clone(), v.clone());
        }
    }
    headers.insert(header::HOST, http::HeaderValue::from_str(&format!("{host}:{port}")).map_err(backend_error)?);
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    let upgrading = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = if upgrading { Some(hyper::upgrade::on(&mut req)) } else { None };
    let body = if *req.method() == Method::GET || upgrading {
        http_body_util::Full::new(bytes::Bytes::new())
    } else {
        let b = http_body_util::BodyExt::collect(req.into_body()).await.map_err(backend_error)?.to_bytes();
        http_body_util::Full::new(b)
    };
    let out = out.body(body).map_err(backend_error)?;
    let mut resp = sender.send_request(out).await.map_err(backend_error)?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let kubelet_upgrade = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            answer = answer.header(k, v);
        }
        let answer = answer.body(Body::empty()).map_err(backend_error)?;
        if let Some(cu) = client_upgrade {
            tokio::spawn(async move {
                match (cu.await, kubelet_upgrade.await) {
                    (Ok(c), Ok(k)) => {
                        let (mut c, mut k) = (TokioIo::new(c), TokioIo::new(k));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut k).await;
                    }
                    (c, k) => tracing::debug!(client = c.is_ok(), kubelet = k.is_ok(), "stream upgrade failed"),
                }
            });
        }
        return Ok(answer);
    }
    // Not upgraded (logs, or a refused upgrade): the kubelet's answer as it is, streamed.
    let (parts, body) = resp.into_parts();
    let mut answer = Response::new(Body::new(body));
    *answer.status_mut() = parts.status;
    for k in [header::CONTENT_TYPE, header::CONTENT_LENGTH, HeaderName::from_static("x-stream-protocol-version")] {
        if let Some(v) = parts.headers.get(&k) {
            answer.headers_mut().insert(k, v.clone());
        }
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_query_translates_to_kubelet_names() {
        let p =
            kubelet_path("exec", "ns", "p", "c", "command=ls&command=%2F&container=c&stdin=true&stdout=true&tty=true");
        assert_eq!(p, "/exec/ns/p/c?input=1&output=1&tty=1&command=ls&command=%2F");
    }

    #[test]
    fn log_query_keeps_log_options() {
        let p = kubelet_path("log", "ns", "p", "c", "container=c&follow=true&tailLines=10");
        assert_eq!(p, "/containerLogs/ns/p/c?follow=true&tailLines=10");
    }

    #[test]
    fn portforward_has_no_query() {
        assert_eq!(kubelet_path("portforward", "ns", "p", "", ""), "/portForward/ns/p");
    }
}
