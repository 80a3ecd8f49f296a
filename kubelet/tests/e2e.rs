//! The real `rkube-kubelet` binary on a real node (`support::TestCluster`: a network + mount +
//! UTS namespace with containerd inside, etcd, the apiserver on the host side of the node's
//! veth), driven through the API and real kubectl 1.27, 1.30 and 1.33:
//!
//! - a pod with an init container and two containers runs: Running, init container Completed,
//!   both containers running and ready, podIP from the node's pod CIDR, hostIP the node's;
//! - `kubectl logs` (plain, `--tail`, `-f`, `--previous` after a crash), `kubectl exec` (`cat
//!   /etc/hostname`, `-i` with stdin, an exit code), `kubectl attach`, and `kubectl
//!   port-forward` with an HTTP request through it to nginx, all through the apiserver's proxy
//!   to the kubelet's :10250 and on to containerd's stream server;
//! - the kubelet's server answers `/stats/summary` and `/healthz` to the apiserver's client
//!   certificate and refuses a client without one;
//! - a crashing container goes into CrashLoopBackOff with growing delays between restarts;
//! - containerd stopped: the node goes NotReady with the runtime's reason, and Ready again with
//!   the same containers once it is back;
//! - SIGKILLing the kubelet and starting a new one restarts no container (same ids and restart
//!   counts) and the new one carries on;
//! - a deleted pod gets SIGTERM (its trap writes to a hostPath file and to its log, both read
//!   by the test) and is gone from the API within its grace period;
//! - after teardown nothing is left on the machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{ensure_images, is_root, wait_for, TestCluster, TestResult};
use component_base::testing::Kubectl;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const KUBECTL_MINORS: [u32; 3] = [27, 30, 33];

fn pod_status(p: &Pod) -> k8s_openapi::api::core::v1::PodStatus {
    p.status.clone().unwrap_or_default()
}

fn container(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod_status(p).container_statuses.unwrap_or_default().into_iter().find(|c| c.name == name)
}

async fn kubectl(k: &Arc<Kubectl>, args: &[&str]) -> TestResult<String> {
    let (k, owned): (Arc<Kubectl>, Vec<String>) = (k.clone(), args.iter().map(|s| s.to_string()).collect());
    let r = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = owned.iter().map(String::as_str).collect();
        k.run(&a)
    })
    .await?;
    if r.code != 0 {
        return Err(format!("kubectl {args:?} failed ({}):\n{}{}", r.code, r.stdout, r.stderr).into());
    }
    Ok(r.stdout)
}

/// Runs kubectl with `input` on its stdin; returns (exit code, stdout, stderr).
async fn kubectl_stdin(k: &Arc<Kubectl>, args: &[&str], input: &'static [u8]) -> TestResult<(i32, String, String)> {
    let mut cmd = k.command(args);
    cmd.stdin(Stdio::piped());
    tokio::task::spawn_blocking(move || -> TestResult<(i32, String, String)> {
        let mut child = cmd.spawn()?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        stdin.write_all(input)?;
        drop(stdin);
        let out = child.wait_with_output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    })
    .await?
}

/// Starts a long-running kubectl and reads its stdout lines until `want` returns a value
/// (or the deadline passes); the process is killed afterwards.
async fn kubectl_until<T: Send + 'static>(
    k: &Arc<Kubectl>,
    args: &[&str],
    timeout: Duration,
    want: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> TestResult<T> {
    let mut cmd = k.command(args);
    let what = format!("{args:?}");
    tokio::task::spawn_blocking(move || -> TestResult<T> {
        let mut want = want;
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let pid = child.id();
        // A watchdog: the read below blocks, so the deadline kills the process to end it.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        let watchdog = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline && !d.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !d.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        });
        let mut found = None;
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = want(&line) {
                found = Some(v);
                break;
            }
            seen.push(line);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        let _ = watchdog.join();
        found.ok_or_else(|| format!("kubectl {what}: not found in output {seen:?}; stderr: {err}").into())
    })
    .await?
}

