//! The OpenAPI documents: v3 per group-version with real schemas, Kubernetes extensions and
//! patch media types, served with content-hash caching; and the real kubectl (1.27, 1.30,
//! 1.33) explaining and applying from them.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use crate::support::{Etcd, Server};

/// The per-group-version document `gv` (`apis/apps/v1`), fetched through the root's URL.
async fn v3_doc(s: &Server, gv: &str) -> Value {
    let (code, root) = s.get("/openapi/v3").await;
    assert_eq!(code, 200, "{root}");
    let url = root["paths"][gv]["serverRelativeURL"].as_str().unwrap_or_else(|| panic!("{gv} in root: {root}"));
    let (code, doc) = s.get(url).await;
    assert_eq!(code, 200, "{doc}");
    doc
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "schema {name} missing");
    s
}

/// Every `$ref` under `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_v3_kind_schemas_carry_gvk_and_patch_metadata() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;

    let started = Instant::now();
    let apps = v3_doc(&s, "apis/apps/v1").await;
    eprintln!("first OpenAPI v3 fetch (builds every document): {:?}", started.elapsed());

    // upstream names, with the kind's GVK as a list.
    let d = schema(&apps, "io.k8s.api.apps.v1.Deployment");
    assert_eq!(d["x-kubernetes-group-version-kind"], json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));
    assert!(d["description"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
    assert_eq!(
        d["properties"]["spec"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]),
        "{d}"
    );
    let spec = schema(&apps, "io.k8s.api.apps.v1.DeploymentSpec");
    assert!(spec["properties"]["replicas"].is_object(), "{spec}");
    assert_eq!(spec["properties"]["strategy"]["x-kubernetes-patch-strategy"], "retainKeys", "{spec}");
    assert_eq!(
        schema(&apps, "io.k8s.api.apps.v1.DeploymentList")["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
    );
    assert_eq!(
        schema(&apps, "io.k8s.api.autoscaling.v1.Scale")["x-kubernetes-group-version-kind"],
        json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
    );
    let meta = schema(&apps, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert_eq!(meta["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"], "uid", "{meta}");
    assert_eq!(meta["properties"]["finalizers"]["x-kubernetes-list-type"], "set", "{meta}");

    // PodSpec.containers: merged by name, the same metadata our strategic merge patch uses.
    let core = v3_doc(&s, "api/v1").await;
    let pod = schema(&core, "io.k8s.api.core.v1.Pod");
    assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "kind": "Pod", "version": "v1"}]));
    let containers = &schema(&core, "io.k8s.api.core.v1.PodSpec")["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{containers}");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge", "{containers}");
    assert_eq!(containers["x-kubernetes-list-type"], "map", "{containers}");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]), "{containers}");
    assert_eq!(containers["items"]["$ref"], "#/components/schemas/io.k8s.api.core.v1.Container", "{containers}");
    let volumes = &schema(&core, "io.k8s.api.core.v1.PodSpec")["properties"]["volumes"];
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys", "{volumes}");
    let ports = &schema(&core, "io.k8s.api.core.v1.Container")["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort", "{ports}");
    assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["containerPort", "protocol"]), "{ports}");

    // Every served kind has its schema, with its GVK, in its group-version's document.
    for r in apimachinery::resources::RESOURCES.iter().filter(|r| r.plural != "bindings") {
        let gv = if r.group.is_empty() { "api/v1".to_string() } else { format!("apis/{}/{}", r.group, r.version) };
        let doc = v3_doc(&s, &gv).await;
        let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
        let found = doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
            .values()
            .any(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|l| l.contains(&gvk)));
        assert!(found, "{gv}: no schema for {}", r.kind);
    }

    drop(s);
}

