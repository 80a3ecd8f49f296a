//! The load behind hack/bench/dns.sh: writes `--services` ClusterIP Services (each with an
//! EndpointSlice of two endpoints) through the API, waits until rkube-dns answers the last
//! one, then runs `--clients` concurrent UDP clients against it for `--duration`, each
//! sending one query and waiting for its answer before the next. Three queries in four are A
//! lookups of a random Service, one in four a search-path expansion that must be NXDOMAIN.
//! Prints one markdown table row. Only loopback addresses are accepted as the target.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};

#[derive(Debug, Parser)]
struct Options {
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// rkube-dns's address (loopback only).
    #[arg(long)]
    dns: SocketAddr,
    /// rkube-dns's pid, for its RSS.
    #[arg(long)]
    dns_pid: Option<u32>,
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value = "10s", value_parser = rkube_dns::parse_seconds)]
    duration: Duration,
}

const NS: &str = "bench";

fn query(id: u16, name: &Name, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), t));
    m.to_vec().unwrap_or_default()
}

async fn create(client: &kube::Client, n: usize) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?;
    match nss.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (services, slices, sem) = (services.clone(), slices.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire().await?;
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}")},
                "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": format!("svc-{i}")}},
            }))?;
            services.create(&PostParams::default(), &svc).await?;
            let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}-1"), "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": [format!("198.18.{}.{}", i / 250, i % 250 + 1)], "conditions": {"ready": true}},
                    {"addresses": [format!("198.18.{}.{}", 100 + i / 250, i % 250 + 1)], "conditions": {"ready": true}},
                ],
            }))?;
            slices.create(&PostParams::default(), &slice).await?;
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn ask(sock: &tokio::net::UdpSocket, q: &[u8], buf: &mut [u8]) -> Option<Message> {
    sock.send(q).await.ok()?;
    let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(buf)).await.ok()?.ok()?;
    Message::from_vec(&buf[..n]).ok()
}

struct ClientResult {
    latencies: Vec<Duration>,
    wrong: u64,
    lost: u64,
}

async fn load_client(
    dns: SocketAddr,
    names: std::sync::Arc<Vec<(Name, bool)>>,
    seed: usize,
    until: Instant,
) -> ClientResult {
    let mut r = ClientResult { latencies: Vec::with_capacity(100_000), wrong: 0, lost: 0 };
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else { return r };
    if sock.connect(dns).await.is_err() {
        return r;
    }
    let mut buf = vec![0u8; 2048];
    let mut i = seed.wrapping_mul(7919);
    let mut id: u16 = seed as u16;
    while Instant::now() < until {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let (name, exists) = &names[(i >> 8) % names.len()];
        id = id.wrapping_add(1);
        let q = query(id, name, RecordType::A);
        let t = Instant::now();
        match ask(&sock, &q, &mut buf).await {
            Some(m) if m.metadata.id == id => {
                r.latencies.push(t.elapsed());
                let ok = if *exists {
                    m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1
                } else {
                    m.metadata.response_code == ResponseCode::NXDomain
                };
                if !ok {
                    r.wrong += 1;
                }
            }
            _ => r.lost += 1,
        }
    }
    r
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    anyhow::ensure!(opts.dns.ip().is_loopback(), "--dns must be a loopback address, not {}", opts.dns);
    let client = rkube_dns::client(Some(&opts.kubeconfig)).await?;
    let t = Instant::now();
    create(&client, opts.services).await.context("creating the services")?;
    eprintln!("created {} services and slices in {:.1}s", opts.services, t.elapsed().as_secs_f64());
    let last = Name::from_ascii(format!("svc-{}.{NS}.svc.cluster.local.", opts.services - 1))?;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(opts.dns).await?;
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = ask(&sock, &query(1, &last, RecordType::A), &mut buf).await;
        if m.is_some_and(|m| m.answers.len() == 1) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "rkube-dns never answered {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_loaded = opts.dns_pid.and_then(rss_kib);
    let mut names = Vec::new();
    for i in 0..opts.services {
        names.push((Name::from_ascii(format!("svc-{i}.{NS}.svc.cluster.local."))?, true));
        names.push((Name::from_ascii(format!("svc-{i}.{NS}.svc.cluster.local."))?, true));
        names.push((Name::from_ascii(format!("svc-{i}.{NS}.svc.cluster.local."))?, true));
        // what a pod's resolver asks first for an outside name (search path, ndots 5)
        names.push((Name::from_ascii(format!("host{i}.example.com.{NS}.svc.cluster.local."))?, false));
    }
    let names = std::sync::Arc::new(names);
    let until = Instant::now() + opts.duration;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..opts.clients {
        tasks.spawn(load_client(opts.dns, names.clone(), c + 1, until));
    }
    let mut all = Vec::new();
    let (mut wrong, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let r = r?;
        all.extend(r.latencies);
        wrong += r.wrong;
        lost += r.lost;
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    let ms =
        |d: Option<Duration>| d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into());
    let rss = |k: Option<u64>| k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "-".into());
    println!(
        "| {} | {} | {:.0} qps ({} in {:.1} s) | {} | {} | {} | {} lost, {} wrong | {} | {} |",
        opts.services,
        opts.clients,
        all.len() as f64 / wall,
        all.len(),
        wall,
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(all.last().copied()),
        lost,
        wrong,
        rss(rss_loaded),
        rss(opts.dns_pid.and_then(rss_kib)),
    );
    Ok(())
}
