use super::*;
use crate::events::FakeEvents;
use serde_json::json;
use std::collections::VecDeque;

/// Scripted outcomes per probe kind (by the first command word / handler); records attempts.
#[derive(Default)]
struct Scripted {
    outcomes: Mutex<HashMap<String, VecDeque<ProbeResult>>>,
    attempts: Mutex<Vec<(String, tokio::time::Instant)>>,
}

impl Scripted {
    fn push(&self, key: &str, results: impl IntoIterator<Item = ProbeResult>) {
        self.outcomes.lock().expect("lock").entry(key.into()).or_default().extend(results);
    }
    fn attempts(&self, key: &str) -> usize {
        self.attempts.lock().expect("lock").iter().filter(|(k, _)| k == key).count()
    }
}

#[async_trait]
impl ProbeRunner for Scripted {
    async fn run(&self, probe: &Probe, _target: &Target) -> ProbeResult {
        let key =
            probe.exec.as_ref().and_then(|e| e.command.as_ref()).and_then(|c| c.first().cloned()).unwrap_or_default();
        self.attempts.lock().expect("lock").push((key.clone(), tokio::time::Instant::now()));
        self.outcomes.lock().expect("lock").get_mut(&key).and_then(VecDeque::pop_front).unwrap_or(ProbeResult::Success)
    }
}

fn pod(container: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {"containers": [container]}}))
    .expect("pod")
}

fn exec_probe(key: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut p = json!({"exec": {"command": [key]}});
    for (k, v) in extra.as_object().expect("object") {
        p[k] = v.clone();
    }
    p
}

fn running(id: &str) -> Vec<RunningContainer> {
    vec![RunningContainer { name: "app".into(), id: id.into(), running_for: Duration::ZERO }]
}

/// Lets spawned workers run until they block on the (paused) clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

async fn advance(secs: u64) {
    for _ in 0..secs {
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
    }
}

#[test]
fn thresholds_need_consecutive_results() {
    let p: Probe = serde_json::from_value(json!({"successThreshold": 2, "failureThreshold": 3})).expect("probe");
    let mut t = Thresholds::new(&p);
    let seq: Vec<Option<bool>> =
        [false, false, true, false, false, false, true, true].iter().map(|ok| t.observe(*ok)).collect();
    assert_eq!(seq, [None, None, None, None, None, Some(false), None, Some(true)]);
    let defaults = Thresholds::new(&Probe::default());
    assert_eq!((defaults.success, defaults.failure), (1, 3), "upstream's defaults");
}

