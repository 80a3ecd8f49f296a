//! Pods: `NAME READY STATUS RESTARTS AGE`, wide `IP NODE NOMINATED NODE READINESS GATES`.
//!
//! The STATUS cell is upstream's summary of the pod: the phase, overridden by the pod's
//! reason, by the first init container that has not finished (`Init:1/3`,
//! `Init:CrashLoopBackOff`, `Init:ExitCode:1`), by the containers' waiting or terminated
//! reasons, and finally by `Terminating` (or `Unknown` for pods on a lost node) while the pod
//! is being deleted.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{age, arr_at, get, int_at, is_deleting, name, opt_bool, since, str_at, time_at};
use super::{col, wide, Printer, AGE, NAME};

pub(super) const PODS: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready containers out of all containers (sidecar init containers included)."),
        col("Status", "string", "Summary of the state of the pod and its containers."),
        col("Restarts", "string", "Container restarts in this pod, and how long ago the last one was."),
        AGE,
        wide("IP", "string", "First IP address allocated to the pod."),
        wide("Node", "string", "Node the pod is bound to."),
        wide(
            "Nominated Node",
            "string",
            "Node on which the scheduler expects the pod to run once preemption completes.",
        ),
        wide("Readiness Gates", "string", "Readiness gates whose condition is True, out of all gates in the spec."),
    ],
    cells: pod_cells,
};

