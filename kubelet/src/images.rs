//! Images: upstream's image manager (`pkg/kubelet/images`). The pull policy (defaulted from the
//! tag as the API does), registry credentials from `imagePullSecrets` (docker config JSON →
//! CRI `AuthConfig`, matched by registry host and path as upstream's keyring does), the pull
//! backoff keyed by pod and image (10 s doubling to 5 min, like every kubelet backoff), and
//! the events and waiting reasons upstream reports: Pulling, Pulled ("Successfully pulled image
//! ..." / "Container image ... already present on machine"), Failed, BackOff, ErrImagePull,
//! ImagePullBackOff, ErrImageNeverPull.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::events::{self, reason, Recorder};
use crate::objects::PodObjects;
use crate::runtime::{api, image_spec, ContainerRuntime};

pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";

pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The repository and tag/digest parts of an image reference: (name, tag, digest).
fn split_reference(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// The pull policy of `c`: as set, or upstream's default (Always for `:latest` or no tag
/// without a digest, IfNotPresent otherwise).
pub fn pull_policy(c: &Container) -> &str {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p;
    }
    let (_, tag, digest) = split_reference(c.image.as_deref().unwrap_or(""));
    match (tag, digest) {
        (_, Some(_)) => "IfNotPresent",
        (None, None) | (Some("latest"), None) => "Always",
        _ => "IfNotPresent",
    }
}

/// The registry host and repository path of an image, normalised as containerd does
/// (`busybox` → `docker.io/library/busybox`).
pub fn registry_and_path(image: &str) -> (String, String) {
    let (name, _, _) = split_reference(image);
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    if !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost") {
        let host = if first == "index.docker.io" || first == "registry-1.docker.io" { "docker.io" } else { first };
        return (host.to_string(), rest.to_string());
    }
    let path = if name.contains('/') { name.to_string() } else { format!("library/{name}") };
    ("docker.io".to_string(), path)
}

/// One credential from a docker config: where it applies and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub host: String,
    pub path: String,
    pub auth: api::AuthConfig,
}

/// Registry credentials from `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, with an
/// `auths` map) and `kubernetes.io/dockercfg` (`.dockercfg`, the map itself) secrets.
pub fn credentials_from_secret(secret: &Secret) -> Vec<Credential> {
    let data = secret.data.clone().unwrap_or_default();
    let entries = if let Some(b) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<serde_json::Value>(&b.0).ok().and_then(|v| v.get("auths").cloned())
    } else if let Some(b) = data.get(".dockercfg") {
        serde_json::from_slice::<serde_json::Value>(&b.0).ok()
    } else {
        None
    };
    let Some(serde_json::Value::Object(map)) = entries else { return Vec::new() };
    let mut out = Vec::new();
    for (key, v) in map {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let (mut username, mut password) = (s("username"), s("password"));
        let auth = s("auth");
        if !auth.is_empty() {
            // `auth` is base64("user:password") and wins, as in docker's config.
            if let Some((u, p)) = base64::engine::general_purpose::STANDARD
                .decode(auth.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| t.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
            {
                username = u;
                password = p;
            }
        }
        let location = key.trim_start_matches("https://").trim_start_matches("http://");
        let location = location.trim_end_matches('/').trim_end_matches("/v1").trim_end_matches("/v2");
        let (host, path) = location.split_once('/').unwrap_or((location, ""));
        let host = match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            h => h,
        };
        out.push(Credential {
            host: host.to_string(),
            path: path.to_string(),
            auth: api::AuthConfig {
                username,
                password,
                auth: String::new(),
                server_address: host.to_string(),
                identity_token: s("identitytoken"),
                registry_token: s("registrytoken"),
            },
        });
    }
    // Longest (most specific) match first, as upstream's keyring orders them.
    out.sort_by_key(|c| std::cmp::Reverse(c.host.len() + c.path.len()));
    out
}

/// The credentials that apply to `image`, most specific first.
pub fn credentials_for(image: &str, creds: &[Credential]) -> Vec<api::AuthConfig> {
    let (host, path) = registry_and_path(image);
    creds
        .iter()
        .filter(|c| {
            c.host == host && (c.path.is_empty() || path == c.path || path.starts_with(&format!("{}/", c.path)))
        })
        .map(|c| c.auth.clone())
        .collect()
}

/// The credentials of the pod's `imagePullSecrets` that exist.
pub fn pod_credentials(pod: &Pod, objects: &PodObjects) -> Vec<Credential> {
    let mut out = Vec::new();
    for r in pod.spec.as_ref().and_then(|s| s.image_pull_secrets.as_ref()).into_iter().flatten() {
        if let Some(s) = objects.secret(&r.name) {
            out.extend(credentials_from_secret(s));
        }
    }
    out
}

