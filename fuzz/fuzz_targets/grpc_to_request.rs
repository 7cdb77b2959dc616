//! The gRPC adapter: an arbitrary-ish `CheckRequest` (every string field Envoy fills, raw and
//! merged header shapes, any source address) encoded as Envoy's full message, decoded by
//! authgate's lean view (`transport::check_request`) and turned into a core request; then
//! `to_response` on decisions built from the fuzzed values. And arbitrary bytes: whatever the
//! full message decodes, the lean view decodes to what the full message's own encoding gives.
//!
//! Invariants: no HTTP attributes → a refused path (fails closed); method a token, upper-cased, host and
//! scheme lower-case, header names lower-case, one header per `header_map` entry (raw bytes win
//! over `value`); the path and query are split as Envoy sent them; an allow sets identity
//! headers with `append: false` + overwrite, a denial never sets the deprecated `append`.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use authgate::decision::{Allow, Decision, Reason, Response, StatusCode};
use authgate::request::Request as CoreRequest;
use authgate::transport::check_request;
use authgate::transport::grpc::{to_request, to_response};
use prost::Message as _;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, SocketAddress, address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    raw: Vec<u8>,
    has_attributes: bool,
    has_request: bool,
    http: Option<Http>,
    source: Option<String>,
    status: u16,
    response_headers: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
struct Http {
    method: String,
    headers: Vec<(String, String)>,
    header_map: Option<Vec<(String, String, Vec<u8>)>>,
    path: String,
    host: String,
    scheme: String,
    query: String,
    fragment: String,
    body: String,
    raw_body: Vec<u8>,
}

