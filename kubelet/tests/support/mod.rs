//! The kubelet's integration harness: a real node on this machine, following
//! docs/node-runtime-notes.md (shared/docs), and torn down completely by `Drop`.
//!
//! - [`TestNode`]: a network namespace `rkt-<unique>` joined to the host by a veth pair on a
//!   /30 of 198.18.128.0/17 that no address or route of the host overlaps, a persistent
//!   mount + UTS namespace (the notes' "mntns" mode: the kubelet's mounts are containerd's),
//!   a state directory, a cgroup subtree, and containerd running inside with the CNI bridge
//!   on a pod subnet that exists only inside the namespace. Images come from
//!   `_output/images/*.tar` (hack/images/build-images.sh), imported with `ctr`; the registry
//!   mirrors point at the namespace's own loopback, so nothing is ever pulled from outside.
//! - [`TestCluster`]: a real etcd, the in-process apiserver bound to the host side of the veth
//!   (so the node reaches it and it reaches the kubelet), kubelet certificates from the
//!   apiserver's CA, and the real `rkube-kubelet` binary started with `nsenter` into the node.
//!
//! Teardown (notes §6) runs even when a test fails, and [`TestNode::leftovers`] lets a test
//! check that no process, namespace, link, mount, cgroup, CNI result or directory is left.

#![allow(dead_code)] // each test binary uses part of the harness

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkube_kubelet::runtime::cri::CriOptions;
use rkube_kubelet::runtime::{ContainerRuntime, CriRuntime};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Pod subnet inside a test node (only reachable from inside it).
pub const POD_SUBNET: &str = "198.19.254.0/24";
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";
const IMAGES: [&str; 3] = ["pause", "busybox", "nginx"];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kubelet/ has a parent").to_path_buf()
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A name no other test or session uses: pid + clock.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:05x}", std::process::id() & 0xfff, nanos & 0xf_ffff)
}

pub fn run(cmd: &str, args: &[&str]) -> TestResult<String> {
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the images when the archives are missing or stale (the script decides; it is a no-op
/// when they are fresh).
pub fn ensure_images() -> TestResult<Vec<PathBuf>> {
    let root = workspace_root();
    let status = Command::new(root.join("hack/images/build-images.sh")).stdin(Stdio::null()).status()?;
    if !status.success() {
        return Err(format!("hack/images/build-images.sh: {status}").into());
    }
    let archives: Vec<PathBuf> = IMAGES.iter().map(|n| root.join(format!("_output/images/{n}.tar"))).collect();
    for a in &archives {
        if !a.is_file() {
            return Err(format!("{} missing after build-images.sh", a.display()).into());
        }
    }
    Ok(archives)
}

// ---- addresses ----

fn parse_prefix(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/').unwrap_or((s, "32"));
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, mask))
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    let mask = a.1 & b.1; // the shorter prefix
    a.0 & mask == b.0 & mask
}

