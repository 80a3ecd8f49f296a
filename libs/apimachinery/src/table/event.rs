//! Events, for both `v1` and `events.k8s.io/v1` (upstream serves both from one storage and
//! one printer): `LAST SEEN TYPE REASON OBJECT MESSAGE`, wide adds `SUBOBJECT SOURCE`
//! (between OBJECT and MESSAGE) and `FIRST SEEN COUNT NAME` at the end.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{get, opt_int, since, str_at, time_at};
use super::{col, wide, Column, Printer, NAME};

pub(super) const EVENTS: Printer = Printer {
    columns: &[
        col("Last Seen", "string", "Time since the event was last observed."),
        col("Type", "string", "Type of the event: Normal or Warning."),
        col("Reason", "string", "Short, machine-readable reason for the event, in UpperCamelCase."),
        col("Object", "string", "Object the event is about, as kind/name."),
        wide("Subobject", "string", "Part of the object the event is about, e.g. a container (fieldPath)."),
        wide("Source", "string", "Component (and host) that reported the event."),
        col("Message", "string", "Human-readable description of what happened."),
        wide("First Seen", "string", "Time since the event was first observed."),
        wide("Count", "string", "Number of times the event has occurred."),
        Column { priority: 1, ..NAME },
    ],
    cells: event_cells,
};

/// Field names of an event in one of its two API shapes.
struct Shape {
    involved_object: &'static str,
    message: &'static str,
    source: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
}

const CORE_V1: Shape = Shape {
    involved_object: "involvedObject",
    message: "message",
    source: "source",
    first_timestamp: "firstTimestamp",
    last_timestamp: "lastTimestamp",
    count: "count",
};

/// upstream: events.k8s.io/v1 renames the core fields (conversion to the internal Event).
const EVENTS_V1: Shape = Shape {
    involved_object: "regarding",
    message: "note",
    source: "deprecatedSource",
    first_timestamp: "deprecatedFirstTimestamp",
    last_timestamp: "deprecatedLastTimestamp",
    count: "deprecatedCount",
};

fn shape(event: &Value) -> &'static Shape {
    let is_events_v1 = str_at(event, &["apiVersion"]).starts_with("events.k8s.io/")
        || get(event, &["regarding"]).is_some()
        || get(event, &["note"]).is_some();
    if is_events_v1 {
        &EVENTS_V1
    } else {
        &CORE_V1
    }
}

fn event_cells(event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let f = shape(event);

    let first_timestamp = match time_at(event, &[f.first_timestamp]) {
        Some(t) => since(Some(t), now),
        None => since(time_at(event, &["eventTime"]), now),
    };
    let mut last_timestamp = match time_at(event, &[f.last_timestamp]) {
        Some(t) => since(Some(t), now),
        None => first_timestamp.clone(),
    };
    let count = if get(event, &["series"]).is_some_and(Value::is_object) {
        last_timestamp = since(time_at(event, &["series", "lastObservedTime"]), now);
        opt_int(event, &["series", "count"]).unwrap_or(0)
    } else {
        // upstream: singleton events of the new API carry no count.
        match opt_int(event, &[f.count]).unwrap_or(0) {
            0 => 1,
            n => n,
        }
    };

    let kind = str_at(event, &[f.involved_object, "kind"]).to_lowercase();
    let involved_name = str_at(event, &[f.involved_object, "name"]);
    let target = if involved_name.is_empty() { kind } else { format!("{kind}/{involved_name}") };

    let component = first_non_empty(str_at(event, &[f.source, "component"]), str_at(event, &["reportingController"]));
    let instance = first_non_empty(str_at(event, &[f.source, "host"]), str_at(event, &["reportingInstance"]));
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };

    vec![
        Value::from(last_timestamp),
        Value::from(str_at(event, &["type"])),
        Value::from(str_at(event, &["reason"])),
        Value::from(target),
        Value::from(str_at(event, &[f.involved_object, "fieldPath"])),
        Value::from(source),
        Value::from(str_at(event, &[f.message]).trim()),
        Value::from(first_timestamp),
        Value::from(count),
        Value::from(str_at(event, &["metadata", "name"])),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
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
    fn event_columns_match_upstream_order() {
        let names: Vec<(&str, u32)> = EVENTS.columns.iter().map(|c| (c.name, c.priority)).collect();
        assert_eq!(
            names,
            vec![
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1),
            ]
        );
        assert_eq!(EVENTS.columns[9].format, "name");
    }

    #[test]
    fn core_event_cells() {
        let e = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off restarting\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z",
            "count": 7,
        });
        assert_eq!(
            event_cells(&e, now()),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Back-off restarting"),
                json!("60m"),
                json!(7),
                json!("web-1.17a"),
            ]
        );
    }

    #[test]
    fn event_without_timestamps_uses_event_time_and_counts_one() {
        let e = json!({
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:59:29.876543Z",
            "reportingController": "rkube-scheduler",
        });
        let cells = event_cells(&e, now());
        assert_eq!(cells[0], json!("30s"), "fractions count towards the elapsed time");
        assert_eq!(cells[3], json!("node"));
        assert_eq!(cells[5], json!("rkube-scheduler"));
        assert_eq!(cells[7], json!("30s"));
        assert_eq!(cells[8], json!(1));
    }

    #[test]
    fn events_k8s_io_event_uses_regarding_note_and_series() {
        let e = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2024-05-01T10:00:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:00.000000Z"},
            "reportingController": "deployment-controller", "reportingInstance": "cm-1",
        });
        let cells = event_cells(&e, now());
        assert_eq!(cells[0], json!("60s"));
        assert_eq!(cells[3], json!("deployment/web"));
        assert_eq!(cells[5], json!("deployment-controller, cm-1"));
        assert_eq!(cells[6], json!("Scaled up"));
        assert_eq!(cells[7], json!("120m"));
        assert_eq!(cells[8], json!(4));
    }

    #[test]
    fn event_missing_times_are_unknown() {
        let cells = event_cells(&json!({"involvedObject": {}}), now());
        assert_eq!(cells[0], json!("<unknown>"));
        assert_eq!(cells[7], json!("<unknown>"));
    }
}
