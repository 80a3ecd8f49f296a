//! What to do with one pod, from its spec and the runtime's state: upstream's
//! `computePodActions`. Pure: the executor carries the plan out.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub ready: bool,
    pub attempt: u32,
    /// Creation time; the newest sandbox is the pod's current one.
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited { exit_code: i32 },
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub state: State,
    /// `container_hash` of the spec it was created from.
    pub hash: u64,
    pub created_at: i64,
    /// When it exited, in seconds on the kubelet's clock (0 while it has not).
    pub finished_at: u64,
}

/// What the runtime has for one pod (its sandboxes and containers, any attempt).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeState {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<ContainerRecord>,
}

/// Containers (by runtime id) whose probes say they must restart.
#[derive(Debug, Clone, Default)]
pub struct ProbeVerdicts {
    pub liveness_failed: HashSet<String>,
    pub startup_failed: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub id: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox first.
    pub kill_pod: bool,
    pub create_sandbox: bool,
    /// The sandbox to create containers in (when not creating one).
    pub sandbox_id: Option<String>,
    /// The attempt of the sandbox to create.
    pub attempt: u32,
    pub next_init_container: Option<String>,
    pub containers_to_start: Vec<String>,
    pub containers_to_kill: Vec<Kill>,
}

/// A stable hash of a container's spec: a change (other than what may change in place)
/// restarts the container, as upstream's hash does.
pub fn container_hash(c: &Container) -> u64 {
    let text = serde_json::to_string(c).unwrap_or_default();
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

/// The latest record of `name` (highest attempt, then newest).
fn latest<'a>(state: &'a RuntimeState, name: &str) -> Option<&'a ContainerRecord> {
    state.containers.iter().filter(|c| c.name == name).max_by_key(|c| (c.attempt, c.created_at))
}

/// upstream's ShouldContainerBeRestarted for a container that is not running.
fn should_restart(policy: &str, last: Option<&ContainerRecord>) -> bool {
    match last.map(|c| c.state) {
        None | Some(State::Created) | Some(State::Unknown) => true,
        Some(State::Running) => false,
        Some(State::Exited { exit_code }) => match policy {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        },
    }
}

/// The pod's current sandbox, or why a new one is needed: (create, attempt, id).
fn sandbox_changed(state: &RuntimeState) -> (bool, u32, Option<String>) {
    let mut sandboxes: Vec<&Sandbox> = state.sandboxes.iter().collect();
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    match sandboxes.first() {
        None => (true, 0, None),
        Some(s) if !s.ready => (true, s.attempt + 1, Some(s.id.clone())),
        Some(s) => {
            let ready = sandboxes.iter().filter(|s| s.ready).count();
            if ready > 1 {
                (true, s.attempt + 1, Some(s.id.clone()))
            } else {
                (false, s.attempt, Some(s.id.clone()))
            }
        }
    }
}

