//! `/exec`, `/attach` and `/portForward`: the kubelet asks the runtime for a one-time
//! streaming URL (CRI Exec / Attach / PortForward) and proxies the client's upgrade request
//! to it. The runtime's stream server listens on the node's loopback, so it cannot redirect;
//! the upgrade handshake (SPDY/3.1 or WebSocket with its subprotocol headers) and then the
//! raw bytes both ways pass through unchanged. Protocol negotiation is the runtime's: if it
//! refuses a WebSocket subprotocol (containerd 1.6 knows no `v5.channel.k8s.io`), its refusal
//! goes back to the client as it is, and kubectl falls back to SPDY.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use http::{header, HeaderMap, Method};
use hyper_util::rt::TokioIo;

use super::{newest_sandbox, pod_containers, status_error, ContainerArgs, PodPath, State};
use crate::runtime::api;

/// The client's headers the stream server needs for the handshake; nothing else (above all no
/// credentials) is passed on.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "content-type",
];

/// upstream's stream options from the query (`input`, `output`, `error`, `tty`, `command`).
#[derive(Debug, Default, PartialEq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

fn truthy(v: &str) -> bool {
    v == "1" || v == "true"
}

/// Parses the query as upstream's kubelet does. A TTY merges stderr into stdout, so stderr is
/// dropped then; at least one stream is required.
pub fn stream_options(params: &[(String, String)]) -> Result<StreamOptions, String> {
    let mut o = StreamOptions::default();
    for (k, v) in params {
        match k.as_str() {
            "input" | "stdin" => o.stdin = truthy(v),
            "output" | "stdout" => o.stdout = truthy(v),
            "error" | "stderr" => o.stderr = truthy(v),
            "tty" => o.tty = truthy(v),
            "command" => o.command.push(v.clone()),
            _ => {}
        }
    }
    if o.tty {
        o.stderr = false;
    }
    if !o.stdin && !o.stdout && !o.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok(o)
}

