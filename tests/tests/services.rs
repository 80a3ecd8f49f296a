//! Services end to end on a real 3-node local cluster, with the real kubectl: rkube-proxy's
//! rules in every node's namespace and rkube-dns behind the kube-dns Service. Backends are
//! nginx pods that serve their own hostname, so a client sees which one it reached. Requests
//! use `timeout 5 wget`: busybox 1.35's `wget -T` crashes in this image.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use rkube_e2e::*;

const T: &str = "services";
const WAIT: Duration = Duration::from_secs(60);

const BACKENDS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        command: [sh, -c, "hostname > /usr/share/nginx/html/index.html && exec nginx -g 'daemon off;'"]
        ports: [{name: http, containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  type: NodePort
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-headless}
spec:
  clusterIP: None
  selector: {app: echo}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: sd}
spec:
  clusterIP: None
  selector: {app: sd}
  ports: [{name: http, port: 8080}]
"#;

/// A pod with hostname + subdomain: `sub-host.sd` names it through the headless `sd` Service.
fn sub_pod(node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: sub, labels: {{app: sd}}}}
spec:
  nodeName: {node}
  hostname: sub-host
  subdomain: sd
  containers:
  - name: c
    image: busybox:1.36
    command: [sleep, "600"]
"#
    )
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: busybox:1.36, command: [sleep, "600"]}
"#;

fn apply(c: &TestCluster, yaml: &str) {
    let file = c.home.path().join(format!("m{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).expect("write manifest");
    c.kubectl_ok(&["apply", "-f", file.to_str().expect("utf-8")]);
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default()
}

/// `kubectl exec client -- sh -c <script>`: stdout, whatever the exit code.
fn in_client(c: &TestCluster, script: &str) -> String {
    let out = c.kubectl(&["exec", "client", "--", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Which backends answered `n` fresh connections to `url` from the client pod.
fn spread(c: &TestCluster, url: &str, n: u32) -> BTreeMap<String, u32> {
    let script = format!("for i in $(seq {n}); do timeout 5 wget -qO- {url} || echo FAILED; done");
    let out = in_client(c, &script);
    let mut seen = BTreeMap::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *seen.entry(line.to_owned()).or_insert(0) += 1;
    }
    seen
}

/// The addresses an nslookup printed after the `Name:` line(s).
fn looked_up(out: &str) -> BTreeSet<String> {
    let mut ips = BTreeSet::new();
    let mut in_answer = false;
    for l in out.lines() {
        if l.starts_with("Name:") {
            in_answer = true;
        } else if in_answer {
            if let Some(a) = l.strip_prefix("Address:").map(str::trim) {
                ips.insert(a.to_owned());
            }
        }
    }
    ips
}

/// Whether `name` resolves to `ip` in the client pod through the C library's resolver (the
/// search path and ndots apply, unlike busybox nslookup, which sends a dotted name as it is):
/// busybox ping prints the address it resolved.
fn resolves(c: &TestCluster, name: &str, ip: &str) -> bool {
    in_client(c, &format!("ping -c 1 -W 1 {name}")).contains(&format!("PING {name} ({ip})"))
}

fn echo_pods(c: &TestCluster) -> BTreeMap<String, (String, String)> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=echo",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}"#,
    ]);
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3).then(|| (w[0].to_owned(), (w[1].to_owned(), w[2].to_owned())))
        })
        .collect()
}

