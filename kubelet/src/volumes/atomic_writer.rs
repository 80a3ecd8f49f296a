//! upstream's AtomicWriter: a volume's files are written into a new timestamped directory
//! `..<timestamp>`, then the `..data` symlink is switched to it with one rename, so a reader
//! sees either the old or the new set, never a mix. Each top-level name is a symlink into
//! `..data`. Nothing is written when the payload is what is already there.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

fn valid_path(p: &str) -> bool {
    !p.is_empty() && !p.starts_with("..") && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
}

/// What `dir` currently holds under `..data`, if anything.
fn current(dir: &Path) -> Option<BTreeMap<String, FileProjection>> {
    let data = dir.join(DATA_DIR);
    let target = std::fs::read_link(&data).ok()?;
    let base = dir.join(target);
    let mut out = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()? {
            let entry = entry.ok()?;
            let path = entry.path();
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(&base).ok()?.to_string_lossy().into_owned();
                let data = std::fs::read(&path).ok()?;
                out.insert(rel, FileProjection { data, mode: meta.permissions().mode() & 0o7777 });
            }
        }
    }
    Some(out)
}

fn timestamp_dir_name() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // upstream: ..2006_01_02_15_04_05.<random>; the nanoseconds make it unique here.
    let ts = k8s_openapi::jiff::Timestamp::from_nanosecond(now.as_nanos() as i128).unwrap_or_default();
    format!("..{}.{:09}", ts.strftime("%Y_%m_%d_%H_%M_%S"), now.subsec_nanos())
}

/// Writes `payload` into `dir` atomically. Returns whether anything changed. Blocking.
pub fn write(dir: &Path, payload: &BTreeMap<String, FileProjection>) -> io::Result<bool> {
    if let Some(bad) = payload.keys().find(|p| !valid_path(p)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid path {bad:?} in volume payload")));
    }
    std::fs::create_dir_all(dir)?;
    let old = current(dir);
    if old.as_ref() == Some(payload) {
        return Ok(false);
    }
    let old_target = std::fs::read_link(dir.join(DATA_DIR)).ok();
    let ts = timestamp_dir_name();
    let ts_dir = dir.join(&ts);
    std::fs::create_dir(&ts_dir)?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in payload {
        let path = ts_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = dir.join(DATA_DIR_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_DIR))?;

    // The user-visible names: one symlink per top-level entry.
    let wanted: BTreeSet<String> = payload.keys().filter_map(|p| p.split('/').next().map(str::to_string)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    if let Some(old) = old_target.filter(|o| o.as_os_str() != ts.as_str()) {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> BTreeMap<String, FileProjection> {
        items
            .iter()
            .map(|(p, d, m)| (p.to_string(), FileProjection { data: d.as_bytes().to_vec(), mode: *m }))
            .collect()
    }

    #[test]
    fn writes_the_data_symlink_layout_and_updates_atomically() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vol");
        assert!(write(&dir, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)])).expect("write"));
        let data = std::fs::read_link(dir.join(DATA_DIR)).expect("..data is a symlink");
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(std::fs::read_link(dir.join("a")).expect("link"), Path::new("..data/a"));
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).expect("b"), "2");
        let mode = std::fs::metadata(dir.join("sub/b")).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);

        assert!(!write(&dir, &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o400)])).expect("same"), "unchanged");

        assert!(write(&dir, &payload(&[("a", "changed", 0o644), ("c", "3", 0o644)])).expect("update"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "changed");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err(), "a removed key's link goes");
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..20"))
            .collect();
        assert_eq!(entries.len(), 1, "the old timestamped dir is removed: {entries:?}");
    }

    #[test]
    fn rejects_paths_that_escape() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for bad in ["../x", "/etc/passwd", "..data", "a/../../b"] {
            assert!(write(tmp.path(), &payload(&[(bad, "x", 0o644)])).is_err(), "{bad}");
        }
    }
}
