//! The REST registry: one `Kind` per served resource (its table entry, its typed round trip
//! and its strategy) and the generic `store` that runs every request through the same hook
//! order. Per-kind behaviour lives only in the strategies under `registry/<group>/`.

pub mod apps;
pub mod batch;
pub mod core;
pub mod defaults;
pub mod generic;
pub mod options;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;

use apimachinery::resources::{ResourceInfo, RESOURCES};
use apimachinery::status::ApiError;
use apimachinery::validation::{FieldErrors, NameValidator};
use futures::future::BoxFuture;
use serde_json::Value;

/// Per-kind behaviour. Every method has the upstream default; strategies override the few
/// that differ for their kind.
pub trait Strategy: Send + Sync {
    /// Whether `status` is a subresource: the main resource then ignores status changes and
    /// `/status` ignores everything but status.
    fn status_subresource(&self) -> bool {
        false
    }
    /// Whether `metadata.generation` is bumped on spec changes (kinds with a spec).
    fn tracks_generation(&self) -> bool {
        false
    }
    fn name_validator(&self) -> NameValidator {
        NameValidator::Dns1123Subdomain
    }
    /// Fills defaulted fields (after the typed round trip).
    fn default(&self, _obj: &mut Value) {}
    /// Before validation on create.
    fn prepare_for_create(&self, _obj: &mut Value) {}
    /// Before validation on update; `old` is the stored object.
    fn prepare_for_update(&self, _new: &mut Value, _old: &Value) {}
    fn validate(&self, _obj: &Value) -> FieldErrors {
        Vec::new()
    }
    fn validate_update(&self, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(new)
    }
    /// Field-selector fields beyond metadata.name/namespace, with their value in `obj`.
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }
    /// The grace period a delete without one gets, if deletion of this kind is graceful.
    fn graceful_deletion(&self, _obj: &Value) -> Option<i64> {
        None
    }
    /// Allocations (IPs, ports) the write needs, as keys created and deleted in the same
    /// transaction as the object. `old` is None on create.
    fn allocate<'a>(
        &'a self,
        _new: &'a mut Value,
        _old: Option<&'a Value>,
    ) -> BoxFuture<'a, Result<SideEffects, ApiError>> {
        Box::pin(async { Ok(SideEffects::default()) })
    }
    /// The object an update of subresource `sub` stores: by default `/status` takes only the
    /// status from `new` and everything else from `old`.
    fn subresource_update(&self, sub: &str, new: &Value, old: &Value) -> Option<Value> {
        (sub == "status").then(|| {
            let mut out = old.clone();
            match new.get("status") {
                Some(st) => out["status"] = st.clone(),
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            out
        })
    }
    /// Keys to delete with the object.
    fn release(&self, _obj: &Value) -> Vec<String> {
        Vec::new()
    }
    /// Whether deletion must wait for something besides `metadata.finalizers` (a namespace's
    /// `spec.finalizers`); the strategy marks the object as terminating when it does.
    fn deletion_blocked(&self, _obj: &mut Value) -> bool {
        false
    }
}

/// Keys written or removed atomically with an object.
#[derive(Debug, Default)]
pub struct SideEffects {
    pub creates: Vec<(String, Vec<u8>)>,
    pub deletes: Vec<String>,
}

