//! The disruption controller, as upstream's `pkg/controller/disruption`: keeps every
//! PodDisruptionBudget's status current (expected and healthy pods, how many may be disrupted,
//! the evictions still in flight, the DisruptionAllowed condition), which the apiserver's
//! `pods/eviction` reads and decrements. `budget.rs` is the arithmetic; this file reads the
//! pods and their controllers' scale from the informers and writes the status.

pub mod budget;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::events::{reference, Recorder, NORMAL, WARNING};
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, labels_match};
use super::workqueue::Queue;
use super::Context;

pub const NAME: &str = "disruption";
const COMPONENT: &str = "controllermanager";
const WORKERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

struct Dc {
    client: kube::Client,
    pdbs: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    rss: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    statefulsets: Arc<Informer<StatefulSet>>,
    queue: Arc<Queue>,
    recorder: Recorder,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let dc = Arc::new(Dc {
        client: ctx.client.clone(),
        pdbs: ctx.informers.get::<PodDisruptionBudget>(),
        pods: ctx.informers.get::<Pod>(),
        rss: ctx.informers.get::<ReplicaSet>(),
        deployments: ctx.informers.get::<Deployment>(),
        statefulsets: ctx.informers.get::<StatefulSet>(),
        queue: Arc::new(Queue::new()),
        recorder: ctx.recorder(COMPONENT),
    });
    let weak = Arc::downgrade(&dc);
    dc.pdbs.add_handler(Arc::new(
        move |old: Option<&Arc<PodDisruptionBudget>>, new: Option<&Arc<PodDisruptionBudget>>| {
            if let (Some(c), Some(p)) = (weak.upgrade(), new.or(old)) {
                c.queue.add(key_of(p.as_ref()));
            }
        },
    ));
    // upstream addPod/updatePod/deletePod: wake the budgets selecting the pod, before and after.
    let weak = Arc::downgrade(&dc);
    dc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        if let Some(c) = weak.upgrade() {
            for p in [old, new].into_iter().flatten() {
                for pdb in c.budgets_of(p) {
                    c.queue.add(key_of(pdb.as_ref()));
                }
            }
        }
    }));
    // A scale change changes expectedPods before any pod event does.
    let weak = Arc::downgrade(&dc);
    dc.deployments.add_handler(Arc::new(move |old: Option<&Arc<Deployment>>, new: Option<&Arc<Deployment>>| {
        if let (Some(c), Some(d)) = (weak.upgrade(), new.or(old)) {
            c.wake_namespace(d.metadata.namespace.as_deref().unwrap_or_default());
        }
    }));
    let weak = Arc::downgrade(&dc);
    dc.statefulsets.add_handler(Arc::new(move |old: Option<&Arc<StatefulSet>>, new: Option<&Arc<StatefulSet>>| {
        if let (Some(c), Some(s)) = (weak.upgrade(), new.or(old)) {
            c.wake_namespace(s.metadata.namespace.as_deref().unwrap_or_default());
        }
    }));
    dc.pdbs.wait_synced().await;
    dc.pods.wait_synced().await;
    dc.rss.wait_synced().await;
    dc.deployments.wait_synced().await;
    dc.statefulsets.wait_synced().await;
    let c = dc.clone();
    super::run_workers(NAME, dc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

/// The budget's selector; in policy/v1 an empty selector selects every pod of the namespace
/// and a missing one selects none.
fn selector(pdb: &PodDisruptionBudget) -> Option<apimachinery::labels::Selector> {
    owner::selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())).ok()
}

impl Dc {
    fn wake_namespace(&self, ns: &str) {
        for pdb in self.pdbs.list_namespace(ns) {
            self.queue.add(key_of(pdb.as_ref()));
        }
    }

    fn budgets_of(&self, p: &Pod) -> Vec<Arc<PodDisruptionBudget>> {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        self.pdbs
            .list_namespace(ns)
            .into_iter()
            .filter(|pdb| selector(pdb).is_some_and(|s| labels_match(&s, &p.metadata)))
            .collect()
    }

