//! The whole proxy against a real apiserver, with the recording fake `Iptables`: Services and
//! EndpointSlices written through the API reach the restore input through the watches, the
//! tracker and the sync loop; removing endpoints turns the service into a REJECT, and deleting
//! the Service deletes its chains. A slice change carrying upstream's trigger-time annotation
//! shows up in `kubeproxy_network_programming_duration_seconds` once its sync committed.

use std::time::Duration;

use clap::Parser;
use component_base::testing::{eventually, free_port, Etcd};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use rkube_proxy::iptables::render::svc_chain;
use rkube_proxy::iptables::Fake;
use rkube_proxy::tracker::{ServiceKey, ServicePortName, LAST_CHANGE_TRIGGER_TIME};
use serde_json::json;

use crate::support::{sample, scrape};

const WAIT: Duration = Duration::from_secs(20);

fn last_restore(fake: &Fake) -> String {
    fake.restores().pop().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_slices_from_the_api_become_rules() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let kubeconfig = server.kubeconfig();
    let opts = rkube_proxy::Options::parse_from([
        "rkube-proxy",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--hostname-override",
        "node1",
        "--cluster-cidr",
        "198.18.0.0/16",
        "--min-sync-period",
        "100ms",
        "--metrics-bind-address",
        "127.0.0.1:0",
        "--healthz-bind-address",
        "127.0.0.1:0",
    ]);
    let fake = Fake::new();
    let cancel = server.cancel.child_token();
    let proxy = tokio::spawn(rkube_proxy::run_with(opts, fake.clone(), cancel.clone()));
    let client = rkube_proxy::client(Some(&kubeconfig)).await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}], "selector": {"app": "web"}},
    }))
    .expect("service");
    let svc = services.create(&pp, &svc).await.expect("create service");
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a cluster IP was allocated");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["198.18.1.5"], "nodeName": "node2", "conditions": {"ready": true}}],
    }))
    .expect("slice");
    slices.create(&pp, &slice).await.expect("create slice");

    let jump = format!("\"default/web:http cluster IP\" -m tcp -p tcp -d {cluster_ip} --dport 80");
    eventually("the service's rules are restored", WAIT, || async {
        let r = last_restore(&fake);
        r.contains(&jump) && r.contains("--to-destination 198.18.1.5:8080")
    })
    .await;

    slices.delete("web-1", &DeleteParams::default()).await.expect("delete slice");
    eventually("a service without endpoints is rejected", WAIT, || async {
        last_restore(&fake).contains("\"default/web:http has no endpoints\"")
    })
    .await;

    let chain = svc_chain(&ServicePortName { service: ServiceKey::new("default", "web"), port: "http".into() }, "tcp");
    // The chains went with the endpoints; deleting the Service removes the REJECT too.
    assert!(fake.restores().iter().any(|r| r.contains(&format!("-X {chain}\n"))));
    services.delete("web", &DeleteParams::default()).await.expect("delete service");
    eventually("the deleted service leaves no rules", WAIT, || async {
        let r = last_restore(&fake);
        !r.contains("default/web")
    })
    .await;

    cancel.cancel();
    proxy.await.expect("join").expect("the proxy stops cleanly");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_change_from_the_api_is_observed_as_network_programming_latency() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let kubeconfig = server.kubeconfig();
    let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let opts = rkube_proxy::Options::parse_from([
        "rkube-proxy",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--hostname-override",
        "node1",
        "--min-sync-period",
        "100ms",
        "--metrics-bind-address",
        &metrics_addr.to_string(),
        "--healthz-bind-address",
        "127.0.0.1:0",
    ]);
    let fake = Fake::new();
    let cancel = server.cancel.child_token();
    let proxy = tokio::spawn(rkube_proxy::run_with(opts, fake.clone(), cancel.clone()));
    let client = rkube_proxy::client(Some(&kubeconfig)).await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    services.create(&pp, &svc).await.expect("create service");
    let slice = |ip: &str, trigger: Option<String>| -> EndpointSlice {
        let mut v = json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        });
        if let Some(t) = trigger {
            v["metadata"]["annotations"] = json!({ LAST_CHANGE_TRIGGER_TIME: t });
        }
        serde_json::from_value(v).expect("slice")
    };
    let created = slices.create(&pp, &slice("198.18.1.5", None)).await.expect("create slice");
    eventually("the first endpoint is restored", WAIT, || async {
        last_restore(&fake).contains("--to-destination 198.18.1.5:8080")
    })
    .await;
    let count = |body: &str| sample(body, "kubeproxy_network_programming_duration_seconds_count");
    let body = scrape(metrics_addr).await.expect("scrape");
    assert_eq!(count(&body), Some(0.0), "a slice without the annotation reports nothing:\n{body}");
    assert!(body.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"} 0"), "{body}");

    let written = std::time::SystemTime::now();
    let stamp = chrono::DateTime::<chrono::Utc>::from(written).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut moved = slice("198.18.1.6", Some(stamp));
    moved.metadata.resource_version = created.metadata.resource_version;
    slices.replace("web-1", &pp, &moved).await.expect("replace slice");
    eventually("the change's latency is observed", WAIT, || async {
        scrape(metrics_addr).await.is_ok_and(|b| count(&b) == Some(1.0))
    })
    .await;
    // Observed after the restore that holds the change, and no later than now.
    assert!(last_restore(&fake).contains("--to-destination 198.18.1.6:8080"));
    let body = scrape(metrics_addr).await.expect("scrape");
    let seconds = sample(&body, "kubeproxy_network_programming_duration_seconds_sum").expect("sum");
    let bound = written.elapsed().expect("clock").as_secs_f64();
    assert!(seconds > 0.0 && seconds <= bound, "{seconds} s, at most {bound} s");

    cancel.cancel();
    proxy.await.expect("join").expect("the proxy stops cleanly");
    server.stop().await;
}
