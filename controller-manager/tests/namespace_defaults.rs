//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap with
//! the cluster CA; both come back when deleted.

use crate::common::{Cluster, WAIT};
use component_base::testing::eventually;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_get_a_default_service_account_and_the_root_ca() {
    let mut cluster = Cluster::start().await;
    cluster.start_controller_manager(&["--controllers=serviceaccount,root-ca-cert-publisher"]);
    let client = cluster.client.clone();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("ns");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    eventually("default account and CA", WAIT, || async {
        sas.get_opt("default").await.expect("sa").is_some()
            && cms.get_opt("kube-root-ca.crt").await.expect("cm").is_some()
    })
    .await;
    let ca =
        cms.get("kube-root-ca.crt").await.expect("cm").data.unwrap_or_default().remove("ca.crt").unwrap_or_default();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert!(Api::<ServiceAccount>::namespaced(client.clone(), "kube-system")
        .get_opt("default")
        .await
        .expect("sa")
        .is_some());

    sas.delete("default", &DeleteParams::default()).await.expect("delete sa");
    cms.delete("kube-root-ca.crt", &DeleteParams::default()).await.expect("delete cm");
    eventually("both back", WAIT, || async {
        sas.get_opt("default").await.expect("sa").is_some()
            && cms.get_opt("kube-root-ca.crt").await.expect("cm").is_some()
    })
    .await;
    cluster.stop().await;
}
