//! End to end: real local clusters made by `rkube`, the real kubectl, and nothing left behind.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rkube_e2e::*;

const POD_WAIT: Duration = Duration::from_secs(60);

/// For `kubectl port-forward`, which binds it later.
fn free_port() -> u16 {
    component_base::ports::free_loopback_port().expect("a free loopback port")
}

/// `curl http://127.0.0.1:<port>/` (a kubectl port-forward), as the README's tour does.
fn http_get_local(port: u16) -> Option<String> {
    let out =
        Command::new("curl").args(["-s", "--max-time", "3", &format!("http://127.0.0.1:{port}/")]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `kubectl port-forward <target> <local>:80` and returns what GET / answers, or None
/// when nothing answers within `timeout`.
fn port_forward_try(c: &TestCluster, target: &str, timeout: Duration) -> Option<String> {
    let port = free_port();
    let mut pf = Command::new("kubectl")
        .args(["port-forward", target, &format!("{port}:80")])
        .env("HOME", c.home.path())
        .env("KUBECONFIG", &c.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let deadline = Instant::now() + timeout;
    let body = loop {
        if let Some(b) = http_get_local(port).filter(|b| !b.is_empty()) {
            break Some(b);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = pf.kill();
    let _ = pf.wait();
    body
}

fn port_forward_get(c: &TestCluster, target: &str) -> String {
    port_forward_try(c, target, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("port-forward to {target} never answered"))
}

fn pod_phase_ip_node(c: &TestCluster, pod: &str) -> (String, String, String) {
    let out = c.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.podIP} {.spec.nodeName}"]);
    let mut w = out.split_whitespace().map(str::to_owned);
    (w.next().unwrap_or_default(), w.next().unwrap_or_default(), w.next().unwrap_or_default())
}

fn wait_running(c: &TestCluster, pod: &str) -> (String, String) {
    c.wait_kubectl(
        &format!("pod {pod} Running"),
        POD_WAIT,
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        |s| s == "Running",
    );
    let (_, ip, node) = pod_phase_ip_node(c, pod);
    (ip, node)
}

/// A pod pinned to a node with spec.nodeName, so it runs without a scheduler.
/// `restart` is the pod's restartPolicy: `Always` for pods that must survive a node restart.
fn run_pinned(c: &TestCluster, name: &str, node: &str, image: &str, restart: &str, command: Option<&str>) {
    let overrides = format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#);
    let restart = format!("--restart={restart}");
    let mut args = vec!["run", name, "--image", image, &restart, "--overrides", &overrides];
    if let Some(cmd) = command {
        args.extend(["--", "sh", "-c", cmd]);
    }
    c.kubectl_ok(&args);
}

fn ready_nodes(c: &TestCluster) -> Vec<(String, String)> {
    let out = c.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3 && w[2] == "True").then(|| (w[0].to_owned(), w[1].to_owned()))
        })
        .collect()
}

/// What an in-cluster client reads works: the ServiceAccount admission plugin gave the pod the
/// `default` service account and a token volume, the kubelet filled it (a bound token from
/// TokenRequest, the CA from the `kube-root-ca.crt` ConfigMap, the namespace), and the token
/// authenticates to the apiserver, whose certificate that CA verifies.
fn in_cluster_credentials_work(c: &TestCluster, pod: &str) {
    const DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let sa = c.kubectl_ok(&["get", "pod", pod, "-o", "jsonpath={.spec.serviceAccountName}"]);
    assert_eq!(sa, "default");
    let ns = c.kubectl_ok(&["exec", pod, "--", "cat", &format!("{DIR}/namespace")]);
    assert_eq!(ns, "default");
    let ca = c.kubectl_ok(&["exec", pod, "--", "cat", &format!("{DIR}/ca.crt")]);
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    let token = c.kubectl_ok(&["exec", pod, "--", "cat", &format!("{DIR}/token")]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let server = c.kubectl_ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let ca_file = c.home.path().join("pod-ca.crt");
    std::fs::write(&ca_file, &ca).expect("write the pod's CA");
    let get_as = |bearer: &str| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca_file)
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .arg(format!("{server}/api/v1/namespaces/default/pods/{pod}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get_as(token.trim()), "200", "the pod's token is accepted");
    assert_eq!(get_as("not-a-token"), "401");
}

fn all_processes_running(c: &TestCluster) -> bool {
    let status = c.rkube_ok(&["status", "--cluster", &c.name]);
    status.lines().filter(|l| l.contains(" running ") || l.contains(" down ")).all(|l| l.contains(" running "))
}

#[test]
fn lifecycle_create_workloads_stop_start_node_add_delete() {
    let mut c = TestCluster::create("e2el", 3, &[]);

    let list = c.rkube_ok(&["cluster", "list"]);
    assert!(list.lines().any(|l| l.starts_with(&c.name) && l.contains("running")), "{list}");
    assert!(all_processes_running(&c), "{}", c.rkube_ok(&["status", "--cluster", &c.name]));
    let images = c.rkube_ok(&["image", "ls", "--cluster", &c.name]);
    for want in ["library/nginx:1.25", "library/busybox:1.36", "pause:3.10"] {
        assert!(images.lines().any(|l| l == want), "{want} missing from\n{images}");
    }
    c.rkube_ok(&["logs", "apiserver", "--cluster", &c.name]);
    let node0 = c.record_nodes()[0].0.clone();
    c.rkube_ok(&["logs", "containerd", "--node", &node0, "--cluster", &c.name]);
    let out = c.rkube(&["logs", "kubelet", "--cluster", &c.name]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --node"), "{}", out_text(&out));
    // the kubeconfig context is current: plain kubectl reaches the cluster
    assert!(c.kubectl_ok(&["config", "current-context"]).trim() == format!("rkube-{}", c.name));
    c.kubectl_ok(&["get", "namespaces"]);

    let nodes = c.record_nodes();
    let mut ready = ready_nodes(&c);
    ready.sort();
    assert_eq!(ready, nodes, "every node Ready with the planned InternalIP");
    let wide = c.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(nodes.iter().all(|(n, ip)| wide.contains(n) && wide.contains(ip)), "{wide}");

    // pods on two different nodes, by nodeName, so this needs no scheduler
    run_pinned(&c, "client", &nodes[0].0, "busybox", "Always", Some("sleep 3600"));
    run_pinned(&c, "web", &nodes[1].0, "nginx", "Always", None);
    let (client_ip, _) = wait_running(&c, "client");
    let (web_ip, web_node) = wait_running(&c, "web");
    assert_eq!(web_node, nodes[1].0);
    let pod_cidr1 = c.record["nodes"][1]["podCidr"].as_str().unwrap().trim_end_matches(".0/24").to_owned();
    assert!(web_ip.starts_with(&format!("{pod_cidr1}.")), "{web_ip} not in {pod_cidr1}");
    in_cluster_credentials_work(&c, "client");

    // pod to pod across nodes, by IP, not NATed (nginx logs the client pod's address)
    let body = c.kubectl_ok(&["exec", "client", "--", "timeout", "5", "wget", "-qO-", &format!("http://{web_ip}/")]);
    assert_eq!(body.trim(), "hello from nginx");
    let logs = c.wait_kubectl("nginx access log", POD_WAIT, &["logs", "web"], |l| l.contains("GET /"));
    assert!(logs.contains(&client_ip), "nginx saw another address than {client_ip}:\n{logs}");
    assert_eq!(port_forward_get(&c, "pod/web").trim(), "hello from nginx");

    c.kubectl_ok(&["create", "deployment", "spread", "--image=nginx:1.25", "--replicas=6"]);
    let wide =
        c.wait_kubectl("6 spread pods Running", POD_WAIT, &["get", "pods", "-l", "app=spread", "-o", "wide"], |s| {
            s.lines().filter(|l| l.contains(" Running ")).count() == 6
        });
    let used: std::collections::BTreeSet<&str> =
        nodes.iter().map(|(n, _)| n.as_str()).filter(|n| wide.contains(&format!(" {n} "))).collect();
    assert!(used.len() >= 2, "pods not spread over nodes:\n{wide}");

    // stop -> start: same nodes and addresses, the pods run again
    c.rkube_ok(&["cluster", "stop", "--name", &c.name]);
    let netns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!netns.contains(&format!("rkube-{}-", c.name)), "{netns}");
    let status = c.rkube_ok(&["status", "--cluster", &c.name]);
    assert!(!status.contains(" running "), "{status}");
    c.rkube_ok(&["cluster", "start", "--name", &c.name, "--wait", "90s"]);
    let mut ready = ready_nodes(&c);
    ready.sort();
    assert_eq!(ready, nodes, "same nodes and addresses after start");
    let deadline = Instant::now() + POD_WAIT;
    loop {
        // exec reaches the container only when it really runs again
        let out = c.kubectl(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-qO-",
            &format!("http://{}/", pod_phase_ip_node(&c, "web").1),
        ]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hello from nginx") {
            break;
        }
        assert!(Instant::now() < deadline, "pods did not come back after start: {}", out_text(&out));
        std::thread::sleep(Duration::from_millis(300));
    }
    c.wait_kubectl("spread pods Running after start", POD_WAIT, &["get", "pods", "-l", "app=spread"], |s| {
        s.lines().filter(|l| l.contains(" Running ")).count() == 6
    });

    // node add: a DaemonSet grows to the new node
    let ds = format!("{}/manifests/examples/daemonset.yaml", workspace_root().display());
    c.kubectl_ok(&["apply", "-f", &ds]);
    c.wait_kubectl(
        "the DaemonSet on 3 nodes",
        POD_WAIT,
        &["get", "ds", "node-agent", "-o", "jsonpath={.status.numberReady}"],
        |s| s == "3",
    );
    let extra = c.rkube_ok(&["node", "add", "--cluster", &c.name, "--labels", "tier=extra"]);
    assert!(extra.contains("Added node"), "{extra}");
    c.load_record();
    let added = c.record_nodes().last().unwrap().clone();
    assert!(ready_nodes(&c).contains(&added), "{added:?} not Ready");
    let labels = c.kubectl_ok(&["get", "node", &added.0, "-o", "jsonpath={.metadata.labels.tier}"]);
    assert_eq!(labels, "extra");
    c.wait_kubectl(
        "the DaemonSet on 4 nodes",
        POD_WAIT,
        &["get", "ds", "node-agent", "-o", "jsonpath={.status.numberReady}"],
        |s| s == "4",
    );
    // the new node reaches a pod on an old node
    run_pinned(&c, "client2", &added.0, "busybox", "Always", Some("sleep 3600"));
    wait_running(&c, "client2");
    let ip = pod_phase_ip_node(&c, "web").1;
    let body = c.kubectl_ok(&["exec", "client2", "--", "timeout", "5", "wget", "-qO-", &format!("http://{ip}/")]);
    assert_eq!(body.trim(), "hello from nginx");

    c.rkube_ok(&["node", "remove", "--cluster", &c.name, "--name", &added.0]);
    let names = c.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert!(!names.contains(&added.0), "{names}");
    c.delete_and_check();
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let probe = TestCluster::named(&unique_name("e2eb"));
    // unknown flag
    let out = probe.rkube(&["cluster", "create", "--name", &probe.name, "--nodez", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", out_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--nodez'"), "{}", out_text(&out));
    // malformed config: the line and the field are named
    let cfg = probe.home.path().join("bad.yaml");
    std::fs::write(&cfg, "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nnodes:\n- role: worker\n- role: master\n")
        .unwrap();
    let out = probe.rkube(&["cluster", "create", "--name", &probe.name, "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 5") && err.contains("nodes[1].role") && err.contains("unknown variant `master`"),
        "{err}"
    );
    // a feature gate rkube does not know
    std::fs::write(&cfg, "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nfeatureGates: {NoSuchGate: true}\n").unwrap();
    let out = probe.rkube(&["cluster", "create", "--name", &probe.name, "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("featureGates: unrecognized feature gate: NoSuchGate"),
        "{}",
        out_text(&out)
    );
    // not root
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin_dir().join("rkube"))
        .args(["cluster", "create", "--name", &probe.name])
        .env("HOME", probe.home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"), "{}", out_text(&out));
    // a missing dependency is named with its Debian package
    let out = probe
        .rkube_command(&["cluster", "create", "--name", &probe.name])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing dependencies: ") && err.contains("etcd (etcd-server)"),
        "{err}"
    );
    assert!(leftovers(&probe.name, &serde_json::Value::Null, &probe.kubeconfig).is_empty());

    // a config file with roles, labels, taints and a port mapping
    let mut a = TestCluster::named(&unique_name("e2ea"));
    let cfg = a.home.path().join("cluster.yaml");
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: rkube.dev/v1alpha1\nkind: Cluster\nname: {}\nfeatureGates: {{MaxUnavailableStatefulSet: true}}\nnodes:\n- role: control-plane\n- role: worker\n  labels: {{tier: web}}\n  extraPortMappings:\n  - {{containerPort: 30080, hostPort: {host_port}}}\n",
            a.name
        ),
    )
    .unwrap();
    let out = a.rkube(&["cluster", "create", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out_text(&out));
    a.load_record();
    let nodes = a.record_nodes();
    assert_eq!(
        nodes.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(),
        [format!("{}-control-plane", a.name), format!("{}-worker", a.name)]
    );
    let rules =
        String::from_utf8_lossy(&Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().unwrap().stdout)
            .into_owned();
    assert!(
        rules.contains(&format!("--dport {host_port}")) && rules.contains(&format!("\"rkube:{}\"", a.name)),
        "{rules}"
    );
    let taints = a.kubectl_ok(&["get", "node", &nodes[0].0, "-o", "jsonpath={.spec.taints[*].key}"]);
    assert_eq!(taints, "node-role.kubernetes.io/control-plane");
    assert_eq!(a.kubectl_ok(&["get", "node", &nodes[1].0, "-o", "jsonpath={.metadata.labels.tier}"]), "web");
    // the file's featureGates reached the apiserver: it keeps a StatefulSet's maxUnavailable,
    // which upstream v1.33's default (the gate off) drops
    let sts = a.home.path().join("sts.yaml");
    std::fs::write(
        &sts,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: gated}\nspec:\n  serviceName: gated\n  replicas: 0\n  \
         selector: {matchLabels: {app: gated}}\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 2}}\n  \
         template:\n    metadata: {labels: {app: gated}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap();
    a.kubectl_ok(&["apply", "-f", sts.to_str().unwrap()]);
    let kept =
        a.kubectl_ok(&["get", "sts", "gated", "-o", "jsonpath={.spec.updateStrategy.rollingUpdate.maxUnavailable}"]);
    assert_eq!(kept, "2");

    // the name is taken: refused, and the existing cluster is untouched
    let out = a.rkube(&["cluster", "create", "--name", &a.name, "--nodes", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"), "{}", out_text(&out));
    assert!(all_processes_running(&a));

    // a second cluster side by side gets other ranges
    let mut b = TestCluster::create("e2eb", 1, &[]);
    assert_ne!(a.record["plan"]["nodeNetwork"], b.record["plan"]["nodeNetwork"]);
    assert_ne!(a.record["plan"]["podSubnet"], b.record["plan"]["podSubnet"]);
    b.kubectl_ok(&["get", "namespaces"]);
    assert!(all_processes_running(&a) && all_processes_running(&b));
    b.delete_and_check();
    assert!(all_processes_running(&a), "deleting one cluster touched the other");
    a.delete_and_check();
}

#[test]
fn interrupted_create_leaves_nothing_delete_cannot_remove() {
    for signal in ["INT", "KILL"] {
        let mut c = TestCluster::named(&unique_name("e2ei"));
        let name = c.name.clone();
        let mut child = c
            .rkube_command(&["cluster", "create", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // interrupt once the node processes are being started
        let pid_file = c.dir().join("run").join(format!("{}-worker.containerd.pid", c.name));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "create never started the nodes");
            std::thread::sleep(Duration::from_millis(10));
        }
        c.load_record();
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "create finished despite SIG{signal}");
        if signal == "INT" {
            // rkube removed what it had made itself
            let left = leftovers(&c.name, &c.record, &c.kubeconfig);
            assert!(left.is_empty(), "after Ctrl-C:\n{}", left.join("\n"));
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(err.contains("interrupted") && err.contains("removing what was made"), "{err}");
        } else {
            // killed outright: the record was written first, so delete finds everything
            c.delete_and_check();
        }
    }
}

#[test]
fn image_load_and_ls() {
    let mut c = TestCluster::create("e2em", 1, &[]);
    let archive = c.home.path().join("tool.tar");
    let src = format!("oci-archive:{}:docker.io/library/busybox:latest", images_dir().join("busybox.tar").display());
    let ok = Command::new("skopeo")
        .args(["copy", "-q", &src, &format!("docker-archive:{}:team/tool:v1", archive.display())])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = c.rkube_ok(&["image", "load", "--cluster", &c.name, archive.to_str().unwrap()]);
    assert!(out.contains("loaded docker.io/team/tool:v1"), "{out}");
    let ls = c.rkube_ok(&["image", "ls", "--cluster", &c.name]);
    assert!(ls.lines().any(|l| l == "team/tool:v1"), "{ls}");
    let out = c.rkube(&["image", "load", "--cluster", &c.name, "/nonexistent.tar"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.tar: no such file"), "{}", out_text(&out));
    let node = c.record_nodes()[0].0.clone();
    run_pinned(&c, "tool", &node, "team/tool:v1", "Never", Some("echo from-the-loaded-image"));
    c.wait_kubectl("the loaded image's output", POD_WAIT, &["logs", "tool"], |l| l.contains("from-the-loaded-image"));
    c.delete_and_check();
}

/// `curl http://<addr>/` from the host, retried for `timeout` (rkube-proxy's rules for a new
/// Service land within its min sync period).
fn http_get_retry(addr: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new("curl").args(["-s", "--max-time", "3", &format!("http://{addr}/")]).output().ok()?;
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// README.md's tour, command by command.
#[test]
fn readme_tour() {
    let mut c = TestCluster::create("e2er", 3, &[]);
    c.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    let nginx = format!("{}/manifests/examples/nginx.yaml", workspace_root().display());
    c.kubectl_ok(&["apply", "-f", &nginx]);
    c.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    c.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(port_forward_get(&c, "service/nginx").trim(), "hello from nginx");
    // The NodePort Service answers on every node's address from the host, through the
    // rkube-proxy rules in each node's namespace (the pod may be on another node).
    let node_ip = c.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[0].status.addresses[0].address}"]);
    for (node, ip) in c.record_nodes() {
        let body = http_get_retry(&format!("{ip}:30080"), Duration::from_secs(20));
        assert_eq!(body.as_deref().map(str::trim), Some("hello from nginx"), "NodePort 30080 on {node} ({ip})");
    }
    assert!(c.record_nodes().iter().any(|(_, ip)| *ip == node_ip.trim()), "{node_ip}");
    // The ClusterIP, from a pod on each node.
    let cluster_ip = c.kubectl_ok(&["get", "service", "nginx", "-o", "jsonpath={.spec.clusterIP}"]);
    for (i, (node, _)) in c.record_nodes().iter().enumerate() {
        let client = format!("client{i}");
        run_pinned(&c, &client, node, "busybox", "Never", Some("sleep 600"));
        wait_running(&c, &client);
        let url = format!("http://{}/", cluster_ip.trim());
        c.wait_kubectl(
            &format!("ClusterIP from {node}"),
            POD_WAIT,
            &["exec", &client, "--", "timeout", "5", "wget", "-qO-", &url],
            |b| b.trim() == "hello from nginx",
        );
    }
    c.kubectl_ok(&["scale", "deployment/nginx", "--replicas=5"]);
    c.wait_kubectl("5 nginx pods Running", POD_WAIT, &["get", "pods", "-l", "app=nginx"], |s| {
        s.lines().filter(|l| l.contains(" Running ")).count() == 5
    });
    c.kubectl_ok(&["set", "image", "deployment/nginx", "nginx=nginx:1.22"]);
    c.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    // rollout status is done when the new ReplicaSet is available; old pods may still be
    // terminating for a moment
    c.wait_kubectl(
        "only nginx:1.22 pods",
        POD_WAIT,
        &["get", "pods", "-l", "app=nginx", "-o", "jsonpath={.items[*].spec.containers[0].image}"],
        |s| s.split_whitespace().count() == 5 && s.split_whitespace().all(|i| i == "nginx:1.22"),
    );
    c.delete_and_check();
}

/// Every file in manifests/examples applies on a fresh cluster; what runs depends on which
/// controllers exist (see manifests/examples/README.md).
#[test]
fn examples_apply() {
    let mut c = TestCluster::create("e2ex", 2, &[]);
    let dir = workspace_root().join("manifests/examples");
    for f in ["nginx.yaml", "statefulset.yaml", "daemonset.yaml", "job.yaml", "cronjob.yaml", "configmap-secret.yaml"] {
        c.kubectl_ok(&["apply", "-f", dir.join(f).to_str().unwrap()]);
    }
    for (kind, name) in [
        ("deployment", "nginx"),
        ("service", "nginx"),
        ("service", "nginx-nodeport"),
        ("service", "web"),
        ("statefulset", "web"),
        ("daemonset", "node-agent"),
        ("job", "sum"),
        ("cronjob", "tick"),
        ("configmap", "app-config"),
        ("secret", "app-secret"),
    ] {
        c.kubectl_ok(&["get", kind, name]);
    }
    // ConfigMap and Secret as env vars and as files
    let logs = c.wait_kubectl("config-demo output", POD_WAIT, &["logs", "config-demo"], |l| l.contains("color=blue"));
    assert!(logs.contains("hello s3cr3t") && logs.contains("size=3"), "{logs}");
    c.kubectl_ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    // the StatefulSet's claims get volumes from the default StorageClass
    c.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    // the Job controller runs the Job to completion
    c.wait_kubectl(
        "the Job sum Complete",
        POD_WAIT,
        &["get", "job", "sum", "-o", "jsonpath={.status.succeeded}/{.status.conditions[?(@.type=='Complete')].status}"],
        |s| s.trim() == "1/True",
    );
    let logs = c.kubectl_ok(&["logs", "job/sum"]);
    assert_eq!(logs.trim(), "10");
    c.delete_and_check();
}

/// What a reboot takes away, done by hand: every process of the cluster killed (SIGKILL, no
/// clean-up), the node network namespaces, the bridge and its routes, the namespace mounts.
fn simulate_reboot(c: &TestCluster) {
    let dir = format!("{}/", c.dir().display());
    let kill_all = || {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(&dir) {
                pids.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        for (name, _) in c.record_nodes() {
            let cg = format!("/sys/fs/cgroup/pids/rkube-{}-{name}", c.name);
            let out =
                Command::new("find").args([&cg, "-name", "cgroup.procs", "-exec", "cat", "{}", "+"]).output().unwrap();
            pids.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned));
        }
        for p in &pids {
            let _ = Command::new("kill").args(["-9", p]).status();
        }
        !pids.is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while kill_all() {
        assert!(Instant::now() < deadline, "processes survive SIGKILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, _) in c.record_nodes() {
        Command::new("ip").args(["netns", "del", &format!("rkube-{}-{name}", c.name)]).status().unwrap();
    }
    let bridge = c.record["plan"]["bridge"].as_str().unwrap().to_owned();
    Command::new("ip").args(["link", "del", &bridge]).status().unwrap();
    for net in c.record["plan"]["blackhole"].as_array().unwrap() {
        Command::new("ip").args(["route", "del", "blackhole", net.as_str().unwrap()]).status().unwrap();
    }
    Command::new("umount").args(["-l", &format!("{}ns", dir)]).status().unwrap();
}

#[test]
fn start_after_a_reboot_brings_the_same_cluster_back() {
    let mut c = TestCluster::create("e2eo", 2, &[]);
    let nodes = c.record_nodes();
    run_pinned(&c, "web", &nodes[1].0, "nginx", "Always", None);
    wait_running(&c, "web");
    simulate_reboot(&c);
    let status = c.rkube_ok(&["status", "--cluster", &c.name]);
    assert!(!status.contains(" running "), "{status}");
    c.rkube_ok(&["cluster", "start", "--name", &c.name, "--wait", "90s"]);
    assert!(all_processes_running(&c));
    let mut ready = ready_nodes(&c);
    ready.sort();
    assert_eq!(ready, nodes, "same nodes and addresses after the reboot");
    let deadline = Instant::now() + POD_WAIT;
    while port_forward_try(&c, "pod/web", Duration::from_secs(3)).as_deref().map(str::trim) != Some("hello from nginx")
    {
        assert!(Instant::now() < deadline, "the pod did not come back after the reboot");
        std::thread::sleep(Duration::from_millis(300));
    }
    c.delete_and_check();
}
