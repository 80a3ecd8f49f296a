//! Pod features of the real `rkube-kubelet` on a real node (`support::TestCluster`: containerd in
//! a network + mount namespace, etcd, the apiserver), checked through the API:
//!
//! - ClusterFirst DNS in the container's resolv.conf, the pod in the managed /etc/hosts, a
//!   `medium: Memory` emptyDir on tmpfs;
//! - a changed ConfigMap reaches the files of a running pod's volume;
//! - configMap and secret volumes and env (`configMapKeyRef`, `secretKeyRef`, `fieldRef`,
//!   `envFrom`) are what the container sees;
//! - a projected volume carries a service account token from the TokenRequest API (a JWT);
//! - a volume naming a missing ConfigMap gives FailedMount events, and the pod starts once the
//!   ConfigMap is created;
//! - a Guaranteed pod runs with its limits in its cgroup (CPU quota, memory limit) and reports
//!   its QoS class;
//! - a 20 MiB memory limit kills a process allocating 100 MiB: terminated with OOMKilled;
//! - a failing liveness probe restarts the container, with the Killing event;
//! - a failing readiness probe keeps the pod Running but not Ready;
//! - an image that does not exist: ErrImagePull, then ImagePullBackOff, with upstream's events;
//!   a command that is not in the image: the runtime's message in a Failed event;
//! - postStart and preStop hooks run (they write to a hostPath the test reads);
//! - a hostPort answers on the node (CNI portmap, asked on the node's loopback);
//! - deleted pods lose their volume directories and pod cgroups;
//! - after teardown nothing is left on the machine.

use std::path::Path;
use std::time::Duration;

use crate::support::{ensure_images, is_root, wait_for, TestCluster, TestResult};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, ServiceAccount};
use kube::api::{Api, LogParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn container_status(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.clone()?.container_statuses?.into_iter().find(|c| c.name == name)
}

fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status.clone()?.conditions?.into_iter().find(|c| c.type_ == t).map(|c| c.status)
}

