//! The pod loop: watches the pods bound to this node (`spec.nodeName` field selector, no
//! polling of the API), syncs each one through `sync_pod`, reports its status (patched, and
//! only when it changed), finishes deletions (stop, then delete with grace 0 so the
//! apiserver forgets the pod), and removes what the runtime has for pods that are gone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::sync::{observe, sync_pod, NodeConfig, PodDeps, SyncOutcome, CONTAINER_NAME, POD_UID};
use crate::runtime::{api, sandbox_filter_by_labels, ContainerRuntime};
use crate::status::{pod_status, Observation, Observed, ObservedContainer};

pub struct PodManager {
    pub client: kube::Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node_name: String,
    pub host_ip: String,
    pub config: NodeConfig,
    /// Objects, volumes, events and probes of the pods (see `sync::PodDeps`).
    pub deps: Arc<PodDeps>,
    /// How often every pod is synced even without a change (upstream: 1 s resync of workers).
    pub resync: Duration,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn rfc3339_from_nanos(ns: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl PodManager {
    pub async fn run(self, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let writer: Writer<Pod> = Writer::default();
        let store = writer.as_reader();
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        let watch = reflector::reflector(writer, watcher(api, cfg).default_backoff()).for_each(move |_| {
            w.notify_one();
            futures::future::ready(())
        });
        tokio::pin!(watch);
        let mut backoff = Backoff::default();
        let mut tick = tokio::time::interval(self.resync);
        let mut reported: HashMap<String, Value> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut watch => return,
                _ = wake.notified() => {}
                _ = tick.tick() => {}
            }
            // The watch is polled only inside the select above: never wait here.
            if futures::FutureExt::now_or_never(store.wait_until_ready()).is_none_or(|r| r.is_err()) {
                continue;
            }
            let pods = store.state();
            let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            for pod in pods {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                if let Err(e) = self.sync_one(&pod, &mut backoff, &mut reported).await {
                    tracing::warn!(namespace = %ns, pod = %name, error = %e, "pod sync failed");
                }
            }
            if let Err(e) = self.remove_orphans(&live).await {
                tracing::warn!(error = %e, "cleaning up pods that are gone failed");
            }
            reported.retain(|uid, _| live.contains(uid));
        }
    }

