//! Logs and traces: one structured line per decision (who, what, outcome, why; never a
//! credential), a span per check when traces are exported, and the `tracing` subscriber set-up.
//!
//! Traces are off unless the standard OpenTelemetry variables ask for them
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//! `OTEL_TRACES_EXPORTER=otlp`); then every check is a server span, a child of the trace context
//! Envoy sent with the check (its ext_authz span: `traceparent` in the gRPC metadata or the HTTP
//! check request), with a client span per TokenReview, SubjectAccessReview, provider and Redis
//! call, exported over OTLP (`OTEL_EXPORTER_OTLP_PROTOCOL` `grpc` or `http/protobuf`) by the
//! `opentelemetry` crates. The decision line then carries the `trace_id`. A client's own
//! `traceparent` in the checked request is never a parent: only the peer that calls authgate is.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use crate::spans::TraceHeaders;
use crate::spans::{self, SPAN_TARGET};

use crate::decision::Decision;
use crate::gate::Gate;
use crate::request::Request;

/// Runs `decide` and logs the outcome. Both transports call this, so they log alike.
pub struct Checker {
    gate: Arc<Gate>,
}

impl Checker {
    /// Wraps the gate.
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Decides and logs; `caller` is the trace context that came with the check.
    pub async fn check(
        &self,
        req: &Request,
        transport: &'static str,
        caller: &TraceHeaders,
    ) -> Decision {
        let started = Instant::now();
        let span = spans::check_span(transport, caller);
        let decision = self
            .gate
            .decide(req)
            .instrument(span.clone())
            .await
            .deliverable();
        let took = started.elapsed();
        let metrics = crate::metrics::global();
        metrics.check_took(transport, took);
        let user = decision.identity().map(|i| i.user.as_str()).unwrap_or("-");
        let method = decision
            .identity()
            .map(|i| i.method.as_str())
            .unwrap_or("-");
        let outcome = match &decision {
            Decision::Allow(_) => "allow",
            Decision::Respond(_) => "deny",
        };
        if let Some(identity) = decision.identity() {
            metrics.decision_by_auth_method(identity.method.as_str(), outcome);
        }
        metrics.decision(transport, outcome, decision.reason().as_str());
        let trace_id = (!span.is_none()).then(|| {
            span.record("authgate.outcome", outcome);
            span.record("authgate.reason", decision.reason().as_str());
            span.record("http.response.status_code", decision.status().as_u16());
            if decision.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            span.context().span().span_context().trace_id().to_string()
        });
        tracing::info!(
            target: "authgate::decision",
            transport,
            outcome,
            status = decision.status().as_u16(),
            reason = decision.reason().as_str(),
            user,
            auth_method = method,
            http_method = req.method_for_log(),
            host = req.host.as_str(),
            path = req.path_for_log(),
            client_ip = %OrDash(req.client_ip),
            micros = took.as_micros() as u64,
            trace_id = trace_id.as_deref(),
            "decision"
        );
        decision
    }
}

/// The client address for the decision line, bare (`10.0.0.1`), or `-` as for the other
/// fields a decision may lack.
struct OrDash(Option<std::net::IpAddr>);

impl std::fmt::Display for OrDash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// What traces the `OTEL_*` variables ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceExport {
    /// None (the default).
    Off,
    /// OTLP over gRPC.
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    HttpProtobuf,
}

/// Reads the standard variables (`env` looks one up): traces go out over OTLP when an OTLP
/// endpoint is set or `OTEL_TRACES_EXPORTER=otlp`, and never with `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none`. What authgate cannot do is an error, not silently ignored.
pub fn trace_export(env: impl Fn(&str) -> Option<String>) -> Result<TraceExport, String> {
    let set = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(TraceExport::Off);
    }
    let exporter = set("OTEL_TRACES_EXPORTER");
    match exporter.as_deref() {
        Some("none") => return Ok(TraceExport::Off),
        None | Some("otlp") => {}
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other}: authgate exports traces over OTLP only (otlp or none)"
            ));
        }
    }
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if endpoint.is_none() && exporter.is_none() {
        return Ok(TraceExport::Off);
    }
    let (name, protocol) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
        None => (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            set("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ),
    };
    let export = match protocol.as_deref() {
        // The specification's default.
        None | Some("http/protobuf") => TraceExport::HttpProtobuf,
        Some("grpc") => TraceExport::Grpc,
        Some(other) => {
            return Err(format!(
                "{name}={other}: authgate exports OTLP as grpc or http/protobuf"
            ));
        }
    };
    if export == TraceExport::Grpc && endpoint.as_deref().is_some_and(|e| e.starts_with("https:")) {
        return Err(
            "OTLP over gRPC with TLS is not built in: send it in plain gRPC to a collector in \
             the mesh (the sidecar encrypts), or use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
             with an https:// endpoint"
                .into(),
        );
    }
    Ok(export)
}

