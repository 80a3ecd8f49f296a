//! Everything the scheduler writes to the apiserver, behind one narrow trait: bindings,
//! events, the PodScheduled condition with `nominatedNodeName`, and preemption's deletes.
//! `KubeWriter` is the real one; tests inject a recording fake.

use k8s_openapi::api::core::v1::{
    Binding, Event, EventSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{verb} {what}: {source}")]
    Api {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    /// The apiserver's HTTP status, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            WriteError::Api { source: kube::Error::Api(s), .. } => Some(s.code),
            _ => None,
        }
    }
}

/// A pod as the writes name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One event about a pod (core/v1, as `kubectl describe` lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: PodRef,
    /// Normal or Warning.
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

#[async_trait::async_trait]
pub trait ApiWriter: Send + Sync + 'static {
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<(), WriteError>;
    async fn event(&self, ev: &PodEvent) -> Result<(), WriteError>;
    /// Sets `status.conditions[PodScheduled]` to False/Unschedulable with `message`, and
    /// `status.nominatedNodeName` when given.
    async fn set_unschedulable(&self, pod: &PodRef, message: &str, nominated: Option<&str>) -> Result<(), WriteError>;
    async fn delete_pod(&self, pod: &PodRef) -> Result<(), WriteError>;
    /// VolumeBinding's PreBind: points volume `pv`'s `claimRef` at `claim` (upstream's
    /// binder marks it `pv.kubernetes.io/bound-by-controller`).
    async fn bind_volume(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), WriteError>;
    /// VolumeBinding's PreBind: `volume.kubernetes.io/selected-node` on a claim to provision.
    async fn select_node(&self, claim: &PersistentVolumeClaim, node: &str) -> Result<(), WriteError>;
}

pub struct KubeWriter {
    pub client: kube::Client,
}

fn api_err(verb: &'static str, what: &PodRef) -> impl FnOnce(kube::Error) -> WriteError {
    let what = format!("{}/{}", what.namespace, what.name);
    move |source| WriteError::Api { verb, what, source }
}

#[async_trait::async_trait]
impl ApiWriter for KubeWriter {
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<(), WriteError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            target: ObjectReference { kind: Some("Node".into()), name: Some(node.into()), ..Default::default() },
        };
        api.create_subresource::<Binding, serde_json::Value>("binding", &pod.name, &PostParams::default(), &binding)
            .await
            .map_err(api_err("bind", pod))?;
        Ok(())
    }

    async fn event(&self, ev: &PodEvent) -> Result<(), WriteError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ev.pod.namespace);
        let now = k8s_openapi::jiff::Timestamp::now();
        let e = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", ev.pod.name, now.as_nanosecond())),
                namespace: Some(ev.pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(ev.pod.name.clone()),
                namespace: Some(ev.pod.namespace.clone()),
                uid: Some(ev.pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(ev.reason.into()),
            message: Some(ev.message.clone()),
            type_: Some(ev.type_.into()),
            action: Some(ev.action.into()),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            reporting_component: Some(crate::SCHEDULER_NAME.into()),
            reporting_instance: Some(crate::SCHEDULER_NAME.into()),
            source: Some(EventSource { component: Some(crate::SCHEDULER_NAME.into()), host: None }),
            ..Default::default()
        };
        api.create(&PostParams::default(), &e).await.map_err(api_err("create event for", &ev.pod))?;
        Ok(())
    }

    async fn set_unschedulable(&self, pod: &PodRef, message: &str, nominated: Option<&str>) -> Result<(), WriteError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut status = serde_json::json!({
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": now,
            }]
        });
        if let Some(n) = nominated {
            status["nominatedNodeName"] = n.into();
        }
        let patch = serde_json::json!({"status": status});
        api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(api_err("patch status of", pod))?;
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef) -> Result<(), WriteError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(pod.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        api.delete(&pod.name, &dp).await.map_err(api_err("delete", pod))?;
        Ok(())
    }

    async fn bind_volume(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), WriteError> {
        use crate::plugins::volume_binding::ANN_BOUND_BY_CONTROLLER;
        let err = |verb| move |source| WriteError::Api { verb, what: format!("persistentvolume {pv}"), source };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let mut v = api.get(pv).await.map_err(err("get"))?;
        let spec = v.spec.get_or_insert_with(Default::default);
        if let Some(r) = &spec.claim_ref {
            if r.uid == claim.metadata.uid {
                return Ok(());
            }
            let taken = kube::core::Status::failure("volume already bound to a different claim", "Conflict");
            return Err(err("bind")(kube::Error::Api(taken.with_code(409).boxed())));
        }
        spec.claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            ..Default::default()
        });
        v.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        api.replace(pv, &PostParams::default(), &v).await.map_err(err("update"))?;
        Ok(())
    }

    async fn select_node(&self, claim: &PersistentVolumeClaim, node: &str) -> Result<(), WriteError> {
        use crate::plugins::volume_binding::ANN_SELECTED_NODE;
        let ns = claim.metadata.namespace.as_deref().unwrap_or_default();
        let name = claim.metadata.name.as_deref().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let patch = serde_json::json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.map_err(|source| WriteError::Api {
            verb: "annotate",
            what: format!("persistentvolumeclaim {ns}/{name}"),
            source,
        })?;
        Ok(())
    }
}

