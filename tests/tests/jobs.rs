//! Jobs and CronJobs end to end: real kubelets running busybox on a local cluster, driven by
//! kubectl. A Job of 5 completions with parallelism 2 completes without ever running more than
//! 2 pods; a Job whose pod exits 1 fails after `backoffLimit: 2` retries with
//! BackoffLimitExceeded; a CronJob every minute creates Jobs and keeps
//! `successfulJobsHistoryLimit: 1`; `kubectl create job --from=cronjob/…` runs a (suspended) CronJob's template.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rkube_e2e::TestCluster;

const WAIT: Duration = Duration::from_secs(120);
/// Two schedule minutes and the pods they start.
const CRON_WAIT: Duration = Duration::from_secs(180);

const MANIFESTS: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: para
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
        command: ["sh", "-c", "sleep 1; echo done"]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: doomed
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: fail
        image: busybox:1.36
        command: ["sh", "-c", "exit 1"]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: every-minute
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: busybox:1.36
            command: ["sh", "-c", "echo tick"]
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: template-only
spec:
  schedule: "@hourly"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: hello
            image: busybox:1.36
            command: ["sh", "-c", "echo hello from the template"]
"#;

fn names(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn jobs_and_cronjobs_on_a_local_cluster() {
    let mut c = TestCluster::create("e2ej", 2, &[]);
    let file = c.home.path().join("jobs.yaml");
    std::fs::write(&file, MANIFESTS).expect("write manifests");
    c.kubectl_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let started = Instant::now();

    // Parallelism: sample the running pods until the Job completes.
    let mut most = 0;
    loop {
        let active = c.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "job-name=para",
            "-o",
            "jsonpath={range .items[*]}{.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        let running = |l: &&str| {
            let mut f = l.split_whitespace();
            matches!(f.next(), Some("Pending" | "Running")) && f.next().is_none()
        };
        most = most.max(active.lines().filter(running).count());
        let done =
            c.kubectl_ok(&["get", "job", "para", "-o", "jsonpath={.status.conditions[?(@.type=='Complete')].status}"]);
        if done.trim() == "True" {
            break;
        }
        assert!(started.elapsed() < WAIT, "Job para did not complete");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(most <= 2, "{most} pods of para ran at once (parallelism 2)");
    let succeeded = c.kubectl_ok(&["get", "job", "para", "-o", "jsonpath={.status.succeeded}"]);
    assert_eq!(succeeded.trim(), "5");
    let pods =
        names(&c.kubectl_ok(&["get", "pods", "-l", "job-name=para", "-o", "jsonpath={.items[*].metadata.name}"]));
    assert_eq!(pods.len(), 5, "{pods:?}");
    let table = c.kubectl_ok(&["get", "jobs"]);
    assert!(table.lines().any(|l| l.starts_with("para ") && l.contains("5/5")), "{table}");

    // backoffLimit 2: the first pod and two retries (10 s, then 20 s backoff), then Failed.
    let reason = c.wait_kubectl(
        "Job doomed Failed",
        WAIT,
        &["get", "job", "doomed", "-o", "jsonpath={.status.conditions[?(@.type=='Failed')].reason}"],
        |r| !r.trim().is_empty(),
    );
    assert_eq!(reason.trim(), "BackoffLimitExceeded");
    let failed = c.kubectl_ok(&["get", "job", "doomed", "-o", "jsonpath={.status.failed}"]);
    assert_eq!(failed.trim(), "3");
    let pods =
        names(&c.kubectl_ok(&["get", "pods", "-l", "job-name=doomed", "-o", "jsonpath={.items[*].metadata.name}"]));
    assert_eq!(pods.len(), 3, "{pods:?}");

    // The CronJob: two scheduled runs, only the newest successful Job kept.
    let mut seen = HashSet::new();
    let cron_start = Instant::now();
    loop {
        let jobs = c.kubectl_ok(&[
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[?(@.metadata.ownerReferences[0].name=='every-minute')]}{.metadata.name} {.status.succeeded}{\"\\n\"}{end}",
        ]);
        let lines: Vec<&str> = jobs.lines().filter(|l| !l.trim().is_empty()).collect();
        seen.extend(lines.iter().filter_map(|l| l.split_whitespace().next()).map(str::to_owned));
        let finished = lines.iter().filter(|l| l.split_whitespace().nth(1) == Some("1")).count();
        assert!(finished <= 2, "history limit 1 exceeded for long: {jobs}");
        if seen.len() >= 2 && lines.len() == 1 && finished == 1 {
            break;
        }
        assert!(cron_start.elapsed() < CRON_WAIT, "CronJob history: saw {seen:?}, now {jobs}");
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in &seen {
        let minutes = name.trim_start_matches("every-minute-");
        assert!(minutes.parse::<i64>().is_ok(), "Job {name} is named after its scheduled minute");
    }
    let last = c.kubectl_ok(&["get", "cronjob", "every-minute", "-o", "jsonpath={.status.lastSuccessfulTime}"]);
    assert!(!last.trim().is_empty(), "lastSuccessfulTime is set");

    // kubectl create job --from=cronjob: a manual run of the template.
    c.kubectl_ok(&["create", "job", "manual", "--from=cronjob/template-only"]);
    c.wait_kubectl(
        "Job manual Complete",
        WAIT,
        &["get", "job", "manual", "-o", "jsonpath={.status.conditions[?(@.type=='Complete')].status}"],
        |s| s.trim() == "True",
    );
    let ann = c.kubectl_ok(&[
        "get",
        "job",
        "manual",
        "-o",
        "jsonpath={.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}",
    ]);
    assert_eq!(ann.trim(), "manual");
    let logs = c.kubectl_ok(&["logs", "job/manual"]);
    assert_eq!(logs.trim(), "hello from the template");
    c.delete_and_check();
}
