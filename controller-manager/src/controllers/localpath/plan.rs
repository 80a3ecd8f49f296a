//! The local-path provisioner's decisions: whether a claim is ours to provision, the
//! directory (always strictly inside the root, built only from safe name components) and the
//! PersistentVolume to create.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::PROVISIONER;
use crate::controllers::persistentvolume::{ann, claim_ref};

pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{path} is not inside the local-path root {root}")]
    Outside { path: PathBuf, root: PathBuf },
    #[error("{0:?} cannot be part of a volume's path")]
    BadName(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not ours, not yet, or done already.
    Skip,
    /// Ours, but it cannot be provisioned; the reason goes into a ProvisioningFailed event.
    Fail(String),
    Create {
        pv: Box<PersistentVolume>,
        dir: PathBuf,
    },
}

/// `path` is absolute, has no `.`/`..` components and lies strictly below `root`. Lexical:
/// `Dirs::remove` checks again after resolving symlinks.
pub fn check_inside(root: &Path, path: &Path) -> Result<(), PlanError> {
    let outside = || PlanError::Outside { path: path.to_path_buf(), root: root.to_path_buf() };
    if !root.is_absolute() || !path.is_absolute() {
        return Err(outside());
    }
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err(outside());
    }
    match path.strip_prefix(root) {
        Ok(rest) if rest.components().next().is_some() => Ok(()),
        _ => Err(outside()),
    }
}

/// One path component from an object name: no separators, not `.` or `..`, nothing odd.
fn component(s: &str) -> Result<&str, PlanError> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(s)
    } else {
        Err(PlanError::BadName(s.to_string()))
    }
}

/// upstream local-path-provisioner names the folder `<pv>_<namespace>_<claim>`; per node it
/// goes into `<root>/<node>/`, shared straight into `<root>/`.
pub fn volume_dir(
    root: &Path,
    node: Option<&str>,
    pv: &str,
    namespace: &str,
    claim: &str,
) -> Result<PathBuf, PlanError> {
    let leaf = format!("{}_{}_{}", component(pv)?, component(namespace)?, component(claim)?);
    let dir = match node {
        Some(n) => root.join(component(n)?).join(leaf),
        None => root.join(leaf),
    };
    check_inside(root, &dir)?;
    Ok(dir)
}

fn is_ours(c: &PersistentVolumeClaim) -> bool {
    let a = c.metadata.annotations.as_ref();
    [ann::STORAGE_PROVISIONER, ann::BETA_STORAGE_PROVISIONER]
        .iter()
        .any(|k| a.and_then(|a| a.get(*k)).is_some_and(|p| p == PROVISIONER))
}

