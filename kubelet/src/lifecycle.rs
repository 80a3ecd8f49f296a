//! Container lifecycle hooks: upstream's `pkg/kubelet/lifecycle` handler runner. postStart runs
//! right after StartContainer (a failure kills the container: FailedPostStartHook); preStop
//! runs before StopContainer, within the grace period (FailedPreStopHook), and the stop then
//! gets what is left of the grace. Handlers: exec (CRI ExecSync), httpGet (from the node to the
//! pod), sleep.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};

use crate::prober::{self, ProbeResult, Target};
use crate::runtime::ContainerRuntime;

/// upstream's minimum grace left for StopContainer after a preStop hook.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

fn pod_desc(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// Runs one handler; `Err` carries upstream-style text for the event.
pub async fn run_handler(
    rt: &dyn ContainerRuntime,
    pod: &Pod,
    c: &Container,
    handler: &LifecycleHandler,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match prober::exec_check(rt, &target.container_id, &cmd, timeout).await {
            ProbeResult::Success | ProbeResult::Warning(_) => Ok(()),
            ProbeResult::Failure(out) | ProbeResult::Unknown(out) => Err(format!(
                "Exec lifecycle hook ({cmd:?}) for Container {:?} in Pod {:?} failed - error: {out}",
                c.name,
                pod_desc(pod)
            )),
        };
    }
    if let Some(h) = &handler.http_get {
        return match prober::http_check(h, target, timeout).await {
            ProbeResult::Success | ProbeResult::Warning(_) => Ok(()),
            ProbeResult::Failure(out) | ProbeResult::Unknown(out) => Err(format!(
                "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {out}",
                h.path.as_deref().unwrap_or("/"),
                c.name,
                pod_desc(pod)
            )),
        };
    }
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Err(format!("Cannot run handler: no handler for Container {:?} in Pod {:?}", c.name, pod_desc(pod)))
}

/// The grace left for StopContainer after a preStop hook that took `spent`.
pub fn remaining_grace(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(MINIMUM_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{api, FakeRuntime};
    use serde_json::json;

    #[test]
    fn stop_gets_what_is_left_of_the_grace_but_at_least_two_seconds() {
        assert_eq!(remaining_grace(Duration::from_secs(30), Duration::from_secs(10)), Duration::from_secs(20));
        assert_eq!(remaining_grace(Duration::from_secs(30), Duration::from_secs(29)), MINIMUM_GRACE);
        assert_eq!(remaining_grace(Duration::from_secs(0), Duration::ZERO), MINIMUM_GRACE);
    }

    #[tokio::test]
    async fn exec_hook_failure_is_described_as_upstream() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox");
        let sb = rt.run_pod_sandbox(api::PodSandboxConfig::default(), "").await.expect("sandbox");
        let cfg = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: "app".into(), attempt: 0 }),
            image: Some(crate::runtime::image_spec("busybox")),
            ..Default::default()
        };
        let id = rt.create_container(&sb, cfg, api::PodSandboxConfig::default()).await.expect("create");
        rt.start_container(&id).await.expect("start");
        rt.push_exec_result(api::ExecSyncResponse { exit_code: 0, ..Default::default() });
        rt.push_exec_result(api::ExecSyncResponse { stderr: b"nope".to_vec(), exit_code: 1, ..Default::default() });
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}})).expect("pod");
        let c: Container = serde_json::from_value(json!({"name": "app"})).expect("container");
        let h: LifecycleHandler =
            serde_json::from_value(json!({"exec": {"command": ["sh", "-c", "exit 1"]}})).expect("h");
        let target = Target { container_id: id.clone(), pod_ip: String::new(), ports: vec![] };
        assert_eq!(run_handler(&rt, &pod, &c, &h, &target, Duration::from_secs(5)).await, Ok(()));
        let err = run_handler(&rt, &pod, &c, &h, &target, Duration::from_secs(5)).await.expect_err("fails");
        assert_eq!(
            err,
            "Exec lifecycle hook ([\"sh\", \"-c\", \"exit 1\"]) for Container \"app\" in Pod \"web_ns(u1)\" failed - error: nope"
        );
        let sleep: LifecycleHandler = serde_json::from_value(json!({"sleep": {"seconds": 0}})).expect("h");
        assert_eq!(run_handler(&rt, &pod, &c, &sleep, &target, Duration::from_secs(5)).await, Ok(()));
    }
}
