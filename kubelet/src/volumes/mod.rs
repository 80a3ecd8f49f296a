//! Pod volumes: upstream's volume manager and the in-tree plugins the kubelet needs here.
//! Each pod's volumes live in `<root-dir>/pods/<uid>/volumes/<plugin>/<name>` with upstream's
//! plugin directory names (`kubernetes.io~empty-dir`, `~configmap`, `~secret`,
//! `~downward-api`, `~projected`).
//!
//! - emptyDir: a directory; with `medium: Memory` a tmpfs (size = `sizeLimit`).
//! - hostPath: the host path itself, checked (and created) by its `type` as upstream.
//! - configMap, secret, downwardAPI, projected: files written by the [`atomic_writer`]
//!   (`..data` → timestamped dir), re-written when the objects change; secret and projected
//!   volumes sit on a tmpfs as upstream's do.
//! - persistentVolumeClaim: the bound PV's `hostPath` or `local` path.
//!
//! Deciding (payloads, container mounts) is pure; the file writes run in blocking threads and
//! the tmpfs mounts go through [`mount::Mounter`].
//!
//! Projected `serviceAccountToken` sources come from the TokenRequest API (bound to the pod;
//! fetched by [`crate::objects::fetch`], cached and renewed there).
//!
//! Not done: other volume types (CSI, NFS, ...); subPathExpr.

pub mod atomic_writer;
pub mod mount;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, ResourceFieldSelector, Secret, Volume,
};

use crate::envvars::{self, EnvContext};
use crate::objects::PodObjects;
use crate::qos;
use crate::runtime::api;
use atomic_writer::FileProjection;
use mount::Mounter;

/// upstream's default file mode of configMap, secret, downwardAPI and projected volumes.
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The message upstream puts in the FailedMount event.
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp { volume: String, message: String },
    #[error("unmounting {path}: {message}")]
    TearDown { path: String, message: String },
}

fn setup_err(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError::SetUp { volume: volume.into(), message: message.into() }
}

/// A volume ready to be mounted into containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub host_path: PathBuf,
    /// The plugin mounts it read-only whatever the volumeMount says (configMap, secret, ...).
    pub read_only: bool,
}

/// upstream's plugin directory name of a volume kind.
pub fn plugin_dir(v: &Volume) -> Option<&'static str> {
    if v.empty_dir.is_some() {
        Some("kubernetes.io~empty-dir")
    } else if v.config_map.is_some() {
        Some("kubernetes.io~configmap")
    } else if v.secret.is_some() {
        Some("kubernetes.io~secret")
    } else if v.downward_api.is_some() {
        Some("kubernetes.io~downward-api")
    } else if v.projected.is_some() {
        Some("kubernetes.io~projected")
    } else {
        None
    }
}

fn mode(m: Option<i32>, default: i32) -> u32 {
    (m.unwrap_or(default) as u32) & 0o7777
}

/// Files from a key/value source (ConfigMap or Secret data) and optional `items`.
fn key_payload(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    missing_key: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut out = BTreeMap::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k.clone(), FileProjection { data: v.clone(), mode: mode(None, default_mode) });
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        out.insert(
                            item.path.clone(),
                            FileProjection { data: v.clone(), mode: mode(item.mode, default_mode) },
                        );
                    }
                    None if optional => {}
                    None => return Err(missing_key(&item.key)),
                }
            }
        }
    }
    Ok(out)
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    data.extend(cm.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())));
    data
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    data.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    data
}

/// upstream's configMap volume payload.
pub fn config_map_payload(
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    objects: &PodObjects,
) -> Result<BTreeMap<String, FileProjection>, String> {
    match objects.config_map(name) {
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("configmap {name:?} not found")),
        Some(cm) => key_payload(&config_map_data(cm), items, default_mode.unwrap_or(DEFAULT_MODE), optional, |k| {
            format!("configmap references non-existent config key: {k}")
        }),
    }
}

