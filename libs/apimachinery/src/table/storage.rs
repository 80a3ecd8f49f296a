//! Printers for `storage.k8s.io`: storage classes, CSI drivers and nodes, volume attachments.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{age, arr_at, get, len_at, name, opt_bool, opt_str, str_at};
use super::{col, Column, Printer, AGE, NAME};

pub(super) const STORAGE_CLASSES: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", "Volume plugin or CSI driver that provisions volumes of this class."),
        col("ReclaimPolicy", "string", "Reclaim policy given to volumes of this class: Delete or Retain."),
        col("VolumeBindingMode", "string", "When claims are bound and provisioned: Immediate or WaitForFirstConsumer."),
        col("AllowVolumeExpansion", "string", "Whether volumes of this class can be expanded."),
        AGE,
    ],
    cells: storage_class_cells,
};

/// upstream: either annotation set to "true" marks the default class.
const DEFAULT_CLASS_ANNOTATIONS: [&str; 2] =
    ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"];

fn storage_class_cells(sc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut class_name = str_at(sc, &["metadata", "name"]).to_string();
    if DEFAULT_CLASS_ANNOTATIONS.iter().any(|a| opt_str(sc, &["metadata", "annotations", a]) == Some("true")) {
        class_name.push_str(" (default)");
    }
    vec![
        Value::from(class_name),
        Value::from(str_at(sc, &["provisioner"])),
        Value::from(opt_str(sc, &["reclaimPolicy"]).unwrap_or("Delete")),
        Value::from(opt_str(sc, &["volumeBindingMode"]).unwrap_or("Immediate")),
        Value::from(opt_bool(sc, &["allowVolumeExpansion"]).unwrap_or(false)),
        age(sc, now),
    ]
}

pub(super) const CSI_DRIVERS: Printer = Printer {
    columns: &[
        NAME,
        col("AttachRequired", "boolean", "Whether volumes need an attach operation before mounting."),
        col("PodInfoOnMount", "boolean", "Whether the driver receives pod information on mount."),
        col("StorageCapacity", "boolean", "Whether the scheduler considers the driver's reported capacity."),
        col("TokenRequests", "string", "Audiences of the service account tokens passed to the driver."),
        col("RequiresRepublish", "boolean", "Whether the driver's NodePublishVolume is called periodically."),
        col("Modes", "string", "Volume lifecycle modes the driver supports."),
        AGE,
    ],
    cells: csi_driver_cells,
};

fn csi_driver_cells(d: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let modes: Vec<&str> = arr_at(d, &["spec", "volumeLifecycleModes"]).iter().filter_map(Value::as_str).collect();
    let token_requests = match get(d, &["spec", "tokenRequests"]).and_then(Value::as_array) {
        Some(requests) => requests.iter().map(|t| str_at(t, &["audience"])).collect::<Vec<_>>().join(","),
        None => "<unset>".to_string(),
    };
    vec![
        name(d),
        Value::from(opt_bool(d, &["spec", "attachRequired"]).unwrap_or(true)),
        Value::from(opt_bool(d, &["spec", "podInfoOnMount"]).unwrap_or(false)),
        Value::from(opt_bool(d, &["spec", "storageCapacity"]).unwrap_or(false)),
        Value::from(token_requests),
        Value::from(opt_bool(d, &["spec", "requiresRepublish"]).unwrap_or(false)),
        Value::from(if modes.is_empty() { "<none>".to_string() } else { modes.join(",") }),
        age(d, now),
    ]
}

pub(super) const CSI_NODES: Printer = Printer {
    columns: &[NAME, col("Drivers", "integer", "Number of CSI drivers registered on the node."), AGE],
    cells: csi_node_cells,
};

fn csi_node_cells(n: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(n), Value::from(len_at(n, &["spec", "drivers"])), age(n, now)]
}

pub(super) const VOLUME_ATTACHMENTS: Printer = Printer {
    columns: &[
        NAME,
        // upstream: this column carries the `name` format too.
        Column {
            name: "Attacher",
            type_: "string",
            format: "name",
            description: "Volume driver that attaches the volume.",
            priority: 0,
        },
        col("PV", "string", "Persistent volume being attached."),
        col("Node", "string", "Node the volume is attached to."),
        col("Attached", "boolean", "Whether the attach operation succeeded."),
        AGE,
    ],
    cells: volume_attachment_cells,
};

fn volume_attachment_cells(va: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(va),
        Value::from(str_at(va, &["spec", "attacher"])),
        Value::from(str_at(va, &["spec", "source", "persistentVolumeName"])),
        Value::from(str_at(va, &["spec", "nodeName"])),
        Value::from(opt_bool(va, &["status", "attached"]).unwrap_or(false)),
        age(va, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn storage_class_marks_default_and_fills_defaults() {
        let sc = json!({
            "metadata": {"name": "standard", "creationTimestamp": "2024-04-01T12:00:00Z",
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
        });
        assert_eq!(
            storage_class_cells(&sc, now()),
            vec![
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false),
                json!("30d"),
            ]
        );
        let sc = json!({"metadata": {"name": "fast"}, "provisioner": "csi.example.com",
                        "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer",
                        "allowVolumeExpansion": true});
        assert_eq!(
            storage_class_cells(&sc, now())[..5].to_vec(),
            vec![json!("fast"), json!("csi.example.com"), json!("Retain"), json!("WaitForFirstConsumer"), json!(true),]
        );
    }

    #[test]
    fn csi_driver_and_node_rows() {
        let d = json!({"metadata": {"name": "csi.example.com"},
                       "spec": {"podInfoOnMount": true, "volumeLifecycleModes": ["Persistent", "Ephemeral"],
                                "tokenRequests": [{"audience": "vault"}, {"audience": "gcp"}]}});
        assert_eq!(
            csi_driver_cells(&d, now())[1..7].to_vec(),
            vec![
                json!(true),
                json!(true),
                json!(false),
                json!("vault,gcp"),
                json!(false),
                json!("Persistent,Ephemeral"),
            ]
        );
        let bare = csi_driver_cells(&json!({}), now());
        assert_eq!(bare[4], json!("<unset>"));
        assert_eq!(bare[6], json!("<none>"));
        let n = json!({"metadata": {"name": "n1"}, "spec": {"drivers": [{"name": "a"}]}});
        assert_eq!(csi_node_cells(&n, now())[1], json!(1));
    }

    #[test]
    fn volume_attachment_row() {
        let va = json!({"metadata": {"name": "csi-123"},
                        "spec": {"attacher": "csi.example.com", "nodeName": "n1",
                                 "source": {"persistentVolumeName": "pv1"}},
                        "status": {"attached": true}});
        assert_eq!(
            volume_attachment_cells(&va, now()),
            vec![
                json!("csi-123"),
                json!("csi.example.com"),
                json!("pv1"),
                json!("n1"),
                json!(true),
                json!("<unknown>"),
            ]
        );
    }
}
