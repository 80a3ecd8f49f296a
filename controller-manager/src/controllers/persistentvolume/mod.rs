//! The PersistentVolume binder, as upstream's `pkg/controller/volume/persistentvolume`
//! ("persistentvolume-binder"): binds claims to matching volumes (both sides, with upstream's
//! annotations), keeps the phases of both (PV Available/Bound/Released/Failed, PVC
//! Pending/Bound/Lost), gives claims without a class the default StorageClass (retroactively,
//! as 1.28+), hands claims of a class with a provisioner to that external provisioner
//! (waiting for the scheduler's `selected-node` under WaitForFirstConsumer), and reclaims
//! released volumes (Retain keeps them; Delete waits for the provisioner that made them).
//!
//! `matching.rs` and `decide.rs` are pure; this file turns decisions into writes.

pub mod decide;
pub mod matching;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};

use super::events::{reference, Recorder};
use super::informer::{key_of, Informer};
use super::workqueue::Queue;
use super::Context;
use decide::{ClaimDecision, ClaimInputs, Ev, VolumeDecision};

pub const NAME: &str = "persistentvolume-binder";
const COMPONENT: &str = "persistentvolume-controller";
const WORKERS: usize = 2;

/// Annotations and names the binder, the scheduler and provisioners share (upstream
/// `component-helpers/storage/volume`).
pub mod ann {
    pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
    pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
    pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
    pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
    pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
    pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
    pub const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
    pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
    pub const BETA_IS_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
    pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

const CLAIM: &str = "claim:";
const VOLUME: &str = "volume:";

struct Binder {
    client: kube::Client,
    pvs: Arc<Informer<PersistentVolume>>,
    pvcs: Arc<Informer<PersistentVolumeClaim>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<Queue>,
    recorder: Recorder,
    /// The last event per claim (reason, claim resourceVersion): a claim synced again for
    /// an unrelated volume change does not repeat it (upstream's recorder aggregates them).
    last_event: std::sync::Mutex<std::collections::HashMap<String, (&'static str, String)>>,
}

fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!("{CLAIM}{}", key_of(c))
}

fn volume_key(name: &str) -> String {
    format!("{VOLUME}{name}")
}

fn set_ann(m: &mut kube::api::ObjectMeta, key: &str, value: &str) {
    m.annotations.get_or_insert_with(BTreeMap::new).insert(key.into(), value.into());
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let b = Arc::new(Binder {
        client: ctx.client.clone(),
        pvs: ctx.informers.get::<PersistentVolume>(),
        pvcs: ctx.informers.get::<PersistentVolumeClaim>(),
        classes: ctx.informers.get::<StorageClass>(),
        nodes: ctx.informers.get::<Node>(),
        queue: Arc::new(Queue::new()),
        recorder: ctx.recorder(COMPONENT),
        last_event: Default::default(),
    });
    let weak = Arc::downgrade(&b);
    b.pvcs.add_handler(Arc::new(move |old: Option<&Arc<PersistentVolumeClaim>>, new| {
        let Some(b) = weak.upgrade() else { return };
        if let Some(c) = new.or(old) {
            b.queue.add(claim_key(c));
        }
        // A deleted claim releases its volume.
        if let (Some(c), None) = (old, new) {
            b.last_event.lock().unwrap_or_else(|p| p.into_inner()).remove(&claim_key(c));
            if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|n| !n.is_empty()) {
                b.queue.add(volume_key(v));
            }
            for v in b.pvs.list() {
                if v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| r.name == c.metadata.name && r.namespace == c.metadata.namespace)
                {
                    b.queue.add(volume_key(v.metadata.name.as_deref().unwrap_or_default()));
                }
            }
        }
    }));
    let weak = Arc::downgrade(&b);
    b.pvs.add_handler(Arc::new(move |old: Option<&Arc<PersistentVolume>>, new| {
        let Some(b) = weak.upgrade() else { return };
        let Some(v) = new.or(old) else { return };
        b.queue.add(volume_key(v.metadata.name.as_deref().unwrap_or_default()));
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) => b.queue.add(format!(
                "{CLAIM}{}/{}",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            )),
            // A free volume may be what a waiting claim needs (upstream waits for its 15 s resync).
            None => b.enqueue_unbound_claims(),
        }
    }));
    let weak = Arc::downgrade(&b);
    b.classes.add_handler(Arc::new(move |_: Option<&Arc<StorageClass>>, _: Option<&Arc<StorageClass>>| {
        if let Some(b) = weak.upgrade() {
            b.enqueue_unbound_claims();
        }
    }));
    b.pvs.wait_synced().await;
    b.pvcs.wait_synced().await;
    b.classes.wait_synced().await;
    b.nodes.wait_synced().await;
    let c = b.clone();
    super::run_workers(NAME, b.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Binder {
    fn enqueue_unbound_claims(&self) {
        for c in self.pvcs.list() {
            if !decide::has_ann(&c.metadata, ann::BIND_COMPLETED) {
                self.queue.add(claim_key(&c));
            }
        }
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        if let Some(k) = key.strip_prefix(CLAIM) {
            let Some(c) = self.pvcs.get_key(k) else { return Ok(None) };
            self.sync_claim(&c).await
        } else if let Some(name) = key.strip_prefix(VOLUME) {
            let Some(v) = self.pvs.get("", name) else { return Ok(None) };
            self.sync_volume(&v).await
        } else {
            Ok(None)
        }
    }

    fn event(&self, c: &PersistentVolumeClaim, ev: &Ev) {
        let rv = c.metadata.resource_version.clone().unwrap_or_default();
        let seen = (ev.reason, rv);
        let repeat = {
            let mut last = self.last_event.lock().unwrap_or_else(|p| p.into_inner());
            last.insert(claim_key(c), seen.clone()).is_some_and(|prev| prev == seen)
        };
        if !repeat {
            self.recorder.event(reference(c), ev.type_, ev.reason, ev.message.clone());
        }
    }

    async fn sync_claim(&self, c: &Arc<PersistentVolumeClaim>) -> Result<Option<Duration>, Error> {
        let classes = self.classes.list();
        let class_name = matching::claim_class(c).to_string();
        let class = self.classes.get("", &class_name);
        let default = decide::default_class(&classes).and_then(|d| d.metadata.name.clone());
        let node =
            c.metadata.annotations.as_ref().and_then(|a| a.get(ann::SELECTED_NODE)).and_then(|n| self.nodes.get("", n));
        let volumes = self.pvs.list();
        let decision = decide::decide_claim(&ClaimInputs {
            claim: c,
            volumes: &volumes,
            class: class.as_deref(),
            default_class: default.as_deref(),
            selected_node: node.as_deref(),
        });
        let ns = c.metadata.namespace.as_deref().unwrap_or_default();
        let name = c.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        match decision {
            ClaimDecision::SetDefaultClass(class) => {
                let mut o = (**c).clone();
                o.spec.get_or_insert_with(Default::default).storage_class_name = Some(class);
                tolerate_conflict(api.replace(name, &PostParams::default(), &o).await)?;
            }
            ClaimDecision::Bind(v) => self.bind(c, &v).await?,
            ClaimDecision::Provision { provisioner, event } => {
                let a = c.metadata.annotations.as_ref();
                let annotated = [ann::STORAGE_PROVISIONER, ann::BETA_STORAGE_PROVISIONER]
                    .iter()
                    .all(|k| a.and_then(|a| a.get(*k)) == Some(&provisioner));
                let c = if annotated {
                    c.clone()
                } else {
                    let mut o = (**c).clone();
                    set_ann(&mut o.metadata, ann::STORAGE_PROVISIONER, &provisioner);
                    set_ann(&mut o.metadata, ann::BETA_STORAGE_PROVISIONER, &provisioner);
                    match tolerate_conflict(api.replace(name, &PostParams::default(), &o).await)? {
                        Some(o) => Arc::new(o),
                        None => return Ok(None),
                    }
                };
                self.event(&c, &event);
                self.claim_phase(&c, "Pending").await?;
            }
            ClaimDecision::Pending(ev) => {
                if let Some(ev) = &ev {
                    self.event(c, ev);
                }
                self.claim_phase(c, "Pending").await?;
            }
            ClaimDecision::Lost(ev) => {
                if phase_of_claim(c) != "Lost" {
                    self.event(c, &ev);
                }
                self.claim_phase(c, "Lost").await?;
            }
        }
        Ok(None)
    }

    async fn claim_phase(&self, c: &PersistentVolumeClaim, phase: &str) -> Result<(), Error> {
        if phase_of_claim(c) == phase {
            return Ok(());
        }
        let mut o = c.clone();
        let st = o.status.get_or_insert_with(Default::default);
        st.phase = Some(phase.into());
        if phase == "Pending" {
            st.capacity = None;
            st.access_modes = None;
        }
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), c.metadata.namespace.as_deref().unwrap_or_default());
        tolerate_conflict(
            api.replace_status(c.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &o).await,
        )?;
        Ok(())
    }

    /// upstream `bind`: the volume's claimRef, the volume's phase, the claim's volumeName and
    /// annotations, the claim's status, each written only when it is not so already.
    async fn bind(&self, c: &PersistentVolumeClaim, v: &PersistentVolume) -> Result<(), Error> {
        let pv_name = v.metadata.name.clone().unwrap_or_default();
        let pv_api: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut v = v.clone();
        let ref_ok = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
            r.uid == c.metadata.uid && r.name == c.metadata.name && r.namespace == c.metadata.namespace
        });
        if !ref_ok {
            let by_controller = !matching::is_volume_bound_to_claim(&v, c);
            let spec = v.spec.get_or_insert_with(Default::default);
            spec.claim_ref = Some(claim_ref(c));
            if by_controller {
                set_ann(&mut v.metadata, ann::BOUND_BY_CONTROLLER, "yes");
            }
            match tolerate_conflict(pv_api.replace(&pv_name, &PostParams::default(), &v).await)? {
                Some(o) => v = o,
                None => return Ok(()),
            }
        }
        if v.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            let mut o = v.clone();
            o.status = Some(PersistentVolumeStatus { phase: Some("Bound".into()), ..Default::default() });
            tolerate_conflict(pv_api.replace_status(&pv_name, &PostParams::default(), &o).await)?;
        }
        let ns = c.metadata.namespace.as_deref().unwrap_or_default();
        let name = c.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let mut c = c.clone();
        let claim_done = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name.as_str())
            && decide::has_ann(&c.metadata, ann::BIND_COMPLETED);
        if !claim_done {
            let spec = c.spec.get_or_insert_with(Default::default);
            if spec.volume_name.as_deref().unwrap_or("").is_empty() {
                spec.volume_name = Some(pv_name.clone());
                set_ann(&mut c.metadata, ann::BOUND_BY_CONTROLLER, "yes");
            }
            set_ann(&mut c.metadata, ann::BIND_COMPLETED, "yes");
            match tolerate_conflict(api.replace(name, &PostParams::default(), &c).await)? {
                Some(o) => c = o,
                None => return Ok(()),
            }
        }
        let vs = v.spec.clone().unwrap_or_default();
        let want = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: vs.access_modes.clone(),
            capacity: vs.capacity.clone(),
            ..c.status.clone().unwrap_or_default()
        };
        if c.status.as_ref() != Some(&want) {
            let mut o = c.clone();
            o.status = Some(want);
            tolerate_conflict(api.replace_status(name, &PostParams::default(), &o).await)?;
        }
        Ok(())
    }

    async fn sync_volume(&self, v: &Arc<PersistentVolume>) -> Result<Option<Duration>, Error> {
        let r = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let (ns, name) = r
            .map(|r| (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))
            .unwrap_or_default();
        let mut claim = r.and_then(|_| self.pvcs.get(&ns, &name));
        let mut decision = decide::decide_volume(v, claim.as_deref());
        if decision == VolumeDecision::Release {
            // upstream: the cache may not have seen a claim just created; ask the apiserver.
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            claim = api.get_opt(&name).await?.map(Arc::new);
            decision = decide::decide_volume(v, claim.as_deref());
        }
        let pv_name = v.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match decision {
            VolumeDecision::Available => self.volume_phase(v, "Available", None).await?,
            VolumeDecision::Bound => self.volume_phase(v, "Bound", None).await?,
            VolumeDecision::SyncClaim => self.queue.add(format!("{CLAIM}{ns}/{name}")),
            VolumeDecision::Unbind { keep_name } => {
                let mut o = (**v).clone();
                let spec = o.spec.get_or_insert_with(Default::default);
                if keep_name {
                    if let Some(r) = spec.claim_ref.as_mut() {
                        r.uid = None;
                        r.resource_version = None;
                    }
                } else {
                    spec.claim_ref = None;
                }
                if let Some(a) = o.metadata.annotations.as_mut() {
                    a.remove(ann::BOUND_BY_CONTROLLER);
                }
                if let Some(o) = tolerate_conflict(api.replace(&pv_name, &PostParams::default(), &o).await)? {
                    self.volume_phase(&o, "Available", None).await?;
                }
            }
            VolumeDecision::Release => self.volume_phase(v, "Released", None).await?,
            VolumeDecision::Retain | VolumeDecision::WaitForProvisioner | VolumeDecision::Stay => {}
            VolumeDecision::Fail(ev) => {
                self.recorder.event(reference(v.as_ref()), ev.type_, ev.reason, ev.message.clone());
                self.volume_phase(v, "Failed", Some(ev.message)).await?;
            }
        }
        Ok(None)
    }

    async fn volume_phase(&self, v: &PersistentVolume, phase: &str, message: Option<String>) -> Result<(), Error> {
        if v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut o = v.clone();
        o.status = Some(PersistentVolumeStatus { phase: Some(phase.into()), message, ..Default::default() });
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        tolerate_conflict(
            api.replace_status(v.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &o).await,
        )?;
        Ok(())
    }
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// The reference a volume's `claimRef` holds.
pub fn claim_ref(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// A write that lost a race (409) or whose object is gone (404) is not an error: the informer
/// brings the newer object and the key is synced again. `None` then.
fn tolerate_conflict<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
