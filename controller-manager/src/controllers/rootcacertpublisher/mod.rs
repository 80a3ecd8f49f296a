//! The root CA publisher, as upstream's `pkg/controller/certificates/rootcacertpublisher`: a
//! `kube-root-ca.crt` ConfigMap in every active namespace holding the cluster CA bundle
//! (`--root-ca-file`, else the CA the controller-manager's kubeconfig trusts), put back when
//! edited or deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};

use super::informer::{split_key, Informer};
use super::workqueue::Queue;
use super::Context;

pub const NAME: &str = "root-ca-cert-publisher";
pub const CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The ConfigMap a namespace should have, or `None` when the current one is right.
pub fn desired(ca: &str, current: Option<&ConfigMap>) -> Option<ConfigMap> {
    let data: BTreeMap<String, String> = [("ca.crt".to_string(), ca.to_string())].into();
    let annotations: BTreeMap<String, String> =
        [("kubernetes.io/description".to_string(), DESCRIPTION.to_string())].into();
    if let Some(cur) = current {
        let cur_ann = cur.metadata.annotations.clone().unwrap_or_default();
        if cur.data.as_ref() == Some(&data)
            && cur_ann.get("kubernetes.io/description") == Some(&DESCRIPTION.to_string())
        {
            return None;
        }
    }
    let mut merged = current.and_then(|c| c.metadata.annotations.clone()).unwrap_or_default();
    merged.extend(annotations);
    Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            annotations: Some(merged),
            resource_version: current.and_then(|c| c.metadata.resource_version.clone()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let Some(ca) = ctx.root_ca.clone() else {
        anyhow::bail!("no root CA: pass --root-ca-file or a kubeconfig with certificate-authority data");
    };
    let namespaces: Arc<Informer<Namespace>> = ctx.informers.get();
    let configmaps: Arc<Informer<ConfigMap>> = ctx.informers.get();
    let queue = Arc::new(Queue::new());
    let q = Arc::downgrade(&queue);
    namespaces.add_handler(Arc::new(move |_old: Option<&Arc<Namespace>>, new: Option<&Arc<Namespace>>| {
        if let (Some(q), Some(ns)) = (q.upgrade(), new) {
            q.add(ns.metadata.name.clone().unwrap_or_default());
        }
    }));
    let q = Arc::downgrade(&queue);
    configmaps.add_handler(Arc::new(move |old: Option<&Arc<ConfigMap>>, new: Option<&Arc<ConfigMap>>| {
        let (Some(q), Some(cm)) = (q.upgrade(), new.or(old)) else { return };
        if cm.metadata.name.as_deref() == Some(CONFIGMAP) {
            q.add(cm.metadata.namespace.clone().unwrap_or_default());
        }
    }));
    namespaces.wait_synced().await;
    configmaps.wait_synced().await;
    let client = ctx.client.clone();
    super::run_workers(NAME, queue, 2, &ctx, move |key| {
        let (client, namespaces, configmaps, ca) = (client.clone(), namespaces.clone(), configmaps.clone(), ca.clone());
        async move {
            let (_, name) = split_key(&key);
            let Some(ns) = namespaces.get("", name) else { return Ok::<Option<Duration>, kube::Error>(None) };
            if ns.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let current = configmaps.get(name, CONFIGMAP);
            let Some(want) = desired(&ca, current.as_deref()) else { return Ok(None) };
            let api: Api<ConfigMap> = Api::namespaced(client, name);
            let r = match current {
                Some(_) => api.replace(CONFIGMAP, &PostParams::default(), &want).await.map(|_| ()),
                None => api.create(&PostParams::default(), &want).await.map(|_| ()),
            };
            match r {
                Ok(()) => Ok(None),
                Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 409) => Ok(None),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_carries_the_bundle_and_upstreams_description() {
        let cm = desired("PEM", None).expect("created");
        assert_eq!(cm.data.as_ref().and_then(|d| d.get("ca.crt")).map(String::as_str), Some("PEM"));
        assert!(cm.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("kubernetes.io/description")));
        assert!(desired("PEM", Some(&cm)).is_none(), "nothing to do when it is right");
        assert!(desired("NEW", Some(&cm)).is_some(), "a rotated CA is written");
    }
}
