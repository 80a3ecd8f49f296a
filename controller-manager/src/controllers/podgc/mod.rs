//! Pod garbage collection, as upstream's `pkg/controller/podgc`, every `--pod-gc-period`
//! (upstream's fixed 20 s):
//! - terminated pods beyond `--terminated-pod-gc-threshold` are deleted, oldest first;
//! - pods bound to a node that no longer exists are deleted (orphaned);
//! - pods stuck terminating on a node tainted unreachable/out-of-service are force-deleted
//!   (their kubelet will never confirm).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};
use kube::Resource;

use super::informer::{key_of, Informer};
use super::nodelifecycle::UNREACHABLE;
use super::owner::{is_terminated, PodView};
use super::Context;

pub const NAME: &str = "podgc";
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// What to delete: (pod key, force).
pub fn plan<P: PodView + Resource>(pods: &[Arc<P>], nodes: &[Arc<Node>], threshold: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    if threshold > 0 {
        let mut terminated: Vec<&Arc<P>> = pods.iter().filter(|p| is_terminated(p.as_ref())).collect();
        if terminated.len() > threshold {
            terminated.sort_by_key(|p| p.pod_meta().creation_timestamp.as_ref().map(|t| t.0));
            for p in terminated.iter().take(terminated.len() - threshold) {
                out.push((key_of(p.as_ref()), false));
            }
        }
    }
    let existing: HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    let gone_node: HashSet<&str> = nodes
        .iter()
        .filter(|n| {
            n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| {
                t.iter().any(|t| (t.key == UNREACHABLE || t.key == OUT_OF_SERVICE) && t.effect == "NoExecute")
            })
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for p in pods {
        let Some(node) = p.node_name() else { continue };
        let key = key_of(p.as_ref());
        if out.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let orphaned = !existing.contains(node);
        let stuck = p.pod_meta().deletion_timestamp.is_some() && gone_node.contains(node);
        if orphaned || stuck {
            out.push((key, true));
        }
    }
    out
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let pods: Arc<Informer<Pod>> = ctx.informers.get();
    let nodes: Arc<Informer<Node>> = ctx.informers.get();
    pods.wait_synced().await;
    nodes.wait_synced().await;
    let mut tick = tokio::time::interval(ctx.opts.pod_gc_period);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        // The cached pods carry every fact the plan reads, so a pass decodes no pod.
        for (key, force) in plan(&pods.list_cached(), &nodes.list(), ctx.opts.terminated_pod_gc_threshold) {
            let (ns, name) = super::informer::split_key(&key);
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            let dp = if force {
                DeleteParams { grace_period_seconds: Some(0), ..Default::default() }
            } else {
                DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => tracing::info!(controller = NAME, namespace = ns, name, force, "deleted pod"),
                Err(e) => tracing::debug!(controller = NAME, namespace = ns, name, error = %e, "pod not collected"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, created: &str, deleting: bool) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "namespace": "d", "creationTimestamp": created},
                           "spec": {"nodeName": node, "containers": []}, "status": {"phase": phase}});
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn node(name: &str, unreachable: bool) -> Arc<Node> {
        let taints = if unreachable { json!([{"key": UNREACHABLE, "effect": "NoExecute"}]) } else { json!([]) };
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints}})).expect("node"))
    }

    #[test]
    fn collects_old_terminated_orphaned_and_stuck_pods() {
        let pods = [
            pod("done-old", "n1", "Succeeded", "2026-01-01T00:00:00Z", false),
            pod("done-new", "n1", "Failed", "2026-01-02T00:00:00Z", false),
            pod("orphan", "gone", "Running", "2026-01-01T00:00:00Z", false),
            pod("stuck", "lost", "Running", "2026-01-01T00:00:00Z", true),
            pod("fine", "n1", "Running", "2026-01-01T00:00:00Z", false),
        ];
        let nodes = [node("n1", false), node("lost", true)];
        let got = plan(&pods, &nodes, 1);
        assert_eq!(
            got,
            [("d/done-old".to_string(), false), ("d/orphan".to_string(), true), ("d/stuck".to_string(), true)]
        );
        // the controller plans over the informer's cached pods: the same plan
        let cached: Vec<Arc<super::super::podcache::CachedPod>> =
            pods.iter().map(|p| Arc::new(super::super::podcache::CachedPod::new(p))).collect();
        assert_eq!(plan(&cached, &nodes, 1), got);
    }
}
