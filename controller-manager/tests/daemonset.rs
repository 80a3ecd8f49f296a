//! The DaemonSet controller against a real apiserver with simulated nodes: one pod per
//! matching node, pinned by node affinity on `metadata.name` (no nodeName); a node added later
//! gets a pod, a node that stops matching or leaves loses it; a failed daemon pod is replaced;
//! a rolling update never has more than maxUnavailable nodes without a ready pod and
//! `kubectl rollout status ds` (1.27, 1.30, 1.33) follows it; maxSurge starts the new pod next to
//! the old one; OnDelete waits for deletions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::common::{Cluster, WAIT};
use component_base::testing::{eventually, Kubectl};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn daemonset(name: &str, strategy: serde_json::Value) -> DaemonSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "updateStrategy": strategy,
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"nodeSelector": {"tier": "app"}, "containers": [{"name": "c", "image": "v1"}]}}},
    }))
    .expect("daemonset")
}

/// Live (not terminating) pods of the DaemonSet by node (bound or pinned).
async fn pods_by_node(client: &kube::Client, app: &str) -> BTreeMap<String, Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in api.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("pods").items {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        out.entry(node).or_default().push(p);
    }
    out
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn one_ready_pod_on(client: &kube::Client, app: &str, nodes: &[&str]) -> bool {
    let by_node = pods_by_node(client, app).await;
    by_node.len() == nodes.len()
        && nodes.iter().all(|n| by_node.get(*n).is_some_and(|ps| ps.len() == 1 && is_ready(&ps[0])))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_matching_node_as_nodes_come_and_go() {
    let mut cluster = Cluster::start().await;
    let kubelet = cluster.start_pinning_nodes(3).await;
    let client = cluster.client.clone();
    cluster.start_controller_manager(&["--controllers=daemonset,podgc", "--pod-gc-period=1s"]);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    // A node outside the nodeSelector never gets a pod.
    cluster.add_node(&kubelet, "other", json!({"tier": "db"}), "198.18.200.50").await;
    dss.create(&PostParams::default(), &daemonset("agent", json!({"type": "RollingUpdate"}))).await.expect("ds");

    eventually("a ready pod on each of the 3 app nodes", WAIT, || {
        one_ready_pod_on(&client, "agent", &["node-0", "node-1", "node-2"])
    })
    .await;
    eventually("status counts the 3 nodes", WAIT, || async {
        let st = dss.get("agent").await.expect("ds").status.unwrap_or_default();
        (st.desired_number_scheduled, st.current_number_scheduled, st.number_ready, st.number_misscheduled)
            == (3, 3, 3, 0)
            && st.updated_number_scheduled == Some(3)
            && st.number_available == Some(3)
            && st.number_unavailable == Some(0)
            && st.observed_generation == Some(1)
    })
    .await;
    // Placed through node affinity on the node's name, as upstream; the daemon tolerations on.
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let rev_list = revs.list(&ListParams::default()).await.expect("revisions").items;
    assert_eq!(rev_list.len(), 1);
    let hash = rev_list[0].metadata.labels.clone().unwrap_or_default()["controller-revision-hash"].clone();
    assert_eq!(rev_list[0].metadata.name.as_deref(), Some(format!("agent-{hash}").as_str()));
    for (node, ps) in pods_by_node(&client, "agent").await {
        let p = &ps[0];
        assert_eq!(p.metadata.labels.clone().unwrap_or_default()["controller-revision-hash"], hash);
        let spec = serde_json::to_value(p.spec.as_ref().expect("spec")).expect("json");
        assert_eq!(
            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}])
        );
        let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        for key in
            ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "node.kubernetes.io/unschedulable"]
        {
            assert!(tolerations.iter().any(|t| t["key"] == key), "{key} missing: {tolerations:?}");
        }
    }

    // A node added later gets its pod.
    cluster.add_node(&kubelet, "node-3", json!({"tier": "app"}), "198.18.200.4").await;
    eventually("a pod on the added node", WAIT, || {
        one_ready_pod_on(&client, "agent", &["node-0", "node-1", "node-2", "node-3"])
    })
    .await;

    // A node that stops matching loses its pod; a node that leaves loses it too (pod GC).
    nodes
        .patch("node-3", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "db"}}})))
        .await
        .expect("relabel");
    kubelet.nodes.lock().expect("nodes").retain(|n| n != "node-1");
    nodes.delete("node-1", &DeleteParams::default()).await.expect("delete node");
    eventually("pods only on node-0 and node-2", WAIT, || one_ready_pod_on(&client, "agent", &["node-0", "node-2"]))
        .await;
    eventually("status follows", WAIT, || async {
        let st = dss.get("agent").await.expect("ds").status.unwrap_or_default();
        (st.desired_number_scheduled, st.current_number_scheduled, st.number_ready) == (2, 2, 2)
    })
    .await;

    // A failed daemon pod is deleted and replaced.
    let failed = pods_by_node(&client, "agent").await["node-0"][0].metadata.name.clone().expect("name");
    pods.patch_status(&failed, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Failed"}})))
        .await
        .expect("fail the pod");
    eventually("the failed pod replaced", WAIT, || async {
        let by_node = pods_by_node(&client, "agent").await;
        by_node.get("node-0").is_some_and(|ps| {
            ps.len() == 1 && ps[0].metadata.name.as_deref() != Some(failed.as_str()) && is_ready(&ps[0])
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("events as upstream", WAIT, || async {
        let evs = events.list(&ListParams::default()).await.expect("events").items;
        let reasons: Vec<_> = evs
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("agent"))
            .filter_map(|e| e.reason.clone())
            .collect();
        ["SuccessfulCreate", "SuccessfulDelete", "FailedDaemonPod"].iter().all(|r| reasons.iter().any(|x| x == r))
    })
    .await;
    cluster.stop().await;
}

/// What a watch of the DaemonSet's pods saw: per node the pods' (ready, terminating), and,
/// once every node was listed, the most nodes at once without a ready live pod and with two
/// live pods.
#[derive(Default)]
struct Seen {
    nodes: HashMap<String, HashMap<String, (bool, bool)>>,
    max_down: usize,
    max_doubled: usize,
}

fn watch_nodes(pods: &Api<Pod>, all: &[&'static str]) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Seen>>) {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (s, all) = (seen.clone(), all.to_vec());
    let watch = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("app=web"))
            .default_backoff()
            .touched_objects()
            .for_each(move |p| {
                if let Ok(p) = p {
                    let mut g = s.lock().expect("lock");
                    if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let state = (is_ready(&p), p.metadata.deletion_timestamp.is_some());
                        g.nodes.entry(node).or_default().insert(name, state);
                        let live = |n: &str, ready: bool| {
                            g.nodes.get(n).map_or(0, |ps| ps.values().filter(|(r, t)| (*r || !ready) && !*t).count())
                        };
                        let down = all.iter().filter(|n| live(n, true) == 0).count();
                        let doubled = all.iter().filter(|n| live(n, false) > 1).count();
                        if g.nodes.len() == all.len() {
                            g.max_down = g.max_down.max(down);
                            g.max_doubled = g.max_doubled.max(doubled);
                        }
                    }
                }
                futures::future::ready(())
            }),
    );
    (watch, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_rolling_update_respects_max_unavailable_and_on_delete_waits() {
    let mut cluster = Cluster::start().await;
    cluster.start_pinning_nodes(4).await;
    let client = cluster.client.clone();
    cluster.start_controller_manager(&["--controllers=daemonset"]);
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
    dss.create(&PostParams::default(), &daemonset("web", strategy)).await.expect("ds");
    let all = ["node-0", "node-1", "node-2", "node-3"];
    eventually("4 ready pods", WAIT, || one_ready_pod_on(&client, "web", &all)).await;

    let (watch, view) = watch_nodes(&pods, &all);
    eventually("the watch saw all 4 nodes", WAIT, || async { view.lock().expect("lock").nodes.len() == 4 }).await;

    let dir = cluster.server.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(33, &dir);
        k.ok(&["set", "image", "daemonset/web", "c=v2"]);
        for minor in [27, 30, 33] {
            let out = Kubectl::new(minor, &dir).ok(&["rollout", "status", "daemonset/web", "--timeout=60s"]);
            assert!(out.contains("daemon set \"web\" successfully rolled out"), "kubectl 1.{minor}: {out}");
        }
    })
    .await
    .expect("kubectl");
    let st = dss.get("web").await.expect("ds").status.unwrap_or_default();
    assert_eq!((st.updated_number_scheduled, st.number_available), (Some(4), Some(4)));
    assert_eq!(st.observed_generation, Some(2));
    let max_down = view.lock().expect("lock").max_down;
    assert_eq!(max_down, 1, "maxUnavailable 1: at most one node without a ready pod at a time");
    watch.abort();
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let rev_list = revs.list(&ListParams::default()).await.expect("revisions").items;
    let mut numbers: Vec<i64> = rev_list.iter().map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    let new_hash =
        rev_list.iter().find(|r| r.revision == 2).expect("revision 2").metadata.labels.clone().unwrap_or_default()
            ["controller-revision-hash"]
            .clone();
    for ps in pods_by_node(&client, "web").await.values() {
        assert_eq!(ps[0].metadata.labels.clone().unwrap_or_default()["controller-revision-hash"], new_hash);
    }

    // maxSurge: the new pod starts next to the old one, which goes once the new one is
    // ready; no node is ever without a ready pod, at most one node runs two.
    let (watch, view) = watch_nodes(&pods, &all);
    eventually("the watch saw all 4 nodes", WAIT, || async { view.lock().expect("lock").nodes.len() == 4 }).await;
    let patch = json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                                "template": {"spec": {"containers": [{"name": "c", "image": "v3"}]}}}});
    dss.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    eventually("surge rollout done", WAIT, || async {
        let d = dss.get("web").await.expect("ds");
        let st = d.status.unwrap_or_default();
        st.observed_generation == d.metadata.generation
            && st.updated_number_scheduled == Some(4)
            && st.number_available == Some(4)
            && one_ready_pod_on(&client, "web", &all).await
    })
    .await;
    watch.abort();
    let seen = {
        let g = view.lock().expect("lock");
        (g.max_down, g.max_doubled)
    };
    assert_eq!(seen, (0, 1), "maxSurge 1, maxUnavailable 0");

    // OnDelete: a template change waits until a pod is deleted by hand.
    let patch = json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
                                "template": {"spec": {"containers": [{"name": "c", "image": "v4"}]}}}});
    dss.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    eventually("generation 4 observed, nothing updated", WAIT, || async {
        let st = dss.get("web").await.expect("ds").status.unwrap_or_default();
        st.observed_generation == Some(4) && st.updated_number_scheduled == Some(0)
    })
    .await;
    let victim = pods_by_node(&client, "web").await["node-2"][0].metadata.name.clone().expect("name");
    pods.delete(&victim, &DeleteParams::default()).await.expect("delete");
    eventually("node-2 runs v4, the others v3", WAIT, || async {
        let by_node = pods_by_node(&client, "web").await;
        let image = |n: &str| {
            by_node.get(n).and_then(|ps| ps.first()).and_then(|p| p.spec.as_ref()?.containers[0].image.clone())
        };
        image("node-2").as_deref() == Some("v4")
            && ["node-0", "node-1", "node-3"].iter().all(|n| image(n).as_deref() == Some("v3"))
    })
    .await;
    eventually("one updated", WAIT, || async {
        dss.get("web").await.expect("ds").status.unwrap_or_default().updated_number_scheduled == Some(1)
    })
    .await;

    // History from the ControllerRevisions; undo puts the previous template back.
    let dir = cluster.server.cert_dir.path().to_path_buf();
    let history = tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(33, &dir);
        let out = k.ok(&["rollout", "history", "daemonset/web"]);
        k.ok(&["rollout", "undo", "daemonset/web"]);
        out
    })
    .await
    .expect("kubectl");
    for rev in ["1", "2", "3", "4"] {
        assert!(history.lines().any(|l| l.split_whitespace().next() == Some(rev)), "revision {rev}:\n{history}");
    }
    let ds = dss.get("web").await.expect("ds");
    let image = ds.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].image.clone());
    assert_eq!(image, Some(Some("v3".into())), "undo restores the template of revision 3");
    cluster.stop().await;
}
