//! kubectl's waiting deletes, which need the garbage collector and the namespace controller:
//! `delete --cascade=foreground` and `delete namespace`, with kubectl 1.27, 1.30 and 1.33.

use clap::Parser;
use component_base::testing::{Etcd, Kubectl};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
  namespace: demo
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - {name: c, image: busybox}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data: {a: b}
"#;

async fn session(minor: u32) {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let cancel = server.cancel.clone();
    let kubeconfig = server.kubeconfig();
    let cm_opts = rkube_controller_manager::Options::parse_from([
        "rkube-controller-manager",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--bind-address",
        "127.0.0.1:0",
        // These pods are made by hand: no ReplicaSet controller may add or remove any.
        "--controllers=garbagecollector,namespace",
    ]);
    let cm = tokio::spawn(rkube_controller_manager::run(cm_opts, cancel.child_token()));
    let dir = server.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let k = Kubectl::new(minor, &dir);
        let manifest = k.home.path().join("demo.yaml");
        std::fs::write(&manifest, MANIFEST).expect("manifest");
        k.ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);
        // A pod the ReplicaSet owns (no ReplicaSet controller yet: the test makes it).
        let uid = k.ok(&["get", "rs", "web", "-n", "demo", "-o", "jsonpath={.metadata.uid}"]);
        let pod = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web-1","namespace":"demo","ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web","uid":"{uid}","controller":true,"blockOwnerDeletion":true}}]}},"spec":{{"containers":[{{"name":"c","image":"busybox"}}]}}}}"#
        );
        let pod_file = k.home.path().join("pod.json");
        std::fs::write(&pod_file, pod).expect("pod");
        k.ok(&["create", "-f", pod_file.to_str().expect("utf-8")]);

        let out = k.ok(&["delete", "rs", "web", "-n", "demo", "--cascade=foreground", "--timeout=60s"]);
        assert!(out.contains("replicaset.apps \"web\" deleted"), "{out}");
        let r = k.run(&["get", "pod", "web-1", "-n", "demo"]);
        assert_eq!(r.code, 1, "the dependent pod must be gone: {}", r.stdout);

        let out = k.ok(&["delete", "namespace", "demo", "--timeout=60s"]);
        assert!(out.contains("namespace \"demo\" deleted"), "{out}");
        let r = k.run(&["get", "namespace", "demo"]);
        assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
    })
    .await
    .expect("kubectl session");
    cancel.cancel();
    let _ = cm.await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_waiting_deletes() {
    session(27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_waiting_deletes() {
    session(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_waiting_deletes() {
    session(33).await;
}