#[test]
fn named_and_numeric_ports_resolve() {
    let ports: Vec<ContainerPort> =
        serde_json::from_value(json!([{"name": "http", "containerPort": 8080}])).expect("ports");
    assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
    assert_eq!(resolve_port(&IntOrString::String("http".into()), &ports), Ok(8080));
    assert_eq!(resolve_port(&IntOrString::String("81".into()), &ports), Ok(81));
    assert!(resolve_port(&IntOrString::String("nope".into()), &ports).is_err());
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_after_threshold_becomes_a_verdict_with_unhealthy_events() {
    let runner = Arc::new(Scripted::default());
    runner.push(
        "live",
        [ProbeResult::Failure("boom".into()), ProbeResult::Failure("boom".into()), ProbeResult::Failure("boom".into())],
    );
    let (rec, rx) = Recorder::new();
    let cancel = CancellationToken::new();
    let m = ProberManager::new(runner.clone(), rec, cancel.clone());
    let p = pod(json!({"name": "app", "image": "x",
        "livenessProbe": exec_probe("live", json!({"initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 3}))}));
    m.sync_pod(&p, &running("c1"), "198.18.1.2");
    settle().await;
    advance(4).await;
    assert_eq!(runner.attempts("live"), 0, "nothing before initialDelaySeconds");
    advance(1).await;
    assert_eq!(runner.attempts("live"), 1);
    assert!(m.verdicts(&["c1".into()]).liveness_failed.is_empty(), "one failure is below the threshold");
    advance(4).await;
    assert_eq!(runner.attempts("live"), 3);
    assert_eq!(m.verdicts(&["c1".into()]).liveness_failed, HashSet::from(["c1".to_string()]));
    advance(10).await;
    assert_eq!(runner.attempts("live"), 3, "a failed container is not probed until it restarts");

    // The restarted container gets a fresh worker and a fresh result.
    m.sync_pod(&p, &running("c2"), "198.18.1.2");
    assert!(m.verdicts(&["c1".into(), "c2".into()]).liveness_failed.is_empty());
    cancel.cancel();
    m.wait().await;
    // The recorder's last sender goes with the manager: the event writer then drains and ends.
    drop(m);
    let sink = Arc::new(FakeEvents::default());
    events::run(sink.clone(), rx, "n".into(), CancellationToken::new()).await;
    assert_eq!(
        sink.summary(),
        [("Warning".to_string(), "Unhealthy".to_string(), "Liveness probe failed: boom".to_string(), 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn readiness_needs_success_threshold_and_drops_on_failures() {
    let runner = Arc::new(Scripted::default());
    runner.push(
        "ready",
        [
            ProbeResult::Success,
            ProbeResult::Success,
            ProbeResult::Failure("no".into()),
            ProbeResult::Failure("no".into()),
        ],
    );
    let (rec, _rx) = Recorder::new();
    let cancel = CancellationToken::new();
    let m = ProberManager::new(runner.clone(), rec, cancel.clone());
    let spec = json!({"name": "app", "image": "x",
        "readinessProbe": exec_probe("ready", json!({"periodSeconds": 1, "successThreshold": 2, "failureThreshold": 2}))});
    let p = pod(spec.clone());
    let c: Container = serde_json::from_value(spec).expect("container");
    m.sync_pod(&p, &running("c1"), "");
    assert!(!m.ready(&c, "c1"), "not ready before the first probe");
    settle().await;
    assert!(!m.ready(&c, "c1"), "one success is below successThreshold 2");
    advance(1).await;
    assert!(m.ready(&c, "c1"));
    advance(1).await;
    assert!(m.ready(&c, "c1"), "one failure is below failureThreshold 2");
    advance(1).await;
    assert!(!m.ready(&c, "c1"));
    assert!(m.verdicts(&["c1".into()]).liveness_failed.is_empty(), "readiness never restarts");
    m.remove_pod("u1");
    cancel.cancel();
    m.wait().await;
}

#[tokio::test(start_paused = true)]
async fn startup_probe_gates_liveness_and_readiness() {
    let runner = Arc::new(Scripted::default());
    runner.push(
        "start",
        [ProbeResult::Failure("not yet".into()), ProbeResult::Failure("not yet".into()), ProbeResult::Success],
    );
    let (rec, _rx) = Recorder::new();
    let cancel = CancellationToken::new();
    let m = ProberManager::new(runner.clone(), rec, cancel.clone());
    let spec = json!({"name": "app", "image": "x",
        "startupProbe": exec_probe("start", json!({"periodSeconds": 1, "failureThreshold": 5})),
        "livenessProbe": exec_probe("live", json!({"periodSeconds": 1})),
        "readinessProbe": exec_probe("ready", json!({"periodSeconds": 1}))});
    let p = pod(spec.clone());
    let c: Container = serde_json::from_value(spec).expect("container");
    m.sync_pod(&p, &running("c1"), "");
    settle().await;
    advance(1).await;
    assert!(!m.started(&c, "c1") && !m.ready(&c, "c1"));
    assert_eq!((runner.attempts("live"), runner.attempts("ready")), (0, 0), "held back while starting");
    advance(1).await;
    assert!(m.started(&c, "c1"));
    advance(2).await;
    assert!(runner.attempts("live") >= 1 && runner.attempts("ready") >= 1);
    assert!(m.ready(&c, "c1"));
    assert_eq!(runner.attempts("start"), 3, "the startup probe stops once it succeeded");
    cancel.cancel();
    m.wait().await;
}

#[tokio::test(start_paused = true)]
async fn startup_failure_restarts_and_unknown_changes_nothing() {
    let runner = Arc::new(Scripted::default());
    runner.push("start", [ProbeResult::Unknown("exec failed".into()), ProbeResult::Failure("x".into())]);
    let (rec, _rx) = Recorder::new();
    let cancel = CancellationToken::new();
    let m = ProberManager::new(runner.clone(), rec, cancel.clone());
    let p = pod(json!({"name": "app", "image": "x",
        "startupProbe": exec_probe("start", json!({"periodSeconds": 1, "failureThreshold": 1}))}));
    m.sync_pod(&p, &running("c1"), "");
    settle().await;
    assert!(m.verdicts(&["c1".into()]).startup_failed.is_empty(), "an errored probe changes nothing");
    advance(1).await;
    assert_eq!(m.verdicts(&["c1".into()]).startup_failed, HashSet::from(["c1".to_string()]));
    cancel.cancel();
    m.wait().await;
}

#[tokio::test]
async fn real_runner_exec_maps_exit_codes_and_timeouts() {
    use crate::runtime::{api, FakeRuntime};
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("busybox");
    let sb = rt.run_pod_sandbox(api::PodSandboxConfig::default(), "").await.expect("sandbox");
    let cfg = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "app".into(), attempt: 0 }),
        image: Some(crate::runtime::image_spec("busybox")),
        ..Default::default()
    };
    let id = rt.create_container(&sb, cfg, api::PodSandboxConfig::default()).await.expect("create");
    rt.start_container(&id).await.expect("start");
    rt.push_exec_result(api::ExecSyncResponse { stdout: b"out ".to_vec(), stderr: b"err".to_vec(), exit_code: 1 });
    rt.push_exec_result(api::ExecSyncResponse { exit_code: 0, ..Default::default() });
    rt.fail_next("ExecSync", RuntimeError::DeadlineExceeded { method: "ExecSync", message: "timeout".into() });
    let runner = RealRunner { runtime: rt.clone() };
    let probe: Probe = serde_json::from_value(json!({"exec": {"command": ["cat", "/tmp/healthy"]}})).expect("probe");
    let target = Target { container_id: id, pod_ip: String::new(), ports: vec![] };
    // The scripted failure applies to the next ExecSync, before the scripted results.
    assert_eq!(
        runner.run(&probe, &target).await,
        ProbeResult::Failure("command \"cat /tmp/healthy\" timed out".into())
    );
    assert_eq!(runner.run(&probe, &target).await, ProbeResult::Failure("out err".into()));
    assert_eq!(runner.run(&probe, &target).await, ProbeResult::Success);
}
