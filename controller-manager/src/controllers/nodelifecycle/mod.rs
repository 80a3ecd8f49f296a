//! Node lifecycle, as upstream's `pkg/controller/nodelifecycle` with its NoExecute taint
//! manager. Every `--node-monitor-period` it looks at each node:
//! - a node whose kubelet Lease (kube-node-lease) and Ready heartbeat have not moved for
//!   `--node-monitor-grace-period`, as observed locally (upstream trusts no remote clock),
//!   gets its conditions set to Unknown ("Kubelet stopped posting node status.");
//! - Ready=Unknown means the `node.kubernetes.io/unreachable` NoSchedule and NoExecute
//!   taints, Ready=False the `not-ready` ones, Ready=True neither;
//! - pods on a node that is not Ready are marked Ready=False, so Services drop them at once;
//! - pods on a node with a NoExecute taint they do not tolerate are deleted, after their
//!   toleration's `tolerationSeconds`. Our apiserver has no DefaultTolerationSeconds
//!   admission plugin, so a pod without a toleration for the taint is treated as tolerating
//!   it for `--default-toleration-seconds` (300 s, what that plugin would have added).
//!
//! The decisions are pure functions (below); the loop applies them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use super::events::{Recorder, NORMAL};
use super::informer::{Cache, Informer};
use super::owner::{is_ready, PodView};
use super::podcache::CachedPod;
use super::Context;

pub const NAME: &str = "nodelifecycle";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const STOPPED: &str = "Kubelet stopped posting node status.";

/// The Ready condition's status, if any.
pub fn ready_status(n: &Node) -> Option<String> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// upstream: conditions a silent node has set to Unknown (all of them, Ready included).
pub fn unknown_conditions(conds: &[NodeCondition], now: Timestamp) -> Vec<NodeCondition> {
    let mut out: Vec<NodeCondition> = conds
        .iter()
        .map(|c| {
            if c.status == "Unknown" {
                return c.clone();
            }
            NodeCondition {
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some(STOPPED.into()),
                last_transition_time: Some(Time(now)),
                ..c.clone()
            }
        })
        .collect();
    if !out.iter().any(|c| c.type_ == "Ready") {
        out.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
    }
    out
}

/// The node's taints with the not-ready/unreachable pair matching its Ready status; `None`
/// when they are already right. Existing taints keep their timeAdded.
pub fn desired_taints(n: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let current = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let want_key = match ready_status(n).as_deref() {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !((t.key == NOT_READY || t.key == UNREACHABLE) && Some(t.key.as_str()) != want_key))
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    (out != current).then_some(out)
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// upstream taint manager: when a pod on a node with these taints must go, as seconds after
/// the taint was added (0 = now); `None` = it tolerates them forever. `default_seconds`
/// stands in for the DefaultTolerationSeconds tolerations of not-ready/unreachable.
pub fn eviction_delay(pod: &Pod, taints: &[Taint], default_seconds: i64) -> Option<(i64, Timestamp)> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut soonest: Option<(i64, Timestamp)> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now);
        let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let secs = if matching.is_empty() {
            if taint.key == NOT_READY || taint.key == UNREACHABLE {
                default_seconds
            } else {
                0
            }
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        } else {
            matching.iter().filter_map(|t| t.toleration_seconds).min().unwrap_or(0).max(0)
        };
        let due = added.as_second() + secs;
        if soonest.is_none_or(|(s, a)| a.as_second() + s > due) {
            soonest = Some((secs, added));
        }
    }
    soonest
}

struct Seen {
    lease_renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
    probed: Instant,
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    let nodes: Arc<Informer<Node>> = ctx.informers.get();
    let leases: Arc<Informer<Lease>> = ctx.informers.get();
    let pods: Arc<Informer<Pod>> = ctx.informers.get();
    nodes.wait_synced().await;
    leases.wait_synced().await;
    pods.wait_synced().await;
    let recorder = ctx.recorder("node-controller");
    let grace = ctx.opts.node_monitor_grace_period;
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(ctx.opts.node_monitor_period);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = monitor(&ctx, &nodes, &leases, &pods, &recorder, grace, &mut seen).await {
            tracing::warn!(controller = NAME, error = %e, "node monitoring pass failed; retrying");
        }
    }
}