    /// upstream's finders: a pod's ReplicaSet (or the Deployment controlling it) or
    /// StatefulSet, with its `spec.replicas`.
    fn scale_of(&self, p: &Pod) -> Option<(String, i32)> {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let cref = controller_of(&p.metadata)?;
        match cref.kind.as_str() {
            "ReplicaSet" => {
                let rs = self.rss.get(ns, &cref.name).filter(|rs| rs.metadata.uid.as_deref() == Some(&cref.uid))?;
                match controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    Some(dref) => {
                        let d = self
                            .deployments
                            .get(ns, &dref.name)
                            .filter(|d| d.metadata.uid.as_deref() == Some(&dref.uid))?;
                        Some((dref.uid.clone(), d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
                    }
                    None => Some((cref.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))),
                }
            }
            "StatefulSet" => {
                let s =
                    self.statefulsets.get(ns, &cref.name).filter(|s| s.metadata.uid.as_deref() == Some(&cref.uid))?;
                Some((cref.uid.clone(), s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            _ => None,
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(pdb) = self.pdbs.get_key(key) else { return Ok(None) };
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = match selector(&pdb) {
            Some(sel) => self.pods.list_namespace_where(&ns, |p| {
                sel.matches(p.labels.as_deref().unwrap_or(&std::collections::BTreeMap::new()))
            }),
            None => Vec::new(),
        };
        if pods.is_empty() {
            self.recorder.event(reference(pdb.as_ref()), NORMAL, "NoPods", "No matching pods found".into());
        }
        let now = Timestamp::now();
        let (disrupted, recheck, not_deleted) = budget::disrupted_pods(&pdb, &pods, now);
        for name in not_deleted {
            let pod_ref = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(ns.clone()),
                name: Some(name),
                ..Default::default()
            };
            let pdb_name = pdb.metadata.name.as_deref().unwrap_or_default();
            self.recorder.event(
                pod_ref,
                WARNING,
                "NotDeleted",
                format!("Pod was expected by PDB {ns}/{pdb_name} to be deleted but it wasn't"),
            );
        }
        let status = match budget::expected_and_desired(&pdb, &pods, &|p| self.scale_of(p)) {
            Ok((expected, desired, unmanaged)) => {
                if !unmanaged.is_empty() {
                    self.recorder.event(
                        reference(pdb.as_ref()),
                        WARNING,
                        "UnmanagedPods",
                        format!(
                            "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. \
                             As a result, the status of the PDB cannot be calculated correctly, which may result in \
                             undefined behavior. To account for these pods please set \".spec.minAvailable\" field \
                             of the PDB to an integer value.",
                            selector(&pdb).map(|s| s.to_string()).unwrap_or_default()
                        ),
                    );
                }
                let healthy = budget::count_healthy(&pods, &disrupted, now);
                budget::status(&pdb, healthy, desired, expected, disrupted, now)
            }
            Err(e) => {
                self.recorder.event(
                    reference(pdb.as_ref()),
                    WARNING,
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {e}"),
                );
                budget::fail_safe(&pdb, &e, now)
            }
        };
        self.write_status(&pdb, status).await?;
        Ok(recheck.map(|t| {
            let wait = t.duration_since(now).as_secs_f64().max(0.0);
            Duration::from_secs_f64(wait) + Duration::from_millis(100)
        }))
    }

    async fn write_status(&self, pdb: &PodDisruptionBudget, st: PodDisruptionBudgetStatus) -> Result<(), Error> {
        if same(pdb.status.as_ref(), &st) {
            return Ok(());
        }
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), pdb.metadata.namespace.as_deref().unwrap_or_default());
        let mut obj = pdb.clone();
        obj.status = Some(st);
        match api.replace_status(pdb.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            // The eviction handler or a spec change got there first; the informer brings the
            // new version and requeues the budget.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The status is unchanged apart from condition timestamps (upstream compares the counts,
/// the observed generation and the disrupted pods before writing).
fn same(old: Option<&PodDisruptionBudgetStatus>, new: &PodDisruptionBudgetStatus) -> bool {
    let Some(old) = old else { return false };
    let conds = |s: &PodDisruptionBudgetStatus| {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone(), c.observed_generation))
            .collect::<Vec<_>>()
    };
    old.current_healthy == new.current_healthy
        && old.desired_healthy == new.desired_healthy
        && old.expected_pods == new.expected_pods
        && old.disruptions_allowed == new.disruptions_allowed
        && old.observed_generation == new.observed_generation
        && old.disrupted_pods.as_ref().filter(|m| !m.is_empty())
            == new.disrupted_pods.as_ref().filter(|m| !m.is_empty())
        && conds(old) == conds(new)
}