/// Every IPv4 prefix the host has as an address or a route (the default route left out).
fn host_prefixes() -> TestResult<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for line in run("ip", &["-o", "-4", "addr"])?.lines() {
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w == "inet" {
                if let Some(p) = it.next().and_then(parse_prefix) {
                    out.push(p);
                }
            }
        }
    }
    for line in run("ip", &["-4", "route", "show", "table", "all"])?.lines() {
        let first = line.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()));
        if let Some(p) = first.and_then(parse_prefix) {
            if p.1 != 0 {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// A /30 inside 198.18.128.0/17 that nothing on the host overlaps: (host side, node side).
fn pick_link_net(seed: u64) -> TestResult<(Ipv4Addr, Ipv4Addr)> {
    let taken = host_prefixes()?;
    let base = u32::from(Ipv4Addr::new(198, 18, 128, 0));
    let mut x = seed | 1;
    for _ in 0..64 {
        // xorshift: a different /30 per try, spread over the 8192 of the /17
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let net = base + ((x % 8192) as u32) * 4;
        if !taken.iter().any(|p| overlaps(*p, (net, u32::MAX << 2))) {
            return Ok((Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2)));
        }
    }
    Err("no free /30 in 198.18.128.0/17".into())
}

// ---- the node ----

/// One node: a netns with a veth to the host, a mount + UTS namespace, containerd inside.
pub struct TestNode {
    pub name: String,
    pub dir: PathBuf,
    pub cgroup_parent: String,
    pub host_veth: String,
    pub host_ip: Ipv4Addr,
    pub node_ip: Ipv4Addr,
    containerd: Option<Child>,
    ns_dir_mounted: bool,
    torn_down: bool,
}

impl TestNode {
    pub fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn mnt_ns(&self) -> PathBuf {
        self.dir.join("ns/mnt")
    }

    fn uts_ns(&self) -> PathBuf {
        self.dir.join("ns/uts")
    }

    /// A command that runs `program` inside the node (its network, mount and UTS namespaces).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(format!("--mount={}", self.mnt_ns().display()))
            .arg(format!("--uts={}", self.uts_ns().display()))
            .arg(program);
        c
    }

    /// Creates the node and starts containerd in it (not waiting for it; see [`TestNode::wait_ready`]).
    pub fn start() -> TestResult<TestNode> {
        let suffix = unique_suffix();
        let name = format!("rkt-{suffix}");
        let seed = u64::from_str_radix(&suffix, 16).unwrap_or(7) ^ u64::from(std::process::id()).rotate_left(20);
        let (host_ip, node_ip) = pick_link_net(seed)?;
        let dir = std::env::temp_dir().join(&name);
        // The guard exists before anything is created, so a failure below still cleans up.
        let mut node = TestNode {
            cgroup_parent: format!("/{name}"),
            host_veth: format!("rkh{}", &suffix[suffix.len().saturating_sub(8)..]),
            name,
            dir,
            host_ip,
            node_ip,
            containerd: None,
            ns_dir_mounted: false,
            torn_down: false,
        };
        let d = node.dir.clone();
        for sub in
            ["root", "state", "net.d", "cni-ipam", "logs", "opt", "ns", "certs.d/docker.io", "certs.d/registry.k8s.io"]
        {
            fs::create_dir_all(d.join(sub))?;
        }

        // network: the namespace, a veth to the host on the /30
        let (n, hv) = (node.name.clone(), node.host_veth.clone());
        run("ip", &["netns", "add", &n])?;
        run("ip", &["link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns", &n])?;
        run("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &hv])?;
        run("ip", &["link", "set", &hv, "up"])?;
        run("ip", &["-n", &n, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &n, "addr", "add", &format!("{node_ip}/30"), "dev", "eth0"])?;
        run("ip", &["-n", &n, "link", "set", "eth0", "up"])?;

        // mount + UTS namespaces kept alive by bind mounts of their files (on a private mount)
        let ns = d.join("ns");
        let ns_s = ns.to_str().ok_or("non-utf-8 temp dir")?;
        run("mount", &["--bind", ns_s, ns_s])?;
        node.ns_dir_mounted = true;
        run("mount", &["--make-private", ns_s])?;
        fs::write(node.mnt_ns(), "")?;
        fs::write(node.uts_ns(), "")?;
        run(
            "unshare",
            &[
                &format!("--mount={}", node.mnt_ns().display()),
                &format!("--uts={}", node.uts_ns().display()),
                "--propagation",
                "slave",
                "hostname",
                &n,
            ],
        )?;

        // CNI: bridge + host-local on a subnet only the namespace has; no masquerading
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "rkube-test",
            "plugins": [
                { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                  "ipam": { "type": "host-local", "dataDir": d.join("cni-ipam"), "ranges": [[{ "subnet": POD_SUBNET }]] } },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        });
        fs::write(d.join("net.d/10-rkube-test.conflist"), serde_json::to_vec_pretty(&conflist)?)?;
        // Registry mirrors on the namespace's own loopback, where nothing listens (pitfall R2:
        // a [host] table is required or containerd falls back to the real registry).
        for host in ["docker.io", "registry.k8s.io"] {
            fs::write(
                d.join(format!("certs.d/{host}/hosts.toml")),
                "server = \"http://127.0.0.1:1\"\n\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            )?;
        }
        fs::write(d.join("config.toml"), containerd_config(&d, &node.cgroup_parent))?;

        node.spawn_containerd()?;
        Ok(node)
    }

    /// Starts containerd inside the node (again, after [`TestNode::stop_containerd`]).
    pub fn spawn_containerd(&mut self) -> TestResult {
        let d = self.dir.clone();
        let log = fs::OpenOptions::new().create(true).append(true).open(d.join("containerd.log"))?;
        // nsenter execs: the child's pid is containerd's.
        let child = self
            .command("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        self.containerd = Some(child);
        Ok(())
    }

    /// Stops containerd (TERM, then KILL after 5 s); its containers and shims keep running.
    pub fn stop_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Waits for containerd's CRI to answer; returns a client.
    pub async fn wait_ready(&self) -> TestResult<CriRuntime> {
        wait_for("containerd's CRI to answer", Duration::from_secs(20), || async {
            let opts = CriOptions { connect_timeout: Duration::from_secs(1), request_timeout: Duration::from_secs(10) };
            let cri = CriRuntime::connect(&self.endpoint(), opts).await.ok()?;
            cri.version().await.ok().map(|_| cri)
        })
        .await
    }

    pub fn import_images(&self, archives: &[PathBuf]) -> TestResult {
        let sock = self.sock();
        let sock = sock.to_str().ok_or("socket path is not utf-8")?;
        for a in archives {
            let a = a.to_str().ok_or("archive path is not utf-8")?;
            run("ctr", &["-a", sock, "-n", "k8s.io", "images", "import", a])?;
        }
        Ok(())
    }

    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// Sandbox ids containerd has on disk (for the leftover check of CNI results).
    pub fn sandbox_ids(&self) -> Vec<String> {
        fs::read_dir(self.dir.join("root/io.containerd.grpc.v1.cri/sandboxes"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Everything this node left: processes, netns, link, mounts, cgroups, CNI results, its directory.
    pub fn leftovers(&self, sandbox_ids: &[String]) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.dir.to_string_lossy().into_owned();
        for pid in pids_whose_cmdline_contains(&dir) {
            left.push(format!("process {pid} ({})", cmdline(pid).replace('\0', " ")));
        }
        if run("ip", &["netns", "list"]).map(|o| o.split_whitespace().any(|n| n == self.name)).unwrap_or(true) {
            left.push(format!("netns {}", self.name));
        }
        if run("ip", &["link", "show", &self.host_veth]).is_ok() {
            left.push(format!("link {}", self.host_veth));
        }
        for m in mounts_under(&self.dir) {
            left.push(format!("mount {m}"));
        }
        for h in cgroup_hierarchies() {
            let p = h.join(self.cgroup_parent.trim_start_matches('/'));
            if p.exists() {
                left.push(format!("cgroup {}", p.display()));
            }
        }
        for id in sandbox_ids {
            for f in cni_results_for(id) {
                left.push(format!("cni result {}", f.display()));
            }
        }
        if self.dir.exists() {
            left.push(format!("dir {}", self.dir.display()));
        }
        left
    }

    fn print_log_tail(&self, file: &str) {
        if let Ok(log) = fs::read_to_string(self.dir.join(file)) {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- {file} (last lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// The notes' section 6. Idempotent; every step runs even when an earlier one failed.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if std::thread::panicking() {
            self.print_log_tail("containerd.log");
            self.print_log_tail("kubelet.log");
        }

        // 1. graceful: stop + remove every sandbox through CRI (CNI DEL, IP release, netns)
        let containerd_alive = self.containerd.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if containerd_alive && self.sock().exists() {
            let endpoint = self.endpoint();
            let graceful = std::thread::spawn(move || -> TestResult {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let opts = CriOptions {
                        connect_timeout: Duration::from_secs(3),
                        request_timeout: Duration::from_secs(10),
                    };
                    let cri = CriRuntime::connect(&endpoint, opts).await?;
                    for sb in cri.list_pod_sandbox(None).await? {
                        let _ = cri.stop_pod_sandbox(&sb.id).await;
                        let _ = cri.remove_pod_sandbox(&sb.id).await;
                    }
                    Ok(())
                })
            });
            if let Ok(Err(e)) = graceful.join() {
                eprintln!("teardown: graceful sandbox removal failed: {e}");
            }
        }

        // 2. note shim sockets and sandbox ids before the state goes away
        let shim_sockets = shim_socket_paths(&self.dir.join("state/io.containerd.runtime.v2.task"));
        let sandbox_ids = self.sandbox_ids();

        // 3. containerd: TERM, then KILL; reap it
        self.stop_containerd();

        // 4. shims of this containerd (their -address names our socket), anything else started
        //    from our directory, then every process left in our cgroup subtree (containers
        //    outlive a killed shim)
        let dir = self.dir.to_string_lossy().into_owned();
        kill9(&pids_whose_cmdline_contains(&dir));
        let pids_root = Path::new("/sys/fs/cgroup/pids").join(self.cgroup_parent.trim_start_matches('/'));
        for _ in 0..20 {
            let pids = cgroup_procs(&pids_root);
            if pids.is_empty() {
                break;
            }
            kill9(&pids);
            std::thread::sleep(Duration::from_millis(100));
        }

        // 5. cgroups, deepest first, in every hierarchy (unified included)
        for h in cgroup_hierarchies() {
            let top = h.join(self.cgroup_parent.trim_start_matches('/'));
            for _ in 0..20 {
                if !top.exists() {
                    break;
                }
                rmdir_tree(&top);
                if top.exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }

        // 6. mounts: the node's die with its mount namespace once its files are unmounted;
        //    unmount anything under our directory in ours, deepest first
        let mut leaked = mounts_under(&self.dir);
        leaked.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in leaked {
            let _ = Command::new("umount").arg("-l").arg(&m).stderr(Stdio::null()).status();
        }
        self.ns_dir_mounted = false;

        // 7. CNI result cache (not configurable in containerd 1.6) and stale shim sockets
        for id in &sandbox_ids {
            for f in cni_results_for(id) {
                let _ = fs::remove_file(f);
            }
        }
        for s in shim_sockets {
            let _ = fs::remove_file(s);
        }

        // 8. the namespace (eth0 and so the host's veth, cni0 and pod veths go with it), the
        //    directory, empty shared dirs
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).stderr(Stdio::null()).status();
        let _ = fs::remove_dir_all(&self.dir);
        for d in ["/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni"] {
            let _ = fs::remove_dir(d); // only when empty: another containerd may use them
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn containerd_config(d: &Path, cgroup_parent: &str) -> String {
    let dd = d.display();
    format!(
        r#"version = 2
root = "{dd}/root"
state = "{dd}/state"
oom_score = 0

[cgroup]
  path = "{cgroup_parent}/containerd"

[grpc]
  address = "{dd}/containerd.sock"
[ttrpc]
  address = "{dd}/containerd.sock.ttrpc"
[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dd}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{dd}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dd}/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dd}/certs.d"
"#
    )
}

pub fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

pub fn pids_whose_cmdline_contains(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| *pid != me && cmdline(*pid).contains(needle))
        .collect()
}

fn kill9(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill").arg("-KILL").args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default()
}

/// Every pid in a cgroup and its descendants.
fn cgroup_procs(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                pids.extend(cgroup_procs(&e.path()));
            }
        }
    }
    pids
}

