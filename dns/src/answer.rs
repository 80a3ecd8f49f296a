//! From a request to a response, pure: which zone answers, the header flags, the SOA in the
//! authority section of negative answers, EDNS, truncation for UDP. The server only moves
//! bytes; everything it sends is decided here.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::zone::{Outcome, Zone};

/// The UDP payload rkube-dns advertises and accepts (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reply(Box<Message>),
    /// Outside the cluster's names: send it to an upstream resolver.
    Forward,
    /// Not a query (a response sent to us, say): no answer at all.
    Drop,
}

/// Decides the answer to `req`; `can_forward` says whether upstream resolvers exist.
pub fn decide(zone: &Zone, req: &Message, can_forward: bool) -> Action {
    if req.metadata.message_type != MessageType::Query {
        return Action::Drop;
    }
    if req.metadata.op_code != OpCode::Query {
        return Action::Reply(Box::new(reply(req, ResponseCode::NotImp)));
    }
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Action::Reply(Box::new(reply(req, ResponseCode::BADVERS)));
    }
    let [q] = req.queries.as_slice() else {
        return Action::Reply(Box::new(reply(req, ResponseCode::FormErr)));
    };
    let qname = q.name();
    let outcome = if zone.in_domain(qname) {
        if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
            return Action::Reply(Box::new(reply(req, ResponseCode::Refused)));
        }
        if !zone.synced() {
            return Action::Reply(Box::new(reply(req, ResponseCode::ServFail)));
        }
        zone.lookup(qname, q.query_type())
    } else {
        // upstream's default Corefile: reverse names the cluster does not know fall through
        // to the forwarder, like every other name outside the domain
        match zone.reverse(qname, q.query_type()).filter(|_| zone.synced()) {
            Some(o) => o,
            None if can_forward => return Action::Forward,
            None => return Action::Reply(Box::new(reply(req, ResponseCode::Refused))),
        }
    };
    let mut resp = reply(req, ResponseCode::NoError);
    resp.metadata.authoritative = true;
    match outcome {
        Outcome::Found { answers, additionals } => {
            resp.answers = answers;
            resp.additionals = additionals;
        }
        Outcome::NoData => resp.authorities.push(zone.soa()),
        Outcome::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.authorities.push(zone.soa());
        }
    }
    Action::Reply(Box::new(resp))
}

/// An empty response to `req` with `rcode`: same id and question, RD copied, RA set (the
/// server resolves other names through its upstreams), EDNS answered with EDNS.
pub fn reply(req: &Message, rcode: ResponseCode) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.response_code = rcode;
    resp.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        resp.set_edns(edns);
    }
    resp
}

/// The FORMERR answer to bytes that do not parse, when they carry at least an id.
pub fn format_error(bytes: &[u8]) -> Option<Message> {
    let id = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
    Some(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr))
}

/// The largest UDP answer `req` accepts: 512 bytes without EDNS, its EDNS size (capped at
/// ours) with it.
pub fn udp_limit(req: &Message) -> usize {
    usize::from(req.edns.as_ref().map_or(512, |e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD)))
}

