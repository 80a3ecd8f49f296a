//! The StatefulSet controller, as upstream's `pkg/controller/statefulset`: pods
//! `<set>-<ordinal>` with a stable identity (hostname, subdomain = serviceName, the pod-name
//! and pod-index labels) and stable storage (PVCs `<template>-<set>-<ordinal>` created before
//! the pod and outliving it, with ownerReferences that implement
//! `persistentVolumeClaimRetentionPolicy`), OrderedReady or Parallel management, RollingUpdate
//! (highest ordinal first, `partition`, `maxUnavailable`) and OnDelete, ControllerRevisions
//! (`history.rs`) for `currentRevision`/`updateRevision` and `kubectl rollout undo`.
//!
//! Each sync claims the pods and revisions, works out the current and update revisions, asks
//! `control::plan` (pure) what to do, does it in order, writes status and prunes the history.
//! Expectations keep a sync from acting again before the informer has seen its own creations
//! and deletions.

pub mod control;
pub mod pod_control;
pub mod utils;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::expectations::Expectations;
use super::history::{self, KubeRevisions};
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, controller_ref};
use super::workqueue::Queue;
use super::Context;
use control::Input;
use pod_control::{KubeObjects, PodControl};
use utils::*;

pub const NAME: &str = "statefulset";
const COMPONENT: &str = "statefulset-controller";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("{0}")]
    Step(String),
}

