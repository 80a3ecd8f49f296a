//! The sync benchmark behind `hack/bench/proxy.sh` (ignored in normal test runs): for 1,000
//! and 10,000 ClusterIP Services with 2 endpoints each, in fresh network namespaces, the
//! proxy's full sync (jump rules, `iptables-save`, render, `iptables-restore`) next to a bare
//! `iptables-restore` of the same rendered text, then a one-endpoint change: the proxy's
//! partial sync next to a bare restore of the same partial text. `BENCH_BACKEND=legacy|nft`
//! picks the iptables backend; `BENCH_SIZES=1000,10000` the sizes. Prints a markdown table;
//! `BENCH_OUT=<file>` also appends the rows there. Needs root.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prometheus_client::registry::Registry;
use rkube_proxy::iptables::render::{render, RenderConfig};
use rkube_proxy::iptables::{Backend, Iptables, Real};
use rkube_proxy::proxier::{Health, Metrics, Proxier};
use rkube_proxy::tracker::{ServiceKey, Tracker, SERVICE_NAME_LABEL};

struct Netns(String);

impl Netns {
    fn create(tag: &str) -> anyhow::Result<Netns> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let name = format!("rkpb-{tag}-{}-{nanos:x}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status()?;
        anyhow::ensure!(st.success(), "ip netns add {name}");
        Ok(Netns(name))
    }

    fn prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.0.clone()]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The i-th address of a /16, skipping .0 and .255.
fn addr(prefix: &str, i: usize) -> String {
    format!("{prefix}.{}.{}", i / 250, i % 250 + 1)
}

fn service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta { namespace: Some("bench".into()), name: Some(format!("svc-{i}")), ..Default::default() },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(addr("198.19", i)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(i: usize, ips: [String; 2]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}-abc")),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), format!("svc-{i}"))].into()),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips.into_iter().map(|ip| Endpoint { addresses: vec![ip], ..Default::default() }).collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}

async fn one_size(backend: Backend, n: usize) -> anyhow::Result<String> {
    let tracker = Arc::new(Mutex::new(Tracker::new()));
    {
        let mut t = tracker.lock().expect("tracker");
        for i in 0..n {
            t.apply_service(&service(i));
            t.apply_slice(&slice(i, [addr("198.18", 2 * i), addr("198.18", 2 * i + 1)]));
        }
        t.take_changed();
    }
    let cfg =
        RenderConfig { node_name: "node1".into(), cluster_cidr: Some("198.18.0.0/16".into()), ..Default::default() };
    let bare_ns = Netns::create("bare")?;
    let proxy_ns = Netns::create("proxy")?;
    let bare = Real::new(backend).with_prefix(bare_ns.prefix());
    let ipt = Real::new(backend).with_prefix(proxy_ns.prefix());

    let full = render(&cfg, &tracker.lock().expect("tracker"), None, &BTreeSet::new());
    let bare_full = time(async { Ok(bare.restore(&full.text, true).await?) }).await?;
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let mut proxier = Proxier::new(ipt, cfg.clone(), tracker.clone(), metrics, Arc::new(Health::default()));
    let proxy_full = time(async { Ok(proxier.sync(true).await.map(|_| ())?) }).await?;

    let (mut bare_part, mut proxy_part) = (Vec::new(), Vec::new());
    let mut active = full.active_nat_chains.clone();
    for round in 0..5 {
        // Move svc-0's second endpoint back and forth: one endpoint changes per round.
        let second = if round % 2 == 0 { addr("198.18", 2 * n + 1) } else { addr("198.18", 1) };
        let text = {
            let mut t = tracker.lock().expect("tracker");
            t.apply_slice(&slice(0, [addr("198.18", 0), second]));
            let r = render(&cfg, &t, Some(&BTreeSet::from([ServiceKey::new("bench", "svc-0")])), &active);
            active = r.active_nat_chains;
            r.text
        };
        bare_part.push(time(async { Ok(bare.restore(&text, true).await?) }).await?);
        proxy_part.push(time(async { Ok(proxier.sync(false).await.map(|_| ())?) }).await?);
    }
    let (bare_part, proxy_part) = (median(bare_part), median(proxy_part));
    let ratio = |a: Duration, b: Duration| format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64());
    Ok(format!(
        "| {backend:?} | {n} | {} | {} | {} | {} | {} | {} | {} |",
        full.nat_rules + full.filter_rules,
        ms(bare_full),
        ms(proxy_full),
        ratio(proxy_full, bare_full),
        ms(bare_part),
        ms(proxy_part),
        ratio(proxy_part, bare_part),
    ))
}

#[tokio::test]
#[ignore = "benchmark: run by hack/bench/proxy.sh"]
async fn proxy_sync() -> anyhow::Result<()> {
    anyhow::ensure!(rustix::process::geteuid().is_root(), "needs root");
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("legacy") => Backend::Legacy,
        _ => Backend::Nft,
    };
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for n in sizes {
        let row = one_size(backend, n).await?;
        println!("{row}");
        rows.push(row);
    }
    if let Ok(out) = std::env::var("BENCH_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
        for r in rows {
            writeln!(f, "{r}")?;
        }
    }
    Ok(())
}
