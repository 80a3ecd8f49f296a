//! Printers for cluster machinery that has one or two kinds per group:
//! `coordination.k8s.io` leases, `policy` pod disruption budgets, `scheduling.k8s.io`
//! priority classes, `node.k8s.io` runtime classes, `admissionregistration.k8s.io` webhook
//! configurations and `certificates.k8s.io` signing requests.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, get, human_duration, int_at, int_or_string, len_at, name, opt_bool, opt_int, opt_str, str_at,
};
use super::{col, Printer, AGE, NAME};

pub(super) const LEASES: Printer = Printer {
    columns: &[NAME, col("Holder", "string", "Identity of the current holder of the lease."), AGE],
    cells: lease_cells,
};

fn lease_cells(lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(lease), Value::from(str_at(lease, &["spec", "holderIdentity"])), age(lease, now)]
}

pub(super) const POD_DISRUPTION_BUDGETS: Printer = Printer {
    columns: &[
        NAME,
        col("Min Available", "string", "Pods that must stay available during a voluntary disruption."),
        col("Max Unavailable", "string", "Pods that may be unavailable during a voluntary disruption."),
        col("Allowed Disruptions", "integer", "Pods that may be disrupted right now."),
        AGE,
    ],
    cells: pod_disruption_budget_cells,
};

fn na() -> String {
    "N/A".to_string()
}

fn pod_disruption_budget_cells(pdb: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(pdb),
        Value::from(int_or_string(get(pdb, &["spec", "minAvailable"])).unwrap_or_else(na)),
        Value::from(int_or_string(get(pdb, &["spec", "maxUnavailable"])).unwrap_or_else(na)),
        Value::from(int_at(pdb, &["status", "disruptionsAllowed"])),
        age(pdb, now),
    ]
}

pub(super) const PRIORITY_CLASSES: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", "Priority given to pods of this class."),
        col("Global-Default", "boolean", "Whether pods without a class get this one."),
        AGE,
        col("PreemptionPolicy", "string", "Whether pods of this class may preempt lower-priority pods."),
    ],
    cells: priority_class_cells,
};

fn priority_class_cells(pc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(pc),
        Value::from(int_at(pc, &["value"])),
        Value::from(opt_bool(pc, &["globalDefault"]).unwrap_or(false)),
        age(pc, now),
        // upstream: defaulting sets the policy to PreemptLowerPriority.
        Value::from(opt_str(pc, &["preemptionPolicy"]).unwrap_or("PreemptLowerPriority")),
    ]
}

pub(super) const RUNTIME_CLASSES: Printer = Printer {
    columns: &[NAME, col("Handler", "string", "Container runtime handler that runs pods of this class."), AGE],
    cells: runtime_class_cells,
};

fn runtime_class_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(rc), Value::from(str_at(rc, &["handler"])), age(rc, now)]
}

pub(super) const WEBHOOK_CONFIGURATIONS: Printer = Printer {
    columns: &[NAME, col("Webhooks", "integer", "Number of webhooks in the configuration."), AGE],
    cells: webhook_configuration_cells,
};

fn webhook_configuration_cells(wc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(wc), Value::from(len_at(wc, &["webhooks"])), age(wc, now)]
}

pub(super) const CERTIFICATE_SIGNING_REQUESTS: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col("SignerName", "string", "Signer asked to sign the certificate."),
        col("Requestor", "string", "User who created the request."),
        col("RequestedDuration", "string", "Validity period requested for the certificate."),
        col("Condition", "string", "Approved, Denied or Pending, then Failed and Issued when they apply."),
    ],
    cells: certificate_signing_request_cells,
};

fn csr_condition(csr: &Value) -> String {
    let conditions = arr_at(csr, &["status", "conditions"]);
    let has = |type_: &str| conditions.iter().any(|c| str_at(c, &["type"]) == type_);
    let mut status = if has("Denied") {
        "Denied"
    } else if has("Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn certificate_signing_request_cells(csr: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let signer = match str_at(csr, &["spec", "signerName"]) {
        "" => "<none>",
        s => s,
    };
    let requested = match opt_int(csr, &["spec", "expirationSeconds"]) {
        Some(seconds) => human_duration(Duration::seconds(seconds)),
        None => "<none>".to_string(),
    };
    vec![
        name(csr),
        age(csr, now),
        Value::from(signer),
        Value::from(str_at(csr, &["spec", "username"])),
        Value::from(requested),
        Value::from(csr_condition(csr)),
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
    fn lease_shows_holder() {
        let lease = json!({"metadata": {"name": "kube-scheduler",
                                        "creationTimestamp": "2024-05-01T11:00:00Z"},
                           "spec": {"holderIdentity": "cp-1_abc"}});
        assert_eq!(lease_cells(&lease, now()), vec![json!("kube-scheduler"), json!("cp-1_abc"), json!("60m")]);
        assert_eq!(lease_cells(&json!({}), now())[1], json!(""));
    }

    #[test]
    fn pod_disruption_budget_int_or_percent() {
        let cases: Vec<(Value, [&str; 2])> =
            vec![(json!({"minAvailable": 2}), ["2", "N/A"]), (json!({"maxUnavailable": "25%"}), ["N/A", "25%"])];
        for (spec, [min, max]) in cases {
            let pdb = json!({"metadata": {"name": "p"}, "spec": spec,
                             "status": {"disruptionsAllowed": 1}});
            let cells = pod_disruption_budget_cells(&pdb, now());
            assert_eq!(cells[1..4].to_vec(), vec![json!(min), json!(max), json!(1)]);
        }
    }

    #[test]
    fn priority_runtime_class_and_webhook_rows() {
        let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000});
        assert_eq!(
            priority_class_cells(&pc, now()),
            vec![
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority"),
            ]
        );
        let rc = json!({"metadata": {"name": "gvisor"}, "handler": "runsc"});
        assert_eq!(runtime_class_cells(&rc, now())[1], json!("runsc"));
        let wc = json!({"metadata": {"name": "w"}, "webhooks": [{}, {}]});
        assert_eq!(webhook_configuration_cells(&wc, now())[1], json!(2));
    }

    #[test]
    fn certificate_signing_request_condition() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), "Pending"),
            (json!({"conditions": [{"type": "Approved"}]}), "Approved"),
            (json!({"conditions": [{"type": "Approved"}], "certificate": "LS0t"}), "Approved,Issued"),
            (json!({"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]}), "Denied,Failed"),
        ];
        for (status, want) in cases {
            let csr = json!({"metadata": {"name": "c"},
                             "spec": {"signerName": "kubernetes.io/kube-apiserver-client",
                                      "username": "jane", "expirationSeconds": 86400},
                             "status": status});
            let cells = certificate_signing_request_cells(&csr, now());
            assert_eq!(cells[5], json!(want));
            assert_eq!(cells[4], json!("24h"));
        }
        let bare = certificate_signing_request_cells(&json!({}), now());
        assert_eq!(bare[2], json!("<none>"));
        assert_eq!(bare[4], json!("<none>"));
    }
}