/// A port-forward through kubectl: the local port, then an HTTP GET through it.
async fn port_forward_get(k: &Arc<Kubectl>, pod: &str) -> TestResult<String> {
    let mut cmd = k.command(&["port-forward", &format!("pod/{pod}"), ":80"]);
    tokio::task::spawn_blocking(move || -> TestResult<String> {
        let mut child = cmd.spawn()?;
        let result = (|| -> TestResult<String> {
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut lines = BufReader::new(stdout).lines();
            // "Forwarding from 127.0.0.1:41234 -> 80"
            let port: u16 = loop {
                let line = lines.next().ok_or("port-forward ended without a port")??;
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    break rest.split_whitespace().next().ok_or("no port")?.parse()?;
                }
            };
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        let _ = child.kill();
        let _ = child.wait();
        result
    })
    .await?
}

/// GET on the kubelet's own HTTPS server, with the apiserver's kubelet client certificate
/// (or none): (status, body).
async fn kubelet_get(cluster: &TestCluster, path: &str, with_cert: bool) -> TestResult<(u16, String)> {
    let cert_dir = cluster.cert_dir();
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt"))?;
    let client = if with_cert {
        Some(component_base::tls::CertKey::load(
            &cert_dir.join("apiserver-kubelet-client.crt"),
            &cert_dir.join("apiserver-kubelet-client.key"),
        )?)
    } else {
        None
    };
    let tls = component_base::tls::client_config(&ca, client.as_ref())?;
    let ip = cluster.node.node_ip;
    let tcp = tokio::net::TcpStream::connect((ip, 10250)).await?;
    let name = rustls::pki_types::ServerName::from(std::net::IpAddr::from(ip));
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", format!("{ip}:10250"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body()).await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// (name, container id, restart count) of each container.
fn ids_of(p: &Pod) -> Vec<(String, String, i32)> {
    pod_status(p)
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.container_id.unwrap_or_default(), c.restart_count))
        .collect()
}

fn ipv4_in(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(ip), Ok(net), Ok(len)) =
        (ip.parse::<std::net::Ipv4Addr>(), net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>())
    else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

