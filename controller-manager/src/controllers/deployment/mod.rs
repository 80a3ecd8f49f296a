//! The Deployment controller, as upstream's `pkg/controller/deployment`: claims ReplicaSets by
//! selector, finds or creates the new ReplicaSet (`<deployment>-<pod-template-hash>`), and
//! moves replicas from old to new by the strategy — RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate (old to zero, wait for their pods, then new). A resize
//! mid-rollout scales the ReplicaSets proportionally; a paused Deployment only scales.
//! Status and the Progressing/Available conditions are what `kubectl rollout status` reads;
//! rollback is client side (`kubectl rollout undo` copies an old ReplicaSet's template).
//!
//! The arithmetic lives in `util` (pure); this file reads the informers and writes the API.

pub mod util;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::events::{reference, Recorder, NORMAL, WARNING};
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, controller_ref, labels_match};
use super::workqueue::Queue;
use super::Context;
use util::*;

pub const NAME: &str = "deployment";
const COMPONENT: &str = "deployment-controller";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("hash collision: replica set {0} exists with a different template")]
    Collision(String),
}

struct Dc {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    rss: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<Queue>,
    recorder: Recorder,
    /// ReplicaSets as this controller last wrote them, by uid, until the informer catches up:
    /// a decision about one ReplicaSet reads the others' sizes, and a stale size of one we
    /// just scaled would let the total exceed maxSurge.
    written: std::sync::Mutex<std::collections::HashMap<String, ReplicaSet>>,
}

