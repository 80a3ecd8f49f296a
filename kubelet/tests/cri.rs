//! `CriRuntime` against a real containerd, started by the test inside its own network namespace
//! (the recipe of docs/node-runtime-notes.md: `ip netns exec` + `unshare --uts`, cgroup mounts
//! re-created inside, one state directory, one cgroup subtree).
//!
//! Network: the namespace has only `lo` and the CNI bridge on 198.19.254.0/24 (inside
//! 198.18.0.0/15), no default route, registry mirrors pointing at the namespace's own loopback:
//! nothing can leave it. Images come from `_output/images/*.tar` (hack/images/build-images.sh),
//! imported with `ctr`, never pulled.
//!
//! Teardown ([`TestNode`]'s `Drop`, so it also runs when the test fails) follows the notes'
//! section 6 and the test then checks that no process, netns, mount, cgroup, CNI result file or
//! directory is left. Needs root; without it the test says so and passes.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkube_kubelet::runtime::cri::CriOptions;
use rkube_kubelet::runtime::{api, image_spec, sandbox_filter_by_labels, ContainerRuntime, CriRuntime};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Pod subnet inside the test namespace (only reachable from inside it).
const POD_SUBNET: &str = "198.19.254.0/24";
const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";
const BUSYBOX: &str = "docker.io/library/busybox:latest";
const NGINX: &str = "docker.io/library/nginx:1.25";
const IMAGES: [&str; 3] = ["pause", "busybox", "nginx"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kubelet/ has a parent").to_path_buf()
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A name no other test or session uses: pid + clock.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:05x}", std::process::id(), nanos & 0xf_ffff)
}

