//! The gateway core through a real Envoy, in both ext_authz modes (gRPC and HTTP): machine
//! identities by TokenReview, trusted identity headers, failing closed.

use crate::support;
use crate::support::*;

const MODES: [ExtAuthz; 2] = [ExtAuthz::Grpc, ExtAuthz::Http];
const TOKEN: &str = "sa-token-notebook";

fn fixture() -> Fixture {
    let mut expired = sa_token("sa-token-expired", "team-a", "old", &[KFP_AUDIENCE]);
    expired.expired = true;
    Fixture {
        tokens: vec![
            sa_token(TOKEN, "team-a", "default-editor", &[KFP_AUDIENCE]),
            sa_token("sa-token-other-aud", "team-a", "vault", &["vault"]),
            expired,
        ],
        rbac: Rbac { bindings: vec![] },
    }
}

/// Every spelling of an identity header a client might try; none may reach the app.
const SPOOFS: &[&str] = &[
    "kubeflow-userid: mallory@example.com",
    "KubeFlow-UserID: mallory@example.com",
    "KUBEFLOW-USERID: mallory@example.com",
    "kubeflow_userid: mallory@example.com",
    "Kubeflow_Userid: mallory@example.com",
    "kubeflow-userid: second@example.com",
    "kubeflow-groups: cluster-admins",
    "kubeflow_groups: cluster-admins",
    "x-authgate-identity: forged.jwt.value",
    "x_authgate_identity: forged.jwt.value",
    "x-authgate_identity: forged.jwt.value",
];

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// No header the app received may carry a spoofed value.
fn assert_no_spoof_reached(response: &RawResponse) {
    for (name, value) in response.upstream_headers() {
        let lowered = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !value.contains("mallory")
                && !value.contains("second@")
                && !value.contains("cluster-admins")
                && !value.contains("forged"),
            "spoofed value reached the app in {name}: {value}"
        );
        if lowered.starts_with("kubeflow-") || lowered == "x-authgate-identity" {
            assert!(
                name == "kubeflow-userid"
                    || name == "kubeflow-groups"
                    || name == "x-authgate-identity",
                "look-alike identity header {name} reached the app"
            );
        }
    }
}

async fn jwks_of(stack: &Stack) -> String {
    reqwest::get(format!("{}/authgate/jwks.json", stack.authgate.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn service_account_token_reaches_app_with_verified_identity() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        let response = stack
            .get("/pipeline/apis/v2beta1/runs", &[&bearer(TOKEN)])
            .await;
        assert_eq!(
            response.upstream_header("kubeflow-userid").as_deref(),
            Some("system:serviceaccount:team-a:default-editor"),
            "{mode:?}"
        );
        let groups = response.upstream_header("kubeflow-groups").unwrap();
        assert_eq!(
            groups,
            "system:serviceaccounts,system:serviceaccounts:team-a,system:authenticated"
        );
        let jwt = response.upstream_header("x-authgate-identity").unwrap();
        let claims = verify_identity_jwt(&jwt, &jwks_of(&stack).await, "kubeflow.example.com");
        assert_eq!(claims["sub"], "system:serviceaccount:team-a:default-editor");
        assert_eq!(claims["auth_method"], "service_account");
        assert_eq!(claims["groups"][1], "system:serviceaccounts:team-a");
        // The review was sent with the configured audience.
        let reviews = stack.kube.token_reviews();
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0]["spec"]["audiences"][0], KFP_AUDIENCE);
    }
}

#[tokio::test]
async fn bad_or_missing_tokens_are_401() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        let cases: [(&str, Vec<String>); 6] = [
            ("no credential", vec![]),
            ("unknown token", vec![bearer("nobody-knows-me")]),
            ("wrong audience", vec![bearer("sa-token-other-aud")]),
            ("expired", vec![bearer("sa-token-expired")]),
            ("two tokens", vec![bearer(TOKEN), bearer("nobody")]),
            ("empty", vec!["Authorization: Bearer ".into()]),
        ];
        for (case, headers) in cases {
            let lines: Vec<&str> = headers.iter().map(String::as_str).collect();
            let response = stack.get("/pipeline/apis/v2beta1/runs", &lines).await;
            assert_eq!(response.status, 401, "{mode:?} {case}: {response:?}");
            assert!(
                response
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{mode:?} {case}: {response:?}"
            );
            assert_eq!(
                response.json()["error"],
                "unauthenticated",
                "{mode:?} {case}"
            );
            assert!(
                !response.body.contains(TOKEN),
                "a token must never be echoed"
            );
        }
    }
}

