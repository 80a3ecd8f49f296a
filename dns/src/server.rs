//! The doing half: UDP and TCP sockets, forwarding to upstream resolvers, timing. Every
//! answer comes from `answer::decide`; this module moves bytes and counts them.
//!
//! UDP queries are answered inline on the receive loop (an in-memory lookup is cheaper than a
//! task); forwarded ones get a task of their own so a slow upstream never holds up the
//! cluster's names. TCP connections get a task each and may carry several queries.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answer::{self, Action};
use crate::metrics::{Metrics, Observation};
use crate::zone::Zone;

/// How long a TCP connection may sit idle between queries (CoreDNS: 10 s).
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Shared {
    pub zone: Arc<RwLock<Zone>>,
    pub metrics: Arc<Metrics>,
    /// The `zone` label of in-zone answers (`cluster.local.`).
    pub zone_label: &'static str,
    pub upstreams: Arc<[SocketAddr]>,
    pub forward_timeout: Duration,
}

/// What to do with one received message.
enum Step {
    Send(Vec<u8>),
    Forward(Box<Message>),
    Nothing,
}

struct Info {
    qtype: &'static str,
    zone: &'static str,
}

fn step(shared: &Shared, bytes: &[u8], udp: bool) -> (Step, Info) {
    let mut info = Info { qtype: "other", zone: "." };
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "unparsable query");
            let out = answer::format_error(bytes).and_then(|m| answer::encode(&m, None).ok());
            return (out.map_or(Step::Nothing, Step::Send), info);
        }
    };
    if let Some(q) = req.queries.first() {
        info.qtype = answer::type_label(q.query_type());
    }
    let action = {
        let zone = match shared.zone.read() {
            Ok(z) => z,
            Err(p) => p.into_inner(),
        };
        if req.queries.first().is_some_and(|q| zone.in_domain(q.name())) {
            info.zone = shared.zone_label;
        }
        answer::decide(&zone, &req, !shared.upstreams.is_empty())
    };
    let s = match action {
        Action::Reply(resp) => {
            let limit = udp.then(|| answer::udp_limit(&req));
            match answer::encode(&resp, limit) {
                Ok(b) => Step::Send(b),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a response");
                    servfail(&req).map_or(Step::Nothing, Step::Send)
                }
            }
        }
        Action::Forward => Step::Forward(Box::new(req)),
        Action::Drop => Step::Nothing,
    };
    (s, info)
}

fn servfail(req: &Message) -> Option<Vec<u8>> {
    answer::encode(&answer::reply(req, ResponseCode::ServFail), None).ok()
}

fn rcode_of(bytes: &[u8]) -> &'static str {
    answer::rcode_label(bytes.get(3).map_or(2, |b| b & 0x0f))
}

fn observe(shared: &Shared, info: &Info, proto: &'static str, peer: &SocketAddr, out: &[u8], start: Instant) {
    shared.metrics.observe(&Observation {
        zone: info.zone,
        proto,
        ipv6_client: peer.is_ipv6(),
        qtype: info.qtype,
        rcode: rcode_of(out),
        seconds: start.elapsed().as_secs_f64(),
    });
}

/// Answers UDP queries on `sock` until `cancel`.
pub async fn serve_udp(sock: Arc<UdpSocket>, shared: Shared, tasks: TaskTracker, cancel: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on Linux; the socket is fine
                    tracing::debug!(error = %e, "udp receive");
                    continue;
                }
            },
        };
        let start = Instant::now();
        let (s, info) = step(&shared, &buf[..len], true);
        match s {
            Step::Send(out) => {
                if let Err(e) = sock.send_to(&out, peer).await {
                    tracing::debug!(error = %e, %peer, "udp send");
                }
                observe(&shared, &info, "udp", &peer, &out, start);
            }
            Step::Forward(req) => {
                let (sock, shared, raw) = (sock.clone(), shared.clone(), buf[..len].to_vec());
                tasks.spawn(async move {
                    shared.metrics.forwards.inc();
                    let out = match forward_udp(&raw, &shared.upstreams, shared.forward_timeout).await {
                        Some(resp) => Some(resp),
                        None => servfail(&req),
                    };
                    if let Some(out) = out {
                        if let Err(e) = sock.send_to(&out, peer).await {
                            tracing::debug!(error = %e, %peer, "udp send");
                        }
                        observe(&shared, &info, "udp", &peer, &out, start);
                    }
                });
            }
            Step::Nothing => {}
        }
    }
}

/// Accepts TCP connections on `listener` until `cancel`.
pub async fn serve_tcp(listener: TcpListener, shared: Shared, tasks: TaskTracker, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (shared, cancel) = (shared.clone(), cancel.clone());
        tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tcp_connection(stream, peer, &shared) => {}
            }
        });
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await.ok()?.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await.ok()?.ok()?;
    Some(buf)
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| std::io::Error::other("response over 64 KiB"))?;
    let mut frame = Vec::with_capacity(bytes.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await
}

async fn tcp_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    while let Some(bytes) = read_frame(&mut stream).await {
        let start = Instant::now();
        let (s, info) = step(shared, &bytes, false);
        let out = match s {
            Step::Send(out) => out,
            Step::Forward(req) => {
                shared.metrics.forwards.inc();
                match forward_tcp(&bytes, &shared.upstreams, shared.forward_timeout).await {
                    Some(resp) => resp,
                    None => match servfail(&req) {
                        Some(b) => b,
                        None => return,
                    },
                }
            }
            Step::Nothing => continue,
        };
        if write_frame(&mut stream, &out).await.is_err() {
            return;
        }
        observe(shared, &info, "tcp", &peer, &out, start);
    }
}

fn same_id(req: &[u8], resp: &[u8]) -> bool {
    req.len() >= 2 && resp.len() >= 12 && req[..2] == resp[..2]
}

/// Sends `req` to each upstream in turn over UDP; the first answer with the same id wins.
pub async fn forward_udp(req: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let attempt = async {
            let sock = UdpSocket::bind(local).await.ok()?;
            sock.connect(up).await.ok()?;
            sock.send(req).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if same_id(req, &buf[..n]) {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Some(resp)) => return Some(resp),
            _ => tracing::debug!(upstream = %up, "no answer from the upstream over udp"),
        }
    }
    None
}

/// Sends `req` to each upstream in turn over TCP.
pub async fn forward_tcp(req: &[u8], upstreams: &[SocketAddr], timeout: Duration) -> Option<Vec<u8>> {
    for up in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(up).await.ok()?;
            write_frame(&mut s, req).await.ok()?;
            let resp = read_frame(&mut s).await?;
            same_id(req, &resp).then_some(resp)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Some(resp)) => return Some(resp),
            _ => tracing::debug!(upstream = %up, "no answer from the upstream over tcp"),
        }
    }
    None
}
