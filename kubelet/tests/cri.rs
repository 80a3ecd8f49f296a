//! `CriRuntime` against a real containerd, started by the test inside its own node (network,
//! mount and UTS namespaces, one state directory, one cgroup subtree: `support::TestNode`,
//! the recipe of docs/node-runtime-notes.md in its "mntns" mode).
//!
//! Network: the node has `lo`, a veth to the host on a free /30 of 198.18.128.0/17, and the CNI
//! bridge on 198.19.254.0/24; no default route, registry mirrors pointing at the namespace's own
//! loopback: nothing can leave it. Images come from `_output/images/*.tar`
//! (hack/images/build-images.sh), imported with `ctr`, never pulled.
//!
//! Teardown (`TestNode`'s `Drop`, so it also runs when the test fails) follows the notes'
//! section 6 and the test then checks that no process, netns, link, mount, cgroup, CNI result
//! file or directory is left. Needs root; without it the test says so and passes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{ensure_images, is_root, unique_suffix, wait_for, TestNode, TestResult, SANDBOX_IMAGE};
use rkube_kubelet::runtime::{api, image_spec, sandbox_filter_by_labels, ContainerRuntime, CriRuntime};

const BUSYBOX: &str = "docker.io/library/busybox:latest";
const NGINX: &str = "docker.io/library/nginx:1.25";