/// Events about `pod` as (reason, message).
async fn events_of(client: &kube::Client, pod: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let list = api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn scenario(cluster: &mut TestCluster) -> TestResult {
    let client = cluster.client.clone();
    let node = cluster.node.name.clone();
    cluster.start_kubelet()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "app-config"}, "data": {"mode": "fast", "app.conf": "x=1"}}),
        )?,
    )
    .await?;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app-secret"}, "data": {"password": "czNjcjN0"}}))?,
        )
        .await?;

    // ---- a projected service account token ----
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    sas.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "builder"}}))?).await?;
    let token: Pod = serde_json::from_value(json!({
        "metadata": {"name": "token"},
        "spec": {"nodeName": node, "serviceAccountName": "builder", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36",
                "command": ["sh", "-c", "head -c 3 /var/run/secrets/tokens/t; echo; cat /var/run/secrets/tokens/ns; echo; sleep 3600"],
                "volumeMounts": [{"name": "tok", "mountPath": "/var/run/secrets/tokens"}]}],
            "volumes": [{"name": "tok", "projected": {"sources": [
                {"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}}]},
    }))?;
    pods.create(&PostParams::default(), &token).await?;

    // ---- a missing ConfigMap holds the pod back (FailedMount); it starts once it exists ----
    let late: Pod = serde_json::from_value(json!({
        "metadata": {"name": "late"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", "cat /cfg/k; echo; sleep 3600"],
            "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "late-config"}}]},
    }))?;
    pods.create(&PostParams::default(), &late).await?;

    // ---- volumes and env from a ConfigMap and a Secret ----
    let script = "echo mode=$MODE pw=$PW pod=$POD_NAME ip=$POD_IP from=$CFG_mode; \
                  echo conf=$(cat /etc/cfg/app.conf) secret=$(cat /etc/sec/password); \
                  grep -c tmpfs /proc/mounts; grep ^nameserver /etc/resolv.conf; grep ^search /etc/resolv.conf; \
                  grep -w vols /etc/hosts; awk '$2==\"/cache\"{print $3}' /proc/mounts; sleep 3600";
    let vol: Pod = serde_json::from_value(json!({
        "metadata": {"name": "vols"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", script],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"},
                             {"name": "cache", "mountPath": "/cache"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}},
                        {"name": "sec", "secret": {"secretName": "app-secret"}},
                        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}]},
    }))?;
    pods.create(&PostParams::default(), &vol).await?;

    // ---- a ConfigMap volume follows changes ----
    let watcher: Pod = serde_json::from_value(json!({
        "metadata": {"name": "watcher"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", "while true; do cat /etc/cfg/mode; echo; sleep 1; done"],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}}]},
    }))?;
    pods.create(&PostParams::default(), &watcher).await?;

    // ---- Guaranteed: requests = limits, enforced by the cgroup ----
    let guaranteed: Pod = serde_json::from_value(json!({
        "metadata": {"name": "guaranteed"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us; sleep 3600"],
            "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}, "requests": {"cpu": "100m", "memory": "32Mi"}}}]},
    }))?;
    pods.create(&PostParams::default(), &guaranteed).await?;

    // ---- 100 MiB in a 20 MiB limit: OOMKilled ----
    let oom: Pod = serde_json::from_value(json!({
        "metadata": {"name": "oom"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"],
            "resources": {"limits": {"memory": "20Mi"}}}]},
    }))?;
    pods.create(&PostParams::default(), &oom).await?;

    // ---- liveness: healthy for 3 s, then the probe fails and the container restarts ----
    let live: Pod = serde_json::from_value(json!({
        "metadata": {"name": "live"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"],
            "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}}]},
    }))?;
    pods.create(&PostParams::default(), &live).await?;

    // ---- readiness never succeeds: Running, not Ready ----
    let unready: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unready"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "busybox:1.36",
            "command": ["sh", "-c", "sleep 3600"],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}}]},
    }))?;
    pods.create(&PostParams::default(), &unready).await?;

    // ---- bad input: a missing image, a missing command ----
    let noimage: Pod = serde_json::from_value(json!({
        "metadata": {"name": "noimage"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:does-not-exist"}]},
    }))?;
    pods.create(&PostParams::default(), &noimage).await?;
    let badcmd: Pod = serde_json::from_value(json!({
        "metadata": {"name": "badcmd"},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox:1.36", "command": ["/no/such/binary"]}]},
    }))?;
    pods.create(&PostParams::default(), &badcmd).await?;

    // ---- hooks and a hostPort ----
    let hooks_dir = cluster.node.dir.join("hooks");
    let hooks: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hooks"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 5, "containers": [{"name": "web", "image": "nginx:1.25",
            "ports": [{"containerPort": 80, "hostPort": 18080}],
            "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo post > /h/post"]}},
                          "preStop": {"exec": {"command": ["sh", "-c", "echo pre > /h/pre"]}}},
            "volumeMounts": [{"name": "h", "mountPath": "/h"}]}],
            "volumes": [{"name": "h", "hostPath": {"path": hooks_dir.to_string_lossy(), "type": "DirectoryOrCreate"}}]},
    }))?;
    pods.create(&PostParams::default(), &hooks).await?;

    wait_for("vols Running", WAIT, || async {
        let p = pods.get("vols").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await?;
    let logs = wait_for("vols logs", WAIT, || async {
        let l = pods.logs("vols", &LogParams::default()).await.ok()?;
        (l.lines().count() >= 7).then_some(l)
    })
    .await?;
    let ip = pods.get("vols").await?.status.and_then(|s| s.pod_ip).unwrap_or_default();
    let mut lines = logs.lines();
    assert_eq!(lines.next(), Some(format!("mode=fast pw=s3cr3t pod=vols ip={ip} from=fast").as_str()), "{logs}");
    assert_eq!(lines.next(), Some("conf=x=1 secret=s3cr3t"), "{logs}");
    let tmpfs: u32 = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    assert!(tmpfs >= 2, "the secret and the memory emptyDir are tmpfs: {logs}");
    assert_eq!(lines.next(), Some("nameserver 198.19.128.10"), "ClusterFirst DNS: {logs}");
    let search = lines.next().unwrap_or_default();
    assert!(search.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local"), "{logs}");
    assert_eq!(lines.next(), Some(format!("{ip}\tvols").as_str()), "the managed /etc/hosts: {logs}");
    assert_eq!(lines.next(), Some("tmpfs"), "emptyDir medium Memory: {logs}");

    let token_logs = wait_for("token logs", WAIT, || async {
        let l = pods.logs("token", &LogParams::default()).await.ok()?;
        (l.lines().count() >= 2).then_some(l)
    })
    .await?;
    assert_eq!(token_logs, "eyJ\ndefault\n", "a JWT and the namespace");

    wait_for("watcher reads the ConfigMap", WAIT, || async {
        let l = pods.logs("watcher", &LogParams::default()).await.ok()?;
        l.contains("fast\n").then_some(())
    })
    .await?;
    let patch = json!({"data": {"mode": "slow"}});
    cms.patch("app-config", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_for("watcher sees the changed ConfigMap", WAIT, || async {
        let l = pods.logs("watcher", &LogParams::default()).await.ok()?;
        l.contains("slow\n").then_some(())
    })
    .await?;

    let failed_mount = wait_for("FailedMount for late", WAIT, || async {
        events_of(&client, "late").await.into_iter().find(|(r, _)| r == "FailedMount")
    })
    .await?;
    assert_eq!(failed_mount.1, "MountVolume.SetUp failed for volume \"cfg\" : configmap \"late-config\" not found");
    let p = pods.get("late").await?;
    let waiting = container_status(&p, "c").and_then(|c| c.state?.waiting?.reason);
    assert_eq!(waiting.as_deref(), Some("ContainerCreating"), "{p:?}");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "late-config"}, "data": {"k": "arrived"}}))?,
    )
    .await?;
    wait_for("late Running with its ConfigMap", WAIT, || async {
        let l = pods.logs("late", &LogParams::default()).await.ok()?;
        (l.trim() == "arrived").then_some(())
    })
    .await?;

    let limits = wait_for("guaranteed logs", WAIT, || async {
        let l = pods.logs("guaranteed", &LogParams::default()).await.ok()?;
        (l.lines().count() >= 2).then_some(l)
    })
    .await?;
    assert_eq!(limits, format!("{}\n10000\n", 32 << 20), "memory limit and CFS quota");
    let p = pods.get("guaranteed").await?;
    assert_eq!(p.status.and_then(|s| s.qos_class).as_deref(), Some("Guaranteed"));

    let terminated = wait_for("oom terminated", WAIT, || async {
        let p = pods.get("oom").await.ok()?;
        container_status(&p, "c")?.state?.terminated
    })
    .await?;
    assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"), "{terminated:?}");
    assert_eq!(terminated.exit_code, 137, "{terminated:?}");

    wait_for("live restarted by its liveness probe", WAIT, || async {
        let p = pods.get("live").await.ok()?;
        (container_status(&p, "c")?.restart_count >= 1).then_some(())
    })
    .await?;
    let evs = events_of(&client, "live").await;
    assert!(evs.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Liveness probe failed:")), "{evs:?}");
    assert!(
        evs.contains(&("Killing".into(), "Container c failed liveness probe, will be restarted".into())),
        "{evs:?}"
    );

    let p = pods.get("unready").await?;
    assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&p, "ContainersReady").as_deref(), Some("False"));
    let c = container_status(&p, "c").ok_or("no status")?;
    assert!(!c.ready && c.started == Some(true), "{c:?}");
    let evs = events_of(&client, "unready").await;
    assert!(evs.iter().any(|(r, m)| r == "Unhealthy" && m.starts_with("Readiness probe failed:")), "{evs:?}");

    // ---- bad input is reported as upstream does ----
    wait_for("noimage in ImagePullBackOff", WAIT, || async {
        let p = pods.get("noimage").await.ok()?;
        let w = container_status(&p, "c")?.state?.waiting?;
        (w.reason.as_deref() == Some("ImagePullBackOff")).then_some(())
    })
    .await?;
    let evs = events_of(&client, "noimage").await;
    for (reason, prefix) in [
        ("Pulling", "Pulling image \"busybox:does-not-exist\""),
        ("Failed", "Failed to pull image \"busybox:does-not-exist\": "),
        ("Failed", "Error: ErrImagePull"),
        ("BackOff", "Back-off pulling image \"busybox:does-not-exist\""),
    ] {
        assert!(evs.iter().any(|(r, m)| r == reason && m.starts_with(prefix)), "{reason} {prefix}: {evs:?}");
    }
    let failed = wait_for("badcmd Failed event", WAIT, || async {
        events_of(&client, "badcmd").await.into_iter().find(|(r, m)| r == "Failed" && m.contains("/no/such/binary"))
    })
    .await?;
    assert!(failed.1.starts_with("Error: "), "{failed:?}");

    // ---- hooks and hostPort ----
    wait_for("hooks Running", WAIT, || async {
        let p = pods.get("hooks").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await?;
    assert_eq!(std::fs::read_to_string(hooks_dir.join("post"))?, "post\n", "postStart ran");
    // From inside the node to its loopback: portmap DNATs (and masquerades) it to the pod. The
    // harness's pods have no default route, so a client outside the pod subnet without that
    // masquerade would get no answer.
    let url = "http://127.0.0.1:18080/".to_string();
    let node = &cluster.node;
    let body = wait_for("nginx on the hostPort", WAIT, || {
        let out = node.command("curl").args(["-s", "-m", "5", &url]).output();
        async move {
            let out = out.ok()?;
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    })
    .await?;
    assert!(body.contains("nginx") || body.contains("<html"), "{body}");
    pods.delete("hooks", &Default::default()).await?;
    wait_for("preStop ran", WAIT, || async {
        std::fs::read_to_string(hooks_dir.join("pre")).ok().filter(|s| s == "pre\n")
    })
    .await?;

    // Deleting the pods tears their volumes down (tmpfs unmounted, directories removed).
    let mut uids = Vec::new();
    for name in ["vols", "late", "live", "unready", "oom", "token", "noimage", "badcmd", "watcher", "guaranteed"] {
        uids.push(pods.get(name).await?.metadata.uid.unwrap_or_default());
        pods.delete(name, &Default::default()).await?;
    }
    let pods_dir = cluster.node.dir.join("kubelet/pods");
    wait_for("pod volume directories removed", WAIT, || {
        let pods_dir = pods_dir.clone();
        async move {
            let left = std::fs::read_dir(&pods_dir).map(|d| d.count()).unwrap_or(0);
            (left == 0).then_some(())
        }
    })
    .await?;
    // ... and their pod cgroups (runc removes only the containers').
    let kubepods = format!("{}/kubepods", cluster.node.cgroup_parent.trim_matches('/'));
    let pod_cgroups_left = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|h| {
                let base = h.path().join(&kubepods);
                ["", "burstable", "besteffort"].map(|tier| base.join(tier))
            })
            .flat_map(|tier| std::fs::read_dir(tier).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| uids.iter().any(|u| *n == format!("pod{u}")))
            .collect()
    };
    let gone = wait_for("pod cgroups removed", WAIT, || {
        let left = pod_cgroups_left();
        async move { left.is_empty().then_some(()) }
    })
    .await;
    assert!(gone.is_ok(), "pod cgroups left: {:?}", pod_cgroups_left());
    Ok(())
}

#[test]
fn kubelet_pod_features_on_a_real_node() -> TestResult {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces, mounts, cgroups)");
        return Ok(());
    }
    let archives = ensure_images()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cluster = rt.block_on(TestCluster::start(&archives))?;
    let result = rt.block_on(scenario(&mut cluster));
    if result.is_err() {
        let log = std::fs::read_to_string(cluster.node.dir.join("kubelet.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("kubelet log (last lines, newest first):\n{}", tail.join("\n"));
    }
    let containerd_pid = cluster.node.containerd_pid();
    let sandbox_ids = cluster.node.sandbox_ids();
    cluster.kill_kubelet();
    cluster.node.teardown();
    let left = cluster.node.leftovers(&sandbox_ids);
    drop(cluster);
    drop(rt);
    if let Some(pid) = containerd_pid {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "containerd {pid} still running");
    }
    result?;
    assert!(left.is_empty(), "left behind: {left:#?}");
    Ok(())
}