fn rmdir_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Mount points at or under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| *m == d || m.starts_with(&format!("{d}/")))
        .collect()
}

fn cni_results_for(sandbox_id: &str) -> Vec<PathBuf> {
    let needle = format!("-{sandbox_id}-");
    fs::read_dir("/var/lib/cni/results")
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains(&needle)).collect())
        .unwrap_or_default()
}

/// `<state>/io.containerd.runtime.v2.task/<ns>/<id>/address` files hold `unix:///run/containerd/s/<hash>`.
fn shim_socket_paths(task_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for ns in fs::read_dir(task_dir).into_iter().flatten().flatten() {
        for task in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let Ok(addr) = fs::read_to_string(task.path().join("address")) {
                let path = addr.trim().trim_start_matches("unix://");
                if !path.is_empty() {
                    out.push(PathBuf::from(path));
                }
            }
        }
    }
    out
}

// ---- a whole cluster: etcd, apiserver, one node with its kubelet ----

pub struct TestCluster {
    /// Dropped first (see `Drop`): the kubelet, then the node, then the apiserver, then etcd.
    pub kubelet: Option<Child>,
    pub node: TestNode,
    pub apiserver: Option<rkube_apiserver::testing::TestApiserver>,
    pub etcd: component_base::testing::Etcd,
    pub client: kube::Client,
}

