//! Talking to the apiserver: HTTPS clients holding the admin certificate from the cert dir,
//! and the objects the benchmark writes (ConfigMaps padded to 1 KiB, minimal Pods).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Size of every ConfigMap the benchmark writes, as JSON.
pub const OBJECT_BYTES: usize = 1024;

pub struct Api {
    pub base: String,
    /// A shared client; its pool grows to as many connections as requests run at once.
    pub client: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
}

impl Api {
    pub fn new(base: &str, cert_dir: &Path) -> anyhow::Result<Api> {
        let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).context("reading ca.crt")?;
        let admin = component_base::tls::CertKey::load(&cert_dir.join("admin.crt"), &cert_dir.join("admin.key"))
            .context("loading the admin certificate")?;
        let tls = component_base::tls::client_config(&ca, Some(&admin)).context("client TLS config")?;
        let client = build_client(&tls, Some(Duration::from_secs(60)))?;
        Ok(Api { base: base.trim_end_matches('/').to_string(), client, tls })
    }

    /// A client with a pool of its own; `timeout` bounds each whole request (None for watches).
    pub fn new_client(&self, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
        build_client(&self.tls, timeout)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls /readyz until it answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{} was not ready within {timeout:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs `body` to `path` and expects 201 Created.
    pub async fn create(&self, client: &reqwest::Client, path: &str, body: String) -> anyhow::Result<()> {
        let resp = client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        if status != reqwest::StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            bail!("POST {path}: {status}: {}", text.chars().take(300).collect::<String>());
        }
        // Read the body so the connection goes back to the pool.
        resp.bytes().await.with_context(|| format!("POST {path}: reading the response"))?;
        Ok(())
    }

    /// GETs `path` as JSON, expecting 200.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.client.get(self.url(path)).send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.with_context(|| format!("GET {path}: reading the response"))?;
        if status != reqwest::StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>());
        }
        serde_json::from_slice(&bytes).with_context(|| format!("GET {path}: decoding JSON"))
    }

    /// Creates the namespace unless it exists.
    pub async fn ensure_namespace(&self, name: &str) -> anyhow::Result<()> {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}).to_string();
        let resp = self
            .client
            .post(self.url("/api/v1/namespaces"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("creating a namespace")?;
        match resp.status() {
            reqwest::StatusCode::CREATED | reqwest::StatusCode::CONFLICT => Ok(()),
            s => bail!("creating namespace {name}: {s}: {}", resp.text().await.unwrap_or_default()),
        }
    }

    /// The collection's current resourceVersion, read from etcd (a list without resourceVersion).
    pub async fn list_rv(&self, path: &str) -> anyhow::Result<i64> {
        let list = self.get_json(path).await?;
        list.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("GET {path}: no metadata.resourceVersion"))
    }
}

fn build_client(tls: &rustls::ClientConfig, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().context("building an HTTPS client")
}

/// A ConfigMap whose JSON is exactly [`OBJECT_BYTES`] long: `fields` go into `data`, followed
/// by a `payload` of filler.
pub fn configmap(ns: &str, name: &str, fields: &[(&str, String)]) -> String {
    let mut data = serde_json::Map::new();
    for (k, v) in fields {
        data.insert((*k).to_string(), Value::String(v.clone()));
    }
    data.insert("payload".into(), Value::String(String::new()));
    let mut obj = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    });
    let pad = OBJECT_BYTES.saturating_sub(obj.to_string().len());
    obj["data"]["payload"] = Value::String("x".repeat(pad));
    obj.to_string()
}

/// The smallest Pod the apiserver accepts.
pub fn pod(ns: &str, name: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    })
    .to_string()
}

/// Nanoseconds since the Unix epoch: the timestamp written into objects and compared on
/// arrival (one machine, one clock).
pub fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The number in `"key":"123"` inside a JSON text, found without parsing the whole text.
pub fn string_field(text: &[u8], key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":\"");
    let start = text.windows(needle.len()).position(|w| w == needle.as_bytes())? + needle.len();
    let rest = &text[start..];
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmaps_are_one_kib() {
        let cm = configmap("ns", "name-1", &[("benchSeq", "7".into()), ("sentNanos", unix_nanos().to_string())]);
        assert_eq!(cm.len(), OBJECT_BYTES);
        let v: Value = serde_json::from_str(&cm).expect("valid JSON");
        assert_eq!(v["data"]["benchSeq"], "7");
    }

    #[test]
    fn string_field_finds_numbers() {
        let cm = configmap("ns", "n", &[("benchSeq", "42".into()), ("sentNanos", "1700000000".into())]);
        assert_eq!(string_field(cm.as_bytes(), "benchSeq"), Some(42));
        assert_eq!(string_field(cm.as_bytes(), "sentNanos"), Some(1_700_000_000));
        assert_eq!(string_field(cm.as_bytes(), "missing"), None);
    }
}
