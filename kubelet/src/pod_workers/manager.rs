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
use super::sync::{observe, sync_pod, NodeConfig, PodDeps, SyncOutcome, POD_UID};
use crate::runtime::{api, ContainerRuntime};
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
        self.run_with_store(Writer::default(), cancel).await
    }

    /// Like [`PodManager::run`], filling `writer`, whose readers (the server's `/pods`) see the
    /// pods bound to this node.
    pub async fn run_with_store(self, writer: Writer<Pod>, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
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
        let mut memos: HashMap<String, SyncMemo> = HashMap::new();
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
            // One listing of the runtime per pass (upstream's PLEG relist) says which pods'
            // containers changed; only those, pods changed in the API, and pods with work
            // pending are synced, so a node full of settled pods costs two CRI calls a pass.
            let snapshot = match self.snapshot().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "listing the runtime's pods failed");
                    None
                }
            };
            let pods = store.state();
            let live: HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            let now = tokio::time::Instant::now();
            for pod in pods {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let rv = pod.metadata.resource_version.clone().unwrap_or_default();
                let fp = snapshot.as_ref().map(|s| s.get(&uid).copied().unwrap_or(0));
                if !needs_sync(memos.get(&uid), &rv, fp, pod.metadata.deletion_timestamp.is_some(), now) {
                    continue;
                }
                let name = pod.metadata.name.clone().unwrap_or_default();
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let pending = match self.sync_one(&pod, &mut backoff, &mut reported).await {
                    Ok(pending) => pending,
                    Err(e) => {
                        tracing::warn!(namespace = %ns, pod = %name, error = %e, "pod sync failed");
                        true
                    }
                };
                memos.insert(uid, SyncMemo { resource_version: rv, fingerprint: fp, pending, at: now });
            }
            if let Some(snapshot) = &snapshot {
                if let Err(e) = self.remove_orphans(snapshot, &live).await {
                    tracing::warn!(error = %e, "cleaning up pods that are gone failed");
                }
            }
            reported.retain(|uid, _| live.contains(uid));
            memos.retain(|uid, _| live.contains(uid));
        }
    }

    /// A fingerprint per pod uid of what the runtime has for it (ids and states of its
    /// sandboxes and containers).
    async fn snapshot(&self) -> Result<HashMap<String, u64>, crate::runtime::RuntimeError> {
        let sandboxes = self.runtime.list_pod_sandbox(None).await?;
        let containers = self.runtime.list_containers(None).await?;
        Ok(fingerprints(&sandboxes, &containers))
    }

    async fn sync_one(
        &self,
        pod: &Pod,
        backoff: &mut Backoff,
        reported: &mut HashMap<String, Value>,
    ) -> anyhow::Result<bool> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // upstream: the grace the deletion set, else the spec's, else 30 s
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            let grace = Duration::from_secs(grace.max(0).unsigned_abs());
            super::sync::stop_pod(self.runtime.as_ref(), &self.deps, pod, grace).await?;
            self.kill(&uid, grace).await?;
            self.deps.cleanup_pod(&uid).await?;
            backoff.forget_pod(&uid);
            // Everything stopped: the apiserver may forget the pod now.
            let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
            match pods.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(false);
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
        // Held back or failed containers are retried on the next pass, not only on a change.
        Ok(!outcome.backing_off.is_empty()
            || !outcome.failed.is_empty()
            || outcome.volume_error.is_some()
            || outcome.sandbox_error.is_some()
            || super::sync::needs_periodic_sync(pod))
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
    /// Containers are stopped together, each with `grace` between its SIGTERM and SIGKILL.
    async fn kill(&self, uid: &str, grace: Duration) -> anyhow::Result<()> {
        let state = observe(self.runtime.as_ref(), uid).await?;
        let stops = state
            .containers
            .iter()
            .filter(|c| c.state == super::plan::State::Running)
            .map(|c| self.runtime.stop_container(&c.id, grace));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        for s in &state.sandboxes {
            self.runtime.stop_pod_sandbox(&s.id).await?;
            self.runtime.remove_pod_sandbox(&s.id).await?;
        }
        Ok(())
    }

    /// Pods the runtime runs that the API no longer binds here.
    async fn remove_orphans(&self, snapshot: &HashMap<String, u64>, live: &HashSet<String>) -> anyhow::Result<()> {
        let orphans: Vec<&String> = snapshot.keys().filter(|u| !live.contains(*u)).collect();
        for uid in orphans {
            tracing::info!(pod_uid = %uid, "removing a pod that is gone from the API");
            // The pod is gone from the API, its grace with it: stop promptly.
            self.kill(uid, ORPHAN_GRACE).await?;
            self.deps.cleanup_pod(uid).await?;
        }
        self.deps.cleanup_orphaned_volumes(live).await;
        Ok(())
    }
}

