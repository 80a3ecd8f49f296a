//! The Deployment controller (with the ReplicaSet controller and the garbage collector)
//! against a real apiserver and simulated nodes, driven through the API and the real kubectl:
//! a Deployment of 10 rolls out; `kubectl set image` rolls with 25%/25% and never leaves the
//! bounds at any observed moment; `rollout status|history|undo|restart|pause|resume` work;
//! a stalled rollout reports ProgressDeadlineExceeded; scaling mid-rollout is proportional;
//! foreground deletion removes ReplicaSets and pods first, orphan deletion leaves them; and a
//! controller-manager killed mid-rollout finishes it after a restart without extra pods.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::common::{active_pods, deployment, Cluster, WAIT};
use component_base::testing::{eventually, Kubectl};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn image(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn complete(api: &Api<Deployment>, name: &str, replicas: i32) -> bool {
    let d = api.get(name).await.expect("deployment");
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas == Some(replicas)
        && st.replicas == Some(replicas)
        && st.available_replicas == Some(replicas)
}

async fn replicasets(client: &kube::Client, app: &str) -> Vec<ReplicaSet> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    api.list(&ListParams::default().labels(&format!("app={app}"))).await.expect("rs").items
}

/// What a rollout looked like over time: the largest sum of the app's ReplicaSet sizes (what
/// maxSurge bounds), the fewest ready pods (what maxUnavailable bounds, counted once `armed`),
/// and every pod uid. Pod objects themselves may briefly exceed the surge while a scaled-down
/// ReplicaSet's deletes are in flight, as upstream's do.
#[derive(Default)]
struct Watch {
    pods: std::collections::HashMap<String, Pod>,
    rs_sizes: std::collections::HashMap<String, i32>,
    max_total: i32,
    min_ready: Option<usize>,
    armed: bool,
    uids: HashSet<String>,
}

