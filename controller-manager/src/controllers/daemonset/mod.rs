//! The DaemonSet controller, as upstream's `pkg/controller/daemon`: one pod per eligible node
//! (`eligibility.rs`: nodeSelector, required node affinity, taints against the template's
//! tolerations plus the ones upstream adds to daemon pods). Pods are not bound here: each is
//! pinned to its node by required node affinity on `metadata.name` and placed by the
//! scheduler, as upstream does. The controller grows to new nodes, removes pods from nodes
//! that leave or stop matching, deletes failed daemon pods with a per-node backoff, and rolls
//! out template changes (`plan.rs`: RollingUpdate with maxUnavailable or maxSurge, or
//! OnDelete). Every template gets a ControllerRevision (through the shared `history` module);
//! its hash is the pods' `controller-revision-hash` label.

pub mod backoff;
pub mod eligibility;
pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};

use super::deployment::util::compute_hash;
use super::events::{reference, Recorder, NORMAL, WARNING};
use super::expectations::Expectations;
use super::history::{self, KubeRevisions, RevisionApi};
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, controller_ref};
use super::replicaset::{pod_from_template, slow_start_batch};
use super::workqueue::Queue;
use super::Context;
use backoff::Backoff;
use plan::{NodePods, HASH_LABEL};

pub const NAME: &str = "daemonset";
const COMPONENT: &str = "daemonset-controller";
/// upstream: BurstReplicas for the DaemonSet controller.
const BURST_REPLICAS: usize = 250;
const WORKERS: usize = 2;
/// upstream: revisionHistoryLimit defaults to 10.
const DEFAULT_HISTORY_LIMIT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("{0}")]
    Sync(String),
}