/// The installed subscriber; [`Telemetry::shutdown`] sends the spans not yet exported.
#[must_use = "keep it until the end, and shut it down to send the last spans"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_on(&self) -> bool {
        self.traces.is_some()
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("authgate: exporting the last spans failed: {e}");
        }
    }
}

/// Installs the log subscriber: JSON lines ([`crate::logline`]) unless
/// `AUTHGATE_LOG_FORMAT=text`; level from `AUTHGATE_LOG` (an `EnvFilter` directive, default
/// `info`). With `traces` (the server; inside its tokio runtime, which the gRPC exporter
/// needs) also the OTLP export the `OTEL_*` variables ask for ([`trace_export`]).
pub fn init(traces: bool) -> Result<Telemetry, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let provider = if traces {
        tracer_provider_from_env()?
    } else {
        None
    };
    let filter = EnvFilter::try_from_env("AUTHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("AUTHGATE_LOG_FORMAT").is_ok_and(|f| f == "text");
    // Only authgate's own spans are exported (never those of the libraries, nor of the
    // exporter's own calls); the log filter does not decide what is traced.
    let spans = provider.as_ref().map(span_layer);
    // Without spans the filter is global, as before traces: a log line not wanted costs nothing.
    let registry = tracing_subscriber::registry();
    let _ = match spans {
        None => registry.with(filter).with(log_lines(text)).try_init(),
        Some(spans) => registry
            .with(log_lines(text).with_filter(filter))
            .with(spans)
            .try_init(),
    };
    spans::enable(provider.is_some());
    Ok(Telemetry { traces: provider })
}

/// The tracer provider the `OTEL_*` variables ask for ([`trace_export`]), if any; inside a
/// tokio runtime (the gRPC exporter's channel lives there).
pub fn tracer_provider_from_env() -> Result<Option<SdkTracerProvider>, String> {
    match trace_export(|name| std::env::var(name).ok())? {
        TraceExport::Off => Ok(None),
        export => tracer_provider(export, None).map(Some),
    }
}

/// The layer that turns authgate's spans (only those: never the libraries', nor the
/// exporter's own calls) into OpenTelemetry spans of `provider`. Spans are made only once
/// [`crate::spans::enable`] says so ([`init`] does).
pub fn span_layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("authgate"))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == SPAN_TARGET
        }))
}

/// The log lines, on stderr: JSON ([`crate::logline`]), or text.
fn log_lines<S>(text: bool) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if text {
        logs.boxed()
    } else {
        logs.event_format(crate::logline::JsonLine).boxed()
    }
}

/// The tracer provider: batches exported by the OTLP exporter to `endpoint` (else where the
/// variables say), sampled and named as the `OTEL_TRACES_SAMPLER[_ARG]` and
/// `OTEL_SERVICE_NAME` variables say (the SDK reads them). `Off` exports nothing.
pub fn tracer_provider(
    export: TraceExport,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    let exporter = match (export, endpoint) {
        (TraceExport::Off, _) => return Ok(SdkTracerProvider::builder().build()),
        (TraceExport::Grpc, None) => SpanExporter::builder().with_tonic().build(),
        (TraceExport::Grpc, Some(at)) => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(at)
            .build(),
        (TraceExport::HttpProtobuf, None) => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
        (TraceExport::HttpProtobuf, Some(at)) => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(at)
            .build(),
    }
    .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "authgate".into()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(vars: &[(&str, &str)]) -> Result<TraceExport, String> {
        trace_export(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_client_address_is_logged_bare_or_as_a_dash() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(OrDash(Some(ip)).to_string(), "10.0.0.1");
        let ip: std::net::IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(OrDash(Some(ip)).to_string(), "fd00::1");
        assert_eq!(OrDash(None).to_string(), "-");
    }

    #[test]
    fn traces_are_off_unless_an_otlp_endpoint_or_exporter_is_named() {
        assert_eq!(export(&[]), Ok(TraceExport::Off));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(export(&[endpoint]), Ok(TraceExport::HttpProtobuf));
        assert_eq!(
            export(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Ok(TraceExport::Grpc)
        );
        assert_eq!(
            export(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
            ]),
            Ok(TraceExport::HttpProtobuf),
            "the signal's own variable wins"
        );
        assert_eq!(
            export(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            Ok(TraceExport::Grpc)
        );
        assert_eq!(
            export(&[("OTEL_TRACES_EXPORTER", "otlp")]),
            Ok(TraceExport::HttpProtobuf)
        );
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(export(&[endpoint, off]), Ok(TraceExport::Off), "{off:?}");
        }
    }

    #[test]
    fn what_authgate_cannot_export_stops_it_with_the_reason() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (vars, says) in [
            (
                vec![endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "http/json",
            ),
            (vec![("OTEL_TRACES_EXPORTER", "zipkin")], "zipkin"),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "TLS",
            ),
        ] {
            let err = export(&vars).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