async fn scenario(cluster: &mut TestCluster) -> TestResult {
    let client = cluster.client.clone();
    let node_name = cluster.node.name.clone();
    cluster.start_kubelet()?;

    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("the node to be Ready", WAIT, || async {
        let n = nodes.get_opt(&node_name).await.ok().flatten()?;
        let ready = n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await?;
    wait_for("the node's images", WAIT, || async {
        let images = nodes.get(&node_name).await.ok()?.status?.images?;
        images.iter().any(|i| i.names.iter().flatten().any(|n| n == "docker.io/library/busybox:1.36")).then_some(())
    })
    .await?;
    let node = nodes.get(&node_name).await?;
    let status = node.status.clone().unwrap_or_default();
    let addr = status.addresses.unwrap_or_default();
    assert!(addr.iter().any(|a| a.type_ == "InternalIP" && a.address == cluster.node.node_ip.to_string()), "{addr:?}");
    let info = status.node_info.clone().unwrap_or_default();
    assert!(info.container_runtime_version.starts_with("containerd://"), "{info:?}");
    assert_eq!(node.spec.and_then(|s| s.pod_cidr).as_deref(), Some(support::POD_SUBNET));
    assert_eq!(node.metadata.labels.unwrap_or_default().get("rkube.test/node").map(String::as_str), Some("true"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ticker = "trap 'echo got-SIGTERM; echo got-SIGTERM > /out/term; exit 0' TERM; echo hello-from-sh; i=0; \
                  while true; do echo tick $i; i=$((i+1)); sleep 0.3; done";
    let host_dir = cluster.node.dir.join("hostpath");
    let app: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"nodeName": node_name, "terminationGracePeriodSeconds": 10,
                 "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["sh", "-c", "echo init-done"]}],
                 "containers": [
                     {"name": "web", "image": "nginx:1.25"},
                     {"name": "sh", "image": "busybox:1.36", "command": ["sh", "-c", ticker],
                      "volumeMounts": [{"name": "out", "mountPath": "/out"}]},
                 ],
                 "volumes": [{"name": "out", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}}]},
    }))?;
    let created = Instant::now();
    pods.create(&PostParams::default(), &app).await?;

    // ---- it runs ----
    wait_for("app Running and Ready", WAIT, || async {
        let p = pods.get("app").await.ok()?;
        let st = pod_status(&p);
        let ready = st.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (st.phase.as_deref() == Some("Running") && ready).then_some(())
    })
    .await?;
    eprintln!("app Running and Ready after {:?}", created.elapsed());
    let p = pods.get("app").await?;
    let st = pod_status(&p);
    let ip = st.pod_ip.clone().unwrap_or_default();
    assert!(ipv4_in(&ip, support::POD_SUBNET), "podIP {ip}");
    assert_eq!(st.host_ip.as_deref(), Some(cluster.node.node_ip.to_string().as_str()));
    let init = st.init_container_statuses.clone().unwrap_or_default();
    let init_done = init.first().and_then(|c| c.state.clone()).and_then(|s| s.terminated);
    assert_eq!(init_done.map(|t| (t.exit_code, t.reason)), Some((0, Some("Completed".into()))), "{init:?}");
    for name in ["web", "sh"] {
        let c = container(&p, name).ok_or(format!("no status for {name}"))?;
        assert!(c.ready && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some(), "{c:?}");
        assert!(c.container_id.as_deref().is_some_and(|id| id.starts_with("containerd://")), "{c:?}");
        assert_eq!(c.restart_count, 0);
    }

    // ---- a kubelet killed and started again restarts nothing ----
    let k33 = Arc::new(Kubectl::new(33, cluster.cert_dir()));
    let before = pods.get("app").await?;
    let ids = ids_of;
    let ids_before = ids(&before);
    cluster.kill_kubelet();
    cluster.start_kubelet()?;
    let restarted = Instant::now();
    // The new kubelet is up once it serves; then it must leave the pod alone while it syncs.
    wait_for("the new kubelet to serve logs", WAIT, || {
        let k = k33.clone();
        async move { kubectl(&k, &["logs", "app", "-c", "sh", "--tail=1"]).await.ok() }
    })
    .await?;
    while restarted.elapsed() < Duration::from_secs(4) {
        let now = pods.get("app").await?;
        assert_eq!(ids(&now), ids_before, "the new kubelet changed the containers");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // ---- the runtime down: the node goes NotReady with the reason, pods untouched; back: Ready ----
    let ready_reason = |n: Node| -> Option<(String, String)> {
        let c = n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")?;
        Some((c.status, c.message.unwrap_or_default()))
    };
    let running_ids = ids_of(&pods.get("app").await?);
    cluster.node.stop_containerd();
    let why = wait_for("NotReady while containerd is down", WAIT, || async {
        let (status, message) = ready_reason(nodes.get(&node_name).await.ok()?)?;
        (status == "False").then_some(message)
    })
    .await?;
    assert!(why.contains("container runtime"), "{why}");
    cluster.node.spawn_containerd()?;
    wait_for("Ready again", WAIT, || async {
        (ready_reason(nodes.get(&node_name).await.ok()?)?.0 == "True").then_some(())
    })
    .await?;
    assert_eq!(ids_of(&pods.get("app").await?), running_ids, "containers changed across a runtime restart");

    // The crasher now: after the kubelet restart (which forgets backoffs, as upstream's does) and
    // after the runtime restart, because a containerd stopped between a start and its exit
    // leaves an attempt that never exited and so restarts without a backoff. Its backoff delays
    // run while the other checks do.
    let crash: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crash"},
        "spec": {"nodeName": node_name, "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "echo crashing; exit 1"]}]},
    }))?;
    pods.create(&PostParams::default(), &crash).await?;
    // ---- kubectl logs, exec, port-forward, attach, each kubectl version ----
    wait_for("a few ticks in the log", WAIT, || {
        let k = k33.clone();
        async move { kubectl(&k, &["logs", "app", "-c", "sh"]).await.ok().filter(|o| o.contains("tick 3\n")) }
    })
    .await?;
    for minor in KUBECTL_MINORS {
        let k = Arc::new(Kubectl::new(minor, cluster.cert_dir()));
        let v = format!("kubectl 1.{minor}");
        let out = kubectl(&k, &["logs", "app", "-c", "sh"]).await?;
        assert!(out.starts_with("hello-from-sh\ntick 0\n"), "{v} logs: {out}");
        assert_eq!(kubectl(&k, &["logs", "app", "-c", "init"]).await?, "init-done\n", "{v}");
        let tail = kubectl(&k, &["logs", "app", "-c", "sh", "--tail=2"]).await?;
        assert_eq!(tail.lines().count(), 2, "{v} --tail=2: {tail}");
        assert!(tail.lines().all(|l| l.starts_with("tick ")), "{v}: {tail}");
        let stamped = kubectl(&k, &["logs", "app", "-c", "sh", "--timestamps", "--limit-bytes=200"]).await?;
        assert!(stamped.len() <= 200 && stamped.split(' ').next().is_some_and(|t| t.ends_with('Z')), "{v}: {stamped}");
        // -f: lines written after kubectl started arrive
        let last: u64 =
            tail.lines().last().and_then(|l| l.strip_prefix("tick ")).and_then(|n| n.parse().ok()).unwrap_or(0);
        let followed =
            kubectl_until(&k, &["logs", "-f", "app", "-c", "sh", "--tail=1"], Duration::from_secs(20), move |l| {
                l.strip_prefix("tick ").and_then(|n| n.parse::<u64>().ok()).filter(|n| *n > last + 3)
            })
            .await?;
        assert!(followed > last + 3);

        let host = kubectl(&k, &["exec", "app", "-c", "sh", "--", "cat", "/etc/hostname"]).await?;
        assert_eq!(host.trim(), "app", "{v} exec");
        let (code, out, err) =
            kubectl_stdin(&k, &["exec", "-i", "app", "-c", "sh", "--", "cat"], b"through-stdin\n").await?;
        assert_eq!((code, out.as_str()), (0, "through-stdin\n"), "{v} exec -i: {err}");
        let (code, _, err) = kubectl_stdin(&k, &["exec", "app", "-c", "sh", "--", "sh", "-c", "exit 3"], b"").await?;
        assert_eq!(code, 3, "{v} exec exit code: {err}");

        let body = port_forward_get(&k, "app").await?;
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("hello from nginx"), "{v} port-forward: {body}");

        let attached = kubectl_until(&k, &["attach", "app", "-c", "sh"], Duration::from_secs(20), |l| {
            l.starts_with("tick ").then(|| l.to_string())
        })
        .await?;
        assert!(attached.starts_with("tick "), "{v} attach");
    }

    // ---- the kubelet's own server ----
    let (code, body) = kubelet_get(cluster, "/stats/summary", true).await?;
    assert_eq!(code, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(summary["node"]["nodeName"], node_name.as_str());
    let app_stats = summary["pods"].as_array().and_then(|ps| ps.iter().find(|p| p["podRef"]["name"] == "app").cloned());
    let app_stats = app_stats.ok_or(format!("no stats for app in {summary}"))?;
    assert!(app_stats["memory"]["workingSetBytes"].as_u64().is_some_and(|b| b > 0), "{app_stats}");
    assert!(app_stats["containers"].as_array().is_some_and(|c| c.len() == 2), "{app_stats}");
    assert_eq!(kubelet_get(cluster, "/healthz", true).await?, (200, "ok".to_string()));
    let (code, body) = kubelet_get(cluster, "/pods", true).await?;
    let list: serde_json::Value = serde_json::from_str(&body)?;
    let names: Vec<&str> =
        list["items"].as_array().into_iter().flatten().filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert_eq!((code, names), (200, vec!["app", "crash"]), "{body}");
    let (code, metrics) = kubelet_get(cluster, "/metrics", true).await?;
    assert!(code == 200 && metrics.contains("kubelet_node_name"), "{metrics}");
    assert_eq!(kubelet_get(cluster, "/healthz", false).await?.0, 401);
    // kubectl 1.30+ offered WebSocket first: containerd refused it (no v5.channel.k8s.io), the
    // refusal went back unchanged, and kubectl fell back to SPDY (101).
    let exec_codes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kubelet_http_requests_total") && l.contains("path=\"exec\""))
        .collect();
    assert!(exec_codes.iter().any(|l| l.contains("code=\"101\"")), "{exec_codes:?}");
    assert!(exec_codes.iter().any(|l| l.contains("code=\"403\"") || l.contains("code=\"400\"")), "{exec_codes:?}");

    // ---- CrashLoopBackOff with growing delays, and --previous ----
    let crash_seen = wait_for("crash restarted twice and backing off", WAIT, || async {
        let p = pods.get("crash").await.ok()?;
        let c = container(&p, "c")?;
        let waiting = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (c.restart_count >= 2 && waiting == "CrashLoopBackOff").then_some(c)
    })
    .await?;
    let last = crash_seen.last_state.and_then(|s| s.terminated).ok_or("no lastState.terminated")?;
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let k = Arc::new(Kubectl::new(33, cluster.cert_dir()));
    assert_eq!(kubectl(&k, &["logs", "crash", "--previous"]).await?, "crashing\n");
    // The kubelet's containers carry their attempt: the start times of attempts 1, 2, 3 show
    // the delays growing (10 s, then 20 s in upstream's backoff).
    let starts = wait_for("a third restart", Duration::from_secs(60), || async {
        let cri = cluster.node.wait_ready().await.ok()?;
        let mut cs = rkube_kubelet::runtime::ContainerRuntime::list_containers(&cri, None)
            .await
            .ok()?
            .into_iter()
            .filter(|c| c.metadata.as_ref().is_some_and(|m| m.name == "c"))
            .map(|c| (c.metadata.map(|m| m.attempt).unwrap_or(0), c.created_at))
            .collect::<Vec<_>>();
        cs.sort();
        (cs.len() >= 4).then_some(cs)
    })
    .await?;
    let gap = |a: usize, b: usize| Duration::from_nanos((starts[b].1 - starts[a].1).max(0) as u64);
    assert!(gap(2, 3) > gap(1, 2), "delays must grow: {starts:?}");
    assert!(gap(2, 3) >= Duration::from_secs(15), "second backoff: {:?}", gap(2, 3));

    // ---- deletion: SIGTERM, then gone within the grace period ----
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let log = cluster.node.dir.join(format!("logs/default_app_{uid}/sh/0.log"));
    let deleted = Instant::now();
    pods.delete("app", &DeleteParams::default()).await?;
    wait_for("app gone from the API", Duration::from_secs(15), || async {
        pods.get_opt("app").await.ok()?.is_none().then_some(())
    })
    .await?;
    assert!(deleted.elapsed() < Duration::from_secs(12), "took {:?} (grace 10 s)", deleted.elapsed());
    let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    assert!(text.lines().any(|l| l.ends_with(" stdout F got-SIGTERM")), "no SIGTERM in {}", Path::new(&log).display());
    // ... and its handler wrote to the hostPath volume
    let term = std::fs::read_to_string(host_dir.join("term")).map_err(|e| format!("hostPath file: {e}"))?;
    assert_eq!(term, "got-SIGTERM\n");

    pods.delete("crash", &DeleteParams::default()).await?;
    wait_for("crash gone", Duration::from_secs(15), || async {
        pods.get_opt("crash").await.ok()?.is_none().then_some(())
    })
    .await?;
    Ok(())
}

#[test]
fn kubelet_runs_pods_on_a_real_node() -> TestResult {
    if !is_root() {
        eprintln!("skipping: needs root (network namespaces, mounts, cgroups)");
        return Ok(());
    }
    let archives = ensure_images()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut cluster = rt.block_on(TestCluster::start(&archives))?;
    let result = rt.block_on(scenario(&mut cluster));
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
