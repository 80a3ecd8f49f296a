//! Server-side printing: the columns and cells of a `meta.k8s.io/v1` Table for built-in
//! resources, so that `kubectl get` (and `-o wide`) prints what it prints against a real
//! cluster.
//!
//! Upstream's printers (`pkg/printers/internalversion/printers.go`) are the specification:
//! column names, types, priorities and how each cell is computed follow them. As upstream's
//! apiserver does, cells are always generated in "wide" form: priority-1 columns are always
//! filled, and kubectl hides them unless `-o wide` is given.
//!
//! Objects are the JSON of the Kubernetes object (`serde_json::Value`). Printers never fail:
//! an absent or malformed field prints like its zero value. Where the API's defaulting would
//! always have filled a field (replicas, port protocol, service type, ...), an absent field
//! prints as that default, so objects stored without defaulting still look like a cluster's.
//!
//! Resources without a printer get upstream's default table: `Name` and `Created At`.

mod apps;
mod batch;
mod cluster;
mod core_v1;
mod event;
mod format;
mod networking;
mod pod;
mod rbac;
mod storage;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub use format::human_duration;

/// One column of a Table (`meta.k8s.io/v1` TableColumnDefinition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Header, e.g. `Name`, `Ready`, `Nominated Node`; kubectl upper-cases it.
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// `name` for the column holding the object's name, otherwise empty.
    pub format: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// `0`: always shown; `1`: shown by `kubectl get -o wide` only.
    pub priority: u32,
}

impl Column {
    /// The column as a `meta.k8s.io/v1` TableColumnDefinition.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The columns of `resource` (plural, lower case) in API group `group` (`""` for core).
pub fn columns(group: &str, resource: &str) -> Vec<Column> {
    match printer(group, resource) {
        Some(p) => p.columns.to_vec(),
        None => DEFAULT_COLUMNS.to_vec(),
    }
}

/// The cells of one row for `obj`, one per column of [`columns`], as JSON scalars. Ages are
/// measured against `now`.
pub fn cells(group: &str, resource: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match printer(group, resource) {
        Some(p) => (p.cells)(obj, now),
        None => default_cells(obj),
    }
}

/// A printer: the column definitions and the function filling one row.
#[derive(Clone, Copy)]
struct Printer {
    columns: &'static [Column],
    cells: fn(&Value, DateTime<Utc>) -> Vec<Value>,
}

/// The printer for a group and resource, if upstream has one.
fn printer(group: &str, resource: &str) -> Option<Printer> {
    let p = match (group, resource) {
        ("", "pods") => pod::PODS,
        ("", "podtemplates") => core_v1::POD_TEMPLATES,
        ("", "services") => core_v1::SERVICES,
        ("", "endpoints") => core_v1::ENDPOINTS,
        ("", "configmaps") => core_v1::CONFIG_MAPS,
        ("", "secrets") => core_v1::SECRETS,
        ("", "serviceaccounts") => core_v1::SERVICE_ACCOUNTS,
        ("", "nodes") => core_v1::NODES,
        ("", "namespaces") => core_v1::NAMESPACES,
        ("", "events") | ("events.k8s.io", "events") => event::EVENTS,
        ("", "persistentvolumes") => core_v1::PERSISTENT_VOLUMES,
        ("", "persistentvolumeclaims") => core_v1::PERSISTENT_VOLUME_CLAIMS,
        ("", "resourcequotas") => core_v1::RESOURCE_QUOTAS,
        ("", "replicationcontrollers") => core_v1::REPLICATION_CONTROLLERS,
        ("", "componentstatuses") => core_v1::COMPONENT_STATUSES,
        ("apps", "deployments") => apps::DEPLOYMENTS,
        ("apps", "replicasets") => apps::REPLICA_SETS,
        ("apps", "statefulsets") => apps::STATEFUL_SETS,
        ("apps", "daemonsets") => apps::DAEMON_SETS,
        ("apps", "controllerrevisions") => apps::CONTROLLER_REVISIONS,
        ("autoscaling", "scale") => apps::SCALE,
        ("batch", "jobs") => batch::JOBS,
        ("batch", "cronjobs") => batch::CRON_JOBS,
        ("coordination.k8s.io", "leases") => cluster::LEASES,
        ("policy", "poddisruptionbudgets") => cluster::POD_DISRUPTION_BUDGETS,
        ("scheduling.k8s.io", "priorityclasses") => cluster::PRIORITY_CLASSES,
        ("node.k8s.io", "runtimeclasses") => cluster::RUNTIME_CLASSES,
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
        | ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => cluster::WEBHOOK_CONFIGURATIONS,
        ("certificates.k8s.io", "certificatesigningrequests") => cluster::CERTIFICATE_SIGNING_REQUESTS,
        ("discovery.k8s.io", "endpointslices") => networking::ENDPOINT_SLICES,
        ("networking.k8s.io", "ingresses") => networking::INGRESSES,
        ("networking.k8s.io", "ingressclasses") => networking::INGRESS_CLASSES,
        ("networking.k8s.io", "networkpolicies") => networking::NETWORK_POLICIES,
        ("storage.k8s.io", "storageclasses") => storage::STORAGE_CLASSES,
        ("storage.k8s.io", "csidrivers") => storage::CSI_DRIVERS,
        ("storage.k8s.io", "csinodes") => storage::CSI_NODES,
        ("storage.k8s.io", "volumeattachments") => storage::VOLUME_ATTACHMENTS,
        ("rbac.authorization.k8s.io", "rolebindings") => rbac::ROLE_BINDINGS,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => rbac::CLUSTER_ROLE_BINDINGS,
        _ => return None,
    };
    Some(p)
}

/// Descriptions shared by many columns.
const NAME_DESCRIPTION: &str = "Name of the object, unique within its namespace (or within the \
     cluster for cluster-scoped kinds). Set on creation, or generated from generateName; \
     cannot be changed afterwards.";
const CREATION_DESCRIPTION: &str = "Time the server created the object (metadata.creationTimestamp), \
     in UTC. Set by the system; clients cannot set it.";
const CONTAINERS_DESCRIPTION: &str = "Names of the containers in the pod template.";
const IMAGES_DESCRIPTION: &str = "Images of the containers in the pod template.";

/// The `Name` column of almost every printer.
const NAME: Column =
    Column { name: "Name", type_: "string", format: "name", description: NAME_DESCRIPTION, priority: 0 };

/// The `Age` column: time since creation, as a human duration.
const AGE: Column = col("Age", "string", CREATION_DESCRIPTION);

/// A default (priority 0) column.
const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column { name, type_, format: "", description, priority: 0 }
}

