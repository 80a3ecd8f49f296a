//! The rendered rules in a real kernel: a private network namespace (198.18.0.0/15 addresses
//! only, no default route), the real iptables-restore/-save inside it, a TCP server behind a
//! ClusterIP and a node port, 60 connections spread over 3 endpoints, ClientIP affinity
//! pinning a client, a service without endpoints refusing at once, a deleted
//! service's chains going away in a partial sync, and `--cleanup` removing everything. Needs
//! root; skips with a message otherwise. The root namespace's tables are never touched: every
//! iptables command runs under `ip netns exec`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prometheus_client::registry::Registry;
use rkube_proxy::iptables::render::{sep_chain, svc_chain, RenderConfig};
use rkube_proxy::iptables::{Iptables, Real};
use rkube_proxy::proxier::{Health, Metrics, Proxier};
use rkube_proxy::tracker::{ServiceKey, ServicePortName, Tracker, SERVICE_NAME_LABEL};

const ENDPOINT_IP: &str = "198.18.200.2";
const CLIENT_IP: &str = "198.18.200.1";
const WEB_VIP: &str = "198.19.200.10";
const EMPTY_VIP: &str = "198.19.200.11";
const NODE_PORT: i32 = 30080;
const SPREAD_VIP: &str = "198.19.200.12";
const STICKY_VIP: &str = "198.19.200.13";

/// A network namespace deleted on drop, even when the test fails.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

impl Netns {
    fn create() -> anyhow::Result<Netns> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("rkp-{}-{nanos:x}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        // Both ends of the veth stay inside the namespace: it only gives the addresses a
        // link with carrier (this kernel has no dummy driver).
        ip(&["-n", n, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])?;
        ip(&["-n", n, "link", "set", "veth1", "up"])?;
        ip(&["-n", n, "addr", "add", &format!("{CLIENT_IP}/24"), "dev", "veth0"])?;
        ip(&["-n", n, "addr", "add", &format!("{ENDPOINT_IP}/24"), "dev", "veth0"])?;
        ip(&["-n", n, "link", "set", "veth0", "up"])?;
        // The service range needs a route for the first packet to leave OUTPUT (where the DNAT
        // happens); the client address is pinned so it differs from the endpoint's.
        ip(&["-n", n, "route", "add", "198.19.200.0/24", "dev", "veth0", "src", CLIENT_IP])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))?;
        let h = std::thread::spawn(move || -> std::io::Result<T> {
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))?;
            Ok(f())
        });
        h.join().map_err(|_| anyhow::anyhow!("netns thread panicked"))?.map_err(Into::into)
    }

    fn save(&self, table: &str) -> anyhow::Result<String> {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "iptables-save", "-t", table]).output()?;
        anyhow::ensure!(out.status.success(), "iptables-save: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("deleting netns {}: {e}", self.name);
        }
    }
}

