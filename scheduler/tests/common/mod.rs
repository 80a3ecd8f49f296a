//! Shared harness: a real etcd and an in-process apiserver, Node objects without kubelets,
//! pods made from JSON, and schedulers started in-process with their own cancel tokens.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use component_base::testing::Etcd;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use rkube_apiserver::testing::TestApiserver;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub api: TestApiserver,
    pub client: kube::Client,
    // Dropped last: the apiserver needs it until it stops.
    pub etcd: Etcd,
}

impl Cluster {
    pub async fn start() -> Self {
        let etcd = Etcd::start();
        let api = TestApiserver::start(&etcd.endpoint).await;
        let client = rkube_scheduler::client(Some(&api.kubeconfig())).await.expect("client");
        Cluster { api, client, etcd }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Starts a scheduler; cancel the token to stop it.
    pub fn scheduler(&self, extra: &[&str]) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let kc = self.api.kubeconfig();
        let mut args = vec!["rkube-scheduler", "--kubeconfig", kc.to_str().expect("utf-8"), "--port", "0"];
        if !extra.iter().any(|a| a.starts_with("--leader-elect")) {
            args.push("--leader-elect=false");
        }
        args.extend_from_slice(extra);
        let opts = rkube_scheduler::Options::parse_from(args);
        let cancel = CancellationToken::new();
        let h = tokio::spawn(rkube_scheduler::run(opts, cancel.clone()));
        (cancel, h)
    }

    pub async fn add_node(&self, name: &str, cpu: &str, mem: &str, pods: u32, labels: &[(&str, &str)], taints: Value) {
        let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.insert("kubernetes.io/hostname".into(), name.into());
        let alloc = json!({"cpu": cpu, "memory": mem, "pods": pods.to_string()});
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l},
            "spec": {"taints": taints},
            "status": {"allocatable": alloc, "capacity": alloc},
        }))
        .expect("node");
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes.create(&PostParams::default(), &node).await.expect("create node");
    }

    pub async fn create_pods(&self, pods: Vec<Pod>) {
        let api = self.pods();
        futures::stream::iter(pods)
            .for_each_concurrent(32, |p| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &p).await.expect("create pod");
                }
            })
            .await;
    }

    pub async fn list_pods(&self) -> Vec<Pod> {
        self.pods().list(&ListParams::default()).await.expect("list").items
    }

    pub async fn node_of(&self, pod: &str) -> Option<String> {
        self.pods().get(pod).await.expect("get").spec.and_then(|s| s.node_name)
    }

    pub async fn events_for(&self, pod: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        api.list(&lp).await.expect("events").items
    }

    pub async fn stop(self) {
        self.api.stop().await;
    }
}

/// A pod from a JSON spec fragment merged into a one-container pod.
pub fn pod(name: &str, cpu: &str, extra_spec: Value, labels: Value) -> Pod {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": cpu, "memory": "10Mi"}}}],
        "terminationGracePeriodSeconds": 0,
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})).expect("pod")
}

/// How many pods are bound to each node.
pub fn per_node(pods: &[Pod]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *m.entry(n).or_default() += 1;
        }
    }
    m
}

pub fn scheduled_condition(p: &Pod) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}