/// `node` is the claim's selected node: its name and, if the informer has it, the object
/// (whose hostname label the node affinity names, as upstream's provisioner does).
pub fn plan(
    c: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node: Option<(&str, Option<&Node>)>,
    root: &Path,
    shared: bool,
) -> Plan {
    let spec = c.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty())
        || c.metadata.deletion_timestamp.is_some()
        || !is_ours(c)
    {
        return Plan::Skip;
    }
    let Some(class) = class.filter(|s| s.provisioner == PROVISIONER) else { return Plan::Skip };
    let Some(uid) = c.metadata.uid.as_deref() else { return Plan::Skip };
    let wffc = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if wffc && node.is_none() {
        return Plan::Skip;
    }
    if !shared && node.is_none() {
        return Plan::Fail("configuration error, no node was specified".into());
    }
    let pv_name = format!("pvc-{uid}");
    let ns = c.metadata.namespace.as_deref().unwrap_or_default();
    let name = c.metadata.name.as_deref().unwrap_or_default();
    let dir = match volume_dir(root, if shared { None } else { node.map(|n| n.0) }, &pv_name, ns, name) {
        Ok(d) => d,
        Err(e) => return Plan::Fail(e.to_string()),
    };
    let storage = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned();
    let Some(storage) = storage else { return Plan::Fail("claim has no storage request".into()) };
    let node_affinity = match node {
        Some((n, obj)) if !shared => {
            let host = obj
                .and_then(|o| o.metadata.labels.as_ref())
                .and_then(|l| l.get(HOSTNAME_LABEL))
                .cloned()
                .unwrap_or_else(|| n.to_string());
            Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![host]),
                        }]),
                        match_fields: None,
                    }],
                }),
            })
        }
        _ => None,
    };
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name),
            annotations: Some(BTreeMap::from([(ann::PROVISIONED_BY.to_string(), PROVISIONER.to_string())])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), Quantity(storage.0))])),
            access_modes: spec.access_modes.clone(),
            volume_mode: spec.volume_mode.clone(),
            claim_ref: Some(claim_ref(c)),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            storage_class_name: class.metadata.name.clone(),
            mount_options: class.mount_options.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity,
            ..Default::default()
        }),
        status: None,
    };
    Plan::Create { pv: Box::new(pv), dir }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::persistentvolume::matching::tests::{node, pvc};

    fn class(mode: &str, policy: Option<&str>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta { name: Some("standard".into()), ..Default::default() },
            provisioner: PROVISIONER.into(),
            volume_binding_mode: Some(mode.into()),
            reclaim_policy: policy.map(str::to_string),
            ..Default::default()
        }
    }

    fn ours(selected: Option<&str>) -> PersistentVolumeClaim {
        let mut c = pvc("data", "2Gi", Some("standard"), &["ReadWriteOnce"]);
        let a = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(ann::STORAGE_PROVISIONER.into(), PROVISIONER.into());
        if let Some(n) = selected {
            a.insert(ann::SELECTED_NODE.into(), n.into());
        }
        c
    }

    #[test]
    fn paths_never_leave_the_root() {
        let root = Path::new("/var/lib/lp");
        assert!(check_inside(root, Path::new("/var/lib/lp/n1/pvc-1_ns_c")).is_ok());
        for bad in ["/var/lib/lp", "/var/lib/lp/../etc", "/var/lib/lpx/a", "/etc/passwd", "relative/a"] {
            assert!(check_inside(root, Path::new(bad)).is_err(), "{bad}");
        }
        assert_eq!(volume_dir(root, Some("n1"), "pvc-1", "ns", "c"), Ok(PathBuf::from("/var/lib/lp/n1/pvc-1_ns_c")));
        assert_eq!(volume_dir(root, None, "pvc-1", "ns", "c"), Ok(PathBuf::from("/var/lib/lp/pvc-1_ns_c")));
        for node in ["..", ".", "a/b", "", "../../etc"] {
            assert!(volume_dir(root, Some(node), "pvc-1", "ns", "c").is_err(), "{node:?}");
        }
    }

    #[test]
    fn per_node_volume_has_node_affinity_and_the_claims_request() {
        let c = ours(Some("n1"));
        let n = node("n1");
        let Plan::Create { pv, dir } =
            plan(&c, Some(&class("WaitForFirstConsumer", None)), Some(("n1", Some(&n))), Path::new("/r"), false)
        else {
            panic!("expected a volume");
        };
        assert_eq!(dir, PathBuf::from("/r/n1/pvc-uid-data_ns_data"));
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-uid-data"));
        let spec = pv.spec.expect("spec");
        assert_eq!(spec.capacity.and_then(|c| c.get("storage").cloned()), Some(Quantity("2Gi".into())));
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.host_path.and_then(|h| h.type_), Some("DirectoryOrCreate".into()));
        assert_eq!(spec.claim_ref.and_then(|r| r.uid), Some("uid-data".into()));
        let term = &spec.node_affinity.and_then(|a| a.required).expect("required affinity").node_selector_terms[0];
        let req = &term.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!((req.key.as_str(), req.values.clone()), (HOSTNAME_LABEL, Some(vec!["n1".to_string()])));
    }

    #[test]
    fn shared_volume_has_no_node_affinity() {
        let c = ours(Some("n1"));
        let Plan::Create { pv, dir } =
            plan(&c, Some(&class("WaitForFirstConsumer", Some("Retain"))), Some(("n1", None)), Path::new("/r"), true)
        else {
            panic!("expected a volume");
        };
        assert_eq!(dir, PathBuf::from("/r/pvc-uid-data_ns_data"));
        let spec = pv.spec.expect("spec");
        assert!(spec.node_affinity.is_none());
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
    }

    #[test]
    fn claims_not_ready_or_not_ours_are_skipped() {
        let wffc = class("WaitForFirstConsumer", None);
        let root = Path::new("/r");
        assert_eq!(plan(&ours(None), Some(&wffc), None, root, false), Plan::Skip, "no selected node yet");
        let mut other = ours(Some("n1"));
        other.metadata.annotations = None;
        assert_eq!(plan(&other, Some(&wffc), Some(("n1", None)), root, false), Plan::Skip, "not handed to us");
        let mut bound = ours(Some("n1"));
        bound.spec.as_mut().expect("spec").volume_name = Some("v".into());
        assert_eq!(plan(&bound, Some(&wffc), Some(("n1", None)), root, false), Plan::Skip, "bound already");
        assert_eq!(
            plan(&ours(None), Some(&class("Immediate", None)), None, root, false),
            Plan::Fail("configuration error, no node was specified".into())
        );
    }
}
