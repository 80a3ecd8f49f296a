//! Helpers shared by the tests that run the whole proxy: reading its `/metrics` the way a
//! Prometheus scrape does.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET /metrics over plain HTTP/1.0 (the server closes the connection after the body, so no
/// client library is needed).
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await?;
    let resp = String::from_utf8(resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP header end"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_string())
}

/// The value of the sample named exactly `name` (no labels) in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}