async fn monitor(
    ctx: &Context,
    nodes: &Informer<Node>,
    leases: &Informer<Lease>,
    pods: &Informer<Pod>,
    recorder: &Recorder,
    grace: Duration,
    seen: &mut HashMap<String, Seen>,
) -> Result<(), kube::Error> {
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let now = Timestamp::now();
    let all = nodes.list();
    seen.retain(|name, _| all.iter().any(|n| n.metadata.name.as_deref() == Some(name)));
    let mut by_node: HashMap<String, Vec<Arc<CachedPod>>> = HashMap::new();
    for p in pods.list_cached() {
        if let Some(n) = p.node_name() {
            by_node.entry(n.to_string()).or_default().push(p);
        }
    }
    for node in all {
        let name = node.metadata.name.clone().unwrap_or_default();
        let renew = leases.get("kube-node-lease", &name).and_then(|l| l.spec.clone()?.renew_time.map(|t| t.0));
        let conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        let heartbeat =
            conds.iter().find(|c| c.type_ == "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        let s = seen.entry(name.clone()).or_insert(Seen { lease_renew: renew, heartbeat, probed: Instant::now() });
        if s.lease_renew != renew || s.heartbeat != heartbeat {
            *s = Seen { lease_renew: renew, heartbeat, probed: Instant::now() };
        }
        let mut node = (*node).clone();
        if s.probed.elapsed() > grace && ready_status(&node).as_deref() != Some("Unknown") {
            let conds = unknown_conditions(&conds, now);
            let patch = json!({"status": {"conditions": conds}});
            node = node_api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            recorder.event(
                super::events::reference(&node),
                NORMAL,
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
        }
        if let Some(taints) = desired_taints(&node, now) {
            let patch = json!({"spec": {"taints": taints}});
            node = node_api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        let node_ready = ready_status(&node).as_deref() == Some("True");
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        // A Ready node without NoExecute taints asks nothing of its pods: they stay undecoded.
        if node_ready && !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        let decoded: Vec<Arc<Pod>> =
            by_node.get(&name).into_iter().flatten().filter_map(<Pod as Cache>::load).collect();
        for p in &decoded {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let pname = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            if !node_ready && is_ready(p) {
                // upstream MarkPodsNotReady
                let mut conds = p.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                for c in conds.iter_mut().filter(|c| c.type_ == "Ready") {
                    c.status = "False".into();
                    c.last_transition_time = Some(Time(now));
                }
                let patch = json!({"status": {"conditions": conds}});
                match api.patch_status(&pname, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let default_secs = ctx.opts.default_toleration_seconds;
            if let Some((secs, added)) = eviction_delay(p, &taints, default_secs) {
                if added.as_second() + secs <= now.as_second() {
                    recorder.event(
                        super::events::reference(p.as_ref()),
                        NORMAL,
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{pname}"),
                    );
                    match api.delete(&pname, &DeleteParams::default()).await {
                        Ok(_) | Err(kube::Error::Api(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .expect("node")
    }

    #[test]
    fn silent_nodes_turn_unknown_with_upstreams_message() {
        let n = node("True", json!([]));
        let conds =
            unknown_conditions(n.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default(), ts(10));
        assert_eq!(conds[0].status, "Unknown");
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(conds[0].message.as_deref(), Some("Kubelet stopped posting node status."));
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let t = desired_taints(&node("Unknown", json!([{"key": "dedicated", "effect": "NoSchedule"}])), ts(5))
            .expect("change");
        let keys: Vec<(&str, &str)> = t.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        assert_eq!(keys, [("dedicated", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        let mut n = node("Unknown", json!([]));
        n.spec.as_mut().expect("spec").taints = Some(t.clone());
        assert!(desired_taints(&n, ts(6)).is_none(), "already right");
        let recovered = node("True", serde_json::to_value(&t).expect("json"));
        let t = desired_taints(&recovered, ts(7)).expect("change");
        assert_eq!(t.len(), 1, "unreachable taints removed, others kept");
        let t = desired_taints(&node("False", json!([])), ts(7)).expect("change");
        assert!(t.iter().all(|t| t.key == NOT_READY));
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}),
        )
        .expect("pod")
    }

    fn taint(key: &str, at: i64) -> Taint {
        Taint { key: key.into(), effect: "NoExecute".into(), time_added: Some(Time(ts(at))), value: None }
    }

    #[test]
    fn eviction_waits_for_toleration_seconds_or_the_default() {
        let taints = [taint(UNREACHABLE, 100)];
        assert_eq!(eviction_delay(&pod(json!([])), &taints, 300), Some((300, ts(100))), "the default toleration");
        let p = pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]));
        assert_eq!(eviction_delay(&p, &taints, 300), Some((5, ts(100))));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_delay(&forever, &taints, 300), None);
        let other = [taint("example.com/broken", 100)];
        assert_eq!(eviction_delay(&pod(json!([])), &other, 300), Some((0, ts(100))), "untolerated: at once");
    }
}
