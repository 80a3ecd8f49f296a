//! The harness the controller tests share: a real etcd and an in-process apiserver, the
//! controller-manager started (and restartable) in-process, and simulated nodes: Node objects
//! plus a fake kubelet that marks pods bound to them Running (and Ready, unless their image
//! says `never-ready`) through `pods/status` and finishes graceful deletions. With
//! [`Cluster::start_nodes`] the real rkube-scheduler (in-process) binds the pods; the
//! self-binding, batch and pinning variants bind pods themselves. No real kubelet.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use component_base::testing::Etcd;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use rkube_apiserver::testing::TestApiserver;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub server: TestApiserver,
    pub client: kube::Client,
    cms: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    kubelet: Option<(CancellationToken, JoinHandle<()>)>,
    scheduler: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    // A failing test drops everything with the runtime; etcd is killed by its own Drop.
    _etcd: Etcd,
}

impl Cluster {
    pub async fn start() -> Self {
        let etcd = Etcd::start();
        let server = TestApiserver::start(&etcd.endpoint).await;
        let client = rkube_controller_manager::client(Some(&server.kubeconfig())).await.expect("client");
        Cluster { server, client, cms: Vec::new(), kubelet: None, scheduler: None, _etcd: etcd }
    }

    /// Starts the controller-manager with `extra` flags on top of the kubeconfig and a free
    /// health port.
    pub fn start_controller_manager(&mut self, extra: &[&str]) {
        let kubeconfig = self.server.kubeconfig();
        let mut args = vec![
            "rkube-controller-manager",
            "--kubeconfig",
            kubeconfig.to_str().expect("utf-8"),
            "--bind-address",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let opts = rkube_controller_manager::Options::parse_from(args);
        let cancel = self.server.cancel.child_token();
        let handle = tokio::spawn(rkube_controller_manager::run(opts, cancel.clone()));
        self.cms.push((cancel, handle));
    }

    /// Stops the oldest running controller-manager.
    pub async fn stop_controller_manager(&mut self) {
        if !self.cms.is_empty() {
            let (cancel, handle) = self.cms.remove(0);
            cancel.cancel();
            let _ = handle.await;
        }
    }

    /// Starts the real scheduler in-process (no leader election, no health port).
    fn start_scheduler(&mut self) {
        let kubeconfig = self.server.kubeconfig();
        let args = ["rkube-scheduler", "--kubeconfig", kubeconfig.to_str().expect("utf-8"), "--leader-elect=false"];
        let opts = rkube_scheduler::Options::parse_from(args.into_iter().chain(["--port", "0"]));
        let cancel = self.server.cancel.child_token();
        let handle = tokio::spawn(rkube_scheduler::run(opts, cancel.clone()));
        self.scheduler = Some((cancel, handle));
    }

    /// Creates `n` Ready nodes (`node-0` …, 4 CPUs, 8 GiB, 110 pods each), starts the real
    /// scheduler and the fake kubelet for them.
    pub async fn start_nodes(&mut self, n: usize) -> Arc<FakeKubelet> {
        self.start_nodes_bound_by(n, true).await
    }

    /// As [`Cluster::start_nodes`], but the fake kubelet binds pending pods round-robin and no
    /// scheduler runs: for pods whose claims no volume will ever satisfy in the test (the
    /// scheduler's VolumeBinding would rightly keep them pending).
    pub async fn start_self_binding_nodes(&mut self, n: usize) -> Arc<FakeKubelet> {
        self.start_nodes_bound_by(n, false).await
    }

    async fn start_nodes_bound_by(&mut self, n: usize, scheduler: bool) -> Arc<FakeKubelet> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 2)}},
            }))
            .expect("node");
            nodes.create(&PostParams::default(), &node).await.expect("create node");
            let status = json!({"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": format!("198.18.200.{}", i + 1)}],
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            }});
            nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
            }))
            .expect("lease");
            Api::<Lease>::namespaced(self.client.clone(), "kube-node-lease")
                .create(&PostParams::default(), &lease)
                .await
                .expect("lease");
            names.push(name);
        }
        let kubelet = Arc::new(FakeKubelet {
            client: self.client.clone(),
            nodes: std::sync::Mutex::new(names),
            binds: !scheduler,
            next_node: AtomicUsize::new(0),
            next_ip: AtomicU32::new(10),
        });
        if scheduler {
            self.start_scheduler();
        }
        let cancel = self.server.cancel.child_token();
        let k = kubelet.clone();
        let c = cancel.clone();
        let handle = tokio::spawn(async move { k.run(c).await });
        self.kubelet = Some((cancel, handle));
        kubelet
    }

    pub async fn stop(mut self) {
        while !self.cms.is_empty() {
            self.stop_controller_manager().await;
        }
        if let Some((cancel, handle)) = self.kubelet.take() {
            cancel.cancel();
            let _ = handle.await;
        }
        if let Some((cancel, handle)) = self.scheduler.take() {
            cancel.cancel();
            let _ = handle.await;
        }
        self.server.cancel.cancel();
        self.server.stop().await;
    }
}

