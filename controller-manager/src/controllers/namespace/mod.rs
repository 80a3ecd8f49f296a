//! The namespace controller: a namespace being deleted (deletionTimestamp set, `kubernetes` in
//! spec.finalizers) has everything in it deleted — every namespaced kind discovery lists — then
//! the `kubernetes` finalizer removed through `/finalize`, after which the apiserver deletes it.
//! While content remains, status conditions say what is left, as upstream's do.

use std::collections::BTreeMap;
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

/// What a pass over a namespace's content found still there.
#[derive(Debug, Default, PartialEq)]
struct Remaining {
    /// (`resource.group`, instances) as upstream names them: `configmaps.`, `deployments.apps`.
    content: BTreeMap<String, usize>,
    /// finalizer → instances that carry it.
    finalizers: BTreeMap<String, usize>,
}

impl Remaining {
    /// Counts one listing of a resource; returns the names to delete (those not already being
    /// deleted).
    fn add(&mut self, resource: &str, group: &str, items: &[DynamicObject]) -> Vec<String> {
        if items.is_empty() {
            return Vec::new();
        }
        *self.content.entry(format!("{resource}.{group}")).or_default() += items.len();
        for f in items.iter().flat_map(|i| i.metadata.finalizers.iter().flatten()) {
            *self.finalizers.entry(f.clone()).or_default() += 1;
        }
        items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .map(|i| i.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    /// The namespace's status while it terminates: upstream's `NamespaceContentRemaining` and
    /// `NamespaceFinalizersRemaining` conditions, with their reasons and messages.
    fn status(&self, now: &str) -> serde_json::Value {
        let list = |m: &BTreeMap<String, usize>, sep: &str| {
            m.iter().map(|(k, n)| format!("{k} {sep} {n} resource instances")).collect::<Vec<_>>().join(", ")
        };
        let mut conditions = vec![json!({
            "type": "NamespaceContentRemaining", "status": "True", "reason": "SomeResourcesRemain",
            "message": format!("Some resources are remaining: {}", list(&self.content, "has")),
            "lastTransitionTime": now,
        })];
        if !self.finalizers.is_empty() {
            conditions.push(json!({
                "type": "NamespaceFinalizersRemaining", "status": "True", "reason": "SomeFinalizersRemain",
                "message": format!("Some content in the namespace has finalizers remaining: {}", list(&self.finalizers, "in")),
                "lastTransitionTime": now,
            }));
        }
        json!({"status": {"phase": "Terminating", "conditions": conditions}})
    }
}

/// Whether the namespace is being deleted and still waits for this controller.
fn needs_cleanup(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        && ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

/// `spec.finalizers` without this controller's.
fn finalizers_after(ns: &Namespace) -> Vec<String> {
    let all = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    all.into_iter().filter(|f| f != FINALIZER).collect()
}

/// Deletes the content of `ns`; says what was still there.
async fn delete_content(client: &kube::Client, ns: &str, resources: &[Resource]) -> Result<Remaining, Error> {
    let mut remaining = Remaining::default();
    for r in resources.iter().filter(|r| r.namespaced) {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &r.ar);
        let list = api.list(&ListParams::default()).await?;
        for name in remaining.add(&r.ar.plural, &r.ar.group, &list.items) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(remaining)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !needs_cleanup(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let resources = deletable(&ctx.client).await.map_err(|e| Error::Discovery(e.to_string()))?;
    let remaining = delete_content(&ctx.client, &name, &resources).await?;
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    if !remaining.content.is_empty() {
        let status = remaining.status(&k8s_openapi::jiff::Timestamp::now().to_string());
        let _ = api.patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&status)).await;
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    // Everything is gone: drop our finalizer; the apiserver then deletes the namespace.
    let mut body = serde_json::to_value(ns.as_ref()).map_err(|e| Error::Discovery(e.to_string()))?;
    body["spec"]["finalizers"] = json!(finalizers_after(&ns));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(deleting: bool, finalizers: &[&str]) -> Namespace {
        let mut v = json!({"metadata": {"name": "team"}, "spec": {"finalizers": finalizers}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).expect("namespace")
    }

    fn item(name: &str, deleting: bool, finalizers: &[&str]) -> DynamicObject {
        let mut v =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "finalizers": finalizers}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn only_a_deleted_namespace_with_our_finalizer_is_cleaned_and_only_ours_is_dropped() {
        assert!(needs_cleanup(&ns(true, &["kubernetes", "example.com/x"])));
        assert!(!needs_cleanup(&ns(false, &["kubernetes"])), "not being deleted");
        assert!(!needs_cleanup(&ns(true, &["example.com/x"])), "already finalized by us");
        assert_eq!(finalizers_after(&ns(true, &["kubernetes", "example.com/x"])), ["example.com/x"]);
    }

    #[test]
    fn content_being_deleted_is_counted_but_not_deleted_again() {
        let mut r = Remaining::default();
        let names = r.add("configmaps", "", &[item("a", false, &[]), item("b", true, &["example.com/hold"])]);
        assert_eq!(names, ["a"]);
        assert!(r.add("deployments", "apps", &[]).is_empty());
        let names = r.add("deployments", "apps", &[item("web", false, &["example.com/hold"])]);
        assert_eq!(names, ["web"]);
        assert_eq!(r.content, BTreeMap::from([("configmaps.".to_string(), 2), ("deployments.apps".to_string(), 1)]));
        assert_eq!(r.finalizers, BTreeMap::from([("example.com/hold".to_string(), 2)]));
    }

    #[test]
    fn the_status_says_what_remains_as_upstream_does() {
        let mut r = Remaining::default();
        r.add("configmaps", "", &[item("a", false, &[])]);
        let st = r.status("2026-01-01T00:00:00Z");
        assert_eq!(st["status"]["phase"], "Terminating");
        let conds = st["status"]["conditions"].as_array().expect("conditions");
        assert_eq!(conds.len(), 1, "no finalizers, no NamespaceFinalizersRemaining");
        assert_eq!(conds[0]["reason"], "SomeResourcesRemain");
        assert_eq!(conds[0]["message"], "Some resources are remaining: configmaps. has 1 resource instances");
        r.add("deployments", "apps", &[item("web", true, &["example.com/hold"])]);
        let st = r.status("2026-01-01T00:00:00Z");
        let conds = st["status"]["conditions"].as_array().expect("conditions");
        assert_eq!(
            conds[0]["message"],
            "Some resources are remaining: configmaps. has 1 resource instances, deployments.apps has 1 resource instances"
        );
        assert_eq!(
            (&conds[1]["type"], &conds[1]["reason"]),
            (&json!("NamespaceFinalizersRemaining"), &json!("SomeFinalizersRemain"))
        );
        assert_eq!(
            conds[1]["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
    }
}
