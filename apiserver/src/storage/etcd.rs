//! The etcd key-value layer: create-if-absent, compare-and-swap update and delete on the
//! modification revision, ranges at a revision with paging, watches, compaction.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use super::StorageError;

/// Latency of etcd requests by operation and resource, registered by the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct EtcdLabels {
    pub operation: &'static str,
    pub r#type: String,
}

pub type EtcdLatency = prometheus_client::metrics::family::Family<
    EtcdLabels,
    prometheus_client::metrics::histogram::Histogram,
    fn() -> prometheus_client::metrics::histogram::Histogram,
>;

pub fn etcd_latency() -> EtcdLatency {
    fn h() -> prometheus_client::metrics::histogram::Histogram {
        prometheus_client::metrics::histogram::Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        ])
    }
    EtcdLatency::new_with_constructor(h)
}

#[derive(Clone)]
pub struct Etcd {
    client: Client,
    kv: KvClient,
    /// Root of every key, `/registry` by default (upstream's `--etcd-prefix`).
    prefix: String,
    latency: Option<EtcdLatency>,
}

#[derive(Debug, Clone)]
pub struct KeyValue {
    /// The key below the prefix, e.g. `/pods/default/web`.
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the range was read at.
    pub revision: i64,
    /// True when keys remain past the last item.
    pub more: bool,
    /// How many keys remain after this page (for `remainingItemCount`).
    pub remaining: i64,
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// HTTP/2 pings on the etcd connection, idle or not (as etcd-client does), so that a peer gone
/// silent is noticed and redialed.
const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One HTTP/2 connection to one etcd endpoint, dialed on first use and redialed after it
/// breaks. etcd-client's own `connect` puts even a single endpoint behind a balancer with a
/// request queue of its own, one more task hop per request than this; with one endpoint there
/// is nothing to balance.
fn plain_channel(endpoint: &str) -> Result<tonic::transport::Channel, StorageError> {
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint_url(endpoint)?)
        .map_err(|e| StorageError::Unavailable(format!("etcd endpoint {endpoint}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// The URL of an `--etcd-servers` entry. Like etcd-client, a bare `host:port` is plain HTTP;
/// no TLS to etcd is built in, so `https://` is refused here as etcd-client refuses it.
fn endpoint_url(endpoint: &str) -> Result<String, StorageError> {
    match endpoint.split_once("://") {
        None => Ok(format!("http://{endpoint}")),
        Some(("http", _)) => Ok(endpoint.to_string()),
        Some(_) => Err(StorageError::Unavailable(format!("etcd endpoint {endpoint}: only http:// is supported"))),
    }
}

/// The largest etcd response the apiserver decodes (etcd's Go client default, `math.MaxInt32`).
const MAX_RESPONSE: usize = i32::MAX as usize;

impl Etcd {
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StorageError> {
        let client = match endpoints {
            [one] => Client::from_channel(etcd_client::Channel::Tonic(plain_channel(one)?), None).await?,
            _ => {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT);
                Client::connect(endpoints, Some(opts)).await?
            }
        };
        // A list of many objects is one range response; tonic's default 4 MiB cap would turn
        // a large namespace into an error. etcd's own Go client allows up to 2 GiB.
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
        Ok(Self { client, kv, prefix: prefix.trim_end_matches('/').to_string(), latency: None })
    }

    /// Records every request's latency into `latency`.
    pub fn with_metrics(mut self, latency: EtcdLatency) -> Self {
        self.latency = Some(latency);
        self
    }

    fn observe(&self, operation: &'static str, key: &str, started: std::time::Instant) {
        if let Some(l) = &self.latency {
            let type_ = key.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
            l.get_or_create(&EtcdLabels { operation, r#type: type_ }).observe(started.elapsed().as_secs_f64());
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn strip(&self, key: &[u8]) -> String {
        let k = String::from_utf8_lossy(key);
        k.strip_prefix(&self.prefix).unwrap_or(&k).to_string()
    }

    fn kv_of(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: self.strip(kv.key()),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
        }
    }

    /// Creates every key atomically, failing with AlreadyExists if any exists.
    /// Returns the revision of the write.
    pub async fn create(&self, puts: &[(String, Vec<u8>)]) -> Result<i64, StorageError> {
        let compares: Vec<Compare> =
            puts.iter().map(|(k, _)| Compare::create_revision(self.full(k), CompareOp::Equal, 0)).collect();
        let ops: Vec<TxnOp> = puts.iter().map(|(k, v)| TxnOp::put(self.full(k), v.clone(), None)).collect();
        let started = std::time::Instant::now();
        let resp = self.kv.clone().txn(Txn::new().when(compares).and_then(ops)).await;
        self.observe("create", puts.first().map(|(k, _)| k.as_str()).unwrap_or(""), started);
        let resp = resp?;
        if !resp.succeeded() {
            return Err(StorageError::AlreadyExists);
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        let started = std::time::Instant::now();
        let resp = self.kv.clone().get(self.full(key), None).await;
        self.observe("get", key, started);
        Ok(resp?.kvs().first().map(|kv| self.kv_of(kv)))
    }

    /// Replaces `key` if its modification revision is still `expected`; also creates and
    /// deletes the side keys in the same transaction (allocations that live with the object).
    pub async fn update(
        &self,
        key: &str,
        expected: i64,
        value: Vec<u8>,
        side_creates: &[(String, Vec<u8>)],
        side_deletes: &[String],
    ) -> Result<i64, StorageError> {
        let full = self.full(key);
        let mut compares = vec![Compare::mod_revision(full.clone(), CompareOp::Equal, expected)];
        compares.extend(side_creates.iter().map(|(k, _)| Compare::create_revision(self.full(k), CompareOp::Equal, 0)));
        let mut ops = vec![TxnOp::put(full, value, None)];
        ops.extend(side_creates.iter().map(|(k, v)| TxnOp::put(self.full(k), v.clone(), None)));
        ops.extend(side_deletes.iter().map(|k| TxnOp::delete(self.full(k), None)));
        let started = std::time::Instant::now();
        let resp = self.kv.clone().txn(Txn::new().when(compares).and_then(ops)).await;
        self.observe("update", key, started);
        let resp = resp?;
        if !resp.succeeded() {
            return Err(StorageError::Conflict);
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Deletes `key` if its modification revision is still `expected`, with side keys.
    pub async fn delete(&self, key: &str, expected: i64, side_deletes: &[String]) -> Result<i64, StorageError> {
        let full = self.full(key);
        let mut ops = vec![TxnOp::delete(full.clone(), None)];
        ops.extend(side_deletes.iter().map(|k| TxnOp::delete(self.full(k), None)));
        let txn = Txn::new().when(vec![Compare::mod_revision(full, CompareOp::Equal, expected)]).and_then(ops);
        let started = std::time::Instant::now();
        let resp = self.kv.clone().txn(txn).await;
        self.observe("delete", key, started);
        let resp = resp?;
        if !resp.succeeded() {
            return Err(StorageError::Conflict);
        }
        // A delete of an already-gone key succeeds the compare only if expected matched.
        let deleted = resp.op_responses().iter().any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0));
        if !deleted {
            return Err(StorageError::NotFound);
        }
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Reads keys under `prefix` in key order at `revision` (0 = now), starting after
    /// `start_after`, at most `limit` (0 = all).
    pub async fn list(
        &self,
        prefix: &str,
        revision: i64,
        start_after: Option<&str>,
        limit: i64,
    ) -> Result<ListPage, StorageError> {
        let full_prefix = self.full(prefix);
        let end = prefix_end(full_prefix.as_bytes());
        let start: Vec<u8> = match start_after {
            Some(k) => {
                let mut s = self.full(k).into_bytes();
                s.push(0);
                s
            }
            None => full_prefix.into_bytes(),
        };
        let mut opts = GetOptions::new().with_range(end);
        if revision > 0 {
            opts = opts.with_revision(revision);
        }
        if limit > 0 {
            opts = opts.with_limit(limit);
        }
        let started = std::time::Instant::now();
        let resp = self.kv.clone().get(start, Some(opts)).await;
        self.observe("list", prefix, started);
        let resp = resp.map_err(|e| match StorageError::from(e) {
            StorageError::Compacted { .. } => StorageError::Compacted { requested: revision, compacted: 0 },
            StorageError::FutureRevision(_) => StorageError::FutureRevision(revision),
            other => other,
        })?;
        let items: Vec<KeyValue> = resp.kvs().iter().map(|kv| self.kv_of(kv)).collect();
        let count = resp.count();
        let remaining = (count - items.len() as i64).max(0);
        Ok(ListPage {
            items,
            // The revision read at: the one asked for, else the store's current one.
            revision: if revision > 0 { revision } else { resp.header().map(|h| h.revision()).unwrap_or_default() },
            more: resp.more(),
            remaining,
        })
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> Result<i64, StorageError> {
        let resp = self.kv.clone().get(self.full("/"), Some(GetOptions::new().with_count_only())).await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// Opens a watch on `prefix` from `start_revision` with previous values.
    /// `prev_kv` asks etcd for each key's previous value too; the watch cache keeps its own
    /// copy and saves etcd that work.
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
        prev_kv: bool,
    ) -> Result<etcd_client::WatchStream, StorageError> {
        let mut opts = WatchOptions::new().with_prefix().with_start_revision(start_revision);
        if prev_kv {
            opts = opts.with_prev_key();
        }
        Ok(self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE)
            .watch(self.full(prefix), Some(opts))
            .await?)
    }

    /// A key read off a watch, below the prefix, without copying its value.
    pub fn key_name(&self, key: &[u8]) -> String {
        self.strip(key)
    }

    pub async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.client.clone().compact(revision, None).await?;
        Ok(())
    }

    /// Removes every key under the prefix (tests only use this on their own prefix).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.kv.clone().delete(self.full(prefix), Some(DeleteOptions::new().with_prefix())).await?;
        Ok(())
    }

    pub async fn healthy(&self) -> bool {
        self.current_revision().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_are_plain_http() {
        assert_eq!(endpoint_url("http://127.0.0.1:2379").ok(), Some("http://127.0.0.1:2379".to_string()));
        assert_eq!(endpoint_url("127.0.0.1:2379").ok(), Some("http://127.0.0.1:2379".to_string()));
        assert!(matches!(endpoint_url("https://127.0.0.1:2379"), Err(StorageError::Unavailable(_))));
    }
}
