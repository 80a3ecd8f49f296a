//! The apiserver's memory, read from `/proc/<pid>/status`.

use anyhow::Context;

/// Resident set size now and its high-water mark, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub current: u64,
    pub peak: u64,
}

pub async fn read(pid: u32) -> anyhow::Result<Rss> {
    let path = format!("/proc/{pid}/status");
    let text = tokio::fs::read_to_string(&path).await.with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
        let kib: u64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok(Rss { current: field("VmRSS:")?, peak: field("VmHWM:")? })
}