/// A writer that records what it was asked to do (tests), failing binds on request.
#[derive(Default)]
pub struct RecordingWriter {
    pub binds: std::sync::Mutex<Vec<(PodRef, String)>>,
    pub events: std::sync::Mutex<Vec<PodEvent>>,
    pub unschedulable: std::sync::Mutex<Vec<(PodRef, String, Option<String>)>>,
    pub deleted: std::sync::Mutex<Vec<PodRef>>,
    /// Binds fail while this is above zero (each failure counts it down).
    pub fail_binds: std::sync::atomic::AtomicUsize,
    /// (volume, claim name) for every `bind_volume`.
    pub volume_binds: std::sync::Mutex<Vec<(String, String)>>,
    /// (claim name, node) for every `select_node`.
    pub selected_nodes: std::sync::Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl ApiWriter for RecordingWriter {
    async fn bind(&self, pod: &PodRef, node: &str) -> Result<(), WriteError> {
        use std::sync::atomic::Ordering;
        if self.fail_binds.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(WriteError::Api {
                verb: "bind",
                what: pod.name.clone(),
                source: kube::Error::Api(
                    kube::core::Status::failure("injected failure", "InternalError").with_code(500).boxed(),
                ),
            });
        }
        self.binds.lock().expect("not poisoned").push((pod.clone(), node.to_string()));
        Ok(())
    }
    async fn event(&self, ev: &PodEvent) -> Result<(), WriteError> {
        self.events.lock().expect("not poisoned").push(ev.clone());
        Ok(())
    }
    async fn set_unschedulable(&self, pod: &PodRef, message: &str, nominated: Option<&str>) -> Result<(), WriteError> {
        self.unschedulable.lock().expect("not poisoned").push((
            pod.clone(),
            message.into(),
            nominated.map(str::to_string),
        ));
        Ok(())
    }
    async fn delete_pod(&self, pod: &PodRef) -> Result<(), WriteError> {
        self.deleted.lock().expect("not poisoned").push(pod.clone());
        Ok(())
    }
    async fn bind_volume(&self, pv: &str, claim: &PersistentVolumeClaim) -> Result<(), WriteError> {
        let c = claim.metadata.name.clone().unwrap_or_default();
        self.volume_binds.lock().expect("not poisoned").push((pv.to_string(), c));
        Ok(())
    }
    async fn select_node(&self, claim: &PersistentVolumeClaim, node: &str) -> Result<(), WriteError> {
        let c = claim.metadata.name.clone().unwrap_or_default();
        self.selected_nodes.lock().expect("not poisoned").push((c, node.to_string()));
        Ok(())
    }
}
