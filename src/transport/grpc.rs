//! gRPC ext_authz: `envoy.service.auth.v3.Authorization/Check`, translated to and from the core
//! [`Request`] and [`Decision`].

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytestring::ByteString;
use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;
use tonic::codegen::{Body, BoxFuture, StdError, http};

use super::check_request::{AddressKind, CheckRequest, HttpRequest};
use crate::decision::{Decision, StatusCode};
use crate::request::{Headers, Request};
use crate::telemetry::{Checker, TraceHeaders};

/// The service's one method, as Envoy calls it.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// The gRPC service `envoy.service.auth.v3.Authorization`. It is written out here rather than
/// taken from envoy-types' generated server, which decodes the whole `CheckRequest`: this one
/// decodes the lean view of [`super::check_request`] (same codec, limits and status handling:
/// tonic's `Grpc::unary`).
#[derive(Clone)]
pub struct AuthorizationService {
    checker: Arc<Checker>,
}

impl AuthorizationService {
    /// Wraps the checker.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }
}

impl tonic::server::NamedService for AuthorizationService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> tonic::codegen::Service<http::Request<B>> for AuthorizationService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        let check = Check(self.checker.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(check, req).await)
        })
    }
}

/// One Check call.
struct Check(Arc<Checker>);

impl tonic::server::UnaryService<CheckRequest> for Check {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let checker = self.0.clone();
        Box::pin(async move {
            // Envoy's ext_authz span comes in the call's metadata.
            let caller = TraceHeaders::from_headers(request.metadata().as_ref());
            // As envoy-types' full message would have failed to decode: an error to Envoy,
            // which fails closed.
            let req = to_request(request.into_inner()).map_err(|e| {
                tracing::warn!(error = %e, "refused a CheckRequest");
                tonic::Status::invalid_argument(e.to_string())
            })?;
            let decision = checker.check(&req, "grpc", &caller).await;
            Ok(tonic::Response::new(to_response(decision)))
        })
    }
}

/// Most headers a `CheckRequest` may carry. Envoy sends at most what it accepts from a client
/// (`max_headers_count`, 100 by default) and never repeats a map key; a message of tiny
/// repeated entries must not cost memory per entry.
pub const MAX_HEADERS: usize = 1024;

/// A `CheckRequest` authgate refuses to judge (an error to Envoy, which fails closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A header the decision reads is not UTF-8: protobuf `string`s must be, and the full
    /// message would not decode. (Fields authgate never reads are not checked.)
    #[error("a header in the CheckRequest's headers map is not UTF-8")]
    NotUtf8,
    /// More than [`MAX_HEADERS`] headers.
    #[error("the CheckRequest carries more than {MAX_HEADERS} headers")]
    TooManyHeaders,
}

/// `CheckRequest` → core request. `path` carries the query (Envoy leaves `query` empty); headers
/// come from `header_map` when Envoy sends raw headers, else from the merged `headers` map.
/// Takes the request by value: its strings move into the core request instead of being copied.
pub fn to_request(check: CheckRequest) -> Result<Request, Refused> {
    let client_ip = check
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            AddressKind::SocketAddress(sa) => sa.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let http = check
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http);
    let Some(http) = http else {
        // No HTTP attributes: an empty path is refused by normalization, so this fails closed.
        return Ok(Request::new("", "", "", "", Headers::default(), None));
    };
    if http.headers.len() > MAX_HEADERS
        || http
            .header_map
            .as_ref()
            .is_some_and(|m| m.headers.len() > MAX_HEADERS)
    {
        return Err(Refused::TooManyHeaders);
    }
    let headers = match http.header_map {
        Some(map) if !map.headers.is_empty() => {
            Headers::from_owned(map.headers.into_iter().map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8(h.raw_value)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                };
                (h.key, value)
            }))
        }
        _ => {
            let text = |b: bytes::Bytes| ByteString::try_from(b).map_err(|_| Refused::NotUtf8);
            let mut pairs = Vec::with_capacity(http.headers.len());
            for (name, value) in HttpRequest::merged_headers(http.headers) {
                pairs.push((text(name)?, text(value)?));
            }
            Headers::from_text(pairs)
        }
    };
    let target = if http.query.is_empty() || http.path.contains('?') {
        http.path
    } else {
        format!("{}?{}", http.path, http.query)
    };
    Ok(Request::from_owned(
        http.method,
        http.scheme,
        http.host,
        &target,
        headers,
        client_ip,
    ))
}

