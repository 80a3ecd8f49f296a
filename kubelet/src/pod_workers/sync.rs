//! Carrying a plan out: read what the runtime has for a pod (`observe`), set its volumes up,
//! compute the plan, then stop, create and start through the `ContainerRuntime`, with
//! upstream's events. Sandboxes and containers carry upstream's labels, so a restarted kubelet
//! finds and adopts what is already running.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::plan::{self, ContainerRecord, PodActions, RuntimeState, Sandbox, State};
use crate::dns::{self, DnsSettings};
use crate::envvars::{self, EnvContext};
use crate::events::{self, reason, EventSink, NewEvent, Recorder};
use crate::images::{self, PullBackoff};
use crate::lifecycle;
use crate::objects::{self, ObjectSource};
use crate::prober::{ProberManager, RunningContainer, Target};
use crate::qos::{self, QosClass};
use crate::runtime::{api, container_filter_by_labels, sandbox_filter_by_labels, ContainerRuntime, RuntimeError};
use crate::volumes::{self, MountedVolume, VolumeManager};

pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";

/// Node-wide settings the pod configs need.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Parent cgroup of every pod (`/<node>/kubepods`); pods go in upstream's QoS tiers below.
    pub cgroup_root: String,
    /// Where container logs go: `<dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub log_dir: PathBuf,
    pub runtime_handler: String,
}

/// What syncing a pod needs besides the runtime: the objects it refers to, its volumes,
/// events, probes and the node's facts. Shared by the pod loop; [`PodDeps::run`] writes the
/// events and stops the probe workers on cancel.
pub struct PodDeps {
    pub objects: Arc<dyn ObjectSource>,
    pub volumes: VolumeManager,
    pub recorder: Recorder,
    pub prober: Arc<ProberManager>,
    pub dns: DnsSettings,
    /// The node's allocatable resources (`limits.*` references without a limit) and memory
    /// capacity in bytes (Burstable OOM score).
    pub allocatable: BTreeMap<String, Quantity>,
    pub memory_capacity: i64,
    /// The node's InternalIP (host-network pods' IP, `status.hostIP`).
    pub host_ip: String,
    /// The node's /etc/hosts, the base of host-network pods' hosts file.
    pub node_hosts: String,
    /// The pods' cgroup root (`NodeConfig::cgroup_root`), whose empty pod cgroups are removed
    /// when a pod is gone; empty = leave cgroups alone.
    pub cgroup_root: String,
    pulls: Mutex<PullBackoff>,
    events: Mutex<Option<EventWriter>>,
    prober_cancel: CancellationToken,
    node_name: String,
}

/// Where recorded events go, until [`PodDeps::run`] takes it.
type EventWriter = (Arc<dyn EventSink>, tokio::sync::mpsc::UnboundedReceiver<NewEvent>);

/// How [`PodDeps::new`] is put together.
pub struct PodDepsConfig {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub objects: Arc<dyn ObjectSource>,
    pub event_sink: Arc<dyn EventSink>,
    pub mounter: Arc<dyn volumes::mount::Mounter>,
    /// The probe runner; `None` = the real one (exec through `runtime`, HTTP/TCP from here).
    pub probe_runner: Option<Arc<dyn crate::prober::ProbeRunner>>,
    pub root_dir: PathBuf,
    pub node_name: String,
    pub host_ip: String,
    pub dns: DnsSettings,
    pub allocatable: BTreeMap<String, Quantity>,
    pub memory_capacity: i64,
    pub node_hosts: String,
}

impl PodDeps {
    pub fn new(c: PodDepsConfig) -> PodDeps {
        let (recorder, rx) = Recorder::new();
        let prober_cancel = CancellationToken::new();
        let runner =
            c.probe_runner.unwrap_or_else(|| Arc::new(crate::prober::RealRunner { runtime: c.runtime.clone() }));
        PodDeps {
            objects: c.objects,
            volumes: VolumeManager { root_dir: c.root_dir, mounter: c.mounter },
            prober: Arc::new(ProberManager::new(runner, recorder.clone(), prober_cancel.clone())),
            recorder,
            dns: c.dns,
            allocatable: c.allocatable,
            memory_capacity: c.memory_capacity,
            host_ip: c.host_ip,
            node_hosts: c.node_hosts,
            cgroup_root: String::new(),
            pulls: Mutex::default(),
            events: Mutex::new(Some((c.event_sink, rx))),
            prober_cancel,
            node_name: c.node_name,
        }
    }

    /// The real dependencies of a kubelet talking to the API server.
    pub fn real(
        client: kube::Client,
        runtime: Arc<dyn ContainerRuntime>,
        root_dir: PathBuf,
        node_name: String,
        host_ip: String,
        dns: DnsSettings,
    ) -> PodDeps {
        PodDeps::new(PodDepsConfig {
            runtime,
            objects: Arc::new(objects::ApiObjects::new(client.clone())),
            event_sink: Arc::new(events::ApiEvents { client }),
            mounter: Arc::new(volumes::mount::SystemMounter),
            probe_runner: None,
            root_dir,
            node_name,
            host_ip,
            dns,
            allocatable: BTreeMap::new(),
            memory_capacity: 0,
            node_hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        })
    }

