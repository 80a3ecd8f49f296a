//! The EndpointSlice and Endpoints controllers against a real apiserver: a Service's slice
//! lists its pods with the named targetPort resolved, node, zone and conditions; a pod that
//! turns not-ready is marked so in the slice and moves to notReadyAddresses; the `kubernetes`
//! Service is left to the apiserver; a deleted Service's Endpoints go. The slice and the
//! Endpoints rewritten for a readiness change carry that transition's time as
//! `endpoints.kubernetes.io/last-change-trigger-time`.

use crate::common::{active_pods, Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

async fn slices(api: &Api<EndpointSlice>) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels("kubernetes.io/service-name=web")).await.expect("slices").items
}

fn ready_count(s: &[EndpointSlice]) -> (usize, usize) {
    let eps: Vec<_> = s.iter().flat_map(|s| s.endpoints.iter()).collect();
    let ready = eps.iter().filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true)).count();
    (eps.len(), ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_endpoint_slices_and_endpoints_that_follow_readiness() {
    let mut cluster = Cluster::start().await;
    let kubelet = cluster.start_nodes(2).await;
    cluster.start_controller_manager(&["--controllers=replicaset,endpointslice,endpoint,garbagecollector"]);
    let client = cluster.client.clone();
    let pp = PostParams::default();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "c", "image": "v1", "ports": [{"name": "http", "containerPort": 8080}]}]}}},
    }))
    .expect("rs");
    Api::<ReplicaSet>::namespaced(client.clone(), "default").create(&pp, &rs).await.expect("rs");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }))
    .expect("svc");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services.create(&pp, &svc).await.expect("svc");

    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    eventually("3 ready endpoints", WAIT, || async { ready_count(&slices(&slice_api).await) == (3, 3) }).await;
    let s = &slices(&slice_api).await[0];
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("a"), "the Service's labels are copied");
    assert_eq!(s.address_type, "IPv4");
    let ports = s.ports.clone().unwrap_or_default();
    assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), Some(8080)), "named targetPort resolved");
    for e in &s.endpoints {
        assert!(e.node_name.as_deref().is_some_and(|n| n.starts_with("node-")));
        assert!(e.zone.as_deref().is_some_and(|z| z.starts_with("zone-")));
        assert_eq!(e.target_ref.as_ref().and_then(|r| r.kind.as_deref()), Some("Pod"));
    }
    let owner = s.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner[0].kind, "Service");

    let eps: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    eventually("legacy Endpoints", WAIT, || async {
        eps.get_opt("web").await.expect("ep").is_some_and(|e| {
            e.subsets.unwrap_or_default().first().is_some_and(|s| s.addresses.as_ref().map(Vec::len) == Some(3))
        })
    })
    .await;

    // One pod turns not ready.
    let victim = active_pods(&client, "default", "web").await[0].metadata.name.clone().expect("name");
    // Transition times have whole seconds and, as upstream, only a later one counts as a change:
    // flip the pod in a later second than its Ready transition, or there is no trigger time.
    let pods_api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default");
    let became_ready = ready_transition(&pods_api.get(&victim).await.expect("victim")).expect("ready once");
    eventually("a second after the pod became ready", WAIT, || async {
        k8s_openapi::jiff::Timestamp::now().as_second() > became_ready.as_second()
    })
    .await;
    kubelet.set_ready("default", &victim, false).await;
    eventually("2 of 3 ready in the slice", WAIT, || async { ready_count(&slices(&slice_api).await) == (3, 2) }).await;
    // upstream: the rewrite's trigger is the pod's Ready transition, for kube-proxy's
    // network programming latency.
    let pod = pods_api.get(&victim).await.expect("victim");
    let transition = ready_transition(&pod).expect("a Ready transition").to_string();
    let annotations = slices(&slice_api).await[0].metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("endpoints.kubernetes.io/last-change-trigger-time"),
        Some(&transition),
        "{annotations:?}"
    );
    eventually("notReadyAddresses", WAIT, || async {
        let e = eps.get("web").await.expect("ep");
        let s = e.subsets.unwrap_or_default();
        s.first().is_some_and(|s| {
            s.addresses.as_ref().map(Vec::len) == Some(2) && s.not_ready_addresses.as_ref().map(Vec::len) == Some(1)
        })
    })
    .await;
    // The legacy Endpoints carry the same trigger time, as upstream's Endpoints controller writes it.
    let e = eps.get("web").await.expect("ep");
    assert_eq!(
        e.metadata.annotations.unwrap_or_default().get("endpoints.kubernetes.io/last-change-trigger-time"),
        Some(&transition)
    );

    // The apiserver's own `kubernetes` Service keeps the Endpoints the apiserver wrote and gets no slice from us.
    let k = eps.get("kubernetes").await.expect("kubernetes endpoints");
    assert_eq!(k.subsets.unwrap_or_default().len(), 1);
    let ours = slice_api
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes,endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"))
        .await
        .expect("slices");
    assert!(ours.items.is_empty());

    services.delete("web", &DeleteParams::default()).await.expect("delete svc");
    eventually("Endpoints and slices gone", WAIT, || async {
        eps.get_opt("web").await.expect("ep").is_none() && slices(&slice_api).await.is_empty()
    })
    .await;
    cluster.stop().await;
}

/// When the pod's Ready condition last changed.
fn ready_transition(pod: &k8s_openapi::api::core::v1::Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready")?.last_transition_time.as_ref().map(|t| t.0)
}
