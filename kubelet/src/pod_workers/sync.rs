//! Carrying a plan out: read what the runtime has for a pod (`observe`), compute the plan,
//! then stop, create and start through the `ContainerRuntime`. Sandboxes and containers carry
//! upstream's labels, so a restarted kubelet finds and adopts what is already running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::backoff::Backoff;
use super::plan::{self, ContainerRecord, PodActions, ProbeVerdicts, RuntimeState, Sandbox, State};
use crate::runtime::{api, container_filter_by_labels, sandbox_filter_by_labels, ContainerRuntime, RuntimeError};

pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";

/// Node-wide settings the pod configs need.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Parent cgroup of every pod (`/<node>/kubepods`).
    pub cgroup_root: String,
    /// Where container logs go: `<dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub log_dir: PathBuf,
    pub runtime_handler: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("pod has no uid")]
    NoUid,
}

/// What one sync did, for status and events.
#[derive(Debug, Default, PartialEq)]
pub struct SyncOutcome {
    pub actions: PodActions,
    pub started: Vec<String>,
    /// Containers held back by CrashLoopBackOff, with the time left.
    pub backing_off: Vec<(String, Duration)>,
    /// Containers whose image pull or creation failed, with the runtime's message.
    pub failed: Vec<(String, String, String)>,
}

fn uid(pod: &Pod) -> Result<String, SyncError> {
    pod.metadata.uid.clone().filter(|u| !u.is_empty()).ok_or(SyncError::NoUid)
}

fn pod_dir(pod: &Pod) -> String {
    format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// What the runtime has for `pod`, as the plan sees it.
pub async fn observe(rt: &dyn ContainerRuntime, pod_uid: &str) -> Result<RuntimeState, RuntimeError> {
    let sandboxes = rt.list_pod_sandbox(Some(sandbox_filter_by_labels([(POD_UID, pod_uid)]))).await?;
    let containers = rt.list_containers(Some(container_filter_by_labels([(POD_UID, pod_uid)]))).await?;
    let mut state = RuntimeState::default();
    for s in sandboxes {
        state.sandboxes.push(Sandbox {
            ready: s.state == api::PodSandboxState::SandboxReady as i32,
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            created_at: s.created_at,
            id: s.id,
        });
    }
    for c in containers {
        let mut finished_at = 0;
        let st = match api::ContainerState::try_from(c.state).unwrap_or(api::ContainerState::ContainerUnknown) {
            api::ContainerState::ContainerCreated => State::Created,
            api::ContainerState::ContainerRunning => State::Running,
            api::ContainerState::ContainerExited => {
                let status = rt.container_status(&c.id, false).await?.status;
                finished_at = status.as_ref().map(|s| (s.finished_at / 1_000_000_000).max(0) as u64).unwrap_or(0);
                State::Exited { exit_code: status.map(|s| s.exit_code).unwrap_or(-1) }
            }
            api::ContainerState::ContainerUnknown => State::Unknown,
        };
        state.containers.push(ContainerRecord {
            name: c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default(),
            attempt: c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            hash: c.annotations.get(CONTAINER_HASH).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0),
            created_at: c.created_at,
            finished_at,
            state: st,
            id: c.id,
        });
    }
    Ok(state)
}