    async fn sync_one(
        &self,
        pod: &Pod,
        backoff: &mut Backoff,
        reported: &mut HashMap<String, Value>,
    ) -> anyhow::Result<()> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
            let grace = Duration::from_secs(grace.max(0).unsigned_abs());
            super::sync::stop_pod(self.runtime.as_ref(), &self.deps, pod, grace).await?;
            self.kill(&uid).await?;
            self.deps.cleanup_pod(&uid).await?;
            backoff.forget_pod(&uid);
            // Everything stopped: the apiserver may forget the pod now.
            let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
            match pods.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let outcome = if phase == "Succeeded" || phase == "Failed" {
            SyncOutcome::default()
        } else {
            sync_pod(self.runtime.as_ref(), pod, &self.config, &self.deps, backoff, now_secs()).await?
        };
        let status = self.status(pod, &outcome).await?;
        if reported.get(&uid) != Some(&status) {
            let patch = json!({"status": status});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            reported.insert(uid, status);
        }
        Ok(())
    }

    /// What to report, from the runtime's state and this sync's outcome.
    async fn status(&self, pod: &Pod, outcome: &SyncOutcome) -> anyhow::Result<Value> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let state = observe(self.runtime.as_ref(), &uid).await?;
        let sandbox = state.sandboxes.iter().filter(|s| s.ready).max_by_key(|s| s.created_at);
        let pod_ip = match sandbox {
            Some(s) => {
                self.runtime.pod_sandbox_status(&s.id, false).await?.status.and_then(|st| st.network).map(|n| n.ip)
            }
            None => None,
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let observe_one = |c: &k8s_openapi::api::core::v1::Container| {
            let records: Vec<_> = state.containers.iter().filter(|r| r.name == c.name).collect();
            let latest = records.iter().max_by_key(|r| (r.attempt, r.created_at)).copied();
            (c.clone(), latest.cloned(), records.len())
        };
        let mut init = Vec::new();
        let mut containers = Vec::new();
        for (list, out) in
            [(spec.init_containers.clone().unwrap_or_default(), &mut init), (spec.containers.clone(), &mut containers)]
        {
            for c in &list {
                let (c, latest, count) = observe_one(c);
                let waiting_reason =
                    outcome.failed.iter().find(|f| f.0 == c.name).map(|f| (f.1.clone(), f.2.clone())).or_else(|| {
                        outcome.backing_off.iter().find(|b| b.0 == c.name).map(|b| {
                            (
                                "CrashLoopBackOff".to_string(),
                                format!(
                                    "back-off {}s restarting failed container={} pod={}",
                                    b.1.as_secs(),
                                    c.name,
                                    pod.metadata.name.clone().unwrap_or_default()
                                ),
                            )
                        })
                    });
                let mut observed = ObservedContainer {
                    name: c.name.clone(),
                    id: String::new(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    restart_count: count.saturating_sub(1) as i32,
                    state: Observed::Waiting { reason: "ContainerCreating".into(), message: String::new() },
                    last: None,
                    ready: false,
                    started: false,
                };
                if let Some(r) = latest {
                    let st = self.runtime.container_status(&r.id, false).await?.status.unwrap_or_default();
                    observed.id = format!("containerd://{}", r.id);
                    observed.image_id = st.image_ref.clone();
                    observed.state = match api::ContainerState::try_from(st.state)
                        .unwrap_or(api::ContainerState::ContainerUnknown)
                    {
                        api::ContainerState::ContainerRunning => {
                            observed.started = self.deps.prober.started(&c, &r.id);
                            observed.ready = self.deps.prober.ready(&c, &r.id);
                            Observed::Running { started_at: rfc3339_from_nanos(st.started_at) }
                        }
                        api::ContainerState::ContainerExited => Observed::Terminated {
                            exit_code: st.exit_code,
                            reason: if st.reason.is_empty() {
                                if st.exit_code == 0 {
                                    "Completed".into()
                                } else {
                                    "Error".into()
                                }
                            } else {
                                st.reason.clone()
                            },
                            message: st.message.clone(),
                            started_at: rfc3339_from_nanos(st.started_at),
                            finished_at: rfc3339_from_nanos(st.finished_at),
                        },
                        _ => Observed::Waiting { reason: "ContainerCreating".into(), message: String::new() },
                    };
                }
                if let Some((reason, message)) = waiting_reason {
                    let previous = std::mem::replace(&mut observed.state, Observed::Waiting { reason, message });
                    if matches!(previous, Observed::Terminated { .. }) {
                        observed.last = Some(previous);
                    }
                }
                out.push(observed);
            }
        }
        let obs = Observation {
            host_ip: &self.host_ip,
            pod_ip: pod_ip.as_deref(),
            sandbox_ready: sandbox.is_some(),
            init: &init,
            containers: &containers,
        };
        let previous = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        Ok(pod_status(pod, &obs, &now_rfc3339(), previous.as_ref()))
    }

    /// Stops and removes everything the runtime has for the pod `uid`.
    async fn kill(&self, uid: &str) -> anyhow::Result<()> {
        let state = observe(self.runtime.as_ref(), uid).await?;
        for c in &state.containers {
            if c.state == super::plan::State::Running {
                self.runtime.stop_container(&c.id, Duration::from_secs(30)).await?;
            }
        }
        for s in &state.sandboxes {
            self.runtime.stop_pod_sandbox(&s.id).await?;
            self.runtime.remove_pod_sandbox(&s.id).await?;
        }
        Ok(())
    }

    /// Pods the runtime runs that the API no longer binds here.
    async fn remove_orphans(&self, live: &HashSet<String>) -> anyhow::Result<()> {
        let sandboxes = self.runtime.list_pod_sandbox(Some(sandbox_filter_by_labels::<&str, &str>([]))).await?;
        let orphans: HashSet<String> =
            sandboxes.iter().filter_map(|s| s.labels.get(POD_UID).cloned()).filter(|u| !live.contains(u)).collect();
        for uid in orphans {
            tracing::info!(pod_uid = %uid, "removing a pod that is gone from the API");
            self.kill(&uid).await?;
            self.deps.cleanup_pod(&uid).await?;
        }
        self.deps.cleanup_orphaned_volumes(live).await;
        let _ = CONTAINER_NAME;
        Ok(())
    }
}
