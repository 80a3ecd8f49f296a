//! End to end on a real local cluster: a DaemonSet runs exactly one pod on each node and
//! grows to a node added with `rkube node add`; `kubectl drain --ignore-daemonsets` evicts a
//! Deployment's pods through the eviction API, waits while a PodDisruptionBudget is exhausted,
//! and finishes once replicas elsewhere restore the budget.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkube_e2e::*;

const WAIT: Duration = Duration::from_secs(90);

/// node -> names of the live pods labelled `selector` on it.
fn pods_per_node(c: &TestCluster, selector: &str) -> BTreeMap<String, Vec<String>> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 2 {
            m.entry(w[1].to_owned()).or_default().push(w[0].to_owned());
        }
    }
    m
}

fn node_names(c: &TestCluster) -> Vec<String> {
    let mut v: Vec<String> = c
        .kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn one_per_node(c: &TestCluster, what: &str, nodes: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let by_node = pods_per_node(c, "app=node-agent");
        let ready = c.kubectl_ok(&["get", "ds", "node-agent", "-o", "jsonpath={.status.numberReady}"]);
        let exact = by_node.len() == nodes.len() && nodes.iter().all(|n| by_node.get(n).is_some_and(|p| p.len() == 1));
        if exact && ready.trim() == nodes.len().to_string() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: pods per node {by_node:?}, numberReady {ready}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A running `kubectl drain`, its stderr collected as it comes; killed on drop.
struct Drain {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drain {
    fn start(c: &TestCluster, node: &str) -> Drain {
        let mut child = Command::new("kubectl")
            .args(["drain", node, "--ignore-daemonsets", "--timeout=120s"])
            .env("HOME", c.home.path())
            .env("KUBECONFIG", &c.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl drain");
        let mut pipe = child.stderr.take().expect("stderr piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let s = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Drain { child, stderr, reader: Some(reader) }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for kubectl to exit; its exit status.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn daemonset_on_every_node_and_drain_respects_a_budget() {
    let mut c = TestCluster::create("e2eds", 3, &[]);
    let ds = format!("{}/manifests/examples/daemonset.yaml", workspace_root().display());
    c.kubectl_ok(&["apply", "-f", &ds]);
    let nodes = node_names(&c);
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    one_per_node(&c, "one agent on each of the 3 nodes", &nodes);
    // Placed by the scheduler through node affinity, as upstream: no nodeName in the template.
    let affinity = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=node-agent",
        "-o",
        "jsonpath={.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key}",
    ]);
    assert_eq!(affinity, "metadata.name");

    let added = c.rkube_ok(&["node", "add", "--cluster", &c.name]);
    assert!(added.contains("Added node"), "{added}");
    c.load_record();
    let nodes = node_names(&c);
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    one_per_node(&c, "an agent on the added node too", &nodes);

    // A budget that allows no disruption: drain evicts nothing and retries.
    c.kubectl_ok(&["create", "deployment", "web", "--image=nginx:1.25", "--replicas=3"]);
    c.wait_kubectl(
        "3 web pods ready",
        WAIT,
        &["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"],
        |s| s == "3",
    );
    c.kubectl_ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=3"]);
    c.wait_kubectl(
        "the budget counted",
        WAIT,
        &["get", "pdb", "web", "-o", "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}"],
        |s| s == "3/0",
    );
    let by_node = pods_per_node(&c, "app=web");
    let (node, victims) = by_node.iter().next().map(|(n, p)| (n.clone(), p.clone())).expect("a node with web pods");
    let mut drain = Drain::start(&c, &node);
    let deadline = Instant::now() + WAIT;
    while !drain.stderr().contains("disruption budget") {
        assert!(Instant::now() < deadline, "drain never hit the budget:\n{}", drain.stderr());
        assert!(drain.child.try_wait().expect("try_wait").is_none(), "drain ended early:\n{}", drain.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    let cordoned = c.kubectl_ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]);
    assert_eq!(cordoned, "true");
    assert_eq!(pods_per_node(&c, "app=web").get(&node), Some(&victims), "the budget let a pod go");

    // One more replica, ready on another node, makes room for one disruption at a time.
    c.kubectl_ok(&["scale", "deployment", "web", "--replicas=4"]);
    let status = drain.wait(WAIT + Duration::from_secs(30));
    let log = drain.stderr();
    assert!(status.is_some_and(|s| s.success()), "drain did not finish: {status:?}\n{log}");
    let after = pods_per_node(&c, "app=web");
    assert!(!after.contains_key(&node), "web pods left on the drained node: {after:?}");
    assert_eq!(pods_per_node(&c, "app=node-agent").get(&node).map(Vec::len), Some(1), "the daemon pod stays");
    c.wait_kubectl(
        "4 web pods ready again",
        WAIT,
        &["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"],
        |s| s == "4",
    );
    c.kubectl_ok(&["uncordon", &node]);
    c.delete_and_check();
}
