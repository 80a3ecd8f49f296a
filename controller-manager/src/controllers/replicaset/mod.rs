//! The ReplicaSet controller, as upstream's `pkg/controller/replicaset`: keeps `replicas` active
//! pods controlled by each ReplicaSet. It claims pods (adopting matching orphans, releasing
//! ones that stopped matching), creates missing pods in slow-start batches (1, 2, 4, …, at
//! most 500 per sync), deletes surplus pods in upstream's ranking order, and writes status.
//! Expectations keep it from acting twice on one ReplicaSet before its informer has seen the
//! pods it created or deleted.

mod ranking;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::events::{reference, Recorder, NORMAL, WARNING};
use super::expectations::Expectations;
use super::informer::{key_of, Informer};
use super::owner::{self, controller_of, controller_ref, is_active, is_available, is_ready, PodView};
use super::podcache::CachedPod;
use super::workqueue::Queue;
use super::Context;
pub use ranking::pods_to_delete;

pub const NAME: &str = "replicaset";
const COMPONENT: &str = "replicaset-controller";
/// upstream: BurstReplicas
pub const BURST_REPLICAS: usize = 500;
/// upstream: SlowStartInitialBatchSize
const SLOW_START_INITIAL_BATCH: usize = 1;
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Manage(String),
}

