//! The disruption controller against a real apiserver with simulated nodes: a budget over a
//! Deployment's pods counts expected and healthy pods, allows the surplus, refuses an
//! eviction (429) while a pod is unready and allows it once the pod recovers, and follows the
//! Deployment's scale for a percentage maxUnavailable; `kubectl drain` (1.27, 1.30, 1.33)
//! evicts through it.

use crate::common::{active_pods, deployment, Cluster, WAIT};
use component_base::testing::{eventually, Kubectl};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn budget(api: &Api<PodDisruptionBudget>) -> (Option<i64>, PodDisruptionBudgetStatus) {
    let b = api.get("web").await.expect("pdb");
    (b.metadata.generation, b.status.unwrap_or_default())
}

fn counts(st: &PodDisruptionBudgetStatus) -> (i32, i32, i32, i32) {
    (st.expected_pods, st.current_healthy, st.desired_healthy, st.disruptions_allowed)
}

fn allowed_condition(st: &PodDisruptionBudgetStatus) -> Option<(String, String)> {
    let c = st.conditions.as_ref()?.iter().find(|c| c.type_ == "DisruptionAllowed")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// A client that hands a 429 back instead of retrying it (kube's default), so a refused
/// eviction is seen as upstream clients see it.
async fn no_retry_client(cluster: &Cluster) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(cluster.server.kubeconfig()).expect("kubeconfig");
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("config");
    cfg.default_retry = false;
    kube::Client::try_from(cfg).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_status_gates_evictions_and_follows_the_scale() {
    let mut cluster = Cluster::start().await;
    let kubelet = cluster.start_nodes(3).await;
    let client = cluster.client.clone();
    cluster.start_controller_manager(&["--controllers=replicaset,deployment,disruption"]);
    let pods: Api<Pod> = Api::namespaced(no_retry_client(&cluster).await, "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment("web", 3, "v1")).await.expect("deployment");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
    }))
    .expect("pdb");
    pdbs.create(&PostParams::default(), &pdb).await.expect("pdb");

    eventually("3 healthy, 1 disruption allowed", WAIT, || async {
        let (generation, st) = budget(&pdbs).await;
        counts(&st) == (3, 3, 2, 1)
            && st.observed_generation == generation
            && allowed_condition(&st) == Some(("True".into(), "SufficientPods".into()))
    })
    .await;

    // One pod unready: the budget is exhausted and an eviction is refused.
    let mut names: Vec<String> =
        active_pods(&client, "default", "web").await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    let (victim, sick) = (names[0].clone(), names[1].clone());
    kubelet.set_ready("default", &sick, false).await;
    eventually("budget exhausted", WAIT, || async {
        let (_, st) = budget(&pdbs).await;
        counts(&st) == (3, 2, 2, 0) && allowed_condition(&st) == Some(("False".into(), "InsufficientPods".into()))
    })
    .await;
    match pods.evict(&victim, &EvictParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 429, "{e:?}");
            assert_eq!(e.message, "Cannot evict pod as it would violate the pod's disruption budget.");
        }
        other => panic!("eviction must be refused: {other:?}"),
    }
    assert!(pods.get(&victim).await.expect("pod").metadata.deletion_timestamp.is_none());

    // Recovered: the eviction goes through, and the replacement brings the budget back.
    kubelet.set_ready("default", &sick, true).await;
    eventually("one disruption allowed again", WAIT, || async { counts(&budget(&pdbs).await.1) == (3, 3, 2, 1) }).await;
    pods.evict(&victim, &EvictParams::default()).await.expect("eviction allowed");
    eventually("the replacement is healthy and the budget recovered", WAIT, || async {
        let live = active_pods(&client, "default", "web").await;
        live.len() == 3
            && live.iter().all(|p| p.metadata.name.as_deref() != Some(victim.as_str()))
            && counts(&budget(&pdbs).await.1) == (3, 3, 2, 1)
    })
    .await;

    // maxUnavailable as a percentage of the Deployment's scale, rounded up: 34% of 3 is 2.
    let patch = json!({"spec": {"minAvailable": null, "maxUnavailable": "34%"}});
    pdbs.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch pdb");
    eventually("percent budget observed", WAIT, || async {
        let (generation, st) = budget(&pdbs).await;
        st.observed_generation == generation && generation == Some(2) && counts(&st) == (3, 3, 1, 2)
    })
    .await;
    // The expected count is the controller's scale, not the pods there are yet.
    let scale = json!({"spec": {"replicas": 5}});
    deploys.patch("web", &PatchParams::default(), &Patch::Merge(&scale)).await.expect("scale");
    eventually("5 expected, 34% of 5 rounds up to 2 unavailable", WAIT, || async {
        counts(&budget(&pdbs).await.1) == (5, 5, 3, 2)
    })
    .await;

    // kubectl drain evicts through the budget (each version), then uncordon.
    let dir = cluster.server.cert_dir.path().to_path_buf();
    for minor in [27, 30, 33] {
        eventually("5 healthy before draining", WAIT, || async { counts(&budget(&pdbs).await.1) == (5, 5, 3, 2) })
            .await;
        let d = dir.clone();
        let out = tokio::task::spawn_blocking(move || {
            let k = Kubectl::new(minor, &d);
            let out = k.ok(&["drain", "node-0", "--ignore-daemonsets", "--timeout=60s"]);
            k.ok(&["uncordon", "node-0"]);
            out
        })
        .await
        .expect("kubectl");
        assert!(out.contains("node/node-0 drained"), "kubectl 1.{minor}: {out}");
    }
    cluster.stop().await;
}
