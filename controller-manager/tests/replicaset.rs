//! The ReplicaSet controller against a real apiserver: it adopts a matching orphan, creates
//! the rest from the template, replaces a deleted pod, releases a pod whose labels stop
//! matching (and replaces it), scales down, never creates more pods than asked for, and
//! reports status and events.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::common::{active_pods, Cluster, WAIT};
use component_base::testing::eventually;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_creates_replaces_releases_and_scales() {
    let mut cluster = Cluster::start().await;
    cluster.start_nodes(2).await;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Every pod ever created for the app, to prove no double creation.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let s = seen.clone();
    let watch = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("app=web"))
            .default_backoff()
            .applied_objects()
            .for_each(move |p| {
                if let Ok(p) = p {
                    s.lock().expect("lock").insert(p.metadata.uid.unwrap_or_default());
                }
                futures::future::ready(())
            }),
    );

    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "v1"}]},
    }))
    .expect("pod");
    pods.create(&pp, &orphan).await.expect("orphan");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}},
    }))
    .expect("rs");
    cluster.start_controller_manager(&["--controllers=replicaset"]);
    let rs = rss.create(&pp, &rs).await.expect("rs");
    let uid = rs.metadata.uid.clone().expect("uid");

    eventually("3 ready replicas", WAIT, || async {
        let st = rss.get("web").await.expect("rs").status.unwrap_or_default();
        st.ready_replicas == Some(3) && st.available_replicas == Some(3) && st.fully_labeled_replicas == Some(3)
    })
    .await;
    let orphan = pods.get("orphan").await.expect("the orphan stays");
    let owner = orphan.metadata.owner_references.unwrap_or_default();
    assert!(owner.iter().any(|o| o.uid == uid && o.controller == Some(true)), "adopted: {owner:?}");
    let all = active_pods(&client, "default", "web").await;
    assert_eq!(all.len(), 3);
    for p in &all {
        let r = &p.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!((r.controller, r.block_owner_deletion), (Some(true), Some(true)));
        if p.metadata.name.as_deref() != Some("orphan") {
            assert!(p.metadata.name.as_deref().unwrap_or_default().starts_with("web-"));
        }
    }
    assert_eq!(rss.get("web").await.expect("rs").status.unwrap_or_default().observed_generation, Some(1));

    // A deleted pod is replaced.
    pods.delete("orphan", &DeleteParams::default()).await.expect("delete");
    eventually("a replacement", WAIT, || async {
        let p = active_pods(&client, "default", "web").await;
        p.len() == 3 && p.iter().all(|p| p.metadata.name.as_deref() != Some("orphan"))
    })
    .await;

    // A pod whose labels stop matching is released and replaced.
    let victim = active_pods(&client, "default", "web").await[0].metadata.name.clone().expect("name");
    let relabel = json!({"metadata": {"labels": {"app": "elsewhere"}}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&relabel)).await.expect("relabel");
    eventually("release and replace", WAIT, || async {
        let released = pods.get(&victim).await.expect("pod").metadata.owner_references.unwrap_or_default().is_empty();
        released && active_pods(&client, "default", "web").await.len() == 3
    })
    .await;

    // Scale down to 1.
    let scale = json!({"spec": {"replicas": 1}});
    rss.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale");
    eventually("scaled to 1", WAIT, || async {
        active_pods(&client, "default", "web").await.len() == 1
            && rss.get("web").await.expect("rs").status.is_some_and(|s| s.replicas == 1)
    })
    .await;

    // 1 orphan + 2 created + 1 replacement for the deleted + 1 for the released = 5.
    assert_eq!(seen.lock().expect("lock").len(), 5, "no pod was created twice");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("events", WAIT, || async {
        let evs = events.list(&Default::default()).await.expect("events").items;
        let has = |reason: &str, prefix: &str| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
                    && e.involved_object.name.as_deref() == Some("web")
            })
        };
        has("SuccessfulCreate", "Created pod: web-") && has("SuccessfulDelete", "Deleted pod: web-")
    })
    .await;
    watch.abort();
    cluster.stop().await;
}
