//! The HTTP and TCP checks of probes and lifecycle hooks, from the node into the pod: a small
//! HTTP/1.1 GET (the kubelet needs nothing more) with upstream's rules: 2xx and 3xx are
//! success, redirects are followed (at most 10) while they stay on the same host, a redirect
//! elsewhere ends the probe as a success with a warning. HTTPS does not verify the pod's
//! certificate, as upstream's prober does not (InsecureSkipVerify).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Accepts any server certificate; signatures are still checked.
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// upstream's User-Agent for probes (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.33";
const MAX_REDIRECTS: usize = 10;
/// upstream reads at most 10 KiB of a probe's response body.
const MAX_BODY: usize = 10 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(String),
    /// Success, but with a warning (a redirect to another host).
    Warning(String),
    Failure(String),
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// Parses an HTTP/1.x response (head and what body there is).
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let location = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_string());
    Some(Response { status, location, body: body.chars().take(MAX_BODY).collect() })
}

async fn get_once(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<Response, String> {
    let addr = format!("{host}:{port}");
    let url = format!("{}://{addr}{path}", if https { "https" } else { "http" });
    let tcp =
        TcpStream::connect(&addr).await.map_err(|e| format!("Get {url:?}: dial tcp {addr}: {}", connect_error(&e)))?;
    if !https {
        return exchange(tcp, &url, &addr, path, headers).await;
    }
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("Get {url:?}: {e}"))?;
    let tls = tls_connector()?.connect(name, tcp).await.map_err(|e| format!("Get {url:?}: {e}"))?;
    exchange(tls, &url, &addr, path, headers).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &str,
    addr: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<Response, String> {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify still sent its whole answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => 0,
            Err(e) => return Err(format!("Get {url:?}: {e}")),
        };
        if n == 0 || raw.len() > MAX_BODY + 8192 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&raw).ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))
}

/// Go's wording of common connect errors.
fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// Splits a Location into (host, port, path); a relative one stays on the current host.
fn redirect_target(location: &str, host: &str, port: u16) -> Option<(String, u16, String)> {
    if location.starts_with('/') {
        return Some((host.to_string(), port, location.to_string()));
    }
    let rest = location.strip_prefix("http://").or_else(|| location.strip_prefix("https://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (h, p) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().ok()?),
        None => (authority.to_string(), 80),
    };
    Some((h, p, path.to_string()))
}

/// upstream's HTTP probe: GET `path` on `host:port` within `timeout`.
pub async fn probe(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let url = format!("{}://{host}:{port}{path}", if https { "https" } else { "http" });
    let run = async {
        let (mut h, mut p, mut pa) = (host.to_string(), port, path.clone());
        for _ in 0..=MAX_REDIRECTS {
            let resp = match get_once(https, &h, p, &pa, headers).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failure(e),
            };
            if (300..400).contains(&resp.status) {
                if let Some(loc) = resp.location.as_deref() {
                    match redirect_target(loc, &h, p) {
                        Some((nh, np, npath)) if nh == h => {
                            (h, p, pa) = (nh, np, npath);
                            continue;
                        }
                        _ => {
                            return Outcome::Warning(format!(
                                "Probe terminated redirects, Response body: {}",
                                resp.body
                            ))
                        }
                    }
                }
            }
            return if (200..400).contains(&resp.status) {
                Outcome::Success(resp.body)
            } else {
                Outcome::Failure(format!("HTTP probe failed with statuscode: {}", resp.status))
            };
        }
        Outcome::Failure(format!("Get {url:?}: stopped after {MAX_REDIRECTS} redirects"))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// upstream's TCP probe: a connection within `timeout` is a success.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = format!("{host}:{port}");
    match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {}", connect_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 2\r\n\r\nok").expect("parse");
        assert_eq!(r, Response { status: 302, location: Some("/next".into()), body: "ok".into() });
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn redirect_targets() {
        assert_eq!(redirect_target("/x", "198.18.1.2", 8080), Some(("198.18.1.2".into(), 8080, "/x".into())));
        assert_eq!(redirect_target("http://a:81/y", "h", 1), Some(("a".into(), 81, "/y".into())));
        assert_eq!(redirect_target("http://a", "h", 1), Some(("a".into(), 80, "/".into())));
        assert_eq!(redirect_target("ftp://a/", "h", 1), None);
    }

    /// A loopback server answering each connection with the next canned response; records requests.
    async fn serve(responses: Vec<&'static str>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for resp in responses {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(resp.as_bytes()).await.expect("write");
            }
            seen
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probe_success_failure_and_same_host_redirects() {
        let (port, task) = serve(vec![
            "HTTP/1.1 301 Moved\r\nLocation: /healthz\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])
        .await;
        let headers = vec![("X-Custom".to_string(), "1".to_string())];
        let out = probe(false, "127.0.0.1", port, "/", &headers, Duration::from_secs(2)).await;
        assert_eq!(out, Outcome::Success("ok".into()));
        let reqs = task.await.expect("server");
        assert!(reqs[0].starts_with("GET / HTTP/1.1\r\n"), "{}", reqs[0]);
        assert!(
            reqs[0].contains("User-Agent: kube-probe/1.33\r\n") && reqs[0].contains("X-Custom: 1\r\n"),
            "{}",
            reqs[0]
        );
        assert!(reqs[1].starts_with("GET /healthz HTTP/1.1\r\n"), "{}", reqs[1]);

        let (port, _task) = serve(vec!["HTTP/1.1 500 Internal Server Error\r\n\r\n"]).await;
        let out = probe(false, "127.0.0.1", port, "/", &[], Duration::from_secs(2)).await;
        assert_eq!(out, Outcome::Failure("HTTP probe failed with statuscode: 500".into()));

        let (port, _task) = serve(vec!["HTTP/1.1 302 Found\r\nLocation: http://198.18.9.9/x\r\n\r\nbye"]).await;
        let out = probe(false, "127.0.0.1", port, "/", &[], Duration::from_secs(2)).await;
        assert_eq!(out, Outcome::Warning("Probe terminated redirects, Response body: bye".into()));
    }

    #[tokio::test]
    async fn https_probe_skips_certificate_verification() {
        let ca = component_base::tls::Ca::generate("probe-test-ca").expect("ca");
        let cert = ca.issue_serving("pod", &["pod".into()], &["127.0.0.1".parse().expect("ip")]).expect("cert");
        let acceptor =
            tokio_rustls::TlsAcceptor::from(component_base::tls::server_config(&cert, None).expect("config"));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let mut tls = acceptor.accept(s).await.expect("handshake");
            let mut buf = vec![0u8; 4096];
            let n = tls.read(&mut buf).await.expect("read");
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure").await.expect("write");
            tls.shutdown().await.expect("shutdown");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let out = probe(true, "127.0.0.1", port, "/healthz", &[], Duration::from_secs(5)).await;
        assert_eq!(out, Outcome::Success("secure".into()), "a certificate from an unknown CA is accepted");
        assert!(server.await.expect("server").starts_with("GET /healthz HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn refused_connections_fail_with_go_wording() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(tcp_probe("127.0.0.1", port, Duration::from_secs(1)).await, Outcome::Success(String::new()));
        drop(l);
        assert_eq!(
            tcp_probe("127.0.0.1", port, Duration::from_secs(1)).await,
            Outcome::Failure(format!("dial tcp 127.0.0.1:{port}: connect: connection refused"))
        );
        let out = probe(false, "127.0.0.1", port, "/healthz", &[], Duration::from_secs(1)).await;
        assert_eq!(
            out,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }
}
