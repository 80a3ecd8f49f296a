//! A StatefulSet with storage end to end on a local cluster made with `--shared-storage`:
//! 3 replicas behind a headless Service with a PVC template come up in order, each pod
//! writes its ordinal (and when it first wrote it) to its own volume; `web-1` deleted, with
//! its node cordoned, comes back on another node with the same data (shared local-path
//! volumes have no node affinity); scaling to 1 and back to 3 keeps every claim's data.

use std::time::{Duration, Instant};

use rkube_e2e::TestCluster;

const WAIT: Duration = Duration::from_secs(180);

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
    name: http
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox:1.36
        command: ["sh", "-c", "[ -f /data/ordinal ] || echo ${HOSTNAME##*-} $(date +%s%N) > /data/ordinal; exec sleep 3600"]
        volumeMounts:
        - name: data
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 16Mi
"#;

/// Names of the live (not terminating) web pods, and which of them are Ready.
fn live_pods(c: &TestCluster) -> Vec<(String, bool)> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}|{.metadata.deletionTimestamp}|{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    let mut pods: Vec<(String, bool)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            let (name, deleting, ready) = (f.next()?, f.next()?, f.next()?);
            deleting.is_empty().then(|| (name.to_string(), ready == "True"))
        })
        .collect();
    pods.sort();
    pods
}

/// Waits until `n` pods are Ready, asserting on the way that no pod exists before every
/// lower ordinal is Ready (OrderedReady).
fn wait_in_order(c: &TestCluster, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let pods = live_pods(c);
        for (i, (name, _)) in pods.iter().enumerate() {
            assert_eq!(name, &format!("web-{i}"), "pods are a prefix of the ordinals: {pods:?}");
            assert!(
                pods[..i].iter().all(|(_, ready)| *ready),
                "{name} exists before its predecessors are Ready: {pods:?}"
            );
        }
        if pods.len() == n && pods.iter().all(|(_, r)| *r) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} ready pods in order: {pods:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn data(c: &TestCluster, pod: &str) -> String {
    c.kubectl_ok(&["exec", pod, "--", "cat", "/data/ordinal"]).trim().to_owned()
}

fn node_of(c: &TestCluster, pod: &str) -> String {
    c.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]).trim().to_owned()
}

#[test]
fn statefulset_pods_keep_their_volumes_across_delete_reschedule_and_scale() {
    let mut c = TestCluster::create("e2estss", 2, &["--shared-storage"]);
    let file = c.home.path().join("web.yaml");
    std::fs::write(&file, MANIFEST).expect("write manifest");
    c.kubectl_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    wait_in_order(&c, 3);

    let first: Vec<String> = (0..3).map(|i| data(&c, &format!("web-{i}"))).collect();
    for (i, d) in first.iter().enumerate() {
        assert!(d.starts_with(&format!("{i} ")), "web-{i} wrote its ordinal: {d:?}");
    }
    for i in 0..3 {
        let claim = format!("data-web-{i}");
        let phase = c.kubectl_ok(&["get", "pvc", &claim, "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase.trim(), "Bound", "{claim}");
        let pv = c.kubectl_ok(&["get", "pvc", &claim, "-o", "jsonpath={.spec.volumeName}"]);
        let affinity = c.kubectl_ok(&["get", "pv", pv.trim(), "-o", "jsonpath={.spec.nodeAffinity}"]);
        assert_eq!(affinity.trim(), "", "shared volumes have no node affinity");
    }

    // web-1 comes back, on the other node, with the data it wrote.
    let was_on = node_of(&c, "web-1");
    let old_uid = c.kubectl_ok(&["get", "pod", "web-1", "-o", "jsonpath={.metadata.uid}"]);
    c.kubectl_ok(&["cordon", &was_on]);
    c.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    c.wait_kubectl(
        "a new web-1 Ready",
        WAIT,
        &["get", "pod", "web-1", "-o", "jsonpath={.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}"],
        |o| !o.starts_with(old_uid.trim()) && o.ends_with("True"),
    );
    assert_ne!(node_of(&c, "web-1"), was_on, "rescheduled to the other node");
    assert_eq!(data(&c, "web-1"), first[1], "same volume, same data");
    c.kubectl_ok(&["uncordon", &was_on]);

    // Scale down: the claims stay; scale up: the pods get them back.
    c.kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"]);
    c.wait_kubectl(
        "one pod left",
        WAIT,
        &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"],
        |o| o.trim() == "web-0",
    );
    let claims = c.kubectl_ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(claims.split_whitespace().count(), 3, "claims outlive their pods: {claims}");
    c.kubectl_ok(&["scale", "statefulset", "web", "--replicas=3"]);
    wait_in_order(&c, 3);
    let again: Vec<String> = (0..3).map(|i| data(&c, &format!("web-{i}"))).collect();
    assert_eq!(again, first, "every pod found its own data again");

    c.kubectl_ok(&["delete", "statefulset", "web", "--wait=true"]);
    c.kubectl_ok(&["delete", "pvc", "--all", "--wait=true"]);
    c.wait_kubectl("the volumes deleted", WAIT, &["get", "pv", "-o", "jsonpath={.items[*].metadata.name}"], |v| {
        v.trim().is_empty()
    });
    c.delete_and_check();
}
