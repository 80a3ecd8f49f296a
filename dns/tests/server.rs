//! The whole server against a real apiserver, on loopback: Services and EndpointSlices
//! written through the API are answered over UDP and TCP, changes show up, names outside the
//! domain are refused at once or forwarded to a fake upstream (also on loopback), and the
//! metrics count what was asked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use component_base::testing::{eventually, Etcd};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    m.to_vec().expect("encode")
}

async fn udp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&query(name, t), server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("a dns message")
}

async fn tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let mut s = tokio::net::TcpStream::connect(server).await.expect("connect");
    let q = query(name, t);
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    s.write_all(&frame).await.expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.expect("body");
    Message::from_vec(&buf).expect("a dns message")
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A resolver on 127.0.0.1 that answers every A question with 198.18.99.99 (UDP and TCP).
async fn fake_upstream(cancel: CancellationToken) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    let tcp = tokio::net::TcpListener::bind(addr).await.expect("bind tcp");
    fn answer(bytes: &[u8]) -> Vec<u8> {
        let req = Message::from_vec(bytes).expect("query");
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.queries = req.queries.clone();
        for q in &req.queries {
            resp.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A([198, 18, 99, 99].into()))));
        }
        resp.to_vec().expect("encode")
    }
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = c.cancelled() => return,
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { return };
                    let _ = sock.send_to(&answer(&buf[..n]), peer).await;
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tcp.accept() => match r { Ok(x) => x, Err(_) => return },
            };
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut buf).await.is_err() {
                continue;
            }
            let out = answer(&buf);
            let mut frame = (out.len() as u16).to_be_bytes().to_vec();
            frame.extend_from_slice(&out);
            let _ = s.write_all(&frame).await;
        }
    });
    addr
}

async fn start(
    kubeconfig: &std::path::Path,
    extra: &[&str],
    cancel: CancellationToken,
) -> (SocketAddr, SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let mut args = vec!["rkube-dns", "--kubeconfig", kubeconfig.to_str().expect("utf-8")];
    args.extend(extra);
    let opts = rkube_dns::Options::parse_from(args);
    let sockets =
        rkube_dns::Sockets::bind("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()).await.expect("bind");
    let (dns, http) = (sockets.dns_addr().expect("addr"), sockets.http_addr().expect("addr"));
    let client = rkube_dns::client(Some(kubeconfig)).await.expect("client");
    (dns, http, tokio::spawn(rkube_dns::serve(opts, sockets, client, cancel)))
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_the_api_are_answered_over_udp_and_tcp() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let kubeconfig = server.kubeconfig();
    let cancel = server.cancel.child_token();
    let (dns, http, task) = start(&kubeconfig, &[], cancel.clone()).await;
    let client = rkube_dns::client(Some(&kubeconfig)).await.expect("client");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
    let pp = PostParams::default();

    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "web"}},
    }))
    .unwrap();
    let ip = services.create(&pp, &web).await.expect("create").spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}], "selector": {"app": "db"}},
    }))
    .unwrap();
    services.create(&pp, &db).await.expect("create");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["198.18.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["198.18.1.6"], "hostname": "db-1", "conditions": {"ready": true}},
        ],
    }))
    .unwrap();
    slices.create(&pp, &slice).await.expect("create slice");

    eventually("the headless service answers both endpoints", WAIT, || async {
        addresses(&udp(dns, "db.default.svc.cluster.local.", RecordType::A).await) == ["198.18.1.5", "198.18.1.6"]
    })
    .await;
    assert!(http_get(http, "/ready").await.starts_with("HTTP/1.0 200"), "ready once listed");
    let m = udp(dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&m), vec![ip.clone()]);
    assert!(m.metadata.authoritative);
    let m = tcp(dns, "db-1.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&m), ["198.18.1.6"]);
    let m = tcp(dns, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.additionals.len(), 2, "the targets' addresses come along");
    let reverse = format!("{}.in-addr.arpa.", ip.split('.').rev().collect::<Vec<_>>().join("."));
    let m = udp(dns, &reverse, RecordType::PTR).await;
    assert_eq!(addresses(&m), ["web.default.svc.cluster.local."]);

    // search-path expansions get NXDOMAIN with the SOA at once; outside names are refused
    // at once (no upstream given)
    let t = Instant::now();
    for name in
        ["example.com.default.svc.cluster.local.", "example.com.svc.cluster.local.", "example.com.cluster.local."]
    {
        let m = udp(dns, name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(m.authorities.len(), 1, "{name}: the SOA");
    }
    let m = udp(dns, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(t.elapsed() < Duration::from_secs(1), "the whole search path took {:?}", t.elapsed());

    // deleting the service takes its names away
    services.delete("web", &DeleteParams::default()).await.expect("delete");
    eventually("the deleted service is gone from DNS", WAIT, || async {
        udp(dns, "web.default.svc.cluster.local.", RecordType::A).await.metadata.response_code == ResponseCode::NXDomain
    })
    .await;

    let metrics = http_get(http, "/metrics").await;
    for want in [
        r#"coredns_dns_requests_total{zone="cluster.local.",proto="udp",family="1",type="A"}"#,
        r#"coredns_dns_requests_total{zone="cluster.local.",proto="tcp",family="1",type="SRV"} 1"#,
        r#"coredns_dns_responses_total{zone=".",rcode="REFUSED"} 1"#,
        r#"coredns_dns_responses_total{zone="cluster.local.",rcode="NXDOMAIN"}"#,
        "coredns_dns_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(want), "{want} missing in\n{metrics}");
    }
    cancel.cancel();
    task.await.expect("join").expect("clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_go_to_the_upstream_over_udp_and_tcp() {
    let etcd = Etcd::start();
    let server = rkube_apiserver::testing::TestApiserver::start(&etcd.endpoint).await;
    let kubeconfig = server.kubeconfig();
    let cancel = server.cancel.child_token();
    let upstream = fake_upstream(cancel.clone()).await;
    let up = upstream.to_string();
    // the first upstream never answers (nothing listens there): the second one does
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let upstreams = format!("{silent_addr},{up}");
    let (dns, _, task) =
        start(&kubeconfig, &["--upstream", &upstreams, "--forward-timeout", "300ms"], cancel.clone()).await;
    eventually("the zone is synced", WAIT, || async {
        udp(dns, "cluster.local.", RecordType::SOA).await.metadata.response_code == ResponseCode::NoError
    })
    .await;
    let m = udp(dns, "example.com.", RecordType::A).await;
    assert_eq!(addresses(&m), ["198.18.99.99"]);
    let m = tcp(dns, "example.org.", RecordType::A).await;
    assert_eq!(addresses(&m), ["198.18.99.99"]);
    // the cluster's own names never go upstream
    let m = udp(dns, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    drop(silent);
    cancel.cancel();
    task.await.expect("join").expect("clean exit");
}