/// A bearer token with a character outside RFC 7235's token68 is refused before any
/// TokenReview: a comma or a semicolon is where a server that splits the header would read two
/// values, a quote, a backslash, `%` or a non-ASCII byte what no API server issues.
#[tokio::test]
async fn bearer_tokens_outside_token68_are_refused_without_a_review() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        for bad in [",", ";", "\"", "\\", "%2C", "é", "=x", "@", "{", "*"] {
            let token = format!("sa-token{bad}notebook");
            let response = stack
                .get("/pipeline/apis/v2beta1/runs", &[&bearer(&token)])
                .await;
            assert_eq!(response.status, 401, "{mode:?} {token:?}: {response:?}");
            assert_eq!(
                response.json()["error"],
                "unauthenticated",
                "{mode:?} {token:?}"
            );
        }
        assert!(
            stack.kube.token_reviews().is_empty(),
            "{mode:?}: a malformed token went to a TokenReview"
        );
        // The same request with the token as issued is allowed (the path and the gateway work).
        let response = stack
            .get("/pipeline/apis/v2beta1/runs", &[&bearer(TOKEN)])
            .await;
        assert_eq!(response.status, 200, "{mode:?}: {response:?}");
    }
}

/// A gateway whose gRPC ext_authz sends only some headers (Envoy's `allowed_headers`): the
/// check never shows the look-alikes, and they are removed all the same.
#[tokio::test]
async fn look_alikes_the_check_does_not_show_are_removed_all_the_same() {
    let options = envoy::Options {
        grpc_allowed_headers: vec!["authorization".into()],
        ..Default::default()
    };
    let stack = Stack::start_with_options(
        ExtAuthz::Grpc,
        fixture(),
        "",
        options,
        support::echo::start_echo().await.0,
    )
    .await;
    let auth = bearer(TOKEN);
    let mut lines: Vec<&str> = SPOOFS.to_vec();
    lines.push(&auth);
    let response = stack.get("/pipeline/apis/v2beta1/runs", &lines).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_no_spoof_reached(&response);
    let response = stack.get("/dex/auth", SPOOFS).await;
    assert_no_spoof_reached(&response);
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_app() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        let auth = bearer(TOKEN);

        // With valid credentials: the verified identity replaces every spoof.
        let mut lines: Vec<&str> = SPOOFS.to_vec();
        lines.push(&auth);
        let response = stack.get("/pipeline/apis/v2beta1/runs", &lines).await;
        assert_no_spoof_reached(&response);
        assert_eq!(
            response.upstream_header("kubeflow-userid").as_deref(),
            Some("system:serviceaccount:team-a:default-editor"),
            "{mode:?}"
        );

        // On a skip-auth path: nobody is vouched for, so no identity header at all.
        let response = stack.get("/dex/auth", SPOOFS).await;
        assert_no_spoof_reached(&response);
        assert_eq!(
            response.upstream_header("kubeflow-userid"),
            None,
            "{mode:?}"
        );
        assert_eq!(response.upstream_header("kubeflow-groups"), None);
        assert_eq!(response.upstream_header("x-authgate-identity"), None);

        // Without credentials, or with a bad token: the request never reaches the app.
        for extra in [None, Some(bearer("nobody"))] {
            let mut lines: Vec<&str> = SPOOFS.to_vec();
            if let Some(extra) = &extra {
                lines.push(extra);
            }
            let response = stack.get("/pipeline/apis/v2beta1/runs", &lines).await;
            assert_eq!(response.status, 401, "{mode:?}");
            assert!(response.json().get("headers").is_none(), "the app answered");
        }
    }
}

#[tokio::test]
async fn an_identity_without_groups_gets_no_client_groups_header() {
    let mut fixture = fixture();
    fixture.tokens[0].groups.clear();
    for mode in MODES {
        let stack = Stack::start(mode, fixture.clone(), "").await;
        let response = stack
            .get(
                "/api/x",
                &[&bearer(TOKEN), "kubeflow-groups: cluster-admins"],
            )
            .await;
        assert_eq!(
            response.upstream_header("kubeflow-groups"),
            None,
            "{mode:?}"
        );
        assert!(response.upstream_header("kubeflow-userid").is_some());
    }
}