/// The id of the running container `path` names.
async fn running_container(state: &State, path: &super::ContainerPath) -> Result<String, Response> {
    let found = pod_containers(state.runtime.as_ref(), &path.ns, &path.pod, &path.container)
        .await
        .map_err(|e| status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    found
        .into_iter()
        .find(|c| c.state == api::ContainerState::ContainerRunning as i32)
        .map(|c| c.id)
        .ok_or_else(|| status_error(StatusCode::NOT_FOUND, format!("container not found ({:?})", path.container)))
}

pub async fn exec(
    AxState(state): AxState<Arc<State>>,
    path: ContainerArgs,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let o = match stream_options(&params) {
        Ok(o) => o,
        Err(e) => return status_error(StatusCode::BAD_REQUEST, e),
    };
    if o.command.is_empty() {
        return status_error(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let id = match running_container(&state, &path).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let exec = api::ExecRequest {
        container_id: id,
        cmd: o.command,
        tty: o.tty,
        stdin: o.stdin,
        stdout: o.stdout,
        stderr: o.stderr,
    };
    match state.runtime.exec(exec).await {
        Ok(url) => proxy(&url, None, req).await,
        Err(e) => status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn attach(
    AxState(state): AxState<Arc<State>>,
    path: ContainerArgs,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let o = match stream_options(&params) {
        Ok(o) => o,
        Err(e) => return status_error(StatusCode::BAD_REQUEST, e),
    };
    let id = match running_container(&state, &path).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let attach =
        api::AttachRequest { container_id: id, stdin: o.stdin, tty: o.tty, stdout: o.stdout, stderr: o.stderr };
    match state.runtime.attach(attach).await {
        Ok(url) => proxy(&url, None, req).await,
        Err(e) => status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The `port` values of a port-forward query (WebSocket clients name their ports there; SPDY
/// clients name them per stream, inside the connection).
pub fn forward_ports(params: &[(String, String)]) -> Result<Vec<i32>, String> {
    let mut ports = Vec::new();
    for (k, v) in params.iter().filter(|(k, _)| k == "port" || k == "ports") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(i32::from(n)),
                _ => return Err(format!("invalid {k} {p:?}: must be a port number in 1-65535")),
            }
        }
    }
    Ok(ports)
}

pub async fn port_forward(
    AxState(state): AxState<Arc<State>>,
    Path(path): Path<PodPath>,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let ports = match forward_ports(&params) {
        Ok(p) => p,
        Err(e) => return status_error(StatusCode::BAD_REQUEST, e),
    };
    let sandbox = match newest_sandbox(state.runtime.as_ref(), &path.ns, &path.pod).await {
        Ok(Some(s)) if s.state == api::PodSandboxState::SandboxReady as i32 => s,
        Ok(_) => return status_error(StatusCode::NOT_FOUND, format!("pod not found ({:?})", path.pod)),
        Err(e) => return status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let query = req.uri().query().map(str::to_string);
    match state.runtime.port_forward(&sandbox.id, ports).await {
        Ok(url) => proxy(&url, query.as_deref(), req).await,
        Err(e) => status_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn bad_gateway(e: impl std::fmt::Display) -> Response {
    status_error(StatusCode::BAD_GATEWAY, format!("error dialing the runtime's stream server: {e}"))
}

/// The request line's target on the stream server: the URL's path and query, plus `extra`.
pub fn target(url: &http::Uri, extra: Option<&str>) -> String {
    let mut t = url.path().to_string();
    let mut queries: Vec<&str> = url.query().into_iter().collect();
    queries.extend(extra.filter(|q| !q.is_empty()));
    if !queries.is_empty() {
        t.push('?');
        t.push_str(&queries.join("&"));
    }
    t
}

/// Sends the client's request to `url` and, on 101, joins the two upgraded connections.
async fn proxy(url: &str, extra_query: Option<&str>, mut req: Request) -> Response {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return bad_gateway(format!("invalid URL {url:?}: {e}")),
    };
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return bad_gateway(format!("URL {url:?} has no host"));
    };
    let tcp = match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&authority)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return bad_gateway(format!("dial tcp {authority}: {e}")),
        Err(_) => return bad_gateway(format!("dial tcp {authority}: i/o timeout")),
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => return bad_gateway(e),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "stream server connection ended");
        }
    });
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if FORWARDED.contains(&k.as_str()) || k.as_str().starts_with("x-stream-") {
            headers.append(k.clone(), v.clone());
        }
    }
    if let Ok(h) = http::HeaderValue::from_str(&authority) {
        headers.insert(header::HOST, h);
    }
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let mut out = http::Request::builder().method(method).uri(target(&uri, extra_query));
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    let out = match out.body(http_body_util::Empty::<bytes::Bytes>::new()) {
        Ok(o) => o,
        Err(e) => return bad_gateway(e),
    };
    let client_upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return bad_gateway(e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            answer = answer.header(k, v);
        }
        if let Some(cu) = client_upgrade {
            tokio::spawn(async move {
                match (cu.await, server_upgrade.await) {
                    (Ok(c), Ok(s)) => {
                        let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                    }
                    (c, s) => tracing::debug!(client = c.is_ok(), server = s.is_ok(), "stream upgrade failed"),
                }
            });
        }
        return answer.body(Body::empty()).unwrap_or_else(bad_gateway);
    }
    // Refused (e.g. 403 for an unknown WebSocket subprotocol): the stream server's answer as it is.
    let (parts, body) = resp.into_parts();
    let mut answer = Response::new(Body::new(body));
    *answer.status_mut() = parts.status;
    for k in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
        if let Some(v) = parts.headers.get(&k) {
            answer.headers_mut().insert(k, v.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn exec_query_maps_to_cri_options() {
        let o =
            stream_options(&q(&[("command", "cat"), ("command", "/etc/hostname"), ("output", "1"), ("error", "1")]))
                .expect("options");
        assert_eq!(
            o,
            StreamOptions {
                stdout: true,
                stderr: true,
                command: vec!["cat".into(), "/etc/hostname".into()],
                ..Default::default()
            }
        );
        let o = stream_options(&q(&[("input", "1"), ("output", "1"), ("error", "1"), ("tty", "1")])).expect("tty");
        assert!(o.tty && o.stdin && !o.stderr, "a tty has no separate stderr: {o:?}");
        assert!(stream_options(&q(&[("command", "ls")])).is_err());
    }

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(forward_ports(&q(&[("port", "80"), ("port", "8080")])), Ok(vec![80, 8080]));
        assert_eq!(forward_ports(&q(&[("ports", "80,443")])), Ok(vec![80, 443]));
        assert_eq!(forward_ports(&q(&[])), Ok(vec![]));
        assert!(forward_ports(&q(&[("port", "0")])).is_err());
        assert!(forward_ports(&q(&[("port", "http")])).is_err());
    }

    #[test]
    fn target_keeps_the_token_and_adds_the_query() {
        let u: http::Uri = "http://127.0.0.1:4321/portforward/abc".parse().expect("uri");
        assert_eq!(target(&u, Some("port=80")), "/portforward/abc?port=80");
        assert_eq!(target(&u, None), "/portforward/abc");
        let u: http::Uri = "http://127.0.0.1:4321/exec/tok?x=1".parse().expect("uri");
        assert_eq!(target(&u, Some("")), "/exec/tok?x=1");
    }
}