impl TestCluster {
    /// etcd, the apiserver on the host side of the node's veth, the node with images, and the
    /// kubelet's certificates and kubeconfig (the kubelet itself: [`TestCluster::start_kubelet`]).
    pub async fn start(archives: &[PathBuf]) -> TestResult<TestCluster> {
        let node = TestNode::start()?;
        let etcd = component_base::testing::Etcd::start();
        let host_ip = node.host_ip.to_string();
        let apiserver =
            rkube_apiserver::testing::TestApiserver::start_with_args(&etcd.endpoint, &["--bind-address", &host_ip])
                .await;
        let kc = kube::config::Kubeconfig::read_from(apiserver.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let cluster = TestCluster { kubelet: None, node, apiserver: Some(apiserver), etcd, client };
        cluster.node.wait_ready().await?;
        cluster.node.import_images(archives)?;
        cluster.write_kubelet_credentials()?;
        Ok(cluster)
    }

    pub fn cert_dir(&self) -> &Path {
        self.apiserver.as_ref().map(|a| a.cert_dir.path()).expect("the apiserver runs")
    }

    fn write_kubelet_credentials(&self) -> TestResult {
        let cert_dir = self.cert_dir();
        let ca = component_base::tls::Ca::load(&cert_dir.join("ca.crt"), &cert_dir.join("ca.key"))?;
        let pki = self.node.dir.join("pki");
        fs::create_dir_all(&pki)?;
        let name = &self.node.name;
        let serving = ca.issue_serving(name, std::slice::from_ref(name), &[self.node.node_ip.into()])?;
        serving.write(&pki.join("kubelet.crt"), &pki.join("kubelet.key"))?;
        let client = ca.issue_client(&format!("system:node:{name}"), &["system:nodes".to_string()])?;
        let addr = self.apiserver.as_ref().map(|a| a.running.addr).ok_or("no apiserver")?;
        let kubeconfig = component_base::kubeconfig::Kubeconfig::single(
            "rkube",
            &format!("https://{}:{}", self.node.host_ip, addr.port()),
            ca.cert_pem(),
            Some(&client),
            None,
        );
        kubeconfig.write(&pki.join("kubelet.kubeconfig"))?;
        fs::write(pki.join("ca.crt"), ca.cert_pem())?;
        Ok(())
    }

    /// The kubelet's flags, as the cluster tool passes them.
    pub fn kubelet_args(&self) -> Vec<String> {
        let d = &self.node.dir;
        let p = |s: &str| d.join(s).to_string_lossy().into_owned();
        vec![
            format!("--kubeconfig={}", p("pki/kubelet.kubeconfig")),
            format!("--hostname-override={}", self.node.name),
            format!("--node-ip={}", self.node.node_ip),
            format!("--container-runtime-endpoint={}", self.node.endpoint()),
            "--port=10250".into(),
            "--address=0.0.0.0".into(),
            format!("--tls-cert-file={}", p("pki/kubelet.crt")),
            format!("--tls-private-key-file={}", p("pki/kubelet.key")),
            format!("--client-ca-file={}", p("pki/ca.crt")),
            format!("--pod-cidr={POD_SUBNET}"),
            "--cluster-dns=198.19.128.10".into(),
            "--cluster-domain=cluster.local".into(),
            format!("--root-dir={}", p("kubelet")),
            format!("--pod-logs-dir={}", p("logs")),
            "--node-labels=rkube.test/node=true".into(),
            "--max-pods=110".into(),
            format!("--cgroup-root={}", self.node.cgroup_parent),
            "--node-status-update-frequency=2s".into(),
        ]
    }

    /// Starts the real kubelet binary inside the node.
    pub fn start_kubelet(&mut self) -> TestResult {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.node.dir.join("kubelet.log"))?;
        let mut cmd = self.node.command(env!("CARGO_BIN_EXE_rkube-kubelet"));
        cmd.args(self.kubelet_args())
            .env("RUST_LOG", "info,rkube_kubelet=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        component_base::testing::die_with_parent(&mut cmd);
        self.kubelet = Some(cmd.spawn()?);
        Ok(())
    }

    /// SIGKILLs the kubelet (nothing of it runs afterwards; its containers do).
    pub fn kill_kubelet(&mut self) {
        if let Some(mut k) = self.kubelet.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
    }

    pub fn kubelet_pid(&self) -> Option<u32> {
        self.kubelet.as_ref().map(Child::id)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_kubelet();
        self.node.teardown();
        if let Some(a) = self.apiserver.take() {
            a.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_overlap_when_one_contains_the_other() {
        let p = |s| parse_prefix(s).expect("prefix");
        assert!(overlaps(p("198.18.0.0/15"), p("198.18.200.4/30")));
        assert!(overlaps(p("198.18.200.4/30"), p("198.18.200.6/32")));
        assert!(!overlaps(p("198.18.200.4/30"), p("198.18.200.8/30")));
        assert!(!overlaps(p("192.0.2.0/24"), p("198.18.200.4/30")));
    }
}
