//! The pod status the kubelet reports, computed from the spec and what the runtime says:
//! upstream's `getPhase`, the pod conditions, and each container's status. Pure; the status
//! manager patches the result only when it differs from what the API has.

use serde_json::{json, Value};

use k8s_openapi::api::core::v1::Pod;

/// One container as the runtime last reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    pub name: String,
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub restart_count: i32,
    pub state: Observed,
    /// The state before the current one (after a restart), for `lastState`.
    pub last: Option<Observed>,
    pub ready: bool,
    pub started: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    Waiting { reason: String, message: String },
    Running { started_at: String },
    Terminated { exit_code: i32, reason: String, message: String, started_at: String, finished_at: String },
}

impl Observed {
    fn to_json(&self) -> Value {
        match self {
            Observed::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            Observed::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            Observed::Terminated { exit_code, reason, message, started_at, finished_at } => {
                let mut t = json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at});
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                json!({"terminated": t})
            }
        }
    }
}

fn container_status(c: &ObservedContainer) -> Value {
    let mut s = json!({
        "name": c.name,
        "image": c.image,
        "imageID": c.image_id,
        "restartCount": c.restart_count,
        "ready": c.ready,
        "started": c.started,
        "state": c.state.to_json(),
        "lastState": c.last.as_ref().map(Observed::to_json).unwrap_or(json!({})),
    });
    if !c.id.is_empty() {
        s["containerID"] = json!(c.id);
    }
    s
}

