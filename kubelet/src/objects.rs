//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes, image pull secrets):
//! upstream's configmap and secret managers. [`fetch`] reads them through an [`ObjectSource`]
//! (the API in the kubelet, a map in tests) into a [`PodObjects`] snapshot that the pure env,
//! volume and image-credential code reads from.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccountTokenProjection, Volume,
    VolumeProjection,
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
    /// A service account token bound to the pod (TokenRequest).
    async fn service_account_token(&self, key: &TokenKey) -> Result<String, ObjectError>;
    /// The services of `namespace` (for service environment variables).
    async fn services(&self, namespace: &str) -> Result<Vec<k8s_openapi::api::core::v1::Service>, ObjectError>;
}

/// A pod-bound service account token, as a projected volume asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the API server's audiences.
    pub audience: String,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

/// upstream's default `expirationSeconds` of a projected token.
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;

/// The token request of a projected `serviceAccountToken` source of `pod`.
pub fn token_key(pod: &Pod, src: &ServiceAccountTokenProjection) -> TokenKey {
    TokenKey {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        audience: src.audience.clone().unwrap_or_default(),
        expiration_seconds: src.expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// The API server as an [`ObjectSource`]. Tokens are cached and renewed after 80 % of their
/// lifetime, as upstream's token manager does.
pub struct ApiObjects {
    client: kube::Client,
    tokens: std::sync::Mutex<HashMap<TokenKey, (String, std::time::Instant)>>,
}

impl ApiObjects {
    pub fn new(client: kube::Client) -> Self {
        ApiObjects { client, tokens: Default::default() }
    }
}

fn token_fresh(key: &TokenKey, at: std::time::Instant) -> bool {
    let ttl = std::time::Duration::from_secs(key.expiration_seconds.max(0) as u64);
    at.elapsed() < ttl.mul_f64(0.8)
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
    async fn services(&self, namespace: &str) -> Result<Vec<k8s_openapi::api::core::v1::Service>, ObjectError> {
        let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(self.client.clone(), namespace);
        api.list(&Default::default()).await.map(|l| l.items).map_err(|e| ObjectError::Get {
            kind: "services",
            namespace: namespace.into(),
            name: String::new(),
            message: e.to_string(),
        })
    }
    async fn service_account_token(&self, key: &TokenKey) -> Result<String, ObjectError> {
        if let Some((token, at)) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            if token_fresh(key, *at) {
                return Ok(token.clone());
            }
        }
        let api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), &key.namespace);
        let mut spec = serde_json::json!({
            "expirationSeconds": key.expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": key.pod_name, "uid": key.pod_uid},
        });
        if !key.audience.is_empty() {
            spec["audiences"] = serde_json::json!([key.audience]);
        }
        let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let err = |message: String| ObjectError::Get {
            kind: "serviceaccount token",
            namespace: key.namespace.clone(),
            name: key.service_account.clone(),
            message,
        };
        let tr: serde_json::Value = api
            .create_subresource("token", &key.service_account, &Default::default(), &body)
            .await
            .map_err(|e| err(e.to_string()))?;
        let token = tr["status"]["token"].as_str().ok_or_else(|| err("no token in the response".into()))?.to_string();
        let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|k, (_, at)| token_fresh(k, *at));
        cache.insert(key.clone(), (token.clone(), std::time::Instant::now()));
        Ok(token)
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
    pub services: std::sync::Mutex<Vec<k8s_openapi::api::core::v1::Service>>,
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
    async fn services(&self, namespace: &str) -> Result<Vec<k8s_openapi::api::core::v1::Service>, ObjectError> {
        let m = self.services.lock().unwrap_or_else(|p| p.into_inner());
        Ok(m.iter().filter(|s| s.metadata.namespace.as_deref() == Some(namespace)).cloned().collect())
    }
    async fn service_account_token(&self, key: &TokenKey) -> Result<String, ObjectError> {
        Ok(format!("token:{}:{}:{}", key.service_account, key.pod_name, key.audience))
    }
}

/// A snapshot of the objects one pod refers to; a name maps to `None` when it does not exist.
#[derive(Debug, Clone, Default)]
pub struct PodObjects {
    pub config_maps: HashMap<String, Option<ConfigMap>>,
    pub secrets: HashMap<String, Option<Secret>>,
    /// Claims by name, with the volume they are bound to (when it exists).
    pub claims: HashMap<String, Option<(PersistentVolumeClaim, Option<PersistentVolume>)>>,
    /// Projected service account tokens, or why there is none.
    pub tokens: HashMap<TokenKey, Result<String, String>>,
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
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        for p in projections(v) {
            if let Some(t) = &p.service_account_token {
                let key = token_key(pod, t);
                let token = src.service_account_token(&key).await.map_err(|e| e.to_string());
                out.tokens.insert(key, token);
            }
        }
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
