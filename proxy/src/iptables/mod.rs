//! The iptables mode: pure rendering (`render`) and the narrow `Iptables` trait that applies
//! it, with the real implementation (iptables-restore/-save/iptables as child processes) and
//! a recording fake for the sync-loop tests.
//!
//! Backend choice: kube-proxy's image ships a wrapper (kubernetes-sigs/iptables-wrappers) that
//! picks iptables-legacy or iptables-nft the way `choose_backend` does: a KUBE-IPTABLES-HINT or
//! KUBE-KUBELET-CANARY chain (written by a kubelet) in one backend decides; otherwise the
//! backend that already holds more rules wins, and nf_tables is the default. Mixing the two on
//! one node splits the rules into two rule sets the kernel evaluates independently, so the
//! proxy must use whichever the node's other components use.

pub mod render;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed{}: {stderr}", line.map(|l| format!(" at input line {l}")).unwrap_or_default())]
    Failed { command: String, stderr: String, line: Option<usize> },
}

impl IptablesError {
    /// The 1-based line of the restore input iptables-restore rejected, if it said.
    pub fn line(&self) -> Option<usize> {
        match self {
            IptablesError::Failed { line, .. } => *line,
            IptablesError::Spawn { .. } => None,
        }
    }
}

/// Everything the proxier does to the kernel's packet filter.
#[async_trait]
pub trait Iptables: Send + Sync + 'static {
    /// Applies iptables-restore input (one or more `*table ... COMMIT` sections) atomically
    /// per table. With `noflush`, chains not declared in the input keep their rules.
    async fn restore(&self, input: &str, noflush: bool) -> Result<(), IptablesError>;
    /// `iptables-save -t table` output.
    async fn save(&self, table: &str) -> Result<String, IptablesError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Legacy,
    Nft,
    /// Whatever plain `iptables` is on this system (no -legacy/-nft binaries installed).
    Default,
}

impl Backend {
    fn tool(self, base: &str) -> String {
        match self {
            Backend::Legacy => format!("{base}-legacy"),
            Backend::Nft => format!("{base}-nft"),
            Backend::Default => base.to_string(),
        }
    }

    /// `iptables-restore` → `iptables-legacy-restore`, as Debian names them.
    fn tool_with_suffix(self, suffix: &str) -> String {
        format!("{}{suffix}", self.tool("iptables"))
    }
}

const HINT_CHAINS: [&str; 2] = [":KUBE-IPTABLES-HINT ", ":KUBE-KUBELET-CANARY "];

/// Picks the backend from the `iptables-legacy-save` and `iptables-nft-save` output (`None`
/// when that tool is missing or failed). See the module docs.
pub fn choose_backend(legacy_save: Option<&str>, nft_save: Option<&str>) -> Backend {
    let hinted = |s: Option<&str>| s.is_some_and(|s| s.lines().any(|l| HINT_CHAINS.iter().any(|h| l.starts_with(h))));
    let rules = |s: Option<&str>| s.map(|s| s.lines().filter(|l| l.starts_with('-')).count());
    match (legacy_save, nft_save) {
        (None, None) => Backend::Default,
        (Some(_), None) => Backend::Legacy,
        (None, Some(_)) => Backend::Nft,
        _ if hinted(nft_save) => Backend::Nft,
        _ if hinted(legacy_save) => Backend::Legacy,
        _ if rules(legacy_save) > rules(nft_save) => Backend::Legacy,
        _ => Backend::Nft,
    }
}

/// Finds the input line number in iptables-restore's complaint: legacy says
/// `iptables-restore: line 5 failed`, nft says `Error occurred at line: 5`.
pub fn failed_line(stderr: &str) -> Option<usize> {
    let mut rest = stderr;
    while let Some(i) = rest.find("line") {
        let after = rest[i + 4..].trim_start_matches([':', ' ']);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
        rest = &rest[i + 4..];
    }
    None
}

/// The input around `line` (1-based), numbered, for the log (upstream logs 3 lines either side).
pub fn lines_around(input: &str, line: usize, context: usize) -> String {
    let first = line.saturating_sub(context).max(1);
    input
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(n, _)| *n >= first && *n <= line + context)
        .map(|(n, l)| format!("{n}{} {l}", if n == line { ">" } else { ":" }))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The real thing: child processes, optionally run through a prefix such as
/// `ip netns exec NAME` (tests and benchmarks use a private network namespace).
#[derive(Debug, Clone)]
pub struct Real {
    backend: Backend,
    prefix: Vec<String>,
}

impl Real {
    pub fn new(backend: Backend) -> Self {
        Real { backend, prefix: Vec::new() }
    }

    /// Runs every command as `prefix... command args...`.
    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Detects the node's backend as described in the module docs.
    pub async fn detect(prefix: Vec<String>) -> Self {
        let probe = Real { backend: Backend::Default, prefix: prefix.clone() };
        let legacy = probe.output(&Backend::Legacy.tool_with_suffix("-save"), &[], None).await.ok();
        let nft = probe.output(&Backend::Nft.tool_with_suffix("-save"), &[], None).await.ok();
        Real { backend: choose_backend(legacy.as_deref(), nft.as_deref()), prefix }
    }