fn check_request(input: &Input) -> CheckRequest {
    let http = input.http.as_ref().map(|h| HttpRequest {
        method: h.method.clone(),
        headers: h.headers.iter().cloned().collect::<HashMap<_, _>>(),
        header_map: h.header_map.as_ref().map(|m| HeaderMap {
            headers: m
                .iter()
                .map(|(k, v, raw)| HeaderValue {
                    key: k.clone(),
                    value: v.clone(),
                    raw_value: raw.clone(),
                })
                .collect(),
        }),
        path: h.path.clone(),
        host: h.host.clone(),
        scheme: h.scheme.clone(),
        query: h.query.clone(),
        fragment: h.fragment.clone(),
        body: h.body.clone(),
        raw_body: h.raw_body.clone(),
        ..Default::default()
    });
    CheckRequest {
        attributes: input.has_attributes.then(|| AttributeContext {
            source: input.source.as_ref().map(|a| Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: a.clone(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: input.has_request.then(|| Request { time: None, http }),
            ..Default::default()
        }),
    }
}

/// What the decision reads of a core request, comparable.
fn reading(req: &CoreRequest) -> impl PartialEq + std::fmt::Debug + use<> {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    headers.sort();
    (
        req.method_for_log().to_string(),
        req.scheme.clone(),
        req.host.clone(),
        req.raw_path.clone(),
        req.path.clone(),
        req.query.clone(),
        req.client_ip,
        headers,
    )
}

fuzz_target!(|input: Input| {
    // Arbitrary bytes: the lean view reads whatever the full message reads, as the full message.
    if let Ok(full) = CheckRequest::decode(input.raw.as_slice()) {
        let lean = check_request::decode(&input.raw).expect("the full message decoded these bytes");
        let canonical = check_request::decode(&full.encode_to_vec()).expect("re-encoded");
        // The full message checked every string it decoded for UTF-8: so are the headers here.
        let lean = to_request(lean).expect("UTF-8, as the full message found");
        assert_eq!(reading(&lean), reading(&to_request(canonical).expect("UTF-8")));
    }

    let check = check_request(&input);
    let req = to_request(check_request::decode(&check.encode_to_vec()).expect("decodes"))
        .expect("strings are UTF-8");
    let http = check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    match http {
        None => {
            assert!(req.path.is_err(), "no HTTP attributes must fail closed");
        }
        Some(http) => {
            // A method is a token, upper-cased as sent; anything else is refused.
            match &req.method {
                Ok(method) => assert_eq!(method.as_str(), http.method.to_ascii_uppercase()),
                Err(_) => assert!(
                    http.method.is_empty()
                        || !http
                            .method
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
                    "a token method refused: {:?}",
                    http.method
                ),
            }
            assert_eq!(req.host, http.host.to_ascii_lowercase());
            assert_eq!(req.scheme, http.scheme.to_ascii_lowercase());
            for (name, _) in req.headers.iter() {
                assert_eq!(name, name.to_ascii_lowercase());
            }
            let count = req.headers.iter().count();
            match &http.header_map {
                Some(map) if !map.headers.is_empty() => {
                    assert_eq!(count, map.headers.len());
                    for (h, (name, value)) in map.headers.iter().zip(req.headers.iter()) {
                        assert_eq!(name, h.key.to_ascii_lowercase());
                        if h.raw_value.is_empty() {
                            assert_eq!(value, h.value);
                        } else {
                            assert_eq!(value, String::from_utf8_lossy(&h.raw_value));
                        }
                    }
                }
                _ => assert_eq!(count, http.headers.len()),
            }
            assert!(!req.raw_path.contains('?') && !req.raw_path.contains('#'));
            let clean = |s: &str| !s.contains('?') && !s.contains('#');
            if clean(&http.path) && !http.query.contains('#') {
                assert_eq!(req.raw_path, http.path);
                assert_eq!(req.query, http.query);
            }
            if let Ok(path) = &req.path {
                assert!(path.starts_with('/') && !path.contains("//"), "{path:?}");
            }
            if let Some(ip) = req.client_ip {
                let source = input.source.as_deref().expect("an address was sent");
                assert_eq!(source.parse::<std::net::IpAddr>().ok(), Some(ip));
            }
        }
    }

    // Both answers translate without panicking and keep Envoy's header rules.
    let headers: Vec<(String, String)> = input.response_headers.iter().take(8).cloned().collect();
    let allow = to_response(Decision::Allow(Allow {
        set: headers.clone(),
        remove: headers.iter().map(|(n, _)| format!("{n}-x")).collect(),
        response_headers: headers.clone(),
        identity: None,
        reason: Reason::Authenticated,
    }));
    // An allow whose headers cannot all be written is a denied 500, never an allow without them.
    let deliverable = headers
        .iter()
        .all(|(_, v)| authgate::decision::header_value_deliverable(v));
    match allow.http_response {
        Some(HttpResponse::OkResponse(ok)) if deliverable => {
            assert_eq!(ok.headers.len(), headers.len());
            #[allow(deprecated)]
            for h in &ok.headers {
                assert_eq!(h.append.map(|b| b.value), Some(false));
            }
            assert_eq!(ok.response_headers_to_add.len(), headers.len());
            assert_eq!(allow.status.map(|s| s.code), Some(0));
        }
        Some(HttpResponse::DeniedResponse(d)) if !deliverable => {
            assert_eq!(d.status.map(|s| s.code), Some(500));
            assert_ne!(allow.status.map(|s| s.code), Some(0));
        }
        other => panic!("allow (deliverable: {deliverable}) became {other:?}"),
    }
    let status = StatusCode::from_u16(input.status).unwrap_or(StatusCode::FORBIDDEN);
    let deny = to_response(Decision::Respond(Response {
        status,
        headers: headers.clone(),
        body: String::new(),
        identity: None,
        reason: Reason::NoRule,
    }));
    assert_ne!(
        deny.status.as_ref().map(|s| s.code),
        Some(0),
        "a denial with code OK"
    );
    match deny.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            assert_eq!(d.status.map(|s| s.code), Some(i32::from(status.as_u16())));
            #[allow(deprecated)]
            for h in &d.headers {
                assert!(h.append.is_none(), "denied headers must not set `append`");
            }
        }
        other => panic!("deny became {other:?}"),
    }
});