/// upstream's flowcontrol.Backoff, keyed by pod uid and image; time comes in.
#[derive(Debug, Default)]
pub struct PullBackoff {
    entries: HashMap<String, (Duration, Instant)>,
    /// The last pull error per key, for the ImagePullBackOff message (upstream's prevPullErrMsg).
    last_error: HashMap<String, String>,
}

impl PullBackoff {
    fn expired(&self, entry: &(Duration, Instant), now: Instant) -> bool {
        now.saturating_duration_since(entry.1) > 2 * BACKOFF_MAX
    }

    /// Whether a pull of `key` must wait (the last failure was less than its backoff ago).
    pub fn in_backoff(&self, key: &str, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|e| !self.expired(e, now) && now.saturating_duration_since(e.1) < e.0)
    }

    /// A failure of `key` at `now`: the next backoff.
    pub fn next(&mut self, key: &str, now: Instant) -> Duration {
        let delay = match self.entries.get(key) {
            Some(e) if !self.expired(e, now) => (e.0 * 2).min(BACKOFF_MAX),
            _ => BACKOFF_INITIAL,
        };
        self.entries.insert(key.to_string(), (delay, now));
        delay
    }

    pub fn forget(&mut self, key: &str) {
        self.entries.remove(key);
        self.last_error.remove(key);
    }

    pub fn forget_pod(&mut self, pod_uid: &str) {
        let prefix = format!("{pod_uid}_");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
        self.last_error.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// Go's `time.Duration.String()` of a duration cut to milliseconds ("1.2s", "350ms", "1m2.5s").
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, (ms / 60_000) % 60, (ms / 1000) % 60, ms % 1000);
    let secs = if frac == 0 { format!("{s}s") } else { format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0')) };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

/// Why a container's image is not there: the waiting reason and message for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    pub reason: &'static str,
    pub message: String,
}

