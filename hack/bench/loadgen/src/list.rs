//! A cluster-wide list of every pod served from the watch cache (`resourceVersion=0`) next to
//! a raw etcd range over the same keys. Runs alternate so both see the same machine noise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::api::{pod, Api};
use crate::load::{closed_loop, Throughput};
use crate::stats::Summary;

/// Creates `<ns>/pod-<i>` for i in 0..count, `clients` at a time.
pub async fn create_pods(api: Arc<Api>, ns: &str, count: usize, clients: usize) -> anyhow::Result<Throughput> {
    let ns = Arc::<str>::from(ns);
    let path = Arc::<str>::from(format!("/api/v1/namespaces/{ns}/pods"));
    let t = closed_loop(clients, Duration::from_secs(300), count, move |_, i| {
        let (api, ns, path) = (api.clone(), ns.clone(), path.clone());
        async move { api.create(&api.client, &path, pod(&ns, &format!("pod-{i}"))).await }
    })
    .await;
    if t.ops != count {
        bail!("created {} of {count} pods ({} errors, first: {:?})", t.ops, t.errors, t.first_error);
    }
    Ok(t)
}

pub struct ListResult {
    pub items: usize,
    pub api: Summary,
    pub api_bytes: usize,
    pub etcd: Summary,
    pub etcd_bytes: usize,
}

/// Times `runs` lists of `/api/v1/pods?resourceVersion=0` (whole body received) and as many
/// etcd ranges of `<etcd_prefix>/pods/` (whole response decoded), after one untimed warm-up
/// of each that also checks both see `expected` pods.
pub async fn compare(
    api: &Api,
    etcd: &etcd_client::Client,
    etcd_prefix: &str,
    expected: usize,
    runs: usize,
) -> anyhow::Result<ListResult> {
    let path = "/api/v1/pods?resourceVersion=0";
    // The cache catches up with etcd asynchronously; wait until it holds every pod.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = api.get_json(path).await?;
        let n = list["items"].as_array().map(Vec::len).unwrap_or(0);
        if n == expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("the watch cache lists {n} pods, expected {expected}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut kv = etcd.kv_client().max_decoding_message_size(512 << 20);
    let key = format!("{}/pods/", etcd_prefix.trim_end_matches('/'));
    let range = || etcd_client::GetOptions::new().with_prefix();
    let warm = kv.get(key.as_str(), Some(range())).await.context("etcd range")?;
    if warm.kvs().len() != expected {
        bail!("etcd holds {} keys under {key}, expected {expected}", warm.kvs().len());
    }
    let etcd_bytes = warm.kvs().iter().map(|kv| kv.key().len() + kv.value().len()).sum();

    let (mut api_times, mut etcd_times, mut api_bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let t = Instant::now();
        let resp = api.client.get(api.url(path)).send().await.context("list pods")?;
        if !resp.status().is_success() {
            bail!("list pods: {}", resp.status());
        }
        api_bytes = resp.bytes().await.context("list pods: reading the body")?.len();
        api_times.push(t.elapsed());

        let t = Instant::now();
        let r = kv.get(key.as_str(), Some(range())).await.context("etcd range")?;
        etcd_times.push(t.elapsed());
        if r.kvs().len() != expected {
            bail!("etcd range returned {} keys", r.kvs().len());
        }
    }
    Ok(ListResult {
        items: expected,
        api: Summary::of(api_times),
        api_bytes,
        etcd: Summary::of(etcd_times),
        etcd_bytes,
    })
}