#[tokio::test]
async fn kubernetes_api_down_is_503_never_allow() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        stack.kube.set_down(true);
        let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
        assert_eq!(response.status, 503, "{mode:?}: {response:?}");
        // gRPC carries authgate's own answer; HTTP-mode Envoy replaces a 5xx by its bare
        // `status_on_error`.
        if mode == ExtAuthz::Grpc {
            assert_eq!(response.json()["error"], "unavailable");
            assert!(response.header("retry-after").is_some());
        }
        // It recovers by itself, and errors were not cached.
        stack.kube.set_down(false);
        let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
        assert_eq!(response.status, 200, "{mode:?}");
    }
}

#[tokio::test]
async fn slow_kubernetes_api_is_503() {
    let stack = Stack::start(ExtAuthz::Grpc, fixture(), "").await;
    stack.kube.set_delay(std::time::Duration::from_millis(1500)); // beyond the 1s timeout
    let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
    assert_eq!(response.status, 503, "{response:?}");
}

#[tokio::test]
async fn a_thousand_requests_with_one_token_cost_one_review() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/x", stack.envoy.url());
        let requests = (0..1000).map(|_| {
            client
                .get(&url)
                .header("host", "kubeflow.example.com")
                .bearer_auth(TOKEN)
                .send()
        });
        let mut ok = 0;
        for chunk in futures::stream::iter(requests)
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
        {
            if chunk.expect("request").status() == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok, 1000, "{mode:?}");
        assert_eq!(stack.kube.token_reviews().len(), 1, "{mode:?}");
    }
}

#[tokio::test]
async fn ambiguous_paths_are_400() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        for path in ["/public/..%2Fapi/x", "/public/%2e%2e%5capi", "/a%00b"] {
            let response = stack.get(path, &[]).await;
            assert_eq!(response.status, 400, "{mode:?} {path}: {response:?}");
        }
        // Envoy (normalize_path, as Istio's default) resolves `..;` like `..`; authgate would
        // refuse it otherwise. Either way it must not slip under the skip-auth prefix.
        let response = stack.get("/public/..;/api/x", &[]).await;
        assert!(
            matches!(response.status, 400 | 401),
            "{mode:?}: {response:?}"
        );
        // Dot-segments are resolved before skip-auth matching: this is /api/x, not /public.
        let response = stack.get("/public/../api/x", &[]).await;
        assert_eq!(response.status, 401, "{mode:?}");
        // Skip-auth prefixes match whole segments.
        let response = stack.get("/dexter", &[]).await;
        assert_eq!(response.status, 401, "{mode:?}");
    }
}

#[tokio::test]
async fn own_endpoints_are_answered_inside_the_check() {
    for mode in MODES {
        let stack = Stack::start(mode, fixture(), "").await;
        let whoami = stack.get("/authgate/whoami", &[&bearer(TOKEN)]).await;
        assert!(matches!(whoami.status, 200 | 203), "{mode:?}: {whoami:?}");
        assert_eq!(
            whoami.json()["user"],
            "system:serviceaccount:team-a:default-editor"
        );
        let jwks = stack.get("/authgate/jwks.json", &[]).await;
        assert!(matches!(jwks.status, 200 | 203), "{mode:?}: {jwks:?}");
        assert_eq!(jwks.json()["keys"][0]["kty"], "OKP");
        let unknown = stack.get("/authgate/nope", &[]).await;
        assert_eq!(unknown.status, 404);
    }
}

#[tokio::test]
async fn allowed_groups_refuse_other_identities() {
    for mode in MODES {
        let stack = Stack::start(
            mode,
            fixture(),
            "authorization: {allowed_groups: [kubeflow-users]}\n",
        )
        .await;
        let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
        assert_eq!(response.status, 403, "{mode:?}: {response:?}");
        assert_eq!(response.json()["error"], "forbidden");
    }
}

use futures::StreamExt;

