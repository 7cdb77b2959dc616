//! The spans of a check, when traces are exported ([`crate::telemetry`] installs the
//! exporter): one server span per check, a child of the trace context its caller sent, and a
//! client span per call to a dependency. Without export no span is made at all.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Turns span making on (traces are exported) or off.
pub fn enable(on: bool) {
    TRACING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported: without it no span is made at all (a check costs nothing more).
static TRACING: AtomicBool = AtomicBool::new(false);

/// The target of authgate's spans: the only ones the OpenTelemetry layer exports.
pub const SPAN_TARGET: &str = "authgate::trace";

/// The W3C trace context the caller sent with a check (`traceparent`, `tracestate`).
#[derive(Debug, Clone, Default)]
pub struct TraceHeaders {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl TraceHeaders {
    /// From the headers (or gRPC metadata) of the call to authgate; nothing when traces are off.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        if !TRACING.load(Ordering::Relaxed) {
            return Self::default();
        }
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Self {
            traceparent: get("traceparent"),
            tracestate: get("tracestate"),
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The span of one check, a child of what the caller sent (a malformed `traceparent` is no
/// parent: the check starts a trace of its own).
pub fn check_span(transport: &'static str, caller: &TraceHeaders) -> tracing::Span {
    if !TRACING.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "check",
        otel.name = "authgate Check",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        authgate.transport = transport,
        authgate.outcome = tracing::field::Empty,
        authgate.reason = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(caller);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of one call to a dependency, a child of the current check's; none when traces are
/// off.
pub fn call_span(dependency: &'static str) -> tracing::Span {
    if !TRACING.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let name = match dependency {
        "tokenreview" => "TokenReview",
        "subjectaccessreview" => "SubjectAccessReview",
        "provider" => "OIDC provider",
        "redis" => "Redis",
        other => other,
    };
    tracing::info_span!(
        target: SPAN_TARGET,
        "call",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        authgate.dependency = dependency,
    )
}