struct Rsc {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    rss: Arc<Informer<ReplicaSet>>,
    queue: Arc<Queue>,
    exp: Expectations,
    recorder: Recorder,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let rsc = Arc::new(Rsc {
        client: ctx.client.clone(),
        pods: ctx.informers.get::<Pod>(),
        rss: ctx.informers.get::<ReplicaSet>(),
        queue: Arc::new(Queue::new()),
        exp: Expectations::new(),
        recorder: ctx.recorder(COMPONENT),
    });
    // Handlers hold a weak reference so the informers do not keep a stopped controller alive.
    let weak = Arc::downgrade(&rsc);
    rsc.rss.add_handler(Arc::new(move |old: Option<&Arc<ReplicaSet>>, new: Option<&Arc<ReplicaSet>>| {
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
    let weak = Arc::downgrade(&rsc);
    rsc.pods.add_handler(Arc::new(move |old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>| {
        if let Some(c) = weak.upgrade() {
            c.on_pod(old.map(|p| p.as_ref()), new.map(|p| p.as_ref()));
        }
    }));
    rsc.pods.wait_synced().await;
    rsc.rss.wait_synced().await;
    let c = rsc.clone();
    super::run_workers(NAME, rsc.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Rsc {
    /// upstream addPod / updatePod / deletePod: wake the controlling ReplicaSet (counting the
    /// observation against its expectations), or for an orphan every ReplicaSet that might
    /// adopt it.
    fn on_pod(&self, old: Option<&Pod>, new: Option<&Pod>) {
        owner::PodRouter {
            owners: &self.rss,
            kind: "ReplicaSet",
            selector: |rs: &ReplicaSet| rs.spec.as_ref().map(|s| &s.selector),
            min_ready_seconds,
            queue: &self.queue,
            exp: &self.exp,
        }
        .on_pod(old, new)
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some(rs) = self.rss.get_key(key) else {
            self.exp.forget(key);
            return Ok(None);
        };
        let needs_sync = self.exp.satisfied(key);
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let sel = match owner::selector(rs.spec.as_ref().map(|s| &s.selector)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(controller = NAME, namespace = %ns, name = ?rs.metadata.name, error = %e, "invalid selector");
                return Ok(None);
            }
        };
        // The cached pods, not decoded: this runs on every event of the ReplicaSet's pods.
        let active: Vec<Arc<CachedPod>> = self.pods.list_namespace_cached(&ns).into_iter().filter(is_active).collect();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let claim = owner::claim(&uid, rs.metadata.deletion_timestamp.is_some(), &sel, &active);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let rs_api = Api::<ReplicaSet>::namespaced(self.client.clone(), &ns);
        let claimed = owner::apply_claim(&rs_api, rs.as_ref(), &pods_api, claim).await?;
        let mut manage_err = None;
        if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            if let Err(e) = self.manage(&rs, key, &claimed).await {
                manage_err = Some(e);
            }
        }
        let now = Timestamp::now();
        let status = calculate_status(&rs, &claimed, manage_err.as_ref().map(|e| e.to_string()), now);
        let rs = self.update_status(&rs, status).await?;
        if let Some(e) = manage_err {
            return Err(e);
        }
        let st = rs.status.clone().unwrap_or_default();
        let min_ready = min_ready_seconds(&rs);
        if min_ready > 0
            && st.ready_replicas.unwrap_or(0) == replicas(&rs)
            && st.available_replicas.unwrap_or(0) != replicas(&rs)
        {
            return Ok(Some(Duration::from_secs(min_ready as u64)));
        }
        Ok(None)
    }

    async fn manage(&self, rs: &Arc<ReplicaSet>, key: &str, pods: &[Arc<CachedPod>]) -> Result<(), Error> {
        let want = replicas(rs) as usize;
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let rs_ref = reference(rs.as_ref());
        if pods.len() < want {
            let diff = (want - pods.len()).min(BURST_REPLICAS);
            // Expect them all before the first request, so an early watch event cannot race it.
            self.exp.expect_creations(key, diff);
            let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
            let pod = pod_from_template(
                &template,
                rs.metadata.name.as_deref().unwrap_or_default(),
                controller_ref(rs.as_ref()),
            );
            let (created, err) = slow_start_batch(diff, SLOW_START_INITIAL_BATCH, || {
                let api = api.clone();
                let pod = pod.clone();
                let rec = self.recorder.clone();
                let rs_ref = rs_ref.clone();
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            let name = p.metadata.name.unwrap_or_default();
                            rec.event(rs_ref, NORMAL, "SuccessfulCreate", format!("Created pod: {name}"));
                            Ok(())
                        }
                        // upstream: a terminating namespace is not this controller's failure.
                        Err(kube::Error::Api(e)) if e.message.contains("because it is being terminated") => Ok(()),
                        Err(e) => {
                            rec.event(rs_ref, WARNING, "FailedCreate", format!("Error creating: {}", message(&e)));
                            Err(e)
                        }
                    }
                }
            })
            .await;
            for _ in created..diff {
                self.exp.creation_observed(key);
            }
            return err.map_or(Ok(()), |e| Err(Error::Manage(message(&e))));
        }
        if pods.len() > want {
            let diff = (pods.len() - want).min(BURST_REPLICAS);
            let related = self.related_pods(rs);
            let doomed = pods_to_delete(pods, &related, diff, Timestamp::now());
            self.exp.expect_deletions(key, doomed.iter().map(|p| key_of(p.as_ref())));
            let results = join_all(doomed.iter().map(|p| {
                let api = api.clone();
                let rec = self.recorder.clone();
                let rs_ref = rs_ref.clone();
                async move {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let dp = DeleteParams {
                        preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => {
                            rec.event(rs_ref, NORMAL, "SuccessfulDelete", format!("Deleted pod: {name}"));
                            Ok(())
                        }
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            self.exp.deletion_observed(key, &key_of(p.as_ref()));
                            Ok(())
                        }
                        Err(e) => {
                            self.exp.deletion_observed(key, &key_of(p.as_ref()));
                            rec.event(rs_ref, WARNING, "FailedDelete", format!("Error deleting: {}", message(&e)));
                            Err(e)
                        }
                    }
                }
            }))
            .await;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(Error::Manage(message(&e)));
            }
        }
        Ok(())
    }

    /// Active pods of every ReplicaSet sharing this one's controller (upstream
    /// getIndirectlyRelatedPods), for the doubled-up ranking.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<CachedPod>> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let rs_uids: std::collections::HashSet<String> = match controller_of(&rs.metadata) {
            Some(ctrl) => self
                .rss
                .list_namespace(ns)
                .iter()
                .filter(|o| controller_of(&o.metadata).is_some_and(|c| c.uid == ctrl.uid))
                .filter_map(|o| o.metadata.uid.clone())
                .collect(),
            None => rs.metadata.uid.iter().cloned().collect(),
        };
        self.pods
            .list_namespace_cached(ns)
            .into_iter()
            .filter(|p| is_active(p) && controller_of(&p.metadata).is_some_and(|c| rs_uids.contains(&c.uid)))
            .collect()
    }

    async fn update_status(&self, rs: &Arc<ReplicaSet>, status: ReplicaSetStatus) -> Result<Arc<ReplicaSet>, Error> {
        let generation = rs.metadata.generation;
        let status = ReplicaSetStatus { observed_generation: generation, ..status };
        if rs.status.as_ref() == Some(&status) {
            return Ok(rs.clone());
        }
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), rs.metadata.namespace.as_deref().unwrap_or_default());
        let mut obj = (**rs).clone();
        obj.status = Some(status.clone());
        match api.replace_status(rs.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &obj).await {
            Ok(o) => Ok(Arc::new(o)),
            // upstream retries once against a fresh read; the informer will bring the new
            // version and requeue us anyway, so a conflict just waits for it.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(rs.clone()),
            Err(e) => Err(e.into()),
        }
    }
}

pub fn min_ready_seconds(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
}

pub fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// upstream GetPodFromTemplate: labels, annotations and finalizers from the template,
/// `generateName` `<owner>-`, the owner as controller.
pub fn pod_from_template(t: &PodTemplateSpec, owner_name: &str, cref: OwnerReference) -> Pod {
    let m = t.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{owner_name}-")),
            labels: m.labels,
            annotations: m.annotations,
            finalizers: m.finalizers,
            owner_references: Some(vec![cref]),
            ..Default::default()
        },
        spec: t.spec.clone(),
        status: None,
    }
}

