//! Printers for the `apps` group, plus the `autoscaling/v1` Scale subresource.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, container_cells, format_label_selector, format_labels, get, int_at, label_selector_string, map_at,
    name, opt_int, str_at,
};
use super::{col, wide, Column, Printer, AGE, CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION, NAME};

/// upstream: defaulting sets `spec.replicas` to 1.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn template_containers(obj: &Value) -> (Value, Value) {
    container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]))
}

const CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DESCRIPTION);
const IMAGES: Column = wide("Images", "string", IMAGES_DESCRIPTION);

pub(super) const DEPLOYMENTS: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Ready replicas out of desired replicas."),
        col("Up-to-date", "string", "Replicas running the current pod template."),
        col("Available", "string", "Replicas ready for at least minReadySeconds."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector of the pods the deployment manages."),
    ],
    cells: deployment_cells,
};

fn deployment_cells(d: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(d);
    // upstream: the bare selector string, "<invalid>" when it cannot be parsed.
    let selector = label_selector_string(get(d, &["spec", "selector"])).unwrap_or_else(|_| "<invalid>".to_string());
    vec![
        name(d),
        Value::from(format!("{}/{}", int_at(d, &["status", "readyReplicas"]), desired_replicas(d))),
        Value::from(int_at(d, &["status", "updatedReplicas"])),
        Value::from(int_at(d, &["status", "availableReplicas"])),
        age(d, now),
        names,
        images,
        Value::from(selector),
    ]
}

pub(super) const REPLICA_SETS: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Number of replicas wanted."),
        col("Current", "integer", "Number of replicas observed."),
        col("Ready", "integer", "Number of ready replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector of the pods the replica set manages."),
    ],
    cells: replica_set_cells,
};

fn replica_set_cells(rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(rs);
    vec![
        name(rs),
        Value::from(desired_replicas(rs)),
        Value::from(int_at(rs, &["status", "replicas"])),
        Value::from(int_at(rs, &["status", "readyReplicas"])),
        age(rs, now),
        names,
        images,
        Value::from(format_label_selector(get(rs, &["spec", "selector"]))),
    ]
}

pub(super) const STATEFUL_SETS: Printer = Printer {
    columns: &[NAME, col("Ready", "string", "Ready replicas out of desired replicas."), AGE, CONTAINERS, IMAGES],
    cells: stateful_set_cells,
};

fn stateful_set_cells(sts: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(sts);
    vec![
        name(sts),
        Value::from(format!("{}/{}", int_at(sts, &["status", "readyReplicas"]), desired_replicas(sts))),
        age(sts, now),
        names,
        images,
    ]
}

pub(super) const DAEMON_SETS: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "Number of nodes that should run the daemon pod."),
        col("Current", "integer", "Number of nodes running at least one daemon pod that should."),
        col("Ready", "integer", "Number of nodes whose daemon pod is ready."),
        col("Up-to-date", "integer", "Number of nodes running the current daemon pod template."),
        col("Available", "integer", "Number of nodes whose daemon pod has been ready for minReadySeconds."),
        col("Node Selector", "string", "Node labels the daemon pods are restricted to."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector of the pods the daemon set manages."),
    ],
    cells: daemon_set_cells,
};

fn daemon_set_cells(ds: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(ds);
    let status = |field: &str| Value::from(int_at(ds, &["status", field]));
    vec![
        name(ds),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        Value::from(format_labels(map_at(ds, &["spec", "template", "spec", "nodeSelector"]))),
        age(ds, now),
        names,
        images,
        Value::from(format_label_selector(get(ds, &["spec", "selector"]))),
    ]
}

pub(super) const CONTROLLER_REVISIONS: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "Object controlling the revision, as kind.group/name."),
        col("Revision", "string", "Revision number of the state the revision records."),
        AGE,
    ],
    cells: controller_revision_cells,
};

