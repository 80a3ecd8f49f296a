//! Doing the plan's steps, as upstream's `StatefulPodControl`: claims before their pod, the
//! retention policy's ownerReferences on claims, pod updates that restore identity and storage,
//! deletions with a uid precondition, and upstream's events for each. The API calls go through
//! [`ObjectManager`] (upstream's `StatefulPodControlObjectManager`), so the order of calls,
//! the events and the expectations bookkeeping are unit-tested against a recording fake.

use std::future::Future;
use std::sync::Arc;

use futures::future::join_all;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::control::{DeleteReason, Step};
use super::utils::*;
use super::{Error, NAME};
use crate::controllers::events::{reference, Recorder, NORMAL, WARNING};
use crate::controllers::expectations::Expectations;
use crate::controllers::informer::{key_of, Informer};

/// The writes the StatefulSet controller makes (reads come from informers).
pub trait ObjectManager: Send + Sync {
    fn create_pod(&self, pod: &Pod) -> impl Future<Output = Result<Pod, kube::Error>> + Send;
    fn update_pod(&self, pod: &Pod) -> impl Future<Output = Result<Pod, kube::Error>> + Send;
    /// Deletes `name` if its uid is still `uid`.
    fn delete_pod(
        &self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    fn create_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, kube::Error>> + Send;
    fn update_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> impl Future<Output = Result<PersistentVolumeClaim, kube::Error>> + Send;
}

/// [`ObjectManager`] against the apiserver.
pub struct KubeObjects(pub kube::Client);

fn ns_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or_default()
}