#[derive(Debug, thiserror::Error)]
#[error("encoding a response: {0}")]
pub struct EncodeError(#[from] hickory_proto::ProtoError);

/// Wire bytes of `resp`; over `limit` (UDP), the header and question only with TC set, so
/// the client retries over TCP.
pub fn encode(resp: &Message, limit: Option<usize>) -> Result<Vec<u8>, EncodeError> {
    let bytes = resp.to_vec()?;
    match limit {
        Some(max) if bytes.len() > max => Ok(resp.truncate().to_vec()?),
        _ => Ok(bytes),
    }
}

/// The `type` label of the query metrics (CoreDNS's: common types by name, others `other`).
pub fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

/// The `rcode` label, as CoreDNS spells it.
pub fn rcode_label(low: u8) -> &'static str {
    match low {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::tests::{n, sample};
    use crate::zone::{service_from_api, slice_from_api};
    use hickory_proto::op::Query;
    use hickory_proto::rr::RData;

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(n(name), t));
        m
    }

    fn reply_to(zone: &Zone, req: &Message, can_forward: bool) -> Message {
        match decide(zone, req, can_forward) {
            Action::Reply(m) => *m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_is_authoritative_with_the_question_and_rd_copied() {
        let z = sample();
        let req = query("nginx.default.svc.cluster.local.", RecordType::A);
        let resp = reply_to(&z, &req, false);
        assert_eq!(resp.metadata.id, 4242);
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert!(resp.metadata.authoritative && resp.metadata.recursion_desired && resp.metadata.recursion_available);
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(resp.queries, req.queries);
        assert_eq!(resp.answers.len(), 1);
        assert!(resp.authorities.is_empty() && resp.edns.is_none());
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_zone_soa_in_the_authority_section() {
        let z = sample();
        let resp = reply_to(&z, &query("nope.default.svc.cluster.local.", RecordType::A), false);
        assert_eq!(resp.metadata.response_code, ResponseCode::NXDomain);
        assert!(resp.answers.is_empty());
        assert_eq!(resp.authorities, vec![z.soa()]);
        let resp = reply_to(&z, &query("nginx.default.svc.cluster.local.", RecordType::AAAA), false);
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
        assert_eq!(resp.authorities, vec![z.soa()]);
        assert!(matches!(resp.authorities[0].data, RData::SOA(_)));
    }

    #[test]
    fn names_outside_the_domain_are_refused_without_upstreams_and_forwarded_with() {
        let z = sample();
        let req = query("example.com.", RecordType::A);
        let resp = reply_to(&z, &req, false);
        assert_eq!(resp.metadata.response_code, ResponseCode::Refused);
        assert!(!resp.metadata.authoritative);
        assert_eq!(decide(&z, &req, true), Action::Forward);
        // a reverse name the cluster knows is answered; another one falls through
        let known = Message::query().add_query(Query::query(n("20.17.19.198.in-addr.arpa."), RecordType::PTR)).clone();
        let resp = reply_to(&z, &known, true);
        assert_eq!(resp.answers.len(), 1);
        let unknown = query("1.0.0.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(decide(&z, &unknown, true), Action::Forward);
        // a name that merely ends like the domain is not in it
        assert_eq!(decide(&z, &query("notcluster.local.", RecordType::A), true), Action::Forward);
    }

    #[test]
    fn before_the_first_list_the_domain_answers_servfail() {
        let z = Zone::new("cluster.local", 1).expect("zone");
        let resp = reply_to(&z, &query("nginx.default.svc.cluster.local.", RecordType::A), false);
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn malformed_requests_get_formerr_notimp_or_nothing() {
        let z = sample();
        let mut two = query("a.cluster.local.", RecordType::A);
        two.add_query(Query::query(n("b.cluster.local."), RecordType::A));
        assert_eq!(reply_to(&z, &two, false).metadata.response_code, ResponseCode::FormErr);
        let mut notify = query("cluster.local.", RecordType::SOA);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(reply_to(&z, &notify, false).metadata.response_code, ResponseCode::NotImp);
        let mut response = query("cluster.local.", RecordType::SOA);
        response.metadata.message_type = MessageType::Response;
        assert_eq!(decide(&z, &response, true), Action::Drop);
        let formerr = format_error(&[0x12, 0x34, 0xff]).expect("an id");
        assert_eq!((formerr.metadata.id, formerr.metadata.response_code), (0x1234, ResponseCode::FormErr));
        assert_eq!(format_error(&[1]), None);
    }

    #[test]
    fn large_udp_answers_are_truncated_and_whole_over_tcp_and_edns() {
        let mut z = sample();
        let (k, s) = service_from_api(
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "big", "namespace": "default"},
                "spec": {"clusterIP": "None"}}))
            .unwrap(),
        )
        .unwrap();
        z.apply_service(k, s);
        let eps: Vec<_> = (1..=60).map(|i| serde_json::json!({"addresses": [format!("198.18.30.{i}")]})).collect();
        let (k, s) = slice_from_api(
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "big-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "big"}}, "addressType": "IPv4", "endpoints": eps}))
            .unwrap(),
        )
        .unwrap();
        z.apply_slice(k, s);
        let req = query("big.default.svc.cluster.local.", RecordType::A);
        let resp = reply_to(&z, &req, false);
        assert_eq!(udp_limit(&req), 512);
        let udp = Message::from_vec(&encode(&resp, Some(udp_limit(&req))).unwrap()).unwrap();
        assert!(udp.metadata.truncation, "60 A records do not fit 512 bytes");
        assert!(udp.answers.is_empty());
        assert_eq!((udp.metadata.id, udp.queries.clone()), (4242, req.queries.clone()));
        let tcp = Message::from_vec(&encode(&resp, None).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 60);
        // with EDNS the client takes up to 1232 bytes here: the answer fits, and EDNS comes back
        let mut req = req;
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        req.set_edns(edns);
        assert_eq!(udp_limit(&req), usize::from(MAX_UDP_PAYLOAD));
        let resp = reply_to(&z, &req, false);
        let udp = Message::from_vec(&encode(&resp, Some(udp_limit(&req))).unwrap()).unwrap();
        assert!(!udp.metadata.truncation);
        assert_eq!(udp.answers.len(), 60);
        assert_eq!(udp.edns.map(|e| e.max_payload()), Some(MAX_UDP_PAYLOAD));
    }

    #[test]
    fn metric_labels_are_coredns_spellings() {
        assert_eq!(type_label(RecordType::AAAA), "AAAA");
        assert_eq!(type_label(RecordType::HINFO), "other");
        assert_eq!(rcode_label(3), "NXDOMAIN");
        assert_eq!(rcode_label(5), "REFUSED");
    }
}