fn overwrite((key, value): (String, String)) -> HeaderValueOption {
    #[allow(deprecated)] // `append` is deprecated but Envoy 1.37 briefly defaulted it to true.
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            raw_value: Vec::new(),
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        keep_empty_value: false,
    }
}

/// Appends: several `set-cookie` values must stay several headers. Only `append_action` is set,
/// since Envoy refuses an option that sets both it and the deprecated `append`.
fn add((key, value): (String, String)) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key,
            value,
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::AppendIfExistsOrAdd.into(),
        ..Default::default()
    }
}

/// Core decision → `CheckResponse`. An allow with a header Envoy could not apply becomes a
/// denied 500 here too (Envoy would drop it or fail the request, and the client's own copy of
/// an identity header could reach the app without it).
pub fn to_response(decision: Decision) -> CheckResponse {
    match decision.deliverable() {
        Decision::Allow(allow) => CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok as i32,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: allow.set.into_iter().map(overwrite).collect(),
                headers_to_remove: allow.remove,
                // Several Set-Cookie values must be several entries, appended.
                response_headers_to_add: allow.response_headers.into_iter().map(add).collect(),
                ..Default::default()
            })),
            ..Default::default()
        },
        Decision::Respond(deny) => {
            let code = match deny.status {
                StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
                StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
                _ => tonic::Code::PermissionDenied,
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: code as i32,
                    message: deny.reason.to_string(),
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(deny.status.as_u16()),
                    }),
                    headers: deny.headers.into_iter().map(add).collect(),
                    body: deny.body,
                })),
                ..Default::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Allow, Reason};

    fn allow(groups: &str) -> Decision {
        Decision::Allow(Allow {
            set: vec![
                ("kubeflow-userid".into(), "alice".into()),
                ("kubeflow-groups".into(), groups.into()),
            ],
            remove: vec!["kubeflow_userid".into()],
            response_headers: Vec::new(),
            identity: None,
            reason: Reason::Authenticated,
        })
    }

    /// A `CheckRequest`'s bytes whose `headers` map holds these entries, as written on the wire.
    fn check_with_headers(entries: &[crate::transport::check_request::MapEntry]) -> Vec<u8> {
        let mut http = Vec::new();
        for entry in entries {
            prost::encoding::message::encode(3, entry, &mut http); // HttpRequest.headers
        }
        let mut request = Vec::new();
        prost::encoding::bytes::encode(2, &http, &mut request); // Request.http
        let mut attributes = Vec::new();
        prost::encoding::bytes::encode(4, &request, &mut attributes); // AttributeContext.request
        let mut check = Vec::new();
        prost::encoding::bytes::encode(1, &attributes, &mut check); // CheckRequest.attributes
        check
    }

    #[test]
    fn a_header_that_is_not_utf_8_is_refused_as_the_full_message_refuses_it() {
        use crate::transport::check_request::{self, MapEntry};
        use prost::Message as _;
        let check = check_with_headers(&[MapEntry {
            key: bytes::Bytes::from_static(b"x-a"),
            value: bytes::Bytes::from_static(&[0xff, b'a']),
        }]);
        assert!(envoy_types::ext_authz::v3::pb::CheckRequest::decode(check.as_slice()).is_err());
        let lean = check_request::decode(&check).expect("bytes, not yet text");
        assert_eq!(to_request(lean).err(), Some(Refused::NotUtf8));
    }

    #[test]
    fn a_check_with_more_headers_than_envoy_sends_is_refused() {
        use crate::transport::check_request::{self, MapEntry};
        // Empty entries, two bytes each: the cheapest flood.
        let check = check_with_headers(&vec![MapEntry::default(); MAX_HEADERS + 1]);
        let lean = check_request::decode(&check).unwrap();
        assert_eq!(to_request(lean).err(), Some(Refused::TooManyHeaders));
    }

    #[test]
    fn an_allow_that_cannot_carry_its_headers_is_denied() {
        let ok = to_response(allow("a,b"));
        assert_eq!(ok.status.unwrap().code, tonic::Code::Ok as i32);
        for bad in ["a\nb", "a\r\nx-evil: 1", "a\0b", "\u{7f}"] {
            let answer = to_response(allow(bad));
            assert_ne!(
                answer.status.unwrap().code,
                tonic::Code::Ok as i32,
                "{bad:?}"
            );
            match answer.http_response {
                Some(HttpResponse::DeniedResponse(d)) => {
                    assert_eq!(d.status.unwrap().code, 500)
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