/// upstream: `NodeUnreachablePodReason`, set by the node lifecycle controller.
const NODE_LOST: &str = "NodeLost";

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let summary = summarize(pod);
    let restarts = match summary.last_restart {
        Some(t) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, since(Some(t), now))
        }
        _ => summary.restarts.to_string(),
    };

    // upstream: status.podIPs[0]; v1 conversion fills podIPs from podIP when absent.
    let pod_ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|ip| str_at(ip, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));

    vec![
        name(pod),
        Value::from(format!("{}/{}", summary.ready, summary.total)),
        Value::from(summary.reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or_none(pod_ip)),
        Value::from(or_none(str_at(pod, &["spec", "nodeName"]))),
        Value::from(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        Value::from(readiness_gates(pod)),
    ]
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// What the READY, STATUS and RESTARTS cells are computed from.
struct Summary {
    ready: i64,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<DateTime<Utc>>,
}

/// upstream: an init container with `restartPolicy: Always` is a sidecar that keeps running.
fn is_restartable_init_container(spec: Option<&Value>) -> bool {
    spec.is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
}

/// `lastState.terminated.finishedAt` of a container status.
fn last_termination(status: &Value) -> Option<DateTime<Utc>> {
    get(status, &["lastState", "terminated"])?;
    time_at(status, &["lastState", "terminated", "finishedAt"])
}

/// The `state.terminated` object of a container status, if any.
fn terminated(status: &Value) -> Option<&Value> {
    get(status, &["state", "terminated"]).filter(|t| t.is_object())
}

fn has_condition(pod: &Value, type_: &str) -> bool {
    arr_at(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == type_ && str_at(c, &["status"]) == "True")
}

/// upstream: only the first condition of that type counts.
fn is_initialized(pod: &Value) -> bool {
    arr_at(pod, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Initialized")
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn summarize(pod: &Value) -> Summary {
    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = match str_at(pod, &["status", "reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if arr_at(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let init_spec = |name: &str| init_specs.iter().find(|c| str_at(c, &["name"]) == name);
    let total = arr_at(pod, &["spec", "containers"]).len()
        + init_specs.iter().filter(|c| is_restartable_init_container(Some(c))).count();

    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut sidecar_restarts = 0;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;

    let mut initializing = false;
    for (i, status) in arr_at(pod, &["status", "initContainerStatuses"]).iter().enumerate() {
        let restartable = is_restartable_init_container(init_spec(str_at(status, &["name"])));
        let count = int_at(status, &["restartCount"]);
        restarts += count;
        last_restart = last_restart.max(last_termination(status));
        if restartable {
            sidecar_restarts += count;
            last_sidecar_restart = last_sidecar_restart.max(last_termination(status));
        }

        let term = terminated(status);
        if term.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if restartable && opt_bool(status, &["started"]) == Some(true) {
            if opt_bool(status, &["ready"]) == Some(true) {
                ready += 1;
            }
            continue;
        }
        let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
        reason = if let Some(t) = term {
            match str_at(t, &["reason"]) {
                "" => match int_at(t, &["signal"]) {
                    0 => format!("Init:ExitCode:{}", int_at(t, &["exitCode"])),
                    signal => format!("Init:Signal:{signal}"),
                },
                r => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || is_initialized(pod) {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        // upstream: walked last to first, so the first container's reason wins.
        for status in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(status, &["restartCount"]);
            last_restart = last_restart.max(last_termination(status));

            let waiting_reason = str_at(status, &["state", "waiting", "reason"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated(status) {
                reason = match str_at(t, &["reason"]) {
                    "" => match int_at(t, &["signal"]) {
                        0 => format!("ExitCode:{}", int_at(t, &["exitCode"])),
                        signal => format!("Signal:{signal}"),
                    },
                    r => r.to_string(),
                };
            } else if opt_bool(status, &["ready"]) == Some(true)
                && get(status, &["state", "running"]).is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        // upstream: a pod whose first container completed but another still runs is Running.
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") { "Running".to_string() } else { "NotReady".to_string() };
        }
    }

    if is_deleting(pod) {
        if str_at(pod, &["status", "reason"]) == NODE_LOST {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    Summary { ready, total, reason, restarts, last_restart }
}

/// `<true gates>/<gates>`, or `<none>` without readiness gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = arr_at(pod, &["status", "conditions"]);
    let true_gates = gates
        .iter()
        .filter(|g| {
            let type_ = str_at(g, &["conditionType"]);
            conditions.iter().find(|c| str_at(c, &["type"]) == type_).is_some_and(|c| str_at(c, &["status"]) == "True")
        })
        .count();
    format!("{true_gates}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2024-05-01T11:55:00Z"},
            "spec": spec,
            "status": status,
        })
    }

    fn running(name: &str) -> Value {
        json!({"name": name, "ready": true, "restartCount": 0,
               "state": {"running": {"startedAt": "2024-05-01T11:55:10Z"}}})
    }

    fn status_cell(p: &Value) -> String {
        pod_cells(p, now())[2].as_str().unwrap().to_string()
    }

    #[test]
    fn pod_running_shows_ready_and_age() {
        let p = pod(
            json!({"containers": [{"name": "app"}], "nodeName": "n1"}),
            json!({"phase": "Running", "podIP": "10.0.0.5",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [running("app")]}),
        );
        assert_eq!(
            pod_cells(&p, now()),
            vec![
                json!("web-1"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("5m"),
                json!("10.0.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_status_follows_upstream_reason_logic() {
        let cases: Vec<(&str, Value, Value, &str)> = vec![
            ("pending phase", json!({"containers": [{"name": "app"}]}), json!({"phase": "Pending"}), "Pending"),
            (
                "pod reason overrides phase",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Failed", "reason": "Evicted"}),
                "Evicted",
            ),
            (
                "scheduling gated",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                "SchedulingGated",
            ),
            (
                "waiting reason",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Pending", "containerStatuses": [
                    {"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
                "ImagePullBackOff",
            ),
            (
                "terminated reason",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                "Completed",
            ),
            (
                "terminated without reason shows exit code",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Failed", "containerStatuses": [
                    {"name": "app", "state": {"terminated": {"exitCode": 3}}}]}),
                "ExitCode:3",
            ),
            (
                "terminated without reason shows signal",
                json!({"containers": [{"name": "app"}]}),
                json!({"phase": "Failed", "containerStatuses": [
                    {"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
                "Signal:9",
            ),
            (
                "first container's reason wins",
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                    {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                "CrashLoopBackOff",
            ),
            (
                "completed with a running container and ready pod is Running",
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [
                    {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running("b")]}),
                "Running",
            ),
            (
                "completed with a running container and unready pod is NotReady",
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Running", "containerStatuses": [
                    {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    running("b")]}),
                "NotReady",
            ),
        ];
        for (case, spec, status, want) in cases {
            assert_eq!(status_cell(&pod(spec, status)), want, "{case}");
        }
    }

    #[test]
    fn pod_status_shows_crashloopbackoff_reason() {
        let p = pod(
            json!({"containers": [{"name": "app"}]}),
            json!({"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:58:00Z"}}}]}),
        );
        let cells = pod_cells(&p, now());
        assert_eq!(cells[1], json!("0/1"));
        assert_eq!(cells[2], json!("CrashLoopBackOff"));
        assert_eq!(cells[3], json!("4 (2m ago)"));
    }

    #[test]
    fn pod_status_shows_init_container_progress() {
        let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}],
                          "containers": [{"name": "app"}]});
        let done = json!({"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("second init container running", json!([done, {"name": "i2", "state": {"running": {}}}]), "Init:1/2"),
            (
                "first init container pending",
                json!([{"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}]),
                "Init:0/2",
            ),
            (
                "init container crash looping",
                json!([{"name": "i1", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
                "Init:CrashLoopBackOff",
            ),
            (
                "init container failed with reason",
                json!([{"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]),
                "Init:Error",
            ),
            (
                "init container failed without reason",
                json!([{"name": "i1", "state": {"terminated": {"exitCode": 2}}}]),
                "Init:ExitCode:2",
            ),
            (
                "init container killed by signal",
                json!([{"name": "i1", "state": {"terminated": {"exitCode": 143, "signal": 15}}}]),
                "Init:Signal:15",
            ),
        ];
        for (case, init_statuses, want) in cases {
            let p = pod(
                spec.clone(),
                json!({"phase": "Pending", "initContainerStatuses": init_statuses,
                       "containerStatuses": [{"name": "app",
                           "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            );
            assert_eq!(status_cell(&p), want, "{case}");
        }
    }

    #[test]
    fn pod_ready_counts_started_sidecar_init_containers() {
        let p = pod(
            json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                   "containers": [{"name": "app"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                       "restartCount": 2, "state": {"running": {}},
                       "lastState": {"terminated": {"finishedAt": "2024-05-01T11:30:00Z"}}}],
                   "containerStatuses": [running("app")]}),
        );
        let cells = pod_cells(&p, now());
        assert_eq!(cells[1], json!("2/2"));
        assert_eq!(cells[2], json!("Running"));
        assert_eq!(cells[3], json!("2 (30m ago)"));
    }

    #[test]
    fn pod_restarts_show_last_restart_age() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no restarts", json!([running("a")]), "0"),
            (
                "restarts without a finish time",
                json!([{"name": "a", "restartCount": 3, "state": {"running": {}}}]),
                "3",
            ),
            (
                "latest termination across containers",
                json!([
                    {"name": "a", "restartCount": 1, "state": {"running": {}},
                     "lastState": {"terminated": {"finishedAt": "2024-05-01T10:00:00Z"}}},
                    {"name": "b", "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"finishedAt": "2024-05-01T11:55:00Z"}}}]),
                "3 (5m ago)",
            ),
        ];
        for (case, statuses, want) in cases {
            let p = pod(
                json!({"containers": [{"name": "a"}, {"name": "b"}]}),
                json!({"phase": "Running", "containerStatuses": statuses}),
            );
            assert_eq!(pod_cells(&p, now())[3], json!(want), "{case}");
        }
    }

    #[test]
    fn pod_terminating_when_deletion_timestamp_set() {
        let cases =
            [("Running", "", "Terminating"), ("Succeeded", "", "Completed"), ("Running", "NodeLost", "Unknown")];
        for (phase, reason, want) in cases {
            let mut p = pod(json!({"containers": [{"name": "app"}]}), json!({"phase": phase, "reason": reason}));
            p["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
            if phase == "Succeeded" {
                p["status"]["containerStatuses"] = json!([{"name": "app",
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
            }
            assert_eq!(status_cell(&p), want, "{phase} {reason}");
        }
    }

    #[test]
    fn pod_wide_columns_show_ip_node_and_readiness_gates() {
        let p = pod(
            json!({"containers": [{"name": "app"}], "nodeName": "n2",
                   "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]}),
            json!({"phase": "Pending", "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}],
                   "nominatedNodeName": "n3",
                   "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]}),
        );
        assert_eq!(pod_cells(&p, now())[5..].to_vec(), vec![json!("fd00::5"), json!("n2"), json!("n3"), json!("1/2")]);
    }
}
