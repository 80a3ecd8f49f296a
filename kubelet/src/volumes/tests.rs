use super::mount::FakeMounter;
use super::*;
use serde_json::json;

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-1", "labels": {"b": "2", "a": "1"}},
        "spec": {"containers": [{"name": "app", "image": "x",
            "resources": {"limits": {"memory": "64Mi"}}}], "volumes": volumes},
    }))
    .expect("pod")
}

fn objects() -> PodObjects {
    let mut o = PodObjects::default();
    o.config_maps.insert(
        "cfg".into(),
        Some(
            serde_json::from_value(
                json!({"metadata": {"name": "cfg"}, "data": {"app.conf": "x=1", "other": "y"}, "binaryData": {"bin": "AAE="}}),
            )
            .expect("cm"),
        ),
    );
    o.config_maps.insert("missing".into(), None);
    o.secrets.insert(
        "creds".into(),
        Some(
            serde_json::from_value(json!({"metadata": {"name": "creds"}, "data": {"password": "czNjcjN0"}}))
                .expect("s"),
        ),
    );
    o
}

fn ctx<'a>(
    objs: &'a PodObjects,
    alloc: &'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> EnvContext<'a> {
    EnvContext { objects: objs, host_ips: &[], pod_ips: &[], allocatable: alloc, service_env: &[] }
}

fn files(p: &BTreeMap<String, FileProjection>) -> Vec<(String, String, u32)> {
    p.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.data).into_owned(), v.mode)).collect()
}

#[test]
fn config_map_payload_with_all_keys_items_and_modes() {
    let o = objects();
    let all = config_map_payload("cfg", None, None, false, &o).expect("payload");
    assert_eq!(
        files(&all),
        [
            ("app.conf".to_string(), "x=1".to_string(), 0o644),
            ("bin".to_string(), "\u{0}\u{1}".to_string(), 0o644),
            ("other".to_string(), "y".to_string(), 0o644)
        ]
    );
    let items: Vec<KeyToPath> =
        serde_json::from_value(json!([{"key": "app.conf", "path": "conf/app.conf", "mode": 0o400}])).expect("items");
    let some = config_map_payload("cfg", Some(&items), Some(0o600), false, &o).expect("payload");
    assert_eq!(files(&some), [("conf/app.conf".to_string(), "x=1".to_string(), 0o400)]);
}

#[test]
fn missing_objects_and_keys_fail_unless_optional() {
    let o = objects();
    let bad: Vec<KeyToPath> = serde_json::from_value(json!([{"key": "nope", "path": "p"}])).expect("items");
    for (got, want) in [
        (config_map_payload("missing", None, None, false, &o), Err("configmap \"missing\" not found".to_string())),
        (config_map_payload("missing", None, None, true, &o).map(|_| BTreeMap::new()), Ok(BTreeMap::new())),
        (
            config_map_payload("cfg", Some(&bad), None, false, &o),
            Err("configmap references non-existent config key: nope".to_string()),
        ),
        (config_map_payload("cfg", Some(&bad), None, true, &o), Ok(BTreeMap::new())),
        (secret_payload("gone", None, None, false, &o), Err("secret \"gone\" not found".to_string())),
        (
            secret_payload("creds", Some(&bad), None, false, &o),
            Err("references non-existent secret key: nope".to_string()),
        ),
    ] {
        assert_eq!(got, want);
    }
    let s = secret_payload("creds", None, Some(0o400), false, &o).expect("secret");
    assert_eq!(files(&s), [("password".to_string(), "s3cr3t".to_string(), 0o400)]);
}

#[test]
fn downward_api_files_like_upstream() {
    let p = pod(json!([]));
    let o = objects();
    let alloc = BTreeMap::new();
    let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
    ]))
    .expect("items");
    let got = downward_api_payload(&p, &items, None, &ctx(&o, &alloc)).expect("payload");
    assert_eq!(
        files(&got),
        [
            ("labels".to_string(), "a=\"1\"\nb=\"2\"".to_string(), 0o644),
            ("mem".to_string(), "64".to_string(), 0o644),
            ("name".to_string(), "web".to_string(), 0o644),
        ]
    );
}