/// upstream's secret volume payload.
pub fn secret_payload(
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    objects: &PodObjects,
) -> Result<BTreeMap<String, FileProjection>, String> {
    match objects.secret(name) {
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("secret {name:?} not found")),
        Some(s) => key_payload(&secret_data(s), items, default_mode.unwrap_or(DEFAULT_MODE), optional, |k| {
            format!("references non-existent secret key: {k}")
        }),
    }
}

/// upstream's FormatMap: `key="value"` lines, sorted by key.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect::<String>().trim_end_matches('\n').to_string()
}

/// upstream's downwardAPI payload.
pub fn downward_api_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    ctx: &EnvContext<'_>,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut out = BTreeMap::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                _ => envvars::field_value(pod, f, ctx).map_err(|e| e.to_string())?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let container = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == name))
                .cloned()
                .unwrap_or_else(|| Container { name, ..Default::default() });
            let sel = ResourceFieldSelector { container_name: None, ..r.clone() };
            envvars::resource_value(pod, &container, &sel, ctx.allocatable).map_err(|e| e.to_string())?
        } else {
            continue;
        };
        out.insert(
            item.path.clone(),
            FileProjection { data: value.into_bytes(), mode: mode(item.mode, default_mode.unwrap_or(DEFAULT_MODE)) },
        );
    }
    Ok(out)
}

/// upstream's projected payload: every source into one directory.
pub fn projected_payload(
    pod: &Pod,
    v: &Volume,
    objects: &PodObjects,
    ctx: &EnvContext<'_>,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let Some(p) = v.projected.as_ref() else { return Ok(BTreeMap::new()) };
    let default_mode = p.default_mode.or(Some(DEFAULT_MODE));
    let mut out = BTreeMap::new();
    for src in p.sources.iter().flatten() {
        if let Some(c) = &src.config_map {
            let optional = c.optional == Some(true);
            out.extend(config_map_payload(&c.name, c.items.as_ref(), default_mode, optional, objects)?);
        }
        if let Some(s) = &src.secret {
            let optional = s.optional == Some(true);
            out.extend(secret_payload(&s.name, s.items.as_ref(), default_mode, optional, objects)?);
        }
        if let Some(d) = &src.downward_api {
            out.extend(downward_api_payload(pod, d.items.as_deref().unwrap_or_default(), default_mode, ctx)?);
        }
        if let Some(t) = &src.service_account_token {
            let token = match objects.tokens.get(&crate::objects::token_key(pod, t)) {
                Some(Ok(token)) => token.clone(),
                Some(Err(e)) => return Err(format!("failed to fetch token: {e}")),
                None => return Err("failed to fetch token: not requested".into()),
            };
            let mode = mode(default_mode, DEFAULT_MODE);
            out.insert(t.path.clone(), FileProjection { data: token.into_bytes(), mode });
        }
    }
    Ok(out)
}

/// upstream's hostPath type check; creates what the `...OrCreate` types ask for. Blocking.
pub fn check_host_path(path: &Path, type_: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let fail = |what: &str| Err(format!("hostPath type check failed: {} is not {what}", path.display()));
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" | "Directory" => {
            if meta.is_err() && type_ == "DirectoryOrCreate" {
                std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
                return Ok(());
            }
            if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" | "File" => {
            if meta.is_err() && type_ == "FileOrCreate" {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| e.to_string())?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
                return Ok(());
            }
            if meta.as_ref().is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" if meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => fail("a socket file"),
        "CharDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) => Ok(()),
        "CharDevice" => fail("a character device"),
        "BlockDevice" if meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) => Ok(()),
        "BlockDevice" => fail("a block device"),
        other => Err(format!("invalid hostPath type {other:?}")),
    }
}

