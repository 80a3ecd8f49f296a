//! Deployment rollouts end to end: real kubelets on a local cluster, driven by the real kubectl
//! at the three minors the project supports (1.27, 1.30, 1.33), since `kubectl rollout` is
//! client-side logic that changed between them (1.27 still reads the revision annotations
//! through the old code path; `rollout undo` moved to server-side patches in between).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rkube_e2e::{out_text, TestCluster};

const POD_WAIT: Duration = Duration::from_secs(90);

/// The kubectl build `kubectl.1.<minor>` beside the installed dispatcher.
fn kubectl_bin(minor: u32) -> PathBuf {
    let which = Command::new("sh").args(["-c", "readlink -f \"$(command -v kubectl)\""]).output().expect("sh");
    let path = PathBuf::from(String::from_utf8_lossy(&which.stdout).trim());
    let bin = path.parent().expect("kubectl has a directory").join(format!("kubectl.1.{minor}"));
    assert!(bin.exists(), "{} is not installed", bin.display());
    bin
}

fn kubectl_v(c: &TestCluster, minor: u32, args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    Command::new(kubectl_bin(minor))
        .args(args)
        .env("HOME", home.path())
        .env("KUBECONFIG", &c.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

fn kubectl_v_ok(c: &TestCluster, minor: u32, args: &[&str]) -> String {
    let out = kubectl_v(c, minor, args);
    assert!(out.status.success(), "kubectl 1.{minor} {args:?}: {}", out_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_of_template(c: &TestCluster, deploy: &str) -> String {
    c.kubectl_ok(&["get", "deployment", deploy, "-o", "jsonpath={.spec.template.spec.containers[0].env}"])
}

fn replicasets(c: &TestCluster, app: &str) -> Vec<String> {
    c.kubectl_ok(&["get", "rs", "-l", &format!("app={app}"), "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// One Deployment per kubectl minor, each taken through set env → status → history → undo →
/// restart → pause/resume, plus a rollout that can never finish and must report its deadline.
#[test]
fn rollouts_with_kubectl_127_130_133() {
    let mut c = TestCluster::create("e2eo", 2, &[]);
    for minor in [27u32, 30, 33] {
        let d = format!("web{minor}");
        let target = format!("deployment/{d}");
        kubectl_v_ok(&c, minor, &["create", "deployment", &d, "--image=nginx:1.25", "--replicas=3"]);
        kubectl_v_ok(&c, minor, &["rollout", "status", &target, "--timeout=90s"]);
        let ready = c.kubectl_ok(&["get", &target, "-o", "jsonpath={.status.readyReplicas}"]);
        assert_eq!(ready.trim(), "3", "kubectl 1.{minor}: ready replicas after the first rollout");

        // A template change makes revision 2 with a new ReplicaSet.
        kubectl_v_ok(&c, minor, &["set", "env", &target, "STAGE=two"]);
        let status = kubectl_v_ok(&c, minor, &["rollout", "status", &target, "--timeout=90s"]);
        assert!(status.contains("successfully rolled out"), "kubectl 1.{minor}: {status}");
        assert!(env_of_template(&c, &d).contains("two"));
        let history = kubectl_v_ok(&c, minor, &["rollout", "history", &target]);
        let revisions: Vec<&str> =
            history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
        assert_eq!(revisions, ["1", "2"], "kubectl 1.{minor} history:\n{history}");
        let rev2 = kubectl_v_ok(&c, minor, &["rollout", "history", &target, "--revision=2"]);
        assert!(rev2.contains("STAGE") && rev2.contains("two"), "kubectl 1.{minor} revision 2:\n{rev2}");

        // Undo goes back to revision 1's template, which becomes revision 3.
        kubectl_v_ok(&c, minor, &["rollout", "undo", &target]);
        kubectl_v_ok(&c, minor, &["rollout", "status", &target, "--timeout=90s"]);
        assert!(!env_of_template(&c, &d).contains("two"), "kubectl 1.{minor}: undo kept the new env");
        let revision = c.kubectl_ok(&[
            "get",
            &target,
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ]);
        assert_eq!(revision.trim(), "3", "kubectl 1.{minor}: revision after undo");
        assert_eq!(replicasets(&c, &d).len(), 2, "undo reuses revision 1's ReplicaSet");

        // Restart rolls every pod with the restartedAt annotation.
        let before =
            c.kubectl_ok(&["get", "pods", "-l", &format!("app={d}"), "-o", "jsonpath={.items[*].metadata.name}"]);
        kubectl_v_ok(&c, minor, &["rollout", "restart", &target]);
        kubectl_v_ok(&c, minor, &["rollout", "status", &target, "--timeout=90s"]);
        let restarted = c.kubectl_ok(&[
            "get",
            &target,
            "-o",
            "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
        ]);
        assert!(!restarted.trim().is_empty(), "kubectl 1.{minor}: no restartedAt annotation");
        let old: Vec<&str> = before.split_whitespace().collect();
        c.wait_kubectl(
            &format!("kubectl 1.{minor}: every pre-restart pod gone"),
            POD_WAIT,
            &["get", "pods", "-l", &format!("app={d}"), "-o", "jsonpath={.items[*].metadata.name}"],
            |now| now.split_whitespace().count() == 3 && now.split_whitespace().all(|p| !old.contains(&p)),
        );

        // Paused: a template change makes no ReplicaSet until resumed.
        let sets = replicasets(&c, &d).len();
        kubectl_v_ok(&c, minor, &["rollout", "pause", &target]);
        kubectl_v_ok(&c, minor, &["set", "env", &target, "STAGE=paused"]);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(replicasets(&c, &d).len(), sets, "kubectl 1.{minor}: a paused Deployment rolled");
        kubectl_v_ok(&c, minor, &["rollout", "resume", &target]);
        kubectl_v_ok(&c, minor, &["rollout", "status", &target, "--timeout=90s"]);
        assert_eq!(replicasets(&c, &d).len(), sets + 1, "kubectl 1.{minor}: resume rolled out the change");
        kubectl_v_ok(&c, minor, &["delete", &target]);
    }

    // A rollout whose pods never become ready stops at its progress deadline, and rollout
    // status says so and fails.
    c.kubectl_ok(&["create", "deployment", "stuck", "--image=nginx:1.25", "--replicas=2"]);
    c.kubectl_ok(&["rollout", "status", "deployment/stuck", "--timeout=90s"]);
    c.kubectl_ok(&["patch", "deployment", "stuck", "-p", r#"{"spec":{"progressDeadlineSeconds":10}}"#]);
    // The new template's pods run but never pass readiness.
    let never_ready = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx",
        "readinessProbe":{"exec":{"command":["false"]},"periodSeconds":1}}]}}}}"#;
    c.kubectl_ok(&["patch", "deployment", "stuck", "-p", never_ready]);
    for minor in [27u32, 30, 33] {
        let out = kubectl_v(&c, minor, &["rollout", "status", "deployment/stuck", "--timeout=60s"]);
        let text = out_text(&out);
        assert!(!out.status.success(), "kubectl 1.{minor}: rollout status succeeded: {text}");
        assert!(text.contains("exceeded its progress deadline"), "kubectl 1.{minor}: {text}");
    }
    let reason = c.kubectl_ok(&[
        "get",
        "deployment",
        "stuck",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(reason.trim(), "ProgressDeadlineExceeded");
    // The old ReplicaSet keeps serving: maxUnavailable 25% of 2 rounds down to 0.
    let available = c.kubectl_ok(&["get", "deployment", "stuck", "-o", "jsonpath={.status.availableReplicas}"]);
    assert_eq!(available.trim(), "2");
    c.delete_and_check();
}
