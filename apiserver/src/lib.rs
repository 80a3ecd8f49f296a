//! rkube-apiserver: the Kubernetes API on etcd. `run` is what `main` and the tests call:
//! it ensures the TLS material, connects to etcd, starts the watch caches, creates the
//! bootstrap objects and serves HTTPS until the shutdown token fires.

pub mod admission;
pub mod registry;
pub mod server;
pub mod serviceaccount;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use registry::core::services::Cidr;
use registry::options::{FieldValidation, WriteOptions};
use registry::store::Store;
use registry::{Registry, RegistryConfig};

#[derive(Debug, Clone, Parser)]
#[command(name = "rkube-apiserver", about = "The Kubernetes API on etcd")]
pub struct Options {
    /// etcd endpoints, comma-separated (http://127.0.0.1:2379).
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// Root of every key in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// HTTPS port.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Address advertised to the cluster (the `kubernetes` Service's endpoint).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Where the CA, serving certificate and admin kubeconfig live (made on first start).
    #[arg(long, default_value = "/var/lib/rkube/pki")]
    pub cert_dir: PathBuf,
    /// CA bundle for client certificates (default: the cert dir's CA).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Serving certificate (default: generated in the cert dir).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Client certificate the apiserver presents to kubelets (default: issued from the
    /// cert dir's CA as `apiserver-kubelet-client.crt`).
    #[arg(long)]
    pub kubelet_client_certificate: Option<PathBuf>,
    #[arg(long)]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA that signs kubelets' serving certificates (default: the cert dir's CA).
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// Static bearer tokens: `token,user,uid,"group1,group2"` per line.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Issuer (`iss`) of the service account tokens this server signs and accepts.
    #[arg(long, default_value = serviceaccount::DEFAULT_ISSUER)]
    pub service_account_issuer: String,
    /// ECDSA P-256 private key (PKCS#8 PEM) that signs service account tokens (default:
    /// `sa.key` in the cert dir, made at first start).
    #[arg(long)]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// Audiences a service account token must name (default: the issuer), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    #[arg(long, default_value = "198.19.128.0/17")]
    pub service_cluster_ip_range: String,
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Concurrent non-long-running requests before 429.
    #[arg(long, default_value_t = 600)]
    pub max_requests_inflight: usize,
    /// Events each resource's watch cache keeps for watchers resuming from a revision; older
    /// revisions are read from etcd (410 Expired once compacted).
    #[arg(long, default_value_t = 1000)]
    pub default_watch_cache_size: usize,
    /// Admission plugins to turn on besides the default ones, comma-separated. rkube has one,
    /// ServiceAccount, on by default (namespace lifecycle is always on).
    #[arg(long, value_delimiter = ',')]
    pub enable_admission_plugins: Vec<String>,
    /// Admission plugins to turn off, comma-separated (tests without a controller-manager turn
    /// off ServiceAccount, since nothing creates the `default` service accounts there).
    #[arg(long, value_delimiter = ',')]
    pub disable_admission_plugins: Vec<String>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    #[arg(long, default_value = "", long_help = component_base::featuregate::FeatureGates::help())]
    pub feature_gates: component_base::featuregate::FeatureGates,
}

/// A started server, for tests and `main`.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub cert_dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
    cancel: CancellationToken,
}

impl Running {
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

fn parse_port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (a, b) = s.split_once('-').context("--service-node-port-range must look like 30000-32767")?;
    let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a <= b, "--service-node-port-range: {a} > {b}");
    Ok((a, b))
}

