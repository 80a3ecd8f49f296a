//! Probes: upstream's prober manager and workers. One worker per (pod, container, probe kind)
//! runs while the container runs: it waits `initialDelaySeconds`, probes every
//! `periodSeconds` with `timeoutSeconds`, and changes the container's result only after
//! `successThreshold` / `failureThreshold` consecutive equal outcomes. A startup probe holds
//! liveness and readiness back until it succeeds. Results: liveness and startup failures become
//! [`ProbeVerdicts`] for the plan (the container is killed and restarted); readiness sets the
//! container's `ready` flag. Each failed attempt records upstream's Unhealthy event
//! ("Liveness probe failed: ...").
//!
//! The checks themselves sit behind [`ProbeRunner`]: [`RealRunner`] does exec (CRI ExecSync),
//! httpGet (HTTP and HTTPS), tcpSocket and grpc (`grpc.health.v1.Health/Check`) from the node
//! into the pod; tests script a fake.

pub mod grpc;
pub mod http;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{self, reason, Recorder};
use crate::pod_workers::plan::ProbeVerdicts;
use crate::runtime::{ContainerRuntime, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Liveness => c.liveness_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// The outcome of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// Success with a warning (upstream's ProbeWarning event).
    Warning(String),
    Failure(String),
    /// The probe could not run (errored): no change to the result.
    Unknown(String),
}

/// Where a probe goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    pub pod_ip: String,
    pub ports: Vec<ContainerPort>,
}

/// Runs one probe attempt (also used for lifecycle hooks' exec and httpGet).
#[async_trait]
pub trait ProbeRunner: Send + Sync {
    async fn run(&self, probe: &Probe, target: &Target) -> ProbeResult;
}

/// Resolves a probe port (a number or a named container port).
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port number: {p}")),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(p) => Ok(p),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {ports:?}")),
        },
    }
}

fn timeout_of(p: &Probe) -> Duration {
    Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64)
}

/// The real checks: CRI ExecSync, HTTP GET and TCP connect from the node.
pub struct RealRunner {
    pub runtime: Arc<dyn ContainerRuntime>,
}

/// An exec check through ExecSync (shared with the postStart/preStop hooks).
pub async fn exec_check(
    rt: &dyn ContainerRuntime,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> ProbeResult {
    match rt.exec_sync(container_id, cmd.to_vec(), timeout).await {
        Ok(r) if r.exit_code == 0 => ProbeResult::Success,
        Ok(r) => {
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            ProbeResult::Failure(out)
        }
        Err(RuntimeError::DeadlineExceeded { .. }) => {
            ProbeResult::Failure(format!("command {:?} timed out", cmd.join(" ")))
        }
        Err(e) => ProbeResult::Unknown(e.to_string()),
    }
}

fn from_outcome(o: http::Outcome) -> ProbeResult {
    match o {
        http::Outcome::Success(_) => ProbeResult::Success,
        http::Outcome::Warning(w) => ProbeResult::Warning(w),
        http::Outcome::Failure(f) => ProbeResult::Failure(f),
    }
}

/// An httpGet check (shared with the hooks).
pub async fn http_check(
    h: &k8s_openapi::api::core::v1::HTTPGetAction,
    target: &Target,
    timeout: Duration,
) -> ProbeResult {
    let port = match resolve_port(&h.port, &target.ports) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Unknown(e),
    };
    let host = h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
    let headers: Vec<(String, String)> =
        h.http_headers.iter().flatten().map(|hd| (hd.name.clone(), hd.value.clone())).collect();
    let https = h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    from_outcome(http::probe(https, &host, port, h.path.as_deref().unwrap_or("/"), &headers, timeout).await)
}

