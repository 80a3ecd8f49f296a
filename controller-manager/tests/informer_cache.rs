//! The shared informers' cache against a real apiserver: cached objects carry no managedFields
//! (upstream's kube-controller-manager trims them too), and a controller that writes back an
//! object it took from the cache does not wipe the stored managedFields (an update whose body
//! omits them keeps the live ones, as upstream's apiserver does).

use std::sync::Arc;

use component_base::testing::eventually;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use rkube_controller_manager::controllers::informer::Factory;
use rkube_controller_manager::controllers::statefulset::pod_control::{KubeObjects, ObjectManager};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{Cluster, WAIT};

fn managers(p: &Pod) -> Vec<String> {
    p.metadata.managed_fields.iter().flatten().filter_map(|e| e.manager.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_pods_have_no_managed_fields_and_a_write_from_one_keeps_the_stored_ones() {
    let cluster = Cluster::start().await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "cached", "labels": {"app": "cached"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod");
    let pp = PostParams { field_manager: Some("test-writer".into()), ..Default::default() };
    let created = pods.create(&pp, &pod).await.expect("create pod");
    assert_eq!(managers(&created), ["test-writer"], "the apiserver records the creator");

    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let tasks = TaskTracker::new();
    let factory = Factory::new(cluster.client.clone(), cancel.clone(), tasks.clone());
    let informer = factory.get::<Pod>();
    informer.wait_synced().await;
    let cached = informer.get("default", "cached").expect("the pod is cached");
    assert_eq!(cached.metadata.managed_fields, None, "cached pods carry no managedFields");
    assert_eq!(cached.metadata.uid, created.metadata.uid);

    // The StatefulSet controller's pod update: a PUT of the cached pod, here with a new label.
    let mut changed = Pod::clone(&cached);
    changed.metadata.labels.get_or_insert_default().insert("touched".into(), "yes".into());
    KubeObjects(cluster.client.clone()).update_pod(&changed).await.expect("update from the cache");

    let live = pods.get("cached").await.expect("get pod");
    assert_eq!(live.metadata.labels.as_ref().and_then(|l| l.get("touched")).map(String::as_str), Some("yes"));
    assert!(
        managers(&live).iter().any(|m| m == "test-writer"),
        "the stored managedFields survive a write from a trimmed object: {:?}",
        live.metadata.managed_fields
    );
    let informer2 = Arc::clone(&informer);
    eventually("the cache sees the update", WAIT, || {
        let i = informer2.clone();
        async move {
            i.get("default", "cached")
                .is_some_and(|p| p.metadata.labels.as_ref().is_some_and(|l| l.contains_key("touched")))
        }
    })
    .await;
    assert_eq!(informer.get("default", "cached").and_then(|p| p.metadata.managed_fields.clone()), None);
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
}
