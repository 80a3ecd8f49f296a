//! The gRPC probe: upstream's `pkg/probe/grpc`, a `grpc.health.v1.Health/Check` call to the
//! pod over plaintext HTTP/2. The two messages are a string and an enum, so they are encoded
//! by hand instead of pulling in generated code.

use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::http::Outcome;

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// Passes message bytes through unchanged.
#[derive(Debug, Default, Clone, Copy)]
struct RawCodec;

#[derive(Debug, Default, Clone, Copy)]
struct RawEncoder;

#[derive(Debug, Default, Clone, Copy)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// `HealthCheckRequest { string service = 1; }`.
pub fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if service.is_empty() {
        return out;
    }
    out.push(0x0a);
    let mut len = service.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(service.as_bytes());
    out
}

/// `HealthCheckResponse { ServingStatus status = 1; }`: the status (0 when absent).
pub fn decode_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    let mut status = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < msg.len() {
        let key = varint(&mut i)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut i)?,
            (_, 0) => {
                varint(&mut i)?;
            }
            (_, 2) => {
                let len = usize::try_from(varint(&mut i)?).ok()?;
                i = i.checked_add(len)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn status_name(s: u64) -> &'static str {
    match s {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// upstream's gRPC probe of `host:port` for `service`, within `timeout`.
pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = format!("{host}:{port}");
    let secs = timeout.as_secs();
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Failure(format!("invalid address {addr:?}: {e}")),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(format!("timeout: failed to connect service {addr:?} within {secs}s: {e}")),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return Outcome::Failure(format!("timeout: failed to connect service {addr:?} within {secs}s: {e}"));
    }
    let path = http::uri::PathAndQuery::from_static(CHECK);
    let call = grpc.unary(tonic::Request::new(encode_request(service)), path, RawCodec);
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::Failure(format!("timeout: health rpc did not complete within {secs}s")),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Outcome::Failure(format!(
            "this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            s.message()
        )),
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded || s.code() == tonic::Code::Cancelled => {
            Outcome::Failure(format!("timeout: health rpc did not complete within {secs}s"))
        }
        Ok(Err(s)) => Outcome::Failure(format!("rpc error: code = {:?} desc = {}", s.code(), s.message())),
        Ok(Ok(resp)) => match decode_status(resp.get_ref()) {
            Some(1) => Outcome::Success("service healthy".into()),
            Some(other) => Outcome::Failure(format!("service unhealthy (responded with {:?})", status_name(other))),
            None => Outcome::Failure("malformed health check response".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    #[test]
    fn health_messages_encode_and_decode() {
        assert_eq!(encode_request(""), Vec::<u8>::new());
        assert_eq!(encode_request("db"), [0x0a, 2, b'd', b'b']);
        assert_eq!(encode_request(&"x".repeat(200))[..3], [0x0a, 0xc8, 0x01]);
        assert_eq!(decode_status(&[0x08, 0x01]), Some(1));
        assert_eq!(decode_status(&[]), Some(0));
        assert_eq!(decode_status(&[0x12, 1, b'z', 0x08, 0x02]), Some(2), "unknown fields are skipped");
        assert_eq!(decode_status(&[0x08]), None);
    }

    /// A one-connection HTTP/2 server answering every call with `message` and `grpc_status`.
    async fn serve(message: &'static [u8], grpc_status: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let svc = hyper::service::service_fn(move |_req: hyper::Request<hyper::body::Incoming>| async move {
                let mut framed = vec![0u8];
                framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                framed.extend_from_slice(message);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static(grpc_status));
                let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                    vec![Ok(Frame::data(Bytes::from(framed))), Ok(Frame::trailers(trailers))];
                let body = StreamBody::new(futures::stream::iter(frames));
                Ok::<_, Infallible>(
                    hyper::Response::builder().header("content-type", "application/grpc").body(body).expect("response"),
                )
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
        port
    }

    #[tokio::test]
    async fn grpc_probe_reads_the_serving_status() {
        let port = serve(&[0x08, 0x01], "0").await;
        assert_eq!(
            probe("127.0.0.1", port, "", Duration::from_secs(5)).await,
            Outcome::Success("service healthy".into())
        );
        let port = serve(&[0x08, 0x02], "0").await;
        assert_eq!(
            probe("127.0.0.1", port, "db", Duration::from_secs(5)).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let port = serve(&[], "12").await;
        let out = probe("127.0.0.1", port, "", Duration::from_secs(5)).await;
        assert!(
            matches!(&out, Outcome::Failure(m) if m.starts_with("this server does not implement the grpc health protocol")),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn grpc_probe_fails_when_nothing_listens() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let out = probe("127.0.0.1", port, "", Duration::from_secs(1)).await;
        assert!(
            matches!(&out, Outcome::Failure(m) if m.starts_with(&format!("timeout: failed to connect service \"127.0.0.1:{port}\" within 1s"))),
            "{out:?}"
        );
    }
}
