//! VolumeBinding's PreBind against a real apiserver, with the test playing the PV
//! controller: a WaitForFirstConsumer claim with a static local volume gets that volume's
//! `claimRef` and the pod lands on the volume's node; a claim to provision gets
//! `volume.kubernetes.io/selected-node`; the pod is bound only once its claims are; an
//! unbound Immediate claim keeps the pod Pending with upstream's message.

use crate::common::*;
use component_base::testing::eventually;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn claim_pod(name: &str, claim: &str) -> k8s_openapi::api::core::v1::Pod {
    pod(name, "100m", json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}), json!({}))
}

/// What the PV controller does once it binds a claim.
async fn bind_claim(claims: &Api<PersistentVolumeClaim>, claim: &str, volume: &str) {
    let patch = json!({
        "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": volume},
    });
    claims.patch(claim, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("bind claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_first_consumer_claims_are_prebound_and_the_pod_waits_for_them() {
    let c = Cluster::start().await;
    c.add_node("n1", "4", "8Gi", 110, &[], json!(null)).await;
    c.add_node("n2", "4", "8Gi", 110, &[], json!(null)).await;
    let pp = PostParams::default();
    let classes: Api<StorageClass> = Api::all(c.client.clone());
    for (name, mode, provisioner) in [
        ("local", "WaitForFirstConsumer", "kubernetes.io/no-provisioner"),
        ("standard", "WaitForFirstConsumer", "rancher.io/local-path"),
        ("fast", "Immediate", "example.com/csi"),
    ] {
        let sc: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode,
        }))
        .expect("class");
        classes.create(&pp, &sc).await.expect("class");
    }
    let pvs: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pv-n2"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "local",
                 "local": {"path": "/mnt/disk"},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}},
    }))
    .expect("pv");
    pvs.create(&pp, &pv).await.expect("pv");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), "default");
    for (name, class) in [("static", "local"), ("dyn", "standard"), ("imm", "fast")] {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": class},
        }))
        .expect("claim");
        claims.create(&pp, &pvc).await.expect("claim");
    }
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods(vec![claim_pod("p-static", "static"), claim_pod("p-dyn", "dyn"), claim_pod("p-imm", "imm")]).await;

    // Static: the volume on n2 is pre-bound to the claim; the pod waits for the binder.
    let uid = claims.get("static").await.expect("claim").metadata.uid;
    eventually("pv-n2's claimRef", WAIT, || async {
        let v = pvs.get("pv-n2").await.expect("pv");
        let by_controller =
            v.metadata.annotations.unwrap_or_default().contains_key("pv.kubernetes.io/bound-by-controller");
        by_controller && v.spec.and_then(|s| s.claim_ref).and_then(|r| r.uid) == uid
    })
    .await;
    // Provisioning: the claim learns its node.
    let selected_node = || async {
        let a = claims.get("dyn").await.expect("claim").metadata.annotations.unwrap_or_default();
        a.get("volume.kubernetes.io/selected-node").cloned()
    };
    eventually("dyn's selected node", WAIT, || async { selected_node().await.is_some() }).await;
    let selected = selected_node().await;
    assert_eq!(c.node_of("p-static").await, None, "bound only after its claim");
    assert_eq!(c.node_of("p-dyn").await, None, "bound only after its claim");

    bind_claim(&claims, "static", "pv-n2").await;
    bind_claim(&claims, "dyn", "pvc-dyn").await;
    eventually("both pods bound", WAIT, || async {
        c.node_of("p-static").await.as_deref() == Some("n2") && c.node_of("p-dyn").await == selected
    })
    .await;

    eventually("p-imm Pending with upstream's reason", WAIT, || async {
        let p = c.pods().get("p-imm").await.expect("pod");
        scheduled_condition(&p)
            .and_then(|c| c.2)
            .is_some_and(|m| m.contains("pod has unbound immediate PersistentVolumeClaims"))
    })
    .await;
    assert_eq!(c.node_of("p-imm").await, None);
    // Bound later, it is scheduled (a PVC change moves it back to the active queue).
    bind_claim(&claims, "imm", "pvc-imm").await;
    // The binder would have made that volume; without it the bound claim's volume is missing.
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "pvc-imm"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                 "hostPath": {"path": "/tmp/x"}},
    }))
    .expect("pv");
    pvs.create(&pp, &pv).await.expect("pv");
    eventually("p-imm bound", WAIT, || async { c.node_of("p-imm").await.is_some() }).await;
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}
