//! What the node is, read from the machine (`/proc`, `/etc`, the root dir's filesystem) and
//! overridden by flags: the [`NodeFacts`] the Node is registered with. Parsing is split from
//! reading so the parsers are unit-tested on fixed text.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use crate::nodestatus::{NodeFacts, Taint};
use crate::Options;

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &str) -> Result<String, MachineError> {
    std::fs::read_to_string(path).map_err(|source| MachineError::Read { path: path.to_string(), source })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `PRETTY_NAME` of `/etc/os-release`.
pub fn parse_os_release(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim().trim_matches('"').to_string())
}

/// The local IPv4 addresses in `/proc/net/fib_trie` (a `|-- a.b.c.d` line followed by a
/// `/32 host LOCAL` line), loopback left out, in order of appearance.
pub fn parse_fib_trie_local(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            last = Some(ip);
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                if !ip.is_loopback() && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// `--node-labels`: `key=value` items.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, MachineError> {
    let mut out = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| MachineError::Invalid(format!("--node-labels: {item:?} is not key=value")))?;
        if k.is_empty() {
            return Err(MachineError::Invalid(format!("--node-labels: {item:?} has an empty key")));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `--register-with-taints`: `key=value:Effect` or `key:Effect` items.
pub fn parse_taints(items: &[String]) -> Result<Vec<Taint>, MachineError> {
    let mut out = Vec::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let bad = || MachineError::Invalid(format!("--register-with-taints: {item:?} is not key[=value]:Effect"));
        let (kv, effect) = item.rsplit_once(':').ok_or_else(bad)?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(MachineError::Invalid(format!(
                "--register-with-taints: invalid taint effect {effect:?}, must be one of NoSchedule, PreferNoSchedule, NoExecute"
            )));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(bad());
        }
        out.push(Taint { key: key.to_string(), value: value.to_string(), effect: effect.to_string() });
    }
    Ok(out)
}

/// Size in bytes of the filesystem holding `path` (the nearest existing ancestor).
fn filesystem_size(path: &Path) -> u64 {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent,
            None => return 0,
        }
    }
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return 0 };
    #[allow(unsafe_code)]
    // SAFETY: statvfs only writes into the zeroed struct we own, and reads the NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        #[allow(clippy::useless_conversion)] // the field types differ between targets
        u64::from(st.f_blocks).saturating_mul(u64::from(st.f_frsize))
    }
}

/// The Node's facts: the machine's, then the flags'.
pub fn node_facts(opts: &Options) -> Result<NodeFacts, MachineError> {
    let hostname = read("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let name = opts.hostname_override.clone().unwrap_or(hostname).trim().to_lowercase();
    if name.is_empty() {
        return Err(MachineError::Invalid("no node name: the hostname is empty and --hostname-override unset".into()));
    }
    let internal_ip = match opts.node_ip {
        Some(ip) => ip,
        None => parse_fib_trie_local(&read("/proc/net/fib_trie")?)
            .into_iter()
            .next()
            .ok_or_else(|| MachineError::Invalid("no non-loopback IPv4 address found; set --node-ip".into()))?,
    };
    let memory_bytes = parse_mem_total(&read("/proc/meminfo")?)
        .ok_or_else(|| MachineError::Invalid("/proc/meminfo has no MemTotal".into()))?;
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    Ok(NodeFacts {
        name,
        internal_ip: internal_ip.to_string(),
        kubelet_port: opts.port,
        pod_cidr: opts.pod_cidr.clone(),
        labels: parse_labels(&opts.node_labels)?,
        taints: parse_taints(&opts.register_with_taints)?,
        cpu_millis: cpus * 1000,
        memory_bytes,
        ephemeral_storage_bytes: filesystem_size(&opts.root_dir),
        max_pods: opts.max_pods,
        kernel_version: read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
        os_image: read("/etc/os-release").ok().and_then(|t| parse_os_release(&t)).unwrap_or_else(|| "Linux".into()),
        runtime_version: String::new(),
        boot_id: read("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
        machine_id: read("/etc/machine-id").map(|s| s.trim().to_string()).unwrap_or_default(),
        images: Vec::new(),
        pressure: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release() {
        assert_eq!(parse_mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"), Some(16384 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(parse_os_release(os).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }

    #[test]
    fn fib_trie_gives_local_addresses_without_loopback() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.0\n        /8 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     +-- 198.19.0.0/30 2 0 2\n        |-- 198.19.0.0\n           /30 link UNICAST\n        |-- 198.19.0.2\n           /32 host LOCAL\nLocal:\n     |-- 198.19.0.2\n           /32 host LOCAL\n";
        assert_eq!(parse_fib_trie_local(trie), vec!["198.19.0.2".parse::<IpAddr>().expect("ip")]);
    }

    #[test]
    fn labels_and_taints_parse_like_upstream_flags() {
        let l = parse_labels(&["a=b".into(), "node-role.kubernetes.io/worker=".into()]).expect("labels");
        assert_eq!(l.get("a").map(String::as_str), Some("b"));
        assert_eq!(l.get("node-role.kubernetes.io/worker").map(String::as_str), Some(""));
        assert!(parse_labels(&["novalue".into()]).is_err());
        let t = parse_taints(&["dedicated=gpu:NoSchedule".into(), "spot:PreferNoSchedule".into()]).expect("taints");
        assert_eq!(t[0], Taint { key: "dedicated".into(), value: "gpu".into(), effect: "NoSchedule".into() });
        assert_eq!(t[1], Taint { key: "spot".into(), value: String::new(), effect: "PreferNoSchedule".into() });
        assert!(parse_taints(&["k=v:Sometimes".into()]).is_err());
        assert!(parse_taints(&["k=v".into()]).is_err());
    }
}
