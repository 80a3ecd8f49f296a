//! Create throughput: 1 KiB ConfigMaps through the apiserver next to puts of the same JSON
//! straight into etcd, both from the same number of concurrent clients; and, for reference,
//! etcd doing what the apiserver asks of it per create.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use etcd_client::{Compare, CompareOp, Txn, TxnOp, WatchOptions};

use crate::api::{configmap, Api};
use crate::load::{closed_loop, Throughput};

/// POSTs ConfigMaps named `<name_prefix>-<i>` into `ns`.
pub async fn apiserver(
    api: Arc<Api>,
    ns: &str,
    name_prefix: &str,
    clients: usize,
    duration: Duration,
    max: usize,
) -> Throughput {
    let ns = Arc::<str>::from(ns);
    let name_prefix = Arc::<str>::from(name_prefix);
    let path = Arc::<str>::from(format!("/api/v1/namespaces/{ns}/configmaps"));
    closed_loop(clients, duration, max, move |_, i| {
        let (api, ns, name_prefix, path) = (api.clone(), ns.clone(), name_prefix.clone(), path.clone());
        async move {
            let body = configmap(&ns, &format!("{name_prefix}-{i}"), &[]);
            api.create(&api.client, &path, body).await
        }
    })
    .await
}

/// Puts the same 1 KiB ConfigMap JSON under `<key_prefix><i>`.
pub async fn etcd(
    etcd: etcd_client::Client,
    key_prefix: &str,
    clients: usize,
    duration: Duration,
    max: usize,
) -> Throughput {
    let key_prefix = Arc::<str>::from(key_prefix);
    closed_loop(clients, duration, max, move |_, i| {
        let (mut kv, key_prefix) = (etcd.kv_client(), key_prefix.clone());
        async move {
            let name = format!("cm-{i}");
            let body = configmap("bench-raw", &name, &[]);
            kv.put(format!("{key_prefix}{name}"), body, None).await?;
            Ok(())
        }
    })
    .await
}

/// What a create asks of etcd, without the apiserver: a create-if-absent transaction per
/// object (as the apiserver's store does) while one watch follows the prefix (as its watch
/// cache does, without previous values). For reference next to plain puts.
pub async fn etcd_txn(
    etcd: etcd_client::Client,
    key_prefix: &str,
    clients: usize,
    duration: Duration,
    max: usize,
) -> anyhow::Result<Throughput> {
    let opts = WatchOptions::new().with_prefix();
    let mut stream = etcd.watch_client().watch(key_prefix, Some(opts)).await.context("etcd watch")?;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    let key_prefix = Arc::<str>::from(key_prefix);
    let t = closed_loop(clients, duration, max, move |_, i| {
        let (mut kv, key_prefix) = (etcd.kv_client(), key_prefix.clone());
        async move {
            let name = format!("cm-{i}");
            let key = format!("{key_prefix}{name}");
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), configmap("bench-raw", &name, &[]), None)]);
            if !kv.txn(txn).await?.succeeded() {
                bail!("{key} exists");
            }
            Ok(())
        }
    })
    .await;
    drain.abort();
    Ok(t)
}