/// Starts serving; returns once the listener is bound.
pub async fn start(opts: Options, cancel: CancellationToken) -> anyhow::Result<Running> {
    let cidr =
        Cidr::parse(&opts.service_cluster_ip_range).map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    let node_ports = parse_port_range(&opts.service_node_port_range)?;
    let admission = admission::Plugins::from_flags(&opts.enable_admission_plugins, &opts.disable_admission_plugins)
        .map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind((opts.bind_address, opts.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", opts.bind_address, opts.secure_port))?;
    let addr = listener.local_addr()?;
    let advertise = opts.advertise_address.unwrap_or(opts.bind_address);

    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1]), advertise, IpAddr::V4(cidr.nth(1))];
    if !opts.bind_address.is_unspecified() {
        ips.push(opts.bind_address);
    }
    let dns: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let certs = component_base::tls::ensure_cert_dir(&opts.cert_dir, &dns, &ips)?;
    let serving = match (&opts.tls_cert_file, &opts.tls_private_key_file) {
        (Some(c), Some(k)) => component_base::tls::CertKey::load(c, k)?,
        _ => certs.serving.clone(),
    };
    let client_ca = match &opts.client_ca_file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => certs.ca_pem().to_string(),
    };
    let tls = component_base::tls::server_config(&serving, Some(&client_ca))?;
    let kubelet = kubelet_client(&opts, &certs)?;
    let kubeconfig = component_base::kubeconfig::Kubeconfig::single(
        "rkube",
        &format!("https://{}", display_addr(addr)),
        certs.ca_pem(),
        Some(&certs.admin),
        None,
    );
    kubeconfig.write(&opts.cert_dir.join("admin.kubeconfig"))?;

    let etcd_latency = storage::etcd_latency();
    let etcd = storage::Etcd::connect(&opts.etcd_servers, &opts.etcd_prefix)
        .await
        .context("connecting to etcd")?
        .with_metrics(etcd_latency.clone());
    let registry = Registry::new(&RegistryConfig {
        etcd: Some(etcd.clone()),
        service_cidr: cidr,
        node_ports,
        feature_gates: opts.feature_gates.clone(),
    });
    let store = Store::new(etcd, registry, opts.default_watch_cache_size, admission, &cancel);
    bootstrap(&store, cidr, advertise, addr.port()).await?;

    let app = Arc::new(server::App {
        store: store.clone(),
        auth: server::auth::Authenticator::from_token_file(opts.token_auth_file.as_deref())?
            .with_service_accounts(Arc::new(service_account_tokens(&opts)?)),
        metrics: server::metrics::Metrics::new(&etcd_latency),
        inflight: Arc::new(tokio::sync::Semaphore::new(opts.max_requests_inflight.max(1))),
        kubelet: Some(kubelet),
    });
    let router = server::router(app);
    let c = cancel.clone();
    let task = tokio::spawn(async move { server::serve_tls(listener, tls, router, c).await });
    tracing::info!(%addr, "rkube-apiserver serving");
    Ok(Running { addr, store, cert_dir: opts.cert_dir.clone(), task, cancel })
}

fn service_account_tokens(opts: &Options) -> anyhow::Result<serviceaccount::Tokens> {
    let key = opts.service_account_signing_key_file.clone().unwrap_or_else(|| opts.cert_dir.join("sa.key"));
    Ok(serviceaccount::Tokens::load_or_generate(&key, &opts.service_account_issuer, opts.api_audiences.clone())?)
}

/// The TLS client the apiserver uses towards kubelets.
fn kubelet_client(
    opts: &Options,
    certs: &component_base::tls::CertDir,
) -> anyhow::Result<server::kubelet_proxy::KubeletClient> {
    use component_base::tls::CertKey;
    let cert = match (&opts.kubelet_client_certificate, &opts.kubelet_client_key) {
        (Some(c), Some(k)) => CertKey::load(c, k)?,
        _ => {
            let (c, k) = (
                opts.cert_dir.join("apiserver-kubelet-client.crt"),
                opts.cert_dir.join("apiserver-kubelet-client.key"),
            );
            match CertKey::load(&c, &k) {
                Ok(ck) => ck,
                Err(_) => {
                    // upstream: the apiserver's kubelet client is in system:masters.
                    let ck = certs.ca.issue_client("kube-apiserver-kubelet-client", &["system:masters".to_string()])?;
                    ck.write(&c, &k)?;
                    ck
                }
            }
        }
    };
    let ca = match &opts.kubelet_certificate_authority {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => certs.ca_pem().to_string(),
    };
    Ok(server::kubelet_proxy::KubeletClient { tls: component_base::tls::client_config(&ca, Some(&cert))? })
}

fn display_addr(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The objects every cluster starts with: the four system namespaces and the `kubernetes`
/// Service with its Endpoints. Each is created only if missing.
async fn bootstrap(store: &Store, cidr: Cidr, advertise: IpAddr, port: u16) -> anyhow::Result<()> {
    let opts = WriteOptions {
        dry_run: false,
        field_manager: Some("rkube-apiserver".into()),
        field_validation: FieldValidation::Ignore,
        force: false,
    };
    let ns = store.registry.get("", "namespaces").context("namespaces are served")?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create_if_missing(store, &ns, None, json!({"metadata": {"name": name}}), &opts).await?;
    }
    let svc = store.registry.get("", "services").context("services are served")?;
    let kubernetes = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": cidr.nth(1).to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None"},
    });
    create_if_missing(store, &svc, Some("default"), kubernetes, &opts).await?;
    let ep = store.registry.get("", "endpoints").context("endpoints are served")?;
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    create_if_missing(store, &ep, Some("default"), endpoints, &opts).await?;
    Ok(())
}

async fn create_if_missing(
    store: &Store,
    kind: &registry::Kind,
    ns: Option<&str>,
    obj: serde_json::Value,
    opts: &WriteOptions,
) -> anyhow::Result<()> {
    match store.create(kind, ns, obj, opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(anyhow::anyhow!("bootstrap {}: {}", kind.info.plural, e.message)),
    }
}
