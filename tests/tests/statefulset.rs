//! StatefulSets end to end: real kubelets and the scheduler on a local cluster, the real
//! kubectl. A 3-replica StatefulSet behind a headless Service comes up in ordinal order (no pod
//! exists before its predecessor is Ready), a deleted pod comes back under its name, scaling
//! down removes the highest ordinals and scaling up brings them back in order, and `kubectl
//! rollout status|history|undo statefulset` work. No volumes here: claims need the storage
//! provisioner, whose own end-to-end test covers them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rkube_e2e::TestCluster;

const WAIT: Duration = Duration::from_secs(120);

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
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
          name: http
        readinessProbe:
          httpGet:
            path: /
            port: 80
          periodSeconds: 1
"#;

/// name -> (ready, creationTimestamp, Ready lastTransitionTime, uid, hostname, subdomain) of
/// the live `app=web` pods.
type PodRow = (bool, String, String, String, String, String);

fn pods(c: &TestCluster) -> BTreeMap<String, PodRow> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}|{.status.conditions[?(@.type==\"Ready\")].status} {.metadata.creationTimestamp} {.status.conditions[?(@.type==\"Ready\")].lastTransitionTime} {.metadata.uid} {.spec.hostname} {.spec.subdomain}{\"\\n\"}{end}",
    ]);
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let Some((head, rest)) = line.split_once('|') else { continue };
        let mut h = head.split_whitespace();
        let name = h.next().unwrap_or_default().to_string();
        if h.next().is_some() {
            // Terminating.
            continue;
        }
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() < 6 {
            // Not every field is there yet (no Ready condition, say): not ready.
            m.insert(name, (false, String::new(), String::new(), String::new(), String::new(), String::new()));
            continue;
        }
        let row = (w[0] == "True", w[1].into(), w[2].into(), w[3].into(), w[4].into(), w[5].into());
        m.insert(name, row);
    }
    m
}

/// Polls until `n` pods web-0..web-(n-1) are Ready, checking at every look that no pod exists
/// whose predecessors are not all Ready (OrderedReady).
fn wait_ordered(c: &TestCluster, n: usize) -> BTreeMap<String, PodRow> {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = pods(c);
        for name in p.keys() {
            let ord: usize = name.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(0);
            for j in 0..ord {
                let pred = format!("web-{j}");
                assert!(p.get(&pred).is_some_and(|r| r.0), "{name} exists while {pred} is not Ready: {p:?}");
            }
        }
        if p.len() == n && p.values().all(|r| r.0) {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {n} ordered Ready pods: {p:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(c: &TestCluster) -> String {
    c.kubectl_ok(&[
        "get",
        "statefulset",
        "web",
        "-o",
        "jsonpath={.status.readyReplicas} {.status.updatedReplicas} {.status.currentRevision} {.status.updateRevision}",
    ])
}

#[test]
fn statefulset_ordered_identity_scaling_and_rollout_undo() {
    let mut c = TestCluster::create("e2ess", 2, &[]);
    let manifest = c.home.path().join("web.yaml");
    std::fs::write(&manifest, MANIFEST).expect("write manifest");
    c.kubectl_ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);

    // In order: each pod created no earlier than its predecessor became Ready.
    let p = wait_ordered(&c, 3);
    for i in 1..3 {
        let (prev, cur) = (&p[&format!("web-{}", i - 1)], &p[&format!("web-{i}")]);
        assert!(cur.1 >= prev.2, "web-{i} created at {} before web-{} was Ready at {}", cur.1, i - 1, prev.2);
    }
    for i in 0..3 {
        let row = &p[&format!("web-{i}")];
        assert_eq!((row.4.as_str(), row.5.as_str()), (format!("web-{i}").as_str(), "web"), "stable identity");
    }
    let out = c.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(out.contains("3 new pods have been updated"), "{out}");

    // A deleted pod comes back under the same name.
    let old_uid = p["web-1"].3.clone();
    c.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let p = pods(&c);
        if p.get("web-1").is_some_and(|r| r.0 && r.3 != old_uid) && p.len() == 3 {
            assert_eq!(p["web-1"].4, "web-1");
            break;
        }
        assert!(Instant::now() < deadline, "web-1 never came back: {p:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Scale down removes the top ordinals; scale up brings them back in order.
    c.kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"]);
    c.wait_kubectl(
        "1 pod left",
        WAIT,
        &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"],
        |s| s.trim() == "web-0",
    );
    c.kubectl_ok(&["scale", "statefulset", "web", "--replicas=3"]);
    wait_ordered(&c, 3);

    // A template change rolls web-2, web-1, web-0; undo rolls back to the first revision.
    c.kubectl_ok(&["set", "env", "statefulset/web", "STAGE=two"]);
    let out = c.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    assert!(out.contains("3 new pods have been updated"), "{out}");
    c.wait_kubectl(
        "rolled to revision 2",
        WAIT,
        &[
            "get",
            "statefulset",
            "web",
            "-o",
            "jsonpath={.status.updatedReplicas} {.status.currentRevision} {.status.updateRevision}",
        ],
        |s| {
            let w: Vec<&str> = s.split_whitespace().collect();
            w.len() == 3 && w[0] == "3" && w[1] == w[2]
        },
    );
    let history = c.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let out = c.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let out = c.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    assert!(out.contains("3 new pods have been updated"), "{out}");
    c.wait_kubectl(
        "every pod without STAGE",
        WAIT,
        &["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].env}"],
        |s| !s.contains("STAGE"),
    );
    let s = status(&c);
    let w: Vec<&str> = s.split_whitespace().collect();
    assert!(w.len() == 4 && w[0] == "3" && w[2] == w[3], "status after undo: {s}");
    let history = c.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["2", "3"], "undo renumbers revision 1 as 3: {history}");
    c.kubectl_ok(&["delete", "-f", manifest.to_str().expect("utf-8")]);
    c.delete_and_check();
}