struct Ssc {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    queue: Arc<Queue>,
    exp: Expectations,
    control: PodControl<KubeObjects>,
    /// The MaxUnavailableStatefulSet feature gate.
    max_unavailable_gate: bool,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let ssc = Arc::new(Ssc {
        client: ctx.client.clone(),
        sets: ctx.informers.get::<StatefulSet>(),
        pods: ctx.informers.get::<Pod>(),
        revisions: ctx.informers.get::<ControllerRevision>(),
        claims: ctx.informers.get::<PersistentVolumeClaim>(),
        queue: Arc::new(Queue::new()),
        exp: Expectations::new(),
        control: PodControl {
            objects: KubeObjects(ctx.client.clone()),
            claims: ctx.informers.get::<PersistentVolumeClaim>(),
            recorder: ctx.recorder(COMPONENT),
        },
        max_unavailable_gate: ctx.opts.feature_gates.enabled(component_base::featuregate::MAX_UNAVAILABLE_STATEFUL_SET),
    });
    // Handlers hold a weak reference so the informers do not keep a stopped controller alive.
    let weak = Arc::downgrade(&ssc);
    ssc.sets.add_handler(Arc::new(move |old: Option<&Arc<StatefulSet>>, new: Option<&Arc<StatefulSet>>| {
        if let Some(c) = weak.upgrade() {
            match (old, new) {
                (Some(o), None) => {
                    c.exp.forget(&key_of(o.as_ref()));
                    c.queue.add(key_of(o.as_ref()));
                }
                (_, Some(n)) => c.queue.add(key_of(n.as_ref())),
                (None, None) => {}
            }
        }
    }));
    let weak = Arc::downgrade(&ssc);
    ssc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        if let Some(c) = weak.upgrade() {
            c.on_pod(old.map(|p| p.as_ref()), new.map(|p| p.as_ref()));
        }
    }));
    let weak = Arc::downgrade(&ssc);
    ssc.claims.add_handler(Arc::new(move |old: Option<&Arc<PersistentVolumeClaim>>, new| {
        // A claim going away may unblock a pod whose claim was stale.
        if let (Some(c), Some(pvc), None) = (weak.upgrade(), old, new) {
            let ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
            for s in c.sets.list_namespace(ns) {
                if s.spec.as_ref().and_then(|s| s.volume_claim_templates.as_ref()).is_some_and(|t| !t.is_empty()) {
                    c.queue.add(key_of(s.as_ref()));
                }
            }
        }
    }));
    ssc.sets.wait_synced().await;
    ssc.pods.wait_synced().await;
    ssc.revisions.wait_synced().await;
    ssc.claims.wait_synced().await;
    let c = ssc.clone();
    super::run_workers(NAME, ssc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn pod_name_of(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

impl Ssc {
    /// upstream addPod / updatePod / deletePod.
    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        owner::PodRouter {
            owners: &self.sets,
            kind: "StatefulSet",
            selector: |s: &StatefulSet| s.spec.as_ref().map(|s| &s.selector),
            min_ready_seconds,
            queue: &self.queue,
            exp: &self.exp,
        }
        .on_pod(old, new)
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(set) = self.sets.get_key(key) else {
            self.exp.forget(key);
            return Ok(None);
        };
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let sel = match owner::selector(set.spec.as_ref().map(|s| &s.selector)) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return Ok(None),
            Err(e) => {
                tracing::warn!(controller = NAME, namespace = %ns, name = %name(&set), error = %e, "invalid selector");
                return Ok(None);
            }
        };
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let deleting = set.metadata.deletion_timestamp.is_some();
        let mut can_adopt: Option<bool> = None;

        // upstream adoptOrphanRevisions.
        let revs = self.revisions.list_namespace(&ns);
        let mut revisions = history::owned_or_orphan(&uid, &sel, &revs);
        let orphans: Vec<_> = revisions.iter().filter(|r| controller_of(&r.metadata).is_none()).cloned().collect();
        if !orphans.is_empty() {
            if !self.can_adopt(&set, &mut can_adopt).await? {
                return Err(Error::Step("can't adopt ControllerRevisions: the StatefulSet is being deleted".into()));
            }
            let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
            let cref = controller_ref(set.as_ref());
            for r in &orphans {
                let refs = r.metadata.owner_references.clone().unwrap_or_default();
                let (n, u) =
                    (r.metadata.name.as_deref().unwrap_or_default(), r.metadata.uid.as_deref().unwrap_or_default());
                owner::adopt(&api, n, u, &cref, &refs).await?;
            }
        }

        // upstream getPodsForStatefulSet: claim by selector and by name (isMemberOf).
        let candidates: Vec<Arc<Pod>> = self.pods.list_namespace_where(&ns, |p| {
            is_member_name(&set, p.metadata.name.as_deref().unwrap_or_default())
                || controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
        });
        let mut claim = owner::claim(&uid, deleting, &sel, &candidates);
        for p in candidates.iter().filter(|p| !is_member_of(&set, p)) {
            // Controlled but not named like a member: released.
            if controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
                && !claim.release.iter().any(|r| Arc::ptr_eq(r, p))
            {
                claim.release.push(p.clone());
                claim.claimed.retain(|c| !Arc::ptr_eq(c, p));
            }
        }
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut pods = claim.claimed;
        if !claim.adopt.is_empty() {
            let ok = self.can_adopt(&set, &mut can_adopt).await?;
            let cref = controller_ref(set.as_ref());
            for p in &claim.adopt {
                if ok {
                    let refs = p.metadata.owner_references.clone().unwrap_or_default();
                    owner::adopt(
                        &pods_api,
                        &pod_name_of(p),
                        p.metadata.uid.as_deref().unwrap_or_default(),
                        &cref,
                        &refs,
                    )
                    .await?;
                } else {
                    pods.retain(|c| !Arc::ptr_eq(c, p));
                }
            }
        }
        for p in &claim.release {
            let refs = p.metadata.owner_references.clone().unwrap_or_default();
            owner::release(&pods_api, &pod_name_of(p), p.metadata.uid.as_deref().unwrap_or_default(), &uid, &refs)
                .await?;
        }

        // upstream getStatefulSetRevisions.
        history::sort(&mut revisions);
        let (current, update, collision_count) = self.current_and_update(&set, &revisions).await?;
        let current_template = history::template_of(&current).unwrap_or_else(|| spec(&set).template);
        let update_template = history::template_of(&update).unwrap_or_else(|| spec(&set).template);
        let current_name = current.metadata.name.clone().unwrap_or_default();
        let update_name = update.metadata.name.clone().unwrap_or_default();

        let claims: BTreeMap<String, Arc<PersistentVolumeClaim>> = self
            .claims
            .list_namespace(&ns)
            .into_iter()
            .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
            .collect();
        let plan = control::plan(&Input {
            set: &set,
            pods: &pods,
            claims: &claims,
            current: (&current_template, &current_name),
            update: (&update_template, &update_name),
            collision_count,
            now: Timestamp::now(),
            max_unavailable_gate: self.max_unavailable_gate,
        });
        let step_err = if self.exp.satisfied(key) {
            self.control.execute(&self.exp, &set, key, &update_template, &plan.steps).await.err()
        } else {
            None
        };

        let mut status = plan.status;
        complete_rolling_update(&set, &mut status);
        let written = self.update_status(&set, status).await?;
        // upstream truncateHistory: keep revisionHistoryLimit revisions beyond the live ones.
        let mut live: HashSet<String> = pods.iter().map(|p| pod_revision(p).to_string()).collect();
        live.insert(current_name);
        live.insert(update_name);
        let prune = history::to_truncate(&revisions, &live, revision_history_limit(&set));
        history::delete_all(&KubeRevisions(self.client.clone()), &prune).await?;
        if let Some(e) = step_err {
            return Err(e);
        }
        let min_ready = min_ready_seconds(&set);
        if min_ready > 0 && written.available_replicas.unwrap_or(0) != replicas(&set) {
            return Ok(Some(Duration::from_secs(min_ready as u64)));
        }
        Ok(None)
    }

    /// upstream canAdoptFunc (RecheckDeletionTimestamp): the live set is the same object and
    /// not being deleted; asked once per sync.
    async fn can_adopt(&self, set: &StatefulSet, cache: &mut Option<bool>) -> Result<bool, Error> {
        if let Some(v) = cache {
            return Ok(*v);
        }
        let api: Api<StatefulSet> =
            Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or_default());
        let live = api.get_opt(name(set)).await?;
        let ok = live.is_some_and(|l| l.metadata.uid == set.metadata.uid && l.metadata.deletion_timestamp.is_none());
        *cache = Some(ok);
        Ok(ok)
    }

    /// upstream getStatefulSetRevisions: the update revision is the one whose data equals the
    /// set's template (the newest if it already is, an older one renumbered on a rollback, or
    /// a new one); the current revision is the one the status names, else the update revision.
    async fn current_and_update(
        &self,
        set: &StatefulSet,
        revisions: &[Arc<ControllerRevision>],
    ) -> Result<(ControllerRevision, ControllerRevision, i32), Error> {
        let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let template: PodTemplateSpec = spec(set).template;
        let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        let mut candidate = history::new_revision(
            set,
            labels.as_ref(),
            history::template_patch(&template),
            history::next_revision(revisions),
            Some(collision_count),
        );
        candidate.metadata.annotations = set.metadata.annotations.clone();
        let equal = history::find_equal(revisions, &candidate);
        let api = KubeRevisions(self.client.clone());
        let update = match (equal.last(), revisions.last()) {
            (Some(e), Some(newest)) if history::equal(newest, e) => (**newest).clone(),
            (Some(e), _) => history::update_revision(&api, e, candidate.revision).await?,
            (None, _) => history::create(&api, name(set), &candidate, &mut collision_count).await?,
        };
        let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = revisions
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == status_current)
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update.clone());
        Ok((current, update, collision_count))
    }

    /// upstream updateStatefulSetStatus: written only when something changed.
    async fn update_status(
        &self,
        set: &Arc<StatefulSet>,
        status: StatefulSetStatus,
    ) -> Result<StatefulSetStatus, Error> {
        let old = set.status.clone().unwrap_or_default();
        let same = old.observed_generation == status.observed_generation
            && old.replicas == status.replicas
            && old.ready_replicas.unwrap_or(0) == status.ready_replicas.unwrap_or(0)
            && old.available_replicas.unwrap_or(0) == status.available_replicas.unwrap_or(0)
            && old.current_replicas.unwrap_or(0) == status.current_replicas.unwrap_or(0)
            && old.updated_replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
            && old.current_revision == status.current_revision
            && old.update_revision == status.update_revision
            && old.collision_count.unwrap_or(0) == status.collision_count.unwrap_or(0);
        if same {
            return Ok(old);
        }
        let api: Api<StatefulSet> =
            Api::namespaced(self.client.clone(), set.metadata.namespace.as_deref().unwrap_or_default());
        let mut obj = (**set).clone();
        let status = StatefulSetStatus { conditions: old.conditions.clone(), ..status };
        obj.status = Some(status.clone());
        match api.replace_status(name(set), &PostParams::default(), &obj).await {
            Ok(_) => Ok(status),
            // The informer brings the newer version and requeues the set.
            Err(e) if is_code(&e, 409) || is_code(&e, 404) => Ok(status),
            Err(e) => Err(e.into()),
        }
    }
}
