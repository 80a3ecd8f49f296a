//! `meta.k8s.io` Table and PartialObjectMetadata forms of objects and lists, with upstream's
//! columns from `apimachinery::table`.

use serde_json::{json, Value};

use apimachinery::resources::ResourceInfo;
use apimachinery::table;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub fn partial_metadata(obj: &Value, v1beta1: bool) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": if v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

pub fn partial_metadata_list(items: &[&Value], list_meta: Value, v1beta1: bool) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": if v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": list_meta,
        "items": items.iter().map(|o| partial_metadata(o, v1beta1)).collect::<Vec<_>>(),
    })
}

/// A Table of `items` (one row each).
pub fn to_table(
    info: &ResourceInfo,
    items: &[&Value],
    list_meta: Value,
    include: IncludeObject,
    v1beta1: bool,
) -> Value {
    let now = chrono::Utc::now();
    let columns: Vec<Value> = table::columns(info.group, info.plural).iter().map(|c| c.to_json()).collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut row = json!({"cells": table::cells(info.group, info.plural, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o, v1beta1),
                IncludeObject::Object => {
                    let mut full = (*o).clone();
                    full["kind"] = json!(info.kind);
                    full["apiVersion"] = json!(info.api_version());
                    row["object"] = full;
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": if v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}
