//! [`CriRuntime`]: the real [`ContainerRuntime`], a CRI v1 gRPC client over the runtime's unix
//! socket (containerd's `containerd.sock`, CRI-O's `crio.sock`).
//!
//! Timeouts follow upstream's `remote_runtime.go`: every call gets the runtime request timeout
//! (kubelet's `--runtime-request-timeout`, default 2 min) as its gRPC deadline, except
//! `PullImage`, which has none (big images take long), and `ExecSync`, whose deadline is its own
//! timeout plus the request timeout.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use super::{api, ContainerRuntime, Result, RuntimeError, CRI_API_VERSION};

/// Largest CRI message accepted or sent (upstream kubelet: `maxMsgSize = 16 MiB`).
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How to reach the runtime.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Deadline of every call but `PullImage` (see the module docs).
    pub request_timeout: Duration,
}

impl Default for CriOptions {
    fn default() -> Self {
        CriOptions { connect_timeout: Duration::from_secs(10), request_timeout: Duration::from_secs(120) }
    }
}

/// A connected CRI client. Cheap to clone; clones share one HTTP/2 connection, which tonic
/// re-establishes through the same unix socket when the runtime restarts.
#[derive(Debug, Clone)]
pub struct CriRuntime {
    endpoint: String,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    request_timeout: Duration,
}

/// The socket path of a CRI endpoint: `unix:///path` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let invalid =
        |reason: &str| RuntimeError::InvalidEndpoint { endpoint: endpoint.to_string(), reason: reason.into() };
    let path = match endpoint.split_once("://") {
        Some(("unix", path)) => path,
        Some((scheme, _)) => return Err(invalid(&format!("unsupported scheme {scheme:?}, only unix:// is"))),
        None => endpoint,
    };
    if !path.starts_with('/') {
        return Err(invalid("the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

impl CriRuntime {
    /// Connects to `endpoint` (`unix:///run/containerd/containerd.sock` or `/path/to.sock`),
    /// failing after `options.connect_timeout`.
    pub async fn connect(endpoint: &str, options: CriOptions) -> Result<Self> {
        let path = socket_path(endpoint)?;
        // The URI is never dialled: the connector below always opens the unix socket. It only
        // ends up as the HTTP/2 :authority, which CRI servers ignore.
        let endpoint_cfg = Endpoint::from_static("http://localhost").connect_timeout(options.connect_timeout);
        let channel = endpoint_cfg.connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        let channel = match tokio::time::timeout(options.connect_timeout, channel).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(source)) => return Err(RuntimeError::Connect { endpoint: endpoint.to_string(), source }),
            Err(_) => {
                return Err(RuntimeError::ConnectTimeout {
                    endpoint: endpoint.to_string(),
                    timeout: options.connect_timeout,
                })
            }
        };
        Ok(Self::with_channel(endpoint, channel, options.request_timeout))
    }

    /// A client that connects on first use and reconnects whenever the runtime comes back, so
    /// a runtime that is down at start (or restarts) makes calls fail instead of the kubelet.
    /// Fails only on a malformed endpoint.
    pub fn connect_lazy(endpoint: &str, options: CriOptions) -> Result<Self> {
        let path = socket_path(endpoint)?;
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(options.connect_timeout)
            .connect_with_connector_lazy(service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }));
        Ok(Self::with_channel(endpoint, channel, options.request_timeout))
    }

    fn with_channel(endpoint: &str, channel: Channel, request_timeout: Duration) -> Self {
        CriRuntime {
            endpoint: endpoint.to_string(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            request_timeout,
        }
    }

    /// The endpoint this client was connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn img(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }
}

/// A request with a gRPC deadline (sent to the server as `grpc-timeout`).
fn request<T>(message: T, deadline: Option<Duration>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(d) = deadline {
        req.set_timeout(d);
    }
    req
}

/// Awaits one call, enforcing the deadline on the client side too (a hung runtime must not hang
/// the kubelet), and maps errors.
async fn call<T>(
    method: &'static str,
    deadline: Option<Duration>,
    fut: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    let res = match deadline {
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(res) => res,
            Err(_) => {
                return Err(RuntimeError::DeadlineExceeded { method, message: format!("no answer within {d:?}") })
            }
        },
        None => fut.await,
    };
    res.map(tonic::Response::into_inner).map_err(|status| RuntimeError::from_status(method, status))
}