/// A column shown only by `-o wide` (priority 1).
const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column { name, type_, format: "", description, priority: 1 }
}

/// upstream: the default table convertor used for resources without a printer (and by
/// `rest.DefaultTableConvertor`): Name plus Created At as an RFC 3339 date.
const DEFAULT_COLUMNS: [Column; 2] = [NAME, col("Created At", "date", CREATION_DESCRIPTION)];

fn default_cells(obj: &Value) -> Vec<Value> {
    // upstream: a zero creationTimestamp still formats, as Go's zero time.
    let created = format::time_at(obj, &["metadata", "creationTimestamp"])
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![format::name(obj), Value::from(created)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    /// Every (group, resource) with a printer.
    const PRINTED: &[(&str, &str)] = &[
        ("", "pods"),
        ("", "podtemplates"),
        ("", "services"),
        ("", "endpoints"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("", "nodes"),
        ("", "namespaces"),
        ("", "events"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("", "resourcequotas"),
        ("", "replicationcontrollers"),
        ("", "componentstatuses"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "controllerrevisions"),
        ("autoscaling", "scale"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("coordination.k8s.io", "leases"),
        ("discovery.k8s.io", "endpointslices"),
        ("events.k8s.io", "events"),
        ("storage.k8s.io", "storageclasses"),
        ("storage.k8s.io", "csidrivers"),
        ("storage.k8s.io", "csinodes"),
        ("storage.k8s.io", "volumeattachments"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("networking.k8s.io", "networkpolicies"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("scheduling.k8s.io", "priorityclasses"),
        ("node.k8s.io", "runtimeclasses"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("certificates.k8s.io", "certificatesigningrequests"),
    ];

    #[test]
    fn human_duration_matches_upstream_buckets() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 15 * 60, "3h15m"),
            (7 * 3600 + 59 * 60 + 59, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (7 * 86400 + 23 * 3600, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (8 * 365 * 86400 - 1, "7y364d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400, "20y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human_duration(Duration::seconds(*seconds)), *want, "{seconds}s");
        }
        // Fractions of a second are truncated towards zero, as upstream does.
        assert_eq!(human_duration(Duration::milliseconds(-1500)), "0s");
        assert_eq!(human_duration(Duration::milliseconds(119_999)), "119s");
    }

    #[test]
    fn column_to_json_is_a_table_column_definition() {
        assert_eq!(
            NAME.to_json(),
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": NAME_DESCRIPTION, "priority": 0})
        );
        let ip = columns("", "pods")[5];
        assert_eq!(ip.to_json()["priority"], json!(1));
        assert_eq!(ip.to_json()["format"], json!(""));
    }

    #[test]
    fn resources_without_printer_get_name_and_created_at() {
        for (group, resource) in [
            ("", "limitranges"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("example.com", "widgets"),
        ] {
            let cols = columns(group, resource);
            let shape: Vec<(&str, &str, &str)> = cols.iter().map(|c| (c.name, c.type_, c.format)).collect();
            assert_eq!(shape, vec![("Name", "string", "name"), ("Created At", "date", "")]);
        }
        let obj = json!({"metadata": {"name": "lr", "creationTimestamp": "2024-04-30T10:11:12+02:00"}});
        assert_eq!(cells("", "limitranges", &obj, now()), vec![json!("lr"), json!("2024-04-30T08:11:12Z")]);
        assert_eq!(cells("", "limitranges", &json!({}), now()), vec![json!(""), json!("0001-01-01T00:00:00Z")]);
    }

    #[test]
    fn every_printer_returns_one_cell_per_column() {
        let junk = [
            json!(null),
            json!({}),
            json!([1, 2]),
            json!({"metadata": 3, "spec": "x", "status": [], "subsets": {}, "data": 5}),
            json!({"spec": {"containers": {}, "ports": [7, null], "selector": "x",
                            "template": {"spec": {"containers": [3]}}},
                   "status": {"conditions": [null], "containerStatuses": [{"state": 1}],
                              "initContainerStatuses": "x", "loadBalancer": {"ingress": 1}}}),
        ];
        for (group, resource) in PRINTED {
            assert!(printer(group, resource).is_some(), "{group}/{resource} has no printer");
            let cols = columns(group, resource);
            for obj in &junk {
                let row = cells(group, resource, obj, now());
                assert_eq!(row.len(), cols.len(), "{group}/{resource} on {obj}");
                assert!(
                    row.iter().all(|c| c.is_string() || c.is_number() || c.is_boolean()),
                    "{group}/{resource} cells must be scalars: {row:?}"
                );
            }
        }
    }

    #[test]
    fn every_printer_has_one_name_column_and_known_types() {
        for (group, resource) in PRINTED {
            let cols = columns(group, resource);
            assert!(cols.iter().any(|c| c.name == "Name"), "{group}/{resource} has no Name column");
            for c in &cols {
                assert!(
                    ["string", "integer", "number", "boolean", "date"].contains(&c.type_),
                    "{group}/{resource} column {} has type {}",
                    c.name,
                    c.type_
                );
                assert!(c.priority <= 1);
                assert!(!c.description.is_empty());
            }
        }
    }

    #[test]
    fn pod_columns_match_upstream() {
        let shape: Vec<(&str, &str, u32)> = columns("", "pods").iter().map(|c| (c.name, c.type_, c.priority)).collect();
        assert_eq!(
            shape,
            vec![
                ("Name", "string", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "string", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ]
        );
    }

    #[test]
    fn age_cell_is_unknown_without_creation_timestamp() {
        let row = cells("", "configmaps", &json!({"metadata": {"name": "c"}}), now());
        assert_eq!(row, vec![json!("c"), json!(0), json!("<unknown>")]);
        let row = cells(
            "",
            "configmaps",
            &json!({"metadata": {"name": "c", "creationTimestamp": "2024-05-01T11:59:55Z"}}),
            now(),
        );
        assert_eq!(row[2], json!("5s"));
    }

    #[test]
    fn core_and_events_k8s_io_events_share_columns() {
        assert_eq!(columns("", "events"), columns("events.k8s.io", "events"));
    }
}
