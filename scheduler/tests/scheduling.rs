//! The scheduler against a real apiserver on a real etcd, with Node objects but no kubelets:
//! spreading, Pending pods with upstream's messages, taints, affinity, anti-affinity,
//! topology spread, an exact-fit burst, preemption, and restarts.

use std::time::Duration;

use crate::common::*;
use component_base::testing::eventually;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_spread_over_equal_nodes_and_get_scheduled_events() {
    let c = Cluster::start().await;
    for n in ["n1", "n2", "n3"] {
        c.add_node(n, "4", "8Gi", 110, &[], json!(null)).await;
    }
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods((0..6).map(|i| pod(&format!("p{i}"), "500m", json!({}), json!({}))).collect()).await;
    eventually("all six bound", WAIT, || async { per_node(&c.list_pods().await).values().sum::<usize>() == 6 }).await;
    let counts = per_node(&c.list_pods().await);
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "LeastAllocated spreads equal pods: {counts:?}"
    );

    let node = c.node_of("p0").await.expect("bound");
    eventually("the Scheduled event", WAIT, || async {
        c.events_for("p0").await.iter().any(|e| {
            e.reason.as_deref() == Some("Scheduled")
                && e.message.as_deref() == Some(format!("Successfully assigned default/p0 to {node}").as_str())
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("default-scheduler")
        })
    })
    .await;
    let p0 = c.pods().get("p0").await.expect("p0");
    assert_eq!(scheduled_condition(&p0).map(|c| c.0).as_deref(), Some("True"));
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_big_pod_stays_pending_with_upstreams_message_until_a_big_node_comes() {
    let c = Cluster::start().await;
    c.add_node("small-1", "2", "8Gi", 110, &[], json!(null)).await;
    c.add_node("small-2", "2", "8Gi", 110, &[], json!(null)).await;
    c.add_node("tainted", "16", "8Gi", 110, &[], json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]))
        .await;
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods(vec![pod("big", "4", json!({}), json!({}))]).await;
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. \
                preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                2 No preemption victims found for incoming pod..";
    eventually("the Unschedulable condition", WAIT, || async {
        let p = c.pods().get("big").await.expect("big");
        scheduled_condition(&p) == Some(("False".into(), Some("Unschedulable".into()), Some(want.into())))
    })
    .await;
    eventually("the FailedScheduling event", WAIT, || async {
        c.events_for("big").await.iter().any(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.type_.as_deref() == Some("Warning")
                && e.message.as_deref() == Some(want)
        })
    })
    .await;
    // It never blocks the queue: a small pod created after it is bound.
    c.create_pods(vec![pod("small", "1", json!({}), json!({}))]).await;
    eventually("the small pod bound", WAIT, || async { c.node_of("small").await.is_some() }).await;
    assert_eq!(c.node_of("big").await, None);

    c.add_node("big-node", "8", "8Gi", 110, &[], json!(null)).await;
    eventually("big bound to big-node", WAIT, || async { c.node_of("big").await.as_deref() == Some("big-node") }).await;
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_affinity_anti_affinity_and_topology_spread() {
    let c = Cluster::start().await;
    let zone = "topology.kubernetes.io/zone";
    c.add_node("a1", "8", "8Gi", 110, &[(zone, "a"), ("disk", "ssd")], json!(null)).await;
    c.add_node("a2", "8", "8Gi", 110, &[(zone, "a")], json!(null)).await;
    c.add_node("b1", "8", "8Gi", 110, &[(zone, "b")], json!(null)).await;
    c.add_node(
        "gpu",
        "8",
        "8Gi",
        110,
        &[(zone, "b"), ("gpu", "true")],
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    .await;
    let (cancel, h) = c.scheduler(&[]);

    // Tolerations and node affinity: only a tolerating pod that asks for the gpu node gets it.
    let tolerating = pod(
        "gpu-job",
        "100m",
        json!({
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}},
        }),
        json!({}),
    );
    let selector = pod("ssd-job", "100m", json!({"nodeSelector": {"disk": "ssd"}}), json!({}));
    let nowhere = pod("nowhere", "100m", json!({"nodeSelector": {"disk": "nvme"}}), json!({}));
    c.create_pods(vec![tolerating, selector, nowhere]).await;
    eventually("gpu-job on gpu", WAIT, || async { c.node_of("gpu-job").await.as_deref() == Some("gpu") }).await;
    eventually("ssd-job on a1", WAIT, || async { c.node_of("ssd-job").await.as_deref() == Some("a1") }).await;
    eventually("nowhere explained", WAIT, || async {
        let p = c.pods().get("nowhere").await.expect("pod");
        scheduled_condition(&p).and_then(|c| c.2).is_some_and(|m| {
            m.starts_with("0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match Pod's node affinity/selector.")
        })
    })
    .await;

    // Required anti-affinity per node: three fit on the three untainted nodes, the fourth waits.
    let anti = |name: &str| {
        pod(
            name,
            "100m",
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
            json!({"app": "solo"}),
        )
    };
    c.create_pods((0..4).map(|i| anti(&format!("solo-{i}"))).collect()).await;
    eventually("three solos bound, one explained", WAIT, || async {
        let pods = c.list_pods().await;
        let solos: Vec<_> = pods.iter().filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("solo-"))).collect();
        let bound: Vec<_> = solos.iter().filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect();
        let waiting = solos.iter().find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none());
        let mut uniq = bound.clone();
        uniq.sort();
        uniq.dedup();
        bound.len() == 3
            && uniq.len() == 3
            && waiting.and_then(|p| scheduled_condition(p)).and_then(|c| c.2).is_some_and(|m| {
                m.starts_with("0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match pod anti-affinity rules.")
            })
    })
    .await;

    // Required affinity: follows the ssd-job's zone.
    let follower = pod(
        "follower",
        "100m",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"role": "leader"}}, "topologyKey": zone}]}}}),
        json!({}),
    );
    let leader =
        pod("leader", "100m", json!({"nodeSelector": {"kubernetes.io/hostname": "b1"}}), json!({"role": "leader"}));
    c.create_pods(vec![leader]).await;
    eventually("leader bound", WAIT, || async { c.node_of("leader").await.is_some() }).await;
    c.create_pods(vec![follower]).await;
    eventually("follower in zone b", WAIT, || async { c.node_of("follower").await.as_deref() == Some("b1") }).await;

    // Hard topology spread over zones (the gpu node is tainted, so zone b is b1 only): 2 and 2.
    let spread = |name: &str| {
        pod(
            name,
            "100m",
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": zone, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
            json!({"app": "spread"}),
        )
    };
    for i in 0..4 {
        c.create_pods(vec![spread(&format!("spread-{i}"))]).await;
        eventually("spread pod bound", WAIT, || async { c.node_of(&format!("spread-{i}")).await.is_some() }).await;
    }
    let pods = c.list_pods().await;
    let mut zones = std::collections::BTreeMap::<&str, usize>::new();
    for p in pods.iter().filter(|p| p.metadata.name.as_deref().is_some_and(|n| n.starts_with("spread-"))) {
        let n = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).expect("bound");
        *zones.entry(if n.starts_with('a') { "a" } else { "b" }).or_default() += 1;
    }
    assert_eq!(zones.into_iter().collect::<Vec<_>>(), [("a", 2), ("b", 2)]);
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_pods_fill_ten_nodes_exactly_without_overcommit() {
    let c = Cluster::start().await;
    for i in 0..10 {
        c.add_node(&format!("n{i}"), "10", "100Gi", 200, &[], json!(null)).await;
    }
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods((0..1000).map(|i| pod(&format!("p{i}"), "100m", json!({}), json!({}))).collect()).await;
    eventually("all 1,000 bound", Duration::from_secs(90), || async {
        per_node(&c.list_pods().await).values().sum::<usize>() == 1000
    })
    .await;
    let counts = per_node(&c.list_pods().await);
    assert_eq!(counts.len(), 10);
    assert!(counts.values().all(|&n| n == 100), "exactly 10 cpu of 100m pods per node: {counts:?}");
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_a_lower_priority_pod_and_nominates_the_node() {
    let c = Cluster::start().await;
    c.add_node("n1", "2", "8Gi", 110, &[], json!(null)).await;
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods(vec![
        pod("low-1", "1", json!({"priority": 1}), json!({})),
        pod("low-2", "1", json!({"priority": 2}), json!({})),
    ])
    .await;
    eventually("both low pods bound", WAIT, || async { per_node(&c.list_pods().await).values().sum::<usize>() == 2 })
        .await;
    c.create_pods(vec![pod("high", "1", json!({"priority": 1000}), json!({}))]).await;
    eventually("high bound to n1", WAIT, || async { c.node_of("high").await.as_deref() == Some("n1") }).await;
    assert!(c.pods().get_opt("low-1").await.expect("get").is_none(), "the lowest-priority pod is the victim");
    assert!(c.pods().get_opt("low-2").await.expect("get").is_some());
    let high = c.pods().get("high").await.expect("high");
    assert_eq!(high.status.and_then(|s| s.nominated_node_name).as_deref(), Some("n1"));
    assert!(c.events_for("low-1").await.iter().any(|e| e.reason.as_deref() == Some("Preempted")));
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_restart_mid_burst_loses_no_pod_and_overcommits_nothing() {
    let c = Cluster::start().await;
    for i in 0..3 {
        c.add_node(&format!("n{i}"), "10", "100Gi", 200, &[], json!(null)).await;
    }
    let (cancel, h) = c.scheduler(&[]);
    c.create_pods((0..300).map(|i| pod(&format!("p{i}"), "100m", json!({}), json!({}))).collect()).await;
    eventually("some bound", WAIT, || async { per_node(&c.list_pods().await).values().sum::<usize>() >= 30 }).await;
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    let (cancel, h) = c.scheduler(&[]);
    eventually("all 300 bound after the restart", WAIT, || async {
        per_node(&c.list_pods().await).values().sum::<usize>() == 300
    })
    .await;
    let counts = per_node(&c.list_pods().await);
    assert!(counts.values().all(|&n| n == 100), "no node over its 10 cpu: {counts:?}");
    cancel.cancel();
    h.await.expect("joined").expect("clean stop");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_between_two_schedulers() {
    let c = Cluster::start().await;
    c.add_node("n1", "8", "8Gi", 110, &[], json!(null)).await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), "kube-system");
    let holder = || async {
        leases.get_opt("kube-scheduler").await.expect("get").and_then(|l| l.spec).and_then(|s| s.holder_identity)
    };
    let (cancel_a, a) = c.scheduler(&["--leader-elect=true"]);
    eventually("a leader", WAIT, || async { holder().await.is_some() }).await;
    let first = holder().await.expect("holder");
    let (cancel_b, b) = c.scheduler(&["--leader-elect=true"]);
    c.create_pods(vec![pod("before", "100m", json!({}), json!({}))]).await;
    eventually("bound by the leader", WAIT, || async { c.node_of("before").await.is_some() }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder().await.as_deref(), Some(first.as_str()), "the standby does not take a held lease");

    // The leader stops (it releases the Lease on the way out); the standby takes over.
    cancel_a.cancel();
    a.await.expect("joined").expect("clean stop");
    let t0 = std::time::Instant::now();
    eventually("the standby leads", Duration::from_secs(15), || async { holder().await.is_some_and(|h| h != first) })
        .await;
    c.create_pods(vec![pod("after", "100m", json!({}), json!({}))]).await;
    eventually("bound by the new leader", Duration::from_secs(15), || async { c.node_of("after").await.is_some() })
        .await;
    assert!(t0.elapsed() < Duration::from_secs(15), "failover took {:?}", t0.elapsed());
    cancel_b.cancel();
    b.await.expect("joined").expect("clean stop");
    c.stop().await;
}

/// A leader that dies without releasing its Lease (a crash: the task is aborted, so no
/// release runs) is replaced once the Lease expires, not before, and the new leader schedules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_leader_is_replaced_after_its_lease_expires() {
    let c = Cluster::start().await;
    c.add_node("n1", "8", "8Gi", 110, &[], json!(null)).await;
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(c.client.clone(), "kube-system");
    let holder = || async {
        leases.get_opt("kube-scheduler").await.expect("get").and_then(|l| l.spec).and_then(|s| s.holder_identity)
    };
    let flags = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=500ms",
    ];
    let (cancel_a, a) = c.scheduler(&flags);
    eventually("a leader", WAIT, || async { holder().await.is_some() }).await;
    let first = holder().await.expect("holder");
    let (cancel_b, b) = c.scheduler(&flags);
    c.create_pods(vec![pod("before", "100m", json!({}), json!({}))]).await;
    eventually("bound by the leader", WAIT, || async { c.node_of("before").await.is_some() }).await;

    a.abort();
    let crashed = std::time::Instant::now();
    drop(cancel_a);
    c.create_pods(vec![pod("after", "100m", json!({}), json!({}))]).await;
    eventually("the standby leads", Duration::from_secs(20), || async { holder().await.is_some_and(|h| h != first) })
        .await;
    let took = crashed.elapsed();
    // The standby waits out the lease it last saw renewed; taking it earlier would let two
    // schedulers act at once when the old leader is only slow.
    assert!(took >= Duration::from_secs(3), "the standby took an unexpired Lease after {took:?}");
    eventually("bound by the new leader", Duration::from_secs(15), || async { c.node_of("after").await.is_some() })
        .await;
    cancel_b.cancel();
    b.await.expect("joined").expect("clean stop");
    c.stop().await;
}
