//! [`FakeRuntime`]: a recording, in-memory [`ContainerRuntime`] for unit tests.
//!
//! It keeps sandboxes, containers and images the way a CRI runtime would (ids, states,
//! timestamps, label filters) so plan logic can be driven through whole lifecycles, records
//! every call as a [`Call`] for assertions, and lets a test script failures
//! ([`FakeRuntime::fail_next`]), ExecSync results ([`FakeRuntime::push_exec_result`]) and
//! container exits ([`FakeRuntime::set_container_exited`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::{api, labels_match, ContainerRuntime, Result, RuntimeError};

/// One call the fake received, with the arguments tests usually assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Version,
    Status,
    RunPodSandbox {
        namespace: String,
        name: String,
        uid: String,
        runtime_handler: String,
    },
    StopPodSandbox(String),
    RemovePodSandbox(String),
    PodSandboxStatus(String),
    ListPodSandbox,
    /// `with_auth` is whether credentials were passed (never the credentials themselves).
    PullImage {
        image: String,
        with_auth: bool,
    },
    ImageStatus(String),
    ListImages,
    RemoveImage(String),
    CreateContainer {
        pod_sandbox_id: String,
        name: String,
        image: String,
    },
    StartContainer(String),
    StopContainer {
        container_id: String,
        timeout: Duration,
    },
    RemoveContainer(String),
    ContainerStatus(String),
    ListContainers,
    ExecSync {
        container_id: String,
        cmd: Vec<String>,
    },
    Exec(String),
    Attach(String),
    PortForward {
        pod_sandbox_id: String,
        ports: Vec<i32>,
    },
    ListContainerStats,
}

impl Call {
    /// The CRI method name, as used by [`FakeRuntime::fail_next`].
    pub fn method(&self) -> &'static str {
        match self {
            Call::Version => "Version",
            Call::Status => "Status",
            Call::RunPodSandbox { .. } => "RunPodSandbox",
            Call::StopPodSandbox(_) => "StopPodSandbox",
            Call::RemovePodSandbox(_) => "RemovePodSandbox",
            Call::PodSandboxStatus(_) => "PodSandboxStatus",
            Call::ListPodSandbox => "ListPodSandbox",
            Call::PullImage { .. } => "PullImage",
            Call::ImageStatus(_) => "ImageStatus",
            Call::ListImages => "ListImages",
            Call::RemoveImage(_) => "RemoveImage",
            Call::CreateContainer { .. } => "CreateContainer",
            Call::StartContainer(_) => "StartContainer",
            Call::StopContainer { .. } => "StopContainer",
            Call::RemoveContainer(_) => "RemoveContainer",
            Call::ContainerStatus(_) => "ContainerStatus",
            Call::ListContainers => "ListContainers",
            Call::ExecSync { .. } => "ExecSync",
            Call::Exec(_) => "Exec",
            Call::Attach(_) => "Attach",
            Call::PortForward { .. } => "PortForward",
            Call::ListContainerStats => "ListContainerStats",
        }
    }
}

/// A sandbox as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeSandbox {
    pub config: api::PodSandboxConfig,
    pub runtime_handler: String,
    pub state: api::PodSandboxState,
    pub created_at: i64,
    pub ip: String,
}

/// A container as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub pod_sandbox_id: String,
    pub config: api::ContainerConfig,
    pub image_ref: String,
    pub state: api::ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    /// Cumulative CPU time in nanoseconds and working set in bytes, as `ListContainerStats` reports them.
    pub usage: (u64, u64),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    errors: HashMap<&'static str, VecDeque<RuntimeError>>,
    exec_results: VecDeque<api::ExecSyncResponse>,
    sandboxes: BTreeMap<String, FakeSandbox>,
    containers: BTreeMap<String, FakeContainer>,
    /// keyed by image id
    images: BTreeMap<String, api::Image>,
    next_id: u64,
    /// fake clock in nanoseconds, bumped on every state change
    now: i64,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:04}", self.next_id)
    }

    fn tick(&mut self) -> i64 {
        self.now += 1_000_000_000;
        self.now
    }

    fn find_image(&self, image: &str) -> Option<&api::Image> {
        self.images.values().find(|i| i.id == image || i.repo_tags.iter().any(|t| t == image))
    }

    fn sandbox(&self, method: &'static str, id: &str) -> Result<&FakeSandbox> {
        self.sandboxes.get(id).ok_or_else(|| not_found(method, "sandbox", id))
    }

    fn container_mut(&mut self, method: &'static str, id: &str) -> Result<&mut FakeContainer> {
        self.containers.get_mut(id).ok_or_else(|| not_found(method, "container", id))
    }

    fn stop_container(&mut self, id: &str) {
        let now = self.tick();
        if let Some(c) = self.containers.get_mut(id) {
            if c.state != api::ContainerState::ContainerExited {
                c.state = api::ContainerState::ContainerExited;
                c.finished_at = now;
                c.exit_code = 0;
                c.reason = "Completed".into();
            }
        }
    }
}