/// The CRI mounts of container `c` (its volumeMounts, then the managed /etc/hosts unless it
/// mounts its own). Pure.
pub fn container_mounts(
    c: &Container,
    volumes: &HashMap<String, MountedVolume>,
    hosts_file: Option<&Path>,
) -> Result<Vec<api::Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&m.name)
            .ok_or_else(|| format!("cannot find volume {:?} to mount into container {:?}", m.name, c.name))?;
        let mut host_path = v.host_path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub).is_absolute() || Path::new(sub).components().any(|c| c.as_os_str() == "..") {
                return Err(format!("invalid subPath {sub:?}: must be a relative path without '..'"));
            }
            host_path = host_path.join(sub);
        }
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => api::MountPropagation::PropagationBidirectional,
            _ => api::MountPropagation::PropagationPrivate,
        };
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || v.read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    if let Some(hosts) = hosts_file {
        if !out.iter().any(|m| m.container_path == "/etc/hosts") {
            out.push(api::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// Sets pod volumes up and tears them down, under `<root_dir>/pods/<uid>`.
pub struct VolumeManager {
    pub root_dir: PathBuf,
    pub mounter: Arc<dyn Mounter>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

impl VolumeManager {
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(pod_uid)
    }

    /// Where the kubelet-managed hosts file of a pod goes.
    pub fn hosts_file(&self, pod_uid: &str) -> PathBuf {
        self.pod_dir(pod_uid).join("etc-hosts")
    }

    /// Writes the pod's hosts file (only when it changed).
    pub async fn write_hosts_file(&self, pod_uid: &str, content: String) -> Result<PathBuf, String> {
        let path = self.hosts_file(pod_uid);
        let p = path.clone();
        blocking(move || {
            if std::fs::read_to_string(&p).ok().as_deref() == Some(content.as_str()) {
                return Ok(());
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&p, content).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())
        })
        .await?;
        Ok(path)
    }

    async fn ensure_tmpfs(&self, dir: &Path, size: Option<u64>) -> Result<(), String> {
        let d = dir.to_path_buf();
        blocking(move || std::fs::create_dir_all(&d).map_err(|e| e.to_string())).await?;
        if !self.mounter.mounts_under(dir).await.iter().any(|m| m == dir) {
            self.mounter.mount_tmpfs(dir, size).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn write_payload(&self, dir: PathBuf, payload: BTreeMap<String, FileProjection>) -> Result<(), String> {
        blocking(move || atomic_writer::write(&dir, &payload).map(|_| ()).map_err(|e| e.to_string())).await
    }

    /// Sets every volume of `pod` up (idempotent; configMap/secret/... files are re-written
    /// when their objects changed). The first failure is returned as upstream's FailedMount
    /// message.
    pub async fn setup(
        &self,
        pod: &Pod,
        objects: &PodObjects,
        ctx: &EnvContext<'_>,
    ) -> Result<HashMap<String, MountedVolume>, VolumeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let base = self.pod_dir(&uid).join("volumes");
        let mut out = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let name = v.name.clone();
            let dir = plugin_dir(v).map(|p| base.join(p).join(&name));
            let err = |m: String| setup_err(&name, m);
            let mounted = if let (Some(e), Some(dir)) = (&v.empty_dir, &dir) {
                if e.medium.as_deref() == Some("Memory") {
                    let size = e.size_limit.as_ref().and_then(qos::value).and_then(|s| u64::try_from(s).ok());
                    self.ensure_tmpfs(dir, size.filter(|s| *s > 0)).await.map_err(err)?;
                } else {
                    let d = dir.clone();
                    blocking(move || {
                        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
                        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(err)?;
                }
                MountedVolume { host_path: dir.clone(), read_only: false }
            } else if let Some(h) = &v.host_path {
                let path = PathBuf::from(&h.path);
                let (p, t) = (path.clone(), h.type_.clone().unwrap_or_default());
                blocking(move || check_host_path(&p, &t)).await.map_err(err)?;
                MountedVolume { host_path: path, read_only: false }
            } else if let (Some(c), Some(dir)) = (&v.config_map, &dir) {
                let payload =
                    config_map_payload(&c.name, c.items.as_ref(), c.default_mode, c.optional == Some(true), objects)
                        .map_err(err)?;
                self.write_payload(dir.clone(), payload).await.map_err(err)?;
                MountedVolume { host_path: dir.clone(), read_only: true }
            } else if let (Some(s), Some(dir)) = (&v.secret, &dir) {
                let secret_name = s.secret_name.clone().unwrap_or_default();
                let payload =
                    secret_payload(&secret_name, s.items.as_ref(), s.default_mode, s.optional == Some(true), objects)
                        .map_err(err)?;
                // Secrets never touch the disk: the volume is a tmpfs first.
                self.ensure_tmpfs(dir, None).await.map_err(err)?;
                self.write_payload(dir.clone(), payload).await.map_err(err)?;
                MountedVolume { host_path: dir.clone(), read_only: true }
            } else if let (Some(d), Some(dir)) = (&v.downward_api, &dir) {
                let payload = downward_api_payload(pod, d.items.as_deref().unwrap_or_default(), d.default_mode, ctx)
                    .map_err(err)?;
                self.write_payload(dir.clone(), payload).await.map_err(err)?;
                MountedVolume { host_path: dir.clone(), read_only: true }
            } else if let (Some(_), Some(dir)) = (&v.projected, &dir) {
                let payload = projected_payload(pod, v, objects, ctx).map_err(err)?;
                self.ensure_tmpfs(dir, None).await.map_err(err)?;
                self.write_payload(dir.clone(), payload).await.map_err(err)?;
                MountedVolume { host_path: dir.clone(), read_only: true }
            } else if let Some(c) = &v.persistent_volume_claim {
                let claim = &c.claim_name;
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let (_, pv) = objects
                    .claims
                    .get(claim)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| err(format!("persistentvolumeclaim {claim:?} not found")))?;
                let pv = pv.ok_or_else(|| err(format!("PVC {ns}/{claim} is not bound")))?;
                let spec = pv.spec.unwrap_or_default();
                let path = spec
                    .host_path
                    .map(|h| h.path)
                    .or(spec.local.map(|l| l.path))
                    .ok_or_else(|| err("only hostPath and local persistent volumes are supported".into()))?;
                MountedVolume { host_path: PathBuf::from(path), read_only: c.read_only == Some(true) }
            } else {
                return Err(err("volume type not supported by this kubelet".into()));
            };
            out.insert(name, mounted);
        }
        Ok(out)
    }

    /// Creates the subPath directories a container's mounts need (upstream does too).
    pub async fn prepare_sub_paths(
        &self,
        c: &Container,
        volumes: &HashMap<String, MountedVolume>,
    ) -> Result<(), String> {
        for m in c.volume_mounts.iter().flatten() {
            let (Some(sub), Some(v)) = (m.sub_path.as_deref().filter(|s| !s.is_empty()), volumes.get(&m.name)) else {
                continue;
            };
            if v.read_only {
                continue;
            }
            let path = v.host_path.join(sub);
            blocking(move || {
                if std::fs::symlink_metadata(&path).is_err() {
                    std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Unmounts the pod's tmpfs volumes and removes its directory. Refuses to remove anything
    /// while a mount is left below it.
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let dir = self.pod_dir(pod_uid);
        if pod_uid.is_empty() {
            return Ok(());
        }
        let mut mounts = self.mounter.mounts_under(&dir).await;
        // Deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in &mounts {
            self.mounter
                .unmount(m)
                .await
                .map_err(|e| VolumeError::TearDown { path: m.display().to_string(), message: e.to_string() })?;
        }
        let left = self.mounter.mounts_under(&dir).await;
        if let Some(m) = left.first() {
            return Err(VolumeError::TearDown { path: m.display().to_string(), message: "still mounted".into() });
        }
        let d = dir.clone();
        blocking(move || match std::fs::remove_dir_all(&d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        })
        .await
        .map_err(|message| VolumeError::TearDown { path: dir.display().to_string(), message })
    }

    /// The pod uids that have a directory under `<root>/pods`.
    pub async fn pods_on_disk(&self) -> Vec<String> {
        let dir = self.root_dir.join("pods");
        blocking(move || {
            Ok(std::fs::read_dir(&dir)
                .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default())
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
