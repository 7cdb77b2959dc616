//! Judge exactly what the app will see, through a real Envoy in both ext_authz modes: a path is
//! accepted only in the normal form a normalizing mesh sends (and that form is checked against
//! Envoy itself), and the HTTP provider passes exactly the shipped header list, which is all
//! authgate decides on there. (The Kubeflow preset's readings of trailing slashes and queries:
//! `tests/suite/authorization.rs`; the rule language itself: `src/authz/rules/tests.rs`.)

use std::sync::atomic::Ordering;

use authgate::path::{PathError, checked_path, normalize_path};

use crate::support::*;

const MODES: [ExtAuthz; 2] = [ExtAuthz::Grpc, ExtAuthz::Http];

/// Paths that a normalizing mesh rewrites, refuses or keeps: every printable ASCII character
/// and every escape (both hex cases) inside a segment, and dot- and empty-segment shapes.
fn corpus() -> Vec<String> {
    let mut paths = Vec::new();
    for b in 0x21u8..0x7f {
        if b != b'?' && b != b'#' {
            paths.push(format!("/a/x{}y", b as char));
        }
    }
    for b in 0u8..=255 {
        paths.push(format!("/a/x%{b:02x}y"));
        paths.push(format!("/a/x%{b:02X}y"));
    }
    for p in [
        "/",
        "//",
        "//a",
        "/a//b",
        "/a/",
        "/a/x///../../p/",
        "/a/./b",
        "/a/../b",
        "/a/%2e%2E/b",
        "/a/.%2e/b",
        "/a/%2e./b",
        "/a/..;x/b",
        "/a/b/..",
        "/a/b/.",
        "/..",
        "/../a",
        "/./a",
        "/a/...",
        "/a/.../b",
        "/a/%zz",
        "/a/%",
        "/a/%2",
        "/a;b/c",
        "/a/b;c=d/e",
        "/a\\b",
        "/a/é",
        "/~user",
        "/a[0]/b",
    ] {
        paths.push(p.to_string());
    }
    paths
}

/// authgate's normal form is Envoy's: for every path of the corpus, what a normalizing Envoy
/// (Istio's default) forwards is what `normalize_path` computes, and authgate never refuses
/// such a path as not normalized.
#[tokio::test]
async fn the_normal_form_is_what_a_normalizing_envoy_sends() {
    let (upstream, _) = echo::start_echo().await;
    let envoy =
        Envoy::start_filtered(envoy::Filter::None, upstream, envoy::Options::default()).await;
    let mut compared = 0;
    for raw in corpus() {
        let response = raw_http(envoy.addr(), &format!("GET {raw} HTTP/1.1\r\nHost: h\r\n")).await;
        let ours = normalize_path(&raw);
        if response.status != 200 {
            // Envoy refuses it (`%00`, raw non-ASCII): so does authgate.
            assert!(
                ours.is_err(),
                "Envoy refused {raw:?}, authgate reads {ours:?}"
            );
            continue;
        }
        let sent = response.json()["path"].as_str().unwrap().to_string();
        if let Ok(normal) = &ours {
            assert_eq!(&sent, normal, "the normal form of {raw:?}");
            compared += 1;
        }
        assert!(
            !matches!(checked_path(&sent), Err(PathError::NotNormal { .. })),
            "Envoy sent {sent:?} for {raw:?}, authgate calls it not normalized"
        );
    }
    assert!(compared > 500, "only {compared} paths compared");
}

fn tokens() -> Fixture {
    Fixture {
        tokens: vec![sa_token(
            "runner-token",
            "team-a",
            "runner",
            &[KFP_AUDIENCE],
        )],
        ..Fixture::default()
    }
}