fn not_found(method: &'static str, kind: &str, id: &str) -> RuntimeError {
    RuntimeError::NotFound { method, message: format!("{kind} {id:?} not found") }
}

fn failed(method: &'static str, message: String) -> RuntimeError {
    RuntimeError::Rpc { method, status: tonic::Status::failed_precondition(message) }
}

/// The recording fake. See the module docs.
#[derive(Debug)]
pub struct FakeRuntime {
    state: Mutex<State>,
    runtime_name: String,
    pod_ip_prefix: String,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    /// An empty runtime: no images, no sandboxes. Pod IPs are handed out from 198.18.0.0/24.
    pub fn new() -> Self {
        FakeRuntime { state: Mutex::default(), runtime_name: "fake".into(), pod_ip_prefix: "198.18.0.".into() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep its state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call`, then returns the error scripted for its method, if any.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        let method = call.method();
        st.calls.push(call);
        match st.errors.get_mut(method).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(st),
        }
    }

    // ---- scripting ----

    /// Makes an image present, as if pulled; `reference` becomes its repo tag. Returns its id.
    pub fn add_image(&self, reference: &str) -> String {
        let mut st = self.lock();
        if let Some(i) = st.find_image(reference) {
            return i.id.clone();
        }
        let id = format!("sha256:{:0>64}", st.images.len() + 1);
        let image =
            api::Image { id: id.clone(), repo_tags: vec![reference.to_string()], size: 1 << 20, ..Default::default() };
        st.images.insert(id.clone(), image);
        id
    }

    /// The next call of `method` (a CRI name such as `"PullImage"`) fails with `err`.
    /// Several errors for one method are returned in order.
    pub fn fail_next(&self, method: &'static str, err: RuntimeError) {
        self.lock().errors.entry(method).or_default().push_back(err);
    }

    /// The next ExecSync returns `result` (without one it returns exit code 0, no output).
    pub fn push_exec_result(&self, result: api::ExecSyncResponse) {
        self.lock().exec_results.push_back(result);
    }

    /// The container exits by itself (a crash or a completed command).
    pub fn set_container_exited(&self, container_id: &str, exit_code: i32, reason: &str) -> Result<()> {
        let mut st = self.lock();
        let now = st.tick();
        let c = st.container_mut("SetContainerExited", container_id)?;
        c.state = api::ContainerState::ContainerExited;
        c.finished_at = now;
        c.exit_code = exit_code;
        c.reason = reason.to_string();
        Ok(())
    }

    /// Sets what `ListContainerStats` reports for a container: CPU nanoseconds and working set bytes.
    pub fn set_container_usage(&self, container_id: &str, cpu_nanos: u64, working_set_bytes: u64) -> Result<()> {
        let mut st = self.lock();
        st.container_mut("SetContainerUsage", container_id)?.usage = (cpu_nanos, working_set_bytes);
        Ok(())
    }

    // ---- inspection ----

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls so far, clearing the record.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The method names of the calls so far, e.g. `["RunPodSandbox", "CreateContainer"]`.
    pub fn methods(&self) -> Vec<&'static str> {
        self.lock().calls.iter().map(Call::method).collect()
    }

    pub fn sandbox(&self, id: &str) -> Option<FakeSandbox> {
        self.lock().sandboxes.get(id).cloned()
    }

    pub fn container(&self, id: &str) -> Option<FakeContainer> {
        self.lock().containers.get(id).cloned()
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }

    pub fn container_ids(&self) -> Vec<String> {
        self.lock().containers.keys().cloned().collect()
    }
}

fn sandbox_status(id: &str, s: &FakeSandbox) -> api::PodSandboxStatus {
    api::PodSandboxStatus {
        id: id.to_string(),
        metadata: s.config.metadata.clone(),
        state: s.state as i32,
        created_at: s.created_at,
        network: Some(api::PodSandboxNetworkStatus { ip: s.ip.clone(), ..Default::default() }),
        labels: s.config.labels.clone(),
        annotations: s.config.annotations.clone(),
        runtime_handler: s.runtime_handler.clone(),
        ..Default::default()
    }
}

fn container_status(id: &str, c: &FakeContainer, log_directory: &str) -> api::ContainerStatus {
    let log_path =
        if c.config.log_path.is_empty() { String::new() } else { format!("{log_directory}/{}", c.config.log_path) };
    api::ContainerStatus {
        id: id.to_string(),
        metadata: c.config.metadata.clone(),
        state: c.state as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: c.config.image.clone(),
        image_ref: c.image_ref.clone(),
        reason: c.reason.clone(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path,
        ..Default::default()
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let _st = self.enter(Call::Version)?;
        Ok(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: self.runtime_name.clone(),
            runtime_version: "0.0.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn status(&self, _verbose: bool) -> Result<api::StatusResponse> {
        let _st = self.enter(Call::Status)?;
        let cond = |t: &str| api::RuntimeCondition { r#type: t.into(), status: true, ..Default::default() };
        Ok(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions: vec![cond("RuntimeReady"), cond("NetworkReady")] }),
            ..Default::default()
        })
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig, runtime_handler: &str) -> Result<String> {
        let md = config.metadata.clone().unwrap_or_default();
        let mut st = self.enter(Call::RunPodSandbox {
            namespace: md.namespace,
            name: md.name,
            uid: md.uid,
            runtime_handler: runtime_handler.into(),
        })?;
        let id = st.id("sandbox");
        let created_at = st.tick();
        let ip = format!("{}{}", self.pod_ip_prefix, st.sandboxes.len() + 2);
        let sandbox = FakeSandbox {
            config,
            runtime_handler: runtime_handler.into(),
            state: api::PodSandboxState::SandboxReady,
            created_at,
            ip,
        };
        st.sandboxes.insert(id.clone(), sandbox);
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let mut st = self.enter(Call::StopPodSandbox(pod_sandbox_id.into()))?;
        st.sandbox("StopPodSandbox", pod_sandbox_id)?;
        let ids: Vec<String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.pod_sandbox_id == pod_sandbox_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            st.stop_container(&id);
        }
        if let Some(s) = st.sandboxes.get_mut(pod_sandbox_id) {
            s.state = api::PodSandboxState::SandboxNotready;
            s.ip.clear();
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let mut st = self.enter(Call::RemovePodSandbox(pod_sandbox_id.into()))?;
        if let Some(s) = st.sandboxes.get(pod_sandbox_id) {
            if s.state == api::PodSandboxState::SandboxReady {
                return Err(failed("RemovePodSandbox", format!("sandbox {pod_sandbox_id:?} is still ready")));
            }
        }
        st.containers.retain(|_, c| c.pod_sandbox_id != pod_sandbox_id);
        st.sandboxes.remove(pod_sandbox_id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, pod_sandbox_id: &str, _verbose: bool) -> Result<api::PodSandboxStatusResponse> {
        let st = self.enter(Call::PodSandboxStatus(pod_sandbox_id.into()))?;
        let s = st.sandbox("PodSandboxStatus", pod_sandbox_id)?;
        Ok(api::PodSandboxStatusResponse { status: Some(sandbox_status(pod_sandbox_id, s)), ..Default::default() })
    }

    async fn list_pod_sandbox(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        let st = self.enter(Call::ListPodSandbox)?;
        let f = filter.unwrap_or_default();
        Ok(st
            .sandboxes
            .iter()
            .filter(|(id, s)| {
                (f.id.is_empty() || **id == f.id)
                    && f.state.as_ref().is_none_or(|v| v.state == s.state as i32)
                    && labels_match(&f.label_selector, &s.config.labels)
            })
            .map(|(id, s)| api::PodSandbox {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: s.state as i32,
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect())
    }

    async fn pull_image(
        &self,
        image: api::ImageSpec,
        auth: Option<api::AuthConfig>,
        _sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        drop(self.enter(Call::PullImage { image: image.image.clone(), with_auth: auth.is_some() })?);
        Ok(self.add_image(&image.image))
    }

    async fn image_status(&self, image: api::ImageSpec, _verbose: bool) -> Result<Option<api::Image>> {
        let st = self.enter(Call::ImageStatus(image.image.clone()))?;
        Ok(st.find_image(&image.image).cloned())
    }

    async fn list_images(&self, filter: Option<api::ImageFilter>) -> Result<Vec<api::Image>> {
        let st = self.enter(Call::ListImages)?;
        let want = filter.and_then(|f| f.image).map(|i| i.image).unwrap_or_default();
        if want.is_empty() {
            return Ok(st.images.values().cloned().collect());
        }
        Ok(st.find_image(&want).cloned().into_iter().collect())
    }

    async fn remove_image(&self, image: api::ImageSpec) -> Result<()> {
        let mut st = self.enter(Call::RemoveImage(image.image.clone()))?;
        if let Some(id) = st.find_image(&image.image).map(|i| i.id.clone()) {
            st.images.remove(&id);
        }
        Ok(())
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        _sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let mut st =
            self.enter(Call::CreateContainer { pod_sandbox_id: pod_sandbox_id.into(), name, image: image.clone() })?;
        if st.sandbox("CreateContainer", pod_sandbox_id)?.state != api::PodSandboxState::SandboxReady {
            return Err(failed("CreateContainer", format!("sandbox {pod_sandbox_id:?} is not ready")));
        }
        let image_ref =
            st.find_image(&image).map(|i| i.id.clone()).ok_or_else(|| not_found("CreateContainer", "image", &image))?;
        let id = st.id("container");
        let created_at = st.tick();
        st.containers.insert(
            id.clone(),
            FakeContainer {
                pod_sandbox_id: pod_sandbox_id.into(),
                config,
                image_ref,
                state: api::ContainerState::ContainerCreated,
                created_at,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                usage: (0, 0),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let mut st = self.enter(Call::StartContainer(container_id.into()))?;
        let now = st.tick();
        let c = st.container_mut("StartContainer", container_id)?;
        if c.state != api::ContainerState::ContainerCreated {
            return Err(failed("StartContainer", format!("container {container_id:?} is not in created state")));
        }
        c.state = api::ContainerState::ContainerRunning;
        c.started_at = now;
        Ok(())
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let mut st = self.enter(Call::StopContainer { container_id: container_id.into(), timeout })?;
        st.container_mut("StopContainer", container_id)?;
        st.stop_container(container_id);
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let mut st = self.enter(Call::RemoveContainer(container_id.into()))?;
        if st.containers.get(container_id).is_some_and(|c| c.state == api::ContainerState::ContainerRunning) {
            return Err(failed("RemoveContainer", format!("container {container_id:?} is running")));
        }
        st.containers.remove(container_id);
        Ok(())
    }

    async fn container_status(&self, container_id: &str, _verbose: bool) -> Result<api::ContainerStatusResponse> {
        let st = self.enter(Call::ContainerStatus(container_id.into()))?;
        let c =
            st.containers.get(container_id).ok_or_else(|| not_found("ContainerStatus", "container", container_id))?;
        let log_dir = st.sandboxes.get(&c.pod_sandbox_id).map(|s| s.config.log_directory.clone()).unwrap_or_default();
        Ok(api::ContainerStatusResponse {
            status: Some(container_status(container_id, c, &log_dir)),
            ..Default::default()
        })
    }

    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        let st = self.enter(Call::ListContainers)?;
        let f = filter.unwrap_or_default();
        Ok(st
            .containers
            .iter()
            .filter(|(id, c)| {
                (f.id.is_empty() || **id == f.id)
                    && (f.pod_sandbox_id.is_empty() || c.pod_sandbox_id == f.pod_sandbox_id)
                    && f.state.as_ref().is_none_or(|v| v.state == c.state as i32)
                    && labels_match(&f.label_selector, &c.config.labels)
            })
            .map(|(id, c)| api::Container {
                id: id.clone(),
                pod_sandbox_id: c.pod_sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: c.config.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<api::ExecSyncResponse> {
        let mut st = self.enter(Call::ExecSync { container_id: container_id.into(), cmd })?;
        if st.container_mut("ExecSync", container_id)?.state != api::ContainerState::ContainerRunning {
            return Err(failed("ExecSync", format!("container {container_id:?} is not running")));
        }
        Ok(st.exec_results.pop_front().unwrap_or_default())
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let mut st = self.enter(Call::Exec(req.container_id.clone()))?;
        st.container_mut("Exec", &req.container_id)?;
        Ok(format!("http://127.0.0.1:0/exec/{}", st.id("token")))
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let mut st = self.enter(Call::Attach(req.container_id.clone()))?;
        st.container_mut("Attach", &req.container_id)?;
        Ok(format!("http://127.0.0.1:0/attach/{}", st.id("token")))
    }

    async fn port_forward(&self, pod_sandbox_id: &str, ports: Vec<i32>) -> Result<String> {
        let mut st = self.enter(Call::PortForward { pod_sandbox_id: pod_sandbox_id.into(), ports })?;
        st.sandbox("PortForward", pod_sandbox_id)?;
        Ok(format!("http://127.0.0.1:0/portforward/{}", st.id("token")))
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let st = self.enter(Call::ListContainerStats)?;
        let f = filter.unwrap_or_default();
        let now = st.now;
        Ok(st
            .containers
            .iter()
            .filter(|(id, c)| {
                (f.id.is_empty() || f.id == **id)
                    && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.pod_sandbox_id)
                    && labels_match(&f.label_selector, &c.config.labels)
                    && c.state == api::ContainerState::ContainerRunning
            })
            .map(|(id, c)| api::ContainerStats {
                attributes: Some(api::ContainerAttributes {
                    id: id.clone(),
                    metadata: c.config.metadata.clone(),
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                }),
                cpu: Some(api::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: Some(api::UInt64Value { value: c.usage.0 }),
                    ..Default::default()
                }),
                memory: Some(api::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: Some(api::UInt64Value { value: c.usage.1 }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{container_filter_by_labels, image_spec, sandbox_filter_by_labels};

    fn pod(name: &str, uid: &str) -> api::PodSandboxConfig {
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: format!("/var/log/pods/default_{name}_{uid}"),
            labels: HashMap::from([("io.kubernetes.pod.uid".to_string(), uid.to_string())]),
            ..Default::default()
        }
    }

    fn ctr(name: &str, image: &str) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(image_spec(image)),
            log_path: format!("{name}/0.log"),
            labels: HashMap::from([("io.kubernetes.container.name".to_string(), name.to_string())]),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn pod_lifecycle_is_recorded_and_stateful() {
        let rt = FakeRuntime::new();
        assert_eq!(rt.image_status(image_spec("busybox:1.36"), false).await.ok(), Some(None));
        let image_ref = rt.pull_image(image_spec("busybox:1.36"), None, None).await.expect("pull");
        let img = rt.image_status(image_spec("busybox:1.36"), false).await.expect("status").expect("present");
        assert_eq!(img.id, image_ref);

        let sb = rt.run_pod_sandbox(pod("web", "u1"), "").await.expect("run sandbox");
        let st = rt.pod_sandbox_status(&sb, false).await.expect("status").status.expect("status set");
        assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
        assert_eq!(st.network.map(|n| n.ip), Some("198.18.0.2".to_string()));

        let c = rt.create_container(&sb, ctr("app", "busybox:1.36"), pod("web", "u1")).await.expect("create");
        rt.start_container(&c).await.expect("start");
        let cs = rt.container_status(&c, false).await.expect("status").status.expect("status set");
        assert_eq!(cs.state, api::ContainerState::ContainerRunning as i32);
        assert_eq!(cs.log_path, "/var/log/pods/default_web_u1/app/0.log");
        assert_eq!(cs.image_ref, image_ref);

        rt.stop_pod_sandbox(&sb).await.expect("stop");
        let cs = rt.container_status(&c, false).await.expect("status").status.expect("status set");
        assert_eq!(cs.state, api::ContainerState::ContainerExited as i32);
        rt.remove_pod_sandbox(&sb).await.expect("remove");
        assert!(rt.container_status(&c, false).await.expect_err("gone").is_not_found());
        assert!(rt.sandbox_ids().is_empty() && rt.container_ids().is_empty());

        assert_eq!(
            rt.methods(),
            [
                "ImageStatus",
                "PullImage",
                "ImageStatus",
                "RunPodSandbox",
                "PodSandboxStatus",
                "CreateContainer",
                "StartContainer",
                "ContainerStatus",
                "StopPodSandbox",
                "ContainerStatus",
                "RemovePodSandbox",
                "ContainerStatus",
            ]
        );
        assert_eq!(
            rt.calls()[3],
            Call::RunPodSandbox {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                runtime_handler: String::new()
            }
        );
    }

    #[tokio::test]
    async fn list_filters_by_labels() {
        let rt = FakeRuntime::new();
        rt.add_image("nginx:1.25");
        let a = rt.run_pod_sandbox(pod("a", "ua"), "").await.expect("run a");
        let b = rt.run_pod_sandbox(pod("b", "ub"), "").await.expect("run b");
        rt.create_container(&a, ctr("web", "nginx:1.25"), pod("a", "ua")).await.expect("create a");
        rt.create_container(&b, ctr("web", "nginx:1.25"), pod("b", "ub")).await.expect("create b");

        let only_b = rt.list_pod_sandbox(Some(sandbox_filter_by_labels([("io.kubernetes.pod.uid", "ub")]))).await;
        assert_eq!(only_b.expect("list").iter().map(|s| s.id.clone()).collect::<Vec<_>>(), [b]);
        assert_eq!(rt.list_pod_sandbox(None).await.expect("list").len(), 2);
        let webs =
            rt.list_containers(Some(container_filter_by_labels([("io.kubernetes.container.name", "web")]))).await;
        assert_eq!(webs.expect("list").len(), 2);
        let in_a = api::ContainerFilter { pod_sandbox_id: a.clone(), ..Default::default() };
        assert_eq!(rt.list_containers(Some(in_a)).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn scripted_errors_and_exec_results() {
        let rt = FakeRuntime::new();
        rt.fail_next(
            "PullImage",
            RuntimeError::Rpc { method: "PullImage", status: tonic::Status::unavailable("no registry") },
        );
        assert!(matches!(rt.pull_image(image_spec("x:1"), None, None).await, Err(RuntimeError::Rpc { .. })));
        // the error is used up; the call was still recorded
        rt.pull_image(image_spec("x:1"), Some(api::AuthConfig::default()), None).await.expect("second pull");
        assert_eq!(
            rt.take_calls(),
            [
                Call::PullImage { image: "x:1".into(), with_auth: false },
                Call::PullImage { image: "x:1".into(), with_auth: true }
            ]
        );
        assert!(rt.calls().is_empty());

        let sb = rt.run_pod_sandbox(pod("p", "u"), "").await.expect("run");
        let c = rt.create_container(&sb, ctr("c", "x:1"), pod("p", "u")).await.expect("create");
        assert!(rt.exec_sync(&c, vec!["true".into()], Duration::ZERO).await.is_err(), "not running yet");
        rt.start_container(&c).await.expect("start");
        rt.push_exec_result(api::ExecSyncResponse { stdout: b"hi\n".to_vec(), stderr: vec![], exit_code: 3 });
        let r = rt.exec_sync(&c, vec!["sh".into()], Duration::from_secs(1)).await.expect("exec");
        assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hi\n"[..], 3));
        let r = rt.exec_sync(&c, vec!["sh".into()], Duration::from_secs(1)).await.expect("exec");
        assert_eq!(r.exit_code, 0);

        rt.set_container_exited(&c, 137, "OOMKilled").expect("exists");
        let cs = rt.container_status(&c, false).await.expect("status").status.expect("set");
        assert_eq!((cs.exit_code, cs.reason.as_str()), (137, "OOMKilled"));
        assert!(rt.start_container(&c).await.is_err(), "an exited container cannot start again");
        assert!(rt.remove_pod_sandbox(&sb).await.is_err(), "a ready sandbox must be stopped first");
    }
}