fn run(cmd: &str, args: &[&str]) -> TestResult<String> {
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` until it returns `Some` or `timeout` passes.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> TestResult<T>
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
fn ensure_images() -> TestResult<Vec<PathBuf>> {
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

/// One containerd "node": a netns, a state dir, a cgroup subtree. Drop tears it all down.
struct TestNode {
    name: String,
    dir: PathBuf,
    cgroup_parent: String,
    containerd: Option<Child>,
    torn_down: bool,
}

impl TestNode {
    fn sock(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    fn start() -> TestResult<TestNode> {
        let name = format!("rkube-test-{}", unique_suffix());
        let dir = std::env::temp_dir().join(&name);
        // The guard exists before anything is created, so a failure below still cleans up.
        let mut node = TestNode { cgroup_parent: format!("/{name}"), name, dir, containerd: None, torn_down: false };
        let d = node.dir.clone();
        for sub in ["root", "state", "net.d", "cni-ipam", "logs", "opt", "certs.d/docker.io", "certs.d/registry.k8s.io"]
        {
            fs::create_dir_all(d.join(sub))?;
        }

        run("ip", &["netns", "add", &node.name])?;
        run("ip", &["-n", &node.name, "link", "set", "lo", "up"])?;

        // CNI: bridge + host-local, no routes handed to pods, no masquerading: a pod reaches
        // only its own subnet, and the namespace itself has no route anywhere else.
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

        // Registry mirrors on the namespace's own loopback, where nothing listens: a pull fails at
        // once instead of ever looking for the internet.
        for host in ["docker.io", "registry.k8s.io"] {
            fs::write(
                d.join(format!("certs.d/{host}/hosts.toml")),
                "server = \"http://127.0.0.1:1\"\n\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            )?;
        }

        let dd = d.display();
        let config = format!(
            r#"version = 2
root = "{dd}/root"
state = "{dd}/state"
oom_score = 0

[cgroup]
  path = "{parent}/containerd"

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
"#,
            parent = node.cgroup_parent,
        );
        fs::write(d.join("config.toml"), config)?;

        // `ip netns exec` mounts a fresh /sys in its own mount namespace, which drops the cgroup
        // mounts (pitfall C2): note them now and mount them again inside before containerd starts.
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let cgroup_mounts: String = mounts
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|m| m.starts_with("/sys/fs/cgroup")))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(d.join("cgroup-mounts"), cgroup_mounts)?;

        let log = fs::File::create(d.join("containerd.log"))?;
        let script = r#"hostname "$3" || exit 1
while read -r src dst type opts _; do mkdir -p "$dst" && mount -t "$type" -o "$opts" "$src" "$dst" || exit 1; done < "$1"
exec containerd --config "$2""#;
        // ip, unshare and sh all exec: the child's pid is containerd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &node.name, "unshare", "--uts", "sh", "-c", script, "sh"])
            .arg(d.join("cgroup-mounts"))
            .arg(d.join("config.toml"))
            .arg(&node.name)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        node.containerd = Some(child);
        Ok(node)
    }

    fn import_images(&self, archives: &[PathBuf]) -> TestResult {
        let sock = self.sock();
        let sock = sock.to_str().ok_or("socket path is not utf-8")?;
        for a in archives {
            let a = a.to_str().ok_or("archive path is not utf-8")?;
            run("ctr", &["-a", sock, "-n", "k8s.io", "images", "import", a])?;
        }
        Ok(())
    }

    fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// Everything this node left: processes, netns, mounts, cgroups, CNI results, its directory.
    fn leftovers(&self, sandbox_ids: &[String]) -> Vec<String> {
        let mut left = Vec::new();
        let dir = self.dir.to_string_lossy().into_owned();
        for pid in pids_whose_cmdline_contains(&dir) {
            left.push(format!("process {pid} ({})", cmdline(pid).replace('\0', " ")));
        }
        if run("ip", &["netns", "list"]).map(|o| o.split_whitespace().any(|n| n == self.name)).unwrap_or(true) {
            left.push(format!("netns {}", self.name));
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

    /// The notes' section 6. Idempotent; every step runs even when an earlier one failed.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if std::thread::panicking() {
            if let Ok(log) = fs::read_to_string(self.dir.join("containerd.log")) {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- containerd.log (last lines) ----");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
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
        let sandbox_ids: Vec<String> = fs::read_dir(self.dir.join("root/io.containerd.grpc.v1.cri/sandboxes"))
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();

        // 3. containerd: TERM, then KILL; reap it
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

        // 4. shims of this containerd (their -address names our socket), then every process
        //    left in our cgroup subtree (containers outlive a killed shim)
        let sock = self.sock().to_string_lossy().into_owned();
        let shims: Vec<u32> = pids_whose_cmdline_contains(&sock)
            .into_iter()
            .filter(|p| cmdline(*p).contains("containerd-shim"))
            .collect();
        kill9(&shims);
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

        // 6. mounts: containerd's die with its mount namespace; unmount anything that leaked
        //    into ours anyway, deepest first
        let mut leaked = mounts_under(&self.dir);
        leaked.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in leaked {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }

        // 7. CNI result cache (not configurable in containerd 1.6) and stale shim sockets
        for id in &sandbox_ids {
            for f in cni_results_for(id) {
                let _ = fs::remove_file(f);
            }
        }
        for s in shim_sockets {
            let _ = fs::remove_file(s);
        }

        // 8. the namespace (cni0 and pod veths go with it), the directory, empty shared dirs
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
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

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

fn pids_whose_cmdline_contains(needle: &str) -> Vec<u32> {
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

fn sandbox_config(node: &TestNode, uid: &str) -> api::PodSandboxConfig {
    let (namespace, name) = ("default", "bb");
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: "bb-pod".into(),
        log_directory: node.dir.join(format!("logs/{namespace}_{name}_{uid}")).to_string_lossy().into_owned(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.namespace".to_string(), namespace.to_string()),
            ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        ]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/kubepods/pod{uid}", node.cgroup_parent),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespace_options() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn busybox_config() -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "bb".into(), attempt: 0 }),
        image: Some(image_spec(BUSYBOX)),
        command: vec!["sh".into(), "-c".into(), "echo hello; sleep 3600".into()],
        log_path: "bb/0.log".into(),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), "bb".to_string())]),
        linux: Some(api::LinuxContainerConfig {
            // sent again per container, or it joins the sandbox's PID namespace
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn container_state(cri: &CriRuntime, id: &str) -> TestResult<api::ContainerStatus> {
    Ok(cri.container_status(id, false).await?.status.ok_or("no status")?)
}

/// The scenario; returns the sandbox ids it created so the leftover check can look for them.
async fn pod_lifecycle(node: &TestNode, sandbox_ids: &mut Vec<String>) -> TestResult {
    let cri = wait_for("containerd's CRI to answer", Duration::from_secs(20), || async {
        let opts = CriOptions { connect_timeout: Duration::from_secs(1), request_timeout: Duration::from_secs(5) };
        let cri = CriRuntime::connect(&node.endpoint(), opts).await.ok()?;
        cri.version().await.ok().map(|_| cri)
    })
    .await?;

    let v = cri.version().await?;
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let status = cri.status(false).await?.status.ok_or("no runtime status")?;
    for want in ["RuntimeReady", "NetworkReady"] {
        assert!(status.conditions.iter().any(|c| c.r#type == want && c.status), "{want} in {:?}", status.conditions);
    }

    // images: imported, never pulled; a pull has nowhere to go and must fail fast
    let busybox = cri.image_status(image_spec(BUSYBOX), false).await?.ok_or("busybox not imported")?;
    assert!(busybox.repo_tags.iter().any(|t| t == "docker.io/library/busybox:1.36"), "{:?}", busybox.repo_tags);
    assert!(cri.image_status(image_spec("docker.io/library/nosuchimage:1"), false).await?.is_none());
    let all = cri.list_images(None).await?;
    for want in [SANDBOX_IMAGE, BUSYBOX, "docker.io/library/nginx:latest"] {
        assert!(all.iter().any(|i| i.repo_tags.iter().any(|t| t == want)), "{want} not listed");
    }
    let auth = api::AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() };
    let started = Instant::now();
    let pull = cri.pull_image(image_spec("docker.io/library/nosuchimage:1"), Some(auth), None).await;
    assert!(pull.is_err(), "pull from the unreachable mirror must fail: {pull:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // sandbox
    let uid = format!("uid-{}", unique_suffix());
    let sc = sandbox_config(node, &uid);
    let sb = cri.run_pod_sandbox(sc.clone(), "").await?;
    sandbox_ids.push(sb.clone());
    let st = cri.pod_sandbox_status(&sb, false).await?.status.ok_or("no sandbox status")?;
    assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with("198.19.254."), "pod ip {ip:?}");
    let listed =
        cri.list_pod_sandbox(Some(sandbox_filter_by_labels([("io.kubernetes.pod.uid", uid.as_str())]))).await?;
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [sb.as_str()]);
    let other = cri.list_pod_sandbox(Some(sandbox_filter_by_labels([("io.kubernetes.pod.uid", "nobody")]))).await?;
    assert!(other.is_empty());

    // container
    let c = cri.create_container(&sb, busybox_config(), sc.clone()).await?;
    assert_eq!(container_state(&cri, &c).await?.state, api::ContainerState::ContainerCreated as i32);
    cri.start_container(&c).await?;
    let cs = container_state(&cri, &c).await?;
    assert_eq!(cs.state, api::ContainerState::ContainerRunning as i32, "{cs:?}");
    let listed =
        cri.list_containers(Some(api::ContainerFilter { pod_sandbox_id: sb.clone(), ..Default::default() })).await?;
    assert_eq!(listed.len(), 1);

    let out = cri.exec_sync(&c, vec!["cat".into(), "/etc/hostname".into()], Duration::from_secs(10)).await?;
    assert_eq!((String::from_utf8_lossy(&out.stdout).trim(), out.exit_code), ("bb-pod", 0), "{out:?}");
    let out = cri
        .exec_sync(&c, vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()], Duration::from_secs(10))
        .await?;
    assert_eq!((String::from_utf8_lossy(&out.stderr).trim(), out.exit_code), ("oops", 3));

    // the container log, in CRI format: "<time> stdout F hello"
    let log_path = PathBuf::from(&cs.log_path);
    assert_eq!(log_path, Path::new(&sc.log_directory).join("bb/0.log"));
    let line = wait_for("hello in the container log", Duration::from_secs(10), || {
        let p = log_path.clone();
        async move { fs::read_to_string(p).ok()?.lines().find(|l| l.ends_with(" stdout F hello")).map(str::to_string) }
    })
    .await?;
    assert!(line.split(' ').next().is_some_and(|t| t.ends_with('Z')), "{line}");

    // the nginx image serves HTTP inside the pod (same network namespace as busybox)
    let ng_config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "web".into(), attempt: 0 }),
        image: Some(image_spec(NGINX)),
        log_path: "web/0.log".into(),
        linux: busybox_config().linux,
        ..Default::default()
    };
    let ng = cri.create_container(&sb, ng_config, sc.clone()).await?;
    cri.start_container(&ng).await?;
    let body = wait_for("nginx to answer on the pod's loopback", Duration::from_secs(10), || {
        let (cri, c) = (cri.clone(), c.clone());
        async move {
            let cmd = vec!["wget".into(), "-qO-".into(), "http://127.0.0.1/".into()];
            let out = cri.exec_sync(&c, cmd, Duration::from_secs(5)).await.ok()?;
            (out.exit_code == 0).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await?;
    assert_eq!(body.trim(), "hello from nginx");
    cri.stop_container(&ng, Duration::from_secs(5)).await?;
    assert_eq!(container_state(&cri, &ng).await?.state, api::ContainerState::ContainerExited as i32);
    cri.remove_container(&ng).await?;

    // streaming URLs come from the stream server on the namespace's loopback
    let exec = api::ExecRequest { container_id: c.clone(), cmd: vec!["sh".into()], stdout: true, ..Default::default() };
    let url = cri.exec(exec).await?;
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
    let attach = api::AttachRequest { container_id: c.clone(), stdout: true, ..Default::default() };
    assert!(cri.attach(attach).await?.contains("/attach/"));
    assert!(cri.port_forward(&sb, vec![80]).await?.contains("/portforward/"));

    // stop (sh as PID 1 ignores TERM: killed after the 1 s grace), remove
    cri.stop_container(&c, Duration::from_secs(1)).await?;
    let cs = container_state(&cri, &c).await?;
    assert_eq!(cs.state, api::ContainerState::ContainerExited as i32, "{cs:?}");
    cri.remove_container(&c).await?;
    assert!(cri.container_status(&c, false).await.err().is_some_and(|e| e.is_not_found()));

    cri.stop_pod_sandbox(&sb).await?;
    let st = cri.pod_sandbox_status(&sb, false).await?.status.ok_or("no sandbox status")?;
    assert_eq!(st.state, api::PodSandboxState::SandboxNotready as i32);
    cri.remove_pod_sandbox(&sb).await?;
    assert!(cri.pod_sandbox_status(&sb, false).await.err().is_some_and(|e| e.is_not_found()));
    assert!(cri.list_pod_sandbox(None).await?.is_empty());
    Ok(())
}

#[test]
fn containerd_pod_lifecycle_leaves_nothing_behind() -> TestResult {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces, mounts, cgroups)");
        return Ok(());
    }
    let archives = ensure_images()?;
    let mut node = TestNode::start()?;
    let containerd_pid = node.containerd_pid();
    let mut sandbox_ids = Vec::new();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = (|| -> TestResult {
        rt.block_on(wait_for("containerd.sock", Duration::from_secs(10), || {
            let s = node.sock();
            async move { s.exists().then_some(()) }
        }))?;
        node.import_images(&archives)?;
        rt.block_on(pod_lifecycle(&node, &mut sandbox_ids))
    })();
    drop(rt);

    node.teardown();
    let left = node.leftovers(&sandbox_ids);
    if let Some(pid) = containerd_pid {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "containerd {pid} still running");
    }
    result?;
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