fn rv(rs: &ReplicaSet) -> u64 {
    rs.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let dc = Arc::new(Dc {
        client: ctx.client.clone(),
        deployments: ctx.informers.get::<Deployment>(),
        rss: ctx.informers.get::<ReplicaSet>(),
        pods: ctx.informers.get::<Pod>(),
        queue: Arc::new(Queue::new()),
        recorder: ctx.recorder(COMPONENT),
        written: Default::default(),
    });
    let weak = Arc::downgrade(&dc);
    dc.deployments.add_handler(Arc::new(move |old: Option<&Arc<Deployment>>, new: Option<&Arc<Deployment>>| {
        if let (Some(c), Some(d)) = (weak.upgrade(), new.or(old)) {
            c.queue.add(key_of(d.as_ref()));
        }
    }));
    let weak = Arc::downgrade(&dc);
    dc.rss.add_handler(Arc::new(move |old: Option<&Arc<ReplicaSet>>, new: Option<&Arc<ReplicaSet>>| {
        if let Some(c) = weak.upgrade() {
            for rs in [old, new].into_iter().flatten() {
                c.enqueue_for_rs(rs);
            }
        }
    }));
    let weak = Arc::downgrade(&dc);
    dc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        // upstream deletePod: a Recreate rollout waits for the old pods to be gone.
        if let (Some(c), Some(p), None) = (weak.upgrade(), old, new) {
            c.enqueue_for_pod_deletion(p);
        }
    }));
    dc.deployments.wait_synced().await;
    dc.rss.wait_synced().await;
    dc.pods.wait_synced().await;
    let c = dc.clone();
    super::run_workers(NAME, dc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

fn selector_of(d: &Deployment) -> Option<&LabelSelector> {
    d.spec.as_ref().map(|s| &s.selector)
}

impl Dc {
    fn remember(&self, rs: &ReplicaSet) {
        if let Some(uid) = rs.metadata.uid.clone() {
            self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(uid, rs.clone());
        }
    }

    /// The newer of the informer's copy and our last write (our apiserver's resourceVersions
    /// are etcd revisions, so they order).
    fn fresh(&self, rs: &ReplicaSet) -> ReplicaSet {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(uid) = rs.metadata.uid.as_deref() else { return rs.clone() };
        match w.get(uid) {
            Some(mine) if rv(mine) > rv(rs) => mine.clone(),
            Some(_) => {
                w.remove(uid);
                rs.clone()
            }
            None => rs.clone(),
        }
    }

    fn enqueue_for_rs(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(r) = controller_of(&rs.metadata) {
            if r.kind == "Deployment" {
                if let Some(d) = self.deployments.get(ns, &r.name).filter(|d| d.metadata.uid.as_deref() == Some(&r.uid))
                {
                    self.queue.add(key_of(d.as_ref()));
                }
            }
            return;
        }
        // An orphan: every Deployment that might adopt it.
        for d in self.deployments.list_namespace(ns) {
            if owner::selector(selector_of(&d)).is_ok_and(|s| !s.is_empty() && labels_match(&s, &rs.metadata)) {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    fn enqueue_for_pod_deletion(&self, p: &Pod) {
        let ns = p.metadata.namespace.as_deref().unwrap_or_default();
        let Some(rs) = controller_of(&p.metadata).and_then(|r| self.rss.get(ns, &r.name)) else { return };
        let Some(r) = controller_of(&rs.metadata) else { return };
        if let Some(d) = self.deployments.get(ns, &r.name) {
            if !is_rolling(&d) {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(d) = self.deployments.get_key(key) else { return Ok(None) };
        let mut d = (*d).clone();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let sel = match owner::selector(selector_of(&d)) {
            Ok(s) if !s.is_empty() => s,
            _ => {
                // upstream: an empty selector would select every pod; refuse.
                self.recorder.event(
                    reference(&d),
                    WARNING,
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required.".into(),
                );
                return Ok(None);
            }
        };
        // Claim ReplicaSets (upstream getReplicaSetsForDeployment).
        let in_ns: Vec<Arc<ReplicaSet>> = self.rss.list_namespace(&ns);
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let claim = owner::claim(&uid, deleting, &sel, &in_ns);
        let api = self.rs_api(&ns);
        let claimed = owner::apply_claim(&self.d_api(&ns), &d, &api, claim).await?;
        let rs_list: Vec<ReplicaSet> = claimed.iter().map(|r| self.fresh(r)).collect();

        if deleting {
            let (new_rs, olds) = self.all_rss(&mut d, &rs_list, false).await?;
            self.sync_status(&d, &olds, new_rs.as_ref()).await?;
            return Ok(None);
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        self.check_paused_conditions(&mut d, paused).await?;
        if paused {
            return self.sync_scale(&mut d, &rs_list, paused).await.map(|_| None);
        }
        if self.is_scaling_event(&mut d, &rs_list).await? {
            return self.sync_scale(&mut d, &rs_list, paused).await.map(|_| None);
        }
        if is_rolling(&d) {
            self.rollout_rolling(&mut d, &rs_list).await
        } else {
            self.rollout_recreate(&mut d, &rs_list).await
        }
    }

    /// upstream checkPausedConditions: Progressing=Unknown DeploymentPaused / DeploymentResumed.
    async fn check_paused_conditions(&self, d: &mut Deployment, paused: bool) -> Result<(), Error> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut st = d.status.clone().unwrap_or_default();
        let reason = condition(&st, PROGRESSING).and_then(|c| c.reason.clone());
        let now = Timestamp::now();
        let changed = if paused && reason.as_deref() != Some(PAUSED) {
            set_condition(&mut st, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused".into(), now));
            true
        } else if !paused && reason.as_deref() == Some(PAUSED) {
            set_condition(&mut st, new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed".into(), now));
            true
        } else {
            false
        };
        if changed {
            self.write_status(d, st).await?;
        }
        Ok(())
    }

    /// upstream getAllReplicaSetsAndSyncRevision: (new, olds). Creates the new ReplicaSet when
    /// `create` and it does not exist.
    async fn all_rss(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let existing = find_new(d, rs_list).cloned();
        let olds: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|r| existing.as_ref().is_none_or(|n| n.metadata.uid != r.metadata.uid))
            .cloned()
            .collect();
        let new_revision = max_revision(&olds) + 1;
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let now = Timestamp::now();
        if let Some(mut rs) = existing {
            let mut copy = rs.clone();
            let ann_changed = set_new_rs_annotations(d, &mut copy, new_revision, true);
            let want_min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let min_ready_changed =
                copy.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0) != want_min_ready.unwrap_or(0);
            if ann_changed || min_ready_changed {
                let patch = json!({
                    "metadata": {"resourceVersion": copy.metadata.resource_version, "annotations": copy.metadata.annotations},
                    "spec": {"minReadySeconds": want_min_ready.unwrap_or(0)},
                });
                rs = self
                    .rs_api(&ns)
                    .patch(
                        copy.metadata.name.as_deref().unwrap_or_default(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            let rs_revision = rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
            self.set_deployment_revision(d, rs_revision).await?;
            let mut st = d.status.clone().unwrap_or_default();
            if progress_deadline(d).is_some() && condition(&st, PROGRESSING).is_none() {
                let msg = format!("Found new replica set \"{}\"", rs.metadata.name.as_deref().unwrap_or_default());
                set_condition(&mut st, new_condition(PROGRESSING, "True", FOUND_NEW_RS, msg, now));
                self.write_status(d, st).await?;
            }
            return Ok((Some(rs), olds));
        }
        if !create {
            return Ok((None, olds));
        }
        let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collision);
        let mut rs_template = template.clone();
        let meta = rs_template.metadata.get_or_insert_with(Default::default);
        meta.labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = selector_of(d).cloned().unwrap_or_default();
        selector.match_labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref(d)]),
                labels: meta.labels.clone(),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(rs_template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = olds.iter().chain(std::iter::once(&new_rs)).collect();
        let n = new_rs_new_replicas(d, &all, &new_rs);
        set_rs_replicas(&mut new_rs, n);
        set_new_rs_annotations(d, &mut new_rs, new_revision, false);
        let created = match self.rs_api(&ns).create(&PostParams::default(), &new_rs).await {
            Ok(rs) => {
                self.remember(&rs);
                rs
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // upstream: the name is taken. Ours (same template, same owner) means an
                // earlier sync created it and the informer has not caught up; anything else is
                // a hash collision: bump collisionCount so the next hash differs.
                let live = self.rs_api(&ns).get_opt(&name).await?;
                match live {
                    Some(rs)
                        if controller_of(&rs.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref())
                            && rs
                                .spec
                                .as_ref()
                                .and_then(|s| s.template.as_ref())
                                .is_some_and(|t| equal_ignore_hash(t, &template)) =>
                    {
                        return Ok((Some(rs), olds));
                    }
                    _ => {
                        let mut st = d.status.clone().unwrap_or_default();
                        st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                        self.write_status(d, st).await?;
                        return Err(Error::Collision(name));
                    }
                }
            }
            Err(e) => {
                if progress_deadline(d).is_some() {
                    let mut st = d.status.clone().unwrap_or_default();
                    let msg = format!("Failed to create new replica set \"{name}\": {}", message(&e));
                    set_condition(&mut st, new_condition(PROGRESSING, "False", FAILED_RS_CREATE, msg, now));
                    self.write_status(d, st).await?;
                }
                return Err(e.into());
            }
        };
        if n > 0 {
            self.recorder.event(
                reference(d),
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {n}"),
            );
        }
        self.set_deployment_revision(d, Some(new_revision.to_string())).await?;
        if progress_deadline(d).is_some() {
            let mut st = d.status.clone().unwrap_or_default();
            let msg = format!("Created new replica set \"{name}\"");
            set_condition(&mut st, new_condition(PROGRESSING, "True", NEW_RS_CREATED, msg, now));
            self.write_status(d, st).await?;
        }
        Ok((Some(created), olds))
    }

    /// upstream SetDeploymentRevision. Upstream writes it with the status; our apiserver's
    /// status subresource keeps metadata, so the annotation goes through a metadata patch
    /// (which does not bump the generation).
    async fn set_deployment_revision(&self, d: &mut Deployment, revision: Option<String>) -> Result<(), Error> {
        let Some(revision) = revision else { return Ok(()) };
        let cur = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION));
        if cur == Some(&revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let updated = self
            .d_api(&ns)
            .patch(d.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        d.metadata = updated.metadata;
        Ok(())
    }

    async fn write_status(&self, d: &mut Deployment, st: DeploymentStatus) -> Result<(), Error> {
        if d.status.as_ref() == Some(&st) {
            return Ok(());
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let mut obj = d.clone();
        obj.status = Some(st);
        let updated = self
            .d_api(&ns)
            .replace_status(d.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &obj)
            .await?;
        *d = updated;
        Ok(())
    }

    /// upstream isScalingEvent: an active ReplicaSet's desired-replicas annotation differs from
    /// the Deployment's replicas.
    async fn is_scaling_event(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<bool, Error> {
        let (new_rs, olds) = self.all_rss(d, rs_list, false).await?;
        Ok(olds
            .iter()
            .chain(new_rs.iter())
            .filter(|r| rs_replicas(r) > 0)
            .any(|r| desired_annotation(r).is_some_and(|v| v != replicas(d))))
    }

    /// upstream sync: scale (and for a paused Deployment, clean up), then status.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: &[ReplicaSet], paused: bool) -> Result<(), Error> {
        let (mut new_rs, mut olds) = self.all_rss(d, rs_list, false).await?;
        self.scale(d, &mut new_rs, &mut olds).await?;
        if paused {
            self.cleanup(d, &olds).await?;
        }
        self.sync_status(d, &olds, new_rs.as_ref()).await
    }

    /// upstream syncDeploymentStatus: counts and Available only.
    async fn sync_status(&self, d: &Deployment, olds: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Result<(), Error> {
        let all: Vec<&ReplicaSet> = olds.iter().chain(new_rs).collect();
        let st = calculate_status(&all, new_rs, d, Timestamp::now());
        let mut d = d.clone();
        self.write_status(&mut d, st).await
    }

    /// upstream scale.
    async fn scale(
        &self,
        d: &Deployment,
        new_rs: &mut Option<ReplicaSet>,
        olds: &mut [ReplicaSet],
    ) -> Result<(), Error> {
        // upstream FindActiveOrLatest
        let active: Vec<usize> = (0..olds.len()).filter(|i| rs_replicas(&olds[*i]) > 0).collect();
        let new_active = new_rs.as_ref().is_some_and(|r| rs_replicas(r) > 0);
        let target: Option<&mut ReplicaSet> = match (active.len(), new_active) {
            (0, false) => match new_rs.as_mut() {
                Some(n) => Some(n),
                None => {
                    sort_by_creation(olds);
                    olds.last_mut()
                }
            },
            (0, true) => new_rs.as_mut(),
            (1, false) => olds.get_mut(active[0]),
            _ => None,
        };
        if let Some(rs) = target {
            if rs_replicas(rs) != replicas(d) {
                self.scale_rs_and_record(rs, replicas(d), d).await?;
            }
            return Ok(());
        }
        if new_rs.as_ref().is_some_and(|n| saturated(d, n)) {
            for old in olds.iter_mut().filter(|r| rs_replicas(r) > 0) {
                self.scale_rs_and_record(old, 0, d).await?;
            }
            return Ok(());
        }
        if is_rolling(d) {
            let all: Vec<&ReplicaSet> = olds.iter().chain(new_rs.iter()).filter(|r| rs_replicas(r) > 0).collect();
            let (sizes, op) = proportional_sizes(d, &all);
            for (name, size) in sizes {
                let rs = olds
                    .iter_mut()
                    .chain(new_rs.iter_mut())
                    .find(|r| r.metadata.name.as_deref() == Some(name.as_str()));
                if let Some(rs) = rs {
                    self.scale_rs(rs, size, d, op).await?;
                }
            }
        }
        Ok(())
    }

    async fn scale_rs_and_record(&self, rs: &mut ReplicaSet, size: i32, d: &Deployment) -> Result<bool, Error> {
        if rs_replicas(rs) == size {
            return Ok(false);
        }
        let op = if rs_replicas(rs) < size { "up" } else { "down" };
        self.scale_rs(rs, size, d, op).await
    }

    /// upstream scaleReplicaSet: size and the desired/max annotations in one write.
    async fn scale_rs(&self, rs: &mut ReplicaSet, size: i32, d: &Deployment, op: &str) -> Result<bool, Error> {
        let size_changed = rs_replicas(rs) != size;
        let (desired, max) = (replicas(d), replicas(d) + max_surge(d));
        if !size_changed && !replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let old = rs_replicas(rs);
        let name = rs.metadata.name.clone().unwrap_or_default();
        // The resourceVersion makes the write conditional: a decision taken on a stale copy
        // fails with a conflict and is retried on fresh data (upstream uses Update for this).
        let patch = json!({
            "metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: max.to_string()},
            },
            "spec": {"replicas": size},
        });
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        *rs = self.rs_api(&ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.remember(rs);
        if size_changed {
            self.recorder.event(
                reference(d),
                NORMAL,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {old} to {size}"),
            );
        }
        Ok(size_changed)
    }

    /// upstream rolloutRolling.
    async fn rollout_rolling(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<Option<Duration>, Error> {
        let (new_rs, mut olds) = self.all_rss(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else { return Ok(None) };
        // reconcileNewReplicaSet
        let want = replicas(d);
        let scaled_up = if rs_replicas(&new_rs) > want {
            self.scale_rs_and_record(&mut new_rs, want, d).await?
        } else if rs_replicas(&new_rs) < want {
            let all: Vec<&ReplicaSet> = olds.iter().chain(std::iter::once(&new_rs)).collect();
            let n = new_rs_new_replicas(d, &all, &new_rs);
            self.scale_rs_and_record(&mut new_rs, n, d).await?
        } else {
            false
        };
        if scaled_up {
            return self.sync_rollout_status(d, &olds, Some(&new_rs)).await;
        }
        if self.reconcile_old(d, &mut olds, &new_rs).await? {
            return self.sync_rollout_status(d, &olds, Some(&new_rs)).await;
        }
        if complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &olds).await?;
        }
        self.sync_rollout_status(d, &olds, Some(&new_rs)).await
    }

    /// upstream reconcileOldReplicaSets: first scale down unhealthy old pods, then old pods
    /// as far as maxUnavailable allows.
    async fn reconcile_old(&self, d: &Deployment, olds: &mut [ReplicaSet], new_rs: &ReplicaSet) -> Result<bool, Error> {
        let old_count: i32 = olds.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + rs_replicas(new_rs);
        let min_available = replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new_rs) - rs_status(new_rs).2;
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        sort_by_creation(olds);
        // cleanupUnhealthyReplicas
        let mut cleaned = 0;
        for rs in olds.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (r, avail) = (rs_replicas(rs), rs_status(rs).2);
            // Status lags spec: more available than wanted is not unhealthy (upstream refuses
            // the resulting "scale down" upwards as an error).
            if r == 0 || avail >= r {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(r - avail);
            self.scale_rs_and_record(rs, r - down, d).await?;
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available: i32 = olds.iter().map(|r| rs_status(r).2).sum::<i32>() + rs_status(new_rs).2;
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in olds.iter_mut() {
                if scaled >= total {
                    break;
                }
                let r = rs_replicas(rs);
                if r == 0 {
                    continue;
                }
                let down = r.min(total - scaled);
                self.scale_rs_and_record(rs, r - down, d).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// upstream rolloutRecreate.
    async fn rollout_recreate(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<Option<Duration>, Error> {
        let (new_rs, mut olds) = self.all_rss(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in olds.iter_mut().filter(|r| rs_replicas(r) > 0) {
            scaled_down |= self.scale_rs_and_record(rs, 0, d).await?;
        }
        if scaled_down {
            return self.sync_rollout_status(d, &olds, new_rs.as_ref()).await;
        }
        // upstream oldPodsRunning: wait until no old pod is left that is not finished.
        let old_replicas: i32 = olds.iter().map(|r| rs_status(r).0).sum();
        let old_uids: std::collections::HashSet<&str> = olds.iter().filter_map(|r| r.metadata.uid.as_deref()).collect();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let old_pods_running = old_replicas > 0
            || self.pods.list_namespace_cached(&ns).iter().any(|p| {
                controller_of(&p.metadata).is_some_and(|c| old_uids.contains(c.uid.as_str()))
                    && !owner::is_terminated(p)
            });
        if old_pods_running {
            return self.sync_rollout_status(d, &olds, new_rs.as_ref()).await;
        }
        let mut new_rs = match new_rs {
            Some(n) => n,
            None => match self.all_rss(d, rs_list, true).await?.0 {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        self.scale_rs_and_record(&mut new_rs, replicas(d), d).await?;
        if complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &olds).await?;
        }
        self.sync_rollout_status(d, &olds, Some(&new_rs)).await
    }

    /// upstream cleanupDeployment: delete the oldest idle ReplicaSets beyond
    /// revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, olds: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let mut cleanable: Vec<&ReplicaSet> = olds.iter().filter(|r| r.metadata.deletion_timestamp.is_none()).collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a).cmp(&revision(b)).then_with(|| {
                let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
        });
        for rs in cleanable.into_iter().take(diff as usize) {
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > st.observed_generation
                || rs.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: rs.metadata.uid.clone(), resource_version: None }),
                ..DeleteParams::default()
            };
            match self.rs_api(&ns).delete(rs.metadata.name.as_deref().unwrap_or_default(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// upstream syncRolloutStatus, and requeueStuckDeployment: a rollout still in progress is
    /// looked at again when its deadline would pass.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        olds: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Option<Duration>, Error> {
        let all: Vec<&ReplicaSet> = olds.iter().chain(new_rs).collect();
        let now = Timestamp::now();
        let st = rollout_status(d, &all, new_rs, now);
        let requeue = stuck_requeue(d, &st, now);
        if !same_status(d.status.as_ref(), &st) {
            self.write_status(d, st).await?;
        }
        Ok(requeue)
    }
}

/// upstream requeueStuckDeployment.
fn stuck_requeue(d: &Deployment, st: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = condition(st, PROGRESSING)?;
    if complete(d, st) || c.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0.as_second();
    let after = from + i64::from(deadline) - now.as_second();
    Some(Duration::from_secs(after.max(1) as u64))
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}