fn sandbox_config(node: &TestNode, uid: &str) -> api::PodSandboxConfig {
    let (namespace, name) = ("default", "bb");
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: "bb-pod".into(),
        log_directory: node.dir.join(format!("logs/{namespace}_{name}_{uid}")).to_string_lossy().into_owned(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.namespace".to_string(), namespace.to_string()),
            ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        ]),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/kubepods/pod{uid}", node.cgroup_parent),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespace_options() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn busybox_config() -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "bb".into(), attempt: 0 }),
        image: Some(image_spec(BUSYBOX)),
        command: vec!["sh".into(), "-c".into(), "echo hello; sleep 3600".into()],
        log_path: "bb/0.log".into(),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), "bb".to_string())]),
        linux: Some(api::LinuxContainerConfig {
            // sent again per container, or it joins the sandbox's PID namespace
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn container_state(cri: &CriRuntime, id: &str) -> TestResult<api::ContainerStatus> {
    Ok(cri.container_status(id, false).await?.status.ok_or("no status")?)
}

/// The scenario; returns the sandbox ids it created so the leftover check can look for them.
async fn pod_lifecycle(node: &TestNode, sandbox_ids: &mut Vec<String>) -> TestResult {
    let cri = node.wait_ready().await?;

    let v = cri.version().await?;
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let status = cri.status(false).await?.status.ok_or("no runtime status")?;
    for want in ["RuntimeReady", "NetworkReady"] {
        assert!(status.conditions.iter().any(|c| c.r#type == want && c.status), "{want} in {:?}", status.conditions);
    }

    // images: imported, never pulled; a pull has nowhere to go and must fail fast
    let busybox = cri.image_status(image_spec(BUSYBOX), false).await?.ok_or("busybox not imported")?;
    assert!(busybox.repo_tags.iter().any(|t| t == "docker.io/library/busybox:1.36"), "{:?}", busybox.repo_tags);
    assert!(cri.image_status(image_spec("docker.io/library/nosuchimage:1"), false).await?.is_none());
    let all = cri.list_images(None).await?;
    for want in [SANDBOX_IMAGE, BUSYBOX, "docker.io/library/nginx:latest"] {
        assert!(all.iter().any(|i| i.repo_tags.iter().any(|t| t == want)), "{want} not listed");
    }
    let auth = api::AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() };
    let started = Instant::now();
    let pull = cri.pull_image(image_spec("docker.io/library/nosuchimage:1"), Some(auth), None).await;
    assert!(pull.is_err(), "pull from the unreachable mirror must fail: {pull:?}");
    assert!(started.elapsed() < Duration::from_secs(30));

    // sandbox
    let uid = format!("uid-{}", unique_suffix());
    let sc = sandbox_config(node, &uid);
    let sb = cri.run_pod_sandbox(sc.clone(), "").await?;
    sandbox_ids.push(sb.clone());
    let st = cri.pod_sandbox_status(&sb, false).await?.status.ok_or("no sandbox status")?;
    assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with("198.19.254."), "pod ip {ip:?}");
    let listed =
        cri.list_pod_sandbox(Some(sandbox_filter_by_labels([("io.kubernetes.pod.uid", uid.as_str())]))).await?;
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [sb.as_str()]);
    let other = cri.list_pod_sandbox(Some(sandbox_filter_by_labels([("io.kubernetes.pod.uid", "nobody")]))).await?;
    assert!(other.is_empty());

    // container
    let c = cri.create_container(&sb, busybox_config(), sc.clone()).await?;
    assert_eq!(container_state(&cri, &c).await?.state, api::ContainerState::ContainerCreated as i32);
    cri.start_container(&c).await?;
    let cs = container_state(&cri, &c).await?;
    assert_eq!(cs.state, api::ContainerState::ContainerRunning as i32, "{cs:?}");
    let listed =
        cri.list_containers(Some(api::ContainerFilter { pod_sandbox_id: sb.clone(), ..Default::default() })).await?;
    assert_eq!(listed.len(), 1);

    let out = cri.exec_sync(&c, vec!["cat".into(), "/etc/hostname".into()], Duration::from_secs(10)).await?;
    assert_eq!((String::from_utf8_lossy(&out.stdout).trim(), out.exit_code), ("bb-pod", 0), "{out:?}");
    let out = cri
        .exec_sync(&c, vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()], Duration::from_secs(10))
        .await?;
    assert_eq!((String::from_utf8_lossy(&out.stderr).trim(), out.exit_code), ("oops", 3));

    // the container log, in CRI format: "<time> stdout F hello"
    let log_path = PathBuf::from(&cs.log_path);
    assert_eq!(log_path, Path::new(&sc.log_directory).join("bb/0.log"));
    let line = wait_for("hello in the container log", Duration::from_secs(10), || {
        let p = log_path.clone();
        async move { fs::read_to_string(p).ok()?.lines().find(|l| l.ends_with(" stdout F hello")).map(str::to_string) }
    })
    .await?;
    assert!(line.split(' ').next().is_some_and(|t| t.ends_with('Z')), "{line}");

    // the nginx image serves HTTP inside the pod (same network namespace as busybox)
    let ng_config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "web".into(), attempt: 0 }),
        image: Some(image_spec(NGINX)),
        log_path: "web/0.log".into(),
        linux: busybox_config().linux,
        ..Default::default()
    };
    let ng = cri.create_container(&sb, ng_config, sc.clone()).await?;
    cri.start_container(&ng).await?;
    let body = wait_for("nginx to answer on the pod's loopback", Duration::from_secs(10), || {
        let (cri, c) = (cri.clone(), c.clone());
        async move {
            let cmd = vec!["wget".into(), "-qO-".into(), "http://127.0.0.1/".into()];
            let out = cri.exec_sync(&c, cmd, Duration::from_secs(5)).await.ok()?;
            (out.exit_code == 0).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await?;
    assert_eq!(body.trim(), "hello from nginx");
    cri.stop_container(&ng, Duration::from_secs(5)).await?;
    assert_eq!(container_state(&cri, &ng).await?.state, api::ContainerState::ContainerExited as i32);
    cri.remove_container(&ng).await?;

    // streaming URLs come from the stream server on the namespace's loopback
    let exec = api::ExecRequest { container_id: c.clone(), cmd: vec!["sh".into()], stdout: true, ..Default::default() };
    let url = cri.exec(exec).await?;
    assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
    let attach = api::AttachRequest { container_id: c.clone(), stdout: true, ..Default::default() };
    assert!(cri.attach(attach).await?.contains("/attach/"));
    assert!(cri.port_forward(&sb, vec![80]).await?.contains("/portforward/"));

    // stop (sh as PID 1 ignores TERM: killed after the 1 s grace), remove
    cri.stop_container(&c, Duration::from_secs(1)).await?;
    let cs = container_state(&cri, &c).await?;
    assert_eq!(cs.state, api::ContainerState::ContainerExited as i32, "{cs:?}");
    cri.remove_container(&c).await?;
    assert!(cri.container_status(&c, false).await.err().is_some_and(|e| e.is_not_found()));

    cri.stop_pod_sandbox(&sb).await?;
    let st = cri.pod_sandbox_status(&sb, false).await?.status.ok_or("no sandbox status")?;
    assert_eq!(st.state, api::PodSandboxState::SandboxNotready as i32);
    cri.remove_pod_sandbox(&sb).await?;
    assert!(cri.pod_sandbox_status(&sb, false).await.err().is_some_and(|e| e.is_not_found()));
    assert!(cri.list_pod_sandbox(None).await?.is_empty());
    Ok(())
}

#[test]
fn containerd_pod_lifecycle_leaves_nothing_behind() -> TestResult {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces, mounts, cgroups)");
        return Ok(());
    }
    let archives = ensure_images()?;
    let mut node = TestNode::start()?;
    let containerd_pid = node.containerd_pid();
    let mut sandbox_ids = Vec::new();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = (|| -> TestResult {
        rt.block_on(node.wait_ready())?;
        node.import_images(&archives)?;
        rt.block_on(pod_lifecycle(&node, &mut sandbox_ids))
    })();
    drop(rt);

    node.teardown();
    let left = node.leftovers(&sandbox_ids);
    if let Some(pid) = containerd_pid {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "containerd {pid} still running");
    }
    result?;
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