/// Behind a mesh that normalizes, a path is judged as the app receives it; behind one that does
/// not, a path outside normal form is refused (400) and never reaches the app. Empty segments
/// are refused either way: Envoy keeps them, and apps disagree on them.
#[tokio::test]
async fn a_path_is_judged_as_the_app_receives_it_or_refused() {
    // (raw path, status behind a normalizing Envoy, status behind one that does not)
    let cases = [
        // RFC 3986 keeps the empty segments: this is /a/x/public/, not the skip-auth /public/.
        ("/a/x///../../public/", 401, 400),
        ("/public/../api/x", 401, 400),
        ("/%70ublic/x", 200, 400),
        ("/public/./x", 200, 400),
        ("/pub%6cic/x", 200, 400),
        ("/public/x|y", 200, 400),
        ("/public//x", 400, 400),
        ("/public/x/", 200, 200),
        ("/public/x%3fy", 200, 200),
    ];
    for mode in MODES {
        for normalize in [true, false] {
            let (upstream, reached) = echo::start_counted_echo().await;
            let options = envoy::Options {
                normalize_path: normalize,
                status_on_error: Some(503),
                ..Default::default()
            };
            let stack = Stack::start_with_options(mode, tokens(), "", options, upstream).await;
            for (raw, normalized, not_normalized) in cases {
                let want = if normalize {
                    normalized
                } else {
                    not_normalized
                };
                let before = reached.load(Ordering::SeqCst);
                let response = stack.get(raw, &[]).await;
                assert_eq!(
                    response.status, want,
                    "{mode:?} normalize={normalize} {raw}: {response:?}"
                );
                if want == 400 {
                    assert_eq!(
                        reached.load(Ordering::SeqCst),
                        before,
                        "{raw} reached the app"
                    );
                    let message = response.json()["message"].as_str().unwrap().to_string();
                    assert!(
                        message.contains("normal form") || message.contains("empty segment"),
                        "{mode:?} {raw}: {message}"
                    );
                }
            }
        }
    }
}

/// The HTTP provider passes exactly the shipped `includeRequestHeadersInCheck` list (the test
/// Envoy renders it from `HTTP_CHECK_HEADERS`): the method-override headers and the client's
/// address reach authgate through it, and a client's own X-Forwarded-For does not buy a new
/// per-address budget. A header the list omits never reaches the check in HTTP mode.
#[tokio::test]
async fn the_http_provider_passes_what_the_decision_needs_and_nothing_else() {
    let rules = "rate_limit: {per_client_ip: {rps: 1, burst: 4}}\n\
                 authorization:\n  rules:\n    - name: by-header\n      path: /by-header/**\n      namespace: {header: x-kf-namespace}\n      allow: true\n";
    for mode in MODES {
        let stack = Stack::start(mode, tokens(), rules).await;
        let override_head = "POST /x HTTP/1.1\r\nHost: kubeflow.example.com\r\n\
             Authorization: Bearer runner-token\r\nX-HTTP-Method-Override: GET\r\n\
             Content-Length: 0\r\n";
        let response = stack.raw(override_head).await;
        assert_eq!(response.status, 400, "{mode:?}: {response:?}");

        // A header outside the shipped list is seen over gRPC (every header is sent) and not
        // over HTTP, where the rule finds no namespace: check-config warns about such a rule.
        let by_header = stack
            .get(
                "/by-header/x",
                &[
                    "Authorization: Bearer runner-token",
                    "X-Kf-Namespace: team-a",
                ],
            )
            .await;
        let want = if mode == ExtAuthz::Grpc { 200 } else { 403 };
        assert_eq!(by_header.status, want, "{mode:?}: {by_header:?}");

        // Made-up tokens, each with another made-up X-Forwarded-For: the address the limit
        // counts is the one Envoy saw, so the flood is refused all the same.
        let mut limited = 0;
        for i in 0..30 {
            let response = stack
                .get(
                    "/x",
                    &[
                        &format!("Authorization: Bearer made-up-{i}"),
                        &format!("X-Forwarded-For: 10.1.{i}.{i}"),
                    ],
                )
                .await;
            match response.status {
                401 => {}
                429 => limited += 1,
                other => panic!("{mode:?}: {other}"),
            }
        }
        assert!(limited >= 20, "{mode:?}: only {limited} of 30 refused");
        assert!(stack.kube.token_reviews().len() <= 6, "{mode:?}");
    }
}
