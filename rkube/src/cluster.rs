//! Carrying out the cluster commands: create, delete, stop, start, node add/remove, status.
//! Decisions come from `render`/`net`/`config`; this module runs them in order and waits.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ClusterSpec};
use crate::images;
use crate::net::{self, Ipv4Net};
use crate::pki;
use crate::render::{self, Component, ProcSpec};
use crate::state::{self, ClusterState, Components, NodeState, Paths, Phase};
use crate::sys::{self, Real};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("rkube must run as root: it creates network namespaces, a bridge, mounts and cgroups")]
    NotRoot,
    #[error("missing dependencies: {0}; install them with hack/install-deps.sh")]
    MissingDeps(String),
    #[error("{0} not found in {1} (build the workspace with `cargo build --bins`, or pass --bin-dir)")]
    MissingBinary(String, String),
    #[error("node images not found in {0} (build them with hack/images/build-images.sh, or pass --images-dir)")]
    MissingImages(String),
    #[error("cluster {0:?} already exists (delete it with `rkube cluster delete --name {0}`)")]
    NameTaken(String),
    #[error("node {0:?} already exists in cluster {1:?}")]
    NodeTaken(String, String),
    #[error("no node {0:?} in cluster {1:?}")]
    NoNode(String, String),
    #[error("cluster {0:?} is {1}; run `rkube cluster start --name {0}` first")]
    NotRunning(String, String),
    #[error("{what} exited ({status}); last lines of {}:\n{tail}", log.display())]
    Exited { what: String, status: String, log: PathBuf, tail: String },
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] component_base::kubeconfig::KubeconfigError),
    #[error("talking to the apiserver: {0}")]
    Kube(String),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// Where things are, shared by every command.
#[derive(Debug, Clone)]
pub struct Env {
    pub state_root: PathBuf,
    pub bin_dir: PathBuf,
    pub images_dir: PathBuf,
    /// The kubeconfig file contexts are merged into.
    pub kubeconfig: PathBuf,
}

impl Env {
    pub fn paths(&self, name: &str) -> Paths {
        Paths::new(&self.state_root, name)
    }
}

/// The kubeconfig kubectl reads by default: `$KUBECONFIG`'s first path, else ~/.kube/config.
pub fn default_kubeconfig() -> PathBuf {
    if let Some(first) =
        std::env::var_os("KUBECONFIG").and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".kube/config")
}