#[test]
fn projected_combines_sources_and_rejects_tokens() {
    let o = objects();
    let alloc = BTreeMap::new();
    let p = pod(json!([{"name": "all", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "other", "path": "other"}]}},
        {"secret": {"name": "creds"}},
        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}]));
    let v = &p.spec.as_ref().expect("spec").volumes.as_ref().expect("volumes")[0];
    let got = projected_payload(&p, v, &o, &ctx(&o, &alloc)).expect("payload");
    assert_eq!(
        files(&got),
        [
            ("ns".to_string(), "ns".to_string(), 0o440),
            ("other".to_string(), "y".to_string(), 0o440),
            ("password".to_string(), "s3cr3t".to_string(), 0o440),
        ]
    );
    let tok = pod(
        json!([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}]),
    );
    let v = &tok.spec.as_ref().expect("spec").volumes.as_ref().expect("volumes")[0];
    assert_eq!(
        projected_payload(&tok, v, &o, &ctx(&o, &alloc)),
        Err("failed to fetch token: not requested".to_string())
    );
    let src = v.projected.as_ref().and_then(|p| p.sources.as_ref()).and_then(|s| s[0].service_account_token.clone());
    let key = crate::objects::token_key(&tok, &src.expect("token source"));
    assert_eq!(
        (key.service_account.as_str(), key.expiration_seconds, key.audience.as_str()),
        ("default", 3600, "vault")
    );
    let mut with_token = objects();
    with_token.tokens.insert(key, Ok("jwt".into()));
    let got = projected_payload(&tok, v, &with_token, &ctx(&with_token, &alloc)).expect("payload");
    assert_eq!(files(&got), [("token".to_string(), "jwt".to_string(), 0o644)]);
}

#[test]
fn host_path_types_are_checked_as_upstream() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    let file = tmp.path().join("f");
    assert_eq!(
        check_host_path(&dir, "Directory"),
        Err(format!("hostPath type check failed: {} is not a directory", dir.display()))
    );
    assert_eq!(check_host_path(&dir, "DirectoryOrCreate"), Ok(()));
    assert!(dir.is_dir());
    assert_eq!(check_host_path(&dir, "Directory"), Ok(()));
    assert_eq!(
        check_host_path(&dir, "File"),
        Err(format!("hostPath type check failed: {} is not a file", dir.display()))
    );
    assert_eq!(check_host_path(&file, "FileOrCreate"), Ok(()));
    assert!(file.is_file());
    assert_eq!(check_host_path(&file, "File"), Ok(()));
    assert_eq!(
        check_host_path(&file, "Socket"),
        Err(format!("hostPath type check failed: {} is not a socket file", file.display()))
    );
    assert_eq!(
        check_host_path(&file, "CharDevice"),
        Err(format!("hostPath type check failed: {} is not a character device", file.display()))
    );
    assert_eq!(check_host_path(Path::new("/dev/null"), "CharDevice"), Ok(()));
    assert_eq!(check_host_path(&tmp.path().join("nothing"), ""), Ok(()), "no type: no check");
}

#[test]
fn container_mounts_with_sub_path_read_only_propagation_and_hosts() {
    let c: Container = serde_json::from_value(json!({"name": "app", "volumeMounts": [
        {"name": "data", "mountPath": "/data", "subPath": "app", "mountPropagation": "HostToContainer"},
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "host", "mountPath": "/host", "readOnly": true, "mountPropagation": "Bidirectional"},
    ]}))
    .expect("container");
    let vols = HashMap::from([
        ("data".to_string(), MountedVolume { host_path: "/v/data".into(), read_only: false }),
        ("cfg".to_string(), MountedVolume { host_path: "/v/cfg".into(), read_only: true }),
        ("host".to_string(), MountedVolume { host_path: "/srv".into(), read_only: false }),
    ]);
    let mounts = container_mounts(&c, &vols, Some(Path::new("/pods/u/etc-hosts"))).expect("mounts");
    let got: Vec<(&str, &str, bool, i32)> =
        mounts.iter().map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly, m.propagation)).collect();
    assert_eq!(
        got,
        [
            ("/data", "/v/data/app", false, api::MountPropagation::PropagationHostToContainer as i32),
            ("/etc/app", "/v/cfg", true, api::MountPropagation::PropagationPrivate as i32),
            ("/host", "/srv", true, api::MountPropagation::PropagationBidirectional as i32),
            ("/etc/hosts", "/pods/u/etc-hosts", false, api::MountPropagation::PropagationPrivate as i32),
        ]
    );
    let missing: Container =
        serde_json::from_value(json!({"name": "app", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}))
            .expect("c");
    assert_eq!(
        container_mounts(&missing, &vols, None),
        Err("cannot find volume \"nope\" to mount into container \"app\"".to_string())
    );
    let escape: Container = serde_json::from_value(
        json!({"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../../etc"}]}),
    )
    .expect("c");
    assert!(container_mounts(&escape, &vols, None).is_err());
}