/// upstream slowStartBatch: runs `count` calls of `f` in batches of 1, 2, 4, … (starting at
/// `initial`), stopping after the first batch with a failure. Returns the successes and the
/// first error.
pub async fn slow_start_batch<F, Fut, E>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = remaining.min(2 * batch);
    }
    (successes, None)
}

/// upstream calculateStatus: counts over the claimed active pods, and the ReplicaFailure
/// condition set while creating or deleting fails and removed once it works.
pub fn calculate_status<P: PodView>(
    rs: &ReplicaSet,
    pods: &[Arc<P>],
    manage_err: Option<String>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone());
    let template_sel = apimachinery::labels::Selector::from_set(template_labels.unwrap_or_default());
    let min_ready = min_ready_seconds(rs);
    let mut st = rs.status.clone().unwrap_or_default();
    st.replicas = pods.len() as i32;
    st.fully_labeled_replicas = Some(
        pods.iter().filter(|p| template_sel.matches(p.pod_labels().unwrap_or(&Default::default()))).count() as i32,
    );
    st.ready_replicas = Some(pods.iter().filter(is_ready).count() as i32);
    st.available_replicas = Some(pods.iter().filter(|p| is_available(p, min_ready, now)).count() as i32);
    let mut conditions = st.conditions.take().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_err {
        Some(msg) if !has_failure => {
            let reason = if (pods.len() as i32) < replicas(rs) { "FailedCreate" } else { "FailedDelete" };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(msg),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    st.conditions = (!conditions.is_empty()).then_some(conditions);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_the_first_failing_batch() {
        let sizes = Mutex::new(Vec::new());
        let inflight = AtomicUsize::new(0);
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            inflight.fetch_add(1, Ordering::SeqCst);
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::task::yield_now().await;
                let n = inflight.swap(0, Ordering::SeqCst);
                if n > 0 {
                    sizes.lock().expect("lock").push(n);
                }
                Ok::<(), ()>(())
            }
        })
        .await;
        assert_eq!((ok, err), (10, None));
        assert_eq!(*sizes.lock().expect("lock"), [1, 2, 4, 3]);

        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            // The fourth call (in the batch of 4) fails.
            async move {
                if n == 3 {
                    Err("quota")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!((ok, err), (6, Some("quota")), "1 + 2 + 3 of the batch of 4 succeed, then it stops");
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta { name: Some("web".into()), generation: Some(3), ..Default::default() },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".into(), "web".into()), ("tier".into(), "fe".into())].into()),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(labels: &[(&str, &str)], ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(0).expect("ts"))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn status_counts_fully_labeled_ready_and_available() {
        let pods = [
            pod(&[("app", "web"), ("tier", "fe")], true),
            pod(&[("app", "web")], true),
            pod(&[("app", "web"), ("tier", "fe")], false),
        ];
        let st = calculate_status(&rs(3), &pods, None, Timestamp::from_second(100).expect("ts"));
        assert_eq!(st.replicas, 3);
        assert_eq!(st.fully_labeled_replicas, Some(2));
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.available_replicas, Some(2));
        assert_eq!(st.conditions, None);
        let cached: Vec<Arc<CachedPod>> = pods.iter().map(|p| Arc::new(CachedPod::new(p))).collect();
        let from_cache = calculate_status(&rs(3), &cached, None, Timestamp::from_second(100).expect("ts"));
        assert_eq!(from_cache, st, "the informer's cached pods count as the typed ones");
    }

    #[test]
    fn replica_failure_is_set_on_create_errors_and_cleared_after() {
        let now = Timestamp::from_second(100).expect("ts");
        let mut r = rs(3);
        let st = calculate_status::<Pod>(&r, &[], Some("exceeded quota: pods".into()), now);
        let c = &st.conditions.clone().expect("a condition")[0];
        assert_eq!((c.type_.as_str(), c.reason.as_deref()), ("ReplicaFailure", Some("FailedCreate")));
        assert_eq!(c.message.as_deref(), Some("exceeded quota: pods"));
        r.status = Some(st);
        assert_eq!(calculate_status::<Pod>(&r, &[], None, now).conditions, None);
    }

    #[test]
    fn pods_from_the_template_are_named_after_and_controlled_by_the_owner() {
        let r = rs(1);
        let cref = OwnerReference {
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
            ..Default::default()
        };
        let p = pod_from_template(
            r.spec.as_ref().and_then(|s| s.template.as_ref()).expect("template"),
            "web",
            cref.clone(),
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.owner_references, Some(vec![cref]));
        assert_eq!(p.metadata.labels.expect("labels").get("tier").map(String::as_str), Some("fe"));
    }
}