/// A TCP server answering a fixed reply, stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_server(ns: &Netns, addr: SocketAddr, reply: &'static str) -> anyhow::Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let file = std::fs::File::open(format!("/run/netns/{}", ns.name))?;
    let thread = std::thread::spawn(move || {
        let listener =
            rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
                .map_err(std::io::Error::from)
                .and_then(|_| TcpListener::bind(addr))
                .and_then(|l| l.set_nonblocking(true).map(|_| l));
        let listener = match listener {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(reply.as_bytes());
                }
                // Nonblocking accept: poll the stop flag between connections.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5))??;
    Ok(Server { stop, thread: Some(thread) })
}

fn service(name: &str, ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta { namespace: Some("default".into()), name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some(if node_port.is_some() { "NodePort" } else { "ClusterIP" }.into()),
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A slice for `svc` whose endpoints are the same address on several ports, one per slice
/// port name — the way to give one address three backends without more interfaces.
fn multi_slices(svc: &str, ports: &[i32]) -> Vec<EndpointSlice> {
    ports
        .iter()
        .map(|p| EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("{svc}-{p}")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint { addresses: vec![ENDPOINT_IP.into()], ..Default::default() }],
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(*p),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        })
        .collect()
}

fn web_slice() -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web-abc".into()),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint { addresses: vec![ENDPOINT_IP.into()], ..Default::default() }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

#[tokio::test]
async fn clusterip_reaches_endpoint_rejects_without_endpoints_and_deleted_chains_go() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root (network namespaces and iptables)");
        return Ok(());
    }
    let ns = Netns::create()?;
    let _server = start_server(&ns, format!("{ENDPOINT_IP}:8080").parse()?, "hi\n")?;
    let _spread: Vec<Server> = [("8081", "a"), ("8082", "b"), ("8083", "c")]
        .into_iter()
        .map(|(port, reply)| start_server(&ns, format!("{ENDPOINT_IP}:{port}").parse().expect("address"), reply))
        .collect::<anyhow::Result<_>>()?;

    let tracker = Arc::new(Mutex::new(Tracker::new()));
    {
        let mut t = tracker.lock().expect("tracker");
        t.apply_service(&service("web", WEB_VIP, Some(NODE_PORT)));
        t.apply_slice(&web_slice());
        t.apply_service(&service("empty", EMPTY_VIP, None));
        t.apply_service(&service("spread", SPREAD_VIP, None));
        let mut sticky = service("sticky", STICKY_VIP, None);
        sticky.spec.as_mut().expect("spec").session_affinity = Some("ClientIP".into());
        t.apply_service(&sticky);
        for svc in ["spread", "sticky"] {
            for s in multi_slices(svc, &[8081, 8082, 8083]) {
                t.apply_slice(&s);
            }
        }
    }
    let prefix = vec!["ip".to_string(), "netns".into(), "exec".into(), ns.name.clone()];
    let ipt = Real::detect(prefix).await;
    let cfg =
        RenderConfig { node_name: "node1".into(), cluster_cidr: Some("198.18.0.0/16".into()), ..Default::default() };
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let mut proxier = Proxier::new(ipt.clone(), cfg, tracker.clone(), metrics, Arc::new(Health::default()));
    proxier.sync(true).await?;

    // Through the ClusterIP, and through the node port on the node's own address, to the
    // server (which listens on another port: only the DNAT gets there).
    for target in [format!("{WEB_VIP}:80"), format!("{CLIENT_IP}:{NODE_PORT}")] {
        let answer = ns.run(move || -> std::io::Result<String> {
            let addr: SocketAddr = target.parse().expect("address");
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })??;
        assert_eq!(answer, "hi\n");
    }

    // The statistic rules spread 60 connections over all three endpoints; ClientIP affinity
    // pins 20 connections from one client to one endpoint.
    let replies = |vip: &'static str, n: usize| {
        ns.run(move || -> std::io::Result<Vec<String>> {
            let addr: SocketAddr = format!("{vip}:80").parse().expect("address");
            (0..n)
                .map(|_| {
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                    s.set_read_timeout(Some(Duration::from_secs(3)))?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf)?;
                    Ok(buf)
                })
                .collect()
        })
    };
    let spread: std::collections::BTreeSet<String> = replies(SPREAD_VIP, 60)??.into_iter().collect();
    assert_eq!(spread, ["a", "b", "c"].map(String::from).into());
    let sticky: std::collections::BTreeSet<String> = replies(STICKY_VIP, 20)??.into_iter().collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");

    // No endpoints: REJECT, so the client sees "connection refused" at once, not a timeout.
    let (kind, took) = ns.run(|| {
        let addr: SocketAddr = format!("{EMPTY_VIP}:80").parse().expect("address");
        let start = Instant::now();
        let r = TcpStream::connect_timeout(&addr, Duration::from_secs(3));
        (r.err().map(|e| e.kind()), start.elapsed())
    })?;
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionRefused));
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");

    let web_port = ServicePortName { service: ServiceKey::new("default", "web"), port: "http".into() };
    let web_chain = svc_chain(&web_port, "tcp");
    let nat = ns.save("nat")?;
    assert!(nat.contains(&format!(":{web_chain}")), "{nat}");
    assert!(nat.contains("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"), "{nat}");

    // A second full sync finds the jump rules in place and adds none.
    proxier.sync(true).await?;
    let nat = ns.save("nat")?;
    let jumps = nat.lines().filter(|l| l.starts_with("-A OUTPUT") && l.ends_with("-j KUBE-SERVICES")).count();
    assert_eq!(jumps, 1, "{nat}");
    let filter = ns.save("filter")?;
    let jumps = filter.lines().filter(|l| l.starts_with("-A ") && l.contains("-j KUBE-")).count();
    assert_eq!(jumps, 9, "{filter}");

    // A partial sync after the delete removes the service's chains and nothing else.
    tracker.lock().expect("tracker").delete_service(&ServiceKey::new("default", "web"));
    proxier.sync(false).await?;
    let nat = ns.save("nat")?;
    let web_sep = sep_chain(&web_port, "tcp", &format!("{ENDPOINT_IP}:8080"));
    assert!(!nat.contains(&web_chain) && !nat.contains(&web_sep), "{nat}");
    // The other services' chains, which the partial sync did not rewrite, are still there.
    let sticky_port = ServicePortName { service: ServiceKey::new("default", "sticky"), port: "http".into() };
    assert!(nat.contains(&format!(":{} ", svc_chain(&sticky_port, "tcp"))), "{nat}");
    assert!(nat.contains(":KUBE-SERVICES"), "{nat}");
    let filter = ns.save("filter")?;
    assert!(filter.contains("\"default/empty:http has no endpoints\""), "{filter}");

    // --cleanup leaves nothing of ours behind.
    rkube_proxy::iptables::cleanup(&ipt).await?;
    for table in ["nat", "filter"] {
        let saved = ns.save(table)?;
        assert!(!saved.contains("KUBE-"), "{saved}");
    }

    // The restore input is rejected as a whole when one line is bad, and the error names it.
    let err = ipt.restore("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES --bogus\nCOMMIT\n", true).await;
    let err = err.expect_err("a bad rule must fail");
    assert_eq!(err.line(), Some(3), "{err}");
    Ok(())
}
