//! pods/log and pods/exec are proxied to the pod's kubelet over TLS with the apiserver's
//! kubelet client certificate; an upgrade the kubelet accepts (SPDY) is passed through byte
//! for byte, one it refuses (WebSocket) is answered with the kubelet's refusal, which is what
//! makes kubectl fall back from WebSocket to SPDY.

use std::sync::{Arc, Mutex};

use crate::support::{Etcd, Server};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn kubelet_handler(
    req: http::Request<Incoming>,
    seen: Seen,
    who: Option<String>,
) -> Result<http::Response<Full<bytes::Bytes>>, std::convert::Infallible> {
    seen.lock().expect("lock").push((req.uri().to_string(), who));
    let path = req.uri().path().to_string();
    if path.starts_with("/containerLogs/") {
        return Ok(http::Response::builder()
            .header("content-type", "text/plain")
            .body(Full::new(bytes::Bytes::from_static(b"hello\nworld\n")))
            .expect("response"));
    }
    let upgrade = req.headers().get("upgrade").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if upgrade == "websocket" {
        return Ok(http::Response::builder()
            .status(400)
            .body(Full::new(bytes::Bytes::from_static(b"websocket refused")))
            .expect("response"));
    }
    if upgrade == "spdy/3.1" {
        let mut req = req;
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", "v4.channel.k8s.io")
            .body(Full::new(bytes::Bytes::new()))
            .expect("response"));
    }
    Ok(http::Response::builder().status(404).body(Full::new(bytes::Bytes::new())).expect("response"))
}

/// A stand-in kubelet: HTTPS with a serving certificate from the cluster CA.
async fn fake_kubelet(cert_dir: &std::path::Path) -> (u16, Seen) {
    let ca = component_base::tls::Ca::load(&cert_dir.join("ca.crt"), &cert_dir.join("ca.key")).expect("ca");
    let cert = ca.issue_serving("fake-kubelet", &[], &["127.0.0.1".parse().expect("ip")]).expect("serving cert");
    let tls = component_base::tls::server_config(&cert, Some(ca.cert_pem())).expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = s.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let who = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| component_base::tls::identity_from_cert(c.as_ref()))
                    .map(|i| i.user);
                let svc = hyper::service::service_fn(move |req| kubelet_handler(req, seen.clone(), who.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, seen)
}

async fn raw_request(s: &Server, request: &str) -> (String, tokio_rustls::client::TlsStream<tokio::net::TcpStream>) {
    let ca = std::fs::read_to_string(s.cert_dir.path().join("ca.crt")).expect("ca");
    let admin =
        component_base::tls::CertKey::load(&s.cert_dir.path().join("admin.crt"), &s.cert_dir.path().join("admin.key"))
            .expect("admin");
    let cfg = component_base::tls::client_config(&ca, Some(&admin)).expect("tls");
    let port: u16 = s.base.rsplit(':').next().expect("port").parse().expect("number");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.expect("handshake");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut b).await.expect("read") == 0 {
            break;
        }
        head.push(b[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_reach_the_pods_kubelet() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (port, seen) = fake_kubelet(s.cert_dir.path()).await;
    let (code, node) = s
        .post(
            "/api/v1/nodes",
            &json!({"metadata": {"name": "node-1"}, "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}),
        )
        .await;
    assert_eq!(code, 201, "{node}");
    s.post("/api/v1/namespaces/default/pods", &json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}})).await;
    s.post(
        "/api/v1/namespaces/default/pods",
        &json!({"metadata": {"name": "unbound"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;

    // Logs: the kubelet's body comes back; the query is translated.
    let r = s
        .client
        .get(s.url("/api/v1/namespaces/default/pods/p/log?tailLines=2&timestamps=true"))
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "hello\nworld\n");
    let (uri, who) = seen.lock().expect("lock").last().cloned().expect("a kubelet request");
    assert_eq!(uri, "/containerLogs/default/p/c?tailLines=2&timestamps=true");
    assert_eq!(who.as_deref(), Some("kube-apiserver-kubelet-client"), "the apiserver authenticates to the kubelet");

    // A pod without a node, and a container that does not exist.
    let (code, st) = s.get("/api/v1/namespaces/default/pods/unbound/log").await;
    assert_eq!((code, st["message"].as_str()), (400, Some("pod unbound does not have a host assigned")));
    let (code, st) = s.get("/api/v1/namespaces/default/pods/p/log?container=nope").await;
    assert_eq!((code, st["message"].as_str()), (400, Some("container nope is not valid for pod p")));

    // Exec over SPDY: the 101 and then the bytes, both ways.
    let (head, mut tls) = raw_request(
        &s,
        "POST /api/v1/namespaces/default/pods/p/exec?command=ls&container=c&stdout=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");
    tls.write_all(b"\x80\x03\x00\x01ping").await.expect("write");
    let mut buf = [0u8; 8];
    tls.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"\x80\x03\x00\x01ping");
    let (uri, _) = seen.lock().expect("lock").last().cloned().expect("a kubelet request");
    assert_eq!(uri, "/exec/default/p/c?output=1&command=ls");

    // WebSocket refused by the kubelet: its refusal reaches the client (kubectl then uses SPDY).
    let (head, _) = raw_request(
        &s,
        "GET /api/v1/namespaces/default/pods/p/exec?command=ls&container=c&stdout=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