fn observe(client: &kube::Client, app: &str) -> (Arc<Mutex<Watch>>, tokio::task::JoinHandle<()>) {
    let w: Arc<Mutex<Watch>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let w2 = w.clone();
    let pod_watch = watcher(pods, cfg.clone()).default_backoff().for_each(move |ev| {
        let mut w = w2.lock().expect("lock");
        match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                w.uids.insert(uid.clone());
                if p.metadata.deletion_timestamp.is_some() {
                    w.pods.remove(&uid);
                } else {
                    w.pods.insert(uid, p);
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                w.pods.remove(&p.metadata.uid.unwrap_or_default());
            }
            _ => {}
        }
        let ready = w.pods.values().filter(|p| ready(p)).count();
        if w.armed {
            w.min_ready = Some(w.min_ready.map_or(ready, |m| m.min(ready)));
        }
        futures::future::ready(())
    });
    let w3 = w.clone();
    let rs_watch = watcher(rss, cfg).default_backoff().for_each(move |ev| {
        let mut w = w3.lock().expect("lock");
        match ev {
            Ok(watcher::Event::Apply(r)) | Ok(watcher::Event::InitApply(r)) => {
                let size = r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                w.rs_sizes.insert(r.metadata.name.unwrap_or_default(), size);
            }
            Ok(watcher::Event::Delete(r)) => {
                w.rs_sizes.remove(&r.metadata.name.unwrap_or_default());
            }
            _ => {}
        }
        let total = w.rs_sizes.values().sum();
        w.max_total = w.max_total.max(total);
        futures::future::ready(())
    });
    let h = tokio::spawn(async move {
        futures::future::join(pod_watch, rs_watch).await;
    });
    (w, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_bounds_and_rolls_back_with_kubectl() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(3).await;
    cluster.start_controller_manager(&[]);
    let client = cluster.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let (seen, watch) = observe(&client, "web");

    deploys.create(&PostParams::default(), &deployment("web", 10, "v1")).await.expect("create");
    eventually("10 available", WAIT, || complete(&deploys, "web", 10)).await;
    let rss = replicasets(&client, "web").await;
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs.metadata.labels.clone().unwrap_or_default().get("pod-template-hash").cloned().expect("hash label");
    assert!(hash.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)), "{hash}");
    assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
    let ann = rs.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("deployment.kubernetes.io/revision").map(String::as_str), Some("1"));
    assert_eq!(ann.get("deployment.kubernetes.io/desired-replicas").map(String::as_str), Some("10"));
    assert_eq!(ann.get("deployment.kubernetes.io/max-replicas").map(String::as_str), Some("13"));
    let d = deploys.get("web").await.expect("d");
    let conds = d.status.clone().unwrap_or_default().conditions.unwrap_or_default();
    let reason = |t: &str| conds.iter().find(|c| c.type_ == t).and_then(|c| c.reason.clone());
    assert_eq!(reason("Available").as_deref(), Some("MinimumReplicasAvailable"));
    assert_eq!(reason("Progressing").as_deref(), Some("NewReplicaSetAvailable"));

    // set image with 25%/25%: at most 13 pods, at least 8 ready, at every observed moment.
    seen.lock().expect("lock").armed = true;
    let dir = cluster.server.cert_dir.path().to_path_buf();
    let k = tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(33, &dir);
        k.ok(&["set", "image", "deployment/web", "c=v2"]);
        let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("deployment \"web\" successfully rolled out"), "{out}");
        k
    })
    .await
    .expect("kubectl");
    {
        let w = seen.lock().expect("lock");
        assert!(w.max_total <= 13, "surge bound: {} replicas at once", w.max_total);
        assert!(w.min_ready.is_some_and(|m| m >= 8), "unavailable bound: {:?} ready", w.min_ready);
    }
    assert!(active_pods(&client, "default", "web").await.iter().all(|p| image(p) == "v2"));

    let k = tokio::task::spawn_blocking(move || {
        let out = k.ok(&["rollout", "history", "deployment/web"]);
        assert!(out.contains("REVISION") && out.contains("1 ") && out.contains("2 "), "{out}");
        k.ok(&["rollout", "undo", "deployment/web"]);
        let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        k
    })
    .await
    .expect("kubectl");
    eventually("back on v1", WAIT, || async {
        let p = active_pods(&client, "default", "web").await;
        p.len() == 10 && p.iter().all(|p| image(p) == "v1")
    })
    .await;
    let rss = replicasets(&client, "web").await;
    assert_eq!(rss.len(), 2, "undo reuses the first ReplicaSet");
    let first = rss.iter().find(|r| r.metadata.name.as_deref() == Some(format!("web-{hash}").as_str())).expect("rs 1");
    let ann = first.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get("deployment.kubernetes.io/revision").map(String::as_str), Some("3"));
    assert_eq!(ann.get("deployment.kubernetes.io/revision-history").map(String::as_str), Some("1"));

    // The ScalingReplicaSet events say what happened, as upstream's do.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let evs = events.list(&ListParams::default()).await.expect("events").items;
    let scaling: Vec<String> = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(scaling.contains(&format!("Scaled up replica set web-{hash} from 0 to 10")), "{scaling:?}");
    assert!(scaling.iter().any(|m| m.starts_with("Scaled down replica set web-")), "{scaling:?}");

    // pause, restart (held while paused), resume.
    let k = tokio::task::spawn_blocking(move || {
        k.ok(&["rollout", "pause", "deployment/web"]);
        k.ok(&["set", "env", "deployment/web", "MODE=paused-edit"]);
        k
    })
    .await
    .expect("kubectl");
    eventually("paused condition", WAIT, || async {
        let d = deploys.get("web").await.expect("d");
        d.status
            .unwrap_or_default()
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason.as_deref() == Some("DeploymentPaused"))
    })
    .await;
    assert_eq!(replicasets(&client, "web").await.len(), 2, "no new ReplicaSet while paused");
    tokio::task::spawn_blocking(move || {
        k.ok(&["rollout", "resume", "deployment/web"]);
        let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        k.ok(&["rollout", "restart", "deployment/web"]);
        let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    })
    .await
    .expect("kubectl");
    assert_eq!(replicasets(&client, "web").await.len(), 4, "the resumed edit and the restart made one each");
    watch.abort();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_rollout_exceeds_its_progress_deadline_and_scaling_mid_rollout_is_proportional() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(2).await;
    cluster.start_controller_manager(&[]);
    let client = cluster.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut d = deployment("web", 10, "v1");
    d.spec.as_mut().expect("spec").progress_deadline_seconds = Some(3);
    deploys.create(&PostParams::default(), &d).await.expect("create");
    eventually("10 available", WAIT, || complete(&deploys, "web", 10)).await;

    // v2 never gets ready: the rollout stalls at 3 new (surge) and 2 old gone (unavailable).
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "never-ready"}]}}}});
    deploys.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("set image");
    eventually("ProgressDeadlineExceeded", WAIT, || async {
        let d = deploys.get("web").await.expect("d");
        d.status.unwrap_or_default().conditions.unwrap_or_default().iter().any(|c| {
            c.type_ == "Progressing" && c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    })
    .await;
    let dir = cluster.server.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let r = Kubectl::new(30, &dir).run(&["rollout", "status", "deployment/web", "--timeout=20s"]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("exceeded its progress deadline"), "{}", r.stderr);
    })
    .await
    .expect("kubectl");
    let sizes = |rss: &[ReplicaSet]| {
        let mut v: Vec<(String, i32)> = rss
            .iter()
            .map(|r| {
                let img = r
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .map(|s| s.containers[0].image.clone().unwrap_or_default())
                    .unwrap_or_default();
                (img, r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
            })
            .collect();
        v.sort();
        v
    };
    let before = sizes(&replicasets(&client, "web").await);
    assert_eq!(before, [("never-ready".to_string(), 5), ("v1".to_string(), 8)], "stalled at 13 = 10 + 3 surge");

    // Scale to 20 mid-rollout: 20 + 5 surge = 25 spread as 8:5 → 15 and 10 (upstream's arithmetic).
    let scale = json!({"spec": {"replicas": 20}});
    deploys.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale");
    eventually("proportional scale", WAIT, || async {
        sizes(&replicasets(&client, "web").await) == [("never-ready".to_string(), 10), ("v1".to_string(), 15)]
    })
    .await;

    // kubectl 1.27 rolls the stalled rollout back and waits for it.
    let dir = cluster.server.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(27, &dir);
        let out = k.ok(&["rollout", "history", "deployment/web"]);
        assert!(out.contains("1 ") && out.contains("2 "), "{out}");
        k.ok(&["rollout", "undo", "deployment/web"]);
        let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    })
    .await
    .expect("kubectl");
    assert_eq!(sizes(&replicasets(&client, "web").await), [("never-ready".to_string(), 0), ("v1".to_string(), 20)]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_removes_replicasets_and_pods_first_and_orphan_keeps_them() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(2).await;
    cluster.start_controller_manager(&[]);
    let client = cluster.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("fg", 4, "v1")).await.expect("create");
    deploys.create(&PostParams::default(), &deployment("or", 3, "v1")).await.expect("create");
    eventually("both available", WAIT, || async {
        complete(&deploys, "fg", 4).await && complete(&deploys, "or", 3).await
    })
    .await;

    deploys.delete("fg", &DeleteParams::foreground()).await.expect("delete");
    // While the Deployment is still there, its dependents go; once it is gone, none are left.
    eventually("foreground deletion", WAIT, || async {
        let gone = deploys.get_opt("fg").await.expect("get").is_none();
        let rs_left = replicasets(&client, "fg").await.len();
        let pods_left = active_pods(&client, "default", "fg").await.len();
        if gone {
            assert_eq!((rs_left, pods_left), (0, 0), "the Deployment went before its dependents");
        }
        gone
    })
    .await;

    deploys.delete("or", &DeleteParams::orphan()).await.expect("delete");
    eventually("orphan deletion", WAIT, || async { deploys.get_opt("or").await.expect("get").is_none() }).await;
    let rss = replicasets(&client, "or").await;
    assert_eq!(rss.len(), 1, "the ReplicaSet stays");
    assert!(rss[0].metadata.owner_references.clone().unwrap_or_default().is_empty());
    assert_eq!(active_pods(&client, "default", "or").await.len(), 3, "the pods stay");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_manager_finishes_the_rollout_without_extra_pods() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(3).await;
    cluster.start_controller_manager(&[]);
    let client = cluster.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let (seen, watch) = observe(&client, "web");
    deploys.create(&PostParams::default(), &deployment("web", 10, "v1")).await.expect("create");
    eventually("10 available", WAIT, || complete(&deploys, "web", 10)).await;

    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}});
    deploys.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("set image");
    eventually("the rollout started", WAIT, || async {
        active_pods(&client, "default", "web").await.iter().any(|p| image(p) == "v2")
    })
    .await;
    cluster.stop_controller_manager().await;
    cluster.start_controller_manager(&[]);
    eventually("rollout finished", WAIT, || async {
        complete(&deploys, "web", 10).await
            && active_pods(&client, "default", "web").await.iter().all(|p| image(p) == "v2")
    })
    .await;
    let pods = active_pods(&client, "default", "web").await;
    assert_eq!(pods.len(), 10);
    // 10 v1 + 10 v2, each made once.
    assert_eq!(seen.lock().expect("lock").uids.len(), 20, "no pod was made twice");
    watch.abort();
    cluster.stop().await;
}
