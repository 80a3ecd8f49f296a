//! Doing: running commands, starting and stopping detached processes, and the host-level
//! clean-up of a node (cgroups, shims, mounts, CNI cache). Commands go through the narrow
//! `Runner` trait so the order and error handling of command lists is testable with a fake.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use crate::render::{launch_argv, Cmd, Component, ProcSpec};

#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("starting {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
}

pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SysError + '_ {
    move |source| SysError::Io { path: path.to_path_buf(), source }
}

/// Runs one command to completion, returning its stdout.
pub trait Runner {
    fn run(&self, argv: &[String]) -> Result<String, SysError>;
}

/// The machine.
pub struct Real;

impl Runner for Real {
    fn run(&self, argv: &[String]) -> Result<String, SysError> {
        let shown = argv.join(" ");
        let (prog, args) =
            argv.split_first().ok_or(SysError::Command { cmd: shown.clone(), detail: "empty".into() })?;
        let out = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SysError::Command { cmd: shown.clone(), detail: e.to_string() })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(SysError::Command { cmd: shown, detail: format!("{}: {err}", out.status) })
        }
    }
}

/// Runs `cmds` in order; the first failure of a command that must succeed stops the list.
pub fn apply(runner: &dyn Runner, cmds: &[Cmd]) -> Result<(), SysError> {
    for c in cmds {
        match runner.run(&c.argv) {
            Ok(_) => {}
            Err(e) if c.ignore_errors => tracing::debug!(error = %e, "ignored"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn run(argv: &[&str]) -> Result<String, SysError> {
    Real.run(&argv.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// Starts a detached process; its pid goes to the pid file, its output to the log file.
pub fn spawn(spec: &ProcSpec) -> Result<Child, SysError> {
    let what = match &spec.node {
        Some(n) => format!("{} on {n}", spec.component.name()),
        None => spec.component.name().to_owned(),
    };
    for dir in [spec.log_file.parent(), spec.pid_file.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let log = OpenOptions::new().create(true).append(true).open(&spec.log_file).map_err(io_err(&spec.log_file))?;
    let log2 = log.try_clone().map_err(io_err(&spec.log_file))?;
    let argv = launch_argv(spec);
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|source| SysError::Spawn { what, source })?;
    std::fs::write(&spec.pid_file, format!("{}\n", child.id())).map_err(io_err(&spec.pid_file))?;
    Ok(child)
}

pub fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Whether `pid` is alive and runs `program` (guards against pids reused after a reboot).
pub fn is_program(pid: i32, program: &str) -> bool {
    let Some(p) = Pid::from_raw(pid) else {
        return false;
    };
    if test_kill_process(p).is_err() {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline_runs(&cmdline, program)
}

/// Whether a `/proc/<pid>/cmdline` is `program`, or the `setsid`/`nsenter` launcher that is
/// about to exec it (a process stopped right after spawning has not exec'd yet).
fn cmdline_runs(cmdline: &[u8], program: &str) -> bool {
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let base = |a: &String| Path::new(a).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    // a zombie has an empty cmdline: it is gone for our purposes
    let Some(argv0) = args.first().map(base) else {
        return false;
    };
    argv0 == program || (matches!(argv0.as_str(), "setsid" | "nsenter") && args.iter().any(|a| base(a) == program))
}

/// The pid of a component's running process, if its pid file names one.
pub fn running_pid(pid_file: &Path, component: Component) -> Option<i32> {
    read_pid(pid_file).filter(|pid| is_program(*pid, component.program()))
}

fn signal(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, sig);
    }
}

fn gone(pid: i32) -> bool {
    Pid::from_raw(pid).is_none_or(|p| test_kill_process(p).is_err()) || zombie(pid)
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// SIGTERM, then SIGKILL after `grace`; waits until the process is gone.
pub fn stop_pid(pid: i32, grace: Duration) {
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + grace;
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !gone(pid) {
        signal(pid, Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops the component named by `pid_file` (if it runs) and removes the pid file.
pub fn stop_component(pid_file: &Path, component: Component, grace: Duration) {
    if let Some(pid) = running_pid(pid_file, component) {
        stop_pid(pid, grace);
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Every v1 hierarchy plus the unified mount: the directories a node's cgroup subtree has.
pub fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path().join(cgroup))
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    // /sys/fs/cgroup itself may be a cgroup2 mount (unified host)
    let direct = Path::new("/sys/fs/cgroup").join(cgroup);
    if direct.join("cgroup.procs").exists() {
        dirs.push(direct);
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}

/// Pids in a cgroup subtree (all hierarchies).
pub fn cgroup_pids(cgroup: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for top in cgroup_dirs(cgroup) {
        let mut dirs = Vec::new();
        walk_dirs(&top, &mut dirs);
        for d in dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs everything in the subtree (containers outlive their shim), then removes the
/// directories deepest first in every hierarchy.
pub fn remove_cgroup(cgroup: &str) {
    for _ in 0..50 {
        let pids = cgroup_pids(cgroup);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            signal(pid, Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for top in cgroup_dirs(cgroup) {
        let mut dirs = Vec::new();
        walk_dirs(&top, &mut dirs);
        for d in dirs.iter().rev() {
            for _ in 0..20 {
                // a dying process keeps its cgroup busy for a moment
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
    }
}

/// Processes whose command line contains every one of `needles` (e.g. the shims of one
/// containerd, which take `-address <its socket>`).
pub fn pids_with_args(needles: &[&str]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<String> = c.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                needles.iter().all(|n| args.iter().any(|a| a == n || a.contains(n)))
            })
        })
        .collect()
}

/// Mount points at or below `dir` in rkube's own mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mount)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort();
    out.dedup();
    out.reverse();
    out
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|p| p == path)
}

/// Unmounts everything at or below `dir` (lazily: a leftover user must not block delete).
pub fn unmount_all(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = run(&["umount", "-l", &m.display().to_string()]);
    }
}

/// What a node's containerd leaves outside its own directory after a hard kill: CNI result
/// files of its sandboxes and its shims' sockets.
pub fn node_leftovers(node_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut cni = Vec::new();
    let sandboxes = node_dir.join("root/io.containerd.grpc.v1.cri/sandboxes");
    let ids: Vec<String> = std::fs::read_dir(&sandboxes)
        .map(|rd| rd.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    if !ids.is_empty() {
        if let Ok(rd) = std::fs::read_dir("/var/lib/cni/results") {
            for e in rd.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if ids.iter().any(|id| name.contains(&format!("-{id}-"))) {
                    cni.push(e.path());
                }
            }
        }
    }
    let mut sockets = Vec::new();
    let tasks = node_dir.join("state/io.containerd.runtime.v2.task");
    if let Ok(namespaces) = std::fs::read_dir(&tasks) {
        for ns in namespaces.filter_map(Result::ok) {
            if let Ok(containers) = std::fs::read_dir(ns.path()) {
                for c in containers.filter_map(Result::ok) {
                    if let Ok(addr) = std::fs::read_to_string(c.path().join("address")) {
                        let addr = addr.trim();
                        let path = addr.strip_prefix("unix://").unwrap_or(addr);
                        if path.starts_with("/run/containerd/s/") {
                            sockets.push(PathBuf::from(path));
                        }
                    }
                }
            }
        }
    }
    (cni, sockets)
}

/// Removes a directory if it exists and is empty (shared ones like /run/containerd/s).
pub fn rmdir_if_empty(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records commands; fails the ones listed.
    struct Fake {
        seen: RefCell<Vec<String>>,
        fail: Vec<&'static str>,
    }

    impl Runner for Fake {
        fn run(&self, argv: &[String]) -> Result<String, SysError> {
            let line = argv.join(" ");
            self.seen.borrow_mut().push(line.clone());
            if self.fail.iter().any(|f| line.starts_with(f)) {
                Err(SysError::Command { cmd: line, detail: "exit status: 1".into() })
            } else {
                Ok(String::new())
            }
        }
    }

    #[test]
    fn apply_stops_at_the_first_required_failure_and_skips_ignored_ones() {
        let st = crate::state::tests::sample("dev", 2);
        let fake = Fake { seen: RefCell::new(Vec::new()), fail: vec!["ip netns del", "ip addr add"] };
        // teardown commands all tolerate failure
        apply(&fake, &crate::render::node_net_down(&st, &st.nodes[0])).unwrap();
        assert_eq!(fake.seen.borrow().len(), 4);
        fake.seen.borrow_mut().clear();
        let err = apply(&fake, &crate::render::bridge_up(&st)).unwrap_err();
        assert!(err.to_string().contains("ip addr add 198.19.16.1/24 dev rkube1"), "{err}");
        assert_eq!(*fake.seen.borrow(), ["ip link add rkube1 type bridge", "ip addr add 198.19.16.1/24 dev rkube1"]);
    }

    #[test]
    fn pid_checks_match_the_program() {
        let me = std::process::id() as i32;
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert!(is_program(me, name));
        assert!(!is_program(me, "containerd"));
        assert!(!is_program(999_999_999, name));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pid");
        std::fs::write(&f, format!("{me}\n")).unwrap();
        assert_eq!(read_pid(&f), Some(me));
        assert_eq!(running_pid(&f, Component::Etcd), None);
    }

    #[test]
    fn launchers_count_as_their_program() {
        assert!(cmdline_runs(b"/usr/bin/containerd\0--config\0x\0", "containerd"));
        assert!(cmdline_runs(b"setsid\0nsenter\0--net=/run/netns/a\0--\0containerd\0--config\0x\0", "containerd"));
        assert!(cmdline_runs(b"nsenter\0--\0/t/rkube-kubelet\0", "rkube-kubelet"));
        assert!(!cmdline_runs(b"setsid\0etcd\0", "containerd"));
        assert!(!cmdline_runs(b"bash\0containerd\0", "containerd"));
        assert!(!cmdline_runs(b"", "containerd"));
    }

    #[test]
    fn stop_pid_terminates_a_child() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let reaper = std::thread::spawn(move || child.wait());
        stop_pid(pid, Duration::from_secs(2));
        assert!(gone(pid));
        reaper.join().unwrap().unwrap();
    }
}
