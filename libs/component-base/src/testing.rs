//! Test support shared by every crate's integration tests: a real etcd on free loopback
//! ports, killed on drop and by the kernel if the test process dies. Only built with the
//! `testing` feature, which only dev-dependencies enable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released), below the ephemeral range so that no
/// outgoing connection takes it before the test's server binds it (see [`crate::ports`]).
pub fn free_port() -> u16 {
    crate::ports::free_loopback_port().expect("bind a free loopback port")
}

/// Makes the kernel SIGKILL the child when the test process dies, so nothing outlives a
/// crashed or killed test.
pub fn die_with_parent(cmd: &mut Command) {
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Polls `cond` every 100 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Etcd {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// A fresh etcd on free loopback ports. `free_port` only finds ports that were free a
    /// moment ago: another test can take one before etcd binds it, and etcd then exits, so a
    /// failed start is tried again on fresh ports.
    pub fn start() -> Self {
        let mut why = String::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(e) => return e,
                Err(log) => why = log,
            }
        }
        panic!("etcd did not start (5 tries on fresh ports); its last log:\n{why}");
    }

    /// Err(the tail of etcd's log) when it exited before serving.
    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("etcd log file");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            "test",
            "--data-dir",
            dir.path().join("data").to_str().expect("utf-8 path"),
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("test={peer_url}"),
            "--logger",
            "zap",
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("etcd is installed (hack/install-deps.sh)");
        let mut e = Etcd { child, endpoint, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        let tail = || {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        };
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            if matches!(e.child.try_wait(), Ok(Some(_))) {
                return Err(tail());
            }
            assert!(Instant::now() < deadline, "etcd did not start within 20 s; its log:\n{}", tail());
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(e)
    }

    /// etcd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A versioned kubectl build (`kubectl.1.NN` beside the installed dispatcher) with a
/// throwaway HOME, pointed at one kubeconfig.
pub struct Kubectl {
    pub bin: PathBuf,
    pub home: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The directory of the real kubectl binary the installed `kubectl` dispatches to.
pub fn kubectl_dir() -> PathBuf {
    let which = Command::new("sh").args(["-c", "readlink -f \"$(command -v kubectl)\""]).output().expect("sh");
    let path = String::from_utf8_lossy(&which.stdout).trim().to_string();
    Path::new(&path).parent().expect("kubectl has a directory").to_path_buf()
}

impl Kubectl {
    pub fn new(minor: u32, cert_dir: &Path) -> Self {
        let bin = kubectl_dir().join(format!("kubectl.1.{minor}"));
        assert!(bin.exists(), "{} is not installed", bin.display());
        Kubectl { bin, home: tempfile::tempdir().expect("home"), kubeconfig: cert_dir.join("admin.kubeconfig") }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECTL_COMMAND_HEADERS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().expect("kubectl runs");
        let out = wait_with_timeout(child, Duration::from_secs(60));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// Runs and requires exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "kubectl {} failed:\nstdout: {}\nstderr: {}", args.join(" "), r.stdout, r.stderr);
        r.stdout
    }
}

fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Output {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("kubectl timed out; stdout: {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