/// Whole seconds for CRI's int64 timeout fields, rounded up so that a sub-second timeout does
/// not turn into 0 ("no timeout").
fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[async_trait]
impl ContainerRuntime for CriRuntime {
    async fn version(&self) -> Result<api::VersionResponse> {
        let t = Some(self.request_timeout);
        let req = api::VersionRequest { version: CRI_API_VERSION.into() };
        call("Version", t, self.rt().version(request(req, t))).await
    }

    async fn status(&self, verbose: bool) -> Result<api::StatusResponse> {
        let t = Some(self.request_timeout);
        call("Status", t, self.rt().status(request(api::StatusRequest { verbose }, t))).await
    }

    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig, runtime_handler: &str) -> Result<String> {
        let t = Some(self.request_timeout);
        let req = api::RunPodSandboxRequest { config: Some(config), runtime_handler: runtime_handler.into() };
        let resp = call("RunPodSandbox", t, self.rt().run_pod_sandbox(request(req, t))).await?;
        if resp.pod_sandbox_id.is_empty() {
            return Err(RuntimeError::MissingField { method: "RunPodSandbox", field: "pod_sandbox_id" });
        }
        Ok(resp.pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let t = Some(self.request_timeout);
        let req = api::StopPodSandboxRequest { pod_sandbox_id: pod_sandbox_id.into() };
        call("StopPodSandbox", t, self.rt().stop_pod_sandbox(request(req, t))).await.map(drop)
    }

    async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let t = Some(self.request_timeout);
        let req = api::RemovePodSandboxRequest { pod_sandbox_id: pod_sandbox_id.into() };
        call("RemovePodSandbox", t, self.rt().remove_pod_sandbox(request(req, t))).await.map(drop)
    }

    async fn pod_sandbox_status(&self, pod_sandbox_id: &str, verbose: bool) -> Result<api::PodSandboxStatusResponse> {
        let t = Some(self.request_timeout);
        let req = api::PodSandboxStatusRequest { pod_sandbox_id: pod_sandbox_id.into(), verbose };
        let resp = call("PodSandboxStatus", t, self.rt().pod_sandbox_status(request(req, t))).await?;
        if resp.status.is_none() {
            return Err(RuntimeError::MissingField { method: "PodSandboxStatus", field: "status" });
        }
        Ok(resp)
    }

    async fn list_pod_sandbox(&self, filter: Option<api::PodSandboxFilter>) -> Result<Vec<api::PodSandbox>> {
        let t = Some(self.request_timeout);
        let req = api::ListPodSandboxRequest { filter };
        Ok(call("ListPodSandbox", t, self.rt().list_pod_sandbox(request(req, t))).await?.items)
    }

    async fn pull_image(
        &self,
        image: api::ImageSpec,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String> {
        let req = api::PullImageRequest { image: Some(image), auth, sandbox_config };
        let resp = call("PullImage", None, self.img().pull_image(request(req, None))).await?;
        if resp.image_ref.is_empty() {
            return Err(RuntimeError::MissingField { method: "PullImage", field: "image_ref" });
        }
        Ok(resp.image_ref)
    }

    async fn image_status(&self, image: api::ImageSpec, verbose: bool) -> Result<Option<api::Image>> {
        let t = Some(self.request_timeout);
        let req = api::ImageStatusRequest { image: Some(image), verbose };
        let resp = call("ImageStatus", t, self.img().image_status(request(req, t))).await?;
        // upstream: a missing image is a response without `image` (or with an empty id)
        Ok(resp.image.filter(|i| !i.id.is_empty()))
    }

    async fn list_images(&self, filter: Option<api::ImageFilter>) -> Result<Vec<api::Image>> {
        let t = Some(self.request_timeout);
        let req = api::ListImagesRequest { filter };
        Ok(call("ListImages", t, self.img().list_images(request(req, t))).await?.images)
    }

    async fn remove_image(&self, image: api::ImageSpec) -> Result<()> {
        let t = Some(self.request_timeout);
        let req = api::RemoveImageRequest { image: Some(image) };
        call("RemoveImage", t, self.img().remove_image(request(req, t))).await.map(drop)
    }

    async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let t = Some(self.request_timeout);
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let resp = call("CreateContainer", t, self.rt().create_container(request(req, t))).await?;
        if resp.container_id.is_empty() {
            return Err(RuntimeError::MissingField { method: "CreateContainer", field: "container_id" });
        }
        Ok(resp.container_id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let t = Some(self.request_timeout);
        let req = api::StartContainerRequest { container_id: container_id.into() };
        call("StartContainer", t, self.rt().start_container(request(req, t))).await.map(drop)
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        // upstream: the deadline is the grace period plus the request timeout
        let t = Some(self.request_timeout.saturating_add(timeout));
        let req = api::StopContainerRequest { container_id: container_id.into(), timeout: whole_seconds(timeout) };
        call("StopContainer", t, self.rt().stop_container(request(req, t))).await.map(drop)
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let t = Some(self.request_timeout);
        let req = api::RemoveContainerRequest { container_id: container_id.into() };
        call("RemoveContainer", t, self.rt().remove_container(request(req, t))).await.map(drop)
    }

    async fn container_status(&self, container_id: &str, verbose: bool) -> Result<api::ContainerStatusResponse> {
        let t = Some(self.request_timeout);
        let req = api::ContainerStatusRequest { container_id: container_id.into(), verbose };
        let resp = call("ContainerStatus", t, self.rt().container_status(request(req, t))).await?;
        if resp.status.is_none() {
            return Err(RuntimeError::MissingField { method: "ContainerStatus", field: "status" });
        }
        Ok(resp)
    }

    async fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Result<Vec<api::Container>> {
        let t = Some(self.request_timeout);
        let req = api::ListContainersRequest { filter };
        Ok(call("ListContainers", t, self.rt().list_containers(request(req, t))).await?.containers)
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<api::ExecSyncResponse> {
        let t = if timeout.is_zero() { None } else { Some(self.request_timeout.saturating_add(timeout)) };
        let req = api::ExecSyncRequest { container_id: container_id.into(), cmd, timeout: whole_seconds(timeout) };
        call("ExecSync", t, self.rt().exec_sync(request(req, t))).await
    }

    async fn exec(&self, req: api::ExecRequest) -> Result<String> {
        let t = Some(self.request_timeout);
        Ok(call("Exec", t, self.rt().exec(request(req, t))).await?.url)
    }

    async fn attach(&self, req: api::AttachRequest) -> Result<String> {
        let t = Some(self.request_timeout);
        Ok(call("Attach", t, self.rt().attach(request(req, t))).await?.url)
    }

    async fn port_forward(&self, pod_sandbox_id: &str, ports: Vec<i32>) -> Result<String> {
        let t = Some(self.request_timeout);
        let req = api::PortForwardRequest { pod_sandbox_id: pod_sandbox_id.into(), port: ports };
        Ok(call("PortForward", t, self.rt().port_forward(request(req, t))).await?.url)
    }

    async fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>> {
        let t = Some(self.request_timeout);
        let req = api::ListContainerStatsRequest { filter };
        Ok(call("ListContainerStats", t, self.rt().list_container_stats(request(req, t))).await?.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_accepts_unix_urls_and_absolute_paths() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").ok(),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(socket_path("/tmp/x.sock").ok(), Some(PathBuf::from("/tmp/x.sock")));
        for bad in ["tcp://127.0.0.1:1234", "npipe:////./pipe/x", "unix://relative.sock", "relative.sock", ""] {
            assert!(matches!(socket_path(bad), Err(RuntimeError::InvalidEndpoint { .. })), "{bad}");
        }
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds(Duration::from_millis(10_500)), 11);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("missing.sock");
        let endpoint = format!("unix://{}", sock.display());
        let opts = CriOptions { connect_timeout: Duration::from_secs(2), ..Default::default() };
        let err = CriRuntime::connect(&endpoint, opts).await.expect_err("no runtime listens there");
        assert!(matches!(err, RuntimeError::Connect { .. } | RuntimeError::ConnectTimeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_runtime_hits_the_deadline() {
        // A listener that accepts but never speaks HTTP/2: the handshake cannot finish.
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let opts = CriOptions { connect_timeout: Duration::from_millis(300), ..Default::default() };
        let started = std::time::Instant::now();
        let res = CriRuntime::connect(sock.to_str().expect("utf-8 path"), opts).await;
        // tonic finishes connecting without waiting for the server's HTTP/2 settings, so a
        // silent peer may only fail on the first call: that call must hit its deadline.
        match res {
            Ok(rt) => {
                let rt = CriRuntime { request_timeout: Duration::from_millis(300), ..rt };
                let err = rt.version().await.expect_err("nobody answers");
                assert!(matches!(err, RuntimeError::DeadlineExceeded { method: "Version", .. }), "{err:?}");
            }
            Err(err) => assert!(matches!(err, RuntimeError::ConnectTimeout { .. }), "{err:?}"),
        }
        keep.abort();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