/// upstream's getPhase.
pub fn phase(pod: &Pod, init: &[ObservedContainer], containers: &[ObservedContainer]) -> &'static str {
    let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let spec_init = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).map(Vec::len).unwrap_or(0);
    // Init containers not all succeeded yet: Pending, or Failed if one failed for good.
    let init_done = init.iter().filter(|c| matches!(c.state, Observed::Terminated { exit_code: 0, .. })).count();
    if init_done < spec_init {
        let failed = init.iter().any(|c| matches!(c.state, Observed::Terminated { exit_code, .. } if exit_code != 0));
        return if failed && policy == "Never" { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    let expected = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    for c in containers {
        match &c.state {
            Observed::Running { .. } => running += 1,
            Observed::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            Observed::Waiting { .. } => {
                if c.last.is_some() {
                    // Waiting to restart after a run: counts as stopped.
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    unknown += expected.saturating_sub(containers.len());
    if waiting > 0 || unknown > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == expected && expected > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ if succeeded == stopped => "Succeeded",
            _ => "Failed",
        }
    } else {
        "Pending"
    }
}

fn condition(t: &str, ok: bool, reason: Option<&str>, now: &str, previous: Option<&Value>) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .and_then(|p| p.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == t && c["status"] == status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or(json!(now));
    let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let (false, Some(r)) = (ok, reason) {
        c["reason"] = json!(r);
    }
    c
}

/// What the kubelet saw of a pod: addresses, sandbox, containers.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub sandbox_ready: bool,
    pub init: &'a [ObservedContainer],
    pub containers: &'a [ObservedContainer],
}

/// The status to report. `previous` is the status the API has (for transition times).
pub fn pod_status(pod: &Pod, obs: &Observation<'_>, now: &str, previous: Option<&Value>) -> Value {
    let Observation { host_ip, pod_ip, sandbox_ready, init, containers } = *obs;
    let phase = phase(pod, init, containers);
    let spec_init = pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).map(Vec::len).unwrap_or(0);
    let initialized =
        init.iter().filter(|c| matches!(c.state, Observed::Terminated { exit_code: 0, .. })).count() >= spec_init;
    let expected = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    let all_ready = containers.len() == expected && containers.iter().all(|c| c.ready);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let ready_reason = if terminal { "PodCompleted" } else { "ContainersNotReady" };
    let mut status = json!({
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "conditions": [
            condition("PodReadyToStartContainers", sandbox_ready, None, now, previous),
            condition("Initialized", initialized, Some(if terminal { "PodCompleted" } else { "ContainersNotInitialized" }), now, previous),
            condition("Ready", all_ready && !terminal, Some(ready_reason), now, previous),
            condition("ContainersReady", all_ready && !terminal, Some(ready_reason), now, previous),
            condition("PodScheduled", true, None, now, previous),
        ],
        "containerStatuses": containers.iter().map(container_status).collect::<Vec<_>>(),
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init.iter().map(container_status).collect::<Vec<_>>());
    }
    // A host-network pod's IP is the node's (its sandbox has none of its own).
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let pod_ip = pod_ip.filter(|ip| !ip.is_empty()).or((host_network && sandbox_ready).then_some(host_ip));
    if let Some(ip) = pod_ip.filter(|ip| !ip.is_empty()) {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    // The API server sets it at creation; computed here when it did not.
    let qos = pod.status.as_ref().and_then(|s| s.qos_class.clone());
    status["qosClass"] = json!(qos.unwrap_or_else(|| crate::qos::pod_qos(pod).as_str().to_string()));
    if let Some(start) = previous.and_then(|p| p.get("startTime")).cloned() {
        status["startTime"] = start;
    } else {
        status["startTime"] = json!(now);
    }
    status
}

/// Whether a new status differs from the reported one in anything but heartbeat-like times.
pub fn changed(reported: Option<&Value>, new: &Value) -> bool {
    reported != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str, init: usize, containers: usize) -> Pod {
        let c = |i: usize| json!({"name": format!("c{i}"), "image": "busybox"});
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": policy,
                     "initContainers": (0..init).map(|i| json!({"name": format!("i{i}"), "image": "busybox"})).collect::<Vec<_>>(),
                     "containers": (0..containers).map(c).collect::<Vec<_>>()},
            "status": {"qosClass": "BestEffort"},
        }))
        .expect("pod")
    }

    fn observed(name: &str, state: Observed, ready: bool) -> ObservedContainer {
        ObservedContainer {
            name: name.into(),
            id: format!("containerd://{name}"),
            image: "busybox:latest".into(),
            image_id: "sha256:1".into(),
            restart_count: 0,
            state,
            last: None,
            ready,
            started: ready,
        }
    }

    fn running() -> Observed {
        Observed::Running { started_at: "t".into() }
    }

    fn exited(code: i32) -> Observed {
        Observed::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed".into() } else { "Error".into() },
            message: String::new(),
            started_at: "t".into(),
            finished_at: "t".into(),
        }
    }

    #[test]
    fn phase_follows_upstream_get_phase() {
        let cases = [
            ("Always", vec![running(), running()], "Running"),
            (
                "Always",
                vec![running(), Observed::Waiting { reason: "ContainerCreating".into(), message: String::new() }],
                "Pending",
            ),
            ("Never", vec![exited(0), exited(0)], "Succeeded"),
            ("Never", vec![exited(0), exited(1)], "Failed"),
            ("OnFailure", vec![exited(0), exited(0)], "Succeeded"),
            ("OnFailure", vec![exited(0), exited(1)], "Running"),
            ("Always", vec![exited(0), exited(1)], "Running"),
        ];
        for (policy, states, want) in cases {
            let p = pod(policy, 0, 2);
            let cs: Vec<_> =
                states.into_iter().enumerate().map(|(i, s)| observed(&format!("c{i}"), s, false)).collect();
            assert_eq!(phase(&p, &[], &cs), want, "{policy}");
        }
    }

    #[test]
    fn pending_while_init_containers_run() {
        let p = pod("Always", 1, 1);
        assert_eq!(phase(&p, &[observed("i0", running(), false)], &[]), "Pending");
        let never = pod("Never", 1, 1);
        assert_eq!(phase(&never, &[observed("i0", exited(2), false)], &[]), "Failed");
    }

    #[test]
    fn ready_conditions_and_ips() {
        let p = pod("Always", 0, 1);
        let ok = [observed("c0", running(), true)];
        let obs = Observation {
            host_ip: "198.19.0.2",
            pod_ip: Some("198.18.1.5"),
            sandbox_ready: true,
            init: &[],
            containers: &ok,
        };
        let s = pod_status(&p, &obs, "t0", None);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "198.18.1.5");
        assert_eq!(s["qosClass"], "BestEffort");
        let conds: Vec<(String, String)> = s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| (c["type"].as_str().unwrap_or("").into(), c["status"].as_str().unwrap_or("").into()))
            .collect();
        assert!(conds.iter().all(|(_, st)| st == "True"), "{conds:?}");
        let bad = [observed("c0", running(), false)];
        let not_ready = pod_status(&p, &Observation { containers: &bad, ..obs }, "t1", Some(&s));
        assert_eq!(not_ready["conditions"][2]["status"], "False");
        assert_eq!(not_ready["conditions"][2]["reason"], "ContainersNotReady");
        assert_eq!(not_ready["conditions"][2]["lastTransitionTime"], "t1");
        assert_eq!(not_ready["conditions"][0]["lastTransitionTime"], "t0", "unchanged conditions keep their time");
        assert_eq!(not_ready["startTime"], "t0");
    }

    #[test]
    fn host_network_pod_ip_is_the_node_ip() {
        let mut p = pod("Always", 0, 1);
        p.spec.as_mut().expect("spec").host_network = Some(true);
        let ok = [observed("c0", running(), true)];
        let obs =
            Observation { host_ip: "198.19.0.2", pod_ip: Some(""), sandbox_ready: true, init: &[], containers: &ok };
        let s = pod_status(&p, &obs, "t0", None);
        assert_eq!(s["podIP"], "198.19.0.2");
        assert_eq!(s["podIPs"][0]["ip"], "198.19.0.2");
    }

    #[test]
    fn qos_class_is_computed_when_the_api_did_not_set_it() {
        let mut p = pod("Always", 0, 1);
        p.status = None;
        let obs = Observation { host_ip: "h", pod_ip: None, sandbox_ready: false, init: &[], containers: &[] };
        assert_eq!(pod_status(&p, &obs, "t0", None)["qosClass"], "BestEffort");
    }

    #[test]
    fn crashloop_shows_waiting_with_last_state() {
        let mut c = observed(
            "c0",
            Observed::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 20s restarting failed container".into(),
            },
            false,
        );
        c.last = Some(exited(1));
        c.restart_count = 2;
        let s = container_status(&c);
        assert_eq!(s["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(s["restartCount"], 2);
        let p = pod("Always", 0, 1);
        assert_eq!(phase(&p, &[], &[c]), "Running");
    }
}
