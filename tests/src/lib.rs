//! Harness for the end-to-end tests: real binaries (built from this checkout on first use), a
//! real local cluster made by `rkube` per test, the real kubectl, and a check that `delete`
//! left nothing on the machine. A `TestCluster` deletes its cluster when dropped, so a failing
//! test cleans up too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const STATE_ROOT: &str = "/var/lib/rkube/clusters";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Builds the binaries (dev profile) once per test process and returns their directory.
/// Building here, instead of trusting whatever is in target/, means a test always runs the
/// code of this checkout, also with a plain `cargo nextest run -p rkube-e2e`. When nothing
/// changed the build is a no-op. `RKUBE_E2E_BIN_DIR` points at prebuilt binaries instead.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RKUBE_E2E_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The whole workspace, exactly as hack/test.sh builds it: building only the packages
        // with these binaries resolves their dependencies' features differently, which rebuilt
        // part of the dependency tree inside the first test (minutes on a busy CI machine).
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root).args(["build", "--quiet", "--workspace", "--bins"]);
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of the cluster binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        target.join("debug")
    })
}

/// The node images (pause, busybox, nginx) built by hack/images (a no-op when up to date).
pub fn images_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let out = root.join("_output/images");
        let status = Command::new(root.join("hack/images/build-images.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run hack/images/build-images.sh");
        assert!(status.success(), "hack/images/build-images.sh failed");
        out
    })
}