#[tokio::test]
async fn openapi_v3_patch_operations_declare_patch_types_and_field_validation() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let apps = v3_doc(&s, "apis/apps/v1").await;
    let deployment_ref = json!({"$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"});

    let item = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let content = patch["requestBody"]["content"].as_object().expect("patch requestBody content");
    for ct in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(ct), "PATCH lacks {ct}: {patch}");
    }
    assert_eq!(content["application/strategic-merge-patch+json"]["schema"], deployment_ref);
    let params: Vec<&str> =
        patch["parameters"].as_array().expect("parameters").iter().filter_map(|p| p["name"].as_str()).collect();
    for p in ["fieldValidation", "dryRun", "fieldManager"] {
        assert!(params.contains(&p), "PATCH lacks {p}: {params:?}");
    }
    assert_eq!(item["get"]["responses"]["200"]["content"]["application/json"]["schema"], deployment_ref);
    assert_eq!(item["put"]["responses"]["200"]["content"]["application/json"]["schema"], deployment_ref);
    let coll = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(coll["post"]["responses"]["201"]["content"]["application/json"]["schema"], deployment_ref);
    assert_eq!(
        coll["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
    );

    // Subresources: status is the kind itself, scale is autoscaling/v1 Scale.
    let status = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["patch"];
    assert!(status["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object(), "{status}");
    let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale", "{scale}");

    // Every patch operation of every document is usable by kubectl: GVK, SMP, fieldValidation;
    // and every reference resolves inside its own document.
    let (_, root) = s.get("/openapi/v3").await;
    let gvs: Vec<String> = root["paths"].as_object().expect("root paths").keys().cloned().collect();
    assert!(gvs.len() >= 9, "{gvs:?}");
    for gv in &gvs {
        let doc = v3_doc(&s, gv).await;
        eprintln!(
            "{gv}: {} bytes, {} schemas",
            doc.to_string().len(),
            doc["components"]["schemas"].as_object().map_or(0, |m| m.len())
        );
        let paths = doc["paths"].as_object().expect("paths");
        assert!(!paths.is_empty(), "{gv} has no paths");
        for (path, item) in paths {
            let Some(patch) = item.get("patch") else { continue };
            assert!(patch["x-kubernetes-group-version-kind"].is_object(), "{gv} {path}");
            assert!(patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object(), "{path}");
            let has_fv =
                patch["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"));
            assert!(has_fv, "{gv} {path}");
        }
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{gv}: foreign $ref {r}"));
            assert!(schemas.contains_key(name), "{gv}: dangling $ref {r}");
        }
    }

    drop(s);
}

#[tokio::test]
async fn openapi_v3_hash_is_content_hash_and_stale_hash_redirects() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let (_, root) = s.get("/openapi/v3").await;
    let url = root["paths"]["api/v1"]["serverRelativeURL"].as_str().expect("api/v1 url").to_string();
    let hash = url.split("hash=").nth(1).expect("hash in url").to_string();

    let resp = s.client.get(s.url(&url)).header("accept", "application/json").send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["cache-control"], "public, immutable");
    assert_eq!(h["etag"].to_str().expect("etag"), format!("\"{hash}\""));
    assert!(h.contains_key("expires"));
    assert_eq!(h["vary"], "Accept");
    let body = resp.bytes().await.expect("body");
    assert_eq!(hex::encode_upper(Sha512::digest(&body)), hash, "hash is the uppercase hex SHA-512 of the body");

    // upstream: a hash that is not current answers 301 to the current URL.
    let no_redirect = {
        let dir = s.cert_dir.path();
        let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
        let admin = component_base::tls::CertKey::load(&dir.join("admin.crt"), &dir.join("admin.key")).expect("cert");
        let tls = component_base::tls::client_config(&ca, Some(&admin)).expect("tls");
        reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    };
    let resp = no_redirect.get(s.url("/openapi/v3/api/v1?hash=0123ABCD")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(resp.headers()["location"].to_str().expect("location"), url);

    // Without a hash: the document, but no year-long caching.
    let resp = s.client.get(s.url("/openapi/v3/api/v1")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(!resp.headers().contains_key("cache-control"));
    let (code, _) = s.get("/openapi/v3/apis/nosuch.example.com/v1").await;
    assert_eq!(code, 404);

    drop(s);
}

/// The length-delimited fields of a protobuf message, as (field number, bytes); other wire
/// types are skipped.
fn pb_fields(mut b: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => {
                varint(&mut b);
            }
            1 => b = &b[8..],
            5 => b = &b[4..],
            2 => {
                let len = usize::try_from(varint(&mut b)).expect("length");
                out.push((key >> 3, &b[..len]));
                b = &b[len..];
            }
            t => panic!("unexpected wire type {t}"),
        }
    }
    out
}

