//! Printers for `rbac.authorization.k8s.io` bindings. Roles and cluster roles have no
//! printer upstream, so they get the default `Name`/`Created At` table.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{age, arr_at, name, str_at};
use super::{col, wide, Printer, AGE, NAME};

pub(super) const ROLE_BINDINGS: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", "Role the binding grants, as kind/name."),
        AGE,
        wide("Users", "string", "Users the binding grants the role to."),
        wide("Groups", "string", "Groups the binding grants the role to."),
        wide("ServiceAccounts", "string", "Service accounts the binding grants the role to, as namespace/name."),
    ],
    cells: binding_cells,
};

pub(super) const CLUSTER_ROLE_BINDINGS: Printer = ROLE_BINDINGS;

/// upstream `SubjectsStrings`: users, groups and `namespace/name` service accounts, each
/// joined by `, `; subjects of other kinds are not shown.
fn binding_cells(b: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in arr_at(b, &["subjects"]) {
        let subject_name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(subject_name.to_string()),
            "Group" => groups.push(subject_name.to_string()),
            "ServiceAccount" => service_accounts.push(format!("{}/{subject_name}", str_at(subject, &["namespace"]))),
            _ => {}
        }
    }
    vec![
        name(b),
        Value::from(format!("{}/{}", str_at(b, &["roleRef", "kind"]), str_at(b, &["roleRef", "name"]))),
        age(b, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(service_accounts.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn role_binding_shows_role_ref_and_subjects() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let rb = json!({
            "metadata": {"name": "read-pods", "creationTimestamp": "2024-05-01T11:59:55Z"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "jane"},
                {"kind": "User", "name": "joe"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "name": "ci", "namespace": "build"},
                {"kind": "Robot", "name": "r2"},
            ],
        });
        assert_eq!(
            binding_cells(&rb, now),
            vec![
                json!("read-pods"),
                json!("ClusterRole/view"),
                json!("5s"),
                json!("jane, joe"),
                json!("devs"),
                json!("build/ci"),
            ]
        );
    }
}
