//! Test support: a real etcd per test on free loopback ports (killed on drop, and by the
//! kernel if the test process dies), an in-process apiserver on it with a unique key
//! prefix, and an HTTPS client holding the admin certificate.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use component_base::testing::Etcd;

pub struct Server {
    pub running: Option<rkube_apiserver::Running>,
    pub base: String,
    pub client: reqwest::Client,
    pub cert_dir: tempfile::TempDir,
    pub prefix: String,
    pub cancel: CancellationToken,
    pub etcd_endpoint: String,
}

pub fn options(etcd: &str, cert_dir: &Path, prefix: &str) -> rkube_apiserver::Options {
    options_with(etcd, cert_dir, prefix, &[])
}

/// [`options`] with more flags.
pub fn options_with(etcd: &str, cert_dir: &Path, prefix: &str, extra: &[&str]) -> rkube_apiserver::Options {
    use clap::Parser;
    let mut args = vec![
        "rkube-apiserver",
        "--etcd-servers",
        etcd,
        "--etcd-prefix",
        prefix,
        "--secure-port",
        "0",
        "--cert-dir",
        cert_dir.to_str().expect("utf-8 path"),
    ];
    // As upstream's integration tests do: without a controller-manager nothing creates the
    // `default` service accounts that the ServiceAccount admission plugin requires of pods.
    if !extra.iter().any(|a| a.contains("-admission-plugins")) {
        args.push("--disable-admission-plugins=ServiceAccount");
    }
    args.extend_from_slice(extra);
    rkube_apiserver::Options::parse_from(args)
}

pub fn admin_client(cert_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).expect("ca.crt");
    let admin = component_base::tls::CertKey::load(&cert_dir.join("admin.crt"), &cert_dir.join("admin.key"))
        .expect("admin cert");
    let tls = component_base::tls::client_config(&ca, Some(&admin)).expect("client tls");
    reqwest::Client::builder().tls_backend_preconfigured((*tls).clone()).build().expect("client")
}

pub fn anonymous_client(cert_dir: &Path) -> reqwest::Client {
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).expect("ca.crt");
    let tls = component_base::tls::client_config(&ca, None).expect("client tls");
    reqwest::Client::builder().tls_backend_preconfigured((*tls).clone()).build().expect("client")
}

impl Server {
    pub async fn start(etcd: &Etcd) -> Self {
        let cert_dir = tempfile::tempdir().expect("temp dir");
        let prefix = format!("/registry-{}", uuid::Uuid::new_v4());
        Self::start_with(etcd.endpoint.clone(), cert_dir, prefix).await
    }

    pub async fn start_with(etcd_endpoint: String, cert_dir: tempfile::TempDir, prefix: String) -> Self {
        Self::start_with_args(etcd_endpoint, cert_dir, prefix, &[]).await
    }

    /// [`Server::start_with`] with more flags.
    pub async fn start_with_args(
        etcd_endpoint: String,
        cert_dir: tempfile::TempDir,
        prefix: String,
        extra: &[&str],
    ) -> Self {
        let cancel = CancellationToken::new();
        let opts = options_with(&etcd_endpoint, cert_dir.path(), &prefix, extra);
        let running = rkube_apiserver::start(opts, cancel.clone()).await.expect("apiserver starts");
        let base = format!("https://127.0.0.1:{}", running.addr.port());
        let client = admin_client(cert_dir.path());
        let s = Server { running: Some(running), base, client, cert_dir, prefix, cancel, etcd_endpoint };
        s.wait_ready().await;
        s
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "apiserver never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) -> (String, tempfile::TempDir, String) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        (self.etcd_endpoint.clone(), self.cert_dir, self.prefix.clone())
    }

    /// A request that returns (status, JSON body).
    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        ct: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, path, None, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.req(reqwest::Method::POST, path, Some("application/json"), Some(body.to_string())).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.req(reqwest::Method::PUT, path, Some("application/json"), Some(body.to_string())).await
    }
    pub async fn patch(&self, path: &str, ct: &str, body: &Value) -> (u16, Value) {
        self.req(reqwest::Method::PATCH, path, Some(ct), Some(body.to_string())).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::DELETE, path, None, None).await
    }

    /// Every key under this server's prefix, with values: what etcd holds.
    pub async fn etcd_dump(&self) -> Vec<(String, String)> {
        let mut c = etcd_client::Client::connect([self.etcd_endpoint.as_str()], None).await.expect("etcd");
        let r = c.get(self.prefix.as_str(), Some(etcd_client::GetOptions::new().with_prefix())).await.expect("range");
        r.kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap_or("").to_string(), kv.value_str().unwrap_or("").to_string()))
            .collect()
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}