/// The controlling owner as `kind.group/name` in lower case (`statefulset.apps/web`), or
/// `<none>`.
fn controller_of(obj: &Value) -> String {
    let Some(owner) = arr_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| get(o, &["controller"]).and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let api_version = str_at(owner, &["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((group, _version)) => group,
        None => "",
    };
    let kind = str_at(owner, &["kind"]);
    let owner_name = str_at(owner, &["name"]);
    if kind.is_empty() && group.is_empty() {
        return owner_name.to_string();
    }
    let group_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

fn controller_revision_cells(cr: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(cr), Value::from(controller_of(cr)), Value::from(int_at(cr, &["revision"])), age(cr, now)]
}

/// upstream: the scale subresource's Name column carries no `name` format.
pub(super) const SCALE: Printer = Printer {
    columns: &[
        Column { format: "", ..NAME },
        col("Desired", "integer", "Number of replicas wanted."),
        col("Available", "integer", "Number of replicas observed."),
        AGE,
    ],
    cells: scale_cells,
};

fn scale_cells(scale: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(scale),
        Value::from(int_at(scale, &["spec", "replicas"])),
        Value::from(int_at(scale, &["status", "replicas"])),
        age(scale, now),
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

    fn workload(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": "2024-05-01T09:30:00Z"},
               "spec": spec, "status": status})
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"},
                                       {"name": "sidecar", "image": "envoy:1"}]}})
    }

    #[test]
    fn deployment_ready_column() {
        let cases: Vec<(Value, Value, &str)> = vec![
            (json!({"replicas": 3}), json!({"readyReplicas": 2}), "2/3"),
            (json!({"replicas": 0}), json!({}), "0/0"),
            (json!({}), json!({}), "0/1"),
        ];
        for (spec, status, want) in cases {
            let d = workload(spec, status);
            assert_eq!(deployment_cells(&d, now())[1], json!(want));
        }
    }

    #[test]
    fn deployment_row_with_wide_columns() {
        let d = workload(
            json!({"replicas": 2, "template": template(),
                   "selector": {"matchLabels": {"app": "web"},
                                "matchExpressions": [{"key": "env", "operator": "In",
                                                      "values": ["prod", "dev"]}]}}),
            json!({"readyReplicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        );
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("2/2"),
                json!(2),
                json!(1),
                json!("150m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,envoy:1"),
                json!("app=web,env in (dev,prod)"),
            ]
        );
        let bad = workload(json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}), json!({}));
        assert_eq!(deployment_cells(&bad, now())[7], json!("<invalid>"));
        assert_eq!(deployment_cells(&workload(json!({}), json!({})), now())[7], json!(""));
    }

    #[test]
    fn replica_set_row() {
        let rs = workload(
            json!({"replicas": 3, "template": template(),
                   "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}}}),
            json!({"replicas": 3, "readyReplicas": 1}),
        );
        assert_eq!(
            replica_set_cells(&rs, now()),
            vec![
                json!("web"),
                json!(3),
                json!(3),
                json!(1),
                json!("150m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,envoy:1"),
                json!("app=web,pod-template-hash=abc"),
            ]
        );
        assert_eq!(replica_set_cells(&workload(json!({}), json!({})), now())[7], json!("<none>"));
    }

    #[test]
    fn stateful_set_ready_column() {
        let sts = workload(json!({"replicas": 3, "template": template()}), json!({"readyReplicas": 1}));
        assert_eq!(
            stateful_set_cells(&sts, now()),
            vec![json!("web"), json!("1/3"), json!("150m"), json!("nginx,sidecar"), json!("nginx:1.27,envoy:1"),]
        );
    }

    #[test]
    fn daemon_set_row_shows_node_selector() {
        let mut tpl = template();
        tpl["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = workload(
            json!({"template": tpl, "selector": {"matchLabels": {"app": "web"}}}),
            json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2}),
        );
        assert_eq!(
            daemon_set_cells(&ds, now()),
            vec![
                json!("web"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("150m"),
                json!("nginx,sidecar"),
                json!("nginx:1.27,envoy:1"),
                json!("app=web"),
            ]
        );
        assert_eq!(daemon_set_cells(&json!({}), now())[6], json!("<none>"));
    }

    #[test]
    fn controller_revision_shows_controller_kind_and_group() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "<none>"),
            (
                json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                        "controller": true}]),
                "statefulset.apps/web",
            ),
            (json!([{"apiVersion": "v1", "kind": "Pod", "name": "p", "controller": false}]), "<none>"),
            (
                json!([{"apiVersion": "v1", "kind": "ReplicationController", "name": "rc",
                        "controller": true}]),
                "replicationcontroller/rc",
            ),
        ];
        for (owners, want) in cases {
            let cr = json!({"metadata": {"name": "web-6d4f", "ownerReferences": owners},
                            "revision": 2});
            let cells = controller_revision_cells(&cr, now());
            assert_eq!(cells[1], json!(want), "{owners}");
            assert_eq!(cells[2], json!(2));
        }
    }

    #[test]
    fn scale_subresource_row() {
        let s = workload(json!({"replicas": 5}), json!({"replicas": 4}));
        assert_eq!(scale_cells(&s, now()), vec![json!("web"), json!(5), json!(4), json!("150m")]);
        assert_eq!(SCALE.columns[0].format, "");
    }
}