/// The pod's namespaces, sent for the sandbox and again for each container (or a container
/// joins the sandbox's PID namespace): its own network unless hostNetwork, PID per
/// container, IPC per pod.
fn namespaces(pod: &Pod) -> api::NamespaceOption {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let network = if host_network { api::NamespaceMode::Node } else { api::NamespaceMode::Pod };
    api::NamespaceOption {
        network: network as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// upstream's sandbox config: identity, hostname, log directory, cgroup parent, namespaces.
pub fn sandbox_config(pod: &Pod, attempt: u32, cfg: &NodeConfig) -> api::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(POD_UID.into(), uid.clone());
    labels.insert(POD_NAME.into(), name.clone());
    labels.insert(POD_NAMESPACE.into(), namespace.clone());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata { name: name.clone(), uid: uid.clone(), namespace, attempt }),
        // A host-network pod must not set a hostname (runc refuses without its own UTS namespace).
        hostname: if host_network { String::new() } else { spec.hostname.clone().unwrap_or(name) },
        log_directory: cfg.log_dir.join(pod_dir(pod)).to_string_lossy().into_owned(),
        labels,
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", cfg.cgroup_root.trim_end_matches('/')),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// upstream's container config: image, command, env, log path, labels that find it again.
pub fn container_config(pod: &Pod, c: &Container, attempt: u32) -> api::ContainerConfig {
    let mut labels = HashMap::new();
    labels.insert(POD_UID.to_string(), pod.metadata.uid.clone().unwrap_or_default());
    labels.insert(POD_NAME.to_string(), pod.metadata.name.clone().unwrap_or_default());
    labels.insert(POD_NAMESPACE.to_string(), pod.metadata.namespace.clone().unwrap_or_default());
    labels.insert(CONTAINER_NAME.to_string(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert(CONTAINER_HASH.to_string(), format!("{:x}", plan::container_hash(c)));
    let envs = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.value.map(|v| api::KeyValue { key: e.name, value: v }))
        .collect();
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(api::ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            // The same namespaces as the sandbox, or the container joins its PID namespace.
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == name)
}

/// Pulls the image if the pull policy asks for it; on failure, upstream's reason and message.
async fn ensure_image(
    rt: &dyn ContainerRuntime,
    c: &Container,
    sandbox: &api::PodSandboxConfig,
) -> Result<(), (&'static str, String)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    let present = rt
        .image_status(crate::runtime::image_spec(image.clone()), false)
        .await
        .map_err(|e| ("ErrImagePull", e.to_string()))?
        .is_some();
    let pull = match policy {
        "Never" if !present => {
            return Err((
                "ErrImageNeverPull",
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ))
        }
        "Always" => true,
        _ => !present,
    };
    if pull {
        rt.pull_image(crate::runtime::image_spec(image), None, Some(sandbox.clone()))
            .await
            .map_err(|e| ("ErrImagePull", e.to_string()))?;
    }
    Ok(())
}

/// One sync of one pod: observe, plan, act.
pub async fn sync_pod(
    rt: &dyn ContainerRuntime,
    pod: &Pod,
    cfg: &NodeConfig,
    probes: &ProbeVerdicts,
    backoff: &mut Backoff,
    now_secs: u64,
) -> Result<SyncOutcome, SyncError> {
    let pod_uid = uid(pod)?;
    let state = observe(rt, &pod_uid).await?;
    let actions = plan::compute(pod, &state, probes);
    let mut out = SyncOutcome { actions: actions.clone(), ..Default::default() };
    let grace = Duration::from_secs(
        pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64,
    );

    for k in &actions.containers_to_kill {
        rt.stop_container(&k.id, grace).await?;
    }
    if actions.kill_pod {
        for c in state.containers.iter().filter(|c| c.state == State::Running) {
            rt.stop_container(&c.id, grace).await?;
        }
        for s in state.sandboxes.iter().filter(|s| s.ready) {
            rt.stop_pod_sandbox(&s.id).await?;
        }
        if !actions.create_sandbox {
            return Ok(out);
        }
    }
    let sandbox = sandbox_config(pod, actions.attempt, cfg);
    let sandbox_id = if actions.create_sandbox {
        rt.run_pod_sandbox(sandbox.clone(), &cfg.runtime_handler).await?
    } else {
        match &actions.sandbox_id {
            Some(id) => id.clone(),
            None => return Ok(out),
        }
    };
    let to_start: Vec<String> =
        actions.next_init_container.iter().cloned().chain(actions.containers_to_start.iter().cloned()).collect();
    for name in to_start {
        let Some(c) = find_container(pod, &name) else { continue };
        let previous = state.containers.iter().filter(|r| r.name == name).max_by_key(|r| (r.attempt, r.created_at));
        // A container that ran before restarts only when its backoff allows.
        if let Some(prev) = previous.filter(|p| matches!(p.state, State::Exited { .. })) {
            if let Err(wait) = backoff.try_restart(&pod_uid, &name, prev.finished_at, now_secs) {
                out.backing_off.push((name, wait));
                continue;
            }
        }
        let attempt = previous.map(|p| p.attempt + 1).unwrap_or(0);
        if let Err((reason, message)) = ensure_image(rt, c, &sandbox).await {
            out.failed.push((name, reason.into(), message));
            continue;
        }
        let id = match rt.create_container(&sandbox_id, container_config(pod, c, attempt), sandbox.clone()).await {
            Ok(id) => id,
            Err(e) => {
                out.failed.push((name, "CreateContainerError".into(), e.to_string()));
                continue;
            }
        };
        if let Err(e) = rt.start_container(&id).await {
            out.failed.push((name, "RunContainerError".into(), e.to_string()));
            continue;
        }
        out.started.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use serde_json::json;

    fn cfg() -> NodeConfig {
        NodeConfig {
            cgroup_root: "/node-1/kubepods".into(),
            log_dir: "/var/log/pods".into(),
            runtime_handler: String::new(),
        }
    }

    fn pod(policy: &str, pull: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"restartPolicy": policy, "containers": [
                {"name": "app", "image": "busybox:1.36", "imagePullPolicy": pull, "command": ["sh", "-c", "sleep 1d"],
                 "env": [{"name": "A", "value": "1"}]},
            ]},
        }))
        .expect("pod")
    }

    async fn sync(rt: &FakeRuntime, p: &Pod, b: &mut Backoff, now: u64) -> SyncOutcome {
        sync_pod(rt, p, &cfg(), &ProbeVerdicts::default(), b, now).await.expect("sync")
    }

    #[tokio::test]
    async fn new_pod_gets_a_sandbox_then_its_containers_and_a_second_sync_does_nothing() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Always", "IfNotPresent");
        let out = sync(&rt, &p, &mut b, 0).await;
        assert_eq!(out.started, ["app"]);
        let methods: Vec<_> = rt.take_calls().iter().map(|c| c.method()).collect();
        assert!(
            methods.contains(&"RunPodSandbox")
                && methods.contains(&"CreateContainer")
                && methods.contains(&"StartContainer"),
            "{methods:?}"
        );
        assert!(!methods.contains(&"PullImage"), "the image is present: {methods:?}");
        let sb = rt.sandbox(&rt.sandbox_ids()[0]).expect("sandbox");
        assert_eq!(sb.config.labels.get(POD_UID).map(String::as_str), Some("u1"));
        assert_eq!(sb.config.linux.as_ref().map(|l| l.cgroup_parent.as_str()), Some("/node-1/kubepods/podu1"));
        let c = rt.container(&rt.container_ids()[0]).expect("container");
        assert_eq!(c.config.command, ["sh", "-c", "sleep 1d"]);
        assert_eq!(c.config.envs[0].key, "A");
        assert_eq!(c.config.log_path, "app/0.log");

        let again = sync(&rt, &p, &mut b, 1).await;
        assert!(again.started.is_empty());
        let methods: Vec<_> = rt.take_calls().iter().map(|c| c.method()).collect();
        assert!(
            !methods
                .iter()
                .any(|m| matches!(*m, "RunPodSandbox" | "CreateContainer" | "StartContainer" | "StopContainer")),
            "{methods:?}"
        );
    }

    #[tokio::test]
    async fn crashing_container_restarts_with_growing_backoff() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Always", "IfNotPresent");
        sync(&rt, &p, &mut b, 0).await;
        let first = rt.container_ids()[0].clone();
        rt.set_container_exited(&first, 1, "Error").expect("exit");
        // The first restart is immediate.
        assert_eq!(sync(&rt, &p, &mut b, 5).await.started, ["app"]);
        let second = rt.container_ids().into_iter().find(|id| *id != first).expect("a new container");
        assert_eq!(rt.container(&second).expect("container").config.metadata.map(|m| m.attempt), Some(1));
        rt.set_container_exited(&second, 1, "Error").expect("exit");
        // Then 10 s of CrashLoopBackOff.
        let held = sync(&rt, &p, &mut b, 6).await;
        assert!(held.started.is_empty());
        assert_eq!(held.backing_off.len(), 1);
        assert_eq!(sync(&rt, &p, &mut b, 20).await.started, ["app"]);
    }

    #[tokio::test]
    async fn missing_image_is_pulled_and_never_policy_fails() {
        let rt = FakeRuntime::new();
        let mut b = Backoff::default();
        let out = sync(&rt, &pod("Always", "IfNotPresent"), &mut b, 0).await;
        assert_eq!(out.started, ["app"]);
        assert!(rt.methods().contains(&"PullImage"));

        let rt = FakeRuntime::new();
        let out = sync(&rt, &pod("Always", "Never"), &mut Backoff::default(), 0).await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].1, "ErrImageNeverPull");
        assert!(out.failed[0].2.contains("is not present with pull policy of Never"), "{}", out.failed[0].2);
    }

    #[tokio::test]
    async fn finished_never_pod_loses_its_sandbox_and_is_not_restarted() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Never", "IfNotPresent");
        sync(&rt, &p, &mut b, 0).await;
        let id = rt.container_ids()[0].clone();
        rt.set_container_exited(&id, 0, "Completed").expect("exit");
        rt.take_calls();
        let out = sync(&rt, &p, &mut b, 1).await;
        assert!(out.actions.kill_pod && out.started.is_empty());
        assert!(rt.methods().contains(&"StopPodSandbox"));
    }

    #[tokio::test]
    async fn a_restarted_kubelet_adopts_running_containers() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox:1.36");
        let p = pod("Always", "IfNotPresent");
        sync(&rt, &p, &mut Backoff::default(), 0).await;
        rt.take_calls();
        // A new kubelet: fresh backoff state, same runtime.
        let out = sync(&rt, &p, &mut Backoff::default(), 100).await;
        assert!(out.started.is_empty() && !out.actions.create_sandbox && !out.actions.kill_pod);
    }
}
