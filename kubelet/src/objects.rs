//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes, image pull secrets):
//! upstream's configmap and secret managers. [`fetch`] reads them through an [`ObjectSource`]
//! (the API in the kubelet, a map in tests) into a [`PodObjects`] snapshot that the pure env,
//! volume and image-credential code reads from.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume, VolumeProjection,
};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("getting {kind} {namespace}/{name}: {message}")]
    Get { kind: &'static str, namespace: String, name: String, message: String },
}

/// Reads ConfigMaps and Secrets; `Ok(None)` when the object does not exist.
#[async_trait]
pub trait ObjectSource: Send + Sync {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, ObjectError>;
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ObjectError>;
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError>;
}

/// The API server as an [`ObjectSource`].
pub struct ApiObjects {
    pub client: kube::Client,
}

async fn get_opt<K>(client: &kube::Client, kind: &'static str, ns: &str, name: &str) -> Result<Option<K>, ObjectError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.map_err(|e| ObjectError::Get {
        kind,
        namespace: ns.into(),
        name: name.into(),
        message: e.to_string(),
    })
}

#[async_trait]
impl ObjectSource for ApiObjects {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        get_opt(&self.client, "configmap", namespace, name).await
    }
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        get_opt(&self.client, "secret", namespace, name).await
    }
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ObjectError> {
        get_opt(&self.client, "persistentvolumeclaim", namespace, name).await
    }
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError> {
        let api: kube::Api<PersistentVolume> = kube::Api::all(self.client.clone());
        api.get_opt(name).await.map_err(|e| ObjectError::Get {
            kind: "persistentvolume",
            namespace: String::new(),
            name: name.into(),
            message: e.to_string(),
        })
    }
}

/// In-memory objects keyed by (namespace, name), for tests.
#[derive(Debug, Default)]
pub struct MapObjects {
    pub config_maps: std::sync::Mutex<HashMap<(String, String), ConfigMap>>,
    pub secrets: std::sync::Mutex<HashMap<(String, String), Secret>>,
    pub claims: std::sync::Mutex<HashMap<(String, String), PersistentVolumeClaim>>,
    pub volumes: std::sync::Mutex<HashMap<String, PersistentVolume>>,
}

impl MapObjects {
    pub fn add_config_map(&self, cm: ConfigMap) {
        let key = (cm.metadata.namespace.clone().unwrap_or_default(), cm.metadata.name.clone().unwrap_or_default());
        self.config_maps.lock().unwrap_or_else(|p| p.into_inner()).insert(key, cm);
    }
    pub fn add_secret(&self, s: Secret) {
        let key = (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default());
        self.secrets.lock().unwrap_or_else(|p| p.into_inner()).insert(key, s);
    }
    pub fn add_claim(&self, c: PersistentVolumeClaim) {
        let key = (c.metadata.namespace.clone().unwrap_or_default(), c.metadata.name.clone().unwrap_or_default());
        self.claims.lock().unwrap_or_else(|p| p.into_inner()).insert(key, c);
    }
    pub fn add_volume(&self, pv: PersistentVolume) {
        let key = pv.metadata.name.clone().unwrap_or_default();
        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).insert(key, pv);
    }
}

#[async_trait]
impl ObjectSource for MapObjects {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, ObjectError> {
        let m = self.config_maps.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(&(namespace.to_string(), name.to_string())).cloned())
    }
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, ObjectError> {
        let m = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(&(namespace.to_string(), name.to_string())).cloned())
    }
    async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, ObjectError> {
        let m = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.get(&(namespace.to_string(), name.to_string())).cloned())
    }
    async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, ObjectError> {
        Ok(self.volumes.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned())
    }
}

/// A snapshot of the objects one pod refers to; a name maps to `None` when it does not exist.
#[derive(Debug, Clone, Default)]
pub struct PodObjects {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Claims by name, with the volume they are bound to (when it exists).
    pub claims: HashMap<String, Option<(PersistentVolumeClaim, Option<PersistentVolume>)>>,
}

impl PodObjects {
    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).and_then(Option::as_ref)
    }
}

fn projections(v: &Volume) -> impl Iterator<Item = &VolumeProjection> {
    v.projected.iter().flat_map(|p| p.sources.iter().flatten())
}

/// The names of the ConfigMaps and Secrets the pod refers to.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else { return (cms, secrets) };
    for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        for e in c.env_from.iter().flatten() {
            cms.extend(e.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(e.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten() {
            let from = e.value_from.as_ref();
            cms.extend(from.and_then(|f| f.config_map_key_ref.as_ref()).map(|r| r.name.clone()));
            secrets.extend(from.and_then(|f| f.secret_key_ref.as_ref()).map(|r| r.name.clone()));
        }
    }
    for v in spec.volumes.iter().flatten() {
        cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
        for p in projections(v) {
            cms.extend(p.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(p.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    secrets.extend(spec.image_pull_secrets.iter().flatten().map(|r| r.name.clone()));
    cms.retain(|n| !n.is_empty());
    secrets.retain(|n| !n.is_empty());
    (cms, secrets)
}

/// Reads every object the pod refers to.
pub async fn fetch(src: &dyn ObjectSource, pod: &Pod) -> Result<PodObjects, ObjectError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced(pod);
    let mut out = PodObjects::default();
    for name in cms {
        let cm = src.config_map(ns, &name).await?;
        out.config_maps.insert(name, cm);
    }
    for name in secrets {
        let s = src.secret(ns, &name).await?;
        out.secrets.insert(name, s);
    }
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(claim) = v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()) else { continue };
        let entry = match src.persistent_volume_claim(ns, &claim).await? {
            None => None,
            Some(pvc) => {
                let bound = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
                let pv = match bound {
                    Some(name) => src.persistent_volume(&name).await?,
                    None => None,
                };
                Some((pvc, pv))
            }
        };
        out.claims.insert(claim, entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn fetch_reads_every_referenced_object_and_records_missing_ones() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [{"name": "a", "image": "x",
                    "envFrom": [{"configMapRef": {"name": "cm-env"}}, {"secretRef": {"name": "s-env"}}],
                    "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm-key", "key": "k"}}}]}],
                "volumes": [
                    {"name": "v1", "configMap": {"name": "cm-vol"}},
                    {"name": "v2", "secret": {"secretName": "s-vol"}},
                    {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}},
                ],
                "imagePullSecrets": [{"name": "regcred"}],
            },
        }))
        .expect("pod");
        let (cms, secrets) = referenced(&pod);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cm-env", "cm-key", "cm-proj", "cm-vol"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["regcred", "s-env", "s-proj", "s-vol"]);

        let src = MapObjects::default();
        src.add_config_map(
            serde_json::from_value(json!({"metadata": {"name": "cm-env", "namespace": "ns"}, "data": {"A": "1"}}))
                .expect("cm"),
        );
        src.add_config_map(
            serde_json::from_value(json!({"metadata": {"name": "cm-vol", "namespace": "other"}})).expect("cm"),
        );
        let objs = fetch(&src, &pod).await.expect("fetch");
        assert!(objs.config_map("cm-env").is_some());
        assert!(objs.config_map("cm-vol").is_none(), "another namespace's object is not the pod's");
        assert!(objs.config_maps.contains_key("cm-vol"));
    }
}
