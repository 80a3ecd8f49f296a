//! The PersistentVolume binder and the local-path provisioner against a real apiserver:
//! static binding (smallest fit), claims pre-bound either way, Retain → Released, the default
//! class given retroactively, WaitForFirstConsumer waiting for the scheduler's node, and
//! Delete through the provisioner (directory and volume gone).

use crate::common::{Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn pv(name: &str, size: &str, class: &str, extra: serde_json::Value) -> PersistentVolume {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "hostPath": {"path": format!("/tmp/{name}")}},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("pv")
}

fn pvc(name: &str, size: &str, class: Option<&str>, extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    });
    if let Some(c) = class {
        v["spec"]["storageClassName"] = json!(c);
    }
    merge(&mut v, extra);
    serde_json::from_value(v).expect("pvc")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            match (b.get_mut(&k), v) {
                (Some(bv @ serde_json::Value::Object(_)), v @ serde_json::Value::Object(_)) => merge(bv, v),
                (_, v) => {
                    b.insert(k, v);
                }
            }
        }
    }
}

async fn claim_bound_to(api: &Api<PersistentVolumeClaim>, name: &str) -> Option<String> {
    let c = api.get_opt(name).await.ok()??;
    let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    bound.then(|| c.spec.and_then(|s| s.volume_name)).flatten()
}

async fn volume_phase(api: &Api<PersistentVolume>, name: &str) -> Option<String> {
    api.get_opt(name).await.ok()??.status.and_then(|s| s.phase)
}

