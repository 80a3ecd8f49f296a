//! The StatefulSet controller against a real apiserver with the fake kubelet, which binds the
//! pods itself (their claims get no volume: no PV controller runs here): pods come up in
//! ordinal order, each after its predecessor is Ready, with their claims; a deleted pod comes
//! back under the same name with the same claim; scale-down goes from the top; rolling updates
//! honour the partition; ControllerRevisions back `kubectl rollout status|history|undo` (1.27,
//! 1.30, 1.33); the PVC retention policy's ownerReferences let the garbage collector delete
//! claims on scale-down and with the set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::common;
use crate::common::{Cluster, WAIT};
use component_base::testing::{eventually, Kubectl};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn statefulset(name: &str, replicas: i32, image: &str, extra: serde_json::Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("statefulset")
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// Live (not terminating) pods of app `app`, by name.
async fn pods_by_name(client: &kube::Client, app: &str) -> BTreeMap<String, Pod> {
    common::active_pods(client, "default", app)
        .await
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect()
}

/// What a pod watch saw, in order: `add web-0`, `ready web-0`, `delete web-2`, ...
fn record(pods: Api<Pod>, app: &str) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let mut known: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let selector = format!("app={app}");
    let h = tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default().labels(&selector)).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let (p, gone) = match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                watcher::Event::Delete(p) => (p, true),
                _ => continue,
            };
            let name = p.metadata.name.clone().unwrap_or_default();
            let mut log = s.lock().expect("lock");
            if gone || p.metadata.deletion_timestamp.is_some() {
                if known.remove(&name).is_some() {
                    log.push(format!("delete {name}"));
                }
                continue;
            }
            let entry = known.entry(name.clone()).or_insert_with(|| {
                log.push(format!("add {name}"));
                (uid(&p), false)
            });
            if entry.0 != uid(&p) {
                *entry = (uid(&p), false);
                log.push(format!("add {name}"));
            }
            if ready(&p) && !entry.1 {
                entry.1 = true;
                log.push(format!("ready {name}"));
            }
        }
    });
    (seen, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_creates_in_order_recreates_scales_down_in_reverse() {
    let mut cluster = Cluster::start().await;
    cluster.start_self_binding_nodes(2).await;
    cluster.start_controller_manager(&["--controllers=statefulset"]);
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let (seen, watch) = record(pods.clone(), "web");

    let set = sets.create(&PostParams::default(), &statefulset("web", 3, "v1", json!({}))).await.expect("create");
    eventually("3 ready replicas", WAIT, || async {
        let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
        st.ready_replicas == Some(3) && st.current_replicas == Some(3) && st.updated_replicas == Some(3)
    })
    .await;
    // The recording watch may be a moment behind the status.
    eventually("the watch saw 3 ready pods", WAIT, || async {
        seen.lock().expect("lock").iter().filter(|l| l.starts_with("ready")).count() >= 3
    })
    .await;
    let log = seen.lock().expect("lock").clone();
    assert_eq!(
        log,
        ["add web-0", "ready web-0", "add web-1", "ready web-1", "add web-2", "ready web-2"],
        "each pod is created only after its predecessor is Ready, and only once"
    );
    let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.available_replicas, Some(3));
    assert!(st.current_revision.as_deref().is_some_and(|r| r.starts_with("web-")), "{st:?}");
    assert_eq!(st.current_revision, st.update_revision);

    let by_name = pods_by_name(&client, "web").await;
    for i in 0..3 {
        let p = &by_name[&format!("web-{i}")];
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l["statefulset.kubernetes.io/pod-name"], format!("web-{i}"));
        assert_eq!(l["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(Some(&l["controller-revision-hash"]), st.update_revision.as_ref());
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname, Some(format!("web-{i}")));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let claim = spec.volumes.unwrap_or_default().into_iter().find(|v| v.name == "data").expect("data volume");
        assert_eq!(claim.persistent_volume_claim.map(|c| c.claim_name), Some(format!("data-web-{i}")));
        let pvc = pvcs.get(&format!("data-web-{i}")).await.expect("claim exists");
        assert_eq!(pvc.metadata.labels.unwrap_or_default()["app"], "web");
        assert!(pvc.metadata.owner_references.unwrap_or_default().is_empty(), "Retain/Retain: no owners");
    }
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let rev = revs.get(st.update_revision.as_deref().unwrap_or_default()).await.expect("revision");
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.metadata.owner_references.unwrap_or_default()[0].uid, set.metadata.uid.clone().unwrap_or_default());

    // A deleted pod comes back with the same name and the same claim.
    let old_uid = uid(&by_name["web-1"]);
    pods.delete("web-1", &DeleteParams::default()).await.expect("delete web-1");
    eventually("web-1 back and ready", WAIT, || async {
        let p = pods_by_name(&client, "web").await;
        p.get("web-1").is_some_and(|p| uid(p) != old_uid && ready(p))
    })
    .await;
    let back = pods.get("web-1").await.expect("web-1");
    let vols = back.spec.unwrap_or_default().volumes.unwrap_or_default();
    assert!(vols.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == "data-web-1")));

    // A failed pod is deleted and recreated under its name.
    let failed_uid = uid(&pods.get("web-2").await.expect("web-2"));
    let failed = json!({"status": {"phase": "Failed"}});
    pods.patch_status("web-2", &PatchParams::default(), &Patch::Merge(&failed)).await.expect("fail web-2");
    eventually("web-2 recreated", WAIT, || async {
        let p = pods_by_name(&client, "web").await;
        p.get("web-2").is_some_and(|p| uid(p) != failed_uid && ready(p))
    })
    .await;

    // Scale down: web-2 goes before web-1; the claims stay.
    seen.lock().expect("lock").clear();
    sets.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.expect("scale");
    eventually("1 replica", WAIT, || async {
        pods_by_name(&client, "web").await.len() == 1
            && sets.get("web").await.expect("sts").status.unwrap_or_default().replicas == 1
    })
    .await;
    let deletes =
        || -> Vec<String> { seen.lock().expect("lock").iter().filter(|l| l.starts_with("delete")).cloned().collect() };
    eventually("the watch saw 2 deletions", WAIT, || async { deletes().len() >= 2 }).await;
    let log = deletes();
    assert_eq!(log, ["delete web-2", "delete web-1"]);
    for i in 0..3 {
        pvcs.get(&format!("data-web-{i}")).await.expect("claims outlive their pods");
    }

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("upstream's create event", WAIT, || async {
        events.list(&ListParams::default()).await.expect("events").items.iter().any(|e| {
            e.reason.as_deref() == Some("SuccessfulCreate")
                && e.message.as_deref() == Some("create Pod web-0 in StatefulSet web successful")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("statefulset-controller")
        })
    })
    .await;
    let msgs: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(msgs.iter().any(|m| m == "delete Pod web-2 in StatefulSet web successful"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m == "create Claim data-web-0 Pod web-0 in StatefulSet web success"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m == "StatefulSet default/web is recreating failed Pod web-2"), "{msgs:?}");
    watch.abort();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolling_update_partition_and_kubectl_rollout() {
    let mut cluster = Cluster::start().await;
    cluster.start_self_binding_nodes(2).await;
    cluster.start_controller_manager(&["--controllers=statefulset"]);
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let extra = json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
    sets.create(&PostParams::default(), &statefulset("web", 3, "v1", extra)).await.expect("create");
    eventually("3 ready", WAIT, || async {
        sets.get("web").await.expect("sts").status.unwrap_or_default().ready_replicas == Some(3)
    })
    .await;
    let images = || async {
        pods_by_name(&client, "web")
            .await
            .values()
            .map(|p| (p.metadata.name.clone().unwrap_or_default(), image(p)))
            .collect::<Vec<_>>()
    };

    // kubectl describe lists the pods' phases and the controller's events.
    let d = cluster.server.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(33, &d);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let out = k.ok(&["describe", "statefulset", "web"]);
            if out.contains("3 Running / 0 Waiting / 0 Succeeded / 0 Failed")
                && out.contains("create Pod web-2 in StatefulSet web successful")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "describe never showed the pods and events: {out}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    })
    .await
    .expect("kubectl");

    // partition 2: only web-2 moves to v2.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}});
    sets.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.expect("set image");
    eventually("web-2 at v2", WAIT, || async {
        let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
        st.updated_replicas == Some(1) && st.ready_replicas == Some(3) && st.observed_generation == Some(2)
    })
    .await;
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(images().await, pairs(&[("web-0", "v1"), ("web-1", "v1"), ("web-2", "v2")]));
    let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
    assert_ne!(st.current_revision, st.update_revision, "the rollout is not complete below the partition");
    assert_eq!(st.current_replicas, Some(2));

    let dir = cluster.server.cert_dir.path().to_path_buf();
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        let out = Kubectl::new(33, &d).ok(&["rollout", "status", "statefulset/web", "--timeout=30s"]);
        assert!(out.contains("partitioned roll out complete: 1 new pods have been updated"), "{out}");
    })
    .await
    .expect("kubectl");

    // partition 0: the rest follow, highest ordinal first.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .expect("partition 0");
    eventually("all at v2", WAIT, || async {
        let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
        st.updated_replicas == Some(3) && st.ready_replicas == Some(3) && st.current_revision == st.update_revision
    })
    .await;
    assert_eq!(images().await, pairs(&[("web-0", "v2"), ("web-1", "v2"), ("web-2", "v2")]));

    // kubectl 1.27, 1.30 and 1.33: status and history read our revisions; undo flips between
    // v1 and v2 by patching the template from a revision's data.
    let mut expect = "v1";
    for minor in [27, 30, 33] {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || {
            let k = Kubectl::new(minor, &d);
            let out = k.ok(&["rollout", "status", "statefulset/web", "--timeout=30s"]);
            assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "1.{minor}: {out}");
            let out = k.ok(&["rollout", "history", "statefulset/web"]);
            assert!(out.contains("REVISION") && out.lines().count() >= 4, "1.{minor}: {out}");
            // The newest revision's template, as kubectl rebuilds it from the revision's data.
            let newest = out.lines().filter_map(|l| l.split_whitespace().next()?.parse::<i64>().ok()).max();
            let rev = format!("--revision={}", newest.unwrap_or(0));
            let out = k.ok(&["rollout", "history", "statefulset/web", &rev]);
            assert!(
                out.contains("Image:") && out.contains(if expect == "v1" { "v2" } else { "v1" }),
                "1.{minor}: {out}"
            );
            let out = k.ok(&["rollout", "undo", "statefulset/web"]);
            assert!(out.contains("rolled back"), "1.{minor}: {out}");
        })
        .await
        .expect("kubectl");
        eventually(&format!("kubectl 1.{minor} undo to {expect}"), WAIT, || async {
            let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
            let imgs = images().await;
            st.current_revision == st.update_revision
                && st.ready_replicas == Some(3)
                && imgs.len() == 3
                && imgs.iter().all(|(_, i)| i == expect)
        })
        .await;
        let d = dir.clone();
        let want = expect;
        tokio::task::spawn_blocking(move || {
            let out = Kubectl::new(minor, &d).ok(&["rollout", "status", "statefulset/web", "--timeout=30s"]);
            assert!(out.contains("3 new pods have been updated"), "1.{minor} after undo to {want}: {out}");
        })
        .await
        .expect("kubectl");
        expect = if expect == "v1" { "v2" } else { "v1" };
    }
    // Undo reuses the old revision (renumbered), it does not make a new one.
    let revs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let list = revs.list(&ListParams::default().labels("app=web")).await.expect("revisions").items;
    let mut numbers: Vec<i64> = list.iter().map(|r| r.revision).collect();
    numbers.sort();
    assert_eq!(numbers, [4, 5], "two templates, renumbered by each undo: {list:?}");

    // revisionHistoryLimit 0: once v3 is rolled out, only its (live) revision is kept.
    let patch = json!({"spec": {"revisionHistoryLimit": 0,
                                "template": {"spec": {"containers": [{"name": "c", "image": "v3"}]}}}});
    sets.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.expect("v3");
    eventually("history pruned to the live revision", WAIT, || async {
        let st = sets.get("web").await.expect("sts").status.unwrap_or_default();
        let list = revs.list(&ListParams::default().labels("app=web")).await.expect("revisions").items;
        st.updated_replicas == Some(3)
            && st.current_revision == st.update_revision
            && list.len() == 1
            && list[0].metadata.name == st.update_revision
    })
    .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_claim_retention_policy_deletes_claims_on_scale_down_and_with_the_set() {
    let mut cluster = Cluster::start().await;
    cluster.start_self_binding_nodes(1).await;
    cluster.start_controller_manager(&["--controllers=statefulset,garbagecollector"]);
    let client = cluster.client.clone();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let policy = json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
                        "podManagementPolicy": "Parallel"});
    let set = sets.create(&PostParams::default(), &statefulset("db", 2, "v1", policy)).await.expect("create");
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    eventually("2 ready and claims owned by the set", WAIT, || async {
        let st = sets.get("db").await.expect("sts").status.unwrap_or_default();
        let mut owned = 0;
        for i in 0..2 {
            if let Some(c) = pvcs.get_opt(&format!("data-db-{i}")).await.expect("get") {
                let refs = c.metadata.owner_references.unwrap_or_default();
                if refs.len() == 1 && refs[0].uid == set_uid && refs[0].controller == Some(true) {
                    owned += 1;
                }
            }
        }
        st.ready_replicas == Some(2) && owned == 2
    })
    .await;

    // whenScaled=Delete: the claim of the scaled-away pod goes with the pod.
    sets.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.expect("scale");
    eventually("data-db-1 deleted", WAIT, || async { pvcs.get_opt("data-db-1").await.expect("get").is_none() }).await;
    assert!(pvcs.get_opt("data-db-0").await.expect("get").is_some());

    // whenDeleted=Delete: the rest go with the set.
    sets.delete("db", &DeleteParams::default()).await.expect("delete set");
    eventually("data-db-0 deleted", WAIT, || async { pvcs.get_opt("data-db-0").await.expect("get").is_none() }).await;
    cluster.stop().await;
}