struct Dsc {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    dss: Arc<Informer<DaemonSet>>,
    revs: Arc<Informer<ControllerRevision>>,
    queue: Arc<Queue>,
    exp: Expectations,
    failed_backoff: Backoff,
    recorder: Recorder,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let dsc = Arc::new(Dsc {
        client: ctx.client.clone(),
        pods: ctx.informers.get::<Pod>(),
        nodes: ctx.informers.get::<Node>(),
        dss: ctx.informers.get::<DaemonSet>(),
        revs: ctx.informers.get::<ControllerRevision>(),
        queue: Arc::new(Queue::new()),
        exp: Expectations::new(),
        failed_backoff: Backoff::new(),
        recorder: ctx.recorder(COMPONENT),
    });
    // Handlers hold a weak reference so the informers do not keep a stopped controller alive.
    let weak = Arc::downgrade(&dsc);
    dsc.dss.add_handler(Arc::new(move |old: Option<&Arc<DaemonSet>>, new: Option<&Arc<DaemonSet>>| {
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
    let weak = Arc::downgrade(&dsc);
    dsc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        if let Some(c) = weak.upgrade() {
            c.on_pod(old.map(|p| p.as_ref()), new.map(|p| p.as_ref()));
        }
    }));
    let weak = Arc::downgrade(&dsc);
    dsc.nodes.add_handler(Arc::new(move |old: Option<&Arc<Node>>, new: Option<&Arc<Node>>| {
        if let Some(c) = weak.upgrade() {
            if let (Some(o), Some(n)) = (old, new) {
                if !node_changed(o, n) {
                    return;
                }
            }
            for ds in c.dss.list() {
                c.queue.add(key_of(ds.as_ref()));
            }
        }
    }));
    let weak = Arc::downgrade(&dsc);
    dsc.revs.add_handler(Arc::new(
        move |old: Option<&Arc<ControllerRevision>>, new: Option<&Arc<ControllerRevision>>| {
            let Some(c) = weak.upgrade() else { return };
            let Some(r) = new.or(old) else { return };
            let ns = r.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(o) = controller_of(&r.metadata).filter(|o| o.kind == "DaemonSet") {
                if let Some(ds) = c.dss.get(ns, &o.name) {
                    c.queue.add(key_of(ds.as_ref()));
                }
            }
        },
    ));
    dsc.pods.wait_synced().await;
    dsc.nodes.wait_synced().await;
    dsc.dss.wait_synced().await;
    dsc.revs.wait_synced().await;
    let c = dsc.clone();
    super::run_workers(NAME, dsc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

/// upstream `shouldIgnoreNodeUpdate`: only labels, spec (taints, unschedulable) and the
/// conditions' statuses decide where daemons run; heartbeats do not.
fn node_changed(old: &Node, new: &Node) -> bool {
    let conds = |n: &Node| -> Vec<(String, String)> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| cs.iter().map(|c| (c.type_.clone(), c.status.clone())).collect())
            .unwrap_or_default()
    };
    old.metadata.labels != new.metadata.labels || old.spec != new.spec || conds(old) != conds(new)
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

/// upstream `util.AllowsSurge`: a RollingUpdate whose maxSurge scales to more than zero.
fn allows_surge(ds: &DaemonSet) -> bool {
    plan::surge_and_unavailable(ds, 1).0 > 0
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// The template's pod spec as the daemon pods get it (with the daemon tolerations), which is
/// also what eligibility is judged on.
fn daemon_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    eligibility::add_daemon_tolerations(&mut spec);
    spec
}

impl Dsc {
    /// upstream addPod / updatePod / deletePod, as the ReplicaSet controller's.
    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        owner::PodRouter {
            owners: &self.dss,
            kind: "DaemonSet",
            selector: |ds: &DaemonSet| ds.spec.as_ref().map(|s| &s.selector),
            min_ready_seconds,
            queue: &self.queue,
            exp: &self.exp,
        }
        .on_pod(old, new)
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(ds) = self.dss.get_key(key) else {
            self.exp.forget(key);
            return Ok(None);
        };
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let selector = ds.spec.as_ref().map(|s| &s.selector);
        if selector.is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
        }) {
            self.recorder.event(
                reference(ds.as_ref()),
                WARNING,
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(None);
        }
        let sel = match owner::selector(selector) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(controller = NAME, namespace = %ns, name = %name, error = %e, "invalid selector");
                return Ok(None);
            }
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let (hash, old_revs) = self.construct_history(&ds, &sel).await?;
        let node_pods = self.node_pods(&ds, &sel).await?;
        let nodes = self.nodes.list();
        let spec = daemon_spec(&ds);
        let fits = plan::fits(&nodes, &spec);
        if !self.exp.satisfied(key) {
            // Only status; the generation is not observed until the controller acts on it.
            self.update_status(&ds, &fits, &node_pods, &hash, false).await?;
            return Ok(None);
        }
        let now = Timestamp::now();
        let mut requeue = None;
        let manage = plan::manage(&fits, &node_pods, &hash, allows_surge(&ds), min_ready_seconds(&ds), now);
        let mut delete = manage.delete;
        for (node, pod) in manage.failed {
            let backoff_key = format!(
                "{}/{}/{node}",
                ds.metadata.uid.as_deref().unwrap_or_default(),
                ds.metadata.generation.unwrap_or_default()
            );
            if let Some(wait) = self.failed_backoff.waiting(&backoff_key) {
                requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
                continue;
            }
            self.failed_backoff.step(&backoff_key);
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            self.recorder.event(
                reference(ds.as_ref()),
                WARNING,
                "FailedDaemonPod",
                format!("Found failed daemon pod {ns}/{pod_name} on node {node}, will try to kill it"),
            );
            delete.push(pod);
        }
        let mut result = self.sync_nodes(&ds, key, delete, manage.create_on, &hash).await;
        if result.is_ok() && self.exp.satisfied(key) && is_rolling(&ds) {
            result = self.rolling_update(&ds, key, &fits, node_pods.clone(), &hash, now).await;
        }
        if result.is_ok() {
            result = self.cleanup_history(&ds, &node_pods, old_revs).await;
        }
        self.failed_backoff.gc();
        let st = self.update_status(&ds, &fits, &node_pods, &hash, true).await?;
        result?;
        let min_ready = min_ready_seconds(&ds);
        if min_ready > 0 && st.number_ready != st.number_available.unwrap_or(0) {
            let wait = Duration::from_secs(min_ready as u64);
            requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
        }
        Ok(requeue)
    }

    /// The claimed pods (orphans adopted, strays released) by the node they are on or pinned
    /// to; terminal pods being deleted are left out (upstream `getNodesToDaemonPods`).
    async fn node_pods(&self, ds: &Arc<DaemonSet>, sel: &apimachinery::labels::Selector) -> Result<NodePods, Error> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let pods = self.pods.list_namespace_where(&ns, |p| owner::claim_may_touch(&uid, sel, p));
        let claim = owner::claim(&uid, ds.metadata.deletion_timestamp.is_some(), sel, &pods);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let ds_api = Api::<DaemonSet>::namespaced(self.client.clone(), &ns);
        let claimed = owner::apply_claim(&ds_api, ds.as_ref(), &api, claim).await?;
        let mut out = NodePods::new();
        for p in claimed {
            if owner::is_terminated(&p) && p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(node) = eligibility::target_node(&p) {
                out.entry(node).or_default().push(p);
            }
        }
        Ok(out)
    }

    /// upstream `syncNodes`: deletes `delete` and creates a daemon pod pinned to each node of
    /// `create_on`, at most `BURST_REPLICAS` of each per sync, creations in slow-start batches.
    async fn sync_nodes(
        &self,
        ds: &Arc<DaemonSet>,
        key: &str,
        mut delete: Vec<Arc<Pod>>,
        mut create_on: Vec<String>,
        hash: &str,
    ) -> Result<(), Error> {
        create_on.truncate(BURST_REPLICAS);
        delete.truncate(BURST_REPLICAS);
        let mut seen = HashSet::new();
        delete.retain(|p| seen.insert(key_of(p.as_ref())));
        self.exp.expect_creations(key, create_on.len());
        self.exp.expect_deletions(key, delete.iter().map(|p| key_of(p.as_ref())));
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let ds_ref = reference(ds.as_ref());
        let mut errors = Vec::new();

        if !create_on.is_empty() {
            let mut template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
            template
                .metadata
                .get_or_insert_with(ObjectMeta::default)
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(HASH_LABEL.into(), hash.into());
            let base = pod_from_template(
                &template,
                ds.metadata.name.as_deref().unwrap_or_default(),
                controller_ref(ds.as_ref()),
            );
            let spec = daemon_spec(ds);
            let next = AtomicUsize::new(0);
            let (created, err) = slow_start_batch(create_on.len(), 1, || {
                let node = create_on[next.fetch_add(1, Ordering::Relaxed)].clone();
                let mut pod = base.clone();
                let mut s = spec.clone();
                s.affinity = Some(eligibility::pin_to_node(s.affinity.take(), &node));
                pod.spec = Some(s);
                let (api, rec, ds_ref) = (api.clone(), self.recorder.clone(), ds_ref.clone());
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            let name = p.metadata.name.unwrap_or_default();
                            rec.event(ds_ref, NORMAL, "SuccessfulCreate", format!("Created pod: {name}"));
                            Ok(())
                        }
                        // upstream: a terminating namespace is not this controller's failure.
                        Err(kube::Error::Api(e)) if e.message.contains("because it is being terminated") => Ok(()),
                        Err(e) => {
                            rec.event(ds_ref, WARNING, "FailedCreate", format!("Error creating: {}", message(&e)));
                            Err(e)
                        }
                    }
                }
            })
            .await;
            for _ in created..create_on.len() {
                self.exp.creation_observed(key);
            }
            if let Some(e) = err {
                errors.push(message(&e));
            }
        }

        let results = join_all(delete.iter().map(|p| {
            let (api, rec, ds_ref) = (api.clone(), self.recorder.clone(), ds_ref.clone());
            async move {
                let name = p.metadata.name.clone().unwrap_or_default();
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &dp).await {
                    Ok(_) => {
                        rec.event(ds_ref, NORMAL, "SuccessfulDelete", format!("Deleted pod: {name}"));
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        self.exp.deletion_observed(key, &key_of(p.as_ref()));
                        Ok(())
                    }
                    Err(e) => {
                        self.exp.deletion_observed(key, &key_of(p.as_ref()));
                        rec.event(ds_ref, WARNING, "FailedDelete", format!("Error deleting: {}", message(&e)));
                        Err(message(&e))
                    }
                }
            }
        }))
        .await;
        errors.extend(results.into_iter().filter_map(Result::err));
        match errors.first() {
            Some(e) => Err(Error::Sync(e.clone())),
            None => Ok(()),
        }
    }

    async fn rolling_update(
        &self,
        ds: &Arc<DaemonSet>,
        key: &str,
        fits: &[(String, eligibility::Fit)],
        mut node_pods: NodePods,
        hash: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        // upstream updatedDesiredNodeCounts: every node that wants a pod is in the map.
        let mut desired = 0;
        for (node, fit) in fits {
            if fit.should_run {
                desired += 1;
                node_pods.entry(node.clone()).or_default();
            }
        }
        let (max_surge, max_unavailable) = plan::surge_and_unavailable(ds, desired);
        let should_run = |n: &str| fits.iter().any(|(name, f)| name == n && f.should_run);
        let step = plan::rolling_update(
            &node_pods,
            &should_run,
            hash,
            max_surge,
            max_unavailable,
            desired,
            min_ready_seconds(ds),
            now,
        );
        if step.delete.is_empty() && step.create_on.is_empty() {
            return Ok(());
        }
        let by_name: BTreeMap<&str, &Arc<Pod>> =
            node_pods.values().flatten().map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p)).collect();
        let delete = step.delete.iter().filter_map(|n| by_name.get(n.as_str()).map(|p| (*p).clone())).collect();
        self.sync_nodes(ds, key, delete, step.create_on, hash).await
    }

    /// upstream `constructHistory`: the revision matching the current template (created when
    /// missing, renumbered to be the newest when it is an old one come back) and the others.
    /// Returns the current revision's hash.
    async fn construct_history(
        &self,
        ds: &Arc<DaemonSet>,
        sel: &apimachinery::labels::Selector,
    ) -> Result<(String, Vec<Arc<ControllerRevision>>), Error> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let api = KubeRevisions(self.client.clone());
        let mut owned = Vec::new();
        for r in history::owned_or_orphan(&uid, sel, &self.revs.list_namespace(&ns)) {
            if controller_of(&r.metadata).is_none() {
                if ds.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let rapi: Api<ControllerRevision> = Api::namespaced(self.client.clone(), &ns);
                let refs = r.metadata.owner_references.clone().unwrap_or_default();
                let (n, ruid) =
                    (r.metadata.name.as_deref().unwrap_or_default(), r.metadata.uid.as_deref().unwrap_or_default());
                owner::adopt(&rapi, n, ruid, &controller_ref(ds.as_ref()), &refs).await?;
            }
            owned.push(r);
        }
        let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collision_count);
        let wanted = ControllerRevision {
            metadata: ObjectMeta::default(),
            data: Some(RawExtension(history::template_patch(&template))),
            revision: 0,
        };
        let (mut current, old): (Vec<_>, Vec<_>) = owned.into_iter().partition(|r| history::equal(r, &wanted));
        let next = history::next_revision(&old);
        history::sort(&mut current);
        let Some(cur) = current.pop() else {
            let rev = self.snapshot(ds, &template, &hash, next).await?;
            return Ok((revision_hash(&rev, &hash), old));
        };
        // upstream dedupCurHistories: of several revisions with the current data, the newest
        // stays and the rest go.
        for dup in &current {
            api.delete(dup).await?;
        }
        let cur = if cur.revision < next { Arc::new(history::update_revision(&api, &cur, next).await?) } else { cur };
        Ok((revision_hash(&cur, &hash), old))
    }

    /// upstream `snapshot`: the ControllerRevision `<ds>-<hash>`; on a name taken by other
    /// data the collision count in the status goes up and the sync is retried.
    async fn snapshot(
        &self,
        ds: &Arc<DaemonSet>,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        hash: &str,
        revision: i64,
    ) -> Result<ControllerRevision, Error> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = format!("{}-{hash}", ds.metadata.name.as_deref().unwrap_or_default());
        let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.into());
        let rev = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: ds.metadata.annotations.clone(),
                owner_references: Some(vec![controller_ref(ds.as_ref())]),
                ..Default::default()
            },
            data: Some(RawExtension(history::template_patch(template))),
            revision,
        };
        let api = KubeRevisions(self.client.clone());
        match api.create(&rev).await {
            Ok(r) => Ok(r),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(&ns, &name).await?;
                if history::equal(&existing, &rev) {
                    return Ok(existing);
                }
                let dss: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
                let mut live = dss.get(ds.metadata.name.as_deref().unwrap_or_default()).await?;
                let seen = ds.status.as_ref().and_then(|s| s.collision_count);
                let st = live.status.get_or_insert_with(DaemonSetStatus::default);
                if st.collision_count != seen {
                    return Err(Error::Sync(format!(
                        "found a stale collision count ({:?}, expected {seen:?}) of DaemonSet {ns}/{}; will retry until it is updated",
                        st.collision_count,
                        ds.metadata.name.as_deref().unwrap_or_default()
                    )));
                }
                st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                dss.replace_status(ds.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &live)
                    .await?;
                Err(Error::Sync(format!("hash collision on ControllerRevision {ns}/{name}; collisionCount bumped")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// upstream `cleanupHistory`: old revisions beyond `revisionHistoryLimit` go, oldest
    /// first, except those a live pod still runs.
    async fn cleanup_history(
        &self,
        ds: &Arc<DaemonSet>,
        node_pods: &NodePods,
        mut old: Vec<Arc<ControllerRevision>>,
    ) -> Result<(), Error> {
        let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(DEFAULT_HISTORY_LIMIT);
        let mut to_kill = old.len() as i64 - i64::from(limit.max(0));
        if to_kill <= 0 {
            return Ok(());
        }
        let live: HashSet<&str> = node_pods
            .values()
            .flatten()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).map(String::as_str))
            .collect();
        history::sort(&mut old);
        let api = KubeRevisions(self.client.clone());
        for r in old {
            if to_kill <= 0 {
                break;
            }
            if r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).is_some_and(|h| live.contains(h.as_str())) {
                continue;
            }
            api.delete(&r).await?;
            to_kill -= 1;
        }
        Ok(())
    }

    async fn update_status(
        &self,
        ds: &Arc<DaemonSet>,
        fits: &[(String, eligibility::Fit)],
        node_pods: &NodePods,
        hash: &str,
        observe: bool,
    ) -> Result<DaemonSetStatus, Error> {
        let st = plan::status(ds, fits, node_pods, hash, observe, Timestamp::now());
        if ds.status.as_ref() == Some(&st) {
            return Ok(st);
        }
        let api: Api<DaemonSet> =
            Api::namespaced(self.client.clone(), ds.metadata.namespace.as_deref().unwrap_or_default());
        let mut obj = (**ds).clone();
        obj.status = Some(st.clone());
        match api.replace_status(ds.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &obj).await {
            Ok(_) => Ok(st),
            // The informer brings the newer version and requeues us.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(st),
            Err(e) => Err(e.into()),
        }
    }
}

/// The hash a revision stands for: its `controller-revision-hash` label (set by upstream
/// since before collision counts), else the one computed now.
fn revision_hash(rev: &ControllerRevision, computed: &str) -> String {
    rev.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned().unwrap_or_else(|| computed.to_string())
}