/// Settings some strategies need.
#[derive(Clone)]
pub struct RegistryConfig {
    pub etcd: Option<crate::storage::Etcd>,
    pub service_cidr: core::services::Cidr,
    pub node_ports: (u16, u16),
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// Decodes into the typed struct and encodes back, which prunes unknown fields and gives
/// the canonical shape.
pub type RoundTrip = fn(&Value) -> Result<Value, String>;

fn round_trip<K: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    // From a borrowed value: the caller keeps the original to find unknown fields in it.
    let typed = K::deserialize(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

pub struct Kind {
    pub info: &'static ResourceInfo,
    pub round_trip: RoundTrip,
    pub strategy: Box<dyn Strategy>,
}

/// Every served kind, keyed by (group, plural).
pub struct Registry {
    /// group → plural → kind; nested so a lookup by borrowed strings hashes instead of scanning
    /// (it runs on every request).
    kinds: HashMap<&'static str, HashMap<&'static str, Arc<Kind>>>,
}

impl Registry {
    pub fn new(cfg: &RegistryConfig) -> Self {
        use k8s_openapi::api::{
            apps::v1 as appsv1, batch::v1 as batchv1, coordination::v1 as coordination, core::v1 as corev1,
            discovery::v1 as discovery, events::v1 as events, networking::v1 as networking, policy::v1 as policy,
            storage::v1 as storage,
        };
        let mut kinds = HashMap::new();
        for info in RESOURCES {
            let (rt, strategy): (RoundTrip, Box<dyn Strategy>) = match (info.group, info.plural) {
                ("", "bindings") => continue,
                ("", "configmaps") => (round_trip::<corev1::ConfigMap>, Box::new(generic::Plain)),
                ("", "endpoints") => (round_trip::<corev1::Endpoints>, Box::new(generic::Plain)),
                ("", "events") => (round_trip::<corev1::Event>, Box::new(core::events::EventStrategy)),
                ("", "limitranges") => (round_trip::<corev1::LimitRange>, Box::new(generic::Plain)),
                ("", "namespaces") => (round_trip::<corev1::Namespace>, Box::new(core::namespaces::NamespaceStrategy)),
                ("", "nodes") => (round_trip::<corev1::Node>, Box::new(core::nodes::NodeStrategy)),
                ("", "persistentvolumeclaims") => {
                    (round_trip::<corev1::PersistentVolumeClaim>, Box::new(core::pvcs::PvcStrategy))
                }
                ("", "persistentvolumes") => (round_trip::<corev1::PersistentVolume>, Box::new(generic::WithStatus)),
                ("", "pods") => (round_trip::<corev1::Pod>, Box::new(core::pods::PodStrategy)),
                ("", "podtemplates") => (round_trip::<corev1::PodTemplate>, Box::new(generic::Plain)),
                ("", "replicationcontrollers") => {
                    (round_trip::<corev1::ReplicationController>, Box::new(generic::SpecAndStatus))
                }
                ("", "resourcequotas") => (round_trip::<corev1::ResourceQuota>, Box::new(generic::WithStatus)),
                ("", "secrets") => (round_trip::<corev1::Secret>, Box::new(core::secrets::SecretStrategy)),
                ("", "serviceaccounts") => (round_trip::<corev1::ServiceAccount>, Box::new(generic::Plain)),
                ("", "services") => (
                    round_trip::<corev1::Service>,
                    Box::new(core::services::ServiceStrategy {
                        etcd: cfg.etcd.clone(),
                        cidr: cfg.service_cidr,
                        node_ports: cfg.node_ports,
                    }),
                ),
                ("apps", "controllerrevisions") => (round_trip::<appsv1::ControllerRevision>, Box::new(generic::Plain)),
                ("apps", "daemonsets") => (round_trip::<appsv1::DaemonSet>, Box::new(apps::DaemonSetStrategy)),
                ("apps", "deployments") => (round_trip::<appsv1::Deployment>, Box::new(apps::DeploymentStrategy)),
                ("apps", "replicasets") => (round_trip::<appsv1::ReplicaSet>, Box::new(apps::ReplicaSetStrategy)),
                ("apps", "statefulsets") => (
                    round_trip::<appsv1::StatefulSet>,
                    Box::new(apps::StatefulSetStrategy {
                        max_unavailable: cfg
                            .feature_gates
                            .enabled(component_base::featuregate::MAX_UNAVAILABLE_STATEFUL_SET),
                    }),
                ),
                ("batch", "cronjobs") => (round_trip::<batchv1::CronJob>, Box::new(batch::CronJobStrategy)),
                ("batch", "jobs") => (round_trip::<batchv1::Job>, Box::new(batch::JobStrategy)),
                ("coordination.k8s.io", "leases") => (round_trip::<coordination::Lease>, Box::new(generic::Plain)),
                ("discovery.k8s.io", "endpointslices") => {
                    (round_trip::<discovery::EndpointSlice>, Box::new(generic::Plain))
                }
                ("events.k8s.io", "events") => (round_trip::<events::Event>, Box::new(generic::Plain)),
                ("networking.k8s.io", "ingressclasses") => {
                    (round_trip::<networking::IngressClass>, Box::new(generic::Plain))
                }
                ("networking.k8s.io", "ingresses") => {
                    (round_trip::<networking::Ingress>, Box::new(generic::SpecAndStatus))
                }
                ("policy", "poddisruptionbudgets") => {
                    (round_trip::<policy::PodDisruptionBudget>, Box::new(generic::SpecAndStatus))
                }
                ("storage.k8s.io", "storageclasses") => (round_trip::<storage::StorageClass>, Box::new(generic::Plain)),
                (g, p) => panic!("resource {p}.{g} is in the table but has no registry entry"),
            };
            kinds
                .entry(info.group)
                .or_insert_with(HashMap::new)
                .insert(info.plural, Arc::new(Kind { info, round_trip: rt, strategy }));
        }
        Self { kinds }
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<Kind>> {
        self.kinds.get(group)?.get(plural).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Kind>> {
        self.kinds.values().flat_map(HashMap::values)
    }
}

/// A random (version 4) UUID from the thread's CSPRNG; `Uuid::new_v4` asks the kernel for
/// each one, two system calls on every create (its uid and the request's audit ID).
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Reads a string at a dotted path.
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = obj;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// The error for a body that failed the typed decode.
pub fn decode_error(kind: &str, msg: &str) -> ApiError {
    ApiError::bad_request(format!("error decoding {kind}: {msg}"))
}