#[tokio::test]
async fn shutdown_lets_in_flight_checks_finish() {
    let kube = KubeApi::start(fixture()).await;
    let authgate = Authgate::start(&config_yaml(kube.kubeconfig_path(), "")).await;
    let (upstream, _) = support::echo::start_echo().await;
    let envoy = Envoy::start(ExtAuthz::Grpc, authgate.running.grpc_addr, upstream).await;
    kube.set_delay(std::time::Duration::from_millis(600));
    let addr = envoy.addr();
    let in_flight = tokio::spawn(async move {
        raw_http(
            addr,
            &format!(
                "GET /api/x HTTP/1.1\r\nHost: kubeflow.example.com\r\n{}\r\n",
                bearer(TOKEN)
            ),
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    authgate.running.shutdown().await;
    let response = in_flight.await.unwrap();
    assert_eq!(
        response.status, 200,
        "the check in flight at shutdown completed: {response:?}"
    );
    // After shutdown nothing is allowed: Envoy cannot reach authgate and fails closed.
    let after = raw_http(
        envoy.addr(),
        &format!(
            "GET /api/x HTTP/1.1\r\nHost: kubeflow.example.com\r\n{}\r\n",
            bearer(TOKEN)
        ),
    )
    .await;
    assert_eq!(after.status, 403, "{after:?}");
}

#[tokio::test]
async fn user_prefix_is_applied_to_the_header_and_the_signed_subject() {
    let stack = Stack::start(
        ExtAuthz::Http,
        fixture(),
        "identity: {user_prefix: 'k8s:'}\n",
    )
    .await;
    let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
    assert_eq!(
        response.upstream_header("kubeflow-userid").as_deref(),
        Some("k8s:system:serviceaccount:team-a:default-editor")
    );
    let jwt = response.upstream_header("x-authgate-identity").unwrap();
    let claims = verify_identity_jwt(&jwt, &jwks_of(&stack).await, "kubeflow.example.com");
    assert_eq!(
        claims["sub"],
        "k8s:system:serviceaccount:team-a:default-editor"
    );
}

#[tokio::test]
async fn one_tenant_flooding_does_not_starve_another() {
    let mut fixture = fixture();
    fixture.tokens.push(sa_token(
        "sa-token-other-tenant",
        "team-b",
        "runner",
        &[KFP_AUDIENCE],
    ));
    for mode in MODES {
        let stack = Stack::start(
            mode,
            fixture.clone(),
            "rate_limit: {per_identity: {rps: 1, burst: 5}, per_client_ip: {rps: 1, burst: 3}}\n",
        )
        .await;
        let mut limited = 0;
        for _ in 0..20 {
            let r = stack.get("/api/x", &[&bearer(TOKEN)]).await;
            match r.status {
                200 => {}
                429 => {
                    limited += 1;
                    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                    assert!((1..=2).contains(&retry), "{r:?}");
                    assert_eq!(r.json()["error"], "too_many_requests");
                }
                other => panic!("{mode:?}: unexpected {other}"),
            }
        }
        assert!(
            limited >= 14,
            "{mode:?}: the flood was limited ({limited} of 20)"
        );
        // The other tenant is not affected.
        for _ in 0..5 {
            let r = stack
                .get("/api/x", &[&bearer("sa-token-other-tenant")])
                .await;
            assert_eq!(r.status, 200, "{mode:?}: the second tenant still passes");
        }
        // Unauthenticated requests are limited per address.
        let statuses: Vec<u16> =
            futures::future::join_all((0..8).map(|_| stack.get("/api/x", &[])))
                .await
                .iter()
                .map(|r| r.status)
                .collect();
        assert!(
            statuses.contains(&401) && statuses.contains(&429),
            "{mode:?}: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn metrics_count_decisions_cache_hits_and_dependency_calls() {
    let stack = Stack::start(ExtAuthz::Grpc, fixture(), "").await;
    for _ in 0..3 {
        assert_eq!(stack.get("/api/x", &[&bearer(TOKEN)]).await.status, 200);
    }
    assert_eq!(stack.get("/api/x", &[]).await.status, 401);
    let text = stack.authgate.metrics().await;
    let value = |needle: &str| -> f64 {
        metric_value(&text, needle).unwrap_or_else(|| panic!("{needle} missing from\n{text}"))
    };
    // Metrics are process-wide and tests share the process: assert lower bounds.
    assert!(
        value(
            r#"authgate_decisions_total{transport="grpc",outcome="allow",reason="authenticated"}"#
        ) >= 3.0
    );
    assert!(
        value(
            r#"authgate_decisions_total{transport="grpc",outcome="deny",reason="no_credential"}"#
        ) >= 1.0
    );
    assert!(
        value(r#"authgate_review_cache_lookups_total{cache="tokenreview",result="hit"}"#) >= 2.0
    );
    assert!(
        value(r#"authgate_dependency_calls_total{dependency="tokenreview",result="ok"}"#) >= 1.0
    );
    assert!(value(r#"authgate_check_duration_seconds_count{transport="grpc"}"#) >= 4.0);
    assert!(!text.contains(TOKEN), "no secret in metrics");
    // /metrics is never reachable through a check.
    let through = stack.get("/metrics", &[]).await;
    assert_eq!(through.status, 401);
}

#[tokio::test]
async fn a_flood_of_made_up_tokens_is_held_to_the_review_budget() {
    for mode in MODES {
        let stack = Stack::start(
            mode,
            fixture(),
            "kubernetes: {token_review: {review_rate: {rps: 1, burst: 5}}}",
        )
        .await;
        // A real workload's token, reviewed before the flood, stays cached through it.
        assert_eq!(stack.get("/api/x", &[&bearer(TOKEN)]).await.status, 200);
        let started = std::time::Instant::now();
        let stack = &stack;
        let flood = (0..40).map(|i| {
            let token = format!("made-up-token-{i}");
            async move { stack.get("/api/x", &[&bearer(&token)]).await }
        });
        let responses: Vec<RawResponse> = futures::stream::iter(flood)
            .buffer_unordered(8)
            .collect()
            .await;
        let elapsed = started.elapsed().as_secs();
        let mut throttled = 0;
        for r in &responses {
            match r.status {
                401 => {}
                429 => {
                    throttled += 1;
                    assert!(r.header("retry-after").is_some(), "{mode:?}: {r:?}");
                }
                _ => panic!("{mode:?}: a made-up token got {r:?}"),
            }
        }
        // One review for the real token, the burst for the flood, and one more per second of
        // refill: never one review per request.
        let reviews = stack.kube.token_reviews().len() as u64;
        assert!(
            reviews <= 1 + 5 + elapsed + 1,
            "{mode:?}: {reviews} reviews in {elapsed}s"
        );
        assert!(throttled >= 30, "{mode:?}: {throttled} of 40 throttled");
        assert_eq!(
            stack.get("/api/x", &[&bearer(TOKEN)]).await.status,
            200,
            "{mode:?}: the cached token still passes during the flood"
        );
    }
}

#[tokio::test]
async fn calls_to_the_kubernetes_api_are_limited_in_flight() {
    let mut fixture = fixture();
    let tokens: Vec<String> = (0..6).map(|i| format!("sa-token-worker-{i}")).collect();
    for (i, token) in tokens.iter().enumerate() {
        fixture.tokens.push(sa_token(
            token,
            "team-a",
            &format!("worker-{i}"),
            &[KFP_AUDIENCE],
        ));
    }
    let stack = Stack::start(
        ExtAuthz::Grpc,
        fixture,
        "kubernetes: {max_concurrent_calls: 2}",
    )
    .await;
    stack.kube.set_delay(std::time::Duration::from_millis(100));
    let stack = &stack;
    let statuses: Vec<u16> = futures::future::join_all(
        tokens
            .iter()
            .map(|t| async move { stack.get("/api/x", &[&bearer(t)]).await.status }),
    )
    .await;
    // Six new tokens at once: all reviewed and let through, never more than two at a time.
    assert_eq!(statuses, vec![200; 6]);
    assert_eq!(stack.kube.token_reviews().len(), 6);
    assert_eq!(stack.kube.max_in_flight(), 2);
}

/// authgate stalled (here: waiting on a Kubernetes API that answers in 3 s, within authgate's
/// own 5 s deadline) past Envoy's ext_authz timeout: Envoy answers the client itself, and the
/// request never reaches the app.
#[tokio::test]
async fn a_stalled_authgate_times_out_at_envoy_and_the_app_never_sees_the_request() {
    for mode in MODES {
        let (upstream, app_requests) = echo::start_counted_echo().await;
        let options = support::envoy::Options {
            status_on_error: Some(503),
            authz_timeout: std::time::Duration::from_millis(300),
            ..Default::default()
        };
        let stack = Stack::start_with_options(
            mode,
            fixture(),
            "kubernetes: {timeout: 5s}",
            options,
            upstream,
        )
        .await;
        stack.kube.set_delay(std::time::Duration::from_secs(3));
        let started = std::time::Instant::now();
        let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
        assert_eq!(response.status, 503, "{mode:?}: {response:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{mode:?}: Envoy did not wait for authgate"
        );
        assert!(
            !response.body.contains("kubeflow-userid"),
            "{mode:?}: {response:?}"
        );
        assert_eq!(
            app_requests.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{mode:?}: the app saw a request that was never allowed"
        );
        // Once the API answers in time again, the same request is allowed.
        stack.kube.set_delay(std::time::Duration::ZERO);
        tokio::time::sleep(std::time::Duration::from_secs(3)).await; // the stalled review ends
        let response = stack.get("/api/x", &[&bearer(TOKEN)]).await;
        assert_eq!(response.status, 200, "{mode:?}: {response:?}");
        assert_eq!(app_requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
