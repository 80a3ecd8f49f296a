//! Printers for the `batch` group: jobs and cron jobs.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, bool_ptr, container_cells, format_label_selector, get, human_duration, int_at, is_deleting, len_at,
    name, opt_bool, opt_int, opt_str, since, str_at, time_at,
};
use super::{col, wide, Printer, AGE, CONTAINERS_DESCRIPTION, IMAGES_DESCRIPTION, NAME};

pub(super) const JOBS: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Summary of the job's state: Running, Complete, Failed, Suspended, ..."),
        col("Completions", "string", "Succeeded pods out of the completions wanted."),
        col("Duration", "string", "Time the job ran for, or has been running for."),
        AGE,
        wide("Containers", "string", CONTAINERS_DESCRIPTION),
        wide("Images", "string", IMAGES_DESCRIPTION),
        wide("Selector", "string", "Label selector of the job's pods."),
    ],
    cells: job_cells,
};

/// upstream: only the first condition of a type counts.
fn has_job_condition(job: &Value, type_: &str) -> bool {
    arr_at(job, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == type_)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn job_status(job: &Value) -> &'static str {
    if has_job_condition(job, "Complete") {
        "Complete"
    } else if has_job_condition(job, "Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if has_job_condition(job, "Suspended") {
        "Suspended"
    } else if has_job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn job_completions(job: &Value) -> String {
    let succeeded = int_at(job, &["status", "succeeded"]);
    match opt_int(job, &["spec", "completions"]) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match int_at(job, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_duration(job: &Value, now: DateTime<Utc>) -> String {
    let Some(start) = time_at(job, &["status", "startTime"]) else {
        return String::new();
    };
    let end = time_at(job, &["status", "completionTime"]).unwrap_or(now);
    human_duration(end.signed_duration_since(start))
}

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(job, &["spec", "template", "spec", "containers"]));
    vec![
        name(job),
        Value::from(job_status(job)),
        Value::from(job_completions(job)),
        Value::from(job_duration(job, now)),
        age(job, now),
        names,
        images,
        Value::from(format_label_selector(get(job, &["spec", "selector"]))),
    ]
}

pub(super) const CRON_JOBS: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", "Cron schedule of the jobs."),
        col("Timezone", "string", "Time zone the schedule is read in; the controller's own when unset."),
        col("Suspend", "boolean", "Whether new jobs are kept from being scheduled."),
        col("Active", "integer", "Number of jobs currently running."),
        col("Last Schedule", "string", "Time since a job was last scheduled."),
        AGE,
        wide("Containers", "string", CONTAINERS_DESCRIPTION),
        wide("Images", "string", IMAGES_DESCRIPTION),
        wide("Selector", "string", "Label selector of the jobs' pods."),
    ],
    cells: cron_job_cells,
};

fn cron_job_cells(cj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) =
        container_cells(arr_at(cj, &["spec", "jobTemplate", "spec", "template", "spec", "containers"]));
    let last_schedule = match time_at(cj, &["status", "lastScheduleTime"]) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    // upstream: defaulting sets suspend to false.
    let suspend = Some(opt_bool(cj, &["spec", "suspend"]).unwrap_or(false));
    vec![
        name(cj),
        Value::from(str_at(cj, &["spec", "schedule"])),
        Value::from(opt_str(cj, &["spec", "timeZone"]).unwrap_or("<none>")),
        Value::from(bool_ptr(suspend)),
        Value::from(len_at(cj, &["status", "active"])),
        Value::from(last_schedule),
        age(cj, now),
        names,
        images,
        Value::from(format_label_selector(get(cj, &["spec", "jobTemplate", "spec", "selector"]))),
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

    fn job(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:50:00Z"},
               "spec": spec, "status": status})
    }

    #[test]
    fn job_completions_column() {
        let cases: Vec<(Value, Value, &str)> = vec![
            (json!({"completions": 3}), json!({"succeeded": 1}), "1/3"),
            (json!({"parallelism": 4}), json!({"succeeded": 2}), "2/1 of 4"),
            (json!({"parallelism": 1}), json!({}), "0/1"),
            (json!({}), json!({}), "0/1"),
        ];
        for (spec, status, want) in cases {
            assert_eq!(job_cells(&job(spec, status), now())[2], json!(want));
        }
    }

    #[test]
    fn job_status_from_conditions() {
        let cases: Vec<(Value, bool, &str)> = vec![
            (json!([]), false, "Running"),
            (json!([{"type": "Complete", "status": "True"}]), false, "Complete"),
            (json!([{"type": "Failed", "status": "True"}]), true, "Failed"),
            (json!([]), true, "Terminating"),
            (json!([{"type": "Suspended", "status": "True"}]), false, "Suspended"),
            (json!([{"type": "Suspended", "status": "False"}]), false, "Running"),
            (json!([{"type": "FailureTarget", "status": "True"}]), false, "FailureTarget"),
        ];
        for (conditions, deleting, want) in cases {
            let mut j = job(json!({}), json!({"conditions": conditions}));
            if deleting {
                j["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
            }
            assert_eq!(job_cells(&j, now())[1], json!(want), "{conditions}");
        }
    }

    #[test]
    fn job_duration_until_completion_or_now() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({}), ""),
            (json!({"startTime": "2024-05-01T11:58:30Z"}), "90s"),
            (
                json!({"startTime": "2024-05-01T11:50:00Z",
                       "completionTime": "2024-05-01T11:52:30Z"}),
                "2m30s",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(job_cells(&job(json!({}), status), now())[3], json!(want));
        }
    }

    #[test]
    fn job_full_row() {
        let j = job(
            json!({"completions": 1, "parallelism": 1,
                   "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                   "template": {"spec": {"containers": [{"name": "pi", "image": "perl:5"}]}}}),
            json!({"succeeded": 1, "startTime": "2024-05-01T11:50:00Z",
                   "completionTime": "2024-05-01T11:50:08Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            job_cells(&j, now()),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("8s"),
                json!("10m"),
                json!("pi"),
                json!("perl:5"),
                json!("batch.kubernetes.io/controller-uid=u1"),
            ]
        );
    }

    #[test]
    fn cron_job_row() {
        let cj = json!({
            "metadata": {"name": "hello", "creationTimestamp": "2024-04-30T12:00:00Z"},
            "spec": {"schedule": "*/1 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [
                         {"name": "hello", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2024-05-01T11:59:00Z"},
        });
        assert_eq!(
            cron_job_cells(&cj, now()),
            vec![
                json!("hello"),
                json!("*/1 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("60s"),
                json!("24h"),
                json!("hello"),
                json!("busybox"),
                json!("<none>"),
            ]
        );
        let suspended = json!({"spec": {"suspend": true, "timeZone": "Etc/UTC"}});
        let cells = cron_job_cells(&suspended, now());
        assert_eq!(cells[2], json!("Etc/UTC"));
        assert_eq!(cells[3], json!("True"));
        assert_eq!(cells[5], json!("<none>"));
    }
}
