//! The HTTP listener: Envoy's HTTP ext_authz checks (under `listen.http_check_prefix`), the JWKS,
//! and the probes.
//!
//! Envoy's HTTP ext_authz protocol: Envoy sends the client's method and path (after the
//! configured `path_prefix`) with the allowed headers; a 200 answer allows the request, and the
//! answer's headers named in `allowed_upstream_headers` overwrite the client's; headers listed in
//! `x-envoy-auth-headers-to-remove` are removed; any other status is sent to the client as is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request as AxumRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::decision::Decision;
use crate::request::{Headers, Request};
use crate::telemetry::{Checker, TraceHeaders};

/// Header in which Envoy's HTTP ext_authz takes the names of headers to remove upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Shared state of the HTTP listener.
#[derive(Clone)]
pub struct HttpState {
    checker: Arc<Checker>,
    check_prefix: Arc<str>,
    ready: Arc<AtomicBool>,
}

impl HttpState {
    /// Builds the state; `ready` is flipped off when shutdown begins.
    pub fn new(checker: Arc<Checker>, check_prefix: &str, ready: Arc<AtomicBool>) -> Self {
        Self {
            checker,
            check_prefix: Arc::from(check_prefix),
            ready,
        }
    }
}

/// The router (testable without a socket).
pub fn router(state: HttpState) -> Router {
    let prefix = state.check_prefix.to_string();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/authgate/jwks.json", get(jwks))
        // authgate's own endpoints called directly (e.g. the provider's back-channel logout, or
        // a deployment that routes /authgate/ to this service): real responses, 200 included.
        .route("/authgate/{*rest}", any(own))
        .route(&prefix, any(check))
        .route(&format!("{prefix}/"), any(check))
        .route(&format!("{prefix}/{{*rest}}"), any(check))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let metrics = crate::metrics::global();
    if let Some(store) = state.checker.gate().session_store() {
        // Counting is cheap in memory and a SCAN in Redis: bounded, and skipped on failure.
        let count = tokio::time::timeout(std::time::Duration::from_secs(1), store.count()).await;
        if let Ok(Ok(n)) = count {
            metrics.sessions.set(n as i64);
        }
        let evicted =
            tokio::time::timeout(std::time::Duration::from_secs(1), store.evicted()).await;
        if let Ok(Ok(Some(n))) = evicted {
            metrics.store_evictions.set(n as i64);
        }
    }
    if let Some(tokens) = state.checker.gate().token_store() {
        let count =
            tokio::time::timeout(std::time::Duration::from_secs(1), tokens.count_tokens()).await;
        if let Ok(Ok(n)) = count {
            metrics.personal_tokens.set(n as i64);
        }
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

async fn jwks(State(state): State<HttpState>) -> Response {
    (
        [
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=300"),
        ],
        state.checker.gate().signer().jwks().to_string(),
    )
        .into_response()
}

async fn check(State(state): State<HttpState>, request: AxumRequest) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Envoy's ext_authz span comes in the check request's own headers.
    let caller = TraceHeaders::from_headers(request.headers());
    let req = to_request(&request, &state.check_prefix, peer);
    let decision = state.checker.check(&req, "http", &caller).await;
    to_response(decision)
}

/// Largest body read for authgate's own endpoints (a logout token is well under this).
const MAX_OWN_BODY: usize = 64 * 1024;

async fn own(State(state): State<HttpState>, request: AxumRequest) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_OWN_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let request = AxumRequest::from_parts(parts, Body::empty());
    let caller = TraceHeaders::from_headers(request.headers());
    let req = to_request(&request, "", peer).with_body(body.to_vec());
    match state.checker.check(&req, "http-direct", &caller).await {
        Decision::Respond(answer) => to_http(answer),
        // Not an authgate endpoint answer (cannot happen for /authgate/ paths): refuse.
        Decision::Allow(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// HTTP check request → core request. The path is the raw target after the check prefix.
pub fn to_request(request: &AxumRequest, prefix: &str, peer: Option<IpAddr>) -> Request {
    let uri = request.uri();
    let raw = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = raw.strip_prefix(prefix).unwrap_or(raw);
    let target = if target.is_empty() || target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_string()
    };
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or_default();
    let scheme = header("x-forwarded-proto").unwrap_or("http");
    // Envoy (use_remote_address) appends the downstream address as the last hop.
    let client_ip = header("x-forwarded-for")
        .and_then(|xff| xff.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .or(peer);
    Request::new(
        request.method().as_str(),
        scheme,
        host,
        &target,
        to_headers(headers),
        client_ip,
    )
}

fn to_headers(headers: &HeaderMap) -> Headers {
    Headers::from_pairs(headers.iter().map(|(n, v)| {
        (
            n.as_str(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        )
    }))
}

/// Core decision → HTTP check answer.
pub fn to_response(decision: Decision) -> Response {
    match decision {
        Decision::Allow(allow) => {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            let mut written = true;
            for (name, value) in allow.set.iter().chain(allow.response_headers.iter()) {
                written &= append(headers, name, value);
            }
            if !allow.remove.is_empty() {
                written &= append(headers, HEADERS_TO_REMOVE, &allow.remove.join(","));
            }
            if !written {
                // Allowing without a header it sets would let the client's own copy through
                // (it is not in the removals either): fail closed.
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            response
        }
        Decision::Respond(answer) => {
            let mut response = to_http(answer);
            // A 200 answer would mean "allow" to Envoy: authgate's own pages (whoami, JWKS)
            // answered through an HTTP check must therefore not come back as 200.
            if response.status() == StatusCode::OK {
                *response.status_mut() = StatusCode::NON_AUTHORITATIVE_INFORMATION;
            }
            response
        }
    }
}

/// authgate's answer as an HTTP response, status, headers and body as they are.
fn to_http(answer: crate::decision::Response) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    for (name, value) in &answer.headers {
        append(response.headers_mut(), name, value);
    }
    response
}

/// Appends a header; false (and an error logged) when it is not valid HTTP.
fn append(headers: &mut HeaderMap, name: &str, value: &str) -> bool {
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value.as_bytes()),
    ) {
        (Ok(n), Ok(v)) => {
            headers.append(n, v);
            true
        }
        _ => {
            tracing::error!(
                header = name,
                "a header that is not valid HTTP was not written"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Allow, Reason};

    fn allow(set: Vec<(&str, &str)>) -> Decision {
        Decision::Allow(Allow {
            set: set
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            remove: vec!["kubeflow_userid".into()],
            response_headers: Vec::new(),
            identity: None,
            reason: Reason::Authenticated,
        })
    }

    #[test]
    fn an_allow_that_cannot_carry_its_headers_is_a_5xx_never_a_200() {
        let ok = to_response(allow(vec![("kubeflow-groups", "a,b")]));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["kubeflow-groups"], "a,b");
        assert_eq!(ok.headers()[HEADERS_TO_REMOVE], "kubeflow_userid");
        for bad in ["a\nb", "a\rb", "a\0b", "\u{7f}"] {
            let response = to_response(allow(vec![
                ("kubeflow-userid", "alice"),
                ("kubeflow-groups", bad),
            ]));
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{bad:?}"
            );
            assert!(response.headers().get("kubeflow-userid").is_none());
        }
        let response = to_response(allow(vec![("bad name", "v")]));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn the_core_refuses_the_same_allow_before_any_adapter() {
        let decision = allow(vec![("kubeflow-groups", "a\r\nx-evil: 1")]).deliverable();
        assert_eq!(decision.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(decision.reason(), Reason::Undeliverable);
    }
}
