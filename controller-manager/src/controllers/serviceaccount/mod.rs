//! The ServiceAccount controller, as upstream's `pkg/controller/serviceaccount`: every active
//! namespace has a `default` ServiceAccount (re-created if deleted).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use super::informer::{split_key, Informer};
use super::workqueue::Queue;
use super::Context;

pub const NAME: &str = "serviceaccount";
pub const DEFAULT: &str = "default";

/// upstream: a namespace being deleted gets nothing new.
pub fn wants_default(ns: &Namespace, existing: Option<&ServiceAccount>) -> bool {
    let active = ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    active && existing.is_none()
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let namespaces: Arc<Informer<Namespace>> = ctx.informers.get();
    let accounts: Arc<Informer<ServiceAccount>> = ctx.informers.get();
    let queue = Arc::new(Queue::new());
    let q = Arc::downgrade(&queue);
    namespaces.add_handler(Arc::new(move |_old: Option<&Arc<Namespace>>, new: Option<&Arc<Namespace>>| {
        if let (Some(q), Some(ns)) = (q.upgrade(), new) {
            q.add(ns.metadata.name.clone().unwrap_or_default());
        }
    }));
    let q = Arc::downgrade(&queue);
    accounts.add_handler(Arc::new(move |old: Option<&Arc<ServiceAccount>>, new: Option<&Arc<ServiceAccount>>| {
        if let (Some(q), Some(sa), None) = (q.upgrade(), old, new) {
            if sa.metadata.name.as_deref() == Some(DEFAULT) {
                q.add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        }
    }));
    namespaces.wait_synced().await;
    accounts.wait_synced().await;
    let client = ctx.client.clone();
    super::run_workers(NAME, queue, 2, &ctx, move |key| {
        let (client, namespaces, accounts) = (client.clone(), namespaces.clone(), accounts.clone());
        async move {
            let (_, name) = split_key(&key);
            let Some(ns) = namespaces.get("", name) else { return Ok::<Option<Duration>, kube::Error>(None) };
            if !wants_default(&ns, accounts.get(name, DEFAULT).as_deref()) {
                return Ok(None);
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta { name: Some(DEFAULT.into()), namespace: Some(name.into()), ..Default::default() },
                ..Default::default()
            };
            match Api::<ServiceAccount>::namespaced(client, name).create(&PostParams::default(), &sa).await {
                Ok(_) => Ok(None),
                // Already there (the informer lags), or the namespace started terminating.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(None),
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
    use k8s_openapi::api::core::v1::NamespaceStatus;

    #[test]
    fn only_active_namespaces_without_one_get_a_default_account() {
        let active = Namespace::default();
        assert!(wants_default(&active, None));
        assert!(!wants_default(&active, Some(&ServiceAccount::default())));
        let terminating = Namespace {
            status: Some(NamespaceStatus { phase: Some("Terminating".into()), ..Default::default() }),
            ..Default::default()
        };
        assert!(!wants_default(&terminating, None));
    }
}