fn pb_string(b: &[u8], field: u64) -> String {
    pb_fields(b)
        .into_iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn openapi_v2_is_a_gnostic_document_with_definitions_and_paths() {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;

    let started = Instant::now();
    let resp = s
        .client
        .get(s.url("/openapi/v2?timeout=32s"))
        .header("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.bytes().await.expect("body");
    eprintln!("first OpenAPI v2 fetch (builds v3 and v2): {:?}, {} bytes", started.elapsed(), body.len());
    // Document { swagger = 1; definitions = 9 { NamedSchema additional_properties = 1 } }
    assert_eq!(pb_string(&body, 1), "2.0");
    let top = pb_fields(&body);
    let defs = top.iter().find(|(f, _)| *f == 9).map(|(_, v)| *v).expect("definitions");
    let named: Vec<(String, &[u8])> = pb_fields(defs)
        .into_iter()
        .filter(|(f, _)| *f == 1)
        .map(|(_, n)| (pb_string(n, 1), pb_fields(n).into_iter().find(|(f, _)| *f == 2).map(|(_, v)| v).unwrap_or(&[])))
        .collect();
    assert!(named.len() > 300, "{} definitions", named.len());
    let (_, deployment) = named.iter().find(|(n, _)| n == "io.k8s.api.apps.v1.Deployment").expect("Deployment");
    // Schema.vendor_extension = 31: NamedAny { name = 1; Any value = 2 { yaml = 2 } }
    let gvk = pb_fields(deployment)
        .into_iter()
        .filter(|(f, _)| *f == 31)
        .find(|(_, ext)| pb_string(ext, 1) == "x-kubernetes-group-version-kind")
        .map(|(_, ext)| pb_string(pb_fields(ext).iter().find(|(f, _)| *f == 2).map(|(_, v)| *v).unwrap_or(&[]), 2))
        .expect("GVK extension");
    let gvk: Value = serde_json::from_str(&gvk).expect("the extension's YAML is JSON");
    assert_eq!(gvk, json!([{"group": "apps", "kind": "Deployment", "version": "v1"}]));

    // The same document as JSON.
    let resp = s.client.get(s.url("/openapi/v2")).header("accept", "application/json").send().await.expect("get");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.expect("json");
    assert_eq!(doc["swagger"], "2.0");
    let containers = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{containers}");
    assert_eq!(containers["items"]["$ref"], "#/definitions/io.k8s.api.core.v1.Container", "{containers}");
    let spec = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
    assert_eq!(spec["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec", "{spec}");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment", "{patch}");
    assert!(patch["consumes"].as_array().is_some_and(|c| c.contains(&json!("application/strategic-merge-patch+json"))));
    assert!(patch["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query")));
    assert!(patch["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "body")));

    drop(s);
}

// ---- the real kubectl ----

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: IMAGE
        ports:
        - containerPort: 80
";

fn explain_and_apply(minor: u32, cert_dir: &Path) {
    let k = component_base::testing::Kubectl::new(minor, cert_dir);

    let out = k.ok(&["explain", "deployment.spec"]);
    eprintln!("kubectl 1.{minor} explain deployment.spec:\n{out}");
    assert!(out.contains("KIND:") && out.contains("Deployment"), "1.{minor}: {out}");
    assert!(out.contains("FIELDS:"), "1.{minor}: {out}");
    assert!(out.contains("replicas"), "1.{minor}: {out}");
    assert!(out.contains("template"), "1.{minor}: {out}");

    let out = k.ok(&["explain", "pods.spec.containers"]);
    eprintln!("kubectl 1.{minor} explain pods.spec.containers:\n{out}");
    assert!(out.contains("FIELDS:"), "1.{minor}: {out}");
    assert!(out.contains("image"), "1.{minor}: {out}");
    assert!(out.contains("name"), "1.{minor}: {out}");

    // The v2 document, rendered by the older explain.
    let out = k.ok(&["explain", "deployment.spec", "--output", "plaintext-openapiv2"]);
    eprintln!("kubectl 1.{minor} explain deployment.spec --output plaintext-openapiv2:\n{out}");
    assert!(out.contains("FIELDS:") && out.contains("replicas"), "1.{minor}: {out}");
    let out = k.ok(&["explain", "pods.spec.containers", "--output", "plaintext-openapiv2"]);
    assert!(out.contains("image"), "1.{minor}: {out}");

    let out = k.ok(&["explain", "deployment.spec.template.spec.containers.ports"]);
    assert!(out.contains("containerPort"), "1.{minor}: {out}");

    let out = k.ok(&["explain", "deployments", "--recursive"]);
    assert!(out.contains("revisionHistoryLimit"), "1.{minor}: {out}");

    // Client-side apply twice: the second computes a three-way strategic merge patch, from
    // OpenAPI v3 on 1.29+; a schema kubectl cannot use would print a warning.
    let manifest = |image: &str| {
        let path = k.home.path().join(format!("web-{image}.yaml"));
        std::fs::write(&path, DEPLOYMENT.replace("IMAGE", image)).expect("write manifest");
        path.to_str().expect("utf-8").to_string()
    };
    let out = k.ok(&["apply", "-f", &manifest("nginx:1.25")]);
    assert!(out.contains("deployment.apps/web"), "1.{minor}: {out}");
    let r = k.run(&["apply", "-f", &manifest("nginx:1.26"), "-v=5"]);
    assert_eq!(r.code, 0, "1.{minor}: {}", r.stderr);
    assert!(r.stdout.contains("deployment.apps/web configured"), "1.{minor}: {}", r.stdout);
    for bad in ["error calculating patch", "OpenAPI V3 path does not"] {
        assert!(!r.stderr.contains(bad), "1.{minor}: {}", r.stderr);
    }
    let image = k.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "nginx:1.26");
}

async fn kubectl_explain(minor: u32) {
    let etcd = Etcd::start();
    let s = Server::start(&etcd).await;
    let cert_dir = s.cert_dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || explain_and_apply(minor, &cert_dir)).await.expect("kubectl session");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_27_explain_and_apply_from_openapi() {
    kubectl_explain(27).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_30_explain_and_apply_from_openapi() {
    kubectl_explain(30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_explain_and_apply_from_openapi() {
    kubectl_explain(33).await;
}
