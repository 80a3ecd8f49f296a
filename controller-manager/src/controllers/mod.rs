//! The registry of controllers. Upstream names, so `--controllers=*,-garbagecollector` reads
//! as it does for kube-controller-manager.
//!
//! Shared machinery: `informer` (one watch and store per type for every controller),
//! `workqueue` (deduplicating, rate-limited keys), `expectations`, `events`, `metrics`, and
//! `run_workers`, the loop that takes keys off a queue and reconciles them.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod informer;
pub mod job;
pub mod localpath;
pub mod metrics;
pub mod namespace;
pub mod nodelifecycle;
pub mod owner;
pub mod persistentvolume;
pub mod podcache;
pub mod podgc;
pub mod replicaset;
pub mod rootcacertpublisher;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttlafterfinished;
pub mod workqueue;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every controller gets.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub cancel: CancellationToken,
    pub informers: Arc<informer::Factory>,
    pub metrics: Arc<metrics::Metrics>,
    /// Owns helper tasks (event writers); `run` waits for them on shutdown.
    pub tasks: TaskTracker,
    pub opts: Arc<crate::Options>,
    /// The cluster CA bundle (PEM) the root-CA publisher distributes.
    pub root_ca: Option<String>,
}

impl Context {
    /// An event recorder for `component`, its writer task owned by `tasks`.
    pub fn recorder(&self, component: &'static str) -> events::Recorder {
        let (r, writer) = events::Recorder::new(self.client.clone(), component, self.cancel.clone());
        self.tasks.spawn(writer);
        r
    }
}

pub struct Descriptor {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub start: fn(Context) -> BoxFuture<'static, anyhow::Result<()>>,
}

pub static DESCRIPTORS: &[Descriptor] = &[
    Descriptor { name: "garbagecollector", enabled_by_default: true, start: |c| Box::pin(garbagecollector::run(c)) },
    Descriptor { name: "namespace", enabled_by_default: true, start: |c| Box::pin(namespace::run(c)) },
    Descriptor { name: "replicaset", enabled_by_default: true, start: |c| Box::pin(replicaset::run(c)) },
    Descriptor { name: "deployment", enabled_by_default: true, start: |c| Box::pin(deployment::run(c)) },
    Descriptor { name: daemonset::NAME, enabled_by_default: true, start: |c| Box::pin(daemonset::run(c)) },
    Descriptor { name: disruption::NAME, enabled_by_default: true, start: |c| Box::pin(disruption::run(c)) },
    Descriptor { name: "endpointslice", enabled_by_default: true, start: |c| Box::pin(endpointslice::run(c)) },
    Descriptor { name: "endpoint", enabled_by_default: true, start: |c| Box::pin(endpoints::run(c)) },
    Descriptor { name: "nodelifecycle", enabled_by_default: true, start: |c| Box::pin(nodelifecycle::run(c)) },
    Descriptor { name: "podgc", enabled_by_default: true, start: |c| Box::pin(podgc::run(c)) },
    Descriptor {
        name: persistentvolume::NAME,
        enabled_by_default: true,
        start: |c| Box::pin(persistentvolume::run(c)),
    },
    Descriptor { name: localpath::NAME, enabled_by_default: false, start: |c| Box::pin(localpath::run(c)) },
    Descriptor { name: "job", enabled_by_default: true, start: |c| Box::pin(job::run(c)) },
    Descriptor { name: "cronjob", enabled_by_default: true, start: |c| Box::pin(cronjob::run(c)) },
    Descriptor { name: "ttl-after-finished", enabled_by_default: true, start: |c| Box::pin(ttlafterfinished::run(c)) },
    Descriptor { name: statefulset::NAME, enabled_by_default: true, start: |c| Box::pin(statefulset::run(c)) },
    Descriptor { name: "serviceaccount", enabled_by_default: true, start: |c| Box::pin(serviceaccount::run(c)) },
    Descriptor {
        name: "root-ca-cert-publisher",
        enabled_by_default: true,
        start: |c| Box::pin(rootcacertpublisher::run(c)),
    },
];

/// Applies `--controllers`: `*` = every default, `name` adds one, `-name` removes one.
pub fn select(flags: &[String]) -> anyhow::Result<Vec<&'static Descriptor>> {
    let star = flags.iter().any(|f| f == "*");
    let mut out = Vec::new();
    for d in DESCRIPTORS {
        let on = flags.iter().any(|f| f == d.name);
        let off = flags.iter().any(|f| f.strip_prefix('-') == Some(d.name));
        if (on || (star && d.enabled_by_default)) && !off {
            out.push(d);
        }
    }
    for f in flags {
        let name = f.trim_start_matches('-');
        if name != "*" && !DESCRIPTORS.iter().any(|d| d.name == name) {
            anyhow::bail!("--controllers: unknown controller {name:?}");
        }
    }
    Ok(out)
}

/// Runs `workers` loops over `queue` until `cancel`: each takes a key, reconciles it, and
/// either forgets it (`Ok(None)`), requeues it after a delay (`Ok(Some(d))`), or requeues it
/// with backoff (`Err`). Records depth, duration and errors under `name`.
pub async fn run_workers<F, Fut, E>(
    name: &'static str,
    queue: Arc<workqueue::Queue>,
    workers: usize,
    ctx: &Context,
    reconcile: F,
) where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, E>> + Send,
    E: std::fmt::Display,
{
    let reconcile = Arc::new(reconcile);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        let m = ctx.metrics.clone();
        set.spawn(async move {
            let (ql, cl) = (metrics::Metrics::queue(name), metrics::Metrics::controller(name));
            while let Some(key) = queue.get().await {
                m.depth.get_or_create(&ql).set(queue.len() as i64);
                m.adds.get_or_create(&ql).inc();
                let started = Instant::now();
                // A panicking reconcile must not take the worker (and the key it holds) with it.
                let result = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(reconcile(
                    key.clone(),
                )))
                .await
                {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("reconcile panicked".to_string()),
                };
                m.duration.get_or_create(&cl).observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(None) => queue.forget(&key),
                    Ok(Some(after)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), after);
                    }
                    Err(e) => {
                        m.errors.get_or_create(&cl).inc();
                        m.retries.get_or_create(&ql).inc();
                        tracing::warn!(controller = name, key = %key, error = %e, "sync failed; requeued");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    ctx.cancel.cancelled().await;
    queue.shut_down();
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_minus_one_switches_it_off() {
        let names: Vec<_> =
            select(&["*".into(), "-garbagecollector".into()]).expect("valid").iter().map(|d| d.name).collect();
        assert!(!names.contains(&"garbagecollector"));
        assert!(names.contains(&"namespace"));
    }

    #[test]
    fn unknown_controller_is_an_error() {
        assert!(select(&["nope".into()]).is_err());
    }
}
