//! Persistent volumes end to end on a local cluster with real kubelets and kubectl: the
//! default StorageClass `standard` (rancher.io/local-path, WaitForFirstConsumer) keeps a claim
//! Pending until a pod uses it; then the scheduler picks the node, the local-path provisioner
//! makes a directory there and a volume with that node's affinity, the binder binds it; a
//! second pod on the claim reads what the first wrote; deleting the claim deletes the volume
//! and its directory.

use std::time::Duration;

use rkube_e2e::TestCluster;

const WAIT: Duration = Duration::from_secs(120);

const CLAIM: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 64Mi
"#;

fn pod(name: &str, script: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.36
    command: ["sh", "-c", "{script}"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
"#
    )
}

fn apply(c: &TestCluster, file: &str, text: &str) {
    let path = c.home.path().join(file);
    std::fs::write(&path, text).expect("write manifest");
    c.kubectl_ok(&["apply", "-f", path.to_str().expect("utf-8")]);
}

fn jsonpath(c: &TestCluster, args: &[&str]) -> String {
    c.kubectl_ok(args).trim().to_owned()
}

#[test]
fn default_class_provisions_on_the_pods_node_and_deletes_with_the_claim() {
    let mut c = TestCluster::create("e2epv", 2, &[]);
    let classes = c.kubectl_ok(&["get", "storageclass"]);
    assert!(
        classes.lines().any(|l| l.starts_with("standard (default)") && l.contains("rancher.io/local-path")),
        "{classes}"
    );

    apply(&c, "claim.yaml", CLAIM);
    c.wait_kubectl(
        "the WaitForFirstConsumer event",
        WAIT,
        &["get", "events", "--field-selector", "involvedObject.name=data", "-o", "jsonpath={.items[*].reason}"],
        |r| r.contains("WaitForFirstConsumer"),
    );
    assert_eq!(jsonpath(&c, &["get", "pvc", "data", "-o", "jsonpath={.spec.storageClassName}"]), "standard");
    assert_eq!(jsonpath(&c, &["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]), "Pending");
    assert_eq!(jsonpath(&c, &["get", "pv", "-o", "jsonpath={.items[*].metadata.name}"]), "");

    apply(&c, "writer.yaml", &pod("writer", "echo hello from the writer > /data/msg"));
    c.wait_kubectl("writer Succeeded", WAIT, &["get", "pod", "writer", "-o", "jsonpath={.status.phase}"], |p| {
        p == "Succeeded"
    });
    assert_eq!(jsonpath(&c, &["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]), "Bound");
    let node = jsonpath(&c, &["get", "pod", "writer", "-o", "jsonpath={.spec.nodeName}"]);
    let pv = jsonpath(&c, &["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    let uid = jsonpath(&c, &["get", "pvc", "data", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(pv, format!("pvc-{uid}"));
    let affinity = jsonpath(
        &c,
        &[
            "get",
            "pv",
            &pv,
            "-o",
            "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
        ],
    );
    assert_eq!(affinity, node, "the volume is on the writer's node");
    let dir = c.dir().join("local-path").join(&node).join(format!("{pv}_default_data"));
    assert_eq!(jsonpath(&c, &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"]), dir.display().to_string());
    assert_eq!(std::fs::read_to_string(dir.join("msg")).expect("the file on the host"), "hello from the writer\n");

    apply(&c, "reader.yaml", &pod("reader", "cat /data/msg"));
    c.wait_kubectl("reader Succeeded", WAIT, &["get", "pod", "reader", "-o", "jsonpath={.status.phase}"], |p| {
        p == "Succeeded"
    });
    assert_eq!(jsonpath(&c, &["get", "pod", "reader", "-o", "jsonpath={.spec.nodeName}"]), node);
    assert_eq!(jsonpath(&c, &["logs", "reader"]), "hello from the writer");

    c.kubectl_ok(&["delete", "pod", "writer", "reader", "--wait=true"]);
    c.kubectl_ok(&["delete", "pvc", "data", "--wait=true"]);
    c.wait_kubectl("the volume deleted", WAIT, &["get", "pv", "-o", "jsonpath={.items[*].metadata.name}"], |v| {
        v.trim().is_empty()
    });
    assert!(!dir.exists(), "{} removed", dir.display());
    c.delete_and_check();
}
