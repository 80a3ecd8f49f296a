//! A local-path provisioner for `rancher.io/local-path` (as Rancher's local-path-provisioner,
//! run in-process; controller "local-path-provisioner", off by default, the local cluster
//! switches it on). For a claim the binder handed to this provisioner (its
//! `volume.kubernetes.io/storage-provisioner` annotation) it creates a directory under
//! `--local-path-root` and a PersistentVolume `pvc-<claim uid>` with a `hostPath` there,
//! pre-bound to the claim; the binder then binds them. Per node (the default) the directory
//! sits in `<root>/<node>/` and the volume has required node affinity to that node; with
//! `--local-path-shared` every node sees one folder (the local cluster's nodes share the host's
//! filesystem), so there is no node affinity and a pod moved to another node keeps its data.
//! A Released volume with reclaim policy Delete has its directory and then the object deleted.
//!
//! `plan.rs` is pure (paths, the PV); the directories are made and removed through `Dirs`.

pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use super::events::{reference, Recorder, NORMAL, WARNING};
use super::informer::{key_of, Informer};
use super::persistentvolume::ann;
use super::workqueue::Queue;
use super::Context;
use plan::{Plan, PlanError};

pub const NAME: &str = "local-path-provisioner";
pub const PROVISIONER: &str = "rancher.io/local-path";
const WORKERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Path(#[from] PlanError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where volume directories are made and removed: the host's filesystem, or a recording fake.
/// Blocking; the controller calls it from `spawn_blocking`.
pub trait Dirs: Send + Sync + 'static {
    /// Creates `path` (and parents), writable by every user as the upstream provisioner does.
    fn create(&self, path: &Path) -> Result<(), Error>;
    /// Removes `path` and what is in it, only if it resolves (symlinks followed) to a
    /// directory strictly inside `root`.
    fn remove(&self, root: &Path, path: &Path) -> Result<(), Error>;
}

pub struct HostDirs;

impl Dirs for HostDirs {
    fn create(&self, path: &Path) -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let io = |op| move |source| Error::Io { op, path: path.to_path_buf(), source };
        std::fs::create_dir_all(path).map_err(io("creating"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).map_err(io("chmod"))
    }

    fn remove(&self, root: &Path, path: &Path) -> Result<(), Error> {
        let real = match std::fs::canonicalize(path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(Error::Io { op: "resolving", path: path.to_path_buf(), source }),
        };
        let real_root = std::fs::canonicalize(root).map_err(|source| Error::Io {
            op: "resolving",
            path: root.to_path_buf(),
            source,
        })?;
        plan::check_inside(&real_root, &real)?;
        // std's remove_dir_all does not follow symlinks inside the tree.
        std::fs::remove_dir_all(&real).map_err(|source| Error::Io { op: "removing", path: real, source })
    }
}

/// Runs a `Dirs` call off the async workers.
async fn blocking(f: impl FnOnce() -> Result<(), Error> + Send + 'static) -> Result<(), Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Io { op: "running", path: PathBuf::new(), source: std::io::Error::other(e) }))
}

struct Provisioner {
    client: kube::Client,
    pvs: Arc<Informer<PersistentVolume>>,
    pvcs: Arc<Informer<PersistentVolumeClaim>>,
    classes: Arc<Informer<StorageClass>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<Queue>,
    recorder: Recorder,
    dirs: Arc<dyn Dirs>,
    root: PathBuf,
    shared: bool,
}

const CLAIM: &str = "claim:";
const VOLUME: &str = "volume:";

fn provisioned_by_us(v: &PersistentVolume) -> bool {
    v.metadata.annotations.as_ref().and_then(|a| a.get(ann::PROVISIONED_BY)).is_some_and(|p| p == PROVISIONER)
}

pub async fn run(ctx: Context) -> anyhow::Result<()> {
    run_with(ctx, Arc::new(HostDirs)).await
}