/// Every table of a node (a Service without endpoints has REJECT rules in `filter`, one with
/// endpoints chains in `nat`), from whichever iptables backend holds rules there.
fn node_rules(c: &TestCluster, node: &str) -> String {
    let ns = format!("rkube-{}-{node}", c.name);
    let mut all = String::new();
    for save in ["iptables-legacy-save", "iptables-nft-save"] {
        if let Ok(o) = Command::new("ip").args(["netns", "exec", &ns, save]).output() {
            all.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    all
}

fn curl(addr: &str) -> Option<String> {
    let out = Command::new("curl").args(["-s", "--max-time", "3", &format!("http://{addr}/")]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn services_by_name_and_ip_nodeport_affinity_headless_and_cleanup() {
    let started = Instant::now();
    let mut c = TestCluster::create("e2es", 3, &[]);
    let nodes = c.record_nodes();
    let dns = c.kubectl_ok(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(c.record["plan"]["clusterDnsIp"].as_str() == Some(dns.as_str()), "kube-dns at the 10th address: {dns}");
    let listed = c.kubectl_ok(&["get", "svc", "-n", "kube-system"]);
    assert!(listed.lines().any(|l| l.starts_with("kube-dns ") && l.contains("53/UDP,53/TCP,9153/TCP")), "{listed}");
    let status = c.rkube_ok(&["status", "--cluster", &c.name]);
    assert!(status.lines().any(|l| l.starts_with("dns ") && l.contains(" running ")), "{status}");
    c.rkube_ok(&["logs", "dns", "--cluster", &c.name]);

    apply(&c, BACKENDS);
    c.kubectl_ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
    let pods = echo_pods(&c);
    let hostnames: BTreeSet<String> = pods.keys().cloned().collect();
    assert_eq!(hostnames.len(), 3, "{pods:?}");
    // the client runs on the node with the fewest backends, so most answers cross nodes
    let client_node = nodes
        .iter()
        .map(|(n, _)| n.clone())
        .min_by_key(|n| pods.values().filter(|(_, on)| on == n).count())
        .expect("nodes");
    assert!(pods.values().any(|(_, on)| *on != client_node));
    let overrides = format!(r#"{{"spec":{{"nodeName":"{client_node}"}}}}"#);
    c.kubectl_ok(&[
        "run",
        "client",
        "--image=busybox:1.36",
        "--restart=Never",
        "--overrides",
        &overrides,
        "--",
        "sleep",
        "900",
    ]);
    apply(&c, &sub_pod(&client_node));
    c.wait_kubectl("client Running", WAIT, &["get", "pod", "client", "-o", "jsonpath={.status.phase}"], |s| {
        s == "Running"
    });
    let resolv = in_client(&c, "cat /etc/resolv.conf");
    assert!(resolv.contains(&format!("nameserver {dns}")), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{resolv}");

    // by name through DNS, and by ClusterIP
    let cluster_ip = c.kubectl_ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    eventually("http://echo answers by name", WAIT, || {
        hostnames.contains(in_client(&c, "timeout 5 wget -qO- http://echo").trim())
    });
    let body = in_client(&c, &format!("timeout 5 wget -qO- http://{cluster_ip}"));
    assert!(hostnames.contains(body.trim()), "by ClusterIP: {body}");
    let fqdn = in_client(&c, "timeout 5 wget -qO- http://echo.default.svc.cluster.local");
    assert!(hostnames.contains(fqdn.trim()), "by FQDN: {fqdn}");

    // 60 requests reach all 3 backends
    let seen = spread(&c, "http://echo", 60);
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), hostnames, "60 requests by name: {seen:?}");

    // the NodePort answers on every node's address from the host
    let node_port = c.kubectl_ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    for (node, ip) in &nodes {
        let addr = format!("{ip}:{node_port}");
        eventually(&format!("NodePort on {node} ({addr})"), Duration::from_secs(20), || {
            curl(&addr).is_some_and(|b| hostnames.contains(&b))
        });
    }

    // the headless Service resolves to the pod IPs
    let pod_ips: BTreeSet<String> = pods.values().map(|(ip, _)| ip.clone()).collect();
    let out = in_client(&c, "nslookup echo-headless.default.svc.cluster.local");
    assert_eq!(looked_up(&out), pod_ips, "{out}");
    // <hostname>.<subdomain> of a pod, through the search path
    c.wait_kubectl("sub Running", WAIT, &["get", "pod", "sub", "-o", "jsonpath={.status.phase}"], |s| s == "Running");
    let sub_ip = c.kubectl_ok(&["get", "pod", "sub", "-o", "jsonpath={.status.podIP}"]);
    eventually("sub-host.sd resolves to the pod", WAIT, || resolves(&c, "sub-host.sd", &sub_ip));
    // a name outside the cluster is refused at once (no upstream resolvers)
    let t = Instant::now();
    let out = in_client(&c, "nslookup example.com.");
    assert!(out.contains("REFUSED"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5), "a refused name took {:?}", t.elapsed());

    // a StatefulSet's pod by name: <pod>.<governing service>
    apply(&c, STATEFULSET);
    c.wait_kubectl("web-0 Running", WAIT, &["get", "pod", "web-0", "-o", "jsonpath={.status.phase}"], |s| {
        s == "Running"
    });
    let ip = c.kubectl_ok(&["get", "pod", "web-0", "-o", "jsonpath={.status.podIP}"]);
    eventually("web-0.web resolves", WAIT, || resolves(&c, "web-0.web", &ip));

    // sessionAffinity ClientIP pins the client to one backend
    c.kubectl_ok(&["patch", "svc", "echo", "-p", r#"{"spec":{"sessionAffinity":"ClientIP"}}"#]);
    eventually("ClientIP affinity pins the client", WAIT, || spread(&c, "http://echo", 20).len() == 1);
    let seen = spread(&c, &format!("http://{cluster_ip}"), 20);
    assert_eq!(seen.len(), 1, "pinned by ClusterIP too: {seen:?}");
    assert!(hostnames.contains(seen.keys().next().expect("one")), "{seen:?}");

    // no endpoints: connection refused at once, not a timeout
    c.kubectl_ok(&["scale", "deployment/echo", "--replicas=0"]);
    // terminating pods stay in the EndpointSlice (a fallback while they serve): wait until
    // they are gone, then no endpoint at all is left
    c.wait_kubectl("no echo pods", WAIT, &["get", "pods", "-l", "app=echo", "-o", "name"], |s| s.trim().is_empty());
    c.wait_kubectl(
        "no echo endpoints",
        WAIT,
        &["get", "endpointslices", "-l", "kubernetes.io/service-name=echo", "-o", "jsonpath={.items[*].endpoints}"],
        |s| s.split_whitespace().all(|w| w == "[]"),
    );
    // The time limit runs inside the pod, so `kubectl exec`'s own start-up on a busy machine
    // does not count: a dropped SYN would be retried until `timeout` kills wget, with no
    // "Connection refused" printed, so the message alone shows the REJECT rule answered.
    eventually("the Service refuses", WAIT, || {
        in_client(&c, &format!("timeout 3 wget -qO- http://{cluster_ip}")).contains("Connection refused")
    });
    let out = in_client(&c, "timeout 3 wget -qO- http://echo");
    assert!(out.contains("Connection refused"), "by name, within 3 s: {out}");

    // deleting the Service removes its rules on every node
    for (node, _) in &nodes {
        assert!(node_rules(&c, node).contains("default/echo:http"), "echo's rules on {node}");
    }
    c.kubectl_ok(&["delete", "svc", "echo"]);
    for (node, _) in &nodes {
        eventually(&format!("echo's rules gone on {node}"), Duration::from_secs(30), || {
            let nat = node_rules(&c, node);
            !nat.contains("default/echo:http") && nat.contains("KUBE-SERVICES")
        });
    }
    eprintln!("{T}: checks took {:.1}s", started.elapsed().as_secs_f64());
    c.delete_and_check();
}
