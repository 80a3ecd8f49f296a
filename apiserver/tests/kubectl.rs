//! End to end with the real kubectl (1.27, 1.30 and 1.33, the builds beside the installed
//! dispatcher) against a started apiserver on a real etcd.

use std::path::Path;
use std::time::Duration;

use component_base::testing::Kubectl;

use crate::support;
use crate::support::{Etcd, Server};

fn header(out: &str) -> Vec<String> {
    let first = out.lines().next().unwrap_or("");
    // Column names may contain single spaces (NOMINATED NODE); columns are split by 2+.
    first.split("  ").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

async fn kubectl_session(minor: u32) {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let cert_dir = s.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || session(minor, &cert_dir)).await.expect("session");
    drop(s);
}

fn session(minor: u32, cert_dir: &Path) {
    let k = Kubectl::new(minor, cert_dir);
    let manifest = support::repo_root().join("apiserver/tests/testdata/demo.yaml");
    let manifest = manifest.to_str().expect("utf-8");

    // version: the server reports 1.33.
    let v = k.ok(&["version"]);
    assert!(v.contains("Server Version: v1.33") || v.contains("GitVersion:\"v1.33"), "{v}");

    // apply, then apply again: unchanged.
    let out = k.ok(&["apply", "-f", manifest]);
    assert!(out.contains("namespace/demo created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let out = k.ok(&["apply", "-f", manifest]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let out = k.ok(&["apply", "--server-side", "-f", manifest]);
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");

    // get: upstream's Table columns.
    let out = k.ok(&["get", "deployments", "-n", "demo"]);
    assert_eq!(header(&out), ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{out}");
    assert!(out.contains("web"), "{out}");
    let out = k.ok(&["get", "svc", "-n", "demo"]);
    assert_eq!(header(&out), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], "{out}");
    assert!(out.contains("ClusterIP") && out.contains("80/TCP"), "{out}");
    let out = k.ok(&["get", "namespaces"]);
    assert_eq!(header(&out), ["NAME", "STATUS", "AGE"], "{out}");
    let out = k.ok(&["get", "all", "-n", "demo"]);
    assert!(out.contains("deployment.apps/web") && out.contains("service/web"), "{out}");
    let out = k.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]);
    assert!(out.contains("kind: Deployment") && out.contains("replicas: 2"), "{out}");
    let out = k.ok(&["get", "deploy", "-A", "--show-labels"]);
    assert!(out.contains("demo") && out.contains("app=web"), "{out}");

    // describe.
    let out = k.ok(&["describe", "deployment", "web", "-n", "demo"]);
    assert!(out.contains("Name:") && out.contains("web") && out.contains("nginx:1.25"), "{out}");

    // label and annotate.
    k.ok(&["label", "deployment", "web", "-n", "demo", "tier=frontend"]);
    k.ok(&["annotate", "deployment", "web", "-n", "demo", "owner=team-a"]);
    let out = k.ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}",
    ]);
    assert_eq!(out, "frontend team-a");
    k.ok(&["label", "deployment", "web", "-n", "demo", "tier-"]);

    // patch, all three types.
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}}}}"#,
    ]);
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"merged":"yes"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ]);
    let out = k.ok(&[
        "get", "deployment", "web", "-n", "demo", "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.merged} {.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(out, "nginx:1.26 yes 3 80");

    // edit with EDITOR set to a sed script.
    let script = k.home.path().join("edit.sh");
    std::fs::write(&script, "#!/bin/sh\nsed -i 's/owner: team-a/owner: team-b/' \"$1\"\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let r = k.run_env(&["edit", "deployment", "web", "-n", "demo"], &[("EDITOR", script.to_str().expect("utf-8"))]);
    assert_eq!(r.code, 0, "edit: {} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("edited"), "{}", r.stdout);
    assert_eq!(
        k.ok(&["get", "deployment", "web", "-n", "demo", "-o", "jsonpath={.metadata.annotations.owner}"]),
        "team-b"
    );

    // scale.
    let out = k.ok(&["scale", "deployment", "web", "-n", "demo", "--replicas=4"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(k.ok(&["get", "deployment", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}"]), "4");

    // diff: a changed manifest shows the change and exits 1.
    let changed =
        std::fs::read_to_string(manifest).expect("manifest").replace("image: nginx:1.25", "image: nginx:1.27");
    let changed_path = k.home.path().join("changed.yaml");
    std::fs::write(&changed_path, changed).expect("write");
    let r = k.run(&["diff", "-f", changed_path.to_str().expect("utf-8")]);
    assert_eq!(r.code, 1, "diff: {} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("nginx:1.27"), "{}", r.stdout);

    // create configmap / secret (protobuf bodies from 1.32 on).
    let out = k.ok(&["create", "configmap", "settings", "-n", "demo", "--from-literal=color=blue"]);
    assert!(out.contains("configmap/settings created"), "{out}");
    assert_eq!(k.ok(&["get", "cm", "settings", "-n", "demo", "-o", "jsonpath={.data.color}"]), "blue");
    let out = k.ok(&["create", "secret", "generic", "creds", "-n", "demo", "--from-literal=password=s3cret"]);
    assert!(out.contains("secret/creds created"), "{out}");
    assert_eq!(k.ok(&["get", "secret", "creds", "-n", "demo", "-o", "jsonpath={.data.password}"]), "czNjcmV0");

    // api-resources.
    let out = k.ok(&["api-resources"]);
    for line in ["deployments", "deploy", "apps/v1", "Deployment"] {
        assert!(out.contains(line), "{line} missing from api-resources:\n{out}");
    }

    // get -w sees ADDED, MODIFIED and DELETED.
    k.ok(&["create", "configmap", "watched", "-n", "demo", "--from-literal=a=1"]);
    let mut watch = k
        .command(&[
            "get",
            "configmaps",
            "-n",
            "demo",
            "-w",
            "--output-watch-events",
            "--field-selector",
            "metadata.name=watched",
        ])
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(1500));
    k.ok(&["label", "configmap", "watched", "-n", "demo", "x=y"]);
    k.ok(&["delete", "configmap", "watched", "-n", "demo"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().expect("watch output");
    let text = String::from_utf8_lossy(&out.stdout);
    for ev in ["ADDED", "MODIFIED", "DELETED"] {
        assert!(text.contains(ev), "{ev} missing from the watch:\n{text}");
    }

    // errors read as on a real cluster.
    let r = k.run(&["get", "deployment", "nope", "-n", "demo"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Error from server (NotFound): deployments.apps \"nope\" not found"), "{}", r.stderr);

    // delete (background propagation).
    let out = k.ok(&["delete", "service", "web", "-n", "demo"]);
    assert!(out.contains("service \"web\" deleted"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27() {
    kubectl_session(27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30() {
    kubectl_session(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33() {
    kubectl_session(33).await;
}