#[async_trait]
impl ProbeRunner for RealRunner {
    async fn run(&self, probe: &Probe, target: &Target) -> ProbeResult {
        let timeout = timeout_of(probe);
        if let Some(e) = &probe.exec {
            return exec_check(
                self.runtime.as_ref(),
                &target.container_id,
                e.command.as_deref().unwrap_or_default(),
                timeout,
            )
            .await;
        }
        if let Some(h) = &probe.http_get {
            return http_check(h, target, timeout).await;
        }
        if let Some(t) = &probe.tcp_socket {
            let port = match resolve_port(&t.port, &target.ports) {
                Ok(p) => p,
                Err(e) => return ProbeResult::Unknown(e),
            };
            let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| target.pod_ip.clone());
            return from_outcome(http::tcp_probe(&host, port, timeout).await);
        }
        if let Some(g) = &probe.grpc {
            let Ok(port) = u16::try_from(g.port) else {
                return ProbeResult::Unknown(format!("invalid port number: {}", g.port));
            };
            let service = g.service.clone().unwrap_or_default();
            return from_outcome(grpc::probe(&target.pod_ip, port, &service, timeout).await);
        }
        ProbeResult::Unknown("missing probe handler".into())
    }
}

/// upstream's consecutive-result thresholds. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub success: u32,
    pub failure: u32,
    last: Option<bool>,
    run: u32,
}

impl Thresholds {
    pub fn new(p: &Probe) -> Self {
        Thresholds {
            success: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure: p.failure_threshold.unwrap_or(3).max(1) as u32,
            last: None,
            run: 0,
        }
    }

    /// One attempt's outcome; `Some(result)` when the container's result becomes it.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let needed = if ok { self.success } else { self.failure };
        (self.run >= needed).then_some(ok)
    }
}

