//! Security from the first start: HTTPS only, a generated CA and serving certificate, client
//! certificates (CN = user, O = groups), bearer tokens, 401 for anonymous requests, and an
//! admin kubeconfig.

use crate::support;
use crate::support::{Etcd, Server};

#[tokio::test]
async fn anonymous_requests_are_unauthorized() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let anon = support::anonymous_client(s.cert_dir.path());
    for p in ["/api/v1/namespaces", "/version", "/apis"] {
        let r = anon.get(s.url(p)).send().await.expect("sent");
        assert_eq!(r.status(), 401, "{p}");
        let st: serde_json::Value = r.json().await.expect("status");
        assert_eq!(st["reason"], "Unauthorized");
    }
    // Plain HTTP on the secure port is not served.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = s.base.rsplit(':').next().expect("port").to_string();
    let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.expect("connect");
    tcp.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"), "plain HTTP was served");
}

#[tokio::test]
async fn certificate_material_and_admin_kubeconfig_are_made_on_first_start() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    for f in ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.kubeconfig"] {
        assert!(s.cert_dir.path().join(f).exists(), "{f} missing");
    }
    let kc =
        component_base::kubeconfig::Kubeconfig::load(&s.cert_dir.path().join("admin.kubeconfig")).expect("kubeconfig");
    let yaml = kc.to_yaml().expect("yaml");
    assert!(yaml.contains(&s.base), "{yaml}");
    assert!(yaml.contains("client-certificate-data"));
    // A restart reuses the same CA.
    let ca_before = std::fs::read(s.cert_dir.path().join("ca.crt")).expect("ca");
    let (ep, dir, prefix) = s.stop().await;
    let s = Server::start_with(ep, dir, prefix).await;
    assert_eq!(std::fs::read(s.cert_dir.path().join("ca.crt")).expect("ca"), ca_before);
    assert_eq!(s.get("/api/v1/namespaces/default").await.0, 200);
}

#[tokio::test]
async fn bearer_tokens_from_the_token_file() {
    let etcd = Etcd::start();
    let cert_dir = tempfile::tempdir().expect("dir");
    let tokens = cert_dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,1001,\"dev,ops\"\n").expect("write tokens");
    let mut opts = support::options(&etcd.endpoint, cert_dir.path(), "/registry-tokens");
    opts.token_auth_file = Some(tokens);
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = rkube_apiserver::start(opts, cancel.clone()).await.expect("starts");
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    let anon = support::anonymous_client(cert_dir.path());
    let ok = anon.get(format!("{base}/api/v1/namespaces")).bearer_auth("s3cret").send().await.expect("sent");
    assert_eq!(ok.status(), 200);
    let bad = anon.get(format!("{base}/api/v1/namespaces")).bearer_auth("wrong").send().await.expect("sent");
    assert_eq!(bad.status(), 401);
    running.stop().await;
}
