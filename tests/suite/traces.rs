//! Traces through the mesh (issue 19 item 2): Envoy traces every request with its OpenTelemetry
//! tracer; authgate, run as deployed (its own process, configured by the standard `OTEL_*`
//! variables alone), makes each check a server span that is a child of Envoy's ext_authz span,
//! with a client span per TokenReview, and exports them over OTLP — gRPC and HTTP/protobuf —
//! to a receiver speaking the published OTLP protobuf service. The decision log line carries
//! the trace id.

use crate::support::otlp::{OtlpReceiver, ReceivedSpan};
use crate::support::process::AuthgateProcess;
use crate::support::*;

/// A rule that asks a SubjectAccessReview.
const NOTEBOOKS: &str = r#"
authorization:
  rules:
    - name: notebook
      path: /notebook/{namespace}/{name}/**
      resource: {group: kubeflow.org, resource: notebooks, name: '{name}'}
"#;

/// SpanKind in the OTLP protobuf.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test]
async fn each_check_is_a_span_under_envoys_ext_authz_span_exported_over_otlp() {
    for (mode, protocol) in [(ExtAuthz::Grpc, "grpc"), (ExtAuthz::Http, "http/protobuf")] {
        let receiver = OtlpReceiver::start().await;
        let fixture = Fixture {
            tokens: vec![sa_token("sa-token", "team-a", "runner", &[KFP_AUDIENCE])],
            rbac: Rbac {
                bindings: vec![Binding {
                    namespace: "team-a".into(),
                    subject: Subject::User("system:serviceaccount:team-a:runner".into()),
                    rules: vec![PolicyRule {
                        api_groups: vec!["kubeflow.org".into()],
                        resources: vec!["notebooks".into()],
                        verbs: vec!["get".into()],
                    }],
                }],
            },
        };
        let kube = KubeApi::start(fixture).await;
        let endpoint = match protocol {
            "grpc" => format!("http://{}", receiver.grpc),
            _ => format!("http://{}", receiver.http),
        };
        let authgate = AuthgateProcess::start_with_config_and_env(
            std::path::Path::new(env!("CARGO_BIN_EXE_authgate")),
            &config_yaml(kube.kubeconfig_path(), NOTEBOOKS),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_SERVICE_NAME", "authgate-under-test"),
                // Export batches every 100 ms rather than every 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ],
        )
        .await;
        let authz = match mode {
            ExtAuthz::Grpc => authgate.grpc,
            ExtAuthz::Http => ([127, 0, 0, 1], authgate.http_port).into(),
        };
        let envoy = Envoy::start_with(
            mode,
            authz,
            echo::start_echo().await.0,
            envoy::Options {
                otlp_tracing: Some(receiver.grpc),
                ..Default::default()
            },
        )
        .await;

        // A client that traces (its own span is the root of the trace).
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let client_span = "00f067aa0ba902b7";
        let used = raw_http(
            envoy.addr(),
            &format!(
                "GET /notebook/team-a/nb/lab HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
                 Authorization: Bearer sa-token\r\n\
                 traceparent: 00-{trace_id}-{client_span}-01\r\n"
            ),
        )
        .await;
        assert_eq!(used.status, 200, "{mode:?}: {used:?}");

        let ours = |spans: &[ReceivedSpan]| -> Option<ReceivedSpan> {
            spans
                .iter()
                .find(|s| s.service == "authgate-under-test" && s.name == "authgate Check")
                .cloned()
        };
        receiver
            .wait_for("authgate Check span and its reviews", |spans| {
                ours(spans).is_some()
                    && ["TokenReview", "SubjectAccessReview"]
                        .iter()
                        .all(|name| spans.iter().any(|s| &s.name == name))
            })
            .await;
        let spans = receiver.spans();
        let check = ours(&spans).unwrap();
        assert_eq!(check.via, if protocol == "grpc" { "grpc" } else { "http" });
        assert_eq!(check.kind, SERVER, "{check:?}");
        assert_eq!(
            check.trace_id, trace_id,
            "{mode:?}: the trace Envoy propagates"
        );
        assert_eq!(check.attribute("authgate.outcome"), Some("allow"));
        assert_eq!(check.attribute("authgate.reason"), Some("authenticated"));
        // Its parent is Envoy's own ext_authz span (not the client's span, nor a fresh root).
        receiver
            .wait_for("Envoy's span that is the check's parent", |spans| {
                spans.iter().any(|s| s.span_id == check.parent_span_id)
            })
            .await;
        let spans = receiver.spans();
        let parent = spans
            .iter()
            .find(|s| s.span_id == check.parent_span_id)
            .unwrap();
        assert_eq!(parent.service, "ingress-gateway", "{parent:?}");
        assert_eq!(parent.trace_id, trace_id);
        assert_ne!(check.parent_span_id, client_span);
        // The reviews it asked for are its children, client spans.
        for name in ["TokenReview", "SubjectAccessReview"] {
            let review = spans.iter().find(|s| s.name == name).unwrap();
            assert_eq!(review.parent_span_id, check.span_id, "{review:?}");
            assert_eq!(review.kind, CLIENT);
            assert_eq!(review.trace_id, trace_id);
            assert_eq!(review.service, "authgate-under-test");
        }
        // The decision line names the trace.
        assert!(
            authgate
                .log()
                .contains(&format!("\"trace_id\":\"{trace_id}\"")),
            "{}",
            authgate.log()
        );

        // A traceparent that is not one is no parent, and costs the request nothing.
        let odd = raw_http(
            envoy.addr(),
            "GET /api/y HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
             Authorization: Bearer sa-token\r\ntraceparent: 00-not-a-trace-01\r\n",
        )
        .await;
        assert_eq!(odd.status, 200, "{odd:?}");

        // Behind an Envoy that does not trace, the client's own traceparent is no parent: only
        // the caller of the check is trusted with the trace.
        let plain = Envoy::start(mode, authz, echo::start_echo().await.0).await;
        let forged = "0af7651916cd43dd8448eb211c80319c";
        let used = raw_http(
            plain.addr(),
            &format!(
                "GET /api/z HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
                 Authorization: Bearer sa-token\r\n\
                 traceparent: 00-{forged}-{client_span}-01\r\n"
            ),
        )
        .await;
        assert_eq!(used.status, 200, "{used:?}");
        receiver
            .wait_for("a root authgate Check span", |spans| {
                spans
                    .iter()
                    .any(|s| s.name == "authgate Check" && s.parent_span_id.is_empty())
            })
            .await;
        for span in receiver.spans() {
            assert_ne!(span.trace_id, forged, "{mode:?}: {span:?}");
        }
    }
}

#[tokio::test]
async fn without_otel_variables_nothing_is_traced_and_a_bad_protocol_stops_the_server() {
    let kube = KubeApi::start(Fixture::default()).await;
    let config = config_yaml(kube.kubeconfig_path(), "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.yaml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
        "{said}"
    );

    // No variables: no span, and no trace id in the decision line.
    let authgate = AuthgateProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_authgate")),
        &config,
    )
    .await;
    let head = "GET /api/x HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
    let envoy = Envoy::start(ExtAuthz::Grpc, authgate.grpc, echo::start_echo().await.0).await;
    assert_eq!(raw_http(envoy.addr(), head).await.status, 401);
    let log = authgate.log();
    assert!(log.contains("\"decision\""), "{log}");
    assert!(!log.contains("trace_id"), "{log}");
    // The client address as Envoy saw it, bare (not Rust's `Some(…)`).
    assert!(log.contains("\"client_ip\":\"127.0.0.1\""), "{log}");
}