    /// Writes events until `cancel`, then stops the probe workers.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let taken = self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((sink, rx)) = taken {
            events::run(sink, rx, self.node_name.clone(), cancel.clone()).await;
        } else {
            cancel.cancelled().await;
        }
        self.prober_cancel.cancel();
        self.prober.wait().await;
    }

    /// Forgets a pod that is gone: its probe workers, its volumes and its cgroup.
    pub async fn cleanup_pod(&self, pod_uid: &str) -> Result<(), volumes::VolumeError> {
        self.prober.remove_pod(pod_uid);
        self.pulls.lock().unwrap_or_else(|p| p.into_inner()).forget_pod(pod_uid);
        if !self.cgroup_root.is_empty() {
            let (root, uid) = (self.cgroup_root.clone(), pod_uid.to_string());
            let removed = tokio::task::spawn_blocking(move || {
                qos::remove_pod_cgroups(std::path::Path::new("/sys/fs/cgroup"), &root, &uid)
            })
            .await
            .unwrap_or_default();
            tracing::debug!(pod_uid = %pod_uid, removed = removed.len(), "removed the pod's cgroups");
        }
        self.volumes.teardown(pod_uid).await
    }

    /// Pod directories on disk whose pods are not in `live`: their volumes are torn down.
    pub async fn cleanup_orphaned_volumes(&self, live: &std::collections::HashSet<String>) {
        for uid in self.volumes.pods_on_disk().await {
            if !live.contains(&uid) {
                if let Err(e) = self.cleanup_pod(&uid).await {
                    tracing::warn!(pod_uid = %uid, error = %e, "tearing down the volumes of a pod that is gone failed");
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Objects(#[from] objects::ObjectError),
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
    /// Containers whose image pull or creation failed: (name, reason, message).
    pub failed: Vec<(String, String, String)>,
    /// The volumes are not ready (FailedMount): nothing was started.
    pub volume_error: Option<String>,
    /// The sandbox could not be created (FailedCreatePodSandBox).
    pub sandbox_error: Option<String>,
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

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

/// The pod's namespaces, sent for the sandbox and again for each container (or a container
/// joins the sandbox's PID namespace): its own network unless hostNetwork, PID per
/// container, IPC per pod.
fn namespaces(pod: &Pod) -> api::NamespaceOption {
    let network = if host_network(pod) { api::NamespaceMode::Node } else { api::NamespaceMode::Pod };
    api::NamespaceOption {
        network: network as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// upstream's port mappings: every container port with a hostPort (the CNI portmap plugin
/// does the rest).
pub fn port_mappings(pod: &Pod) -> Vec<api::PortMapping> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|h| *h > 0) else { continue };
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => api::Protocol::Udp,
                Some("SCTP") => api::Protocol::Sctp,
                _ => api::Protocol::Tcp,
            };
            out.push(api::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out
}

/// upstream's sandbox config: identity, hostname, DNS, port mappings, log directory, cgroup
/// parent (in the pod's QoS tier), namespaces.
pub fn sandbox_config(pod: &Pod, attempt: u32, cfg: &NodeConfig, dns_settings: &DnsSettings) -> api::PodSandboxConfig {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut labels: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    labels.insert(POD_UID.into(), uid.clone());
    labels.insert(POD_NAME.into(), name.clone());
    labels.insert(POD_NAMESPACE.into(), namespace.clone());
    let (hostname, _) = dns::hostname_and_domain(pod, &dns_settings.cluster_domain);
    let (dns_config, _) = dns::pod_dns_config(pod, dns_settings);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata { name: name.clone(), uid: uid.clone(), namespace, attempt }),
        // A host-network pod must not set a hostname (runc refuses without its own UTS namespace).
        hostname: if host_network(pod) { String::new() } else { hostname },
        log_directory: cfg.log_dir.join(pod_dir(pod)).to_string_lossy().into_owned(),
        dns_config: Some(dns_config),
        port_mappings: port_mappings(pod),
        labels,
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: qos::pod_cgroup_parent(&cfg.cgroup_root, qos::pod_qos(pod), &uid),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a container's config is built from besides the spec.
pub struct ContainerExtras {
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<api::Mount>,
    pub qos: QosClass,
    pub memory_capacity: i64,
}

/// upstream's container config: image, command, env, mounts, resources, log path, labels that
/// find it again.
pub fn container_config(pod: &Pod, c: &Container, attempt: u32, extras: &ContainerExtras) -> api::ContainerConfig {
    let mut labels = HashMap::new();
    labels.insert(POD_UID.to_string(), pod.metadata.uid.clone().unwrap_or_default());
    labels.insert(POD_NAME.to_string(), pod.metadata.name.clone().unwrap_or_default());
    labels.insert(POD_NAMESPACE.to_string(), pod.metadata.namespace.clone().unwrap_or_default());
    labels.insert(CONTAINER_NAME.to_string(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert(CONTAINER_HASH.to_string(), format!("{:x}", plan::container_hash(c)));
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(api::ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: extras.envs.iter().map(|(k, v)| api::KeyValue { key: k.clone(), value: v.clone() }).collect(),
        mounts: extras.mounts.clone(),
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(qos::container_resources(extras.qos, c, extras.memory_capacity)),
            // The same namespaces as the sandbox, or the container joins its PID namespace.
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(pod)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == name)
}

fn grace_of(pod: &Pod) -> Duration {
    Duration::from_secs(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64)
}

/// The gRPC message of a runtime error (what upstream shows after "Error: ").
fn runtime_message(e: &RuntimeError) -> String {
    match e {
        RuntimeError::Rpc { status, .. } => status.message().to_string(),
        other => other.to_string(),
    }
}

/// Stops one container as upstream's killContainer does: the Killing event, the preStop
/// hook within the grace period, then StopContainer with what is left of it.
pub async fn kill_container(
    rt: &dyn ContainerRuntime,
    deps: &PodDeps,
    pod: &Pod,
    name: &str,
    container_id: &str,
    message: &str,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let spec = find_container(pod, name);
    let message = if message.is_empty() { format!("Stopping container {name}") } else { message.to_string() };
    deps.recorder.container_event(pod, name, events::NORMAL, reason::KILLING, message);
    let mut grace = grace;
    if let Some((c, hook)) = spec.and_then(|c| c.lifecycle.as_ref()?.pre_stop.as_ref().map(|h| (c, h))) {
        let started = Instant::now();
        let target = Target {
            container_id: container_id.to_string(),
            pod_ip: pod_ip_from_status(pod),
            ports: c.ports.clone().unwrap_or_default(),
        };
        let run = lifecycle::run_handler(rt, pod, c, hook, &target, grace);
        match tokio::time::timeout(grace, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => deps.recorder.container_event(pod, name, events::WARNING, reason::FAILED_PRE_STOP_HOOK, e),
            Err(_) => deps.recorder.container_event(
                pod,
                name,
                events::WARNING,
                reason::FAILED_PRE_STOP_HOOK,
                format!("PreStopHook failed: timed out after {}s", grace.as_secs()),
            ),
        }
        grace = lifecycle::remaining_grace(grace, started.elapsed());
    }
    rt.stop_container(container_id, grace).await
}

fn pod_ip_from_status(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// The pod's IP: the sandbox's, or the node's for a host-network pod.
async fn pod_ip(
    rt: &dyn ContainerRuntime,
    pod: &Pod,
    deps: &PodDeps,
    sandbox_id: &str,
) -> Result<String, RuntimeError> {
    if host_network(pod) {
        return Ok(deps.host_ip.clone());
    }
    Ok(rt.pod_sandbox_status(sandbox_id, false).await?.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default())
}

/// One sync of one pod: observe, set volumes up, plan, act.
pub async fn sync_pod(
    rt: &dyn ContainerRuntime,
    pod: &Pod,
    cfg: &NodeConfig,
    deps: &PodDeps,
    backoff: &mut Backoff,
    now_secs: u64,
) -> Result<SyncOutcome, SyncError> {
    let pod_uid = uid(pod)?;
    let state = observe(rt, &pod_uid).await?;
    let running_ids: Vec<String> =
        state.containers.iter().filter(|c| c.state == State::Running).map(|c| c.id.clone()).collect();
    let actions = plan::compute(pod, &state, &deps.prober.verdicts(&running_ids));
    let mut out = SyncOutcome { actions: actions.clone(), ..Default::default() };
    let grace = grace_of(pod);

    for k in &actions.containers_to_kill {
        kill_container(rt, deps, pod, &k.name, &k.id, &k.reason, grace).await?;
    }
    if actions.kill_pod {
        for c in state.containers.iter().filter(|c| c.state == State::Running) {
            if !actions.containers_to_kill.iter().any(|k| k.id == c.id) {
                kill_container(rt, deps, pod, &c.name, &c.id, "", grace).await?;
            }
        }
        for s in state.sandboxes.iter().filter(|s| s.ready) {
            rt.stop_pod_sandbox(&s.id).await?;
        }
        if !actions.create_sandbox {
            // Nothing runs any more: no probe worker either, and the volumes go (upstream
            // unmounts a terminated pod's volumes; the API object may stay for long).
            deps.prober.sync_pod(pod, &[], "");
            if let Err(e) = deps.volumes.teardown(&pod_uid).await {
                tracing::warn!(pod_uid = %pod_uid, error = %e, "tearing down a finished pod's volumes failed");
            }
            return Ok(out);
        }
    }

    // Volumes (and the objects behind them and the env) before anything starts; re-done on
    // every sync so configMap and secret changes reach the files.
    let objs = objects::fetch(deps.objects.as_ref(), pod).await?;
    let current_ip = if actions.create_sandbox {
        String::new()
    } else {
        match &actions.sandbox_id {
            Some(id) => pod_ip(rt, pod, deps, id).await?,
            None => String::new(),
        }
    };
    let host_ips = vec![deps.host_ip.clone()];
    let pod_ips: Vec<String> = [current_ip.clone()].into_iter().filter(|ip| !ip.is_empty()).collect();
    let ctx = EnvContext {
        objects: &objs,
        host_ips: &host_ips,
        pod_ips: &pod_ips,
        allocatable: &deps.allocatable,
        service_env: &[],
    };
    let vols = match deps.volumes.setup(pod, &objs, &ctx).await {
        Ok(v) => v,
        Err(e) => {
            deps.recorder.pod_event(pod, events::WARNING, reason::FAILED_MOUNT, e.to_string());
            out.volume_error = Some(e.to_string());
            return Ok(out);
        }
    };

    let no_start = actions.next_init_container.is_none() && actions.containers_to_start.is_empty();
    if no_start && !actions.create_sandbox {
        update_prober(deps, pod, &state, &[], &current_ip);
        return Ok(out);
    }
    let sandbox = sandbox_config(pod, actions.attempt, cfg, &deps.dns);
    let (sandbox_id, ip) = if actions.create_sandbox {
        if dns::pod_dns_config(pod, &deps.dns).1 {
            deps.recorder.pod_event(
                pod,
                events::WARNING,
                reason::MISSING_CLUSTER_DNS,
                "pod: kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
            );
        }
        match rt.run_pod_sandbox(sandbox.clone(), &cfg.runtime_handler).await {
            Ok(id) => {
                let ip = pod_ip(rt, pod, deps, &id).await?;
                (id, ip)
            }
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {e}");
                deps.recorder.pod_event(pod, events::WARNING, reason::FAILED_CREATE_POD_SANDBOX, msg.clone());
                out.sandbox_error = Some(msg);
                return Ok(out);
            }
        }
    } else {
        match &actions.sandbox_id {
            Some(id) => (id.clone(), current_ip.clone()),
            None => return Ok(out),
        }
    };

    // The kubelet-managed /etc/hosts, once the pod has an IP.
    let hosts_file = if ip.is_empty() {
        None
    } else {
        let content = if host_network(pod) {
            dns::host_network_hosts_file(pod, &deps.node_hosts)
        } else {
            dns::managed_hosts_file(pod, std::slice::from_ref(&ip), &deps.dns.cluster_domain)
        };
        match deps.volumes.write_hosts_file(&pod_uid, content).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(pod_uid = %pod_uid, error = %e, "writing the pod's hosts file failed");
                None
            }
        }
    };
    let pod_ips: Vec<String> = [ip.clone()].into_iter().filter(|ip| !ip.is_empty()).collect();
    let service_env = envvars::service_env(pod, &services(deps, pod).await);
    let ctx = EnvContext {
        objects: &objs,
        host_ips: &host_ips,
        pod_ips: &pod_ips,
        allocatable: &deps.allocatable,
        service_env: &service_env,
    };
    let creds = images::pod_credentials(pod, &objs);
    let qos_class = qos::pod_qos(pod);

    let to_start: Vec<String> =
        actions.next_init_container.iter().cloned().chain(actions.containers_to_start.iter().cloned()).collect();
    let mut started = Vec::new();
    for name in to_start {
        let Some(c) = find_container(pod, &name) else { continue };
        let previous = state.containers.iter().filter(|r| r.name == name).max_by_key(|r| (r.attempt, r.created_at));
        // A container that ran before restarts only when its backoff allows.
        if let Some(prev) = previous.filter(|p| matches!(p.state, State::Exited { .. })) {
            if let Err(wait) = backoff.try_restart(&pod_uid, &name, prev.finished_at, now_secs) {
                deps.recorder.container_event(
                    pod,
                    &name,
                    events::WARNING,
                    reason::BACK_OFF,
                    format!(
                        "Back-off restarting failed container {name} in pod {}_{}({pod_uid})",
                        pod.metadata.name.as_deref().unwrap_or(""),
                        pod.metadata.namespace.as_deref().unwrap_or("")
                    ),
                );
                out.backing_off.push((name, wait));
                continue;
            }
        }
        let attempt = previous.map(|p| p.attempt + 1).unwrap_or(0);
        match start_container(
            rt,
            deps,
            pod,
            c,
            attempt,
            &sandbox_id,
            &sandbox,
            &StartInputs {
                ctx: &ctx,
                volumes: &vols,
                hosts_file: hosts_file.as_deref(),
                creds: &creds,
                qos: qos_class,
                pod_ip: &ip,
            },
        )
        .await
        {
            Ok(id) => {
                started.push(RunningContainer { name: name.clone(), id, running_for: Duration::ZERO });
                out.started.push(name);
            }
            Err((reason, message)) => {
                // upstream: "Error: <reason>" for image errors, "Error: <message>" for config,
                // create and start errors; a failed postStart hook has its own event.
                let text = match reason {
                    images::ERR_IMAGE_PULL | images::IMAGE_PULL_BACK_OFF | images::ERR_IMAGE_NEVER_PULL => {
                        Some(format!("Error: {reason}"))
                    }
                    "PostStartHookError" => None,
                    _ => Some(format!("Error: {message}")),
                };
                if let Some(text) = text {
                    deps.recorder.container_event(pod, &name, events::WARNING, reason::FAILED, text);
                }
                out.failed.push((name, reason.to_string(), message));
            }
        }
    }
    let killed: Vec<&str> = actions.containers_to_kill.iter().map(|k| k.id.as_str()).collect();
    let state = RuntimeState {
        containers: state.containers.into_iter().filter(|c| !killed.contains(&c.id.as_str())).collect(),
        ..state
    };
    update_prober(deps, pod, &state, &started, &ip);
    Ok(out)
}

/// Stops a deleted pod's running containers as upstream does: each with its Killing event and
/// preStop hook, all at once, within `grace`.
pub async fn stop_pod(rt: &dyn ContainerRuntime, deps: &PodDeps, pod: &Pod, grace: Duration) -> Result<(), SyncError> {
    let state = observe(rt, &uid(pod)?).await?;
    let stops = state
        .containers
        .iter()
        .filter(|c| c.state == State::Running)
        .map(|c| kill_container(rt, deps, pod, &c.name, &c.id, "", grace));
    for r in futures::future::join_all(stops).await {
        r?;
    }
    Ok(())
}

/// Pods whose state can change without the API or the runtime saying so (probe results,
/// ConfigMap/Secret contents behind volumes) are synced on every pass.
pub fn needs_periodic_sync(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    let probes = spec
        .containers
        .iter()
        .any(|c| c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some());
    let dynamic_volumes = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.config_map.is_some() || v.secret.is_some() || v.projected.is_some() || v.downward_api.is_some());
    probes || dynamic_volumes
}

/// The services a pod's containers get variables for: its namespace's (when service links are
/// on) and `default`'s `kubernetes`. Read only when containers start. A failed read leaves the
/// variables out, as a pod must not wait for them.
async fn services(deps: &PodDeps, pod: &Pod) -> Vec<k8s_openapi::api::core::v1::Service> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut out = Vec::new();
    let mut namespaces = vec!["default".to_string()];
    if links && ns != "default" {
        namespaces.push(ns);
    }
    for n in namespaces {
        match deps.objects.services(&n).await {
            Ok(list) => out.extend(list),
            Err(e) => tracing::warn!(namespace = %n, error = %e, "listing services for environment variables failed"),
        }
    }
    out
}

/// Tells the prober which containers run now.
fn update_prober(deps: &PodDeps, pod: &Pod, state: &RuntimeState, started: &[RunningContainer], pod_ip: &str) {
    let now_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0);
    let mut running: Vec<RunningContainer> = state
        .containers
        .iter()
        .filter(|c| c.state == State::Running)
        .map(|c| RunningContainer {
            name: c.name.clone(),
            id: c.id.clone(),
            // Creation time is close enough to the start for initialDelaySeconds.
            running_for: Duration::from_nanos(now_ns.saturating_sub(c.created_at).max(0) as u64),
        })
        .collect();
    running.extend(started.iter().cloned());
    deps.prober.sync_pod(pod, &running, pod_ip);
}

struct StartInputs<'a> {
    ctx: &'a EnvContext<'a>,
    volumes: &'a HashMap<String, MountedVolume>,
    hosts_file: Option<&'a std::path::Path>,
    creds: &'a [images::Credential],
    qos: QosClass,
    pod_ip: &'a str,
}

/// upstream's startContainer: image, config (env, mounts), create, start, postStart hook.
/// On failure: (reason, message) for the container's waiting state.
#[allow(clippy::too_many_arguments)]
async fn start_container(
    rt: &dyn ContainerRuntime,
    deps: &PodDeps,
    pod: &Pod,
    c: &Container,
    attempt: u32,
    sandbox_id: &str,
    sandbox: &api::PodSandboxConfig,
    inputs: &StartInputs<'_>,
) -> Result<String, (&'static str, String)> {
    let name = c.name.as_str();
    {
        // The pull backoff is only touched between awaits of the pull itself.
        let mut pulls = std::mem::take(&mut *deps.pulls.lock().unwrap_or_else(|p| p.into_inner()));
        let r =
            images::ensure_image(rt, &mut pulls, &deps.recorder, pod, c, sandbox, inputs.creds, Instant::now()).await;
        *deps.pulls.lock().unwrap_or_else(|p| p.into_inner()) = pulls;
        r.map_err(|e| (e.reason, e.message))?;
    }
    const CONFIG_ERROR: &str = "CreateContainerConfigError";
    let env = envvars::make_environment(pod, c, inputs.ctx).map_err(|e| (CONFIG_ERROR, e.to_string()))?;
    for (r, msg) in &env.warnings {
        deps.recorder.container_event(pod, name, events::WARNING, r, msg.clone());
    }
    deps.volumes.prepare_sub_paths(c, inputs.volumes).await.map_err(|e| (CONFIG_ERROR, e))?;
    let mounts = volumes::container_mounts(c, inputs.volumes, inputs.hosts_file).map_err(|e| (CONFIG_ERROR, e))?;
    let extras = ContainerExtras { envs: env.vars, mounts, qos: inputs.qos, memory_capacity: deps.memory_capacity };
    let id = rt
        .create_container(sandbox_id, container_config(pod, c, attempt, &extras), sandbox.clone())
        .await
        .map_err(|e| ("CreateContainerError", runtime_message(&e)))?;
    deps.recorder.container_event(pod, name, events::NORMAL, reason::CREATED, format!("Created container: {name}"));
    rt.start_container(&id).await.map_err(|e| ("RunContainerError", runtime_message(&e)))?;
    deps.recorder.container_event(pod, name, events::NORMAL, reason::STARTED, format!("Started container {name}"));
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        let target = Target {
            container_id: id.clone(),
            pod_ip: inputs.pod_ip.to_string(),
            ports: c.ports.clone().unwrap_or_default(),
        };
        if let Err(msg) = lifecycle::run_handler(rt, pod, c, hook, &target, grace_of(pod)).await {
            deps.recorder.container_event(pod, name, events::WARNING, reason::FAILED_POST_START_HOOK, msg.clone());
            let kill = kill_container(rt, deps, pod, name, &id, "FailedPostStartHook", grace_of(pod)).await;
            if let Err(e) = kill {
                tracing::warn!(container = %name, error = %e, "stopping a container whose postStart hook failed");
            }
            return Err(("PostStartHookError", msg));
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FakeEvents;
    use crate::objects::MapObjects;
    use crate::prober::{ProbeResult, ProbeRunner};
    use crate::runtime::fake::FakeRuntime;
    use crate::volumes::mount::FakeMounter;
    use k8s_openapi::api::core::v1::Probe;
    use serde_json::json;

    fn cfg() -> NodeConfig {
        NodeConfig {
            cgroup_root: "/node-1/kubepods".into(),
            log_dir: "/var/log/pods".into(),
            runtime_handler: String::new(),
        }
    }

    /// Probes that always fail, to drive liveness verdicts.
    struct Failing;

    #[async_trait::async_trait]
    impl ProbeRunner for Failing {
        async fn run(&self, _probe: &Probe, _target: &Target) -> ProbeResult {
            ProbeResult::Failure("boom".into())
        }
    }

    struct Env {
        rt: Arc<FakeRuntime>,
        deps: PodDeps,
        objects: Arc<MapObjects>,
        _root: tempfile::TempDir,
    }

    fn env_with(runner: Option<Arc<dyn ProbeRunner>>) -> Env {
        let rt = Arc::new(FakeRuntime::new());
        let objects = Arc::new(MapObjects::default());
        let root = tempfile::tempdir().expect("tempdir");
        let deps = PodDeps::new(PodDepsConfig {
            runtime: rt.clone(),
            objects: objects.clone(),
            event_sink: Arc::new(FakeEvents::default()),
            mounter: Arc::new(FakeMounter::default()),
            probe_runner: runner,
            root_dir: root.path().to_path_buf(),
            node_name: "node-1".into(),
            host_ip: "198.19.0.2".into(),
            dns: DnsSettings {
                cluster_dns: vec!["198.19.1.53".into()],
                cluster_domain: "cluster.local".into(),
                ..Default::default()
            },
            allocatable: BTreeMap::from([("memory".into(), Quantity("4Gi".into()))]),
            memory_capacity: 4 << 30,
            node_hosts: "127.0.0.1 localhost\n".into(),
        });
        Env { rt, deps, objects, _root: root }
    }

    fn env() -> Env {
        env_with(None)
    }

    impl Env {
        async fn sync(&self, p: &Pod, b: &mut Backoff, now: u64) -> SyncOutcome {
            sync_pod(self.rt.as_ref(), p, &cfg(), &self.deps, b, now).await.expect("sync")
        }

        /// The (reason, message) of every event recorded so far.
        async fn events(&self) -> Vec<(String, String)> {
            let taken = self.deps.events.lock().expect("lock").take();
            let Some((_, mut rx)) = taken else { return vec![] };
            let mut out = Vec::new();
            while let Ok(e) = rx.try_recv() {
                out.push((e.reason, e.message));
            }
            let sink: Arc<dyn EventSink> = Arc::new(FakeEvents::default());
            *self.deps.events.lock().expect("lock") = Some((sink, rx));
            out
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

    #[tokio::test]
    async fn new_pod_gets_a_sandbox_then_its_containers_and_a_second_sync_does_nothing() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Always", "IfNotPresent");
        let out = e.sync(&p, &mut b, 0).await;
        assert_eq!(out.started, ["app"]);
        let methods: Vec<_> = e.rt.take_calls().iter().map(|c| c.method()).collect();
        assert!(
            methods.contains(&"RunPodSandbox")
                && methods.contains(&"CreateContainer")
                && methods.contains(&"StartContainer"),
            "{methods:?}"
        );
        assert!(!methods.contains(&"PullImage"), "the image is present: {methods:?}");
        let sb = e.rt.sandbox(&e.rt.sandbox_ids()[0]).expect("sandbox");
        assert_eq!(sb.config.labels.get(POD_UID).map(String::as_str), Some("u1"));
        assert_eq!(
            sb.config.linux.as_ref().map(|l| l.cgroup_parent.as_str()),
            Some("/node-1/kubepods/besteffort/podu1")
        );
        let c = e.rt.container(&e.rt.container_ids()[0]).expect("container");
        assert_eq!(c.config.command, ["sh", "-c", "sleep 1d"]);
        assert_eq!(c.config.envs[0].key, "A");
        assert_eq!(c.config.log_path, "app/0.log");

        let again = e.sync(&p, &mut b, 1).await;
        assert!(again.started.is_empty());
        let methods: Vec<_> = e.rt.take_calls().iter().map(|c| c.method()).collect();
        assert!(
            !methods
                .iter()
                .any(|m| matches!(*m, "RunPodSandbox" | "CreateContainer" | "StartContainer" | "StopContainer")),
            "{methods:?}"
        );
        let events = e.events().await;
        assert_eq!(
            events,
            [
                ("Pulled".to_string(), "Container image \"busybox:1.36\" already present on machine".to_string()),
                ("Created".to_string(), "Created container: app".to_string()),
                ("Started".to_string(), "Started container app".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn crashing_container_restarts_with_growing_backoff() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Always", "IfNotPresent");
        e.sync(&p, &mut b, 0).await;
        let first = e.rt.container_ids()[0].clone();
        e.rt.set_container_exited(&first, 1, "Error").expect("exit");
        // The first restart is immediate.
        assert_eq!(e.sync(&p, &mut b, 5).await.started, ["app"]);
        let second = e.rt.container_ids().into_iter().find(|id| *id != first).expect("a new container");
        assert_eq!(e.rt.container(&second).expect("container").config.metadata.map(|m| m.attempt), Some(1));
        e.rt.set_container_exited(&second, 1, "Error").expect("exit");
        // Then 10 s of CrashLoopBackOff.
        let held = e.sync(&p, &mut b, 6).await;
        assert!(held.started.is_empty());
        assert_eq!(held.backing_off.len(), 1);
        assert!(e
            .events()
            .await
            .contains(&("BackOff".into(), "Back-off restarting failed container app in pod web_default(u1)".into())));
        assert_eq!(e.sync(&p, &mut b, 20).await.started, ["app"]);
    }

    #[tokio::test]
    async fn missing_image_is_pulled_and_never_policy_fails() {
        let e = env();
        let mut b = Backoff::default();
        let out = e.sync(&pod("Always", "IfNotPresent"), &mut b, 0).await;
        assert_eq!(out.started, ["app"]);
        assert!(e.rt.methods().contains(&"PullImage"));

        let e = env();
        let out = e.sync(&pod("Always", "Never"), &mut Backoff::default(), 0).await;
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].1, "ErrImageNeverPull");
        assert!(out.failed[0].2.contains("is not present with pull policy of Never"), "{}", out.failed[0].2);
        assert!(e.events().await.contains(&("Failed".into(), "Error: ErrImageNeverPull".into())));
    }

    #[tokio::test]
    async fn finished_never_pod_loses_its_sandbox_and_is_not_restarted() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let mut b = Backoff::default();
        let p = pod("Never", "IfNotPresent");
        e.sync(&p, &mut b, 0).await;
        let id = e.rt.container_ids()[0].clone();
        e.rt.set_container_exited(&id, 0, "Completed").expect("exit");
        e.rt.take_calls();
        let pod_dir = e.deps.volumes.pod_dir("u1");
        assert!(pod_dir.exists(), "the running pod has its directory (hosts file)");
        let out = e.sync(&p, &mut b, 1).await;
        assert!(out.actions.kill_pod && out.started.is_empty());
        assert!(e.rt.methods().contains(&"StopPodSandbox"));
        assert!(!pod_dir.exists(), "a finished pod's volumes are torn down");
    }

    #[tokio::test]
    async fn a_restarted_kubelet_adopts_running_containers() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let p = pod("Always", "IfNotPresent");
        e.sync(&p, &mut Backoff::default(), 0).await;
        e.rt.take_calls();
        // A new kubelet: fresh backoff state, same runtime.
        let out = e.sync(&p, &mut Backoff::default(), 100).await;
        assert!(out.started.is_empty() && !out.actions.create_sandbox && !out.actions.kill_pod);
    }

    fn rich_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u2"},
            "spec": {"hostname": "w", "subdomain": "svc", "containers": [{
                "name": "app", "image": "busybox:1.36",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "20Mi"}},
                "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "scratch", "mountPath": "/scratch"}],
            }], "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}]},
        }))
        .expect("pod")
    }

    #[tokio::test]
    async fn container_config_carries_env_mounts_resources_and_the_sandbox_dns_and_ports() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        e.objects.add_config_map(
            serde_json::from_value(json!({"metadata": {"name": "cfg", "namespace": "shop"}, "data": {"mode": "fast"}}))
                .expect("cm"),
        );
        let out = e.sync(&rich_pod(), &mut Backoff::default(), 0).await;
        assert_eq!(out.started, ["app"], "{out:?}");
        let sb = e.rt.sandbox(&e.rt.sandbox_ids()[0]).expect("sandbox");
        assert_eq!(sb.config.hostname, "w");
        let dns = sb.config.dns_config.clone().expect("dns");
        assert_eq!(dns.servers, ["198.19.1.53"]);
        assert_eq!(dns.searches[0], "shop.svc.cluster.local");
        assert_eq!(dns.options, ["ndots:5"]);
        assert_eq!(sb.config.port_mappings.len(), 1);
        assert_eq!((sb.config.port_mappings[0].container_port, sb.config.port_mappings[0].host_port), (80, 8080));
        assert_eq!(
            sb.config.linux.as_ref().map(|l| l.cgroup_parent.as_str()),
            Some("/node-1/kubepods/burstable/podu2")
        );
        let c = e.rt.container(&e.rt.container_ids()[0]).expect("container");
        let env: Vec<(String, String)> = c.config.envs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
        assert_eq!(env[0], ("MODE".to_string(), "fast".to_string()));
        assert_eq!(env[1].0, "IP");
        assert!(!env[1].1.is_empty(), "status.podIP is the sandbox's IP");
        let mounts: Vec<(&str, bool)> =
            c.config.mounts.iter().map(|m| (m.container_path.as_str(), m.readonly)).collect();
        assert_eq!(mounts, [("/etc/cfg", true), ("/scratch", false), ("/etc/hosts", false)]);
        let hosts = std::fs::read_to_string(&c.config.mounts[2].host_path).expect("hosts file");
        assert!(hosts.contains(&format!("{}\tw.svc.shop.svc.cluster.local\tw", env[1].1)), "{hosts}");
        let r = c.config.linux.as_ref().and_then(|l| l.resources.clone()).expect("resources");
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes), (256, 50_000, 20 << 20));
    }

    #[tokio::test]
    async fn missing_config_map_waits_with_failed_mount_then_starts_once_it_exists() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let p = rich_pod();
        let out = e.sync(&p, &mut Backoff::default(), 0).await;
        assert_eq!(
            out.volume_error.as_deref(),
            Some("MountVolume.SetUp failed for volume \"cfg\" : configmap \"cfg\" not found")
        );
        assert!(e.rt.sandbox_ids().is_empty(), "nothing starts before its volumes");
        assert!(e.events().await.iter().any(|(r, _)| r == "FailedMount"));
        e.objects.add_config_map(
            serde_json::from_value(json!({"metadata": {"name": "cfg", "namespace": "shop"}, "data": {"mode": "x"}}))
                .expect("cm"),
        );
        assert_eq!(e.sync(&p, &mut Backoff::default(), 1).await.started, ["app"]);
    }

    #[tokio::test]
    async fn create_and_config_errors_report_upstream_reasons() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        e.rt.fail_next(
            "CreateContainer",
            RuntimeError::Rpc {
                method: "CreateContainer",
                status: tonic::Status::unknown("failed to create containerd task: exec: \"nope\": not found"),
            },
        );
        let out = e.sync(&pod("Always", "IfNotPresent"), &mut Backoff::default(), 0).await;
        assert_eq!(
            out.failed,
            [(
                "app".to_string(),
                "CreateContainerError".to_string(),
                "failed to create containerd task: exec: \"nope\": not found".to_string()
            )]
        );
        assert!(e
            .events()
            .await
            .contains(&("Failed".into(), "Error: failed to create containerd task: exec: \"nope\": not found".into())));

        let e = env();
        e.rt.add_image("busybox:1.36");
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u3"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}]}}))
        .expect("pod");
        let out = e.sync(&p, &mut Backoff::default(), 0).await;
        assert_eq!(
            out.failed,
            [("app".to_string(), "CreateContainerConfigError".to_string(), "secret \"gone\" not found".to_string())]
        );
    }

    #[tokio::test]
    async fn failed_post_start_hook_kills_the_container() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        e.rt.push_exec_result(api::ExecSyncResponse { exit_code: 1, stderr: b"bad".to_vec(), ..Default::default() });
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u4"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                "lifecycle": {"postStart": {"exec": {"command": ["false"]}}}}]}}))
        .expect("pod");
        let out = e.sync(&p, &mut Backoff::default(), 0).await;
        assert_eq!(out.failed[0].1, "PostStartHookError");
        let id = e.rt.container_ids()[0].clone();
        assert_eq!(e.rt.container(&id).expect("container").state, api::ContainerState::ContainerExited);
        let events = e.events().await;
        assert!(events.iter().any(|(r, _)| r == "FailedPostStartHook"), "{events:?}");
        assert!(events.contains(&("Killing".into(), "FailedPostStartHook".into())), "{events:?}");
    }

    #[tokio::test]
    async fn pre_stop_hook_runs_before_the_stop() {
        let e = env();
        e.rt.add_image("busybox:1.36");
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u5"},
            "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": "app", "image": "busybox:1.36",
                "lifecycle": {"preStop": {"exec": {"command": ["/bin/drain"]}}}}]}}))
        .expect("pod");
        e.sync(&p, &mut Backoff::default(), 0).await;
        let id = e.rt.container_ids()[0].clone();
        e.rt.take_calls();
        kill_container(e.rt.as_ref(), &e.deps, &p, "app", &id, "", Duration::from_secs(20)).await.expect("kill");
        let calls = e.rt.take_calls();
        let methods: Vec<_> = calls.iter().map(|c| c.method()).collect();
        assert_eq!(methods, ["ExecSync", "StopContainer"]);
        assert!(
            matches!(&calls[1], crate::runtime::fake::Call::StopContainer { timeout, .. } if timeout.as_secs() >= 19)
        );
        assert!(e.events().await.contains(&("Killing".into(), "Stopping container app".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failure_kills_and_restarts_with_an_event() {
        let e = env_with(Some(Arc::new(Failing)));
        e.rt.add_image("busybox:1.36");
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u6"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                "livenessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 1}}]}}))
        .expect("pod");
        let mut b = Backoff::default();
        e.sync(&p, &mut b, 0).await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let out = e.sync(&p, &mut b, 1).await;
        assert_eq!(out.actions.containers_to_kill.len(), 1, "{out:?}");
        assert_eq!(out.started, ["app"]);
        let events = e.events().await;
        assert!(events.contains(&("Unhealthy".into(), "Liveness probe failed: boom".into())), "{events:?}");
        assert!(
            events.contains(&("Killing".into(), "Container app failed liveness probe, will be restarted".into())),
            "{events:?}"
        );
    }
}
