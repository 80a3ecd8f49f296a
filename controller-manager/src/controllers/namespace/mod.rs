//! The namespace controller: a namespace being deleted (deletionTimestamp set, `kubernetes` in
//! spec.finalizers) has everything in it deleted — every namespaced kind discovery lists — then
//! the `kubernetes` finalizer removed through `/finalize`, after which the apiserver deletes it.
//! While content remains, status conditions say what is left, as upstream's do.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::discovery::{deletable, Resource};
use super::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Discovery(String),
}

pub const FINALIZER: &str = "kubernetes";

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let cancel = ctx.cancel.clone();
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { cancel.cancelled().await })
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(controller = "namespace", error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(controller = "namespace", error = %e, "will retry");
    Action::requeue(Duration::from_secs(2))
}

/// What deleting the content of `ns` left behind: (resource plural, instances).
async fn delete_content(
    client: &kube::Client,
    ns: &str,
    resources: &[Resource],
) -> Result<Vec<(String, usize)>, Error> {
    let mut remaining = Vec::new();
    for r in resources.iter().filter(|r| r.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.ar);
        let list = api.list(&ListParams::default()).await?;
        if list.items.is_empty() {
            continue;
        }
        for item in &list.items {
            if item.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = item.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        remaining.push((r.ar.plural.clone(), list.items.len()));
    }
    Ok(remaining)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let resources = deletable(&ctx.client).await.map_err(|e| Error::Discovery(e.to_string()))?;
    let remaining = delete_content(&ctx.client, &name, &resources).await?;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.is_empty() {
        let kinds: Vec<String> = remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Terminating", "conditions": [{
            "type": "NamespaceContentRemaining", "status": "True", "reason": "SomeResourcesRemain",
            "message": format!("Some resources are remaining: {}", kinds.join(", ")),
            "lastTransitionTime": now,
        }]}});
        let _ = api.patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status)).await;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Everything is gone: drop our finalizer; the apiserver then deletes the namespace.
    let mut body = serde_json::to_value(ns.as_ref()).map_err(|e| Error::Discovery(e.to_string()))?;
    body["spec"]["finalizers"] = json!(finalizers.iter().filter(|f| *f != FINALIZER).collect::<Vec<_>>());
    match api.replace_subresource("finalize", &name, &PostParams::default(), &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
            return Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(controller = "namespace", namespace = %name, "namespace finalized");
    Ok(Action::await_change())
}