pub struct FakeKubelet {
    client: kube::Client,
    /// Nodes pods may be bound to (a test removes one to simulate its loss).
    pub nodes: std::sync::Mutex<Vec<String>>,
    /// Whether it binds pending pods round-robin itself (no scheduler running).
    binds: bool,
    next_node: AtomicUsize,
    next_ip: AtomicU32,
}

impl FakeKubelet {
    async fn run(&self, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        let mut heartbeat = tokio::time::interval(Duration::from_millis(200));
        loop {
            let pod = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = heartbeat.tick() => {
                    self.renew_leases().await;
                    continue;
                }
                p = stream.next() => match p { Some(Ok(p)) => p, Some(Err(_)) => continue, None => return },
            };
            self.handle(&pod).await;
        }
    }

    /// The kubelet's heartbeat: renew the Lease of every live node.
    async fn renew_leases(&self) {
        let names = self.nodes.lock().expect("nodes").clone();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        for n in names {
            let patch = json!({"spec": {"renewTime": now_micro()}});
            let _ = leases.patch(&n, &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }

    async fn handle(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if pod.metadata.deletion_timestamp.is_some() {
            // The kubelet confirms a graceful deletion once the containers are gone.
            let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            return;
        }
        let Some(node) = node else {
            if !self.binds {
                return;
            }
            let target = {
                let nodes = self.nodes.lock().expect("nodes");
                if nodes.is_empty() {
                    return;
                }
                nodes[self.next_node.fetch_add(1, Ordering::Relaxed) % nodes.len()].clone()
            };
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                 "target": {"apiVersion": "v1", "kind": "Node", "name": target}});
            let _ = api
                .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
                .await;
            return;
        };
        if !self.nodes.lock().expect("nodes").contains(&node) {
            // A lost node's kubelet reports nothing.
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Running") {
            return;
        }
        let image =
            pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default();
        let ready = if image.contains("never-ready") { "False" } else { "True" };
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = format!("198.18.{}.{}", n / 250, n % 250 + 1);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now});
        let status = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": [cond("PodScheduled", "True"), cond("Initialized", "True"),
                           cond("ContainersReady", ready), cond("Ready", ready)],
        }});
        let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
    }

    /// Sets a pod's Ready condition (and ContainersReady) to `ready`.
    pub async fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let s = if ready { "True" } else { "False" };
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let pod = api.get(name).await.expect("pod");
        let mut conds = pod.status.and_then(|s| s.conditions).unwrap_or_default();
        for c in conds.iter_mut().filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady") {
            c.status = s.into();
            c.last_transition_time =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now.parse().expect("a timestamp")));
        }
        let patch = json!({"status": {"conditions": conds}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("pod status");
    }
}

fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A Deployment of `replicas` pods running `image`, label `app: <name>`.
pub fn deployment(name: &str, replicas: i32, image: &str) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image}]}}},
    }))
    .expect("deployment")
}

/// Active (not terminating) pods with `app: <app>`.
pub async fn active_pods(client: &kube::Client, ns: &str, app: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(&format!("app={app}"));
    api.list(&lp)
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

impl Cluster {
    /// Creates `n` Ready nodes (`node-0` …) and starts the [`BatchKubelet`] for them instead
    /// of the [`FakeKubelet`]: pods also finish, as their image says.
    pub async fn start_batch_nodes(&mut self, n: usize) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            }))
            .expect("node");
            nodes.create(&PostParams::default(), &node).await.expect("create node");
            let status = json!({"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "addresses": [{"type": "InternalIP", "address": format!("198.18.200.{}", i + 1)}],
            }});
            nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
            names.push(name);
        }
        let kubelet = BatchKubelet { client: self.client.clone(), nodes: names, next_node: AtomicUsize::new(0) };
        let cancel = self.server.cancel.child_token();
        let c = cancel.clone();
        let handle = tokio::spawn(async move { kubelet.run(c).await });
        self.kubelet = Some((cancel, handle));
    }
}

/// A fake kubelet for run-to-completion pods: binds pending pods round-robin, marks them
/// Running and Ready, and, when the first container's image is `exit-<code>` (optionally
/// `exit-<code>-after-<ms>`, default 300 ms), finishes them after that delay: phase Succeeded
/// (code 0) or Failed, with the container's terminated state and exit code. Other images keep
/// running. Graceful deletions are confirmed at once.
pub struct BatchKubelet {
    client: kube::Client,
    nodes: Vec<String>,
    next_node: AtomicUsize,
}