#[tokio::test]
async fn setup_lays_out_volumes_and_teardown_removes_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mounter = Arc::new(FakeMounter::default());
    let vm = VolumeManager { root_dir: tmp.path().to_path_buf(), mounter: mounter.clone() };
    let host = tmp.path().join("host-data");
    let p = pod(json!([
        {"name": "scratch", "emptyDir": {}},
        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "host", "hostPath": {"path": host.to_string_lossy(), "type": "DirectoryOrCreate"}},
    ]));
    let o = objects();
    let alloc = BTreeMap::new();
    let vols = vm.setup(&p, &o, &ctx(&o, &alloc)).await.expect("setup");
    let base = tmp.path().join("pods/uid-1/volumes");
    assert_eq!(vols["scratch"].host_path, base.join("kubernetes.io~empty-dir/scratch"));
    assert!(vols["scratch"].host_path.is_dir());
    assert_eq!(vols["cfg"], MountedVolume { host_path: base.join("kubernetes.io~configmap/cfg"), read_only: true });
    assert_eq!(std::fs::read_to_string(vols["cfg"].host_path.join("app.conf")).expect("file"), "x=1");
    assert_eq!(std::fs::read_to_string(vols["creds"].host_path.join("password")).expect("file"), "s3cr3t");
    assert_eq!(vols["host"].host_path, host);
    assert!(host.is_dir(), "DirectoryOrCreate created it");
    assert_eq!(
        mounter.calls(),
        [
            format!("mount tmpfs {} size=1048576", base.join("kubernetes.io~empty-dir/cache").display()),
            format!("mount tmpfs {}", base.join("kubernetes.io~secret/creds").display()),
        ]
    );

    // A second sync mounts nothing again; a changed ConfigMap is re-written.
    let mut changed = objects();
    changed.config_maps.insert(
        "cfg".into(),
        Some(serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"app.conf": "x=2"}})).expect("cm")),
    );
    vm.setup(&p, &changed, &ctx(&changed, &alloc)).await.expect("setup again");
    assert_eq!(mounter.calls().len(), 2);
    assert_eq!(std::fs::read_to_string(vols["cfg"].host_path.join("app.conf")).expect("file"), "x=2");
    assert!(!vols["cfg"].host_path.join("other").exists(), "a removed key disappears");

    assert_eq!(vm.pods_on_disk().await, ["uid-1"]);
    vm.teardown("uid-1").await.expect("teardown");
    assert!(mounter.mounted().is_empty(), "every tmpfs unmounted");
    assert!(!tmp.path().join("pods/uid-1").exists());
    assert!(host.is_dir(), "a hostPath is never removed");
}

#[tokio::test]
async fn missing_config_map_fails_with_the_failed_mount_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vm = VolumeManager { root_dir: tmp.path().to_path_buf(), mounter: Arc::new(FakeMounter::default()) };
    let p = pod(json!([{"name": "cfg", "configMap": {"name": "missing"}}]));
    let o = objects();
    let alloc = BTreeMap::new();
    let err = vm.setup(&p, &o, &ctx(&o, &alloc)).await.expect_err("missing");
    assert_eq!(err.to_string(), "MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing\" not found");
}

#[tokio::test]
async fn persistent_volume_claims_resolve_to_host_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let vm = VolumeManager { root_dir: tmp.path().to_path_buf(), mounter: Arc::new(FakeMounter::default()) };
    let p = pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}},
                       {"name": "pending", "persistentVolumeClaim": {"claimName": "c2"}}]));
    let mut o = objects();
    let pvc = serde_json::from_value(json!({"metadata": {"name": "c1"}, "spec": {"volumeName": "pv1"}})).expect("pvc");
    let pv = serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {"hostPath": {"path": "/srv/pv1"}}}))
        .expect("pv");
    o.claims.insert("c1".into(), Some((pvc, Some(pv))));
    let unbound = serde_json::from_value(json!({"metadata": {"name": "c2"}, "spec": {}})).expect("pvc");
    o.claims.insert("c2".into(), Some((unbound, None)));
    let alloc = BTreeMap::new();
    let err = vm.setup(&p, &o, &ctx(&o, &alloc)).await.expect_err("unbound claim");
    assert_eq!(err.to_string(), "MountVolume.SetUp failed for volume \"pending\" : PVC ns/c2 is not bound");
    let only = pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c1", "readOnly": true}}]));
    let vols = vm.setup(&only, &o, &ctx(&o, &alloc)).await.expect("setup");
    assert_eq!(vols["data"], MountedVolume { host_path: "/srv/pv1".into(), read_only: true });
}
