//! GET of one object over many keep-alive connections: one client (one pool, one
//! connection) per concurrent task.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::api::Api;
use crate::load::{closed_loop, Throughput};

pub async fn run(api: &Api, path: &str, connections: usize, duration: Duration) -> anyhow::Result<Throughput> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let c = api.new_client(Some(Duration::from_secs(30)))?;
        // Untimed: opens the connection (TCP + TLS) that the timed loop keeps alive.
        get(&c, &api.url(path)).await?;
        clients.push(c);
    }
    let clients = Arc::new(clients);
    let url = Arc::<str>::from(api.url(path));
    Ok(closed_loop(connections, duration, usize::MAX, move |task, _| {
        let (clients, url) = (clients.clone(), url.clone());
        async move { get(&clients[task], &url).await }
    })
    .await)
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    if resp.status() != reqwest::StatusCode::OK {
        bail!("GET {url}: {}", resp.status());
    }
    resp.bytes().await.with_context(|| format!("GET {url}: reading the body"))?;
    Ok(())
}