/// One line per step; on a terminal the step shows while it runs.
pub struct Progress {
    tty: bool,
    start: Instant,
    step: Option<(String, Instant)>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { tty: std::io::stderr().is_terminal(), start: Instant::now(), step: None }
    }
    pub fn step(&mut self, what: &str) {
        self.done();
        if self.tty {
            eprint!(" • {what} ...");
        }
        self.step = Some((what.to_owned(), Instant::now()));
    }
    pub fn done(&mut self) {
        if let Some((what, t)) = self.step.take() {
            let line = format!(" ✓ {what} ({:.1}s)", t.elapsed().as_secs_f64());
            if self.tty {
                eprintln!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    pub fn fail(&mut self) {
        if let Some((what, _)) = self.step.take() {
            if self.tty {
                eprintln!("\r\x1b[2K ✗ {what}");
            } else {
                eprintln!(" ✗ {what}");
            }
        }
    }
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

pub fn require_root() -> Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(ClusterError::NotRoot)
    }
}

/// Programs and the Debian packages that have them.
const DEPENDENCIES: &[(&str, &str)] = &[
    ("etcd", "etcd-server"),
    ("containerd", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("setsid", "util-linux"),
    ("tar", "tar"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/portmap", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
];

pub fn check_dependencies(env: &Env, components: &Components) -> Result<()> {
    let missing: BTreeSet<String> = DEPENDENCIES
        .iter()
        .filter(|(prog, _)| sys::which(prog).is_none())
        .map(|(prog, pkg)| format!("{prog} ({pkg})"))
        .collect();
    if !missing.is_empty() {
        return Err(ClusterError::MissingDeps(missing.into_iter().collect::<Vec<_>>().join(", ")));
    }
    let mut bins = vec!["rkube-apiserver"];
    if components.scheduler {
        bins.push("rkube-scheduler");
    }
    if components.controller_manager {
        bins.push("rkube-controller-manager");
    }
    if components.kubelet {
        bins.push("rkube-kubelet");
    }
    if components.proxy {
        bins.push("rkube-proxy");
    }
    if components.dns {
        bins.push("rkube-dns");
    }
    for b in bins {
        if !env.bin_dir.join(b).is_file() {
            return Err(ClusterError::MissingBinary(b.to_owned(), env.bin_dir.display().to_string()));
        }
    }
    Ok(())
}

/// The image archives every cluster starts with.
pub fn default_archives(env: &Env) -> Result<Vec<PathBuf>> {
    let archives: Vec<PathBuf> =
        ["pause.tar", "busybox.tar", "nginx.tar"].iter().map(|a| env.images_dir.join(a)).collect();
    if archives.iter().all(|a| a.is_file()) {
        Ok(archives)
    } else {
        Err(ClusterError::MissingImages(env.images_dir.display().to_string()))
    }
}

/// A port for a component that must be told it before binding; below the ephemeral range
/// (see `component_base::ports`) so that no outgoing connection takes it in between.
fn free_port() -> Result<u16> {
    component_base::ports::free_loopback_port()
        .map_err(|e| sys::SysError::Io { path: "127.0.0.1:0".into(), source: e }.into())
}

/// Holds an exclusive lock on the state root while a cluster's ranges are picked and claimed,
/// so two concurrent creates never take the same index.
struct RootLock(#[allow(dead_code)] std::fs::File);

fn lock_root(root: &Path) -> Result<RootLock> {
    std::fs::create_dir_all(root).map_err(sys::io_err(root))?;
    let path = root.join(".lock");
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(sys::io_err(&path))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| sys::SysError::Io { path: path.clone(), source: e.into() })?;
    Ok(RootLock(f))
}

/// Ranges already taken: routes on the machine and every other cluster's ranges (stopped
/// clusters have no routes but keep their addresses).
fn ranges_in_use(env: &Env, except: &str) -> Result<Vec<Ipv4Net>> {
    let routes = sys::run(&["ip", "-4", "route", "show", "table", "all"])?;
    let mut used = net::routed_destinations(&routes);
    for name in state::list(&env.state_root)? {
        if name == except {
            continue;
        }
        if let Ok(other) = state::load(&env.state_root, &name) {
            used.extend(other.plan.blackhole.iter().copied());
        }
    }
    Ok(used)
}

pub struct CreateOptions {
    pub spec: ClusterSpec,
    pub components: Components,
    pub wait: Duration,
    pub retain: bool,
}

/// `rkube cluster create`.
pub async fn create(env: &Env, opts: CreateOptions, cancel: &CancellationToken) -> Result<ClusterState> {
    require_root()?;
    check_dependencies(env, &opts.components)?;
    let archives = default_archives(env)?;
    let mut progress = Progress::new();
    let spec = &opts.spec;
    let paths = env.paths(&spec.name);

    // Claim the name and the ranges, and write the record before anything else exists.
    let mut st = {
        let _lock = lock_root(&env.state_root)?;
        if paths.dir.exists() {
            return Err(ClusterError::NameTaken(spec.name.clone()));
        }
        let req = net::Requested { pod_subnet: spec.pod_subnet, service_subnet: spec.service_subnet };
        let plan = net::pick(&req, &ranges_in_use(env, &spec.name)?)?;
        let mut nodes = Vec::new();
        for (slot, n) in spec.nodes.iter().enumerate() {
            let (ip, pod_cidr) = net::node_addresses(&plan, slot as u32)?;
            nodes.push(NodeState { spec: n.clone(), slot: slot as u32, ip, pod_cidr });
        }
        let st = ClusterState {
            name: spec.name.clone(),
            phase: Phase::Creating,
            created: chrono_now(),
            plan,
            etcd_client_port: free_port()?,
            etcd_peer_port: free_port()?,
            scheduler_port: free_port()?,
            controller_manager_port: free_port()?,
            components: opts.components.clone(),
            mirrors: spec.mirrors.clone(),
            bin_dir: env.bin_dir.clone(),
            nodes,
            shared_storage: spec.shared_storage,
            feature_gates: spec.feature_gates.to_flag(),
        };
        state::save(&env.state_root, &st)?;
        // the blackhole routes mark the ranges as taken for creates that do not see our record
        sys::apply(&Real, &render::bridge_up(&st))?;
        st
    };
    eprintln!(
        "Creating cluster {:?}: {} node(s), nodes on {}, pods {}, services {}",
        st.name,
        st.nodes.len(),
        st.plan.node_network,
        st.plan.pod_subnet,
        st.plan.service_subnet
    );
    match bring_up(env, &mut st, Some(&archives), opts.wait, &mut progress, cancel).await {
        Ok(()) => {
            progress.step("Creating the default StorageClass");
            apply_default_storage_class(&client(&paths).await?).await?;
            progress.step("Writing kubeconfig");
            merge_kubeconfig(env, &st)?;
            progress.done();
            st.phase = Phase::Running;
            state::save(&env.state_root, &st)?;
            println!(
                "Cluster {:?} is up in {:.1}s: {} node(s), apiserver {}.\nkubectl context {:?} is current in {}.\nTry: kubectl get nodes -o wide",
                st.name,
                progress.elapsed().as_secs_f64(),
                st.nodes.len(),
                st.apiserver_url(),
                st.context_name(),
                env.kubeconfig.display()
            );
            Ok(st)
        }
        Err(e) => {
            progress.fail();
            if opts.retain {
                eprintln!(
                    "create failed; keeping what was made (--retain). Remove it with `rkube cluster delete --name {}`",
                    st.name
                );
            } else {
                eprintln!("create failed; removing what was made");
                delete_state(env, &st);
            }
            Err(e)
        }
    }
}

fn chrono_now() -> String {
    // RFC 3339 without pulling a date crate into the tool: `date` is always there
    sys::run(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Processes rkube started in this run, watched while it waits so an early exit is reported
/// with its log instead of a timeout.
#[derive(Default)]
struct Started(Vec<(ProcSpec, Child)>);

impl Started {
    fn check(&mut self) -> Result<()> {
        for (spec, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                let what = match &spec.node {
                    Some(n) => format!("{} on {n}", spec.component.program()),
                    None => spec.component.program().to_owned(),
                };
                return Err(ClusterError::Exited {
                    what,
                    status: status.to_string(),
                    log: spec.log_file.clone(),
                    tail: tail(&spec.log_file, 15),
                });
            }
        }
        Ok(())
    }

    fn spawn(&mut self, spec: ProcSpec) -> Result<()> {
        if sys::running_pid(&spec.pid_file, spec.component).is_some() {
            return Ok(());
        }
        let child = sys::spawn(&spec)?;
        self.0.push((spec, child));
        Ok(())
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // reap the ones that already exited; the others are detached daemons now
        for (_, child) in &mut self.0 {
            let _ = child.try_wait();
        }
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn wait_for<F>(
    what: &str,
    timeout: Duration,
    started: &mut Started,
    cancel: &CancellationToken,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        started.check()?;
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout { what: what.to_owned(), secs: timeout.as_secs() });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(ClusterError::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

fn check_cancel(cancel: &CancellationToken) -> Result<()> {
    if cancel.is_cancelled() {
        Err(ClusterError::Interrupted)
    } else {
        Ok(())
    }
}

/// Files and namespaces a node needs before its processes start; safe to repeat.
fn prepare_node(st: &ClusterState, paths: &Paths, node: &NodeState) -> Result<()> {
    let n = &node.spec.name;
    let d = paths.node(n);
    for sub in ["root", "net.d", "cni-ipam", "opt", "pki", "kubelet", "pod-logs"] {
        let p = d.join(sub);
        std::fs::create_dir_all(&p).map_err(sys::io_err(&p))?;
    }
    let write = |p: PathBuf, text: String| -> Result<()> {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(sys::io_err(parent))?;
        }
        std::fs::write(&p, text).map_err(sys::io_err(&p))?;
        Ok(())
    };
    write(d.join("config.toml"), render::containerd_config(st, paths, node))?;
    write(d.join("net.d/10-rkube.conflist"), render::cni_conflist(paths, node))?;
    for mirror in &st.mirrors {
        write(d.join("certs.d").join(mirror).join("hosts.toml"), render::hosts_toml(&st.registry_addr()))?;
    }
    if !d.join("kubelet.kubeconfig").exists() {
        pki::node(st, paths, node)?;
    }
    // network namespace (gone after a reboot or a stop)
    if !Path::new("/run/netns").join(st.netns(n)).exists() {
        sys::apply(&Real, &render::node_net_up(st, node))?;
    }
    ensure_mount_ns(paths, n)?;
    Ok(())
}

/// The node's persistent mount + UTS namespaces (notes §2 b): a copy of the host's mounts that
/// containerd and the kubelet share, so the kubelet's volume mounts are what runc sees.
fn ensure_mount_ns(paths: &Paths, node: &str) -> Result<()> {
    let ns = paths.ns();
    std::fs::create_dir_all(&ns).map_err(sys::io_err(&ns))?;
    if !sys::is_mount_point(&ns) {
        // namespace files can only be bound below a private mount
        sys::run(&["mount", "--bind", &ns.display().to_string(), &ns.display().to_string()])?;
        sys::run(&["mount", "--make-private", &ns.display().to_string()])?;
    }
    let (mnt, uts) = (paths.mnt_ns(node), paths.uts_ns(node));
    if sys::is_mount_point(&mnt) && sys::is_mount_point(&uts) {
        return Ok(());
    }
    for f in [&mnt, &uts] {
        if sys::is_mount_point(f) {
            let _ = sys::run(&["umount", &f.display().to_string()]);
        }
        std::fs::write(f, b"").map_err(sys::io_err(f))?;
    }
    // Inside the new namespace the copy of the ns directory is detached at once: otherwise it
    // would pin the other nodes' mount namespaces (and their container mounts) after they go.
    sys::run(&[
        "unshare",
        &format!("--mount={}", mnt.display()),
        &format!("--uts={}", uts.display()),
        "--propagation",
        "slave",
        "sh",
        "-c",
        "hostname \"$1\" && umount -l \"$2\"",
        "sh",
        node,
        &ns.display().to_string(),
    ])?;
    Ok(())
}

pub async fn client(paths: &Paths) -> Result<kube::Client> {
    let kc =
        kube::config::Kubeconfig::read_from(paths.admin_kubeconfig()).map_err(|e| ClusterError::Kube(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Kube(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(config).map_err(|e| ClusterError::Kube(e.to_string()))
}

/// Seconds since the epoch, for comparing with Node heartbeats.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Names of the nodes whose Ready condition is True with a heartbeat at or after `since`
/// (after a stop the Node objects still say Ready until their kubelet reports again).
pub async fn ready_nodes(client: &kube::Client, since: i64) -> Result<BTreeSet<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.map_err(|e| ClusterError::Kube(e.to_string()))?;
    Ok(list
        .items
        .into_iter()
        .filter(|n| {
            n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.last_heartbeat_time.as_ref().is_some_and(|t| t.0.as_second() >= since)
                })
            })
        })
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// The kube-dns Service, EndpointSlice and Endpoints (server-side apply, so a start after a
/// stop or a reboot writes the same objects again without a conflict).
async fn apply_kube_dns(client: &kube::Client, st: &ClusterState) -> Result<()> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};
    let [svc, slice, eps] = render::kube_dns_objects(st);
    let pp = PatchParams::apply("rkube").force();
    let kube = |e: kube::Error| ClusterError::Kube(format!("writing the kube-dns Service: {e}"));
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    services.patch("kube-dns", &pp, &Patch::Apply(&svc)).await.map_err(kube)?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    slices.patch("kube-dns-rkube", &pp, &Patch::Apply(&slice)).await.map_err(kube)?;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "kube-system");
    endpoints.patch("kube-dns", &pp, &Patch::Apply(&eps)).await.map_err(kube)?;
    Ok(())
}

/// The default StorageClass `standard`, created once (as kind does): a user may change or
/// delete it later.
async fn apply_default_storage_class(client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let classes: Api<StorageClass> = Api::all(client.clone());
    match classes.create(&Default::default(), &render::default_storage_class()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(ClusterError::Kube(format!("creating the default StorageClass: {e}"))),
    }
}

/// Brings every process of the cluster up (create, start, after a reboot), recreating the
/// network and namespaces that are missing, and waits until the nodes are Ready.
async fn bring_up(
    env: &Env,
    st: &mut ClusterState,
    archives: Option<&[PathBuf]>,
    wait: Duration,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> Result<()> {
    let paths = env.paths(&st.name);
    let mut started = Started::default();
    // heartbeats have second resolution
    let since = unix_now() - 1;

    progress.step("Issuing certificates");
    pki::control_plane(st, &paths)?;
    check_cancel(cancel)?;

    progress.step(&format!("Setting up the network and {} node namespace(s)", st.nodes.len()));
    if !Path::new("/sys/class/net").join(&st.plan.bridge).exists() {
        sys::apply(&Real, &render::bridge_up(st))?;
    }
    for rule in render::port_mapping_rules(st) {
        let mut check =
            vec!["iptables".to_owned(), "-w".to_owned(), "-t".to_owned(), "nat".to_owned(), "-C".to_owned()];
        check.extend(rule.iter().cloned());
        if sys::Runner::run(&Real, &check).is_err() {
            let mut add = check.clone();
            add[4] = "-A".to_owned();
            sys::Runner::run(&Real, &add)?;
        }
    }
    for node in &st.nodes {
        check_cancel(cancel)?;
        stale_runtime_cleanup(st, &paths, node);
        prepare_node(st, &paths, node)?;
    }
    std::fs::create_dir_all(paths.registry().join("data")).map_err(sys::io_err(&paths.registry()))?;
    let reg_cfg = paths.registry().join("config.yml");
    std::fs::write(&reg_cfg, render::registry_config(st, &paths)).map_err(sys::io_err(&reg_cfg))?;

    progress.step("Starting etcd, the registry and the nodes' containerd");
    let cp = render::control_plane(st, &paths);
    for p in cp.iter().filter(|p| matches!(p.component, Component::Etcd | Component::Registry)) {
        started.spawn(p.clone())?;
    }
    for node in &st.nodes {
        for p in render::node_processes(st, &paths, node).into_iter().filter(|p| p.component == Component::Containerd) {
            started.spawn(p)?;
        }
    }
    let etcd = format!("127.0.0.1:{}", st.etcd_client_port);
    wait_for("etcd", Duration::from_secs(30), &mut started, cancel, || std::net::TcpStream::connect(&etcd).is_ok())
        .await?;

    progress.step("Starting the apiserver");
    for p in cp.iter().filter(|p| p.component == Component::Apiserver) {
        started.spawn(p.clone())?;
    }
    let registry = st.registry_addr();
    wait_for("the registry", Duration::from_secs(20), &mut started, cancel, || {
        images::http_get(&registry, "/v2/").is_ok_and(|(code, _)| code == 200)
    })
    .await?;
    // images load while the apiserver starts
    let loader = archives.map(|a| {
        let a = a.to_vec();
        let reg = registry.clone();
        std::thread::spawn(move || -> std::result::Result<usize, images::ImageError> {
            let handles: Vec<_> = a
                .into_iter()
                .map(|archive| {
                    let reg = reg.clone();
                    std::thread::spawn(move || images::load(&archive, &reg))
                })
                .collect();
            let mut n = 0;
            for h in handles {
                n += h
                    .join()
                    .map_err(|_| images::ImageError::Registry { addr: reg.clone(), detail: "loader panicked".into() })??
                    .len();
            }
            Ok(n)
        })
    });
    let api_addr = format!("{}:{}", st.plan.host_ip, st.plan.apiserver_port);
    wait_for("the apiserver to listen", Duration::from_secs(30), &mut started, cancel, || {
        std::net::TcpStream::connect(&api_addr).is_ok() && paths.admin_kubeconfig().exists()
    })
    .await?;
    let client = client(&paths).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.apiserver_version().await.is_ok() {
            break;
        }
        started.check()?;
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout { what: "the apiserver".into(), secs: 30 });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(ClusterError::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }

    progress.step("Starting the scheduler, controller-manager and node agents");
    for p in cp
        .iter()
        .filter(|p| matches!(p.component, Component::Scheduler | Component::ControllerManager | Component::Dns))
    {
        started.spawn(p.clone())?;
    }
    if st.components.dns {
        apply_kube_dns(&client, st).await?;
    }
    for node in &st.nodes {
        let sock = paths.containerd_sock(&node.spec.name);
        wait_for(&format!("containerd on {}", node.spec.name), Duration::from_secs(30), &mut started, cancel, || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        })
        .await?;
        for p in render::node_processes(st, &paths, node).into_iter().filter(|p| p.component != Component::Containerd) {
            started.spawn(p)?;
        }
    }

    if let Some(loader) = loader {
        progress.step("Loading node images into the cluster registry");
        let n = tokio::task::spawn_blocking(move || loader.join())
            .await
            .map_err(|e| ClusterError::Kube(e.to_string()))?
            .map_err(|_| images::ImageError::Registry { addr: registry.clone(), detail: "loader panicked".into() })??;
        tracing::debug!(references = n, "images loaded");
    }

    if st.components.kubelet {
        let want: BTreeSet<String> = st.nodes.iter().map(|n| n.spec.name.clone()).collect();
        // a kubelet started just now must report afresh (its Node still says Ready from before
        // a stop); one that was already running (start on a running cluster) need not
        let restarted: BTreeSet<String> = started
            .0
            .iter()
            .filter(|(p, _)| p.component == Component::Kubelet)
            .filter_map(|(p, _)| p.node.clone())
            .collect();
        progress.step(&format!("Waiting for {} node(s) to be Ready", want.len()));
        let deadline = Instant::now() + wait;
        loop {
            started.check()?;
            let fresh = ready_nodes(&client, since).await;
            let any = ready_nodes(&client, i64::MIN).await;
            if let (Ok(fresh), Ok(any)) = (fresh, any) {
                if want.iter().all(|n| if restarted.contains(n) { fresh.contains(n) } else { any.contains(n) }) {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout { what: "nodes to be Ready".into(), secs: wait.as_secs() });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(ClusterError::Interrupted),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
    // a last look: a component that died while we waited on others
    started.check()?;
    progress.done();
    Ok(())
}

/// After a stop or a reboot, a node's containerd runtime state (shim addresses, pod netns
/// mounts) describes processes that no longer exist: clear it, and the CNI results and
/// address reservations that go with it, before containerd starts again.
fn stale_runtime_cleanup(st: &ClusterState, paths: &Paths, node: &NodeState) {
    if sys::running_pid(&paths.pid_file("containerd", Some(&node.spec.name)), Component::Containerd).is_some() {
        return;
    }
    let d = paths.node(&node.spec.name);
    let (cni, sockets) = sys::node_leftovers(&d);
    for f in cni.iter().chain(sockets.iter()) {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(d.join("state"));
    let _ = std::fs::remove_dir_all(d.join("cni-ipam"));
    let _ = st;
}

/// Stops everything of one node and removes what lives outside its directory: processes
/// (shims and containers included), cgroups, mount and UTS namespaces, CNI results, shim
/// sockets, and, with `network`, its netns, veth and routes.
fn node_down(st: &ClusterState, paths: &Paths, node: &NodeState, network: bool) {
    let n = node.spec.name.as_str();
    for c in [Component::Proxy, Component::Kubelet] {
        sys::stop_component(&paths.pid_file(c.name(), Some(n)), c, Duration::from_secs(3));
    }
    let d = paths.node(n);
    let (cni, sockets) = sys::node_leftovers(&d);
    sys::stop_component(&paths.pid_file("containerd", Some(n)), Component::Containerd, Duration::from_secs(3));
    let sock = paths.containerd_sock(n).display().to_string();
    for pid in sys::pids_with_args(&["containerd-shim", &sock]) {
        sys::stop_pid(pid, Duration::from_millis(0));
    }
    sys::remove_cgroup(&st.cgroup(n));
    for f in [paths.mnt_ns(n), paths.uts_ns(n)] {
        sys::unmount_all(&f);
        let _ = std::fs::remove_file(&f);
    }
    // mounts of a node made in the host namespace (none in this mode, but a crash of an older
    // layout could leave some)
    sys::unmount_all(&d);
    for f in cni.iter().chain(sockets.iter()) {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(d.join("state"));
    let _ = std::fs::remove_dir_all(d.join("cni-ipam"));
    if network {
        let _ = sys::apply(&Real, &render::node_net_down(st, node));
    }
}

/// SIGKILLs every process whose command line mentions `dir/` until none is left.
fn sweep_processes(dir: &Path) {
    let needle = format!("{}/", dir.display());
    for _ in 0..50 {
        let pids = sys::pids_with_args(&[&needle]);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            sys::stop_pid(pid, Duration::ZERO);
        }
    }
}

/// All nodes at once: each waits for its own kubelet and containerd to exit.
fn nodes_down(st: &ClusterState, paths: &Paths) {
    std::thread::scope(|scope| {
        for node in &st.nodes {
            scope.spawn(move || node_down(st, paths, node, true));
        }
    });
}

fn control_plane_down(paths: &Paths) {
    for c in [
        Component::Dns,
        Component::ControllerManager,
        Component::Scheduler,
        Component::Apiserver,
        Component::Registry,
        Component::Etcd,
    ] {
        sys::stop_component(&paths.pid_file(c.name(), None), c, Duration::from_secs(5));
    }
}

fn host_rules_down(st: &ClusterState) {
    let comment = render::iptables_comment(st);
    let Ok(rules) = sys::run(&["iptables", "-w", "-t", "nat", "-S"]) else {
        return;
    };
    // iptables -S quotes comments with a colon: --comment "rkube:<name>"
    let ours =
        |l: &&str| l.contains(&format!("--comment {comment} ")) || l.contains(&format!("--comment \"{comment}\""));
    for line in rules.lines().filter(|l| l.starts_with("-A ")).filter(ours) {
        let mut argv: Vec<String> = ["iptables", "-w", "-t", "nat"].iter().map(|s| s.to_string()).collect();
        argv.push("-D".to_owned());
        argv.extend(line.split_whitespace().skip(1).map(|w| w.trim_matches('"').to_owned()));
        let _ = sys::Runner::run(&Real, &argv);
    }
}

fn remove_shared_dirs() {
    for d in ["/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni"] {
        sys::rmdir_if_empty(Path::new(d));
    }
}

/// Everything of a cluster, best effort and idempotent (an interrupted create is fine).
fn delete_state(env: &Env, st: &ClusterState) {
    let paths = env.paths(&st.name);
    nodes_down(st, &paths);
    control_plane_down(&paths);
    // A process rkube started but whose pid file it never wrote (rkube killed right after the
    // spawn) still names the cluster directory in its arguments: find those too. Then the
    // node cgroups once more, in case such a containerd made its subtree late.
    sweep_processes(&paths.dir);
    for node in &st.nodes {
        sys::remove_cgroup(&st.cgroup(&node.spec.name));
    }
    host_rules_down(st);
    let _ = sys::apply(&Real, &render::bridge_down(st));
    sys::unmount_all(&paths.dir);
    let _ = remove_context(env, st);
    let _ = std::fs::remove_dir_all(&paths.dir);
    remove_shared_dirs();
}

/// `rkube cluster delete`.
pub fn delete(env: &Env, name: &str) -> Result<()> {
    require_root()?;
    let t = Instant::now();
    let st = state::load(&env.state_root, name)?;
    delete_state(env, &st);
    println!("Deleted cluster {name:?} in {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}

/// `rkube cluster stop`: every process ends and the network and namespaces go (as after a
/// reboot); the record, certificates, etcd data, images and node state stay.
pub fn stop(env: &Env, name: &str) -> Result<()> {
    require_root()?;
    let t = Instant::now();
    let mut st = state::load(&env.state_root, name)?;
    let paths = env.paths(name);
    nodes_down(&st, &paths);
    control_plane_down(&paths);
    host_rules_down(&st);
    let _ = sys::apply(&Real, &render::bridge_down(&st));
    sys::unmount_all(&paths.ns());
    remove_shared_dirs();
    st.phase = Phase::Stopped;
    state::save(&env.state_root, &st)?;
    println!(
        "Stopped cluster {name:?} in {:.1}s (rkube cluster start --name {name} brings it back)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `rkube cluster start`: the same cluster again, also after a reboot.
pub async fn start(env: &Env, name: &str, wait: Duration, cancel: &CancellationToken) -> Result<()> {
    require_root()?;
    let mut st = state::load(&env.state_root, name)?;
    check_dependencies(env, &st.components)?;
    let mut progress = Progress::new();
    // the binaries may have moved since create (a new build dir)
    st.bin_dir = env.bin_dir.clone();
    if st.controller_manager_port == 0 {
        st.controller_manager_port = free_port()?;
    }
    if let Err(e) = bring_up(env, &mut st, None, wait, &mut progress, cancel).await {
        progress.fail();
        return Err(e);
    }
    merge_kubeconfig(env, &st)?;
    st.phase = Phase::Running;
    state::save(&env.state_root, &st)?;
    println!("Started cluster {name:?} in {:.1}s", progress.elapsed().as_secs_f64());
    Ok(())
}

pub fn merge_kubeconfig(env: &Env, st: &ClusterState) -> Result<()> {
    use component_base::kubeconfig::Kubeconfig;
    let ours = Kubeconfig::load(&env.paths(&st.name).admin_kubeconfig())?;
    let mut config = Kubeconfig::load_or_default(&env.kubeconfig)?;
    config.merge(ours, true);
    config.write(&env.kubeconfig)?;
    Ok(())
}

fn remove_context(env: &Env, st: &ClusterState) -> Result<()> {
    use component_base::kubeconfig::Kubeconfig;
    if !env.kubeconfig.exists() {
        return Ok(());
    }
    let mut config = Kubeconfig::load(&env.kubeconfig)?;
    if config.remove_context(&st.context_name()) {
        config.write(&env.kubeconfig)?;
    }
    Ok(())
}

/// `rkube cluster list`.
pub fn list(env: &Env) -> Result<Vec<ClusterState>> {
    let mut out = Vec::new();
    for name in state::list(&env.state_root)? {
        out.push(state::load(&env.state_root, &name)?);
    }
    Ok(out)
}

/// One row of `rkube status`.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub component: Component,
    pub node: Option<String>,
    pub pid: Option<i32>,
    pub log: PathBuf,
}

pub fn processes(env: &Env, st: &ClusterState) -> Vec<ProcessStatus> {
    let paths = env.paths(&st.name);
    let mut specs = render::control_plane(st, &paths);
    for node in &st.nodes {
        specs.extend(render::node_processes(st, &paths, node));
    }
    specs
        .into_iter()
        .map(|p| ProcessStatus {
            component: p.component,
            pid: sys::running_pid(&p.pid_file, p.component),
            node: p.node,
            log: p.log_file,
        })
        .collect()
}

pub struct NodeAddOptions {
    pub name: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub wait: Duration,
}

/// `rkube node add`.
pub async fn node_add(env: &Env, cluster: &str, opts: NodeAddOptions, cancel: &CancellationToken) -> Result<String> {
    require_root()?;
    let mut st = state::load(&env.state_root, cluster)?;
    if st.phase != Phase::Running {
        return Err(ClusterError::NotRunning(cluster.to_owned(), format!("{:?}", st.phase).to_lowercase()));
    }
    let name = match opts.name {
        Some(n) => n,
        None => (1..)
            .map(|i| config::default_node_name(cluster, config::Role::Worker, i))
            .find(|n| st.node(n).is_none())
            .unwrap_or_default(),
    };
    if st.node(&name).is_some() {
        return Err(ClusterError::NodeTaken(name, cluster.to_owned()));
    }
    let spec = config::node_spec(name.clone(), config::Role::Worker, opts.labels, Vec::new(), Vec::new())?;
    let used: BTreeSet<u32> = st.nodes.iter().map(|n| n.slot).collect();
    let slot = (0..).find(|s| !used.contains(s)).unwrap_or_default();
    let (ip, pod_cidr) = net::node_addresses(&st.plan, slot)?;
    let node = NodeState { spec, slot, ip, pod_cidr };
    st.nodes.push(node.clone());
    // recorded first, so `node remove` / `cluster delete` cover an interrupted add
    state::save(&env.state_root, &st)?;
    let paths = env.paths(cluster);
    let mut progress = Progress::new();
    progress.step(&format!("Adding node {name} ({ip}, pods {pod_cidr})"));
    let since = unix_now() - 1;
    let result = async {
        prepare_node(&st, &paths, &node)?;
        sys::apply(&Real, &render::routes_to(&st, &node))?;
        let mut started = Started::default();
        let specs = render::node_processes(&st, &paths, &node);
        for p in specs.iter().filter(|p| p.component == Component::Containerd) {
            started.spawn(p.clone())?;
        }
        let sock = paths.containerd_sock(&name);
        wait_for(&format!("containerd on {name}"), Duration::from_secs(30), &mut started, cancel, || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        })
        .await?;
        for p in specs.into_iter().filter(|p| p.component != Component::Containerd) {
            started.spawn(p)?;
        }
        if st.components.kubelet {
            progress.step(&format!("Waiting for {name} to be Ready"));
            let client = client(&paths).await?;
            let deadline = Instant::now() + opts.wait;
            loop {
                started.check()?;
                if ready_nodes(&client, since).await.is_ok_and(|r| r.contains(&name)) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::Timeout {
                        what: format!("{name} to be Ready"),
                        secs: opts.wait.as_secs(),
                    });
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ClusterError::Interrupted),
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            progress.done();
            println!("Added node {name:?} to cluster {cluster:?} in {:.1}s", progress.elapsed().as_secs_f64());
            Ok(name)
        }
        Err(e) => {
            progress.fail();
            remove_node_state(env, &mut st, &name);
            Err(e)
        }
    }
}

fn remove_node_state(env: &Env, st: &mut ClusterState, name: &str) {
    let paths = env.paths(&st.name);
    if let Some(node) = st.node(name).cloned() {
        node_down(st, &paths, &node, true);
        let _ = std::fs::remove_dir_all(paths.node(name));
        for c in Component::ALL {
            let _ = std::fs::remove_file(paths.log_file(c.name(), Some(name)));
        }
        st.nodes.retain(|n| n.spec.name != name);
        let _ = state::save(&env.state_root, st);
    }
}

/// `rkube node remove`: the node's processes and namespaces go, then its Node object.
pub async fn node_remove(env: &Env, cluster: &str, name: &str) -> Result<()> {
    require_root()?;
    let mut st = state::load(&env.state_root, cluster)?;
    if st.node(name).is_none() {
        return Err(ClusterError::NoNode(name.to_owned(), cluster.to_owned()));
    }
    remove_node_state(env, &mut st, name);
    if st.phase == Phase::Running {
        let client = client(&env.paths(cluster)).await?;
        let nodes: Api<Node> = Api::all(client);
        match nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(ClusterError::Kube(e.to_string())),
        }
    }
    println!("Removed node {name:?} from cluster {cluster:?}");
    Ok(())
}

/// `rkube image load`: pushes archives into the cluster registry.
pub fn image_load(env: &Env, cluster: &str, archives: &[PathBuf]) -> Result<()> {
    let st = state::load(&env.state_root, cluster)?;
    let paths = env.paths(cluster);
    if sys::running_pid(&paths.pid_file("registry", None), Component::Registry).is_none() {
        return Err(ClusterError::NotRunning(cluster.to_owned(), "stopped".into()));
    }
    for a in archives {
        images::inspect(a)?;
    }
    for a in archives {
        for r in images::load(a, &st.registry_addr())? {
            println!("loaded {r} from {}", a.display());
        }
    }
    Ok(())
}

pub fn image_list(env: &Env, cluster: &str) -> Result<Vec<String>> {
    let st = state::load(&env.state_root, cluster)?;
    Ok(images::list(&st.registry_addr())?)
}

/// The node list as Ready or not, when the apiserver answers.
pub async fn node_readiness(env: &Env, st: &ClusterState) -> Option<BTreeSet<String>> {
    let client = client(&env.paths(&st.name)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(3), ready_nodes(&client, i64::MIN)).await.ok()?.ok()
}
