//! gRPC ext_authz: `envoy.service.auth.v3.Authorization/Check`, translated to and from the core
//! [`Request`] and [`Decision`].

use std::net::IpAddr;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Address, Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;

use crate::decision::{Decision, StatusCode};
use crate::request::{Headers, Request};
use crate::telemetry::{Checker, TraceHeaders};

/// The tonic service.
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

#[tonic::async_trait]
impl Authorization for AuthorizationService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        // Envoy's ext_authz span comes in the call's metadata.
        let caller = TraceHeaders::from_headers(request.metadata().as_ref());
        let req = to_request(request.into_inner());
        let decision = self.checker.check(&req, "grpc", &caller).await;
        Ok(tonic::Response::new(to_response(decision)))
    }
}

/// `CheckRequest` → core request. `path` carries the query (Envoy leaves `query` empty); headers
/// come from `header_map` when Envoy sends raw headers, else from the merged `headers` map.
/// Takes the request by value: its strings move into the core request instead of being copied.
pub fn to_request(check: CheckRequest) -> Request {
    let client_ip = check
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            Address::SocketAddress(sa) => sa.address.parse::<IpAddr>().ok(),
            _ => None,
        });
    let http = check
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http);
    let Some(http) = http else {
        // No HTTP attributes: an empty path is refused by normalization, so this fails closed.
        return Request::new("", "", "", "", Headers::default(), None);
    };
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
        _ => Headers::from_owned(http.headers),
    };
    let target = if http.query.is_empty() || http.path.contains('?') {
        http.path
    } else {
        format!("{}?{}", http.path, http.query)
    };
    Request::from_owned(
        http.method,
        http.scheme,
        http.host,
        &target,
        headers,
        client_ip,
    )
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
