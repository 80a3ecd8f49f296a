//! `--feature-gates` on the apiserver: the MaxUnavailableStatefulSet gate drops
//! `updateStrategy.rollingUpdate.maxUnavailable` from StatefulSets while it is off (upstream
//! v1.33's default) unless the stored object already uses the field, and defaults it to 1
//! when on; an unknown gate stops the server with upstream's message.

use clap::Parser;
use serde_json::{json, Value};

use crate::support::{Etcd, Server};

const STS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
const GATE_ON: &str = "--feature-gates=MaxUnavailableStatefulSet=true";

fn sts(name: &str, max_unavailable: Option<i64>) -> Value {
    let mut ru = json!({"partition": 0});
    if let Some(m) = max_unavailable {
        ru["maxUnavailable"] = json!(m);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name, "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": ru},
        }
    })
}

fn max_unavailable(obj: &Value) -> Option<&Value> {
    obj.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable")
}

/// PUT of the stored object with `maxUnavailable` set to `to` (and one more replica).
async fn put_max_unavailable(s: &Server, name: &str, to: i64) -> Value {
    let (code, mut cur) = s.get(&format!("{STS}/{name}")).await;
    assert_eq!(code, 200, "{cur}");
    cur["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(to);
    cur["spec"]["replicas"] = json!(cur["spec"]["replicas"].as_i64().unwrap_or(1) + 1);
    let (code, body) = s.put(&format!("{STS}/{name}"), &cur).await;
    assert_eq!(code, 200, "{body}");
    body
}

#[tokio::test]
async fn max_unavailable_of_statefulsets_follows_its_gate() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;

    // Off by default: the field is dropped on create and on an update of an object not using it.
    let (code, body) = s.post(STS, &sts("off", Some(2))).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(max_unavailable(&body), None, "{body}");
    assert_eq!(max_unavailable(&put_max_unavailable(&s, "off", 3).await), None);
    assert_eq!(max_unavailable(&s.get(&format!("{STS}/off")).await.1), None);

    // On: kept when given, defaulted to 1 when not.
    let (endpoint, cert_dir, prefix) = s.stop().await;
    let s = Server::start_with_args(endpoint, cert_dir, prefix, &[GATE_ON]).await;
    let (code, body) = s.post(STS, &sts("given", Some(2))).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(max_unavailable(&body), Some(&json!(2)), "{body}");
    let (code, body) = s.post(STS, &sts("defaulted", None)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(max_unavailable(&body), Some(&json!(1)), "{body}");

    // Off again: an object that already uses the field keeps it, as upstream (a downgrade must
    // not silently change running workloads); one that does not still cannot gain it.
    let (endpoint, cert_dir, prefix) = s.stop().await;
    let s = Server::start_with(endpoint, cert_dir, prefix).await;
    assert_eq!(max_unavailable(&put_max_unavailable(&s, "given", 3).await), Some(&json!(3)));
    assert_eq!(max_unavailable(&put_max_unavailable(&s, "off", 3).await), None);
    s.stop().await;
}

#[test]
fn an_unknown_gate_is_refused_with_upstreams_message() {
    let e = rkube_apiserver::Options::try_parse_from([
        "rkube-apiserver",
        "--etcd-servers",
        "http://127.0.0.1:2379",
        "--feature-gates",
        "MaxUnavailableStatefulSet=true,NoSuchGate=true",
    ])
    .expect_err("an unknown gate");
    assert!(e.to_string().contains("unrecognized feature gate: NoSuchGate"), "{e}");
}
