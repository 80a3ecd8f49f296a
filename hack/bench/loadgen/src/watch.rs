//! Watch fan-out: many HTTP watch streams on one namespace's ConfigMaps, and the time from a
//! write (its timestamp rides in the object's data) until the last watcher has the event;
//! next to one raw etcd watch seeing the same pattern of puts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{configmap, string_field, unix_nanos, Api};
use crate::stats::Summary;

/// Watch streams opened at once; the rest wait (keeps the listen backlog small).
const CONNECT_CONCURRENCY: usize = 64;

pub struct Fanout {
    pub watchers: usize,
    pub writes: usize,
    /// Write to the last watcher holding the event, per write.
    pub last: Summary,
    /// Write to the first watcher holding the event, per write.
    pub first: Summary,
    /// Events that some watcher never received before the deadline.
    pub missing: usize,
    /// How long opening every watch took.
    pub connect: Duration,
}

/// Per write: fastest and slowest delivery (ns) and how many watchers got it.
struct Deliveries {
    first: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    count: Vec<AtomicUsize>,
}

impl Deliveries {
    fn new(writes: usize) -> Self {
        Deliveries {
            first: (0..writes).map(|_| AtomicU64::new(u64::MAX)).collect(),
            last: (0..writes).map(|_| AtomicU64::new(0)).collect(),
            count: (0..writes).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Records one watch event line received at `now` (ns since the epoch).
    fn record(&self, line: &[u8], now: u64) {
        let (Some(seq), Some(sent)) = (string_field(line, "benchSeq"), string_field(line, "sentNanos")) else {
            return;
        };
        let Some(i) = usize::try_from(seq).ok().filter(|i| *i < self.count.len()) else { return };
        let latency = now.saturating_sub(sent);
        self.first[i].fetch_min(latency, Ordering::Relaxed);
        self.last[i].fetch_max(latency, Ordering::Relaxed);
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    fn delivered(&self) -> usize {
        self.count.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

fn write_body(ns: &str, i: usize) -> String {
    configmap(ns, &format!("w-{i}"), &[("benchSeq", i.to_string()), ("sentNanos", unix_nanos().to_string())])
}

/// Opens `watchers` watches on `ns`'s ConfigMaps, then creates `writes` ConfigMaps one per
/// `interval` and measures delivery to every watcher.
pub async fn apiserver(
    api: &Api,
    ns: &str,
    watchers: usize,
    writes: usize,
    interval: Duration,
) -> anyhow::Result<Fanout> {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let rv = api.list_rv(&path).await?;
    // One client without a request timeout: its pool opens one HTTP/1.1 connection per watch.
    let client = api.new_client(None)?;
    let url = Arc::<str>::from(api.url(&format!("{path}?watch=true&resourceVersion={rv}")));
    let deliveries = Arc::new(Deliveries::new(writes));
    let cancel = CancellationToken::new();
    let connecting = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(watchers.max(1));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..watchers {
        let (client, url, deliveries, cancel, connecting, ready_tx) =
            (client.clone(), url.clone(), deliveries.clone(), cancel.clone(), connecting.clone(), ready_tx.clone());
        set.spawn(async move {
            let permit = connecting.acquire_owned().await;
            let resp = match client.get(&*url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => r,
                Ok(r) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("watch: {}", r.status()))).await;
                    return;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e).context("opening a watch"))).await;
                    return;
                }
            };
            drop(permit);
            let _ = ready_tx.send(Ok(())).await;
            read_events(resp, &deliveries, &cancel).await;
        });
    }
    drop(ready_tx);
    let result = measure(api, ns, &path, watchers, writes, interval, &deliveries, &mut ready_rx, started).await;
    cancel.cancel();
    while set.join_next().await.is_some() {}
    result
}

async fn read_events(mut resp: reqwest::Response, deliveries: &Deliveries, cancel: &CancellationToken) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return,
            c = resp.chunk() => c,
        };
        let Ok(Some(bytes)) = chunk else { return };
        let now = unix_nanos();
        buf.extend_from_slice(&bytes);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            deliveries.record(&buf[..pos], now);
            buf.drain(..=pos);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    api: &Api,
    ns: &str,
    path: &str,
    watchers: usize,
    writes: usize,
    interval: Duration,
    deliveries: &Deliveries,
    ready_rx: &mut mpsc::Receiver<anyhow::Result<()>>,
    started: Instant,
) -> anyhow::Result<Fanout> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 0..watchers {
        match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e.context(format!("{n} of {watchers} watches were open"))),
            Ok(None) => bail!("watch tasks ended early"),
            Err(_) => bail!("only {n} of {watchers} watches opened within 120 s"),
        }
    }
    let connect = started.elapsed();

    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..writes {
        tick.tick().await;
        api.create(&api.client, path, write_body(ns, i)).await.with_context(|| format!("write {i}"))?;
    }
    let expected = watchers * writes;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let complete: Vec<usize> =
        (0..writes).filter(|i| deliveries.count[*i].load(Ordering::Relaxed) >= watchers).collect();
    let ns_of = |v: &AtomicU64| Duration::from_nanos(v.load(Ordering::Relaxed));
    Ok(Fanout {
        watchers,
        writes,
        last: Summary::of(complete.iter().map(|i| ns_of(&deliveries.last[*i])).collect()),
        first: Summary::of(
            (0..writes)
                .filter(|i| deliveries.count[*i].load(Ordering::Relaxed) > 0)
                .map(|i| ns_of(&deliveries.first[i]))
                .collect(),
        ),
        missing: expected.saturating_sub(deliveries.delivered()),
        connect,
    })
}

/// One etcd watch on `key_prefix`; `writes` puts of the same kind of object, one per
/// `interval`; the put-to-event latency of each.
pub async fn etcd(
    etcd: &etcd_client::Client,
    key_prefix: &str,
    writes: usize,
    interval: Duration,
) -> anyhow::Result<Summary> {
    let mut kv = etcd.kv_client();
    let rev = kv
        .get(key_prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only()))
        .await?
        .header()
        .map(|h| h.revision())
        .context("etcd response without a header")?;
    let opts = etcd_client::WatchOptions::new().with_prefix().with_start_revision(rev + 1);
    let mut stream = etcd.watch_client().watch(key_prefix, Some(opts)).await.context("etcd watch")?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Duration>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let now = unix_nanos();
            for ev in resp.events() {
                if let Some(sent) = ev.kv().and_then(|kv| string_field(kv.value(), "sentNanos")) {
                    let _ = tx.send(Duration::from_nanos(now.saturating_sub(sent)));
                }
            }
        }
    });
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..writes {
        tick.tick().await;
        kv.put(format!("{key_prefix}w-{i}"), write_body("bench-raw", i), None).await.context("etcd put")?;
    }
    let mut latencies = Vec::with_capacity(writes);
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.len() < writes {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(l)) => latencies.push(l),
            _ => break,
        }
    }
    reader.abort();
    if latencies.len() < writes {
        bail!("the etcd watch delivered {} of {writes} events", latencies.len());
    }
    Ok(Summary::of(latencies))
}
