//! The one OS side effect of volumes that is not plain file I/O: tmpfs mounts (emptyDir with
//! `medium: Memory`, secret and projected volumes). Behind [`Mounter`] so the volume logic is
//! unit-testable with [`FakeMounter`].
//!
//! [`SystemMounter`] runs `mount`/`umount` (the crate denies `unsafe`, so no direct mount(2)).
//! The kubelet runs in the node's mount namespace together with containerd (node runtime notes
//! §2, mode b), so a tmpfs mounted here is what runc bind-mounts into the container.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

#[async_trait]
pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs on `target` (an existing directory), limited to `size` bytes if given.
    async fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), MountError>;
    /// Unmounts `target`.
    async fn unmount(&self, target: &Path) -> Result<(), MountError>;
    /// The mount points at or below `dir`.
    async fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
}

/// `mount`/`umount` in a blocking thread; mount points from `/proc/self/mountinfo`.
#[derive(Debug, Default)]
pub struct SystemMounter;

async fn run(program: &'static str, args: Vec<String>) -> Result<(), MountError> {
    let command = format!("{program} {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(program).args(&args).output())
        .await
        .map_err(|e| MountError::Spawn { command: command.clone(), source: std::io::Error::other(e) })?
        .map_err(|source| MountError::Spawn { command: command.clone(), source })?;
    if out.status.success() {
        Ok(())
    } else {
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if output.is_empty() {
            output = out.status.to_string();
        }
        Err(MountError::Command { command, output })
    }
}

/// Mount points listed in mountinfo text (field 5), with `\040`-style escapes decoded.
pub fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            let mut out = String::new();
            let mut chars = p.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    let code: String = chars.by_ref().take(3).collect();
                    match u8::from_str_radix(&code, 8) {
                        Ok(b) => out.push(char::from(b)),
                        Err(_) => {
                            out.push('\\');
                            out.push_str(&code);
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            PathBuf::from(out)
        })
        .collect()
}

#[async_trait]
impl Mounter for SystemMounter {
    async fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), MountError> {
        let mut args = vec!["-t".to_string(), "tmpfs".into()];
        if let Some(size) = size {
            args.extend(["-o".to_string(), format!("size={size}")]);
        }
        args.extend(["tmpfs".to_string(), target.to_string_lossy().into_owned()]);
        run("mount", args).await
    }

    async fn unmount(&self, target: &Path) -> Result<(), MountError> {
        run("umount", vec![target.to_string_lossy().into_owned()]).await
    }

    async fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let text = tokio::fs::read_to_string("/proc/self/mountinfo").await.unwrap_or_default();
        parse_mountinfo(&text).into_iter().filter(|m| m.starts_with(dir)).collect()
    }
}

/// A recording [`Mounter`]: remembers what is "mounted" without touching the system.
#[derive(Debug, Default)]
pub struct FakeMounter {
    state: Mutex<(BTreeSet<PathBuf>, Vec<String>)>,
}

impl FakeMounter {
    /// What was done, e.g. `mount tmpfs /x size=1024`, `umount /x`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0.iter().cloned().collect()
    }
}

#[async_trait]
impl Mounter for FakeMounter {
    async fn mount_tmpfs(&self, target: &Path, size: Option<u64>) -> Result<(), MountError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.insert(target.to_path_buf());
        let size = size.map(|s| format!(" size={s}")).unwrap_or_default();
        st.1.push(format!("mount tmpfs {}{size}", target.display()));
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<(), MountError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.remove(target);
        st.1.push(format!("umount {}", target.display()));
        Ok(())
    }

    async fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0.iter().filter(|m| m.starts_with(dir)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_decoded() {
        let text = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/my\\040vol rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse_mountinfo(text),
            [PathBuf::from("/"), PathBuf::from("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/my vol")]
        );
    }
}