impl ObjectManager for KubeObjects {
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        Api::<Pod>::namespaced(self.0.clone(), ns_of(&pod.metadata)).create(&PostParams::default(), pod).await
    }

    async fn update_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        Api::<Pod>::namespaced(self.0.clone(), ns_of(&pod.metadata)).replace(name, &PostParams::default(), pod).await
    }

    async fn delete_pod(&self, ns: &str, name: &str, uid: Option<&str>) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: uid.map(str::to_string), resource_version: None }),
            ..Default::default()
        };
        Api::<Pod>::namespaced(self.0.clone(), ns).delete(name, &dp).await.map(|_| ())
    }

    async fn create_claim(&self, claim: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, kube::Error> {
        Api::<PersistentVolumeClaim>::namespaced(self.0.clone(), ns_of(&claim.metadata))
            .create(&PostParams::default(), claim)
            .await
    }

    async fn update_claim(&self, claim: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, kube::Error> {
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        Api::<PersistentVolumeClaim>::namespaced(self.0.clone(), ns_of(&claim.metadata))
            .replace(name, &PostParams::default(), claim)
            .await
    }
}

fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn pod_name_of(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn step_pod_name(s: &Step) -> String {
    match s {
        Step::Create(p) => pod_name_of(p),
        Step::Delete(p, _) | Step::CreateMissingClaims(p) | Step::Update(p) | Step::FixClaims(p) => pod_name_of(p),
    }
}

/// The creations and deletions `steps` raised expectations for, which will not happen.
fn lower_expectations(exp: &Expectations, key: &str, steps: &[&Step]) {
    for s in steps {
        match s {
            Step::Create(_) => exp.creation_observed(key),
            Step::Delete(p, _) => exp.deletion_observed(key, &key_of(p.as_ref())),
            _ => {}
        }
    }
}

pub struct PodControl<M> {
    pub objects: M,
    /// Claims are read from the informer, as upstream's claim lister.
    pub claims: Arc<Informer<PersistentVolumeClaim>>,
    pub recorder: Recorder,
}

impl<M: ObjectManager> PodControl<M> {
    fn event_pod(&self, set: &StatefulSet, verb: &str, pod: &str, err: Option<&str>) {
        let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
        match err {
            None => self.recorder.event(
                reference(set),
                NORMAL,
                &format!("Successful{title}"),
                format!("{verb} Pod {pod} in StatefulSet {} successful", name(set)),
            ),
            Some(e) => self.recorder.event(
                reference(set),
                WARNING,
                &format!("Failed{title}"),
                format!("{verb} Pod {pod} in StatefulSet {} failed error: {e}", name(set)),
            ),
        }
    }

    fn event_claim(&self, set: &StatefulSet, verb: &str, claim: &str, pod: &str, err: Option<&str>) {
        let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
        match err {
            None => self.recorder.event(
                reference(set),
                NORMAL,
                &format!("Successful{title}"),
                format!("{verb} Claim {claim} Pod {pod} in StatefulSet {} success", name(set)),
            ),
            Some(e) => self.recorder.event(
                reference(set),
                WARNING,
                &format!("Failed{title}"),
                format!("{verb} Claim {claim} for Pod {pod} in StatefulSet {} failed error: {e}", name(set)),
            ),
        }
    }

    /// Runs the plan's steps in order, stopping at the first failure. Expectations are raised
    /// for every creation and deletion first and lowered for those that never happened.
    pub async fn execute(
        &self,
        exp: &Expectations,
        set: &StatefulSet,
        key: &str,
        update_template: &PodTemplateSpec,
        steps: &[Step],
    ) -> Result<(), Error> {
        let creates = steps.iter().filter(|s| matches!(s, Step::Create(_))).count();
        let deletes: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Delete(p, _) => Some(key_of(p.as_ref())),
                _ => None,
            })
            .collect();
        if creates > 0 {
            exp.expect_creations(key, creates);
        }
        if !deletes.is_empty() {
            exp.expect_deletions(key, deletes);
        }
        let update_set = with_template(set, Some(update_template.clone()));
        if !allows_burst(set) {
            let all: Vec<&Step> = steps.iter().collect();
            return self.run_in_order(exp, set, &update_set, key, &all).await;
        }
        // Parallel: each pod's steps in order, pods side by side in upstream's slow-start
        // batches (1, 2, 4, ...), stopping after the first batch with a failure.
        let mut groups: Vec<(String, Vec<&Step>)> = Vec::new();
        for step in steps {
            let pod = step_pod_name(step);
            match groups.iter_mut().find(|(n, _)| *n == pod) {
                Some((_, g)) => g.push(step),
                None => groups.push((pod, vec![step])),
            }
        }
        let mut batch = 1;
        let mut rest = groups.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            let results = join_all(now.iter().map(|(_, g)| self.run_in_order(exp, set, &update_set, key, g))).await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                for (_, g) in later {
                    lower_expectations(exp, key, g);
                }
                return Err(e);
            }
            rest = later;
            batch *= 2;
        }
        Ok(())
    }

    /// Runs `steps` one after the other, stopping at the first failure (whose expectation, and
    /// those of the steps not run, are lowered).
    async fn run_in_order(
        &self,
        exp: &Expectations,
        set: &StatefulSet,
        update_set: &StatefulSet,
        key: &str,
        steps: &[&Step],
    ) -> Result<(), Error> {
        for (i, step) in steps.iter().enumerate() {
            let r = match step {
                Step::Create(p) => self.create_pod(set, p).await,
                Step::Delete(p, why) => self.delete_pod(set, p, *why).await,
                Step::CreateMissingClaims(p) => self.create_claims(set, p).await,
                Step::Update(p) => self.update_pod(update_set, p).await,
                Step::FixClaims(p) => self.fix_claims(update_set, p).await,
            };
            if let Err(e) = r {
                lower_expectations(exp, key, &steps[i..]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// upstream createPersistentVolumeClaims: each missing claim is created; one being deleted
    /// is an error (the pod must not start on a claim about to go).
    async fn create_claims(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let Some(ord) = ordinal(pod) else { return Ok(()) };
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let mut errs = Vec::new();
        for (_, claim) in claims_for(set, ord) {
            let cname = claim.metadata.name.clone().unwrap_or_default();
            match self.claims.get(&ns, &cname) {
                Some(existing) => {
                    if existing.metadata.deletion_timestamp.is_some() {
                        errs.push(format!("pvc {cname} is being deleted"));
                    }
                }
                None => match self.objects.create_claim(&claim).await {
                    Ok(_) => self.event_claim(set, "create", &cname, &pod_name_of(pod), None),
                    Err(e) if is_code(&e, 409) => {}
                    Err(e) => {
                        self.event_claim(set, "create", &cname, &pod_name_of(pod), Some(&message(&e)));
                        errs.push(format!("failed to create PVC {cname}: {}", message(&e)));
                    }
                },
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Error::Step(errs.join(", ")))
        }
    }

    /// upstream CreateStatefulPod: claims first, then the pod, then the claims' retention refs.
    async fn create_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let pname = pod_name_of(pod);
        if let Err(e) = self.create_claims(set, pod).await {
            self.event_pod(set, "create", &pname, Some(&e.to_string()));
            return Err(e);
        }
        match self.objects.create_pod(pod).await {
            Ok(created) => {
                self.event_pod(set, "create", &pname, None);
                if let Err(e) = self.fix_claims(set, &created).await {
                    self.event_pod(set, "update", &pname, Some(&e.to_string()));
                    return Err(e);
                }
                Ok(())
            }
            // upstream sinks AlreadyExists (a slow cache) without an event; the sync retries.
            Err(e) if is_code(&e, 409) => Err(e.into()),
            // upstream: a terminating namespace is not this controller's failure.
            Err(kube::Error::Api(e)) if e.message.contains("because it is being terminated") => Ok(()),
            Err(e) => {
                self.event_pod(set, "create", &pname, Some(&message(&e)));
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod, why: DeleteReason) -> Result<(), Error> {
        let pname = pod_name_of(pod);
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        match why {
            DeleteReason::Failed => self.recorder.event(
                reference(set),
                WARNING,
                "RecreatingFailedPod",
                format!("StatefulSet {ns}/{} is recreating failed Pod {pname}", name(set)),
            ),
            DeleteReason::Succeeded => self.recorder.event(
                reference(set),
                NORMAL,
                "RecreatingTerminatedPod",
                format!("StatefulSet {ns}/{} is recreating terminated Pod {pname}", name(set)),
            ),
            DeleteReason::ScaleDown | DeleteReason::Update => {
                tracing::info!(controller = NAME, namespace = %ns, name = %name(set), pod = %pname, reason = ?why, "deleting pod");
            }
        }
        match self.objects.delete_pod(&ns, &pname, pod.metadata.uid.as_deref()).await {
            Ok(_) => {
                self.event_pod(set, "delete", &pname, None);
                Ok(())
            }
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => {
                self.event_pod(set, "delete", &pname, Some(&message(&e)));
                Err(e.into())
            }
        }
    }

    /// upstream UpdateStatefulPod: restore identity and storage, create missing claims, set the
    /// claims' retention refs.
    async fn update_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let pname = pod_name_of(pod);
        let Some(ord) = ordinal(pod) else { return Ok(()) };
        let mut p = pod.clone();
        let mut dirty = false;
        if !identity_matches(set, &p) {
            update_identity(set, &mut p, ord);
            dirty = true;
        }
        if !storage_matches(set, &p) {
            update_storage(set, &mut p, ord);
            dirty = true;
            if let Err(e) = self.create_claims(set, &p).await {
                self.event_pod(set, "update", &pname, Some(&e.to_string()));
                return Err(e);
            }
        }
        if let Err(e) = self.fix_claims(set, &p).await {
            self.event_pod(set, "update", &pname, Some(&e.to_string()));
            return Err(e);
        }
        if !dirty {
            return Ok(());
        }
        match self.objects.update_pod(&p).await {
            Ok(_) => {
                self.event_pod(set, "update", &pname, None);
                Ok(())
            }
            Err(e) => {
                self.event_pod(set, "update", &pname, Some(&message(&e)));
                Err(e.into())
            }
        }
    }

    /// upstream UpdatePodClaimForRetentionPolicy.
    async fn fix_claims(&self, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        let Some(ord) = ordinal(pod) else { return Ok(()) };
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        for (_, c) in claims_for(set, ord) {
            let cname = c.metadata.name.clone().unwrap_or_default();
            let Some(existing) = self.claims.get(&ns, &cname) else { continue };
            if claim_owner_up_to_date(&existing, set, pod) {
                continue;
            }
            let mut updated = (*existing).clone();
            let refs = claim_refs_for_policy(&existing, set, pod);
            updated.metadata.owner_references = (!refs.is_empty()).then_some(refs);
            self.objects.update_claim(&updated).await.map_err(|e| {
                Error::Step(format!("could not update claim {cname} for delete policy ownerRefs: {}", message(&e)))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;
    use std::sync::Mutex;

    /// Records every write; `fail` makes the named pod's creation fail with that code.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        fail: Option<(&'static str, u16)>,
    }

    fn status(code: u16) -> kube::Error {
        let reason = if code == 409 { "AlreadyExists" } else { "InternalError" };
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: format!("boom {code}"),
            ..Default::default()
        }))
    }

    impl ObjectManager for Fake {
        async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
            let name = pod_name_of(pod);
            self.calls.lock().expect("lock").push(format!("create pod {name}"));
            match self.fail {
                Some((n, code)) if n == name => Err(status(code)),
                _ => Ok(pod.clone()),
            }
        }
        async fn update_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
            self.calls.lock().expect("lock").push(format!("update pod {}", pod_name_of(pod)));
            Ok(pod.clone())
        }
        async fn delete_pod(&self, _: &str, name: &str, uid: Option<&str>) -> Result<(), kube::Error> {
            self.calls.lock().expect("lock").push(format!("delete pod {name} {}", uid.unwrap_or_default()));
            Ok(())
        }
        async fn create_claim(&self, c: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, kube::Error> {
            self.calls.lock().expect("lock").push(format!("create claim {}", c.metadata.name.as_deref().unwrap_or("")));
            Ok(c.clone())
        }
        async fn update_claim(&self, c: &PersistentVolumeClaim) -> Result<PersistentVolumeClaim, kube::Error> {
            let owners: Vec<String> =
                c.metadata.owner_references.iter().flatten().map(|r| format!("{}/{}", r.kind, r.name)).collect();
            let name = c.metadata.name.as_deref().unwrap_or("");
            self.calls.lock().expect("lock").push(format!("update claim {name} owners={}", owners.join(",")));
            Ok(c.clone())
        }
    }

    fn set(policy: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid"},
            "spec": {"replicas": 2, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
                     "persistentVolumeClaimRetentionPolicy": policy,
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]},
        }))
        .expect("set")
    }

    fn retain() -> serde_json::Value {
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    }

    fn template(s: &StatefulSet) -> PodTemplateSpec {
        s.spec.clone().expect("spec").template
    }

    fn control(fake: Fake, claims: &[PersistentVolumeClaim]) -> (PodControl<Fake>, tokio::sync::mpsc::Receiver<Event>) {
        let informer = Arc::new(Informer::new());
        for c in claims {
            informer.upsert(c.clone());
        }
        let (recorder, rx) = Recorder::recording("statefulset-controller");
        (PodControl { objects: fake, claims: informer, recorder }, rx)
    }

    fn events(rx: &mut tokio::sync::mpsc::Receiver<Event>) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()));
        }
        out
    }

    fn ev(t: &str, r: &str, m: &str) -> (String, String, String) {
        (t.into(), r.into(), m.into())
    }

    fn claim(name: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"}})).expect("claim")
    }

    fn calls(c: &PodControl<Fake>) -> Vec<String> {
        c.objects.calls.lock().expect("lock").clone()
    }

    #[tokio::test]
    async fn create_makes_the_claims_before_the_pod_with_upstreams_events() {
        let s = set(retain());
        let (c, mut rx) = control(Fake::default(), &[]);
        let exp = Expectations::new();
        let pod = new_pod(&s, &template(&s), 0);
        c.execute(&exp, &s, "ns/web", &template(&s), &[Step::Create(Box::new(pod))]).await.expect("create");
        assert_eq!(calls(&c), ["create claim data-web-0", "create pod web-0"]);
        assert_eq!(
            events(&mut rx),
            [
                ev(NORMAL, "SuccessfulCreate", "create Claim data-web-0 Pod web-0 in StatefulSet web success"),
                ev(NORMAL, "SuccessfulCreate", "create Pod web-0 in StatefulSet web successful"),
            ]
        );
        assert!(!exp.satisfied("ns/web"), "the creation is expected until the informer sees it");
    }

    #[tokio::test]
    async fn an_existing_claim_is_reused_and_one_being_deleted_blocks_the_pod() {
        let s = set(retain());
        let (c, _) = control(Fake::default(), &[claim("data-web-0")]);
        let exp = Expectations::new();
        let pod = new_pod(&s, &template(&s), 0);
        c.execute(&exp, &s, "ns/web", &template(&s), &[Step::Create(Box::new(pod.clone()))]).await.expect("create");
        assert_eq!(calls(&c), ["create pod web-0"]);

        let mut dying = claim("data-web-0");
        dying.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).expect("ts")));
        let (c, mut rx) = control(Fake::default(), &[dying]);
        let err = c.execute(&exp, &s, "ns/web", &template(&s), &[Step::Create(Box::new(pod))]).await;
        assert!(err.is_err());
        assert!(calls(&c).is_empty(), "no pod on a claim that is going away");
        assert_eq!(
            events(&mut rx),
            [ev(
                WARNING,
                "FailedCreate",
                "create Pod web-0 in StatefulSet web failed error: pvc data-web-0 is being deleted"
            )]
        );
        assert!(exp.satisfied("ns/web"), "a creation that never happened is not expected");
    }

    #[tokio::test]
    async fn a_failed_pod_is_deleted_with_its_uid_then_recreated() {
        let s = set(retain());
        let (c, mut rx) = control(Fake::default(), &[claim("data-web-1")]);
        let exp = Expectations::new();
        let mut failed = new_pod(&s, &template(&s), 1);
        failed.metadata.uid = Some("old".into());
        let steps = [
            Step::Delete(Arc::new(failed), DeleteReason::Failed),
            Step::Create(Box::new(new_pod(&s, &template(&s), 1))),
        ];
        c.execute(&exp, &s, "ns/web", &template(&s), &steps).await.expect("recreate");
        assert_eq!(calls(&c), ["delete pod web-1 old", "create pod web-1"]);
        assert_eq!(
            events(&mut rx),
            [
                ev(WARNING, "RecreatingFailedPod", "StatefulSet ns/web is recreating failed Pod web-1"),
                ev(NORMAL, "SuccessfulDelete", "delete Pod web-1 in StatefulSet web successful"),
                ev(NORMAL, "SuccessfulCreate", "create Pod web-1 in StatefulSet web successful"),
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_step_stops_the_rest_and_lowers_their_expectations() {
        let s = set(retain());
        let claims = [claim("data-web-0"), claim("data-web-1")];
        let (c, mut rx) = control(Fake { fail: Some(("web-0", 500)), ..Default::default() }, &claims);
        let exp = Expectations::new();
        let steps = [
            Step::Create(Box::new(new_pod(&s, &template(&s), 0))),
            Step::Create(Box::new(new_pod(&s, &template(&s), 1))),
        ];
        assert!(c.execute(&exp, &s, "ns/web", &template(&s), &steps).await.is_err());
        assert_eq!(calls(&c), ["create pod web-0"]);
        assert_eq!(
            events(&mut rx),
            [ev(WARNING, "FailedCreate", "create Pod web-0 in StatefulSet web failed error: boom 500")]
        );
        assert!(exp.satisfied("ns/web"));

        // AlreadyExists (a lagging cache) is an error to retry, without an event.
        let (c, mut rx) = control(Fake { fail: Some(("web-0", 409)), ..Default::default() }, &claims);
        assert!(c.execute(&exp, &s, "ns/web", &template(&s), &steps[..1]).await.is_err());
        assert!(events(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn parallel_runs_pods_side_by_side_in_slow_start_batches() {
        let mut s = set(retain());
        s.spec.as_mut().expect("spec").pod_management_policy = Some("Parallel".into());
        let claims: Vec<_> = (0..4).map(|i| claim(&format!("data-web-{i}"))).collect();
        let (c, _) = control(Fake { fail: Some(("web-1", 500)), ..Default::default() }, &claims);
        let exp = Expectations::new();
        let steps: Vec<_> = (0..4).map(|i| Step::Create(Box::new(new_pod(&s, &template(&s), i)))).collect();
        assert!(c.execute(&exp, &s, "ns/web", &template(&s), &steps).await.is_err());
        let mut made = calls(&c);
        made.sort();
        assert_eq!(made, ["create pod web-0", "create pod web-1", "create pod web-2"], "batches of 1, then 2; stop");
        // web-0 and web-2 were created: two creations are expected, the failed and unrun are not.
        exp.creation_observed("ns/web");
        assert!(!exp.satisfied("ns/web"));
        exp.creation_observed("ns/web");
        assert!(exp.satisfied("ns/web"));
    }

    #[tokio::test]
    async fn claims_get_the_retention_refs_the_policy_asks_for() {
        let s = set(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}));
        let (c, _) = control(Fake::default(), &[claim("data-web-0"), claim("data-web-5")]);
        let exp = Expectations::new();
        let mut live = new_pod(&s, &template(&s), 0);
        live.metadata.uid = Some("p0".into());
        let mut gone = new_pod(&s, &template(&s), 5);
        gone.metadata.uid = Some("p5".into());
        let steps = [Step::Update(Arc::new(live)), Step::FixClaims(Arc::new(gone))];
        c.execute(&exp, &s, "ns/web", &template(&s), &steps).await.expect("fix");
        assert_eq!(
            calls(&c),
            ["update claim data-web-0 owners=StatefulSet/web", "update claim data-web-5 owners=Pod/web-5"],
            "in range: owned by the set; scaled away: owned by its pod"
        );
    }
}