pub async fn run_with(ctx: Context, dirs: Arc<dyn Dirs>) -> anyhow::Result<()> {
    let p = Arc::new(Provisioner {
        client: ctx.client.clone(),
        pvs: ctx.informers.get::<PersistentVolume>(),
        pvcs: ctx.informers.get::<PersistentVolumeClaim>(),
        classes: ctx.informers.get::<StorageClass>(),
        nodes: ctx.informers.get::<Node>(),
        queue: Arc::new(Queue::new()),
        recorder: ctx.recorder("rancher.io/local-path"),
        dirs,
        root: ctx.opts.local_path_root.clone(),
        shared: ctx.opts.local_path_shared,
    });
    let weak = Arc::downgrade(&p);
    p.pvcs.add_handler(Arc::new(move |_: Option<&Arc<PersistentVolumeClaim>>, new| {
        if let (Some(p), Some(c)) = (weak.upgrade(), new) {
            p.queue.add(format!("{CLAIM}{}", key_of(c.as_ref())));
        }
    }));
    let weak = Arc::downgrade(&p);
    p.pvs.add_handler(Arc::new(move |_: Option<&Arc<PersistentVolume>>, new| {
        if let (Some(p), Some(v)) = (weak.upgrade(), new) {
            if provisioned_by_us(v) {
                p.queue.add(format!("{VOLUME}{}", v.metadata.name.as_deref().unwrap_or_default()));
            }
        }
    }));
    p.pvs.wait_synced().await;
    p.pvcs.wait_synced().await;
    p.classes.wait_synced().await;
    p.nodes.wait_synced().await;
    let c = p.clone();
    super::run_workers(NAME, p.queue.clone(), WORKERS, &ctx, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Provisioner {
    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        if let Some(k) = key.strip_prefix(CLAIM) {
            let Some(c) = self.pvcs.get_key(k) else { return Ok(None) };
            self.provision(&c).await?;
        } else if let Some(name) = key.strip_prefix(VOLUME) {
            let Some(v) = self.pvs.get("", name) else { return Ok(None) };
            self.reclaim(&v).await?;
        }
        Ok(None)
    }

    async fn provision(&self, c: &PersistentVolumeClaim) -> Result<(), Error> {
        let class = self.classes.get("", super::persistentvolume::matching::claim_class(c));
        let node_name = c.metadata.annotations.as_ref().and_then(|a| a.get(ann::SELECTED_NODE));
        let node = node_name.and_then(|n| self.nodes.get("", n));
        let plan =
            plan::plan(c, class.as_deref(), node_name.map(|n| (n.as_str(), node.as_deref())), &self.root, self.shared);
        let (pv, dir) = match plan {
            Plan::Skip => return Ok(()),
            Plan::Fail(why) => {
                let class = class.as_ref().and_then(|c| c.metadata.name.clone()).unwrap_or_default();
                self.recorder.event(
                    reference(c),
                    WARNING,
                    "ProvisioningFailed",
                    format!("failed to provision volume with StorageClass {class:?}: {why}"),
                );
                return Ok(());
            }
            Plan::Create { pv, dir } => (pv, dir),
        };
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        if self.pvs.get("", &pv_name).is_some() {
            return Ok(());
        }
        let ns = c.metadata.namespace.as_deref().unwrap_or_default();
        let name = c.metadata.name.as_deref().unwrap_or_default();
        self.recorder.event(
            reference(c),
            NORMAL,
            "Provisioning",
            format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""),
        );
        let (dirs, d) = (self.dirs.clone(), dir.clone());
        if let Err(e) = blocking(move || dirs.create(&d)).await {
            self.recorder.event(
                reference(c),
                WARNING,
                "ProvisioningFailed",
                format!("failed to provision volume: {e}"),
            );
            return Err(e);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                tracing::info!(controller = NAME, namespace = ns, name, volume = %pv_name, dir = %dir.display(), "provisioned");
                self.recorder.event(
                    reference(c),
                    NORMAL,
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {pv_name}"),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn reclaim(&self, v: &PersistentVolume) -> Result<(), Error> {
        let phase = v.status.as_ref().and_then(|s| s.phase.as_deref());
        if !provisioned_by_us(v)
            || phase != Some("Released")
            || super::persistentvolume::decide::policy(v) != "Delete"
            || v.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let name = v.metadata.name.clone().unwrap_or_default();
        if let Some(path) = v.spec.as_ref().and_then(|s| s.host_path.as_ref()).map(|h| PathBuf::from(&h.path)) {
            let removed = match plan::check_inside(&self.root, &path) {
                Ok(()) => {
                    let (dirs, root) = (self.dirs.clone(), self.root.clone());
                    blocking(move || dirs.remove(&root, &path)).await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = removed {
                self.recorder.event(reference(v), WARNING, "VolumeFailedDelete", e.to_string());
                return Err(e);
            }
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: v.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(controller = NAME, volume = %name, "deleted a released volume");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dirs_refuse_to_remove_through_a_symlink_out_of_the_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("precious");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("file"), b"keep").expect("write");
        std::fs::create_dir_all(&root).expect("mkdir");
        let link = root.join("pvc-evil_ns_c");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        assert!(matches!(HostDirs.remove(&root, &link), Err(Error::Path(PlanError::Outside { .. }))));
        assert!(outside.join("file").exists());

        let dir = root.join("n1").join("pvc-1_ns_c");
        HostDirs.create(&dir).expect("create");
        std::fs::write(dir.join("data"), b"x").expect("write");
        HostDirs.remove(&root, &dir).expect("remove");
        assert!(!dir.exists());
        // Removing what is already gone is fine (a retried reclaim).
        HostDirs.remove(&root, &dir).expect("remove again");
    }
}