/// upstream's computePodActions.
pub fn compute(pod: &Pod, state: &RuntimeState, probes: &ProbeVerdicts) -> PodActions {
    let policy = restart_policy(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    let containers = spec.containers.clone();
    let (create, attempt, existing) = sandbox_changed(state);
    let mut actions =
        PodActions { create_sandbox: create, attempt, sandbox_id: existing.clone(), ..Default::default() };

    // Containers the runtime has that the spec no longer names are killed.
    let names: HashSet<&str> = init.iter().chain(containers.iter()).map(|c| c.name.as_str()).collect();
    for c in &state.containers {
        if !names.contains(c.name.as_str()) && c.state == State::Running {
            actions.containers_to_kill.push(Kill {
                id: c.id.clone(),
                name: c.name.clone(),
                reason: "Container is no longer in the pod spec".into(),
            });
        }
    }

    if create {
        // A new sandbox: kill what is left, then start over.
        actions.kill_pod = existing.is_some();
        actions.sandbox_id = None;
        // upstream: with restartPolicy Never, a pod whose containers already ran is not
        // started again in a new sandbox.
        if policy == "Never" && attempt > 0 && !state.containers.is_empty() {
            actions.create_sandbox = false;
            actions.kill_pod = true;
            return actions;
        }
        if let Some(first) = init.first() {
            actions.next_init_container = Some(first.name.clone());
        } else {
            actions.containers_to_start = containers
                .iter()
                .filter(|c| attempt == 0 || should_restart(policy, latest(state, &c.name)))
                .map(|c| c.name.clone())
                .collect();
        }
        return actions;
    }

    // Init containers run one at a time, in order, each to success.
    for ic in &init {
        match latest(state, &ic.name).map(|c| c.state) {
            Some(State::Exited { exit_code: 0 }) => continue,
            Some(State::Running) | Some(State::Created) => return actions,
            Some(State::Exited { .. }) => {
                if policy == "Never" {
                    actions.kill_pod = true;
                } else {
                    actions.next_init_container = Some(ic.name.clone());
                }
                return actions;
            }
            None | Some(State::Unknown) => {
                actions.next_init_container = Some(ic.name.clone());
                return actions;
            }
        }
    }

    let mut keep = 0;
    for c in &containers {
        let last = latest(state, &c.name);
        match last {
            Some(r) if r.state == State::Running => {
                let reason = if r.hash != container_hash(c) {
                    Some(format!("Container {} definition changed", c.name))
                } else if probes.startup_failed.contains(&r.id) {
                    Some(format!("Container {} failed startup probe", c.name))
                } else if probes.liveness_failed.contains(&r.id) {
                    Some(format!("Container {} failed liveness probe", c.name))
                } else {
                    None
                };
                match reason {
                    None => keep += 1,
                    Some(reason) => {
                        // upstream: a killed container restarts unless the policy is Never,
                        // and the Killing event says so.
                        let restart = policy != "Never";
                        let reason = if restart { format!("{reason}, will be restarted") } else { reason };
                        actions.containers_to_kill.push(Kill { id: r.id.clone(), name: c.name.clone(), reason });
                        if restart {
                            actions.containers_to_start.push(c.name.clone());
                        }
                    }
                }
            }
            _ => {
                if should_restart(policy, last) {
                    actions.containers_to_start.push(c.name.clone());
                }
            }
        }
    }
    // Nothing runs and nothing will: the pod is done, its sandbox goes.
    if keep == 0 && actions.containers_to_start.is_empty() {
        actions.kill_pod = true;
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(policy: &str, init: &[&str], containers: &[&str]) -> Pod {
        let c = |n: &&str| json!({"name": n, "image": "busybox"});
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "restartPolicy": policy,
                "initContainers": init.iter().map(c).collect::<Vec<_>>(),
                "containers": containers.iter().map(c).collect::<Vec<_>>(),
            },
        }))
        .expect("pod")
    }

    fn sandbox(id: &str, ready: bool, attempt: u32) -> Sandbox {
        Sandbox { id: id.into(), ready, attempt, created_at: i64::from(attempt) }
    }

    fn record(p: &Pod, name: &str, state: State, attempt: u32) -> ContainerRecord {
        let spec = p.spec.as_ref().expect("spec");
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or(Container { name: name.into(), ..Default::default() });
        ContainerRecord {
            id: format!("{name}-{attempt}"),
            name: name.into(),
            attempt,
            state,
            hash: container_hash(&c),
            created_at: i64::from(attempt),
            finished_at: 0,
        }
    }

    #[test]
    fn new_pod_creates_sandbox_and_starts_first_init_container() {
        let p = pod("Always", &["setup"], &["app", "sidecar"]);
        let a = compute(&p, &RuntimeState::default(), &ProbeVerdicts::default());
        assert!(a.create_sandbox && !a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.next_init_container.as_deref(), Some("setup"));
        assert!(a.containers_to_start.is_empty());
    }

    #[test]
    fn new_pod_without_init_starts_every_container() {
        let p = pod("Always", &[], &["app", "sidecar"]);
        let a = compute(&p, &RuntimeState::default(), &ProbeVerdicts::default());
        assert_eq!(a.containers_to_start, ["app", "sidecar"]);
    }

    #[test]
    fn init_containers_run_in_order_then_app_containers() {
        let p = pod("Always", &["one", "two"], &["app"]);
        let mut st = RuntimeState { sandboxes: vec![sandbox("s", true, 0)], containers: vec![] };
        st.containers.push(record(&p, "one", State::Running, 0));
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert_eq!((a.next_init_container.clone(), a.containers_to_start.len()), (None, 0), "wait for `one`");
        st.containers[0].state = State::Exited { exit_code: 0 };
        assert_eq!(compute(&p, &st, &ProbeVerdicts::default()).next_init_container.as_deref(), Some("two"));
        st.containers.push(record(&p, "two", State::Exited { exit_code: 0 }, 0));
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert_eq!(a.containers_to_start, ["app"]);
        assert_eq!(a.sandbox_id.as_deref(), Some("s"));
    }

    #[test]
    fn failed_init_container_is_retried_unless_policy_never() {
        let p = pod("OnFailure", &["init"], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", true, 0)],
            containers: vec![record(&p, "init", State::Exited { exit_code: 1 }, 0)],
        };
        assert_eq!(compute(&p, &st, &ProbeVerdicts::default()).next_init_container.as_deref(), Some("init"));
        let never = pod("Never", &["init"], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", true, 0)],
            containers: vec![record(&never, "init", State::Exited { exit_code: 1 }, 0)],
        };
        assert!(compute(&never, &st, &ProbeVerdicts::default()).kill_pod);
    }

    #[test]
    fn restart_policy_decides_exited_containers() {
        for (policy, code, restart) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 1, false),
        ] {
            let p = pod(policy, &[], &["app"]);
            let st = RuntimeState {
                sandboxes: vec![sandbox("s", true, 0)],
                containers: vec![record(&p, "app", State::Exited { exit_code: code }, 0)],
            };
            let a = compute(&p, &st, &ProbeVerdicts::default());
            assert_eq!(a.containers_to_start == ["app"], restart, "{policy} exit {code}");
            assert_eq!(a.kill_pod, !restart, "{policy} exit {code}: a finished pod loses its sandbox");
        }
    }

    #[test]
    fn running_container_is_kept() {
        let p = pod("Always", &[], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", true, 0)],
            containers: vec![record(&p, "app", State::Running, 0)],
        };
        assert_eq!(
            compute(&p, &st, &ProbeVerdicts::default()),
            PodActions { sandbox_id: Some("s".into()), ..Default::default() }
        );
    }

    #[test]
    fn liveness_failure_kills_and_restarts() {
        let p = pod("Always", &[], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", true, 0)],
            containers: vec![record(&p, "app", State::Running, 0)],
        };
        let probes = ProbeVerdicts { liveness_failed: HashSet::from(["app-0".to_string()]), ..Default::default() };
        let a = compute(&p, &st, &probes);
        assert_eq!(a.containers_to_kill[0].reason, "Container app failed liveness probe, will be restarted");
        assert_eq!(a.containers_to_start, ["app"]);
    }

    #[test]
    fn changed_spec_restarts_the_container() {
        let p = pod("Always", &[], &["app"]);
        let mut r = record(&p, "app", State::Running, 0);
        r.hash ^= 1;
        let st = RuntimeState { sandboxes: vec![sandbox("s", true, 0)], containers: vec![r] };
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert_eq!(a.containers_to_kill[0].reason, "Container app definition changed, will be restarted");
    }

    #[test]
    fn container_removed_from_spec_is_killed() {
        let p = pod("Always", &[], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", true, 0)],
            containers: vec![record(&p, "app", State::Running, 0), record(&p, "old", State::Running, 0)],
        };
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(a.containers_to_kill[0].name, "old");
    }

    #[test]
    fn dead_sandbox_is_recreated_with_next_attempt() {
        let p = pod("Always", &[], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", false, 0)],
            containers: vec![record(&p, "app", State::Exited { exit_code: 137 }, 0)],
        };
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 1);
        assert_eq!(a.containers_to_start, ["app"]);
    }

    #[test]
    fn never_policy_pod_is_not_restarted_in_a_new_sandbox() {
        let p = pod("Never", &[], &["app"]);
        let st = RuntimeState {
            sandboxes: vec![sandbox("s", false, 0)],
            containers: vec![record(&p, "app", State::Exited { exit_code: 0 }, 0)],
        };
        let a = compute(&p, &st, &ProbeVerdicts::default());
        assert!(!a.create_sandbox && a.kill_pod);
        assert!(a.containers_to_start.is_empty());
    }

    #[test]
    fn container_hash_is_stable_and_spec_sensitive() {
        let a: Container = serde_json::from_value(json!({"name": "a", "image": "x"})).expect("container");
        let b: Container = serde_json::from_value(json!({"name": "a", "image": "y"})).expect("container");
        assert_eq!(container_hash(&a), container_hash(&a.clone()));
        assert_ne!(container_hash(&a), container_hash(&b));
    }
}