/// upstream's EnsureImageExists: pulls when the policy asks for it, with credentials and
/// backoff, recording upstream's events. Returns the image reference to create from.
#[allow(clippy::too_many_arguments)]
pub async fn ensure_image(
    rt: &dyn ContainerRuntime,
    backoff: &mut PullBackoff,
    recorder: &Recorder,
    pod: &Pod,
    c: &Container,
    sandbox: &api::PodSandboxConfig,
    creds: &[Credential],
    now: Instant,
) -> Result<String, ImageError> {
    let image = c.image.clone().unwrap_or_default();
    let event = |type_: &'static str, r: &str, msg: String| recorder.container_event(pod, &c.name, type_, r, msg);
    let pull_err = |message: String| ImageError { reason: ERR_IMAGE_PULL, message };
    let present = rt.image_status(image_spec(image.clone()), false).await.map_err(|e| pull_err(e.to_string()))?;
    let policy = pull_policy(c);
    let pull = match policy {
        "Always" => true,
        "Never" => false,
        _ => present.is_none(),
    };
    if !pull {
        return match present {
            Some(img) => {
                event(events::NORMAL, reason::PULLED, format!("Container image {image:?} already present on machine"));
                Ok(img.id)
            }
            None => {
                let message = format!("Container image {image:?} is not present with pull policy of Never");
                event(events::WARNING, reason::ERR_IMAGE_NEVER_PULL, message.clone());
                Err(ImageError { reason: ERR_IMAGE_NEVER_PULL, message })
            }
        };
    }
    let key = format!("{}_{image}", pod.metadata.uid.as_deref().unwrap_or(""));
    if backoff.in_backoff(&key, now) {
        let message = format!("Back-off pulling image {image:?}");
        event(events::NORMAL, reason::BACK_OFF, message.clone());
        // The status also says why the last pull failed.
        let message = match backoff.last_error.get(&key) {
            Some(e) => format!("{message}: {e}"),
            None => message,
        };
        return Err(ImageError { reason: IMAGE_PULL_BACK_OFF, message });
    }
    event(events::NORMAL, reason::PULLING, format!("Pulling image {image:?}"));
    let started = Instant::now();
    let auths = credentials_for(&image, creds);
    let mut result = Err(String::new());
    // Each matching credential in turn, then anonymously when there is none (upstream).
    let attempts: Vec<Option<api::AuthConfig>> =
        if auths.is_empty() { vec![None] } else { auths.into_iter().map(Some).collect() };
    for auth in attempts {
        result = rt.pull_image(image_spec(image.clone()), auth, Some(sandbox.clone())).await.map_err(|e| {
            // The gRPC status message is what upstream shows (rpc error: code = ... desc = ...).
            match &e {
                crate::runtime::RuntimeError::Rpc { status, .. } => {
                    format!("rpc error: code = {:?} desc = {}", status.code(), status.message())
                }
                other => other.to_string(),
            }
        });
        if result.is_ok() {
            break;
        }
    }
    match result {
        Ok(image_ref) => {
            backoff.forget(&key);
            let took = started.elapsed();
            let size =
                rt.image_status(image_spec(image.clone()), false).await.ok().flatten().map(|i| i.size).unwrap_or(0);
            event(
                events::NORMAL,
                reason::PULLED,
                format!(
                    "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {size} bytes.",
                    go_duration(took),
                    go_duration(took)
                ),
            );
            Ok(image_ref)
        }
        Err(e) => {
            event(events::WARNING, reason::FAILED, format!("Failed to pull image {image:?}: {e}"));
            backoff.next(&key, now);
            backoff.last_error.insert(key, format!("{ERR_IMAGE_PULL}: {e}"));
            Err(pull_err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FakeEvents;
    use crate::runtime::{FakeRuntime, RuntimeError};
    use serde_json::json;
    use std::sync::Arc;

    fn container(image: &str, policy: Option<&str>) -> Container {
        let mut c = json!({"name": "app", "image": image});
        if let Some(p) = policy {
            c["imagePullPolicy"] = json!(p);
        }
        serde_json::from_value(c).expect("container")
    }

    #[test]
    fn pull_policy_defaults_from_the_tag() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("198.19.0.1:5000/busybox", "Always"),
            ("198.19.0.1:5000/busybox:1.36", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
            ("busybox:latest@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(&container(image, None)), want, "{image}");
        }
        assert_eq!(pull_policy(&container("busybox", Some("Never"))), "Never");
    }

    #[test]
    fn registry_host_and_path_are_normalised() {
        for (image, host, path) in [
            ("busybox:1.36", "docker.io", "library/busybox"),
            ("user/app", "docker.io", "user/app"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause"),
            ("198.19.0.1:5000/team/app:v1", "198.19.0.1:5000", "team/app"),
            ("localhost/app", "localhost", "app"),
            ("index.docker.io/library/nginx", "docker.io", "library/nginx"),
        ] {
            assert_eq!(registry_and_path(image), (host.to_string(), path.to_string()), "{image}");
        }
    }

    fn secret(kind: &str, body: serde_json::Value) -> Secret {
        let b64 = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        serde_json::from_value(json!({"metadata": {"name": "regcred"}, "type": kind, "data": {
            if kind == "kubernetes.io/dockerconfigjson" { ".dockerconfigjson" } else { ".dockercfg" }: b64}}))
        .expect("secret")
    }

    #[test]
    fn docker_config_secrets_become_cri_auth_matched_by_registry() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pw1");
        let s = secret(
            "kubernetes.io/dockerconfigjson",
            json!({"auths": {
                "https://198.19.0.1:5000": {"auth": auth},
                "198.19.0.1:5000/team": {"username": "bob", "password": "pw2"},
                "https://index.docker.io/v1/": {"username": "carol", "password": "pw3"},
            }}),
        );
        let creds = credentials_from_secret(&s);
        let users = |image: &str| credentials_for(image, &creds).into_iter().map(|a| a.username).collect::<Vec<_>>();
        assert_eq!(users("198.19.0.1:5000/team/app:v1"), ["bob", "alice"], "most specific first");
        assert_eq!(users("198.19.0.1:5000/other:v1"), ["alice"]);
        assert_eq!(users("198.19.0.1:5000/teamx/app"), ["alice"], "a path prefix matches whole segments");
        assert_eq!(users("busybox"), ["carol"]);
        assert!(users("registry.k8s.io/pause:3.9").is_empty());
        let a = &credentials_for("198.19.0.1:5000/x", &creds)[0];
        assert_eq!((a.password.as_str(), a.server_address.as_str()), ("pw1", "198.19.0.1:5000"));

        let legacy = secret("kubernetes.io/dockercfg", json!({"198.19.0.1:5000": {"username": "u", "password": "p"}}));
        assert_eq!(credentials_for("198.19.0.1:5000/x", &credentials_from_secret(&legacy))[0].username, "u");
    }

    #[test]
    fn pull_backoff_doubles_to_five_minutes_and_expires() {
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        assert!(!b.in_backoff("k", t0));
        let delays: Vec<u64> = (0..7).map(|i| b.next("k", t0 + Duration::from_secs(i)).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert!(b.in_backoff("k", t0 + Duration::from_secs(7)));
        assert!(!b.in_backoff("k", t0 + Duration::from_secs(6 + 300)));
        // Quiet for longer than twice the maximum: start again from 10 s.
        assert_eq!(b.next("k", t0 + Duration::from_secs(6 + 601)).as_secs(), 10);
        b.forget_pod("k");
    }

    #[test]
    fn go_durations_print_like_go() {
        for (ms, want) in
            [(0, "0s"), (350, "350ms"), (1200, "1.2s"), (1000, "1s"), (62_500, "1m2.5s"), (3_600_000, "1h0m0s")]
        {
            assert_eq!(go_duration(Duration::from_millis(ms)), want);
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}))
        .expect("pod")
    }

    async fn drain(
        sink: &Arc<FakeEvents>,
        rx: tokio::sync::mpsc::UnboundedReceiver<events::NewEvent>,
    ) -> Vec<(String, String)> {
        drop_and_run(sink, rx).await;
        sink.summary().into_iter().map(|(_, r, m, _)| (r, m)).collect()
    }

    async fn drop_and_run(sink: &Arc<FakeEvents>, rx: tokio::sync::mpsc::UnboundedReceiver<events::NewEvent>) {
        events::run(sink.clone(), rx, "node-1".into(), tokio_util::sync::CancellationToken::new()).await;
    }

    #[tokio::test]
    async fn ensure_image_reports_like_upstream() {
        let rt = FakeRuntime::new();
        let p = pod();
        let mut b = PullBackoff::default();
        let t0 = Instant::now();
        let sb = api::PodSandboxConfig::default();

        // A failing pull: ErrImagePull, then ImagePullBackOff until the backoff passes.
        let (rec, rx) = Recorder::new();
        rt.fail_next("PullImage", RuntimeError::Rpc { method: "PullImage", status: tonic::Status::not_found("nope") });
        let c = container("busybox:1.36", None);
        let err = ensure_image(&rt, &mut b, &rec, &p, &c, &sb, &[], t0).await.expect_err("pull fails");
        assert_eq!(err.reason, ERR_IMAGE_PULL);
        let err =
            ensure_image(&rt, &mut b, &rec, &p, &c, &sb, &[], t0 + Duration::from_secs(5)).await.expect_err("backoff");
        assert_eq!(
            err,
            ImageError {
                reason: IMAGE_PULL_BACK_OFF,
                message:
                    "Back-off pulling image \"busybox:1.36\": ErrImagePull: rpc error: code = NotFound desc = nope"
                        .into()
            }
        );
        let img =
            ensure_image(&rt, &mut b, &rec, &p, &c, &sb, &[], t0 + Duration::from_secs(11)).await.expect("pulled");
        assert!(!img.is_empty());
        // Present now: no pull with IfNotPresent.
        ensure_image(&rt, &mut b, &rec, &p, &c, &sb, &[], t0 + Duration::from_secs(12)).await.expect("present");
        drop(rec);
        let sink = Arc::new(FakeEvents::default());
        let evs = drain(&sink, rx).await;
        let reasons: Vec<&str> = evs.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(reasons, ["Pulling", "Failed", "BackOff", "Pulled", "Pulled"], "{evs:?}");
        assert_eq!(evs[1].1, "Failed to pull image \"busybox:1.36\": rpc error: code = NotFound desc = nope");
        assert!(evs[3].1.starts_with("Successfully pulled image \"busybox:1.36\" in "), "{}", evs[3].1);
        assert!(evs[3].1.ends_with(" bytes."), "{}", evs[3].1);
        assert_eq!(evs[4].1, "Container image \"busybox:1.36\" already present on machine");

        // Never with a missing image.
        let (rec, _rx) = Recorder::new();
        let never = container("nginx:1.22", Some("Never"));
        let err = ensure_image(&rt, &mut b, &rec, &p, &never, &sb, &[], t0).await.expect_err("never");
        assert_eq!(err.reason, ERR_IMAGE_NEVER_PULL);
        assert_eq!(err.message, "Container image \"nginx:1.22\" is not present with pull policy of Never");
    }

    #[tokio::test]
    async fn ensure_image_passes_matching_credentials() {
        let rt = FakeRuntime::new();
        let (rec, _rx) = Recorder::new();
        let creds = vec![Credential {
            host: "docker.io".into(),
            path: String::new(),
            auth: api::AuthConfig { username: "u".into(), ..Default::default() },
        }];
        let c = container("busybox:latest", None);
        ensure_image(&rt, &mut PullBackoff::default(), &rec, &pod(), &c, &Default::default(), &creds, Instant::now())
            .await
            .expect("pulled");
        assert!(rt
            .calls()
            .contains(&crate::runtime::fake::Call::PullImage { image: "busybox:latest".into(), with_auth: true }));
    }
}