/// How long containers of a pod that vanished from the API get between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// What the last sync of a pod saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncMemo {
    pub resource_version: String,
    /// The runtime's fingerprint of the pod; `None` when the runtime could not be listed.
    pub fingerprint: Option<u64>,
    /// The sync left work for later (a container in backoff or failing to start).
    pub pending: bool,
    pub at: tokio::time::Instant,
}

/// Even a pod where nothing changed is synced this often (upstream's pod workers resync too).
pub const FULL_RESYNC: Duration = Duration::from_secs(10);

/// Whether a pod needs a sync on this pass.
pub fn needs_sync(
    memo: Option<&SyncMemo>,
    resource_version: &str,
    fingerprint: Option<u64>,
    deleting: bool,
    now: tokio::time::Instant,
) -> bool {
    let Some(m) = memo else { return true };
    deleting
        || m.pending
        || fingerprint.is_none()
        || m.fingerprint != fingerprint
        || m.resource_version != resource_version
        || now.saturating_duration_since(m.at) >= FULL_RESYNC
}

/// A fingerprint per pod uid (the `io.kubernetes.pod.uid` label) of its sandboxes' and
/// containers' ids and states; a pod with nothing in the runtime has none.
pub fn fingerprints(sandboxes: &[api::PodSandbox], containers: &[api::Container]) -> HashMap<String, u64> {
    use std::hash::{Hash, Hasher};
    let mut items: HashMap<String, Vec<(&str, i32)>> = HashMap::new();
    for s in sandboxes {
        if let Some(uid) = s.labels.get(POD_UID) {
            items.entry(uid.clone()).or_default().push((s.id.as_str(), s.state));
        }
    }
    for c in containers {
        if let Some(uid) = c.labels.get(POD_UID) {
            items.entry(uid.clone()).or_default().push((c.id.as_str(), c.state + 100));
        }
    }
    items
        .into_iter()
        .map(|(uid, mut v)| {
            v.sort_unstable();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            (uid, h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, uid: &str, state: i32) -> api::PodSandbox {
        api::PodSandbox {
            id: id.into(),
            state,
            labels: [(POD_UID.to_string(), uid.to_string())].into(),
            ..Default::default()
        }
    }

    fn container(id: &str, uid: &str, state: i32) -> api::Container {
        api::Container {
            id: id.into(),
            state,
            labels: [(POD_UID.to_string(), uid.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn fingerprints_change_with_container_states_only_for_their_pod() {
        let sbs = [sandbox("s1", "u1", 0), sandbox("s2", "u2", 0)];
        let before = fingerprints(&sbs, &[container("c1", "u1", 1), container("c2", "u2", 1)]);
        let after = fingerprints(&sbs, &[container("c1", "u1", 2), container("c2", "u2", 1)]);
        assert_ne!(before["u1"], after["u1"]);
        assert_eq!(before["u2"], after["u2"]);
        // order does not matter
        let again =
            fingerprints(&[sbs[1].clone(), sbs[0].clone()], &[container("c2", "u2", 1), container("c1", "u1", 1)]);
        assert_eq!(before, again);
    }

    #[tokio::test(start_paused = true)]
    async fn settled_pods_are_skipped_until_something_changes() {
        let t0 = tokio::time::Instant::now();
        let memo = SyncMemo { resource_version: "5".into(), fingerprint: Some(7), pending: false, at: t0 };
        assert!(needs_sync(None, "5", Some(7), false, t0), "never synced");
        assert!(!needs_sync(Some(&memo), "5", Some(7), false, t0 + Duration::from_secs(1)));
        assert!(needs_sync(Some(&memo), "6", Some(7), false, t0), "changed in the API");
        assert!(needs_sync(Some(&memo), "5", Some(8), false, t0), "changed in the runtime");
        assert!(needs_sync(Some(&memo), "5", None, false, t0), "runtime not listed");
        assert!(needs_sync(Some(&memo), "5", Some(7), true, t0), "being deleted");
        assert!(needs_sync(Some(&SyncMemo { pending: true, ..memo.clone() }), "5", Some(7), false, t0), "backoff");
        assert!(needs_sync(Some(&memo), "5", Some(7), false, t0 + FULL_RESYNC), "periodic resync");
    }
}