/// A cluster name no other test run on this machine uses (pid + random), at most 24 chars.
pub fn unique_name(prefix: &str) -> String {
    let r: u32 = rand::random();
    format!("{prefix}{}{:04x}", std::process::id() % 100_000, r & 0xffff)
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One cluster, deleted on drop.
pub struct TestCluster {
    pub name: String,
    /// HOME for rkube and kubectl, so ~/.kube/config is the test's own.
    pub home: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub record: serde_json::Value,
    deleted: bool,
}

impl TestCluster {
    /// A guard for a cluster that `create` is about to make (so even a failed create is
    /// cleaned up).
    pub fn named(name: &str) -> TestCluster {
        // A test killed by nextest's timeout never runs Drop: hack/test.sh deletes every
        // cluster named in this file once the run is over.
        if let Some(list) = std::env::var_os("RKUBE_E2E_CLUSTERS") {
            use std::io::Write;
            let f = std::fs::OpenOptions::new().create(true).append(true).open(list);
            if let Err(e) = f.and_then(|mut f| writeln!(f, "{name}")) {
                eprintln!("warning: cannot record cluster {name} in $RKUBE_E2E_CLUSTERS: {e}");
            }
        }
        let home = tempfile::tempdir().expect("temp home");
        let kubeconfig = home.path().join(".kube/config");
        TestCluster { name: name.to_owned(), home, kubeconfig, record: serde_json::Value::Null, deleted: false }
    }

    /// `rkube cluster create --name <unique> --nodes N <extra>`; panics with rkube's output
    /// when it fails.
    pub fn create(prefix: &str, nodes: u32, extra: &[&str]) -> TestCluster {
        let mut c = TestCluster::named(&unique_name(prefix));
        let nodes = nodes.to_string();
        let mut args = vec!["cluster", "create", "--name", &c.name, "--nodes", &nodes, "--wait", "90s"];
        args.extend(extra);
        let out = c.rkube(&args);
        assert!(out.status.success(), "create failed: {}", out_text(&out));
        c.load_record();
        c
    }

    pub fn load_record(&mut self) {
        let path = Path::new(STATE_ROOT).join(&self.name).join("cluster.json");
        let text = std::fs::read_to_string(&path).expect("cluster record");
        self.record = serde_json::from_str(&text).expect("record is json");
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }

    pub fn rkube_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("rkube"));
        cmd.args(args)
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RKUBE_IMAGES_DIR", images_dir())
            .env("RKUBE_BIN_DIR", bin_dir())
            .env_remove("RKUBE_STATE_DIR")
            .stdin(Stdio::null());
        cmd
    }

    pub fn rkube(&self, args: &[&str]) -> Output {
        self.rkube_command(args).output().expect("run rkube")
    }

    pub fn rkube_ok(&self, args: &[&str]) -> String {
        let out = self.rkube(args);
        assert!(out.status.success(), "rkube {args:?}: {}", out_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", out_text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `kubectl args` until `pred(stdout)` holds.
    pub fn wait_kubectl(&self, what: &str, timeout: Duration, args: &[&str], pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.kubectl(args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && pred(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {}", out_text(&out));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node names and InternalIPs from the record.
    pub fn record_nodes(&self) -> Vec<(String, String)> {
        self.record["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (n["name"].as_str().unwrap_or_default().to_owned(), n["ip"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// `rkube cluster delete`, then everything the cluster made must be gone.
    pub fn delete_and_check(&mut self) {
        if self.record.is_null() && Path::new(STATE_ROOT).join(&self.name).join("cluster.json").exists() {
            self.load_record();
        }
        let out = self.rkube(&["cluster", "delete", "--name", &self.name]);
        self.deleted = true;
        assert!(out.status.success(), "delete failed: {}", out_text(&out));
        let left = leftovers(&self.name, &self.record, &self.kubeconfig);
        assert!(left.is_empty(), "cluster {} left behind:\n{}", self.name, left.join("\n"));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !self.deleted && Path::new(STATE_ROOT).join(&self.name).exists() {
            let _ = self.rkube(&["cluster", "delete", "--name", &self.name]);
        }
    }
}

fn run_text(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Bridges and ranges that belong to other clusters that exist right now (other tests run
/// concurrently and may reuse an index the moment ours is free).
fn others_claims(name: &str) -> Vec<String> {
    let mut claims = Vec::new();
    for e in std::fs::read_dir(STATE_ROOT).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy() == name {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join("cluster.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(b) = v["plan"]["bridge"].as_str() {
            claims.push(b.to_owned());
        }
    }
    claims
}

/// What a deleted cluster may not leave: netns, links, routes, mounts, processes, cgroups,
/// iptables rules, its state dir and its kubeconfig context.
pub fn leftovers(name: &str, record: &serde_json::Value, kubeconfig: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let dir = format!("{STATE_ROOT}/{name}");
    let prefix = format!("rkube-{name}-");
    for line in run_text(&["ip", "netns", "list"]).lines().filter(|l| l.starts_with(&prefix)) {
        left.push(format!("netns {line}"));
    }
    let others = others_claims(name);
    if let Some(bridge) = record["plan"]["bridge"].as_str().filter(|b| !others.iter().any(|o| o == b)) {
        let index = record["plan"]["index"].as_u64().unwrap_or(999);
        let veth = format!("rk{index}n");
        for line in run_text(&["ip", "-o", "link", "show"]).lines() {
            let ifname = line.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("")).unwrap_or("");
            if ifname == bridge || ifname.starts_with(&veth) {
                left.push(format!("link {ifname}"));
            }
        }
        let routes = run_text(&["ip", "-4", "route", "show", "table", "all"]);
        for net in record["plan"]["blackhole"].as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
            if routes.lines().any(|l| l.starts_with(&format!("blackhole {net}"))) {
                left.push(format!("route blackhole {net}"));
            }
        }
        for l in routes.lines().filter(|l| l.contains(&format!("dev {bridge} "))) {
            left.push(format!("route {l}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in mounts.lines().filter(|l| l.contains(&dir)) {
        left.push(format!("mount {l}"));
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("{dir}/")) {
            left.push(format!("process {}: {cmdline}", e.file_name().to_string_lossy()));
        }
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for c in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            if c.file_name().to_string_lossy().starts_with(&prefix) {
                left.push(format!("cgroup {}", c.path().display()));
            }
        }
    }
    // rkube-dns listens on the host's bridge address (its process is found above by its
    // arguments; this finds a socket that outlived it), unless another cluster has the
    // address now
    let bridge_ours = record["plan"]["bridge"].as_str().is_some_and(|b| !others.iter().any(|o| o == b));
    if let Some(host) = record["plan"]["hostIp"].as_str().filter(|_| bridge_ours) {
        for l in run_text(&["ss", "-Hlntu"]).lines().filter(|l| l.contains(&format!(" {host}:53 "))) {
            left.push(format!("socket {l}"));
        }
    }
    let rules = run_text(&["iptables", "-w", "-t", "nat", "-S"]);
    for l in rules.lines().filter(|l| l.contains(&format!("\"rkube:{name}\"")) || l.contains(&format!("rkube:{name} ")))
    {
        left.push(format!("iptables {l}"));
    }
    if Path::new(&dir).exists() {
        left.push(format!("state dir {dir}"));
    }
    if std::fs::read_to_string(kubeconfig).unwrap_or_default().contains(&format!("rkube-{name}")) {
        left.push(format!("kubeconfig context rkube-{name}"));
    }
    left
}