impl BatchKubelet {
    async fn run(&self, cancel: CancellationToken) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        // Finishing pods wait in their own tasks; dropping the set on return aborts them.
        let mut finishing = tokio::task::JoinSet::new();
        loop {
            let pod = tokio::select! {
                _ = cancel.cancelled() => return,
                Some(_) = finishing.join_next(), if !finishing.is_empty() => continue,
                p = stream.next() => match p { Some(Ok(p)) => p, Some(Err(_)) => continue, None => return },
            };
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" || phase == "Running" {
                continue;
            }
            if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
                let target = &self.nodes[self.next_node.fetch_add(1, Ordering::Relaxed) % self.nodes.len()];
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                     "target": {"apiVersion": "v1", "kind": "Node", "name": target}});
                let _ = api
                    .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &binding)
                    .await;
                continue;
            }
            let container = pod.spec.as_ref().and_then(|s| s.containers.first()).cloned().unwrap_or_default();
            let image = container.image.clone().unwrap_or_default();
            let started = k8s_openapi::jiff::Timestamp::now().to_string();
            let cond = |t: &str, s: &str, at: &str| json!({"type": t, "status": s, "lastTransitionTime": at});
            let running = json!({"status": {
                "phase": "Running", "startTime": started,
                "conditions": [cond("PodScheduled", "True", &started), cond("Initialized", "True", &started),
                               cond("ContainersReady", "True", &started), cond("Ready", "True", &started)],
                "containerStatuses": [{"name": container.name, "image": image, "imageID": "", "ready": true,
                                       "restartCount": 0, "started": true, "state": {"running": {"startedAt": started}}}],
            }});
            if api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&running)).await.is_err() {
                continue;
            }
            let Some(spec) = image.strip_prefix("exit-") else { continue };
            let (code, after) = match spec.split_once("-after-") {
                Some((c, ms)) => (c.parse::<i32>().unwrap_or(1), ms.parse::<u64>().unwrap_or(300)),
                None => (spec.parse::<i32>().unwrap_or(1), 300),
            };
            finishing.spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
                let done = json!({"status": {
                    "phase": phase,
                    "conditions": [cond("PodScheduled", "True", &started), cond("Initialized", "True", &started),
                                   cond("ContainersReady", "False", &now), cond("Ready", "False", &now)],
                    "containerStatuses": [{"name": container.name, "image": image, "imageID": "", "ready": false,
                                           "restartCount": 0, "started": false,
                                           "state": {"terminated": {"exitCode": code, "reason": reason,
                                                                    "startedAt": started, "finishedAt": now}}}],
                }});
                let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&done)).await;
            });
        }
    }
}

/// Creates a Ready node `name` with `labels` (and its Lease), as `start_nodes` does.
pub async fn create_node(client: &kube::Client, name: &str, labels: serde_json::Value, ip: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("create node");
    let status = json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
        "addresses": [{"type": "InternalIP", "address": ip}],
    }});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
    }))
    .expect("lease");
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease");
}

/// The node a pod is pinned to by required node affinity on `metadata.name` (how the
/// DaemonSet controller places pods), as the scheduler would honour it.
fn pinned_node(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        (r.key == "metadata.name" && r.operator == "In").then(|| r.values.as_ref()?.first().cloned()).flatten()
    })
}

impl Cluster {
    /// Like `start_nodes`, but the kubelet binds a pod pinned to a node by required node
    /// affinity on `metadata.name` to that node (and leaves it pending while that node is not
    /// one of its nodes); every other pod is handled by the [`FakeKubelet`] as usual. Nodes
    /// are labelled `tier: app`. Add nodes later with [`Cluster::add_node`].
    pub async fn start_pinning_nodes(&mut self, n: usize) -> Arc<FakeKubelet> {
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let labels = json!({"kubernetes.io/hostname": name, "tier": "app"});
            create_node(&self.client, &name, labels, &format!("198.18.200.{}", i + 1)).await;
            names.push(name);
        }
        let kubelet = Arc::new(FakeKubelet {
            client: self.client.clone(),
            nodes: std::sync::Mutex::new(names),
            binds: true,
            next_node: AtomicUsize::new(0),
            next_ip: AtomicU32::new(10),
        });
        let cancel = self.server.cancel.child_token();
        let (k, c) = (kubelet.clone(), cancel.clone());
        let handle = tokio::spawn(async move {
            let api: Api<Pod> = Api::all(k.client.clone());
            let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
            let mut heartbeat = tokio::time::interval(Duration::from_millis(200));
            loop {
                let pod = tokio::select! {
                    _ = c.cancelled() => return,
                    _ = heartbeat.tick() => { k.renew_leases().await; continue; }
                    p = stream.next() => match p { Some(Ok(p)) => p, Some(Err(_)) => continue, None => return },
                };
                let unbound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
                match pinned_node(&pod).filter(|_| unbound && pod.metadata.deletion_timestamp.is_none()) {
                    Some(node) => {
                        if !k.nodes.lock().expect("nodes").contains(&node) {
                            continue;
                        }
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let api: Api<Pod> =
                            Api::namespaced(k.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
                        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                             "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                        let _ = api
                            .create_subresource::<_, serde_json::Value>(
                                "binding",
                                &name,
                                &PostParams::default(),
                                &binding,
                            )
                            .await;
                    }
                    None => k.handle(&pod).await,
                }
            }
        });
        self.kubelet = Some((cancel, handle));
        kubelet
    }

    /// Adds a Ready node `name` with `labels` and lets `kubelet` run pods on it.
    pub async fn add_node(&self, kubelet: &FakeKubelet, name: &str, labels: serde_json::Value, ip: &str) {
        // The kubelet knows the node before anyone can place a pod on it.
        kubelet.nodes.lock().expect("nodes").push(name.to_string());
        create_node(&self.client, name, labels, ip).await;
    }
}