/// Results per container id and kind, shared by the workers and the pod loop.
#[derive(Debug, Default)]
struct Results {
    /// Current result; absent = the initial one (liveness ok, readiness not ready, startup not started).
    by_container: HashMap<(String, Kind), bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerKey {
    pod_uid: String,
    container: String,
    kind: Kind,
}

struct Worker {
    container_id: String,
    cancel: CancellationToken,
}

/// A running container as the prober needs to know it.
#[derive(Debug, Clone)]
pub struct RunningContainer {
    pub name: String,
    pub id: String,
    /// How long it has been running already (a restarted kubelet adopts running containers).
    pub running_for: Duration,
}

/// Starts and stops probe workers, and answers the pod loop's questions.
pub struct ProberManager {
    runner: Arc<dyn ProbeRunner>,
    recorder: Recorder,
    results: Arc<Mutex<Results>>,
    workers: Mutex<HashMap<WorkerKey, Worker>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl ProberManager {
    /// Workers stop when `cancel` fires.
    pub fn new(runner: Arc<dyn ProbeRunner>, recorder: Recorder, cancel: CancellationToken) -> Self {
        ProberManager {
            runner,
            recorder,
            results: Arc::default(),
            workers: Mutex::default(),
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    fn lock_results(&self) -> std::sync::MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the pod's workers in line with its running containers.
    pub fn sync_pod(&self, pod: &Pod, running: &[RunningContainer], pod_ip: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut wanted: HashMap<WorkerKey, (&Container, &RunningContainer)> = HashMap::new();
        for c in &spec.containers {
            let Some(r) = running.iter().find(|r| r.name == c.name) else { continue };
            for kind in [Kind::Liveness, Kind::Readiness, Kind::Startup] {
                if kind.of(c).is_some() {
                    wanted.insert(WorkerKey { pod_uid: uid.clone(), container: c.name.clone(), kind }, (c, r));
                }
            }
        }
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut stale_ids = Vec::new();
        workers.retain(|k, w| {
            let keep = k.pod_uid != uid || wanted.get(k).is_some_and(|(_, r)| r.id == w.container_id);
            if !keep {
                w.cancel.cancel();
                stale_ids.push((w.container_id.clone(), k.kind));
            }
            keep
        });
        if !stale_ids.is_empty() {
            let mut res = self.lock_results();
            for key in stale_ids {
                res.by_container.remove(&key);
            }
        }
        for (key, (c, r)) in wanted {
            if workers.contains_key(&key) {
                continue;
            }
            let cancel = self.cancel.child_token();
            workers.insert(key.clone(), Worker { container_id: r.id.clone(), cancel: cancel.clone() });
            let worker = WorkerTask {
                kind: key.kind,
                pod: pod.clone(),
                container: c.clone(),
                target: Target {
                    container_id: r.id.clone(),
                    pod_ip: pod_ip.to_string(),
                    ports: c.ports.clone().unwrap_or_default(),
                },
                running_for: r.running_for,
                runner: self.runner.clone(),
                recorder: self.recorder.clone(),
                results: self.results.clone(),
            };
            self.tracker.spawn(worker.run(cancel));
        }
    }

    /// Stops every worker of a pod that is gone.
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids = Vec::new();
        workers.retain(|k, w| {
            if k.pod_uid == pod_uid {
                w.cancel.cancel();
                ids.push((w.container_id.clone(), k.kind));
                false
            } else {
                true
            }
        });
        drop(workers);
        let mut res = self.lock_results();
        for key in ids {
            res.by_container.remove(&key);
        }
    }

    /// Which of these containers must be restarted for their probes.
    pub fn verdicts(&self, container_ids: &[String]) -> ProbeVerdicts {
        let res = self.lock_results();
        let failed = |kind: Kind| -> HashSet<String> {
            container_ids
                .iter()
                .filter(|id| res.by_container.get(&((*id).clone(), kind)) == Some(&false))
                .cloned()
                .collect()
        };
        ProbeVerdicts { liveness_failed: failed(Kind::Liveness), startup_failed: failed(Kind::Startup) }
    }

    /// upstream's container `started`: true without a startup probe, else once it succeeded.
    pub fn started(&self, c: &Container, container_id: &str) -> bool {
        c.startup_probe.is_none()
            || self.lock_results().by_container.get(&(container_id.to_string(), Kind::Startup)) == Some(&true)
    }

    /// upstream's container `ready`: started, and the readiness probe (if any) succeeded.
    pub fn ready(&self, c: &Container, container_id: &str) -> bool {
        self.started(c, container_id)
            && (c.readiness_probe.is_none()
                || self.lock_results().by_container.get(&(container_id.to_string(), Kind::Readiness)) == Some(&true))
    }

    /// Waits for every worker to stop (after the cancel token fired).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct WorkerTask {
    kind: Kind,
    pod: Pod,
    container: Container,
    target: Target,
    running_for: Duration,
    runner: Arc<dyn ProbeRunner>,
    recorder: Recorder,
    results: Arc<Mutex<Results>>,
}

impl WorkerTask {
    fn result(&self, kind: Kind) -> Option<bool> {
        let res = self.results.lock().unwrap_or_else(|p| p.into_inner());
        res.by_container.get(&(self.target.container_id.clone(), kind)).copied()
    }

    fn set(&self, ok: bool) {
        let mut res = self.results.lock().unwrap_or_else(|p| p.into_inner());
        res.by_container.insert((self.target.container_id.clone(), self.kind), ok);
    }

    async fn run(self, cancel: CancellationToken) {
        let Some(probe) = self.kind.of(&self.container).cloned() else { return };
        let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        let mut thresholds = Thresholds::new(&probe);
        let wait = initial.saturating_sub(self.running_for);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let has_startup = self.container.startup_probe.is_some();
            match self.kind {
                // Done once the container has started.
                Kind::Startup if self.result(Kind::Startup) == Some(true) => return,
                // Held back until the startup probe succeeds.
                Kind::Liveness | Kind::Readiness if has_startup && self.result(Kind::Startup) != Some(true) => continue,
                _ => {}
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.runner.run(&probe, &self.target) => r,
            };
            let kind = self.kind.as_str();
            let ok = match outcome {
                ProbeResult::Success => true,
                ProbeResult::Warning(w) => {
                    self.recorder.container_event(
                        &self.pod,
                        &self.container.name,
                        events::WARNING,
                        "ProbeWarning",
                        format!("{kind} probe warning: {w}"),
                    );
                    true
                }
                ProbeResult::Failure(out) => {
                    self.recorder.container_event(
                        &self.pod,
                        &self.container.name,
                        events::WARNING,
                        reason::UNHEALTHY,
                        format!("{kind} probe failed: {out}"),
                    );
                    false
                }
                ProbeResult::Unknown(e) => {
                    self.recorder.container_event(
                        &self.pod,
                        &self.container.name,
                        events::WARNING,
                        reason::UNHEALTHY,
                        format!("{kind} probe errored: {e}"),
                    );
                    continue;
                }
            };
            if let Some(result) = thresholds.observe(ok) {
                self.set(result);
                // A failed liveness or startup probe restarts the container: wait for that
                // (the manager replaces this worker when the container id changes).
                if !result && matches!(self.kind, Kind::Liveness | Kind::Startup) {
                    cancel.cancelled().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