    fn command(&self, tool: &str, args: &[&str]) -> (Command, String) {
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.push(tool);
        argv.extend_from_slice(args);
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).kill_on_drop(true);
        (cmd, argv.join(" "))
    }

    async fn output(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
        let (mut cmd, command) = self.command(tool, args);
        cmd.stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let spawn_err = |source| IptablesError::Spawn { command: command.clone(), source };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.map_err(spawn_err)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(IptablesError::Failed { line: failed_line(&stderr), command, stderr })
    }
}

#[async_trait]
impl Iptables for Real {
    async fn restore(&self, input: &str, noflush: bool) -> Result<(), IptablesError> {
        let mut args = vec!["-w", "5"];
        if noflush {
            args.push("--noflush");
        }
        self.output(&self.backend.tool_with_suffix("-restore"), &args, Some(input)).await.map(|_| ())
    }

    async fn save(&self, table: &str) -> Result<String, IptablesError> {
        self.output(&self.backend.tool_with_suffix("-save"), &["-t", table], None).await
    }
}

/// Removes every rule and chain the proxy made (`--cleanup`): two saves and one restore.
pub async fn cleanup<I: Iptables>(ipt: &I) -> Result<(), IptablesError> {
    let filter = ipt.save("filter").await?;
    let nat = ipt.save("nat").await?;
    ipt.restore(&render::cleanup(&filter, &nat), true).await
}

/// One call the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Restore { input: String, noflush: bool },
    Save { table: String },
}

/// A recording fake. `fail_next_restores(n)` makes the next n restores fail at line 2.
#[derive(Debug, Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<Call>,
    fail_restores: usize,
    saved_nat: String,
}

impl Fake {
    pub fn new() -> Self {
        Fake::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn restores(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Restore { input, .. } => Some(input),
                _ => None,
            })
            .collect()
    }

    pub fn fail_next_restores(&self, n: usize) {
        self.state().fail_restores = n;
    }

    /// What `save("nat")` returns.
    pub fn set_saved_nat(&self, text: &str) {
        self.state().saved_nat = text.to_string();
    }
}

#[async_trait]
impl Iptables for Fake {
    async fn restore(&self, input: &str, noflush: bool) -> Result<(), IptablesError> {
        let mut s = self.state();
        s.calls.push(Call::Restore { input: input.to_string(), noflush });
        if s.fail_restores > 0 {
            s.fail_restores -= 1;
            return Err(IptablesError::Failed {
                command: "iptables-restore".into(),
                stderr: "iptables-restore: line 2 failed".into(),
                line: Some(2),
            });
        }
        Ok(())
    }

    async fn save(&self, table: &str) -> Result<String, IptablesError> {
        let mut s = self.state();
        s.calls.push(Call::Save { table: table.to_string() });
        Ok(if table == "nat" { s.saved_nat.clone() } else { String::new() })
    }
}

/// Chain names declared in `iptables-save` output.
pub fn chains_in_save(save: &str) -> std::collections::BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_hint_chains_then_rule_counts() {
        let nft_hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        let legacy_rules = "*nat\n-A POSTROUTING -j MASQUERADE\n-A OUTPUT -j X\nCOMMIT\n";
        assert_eq!(choose_backend(Some(legacy_rules), Some(nft_hint)), Backend::Nft);
        assert_eq!(choose_backend(Some(nft_hint), Some("")), Backend::Legacy);
        assert_eq!(choose_backend(Some(legacy_rules), Some("*nat\n-A OUTPUT -j Y\n")), Backend::Legacy);
        assert_eq!(choose_backend(Some(""), Some("")), Backend::Nft);
        assert_eq!(choose_backend(None, Some("")), Backend::Nft);
        assert_eq!(choose_backend(None, None), Backend::Default);
    }

    #[test]
    fn failed_line_reads_both_backends_messages() {
        assert_eq!(failed_line("iptables-restore: line 5 failed"), Some(5));
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\nError occurred at line: 12\nTry `iptables-restore -h'"),
            Some(12)
        );
        assert_eq!(failed_line("iptables-restore: unable to initialize table 'nat'"), None);
    }

    #[test]
    fn lines_around_marks_the_offending_line() {
        let input = "a\nb\nc\nd\ne\n";
        assert_eq!(lines_around(input, 2, 1), "1: a\n2> b\n3: c");
        assert_eq!(lines_around(input, 5, 3), "2: b\n3: c\n4: d\n5> e");
    }

    #[test]
    fn chains_in_save_lists_declared_chains() {
        let save =
            "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n";
        assert_eq!(chains_in_save(save), ["KUBE-SVC-X".to_string(), "PREROUTING".to_string()].into());
    }

    #[test]
    fn jump_rule_args_put_matches_before_comment_and_target() {
        let j = render::JUMP_RULES
            .iter()
            .find(|j| j.table == "filter" && j.src_chain == "OUTPUT")
            .expect("filter OUTPUT jump");
        assert_eq!(
            j.args(),
            [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
    }
}