async fn reasons(client: &kube::Client, object: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter().filter(|e| e.involved_object.name.as_deref() == Some(object)).filter_map(|e| e.reason).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binder_binds_static_and_prebound_volumes_and_retains_released_ones() {
    let mut cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    for v in [
        pv("small", "1Gi", "manual", json!({})),
        pv("big", "5Gi", "manual", json!({})),
        pv("huge", "50Gi", "manual", json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        pv(
            "reserved",
            "10Gi",
            "manual",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "wants-reserved"}}}),
        ),
    ] {
        pvs.create(&pp, &v).await.expect("pv");
    }
    cluster.start_controller_manager(&["--controllers=persistentvolume-binder"]);
    eventually("free volumes Available", WAIT, || async {
        volume_phase(&pvs, "small").await.as_deref() == Some("Available")
    })
    .await;

    pvcs.create(&pp, &pvc("data", "1Gi", Some("manual"), json!({}))).await.expect("pvc");
    pvcs.create(&pp, &pvc("wants-reserved", "1Gi", Some("manual"), json!({}))).await.expect("pvc");
    pvcs.create(&pp, &pvc("named", "2Gi", Some("manual"), json!({"spec": {"volumeName": "huge"}}))).await.expect("pvc");
    eventually("three claims bound", WAIT, || async {
        claim_bound_to(&pvcs, "data").await.as_deref() == Some("small")
            && claim_bound_to(&pvcs, "wants-reserved").await.as_deref() == Some("reserved")
            && claim_bound_to(&pvcs, "named").await.as_deref() == Some("huge")
    })
    .await;

    let c = pvcs.get("data").await.expect("claim");
    let a = c.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(a.get("pv.kubernetes.io/bind-completed").map(String::as_str), Some("yes"));
    assert_eq!(a.get("pv.kubernetes.io/bound-by-controller").map(String::as_str), Some("yes"));
    let st = c.status.clone().expect("status");
    assert_eq!(st.capacity.and_then(|c| c.get("storage").cloned()).map(|q| q.0), Some("1Gi".into()));
    assert_eq!(st.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    let small = pvs.get("small").await.expect("pv");
    assert_eq!(small.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.clone()), c.metadata.uid);
    assert_eq!(
        small.metadata.annotations.unwrap_or_default().get("pv.kubernetes.io/bound-by-controller").map(String::as_str),
        Some("yes")
    );
    // A user's pre-bind is not the controller's doing.
    let named = pvcs.get("named").await.expect("claim");
    assert!(!named.metadata.annotations.unwrap_or_default().contains_key("pv.kubernetes.io/bound-by-controller"));
    eventually("bound volumes Bound", WAIT, || async {
        volume_phase(&pvs, "small").await.as_deref() == Some("Bound")
            && volume_phase(&pvs, "huge").await.as_deref() == Some("Bound")
    })
    .await;

    // A claim nothing fits stays Pending.
    pvcs.create(&pp, &pvc("greedy", "100Gi", Some("manual"), json!({}))).await.expect("pvc");
    eventually("greedy Pending with FailedBinding", WAIT, || async {
        reasons(&client, "greedy").await.iter().any(|r| r == "ProvisioningFailed")
    })
    .await;
    assert_eq!(pvcs.get("greedy").await.expect("claim").status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    // Retain: the claim goes, the volume is Released and stays.
    pvcs.delete("named", &DeleteParams::default()).await.expect("delete");
    eventually("huge Released", WAIT, || async { volume_phase(&pvs, "huge").await.as_deref() == Some("Released") })
        .await;
    // A Released volume is not handed to a new claim.
    pvcs.create(&pp, &pvc("after", "20Gi", Some("manual"), json!({}))).await.expect("pvc");
    eventually("after waits", WAIT, || async { !reasons(&client, "after").await.is_empty() }).await;
    assert_eq!(claim_bound_to(&pvcs, "after").await, None);
    assert_eq!(volume_phase(&pvs, "huge").await.as_deref(), Some("Released"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_class_waits_for_first_consumer_then_local_path_provisions_and_deletes() {
    let mut cluster = Cluster::start().await;
    let client = cluster.client.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("local-path");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete",
    }))
    .expect("class");
    Api::<StorageClass>::all(client.clone()).create(&pp, &class).await.expect("class");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}},
    }))
    .expect("node");
    Api::<Node>::all(client.clone()).create(&pp, &node).await.expect("node");
    let root_flag = format!("--local-path-root={}", root.display());
    cluster.start_controller_manager(&["--controllers=persistentvolume-binder,local-path-provisioner", &root_flag]);

    let c = pvcs.create(&pp, &pvc("data", "64Mi", None, json!({}))).await.expect("pvc");
    eventually("default class set retroactively", WAIT, || async {
        pvcs.get("data").await.ok().and_then(|c| c.spec).and_then(|s| s.storage_class_name).as_deref()
            == Some("standard")
    })
    .await;
    eventually("WaitForFirstConsumer event", WAIT, || async {
        reasons(&client, "data").await.iter().any(|r| r == "WaitForFirstConsumer")
    })
    .await;
    assert!(pvs.list(&ListParams::default()).await.expect("list").items.is_empty());

    // What the scheduler's PreBind does.
    let patch = json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-a"}}});
    pvcs.patch("data", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let pv_name = format!("pvc-{}", c.metadata.uid.clone().expect("uid"));
    eventually("claim bound to the provisioned volume", WAIT, || async {
        claim_bound_to(&pvcs, "data").await.as_deref() == Some(pv_name.as_str())
    })
    .await;
    let c = pvcs.get("data").await.expect("claim");
    let a = c.metadata.annotations.unwrap_or_default();
    assert_eq!(a.get("volume.kubernetes.io/storage-provisioner").map(String::as_str), Some("rancher.io/local-path"));
    assert_eq!(
        a.get("volume.beta.kubernetes.io/storage-provisioner").map(String::as_str),
        Some("rancher.io/local-path")
    );
    let v = pvs.get(&pv_name).await.expect("pv");
    let spec = v.spec.expect("spec");
    let dir = std::path::PathBuf::from(spec.host_path.expect("hostPath").path);
    assert_eq!(dir, root.join("node-a").join(format!("{pv_name}_default_data")));
    assert!(dir.is_dir(), "{} made", dir.display());
    let term = &spec.node_affinity.and_then(|a| a.required).expect("node affinity").node_selector_terms[0];
    assert_eq!(term.match_expressions.as_ref().expect("expressions")[0].values, Some(vec!["node-a".to_string()]));
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
    eventually("provisioning events", WAIT, || async {
        let r = reasons(&client, "data").await;
        ["ExternalProvisioning", "Provisioning", "ProvisioningSucceeded"].iter().all(|w| r.iter().any(|x| x == w))
    })
    .await;

    std::fs::write(dir.join("file"), b"data").expect("write");
    pvcs.delete("data", &DeleteParams::default()).await.expect("delete");
    eventually("volume and directory deleted", WAIT, || async {
        pvs.get_opt(&pv_name).await.ok().flatten().is_none() && !dir.exists()
    })
    .await;
    cluster.stop().await;
}
