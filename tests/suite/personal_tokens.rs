//! Personal access tokens (issue 18) through the real path: a person logs in at the real OIDC
//! provider through Envoy, makes a scoped token at `/authgate/tokens`, and uses it as a bearer
//! token through Envoy (both ext_authz modes); the scope, the owner and the origin hold, and the
//! places a token must never work (a cookie, the query, making more tokens) refuse it.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, ORIGIN};
use serde_json::Value;

use crate::support::oidc::{self, ALICE, BOB};
use crate::support::*;

const RULES: &str = r#"
personal_tokens: {enabled: true, max_lifetime: 30d, max_per_user: 3}
authorization:
  rules:
    - name: notebook
      path: /notebook/{namespace}/{name}/**
      resource: {group: kubeflow.org, resource: notebooks, name: '{name}'}
    - {name: health, path: /healthz, allow: true}
    - name: kfp-v2-experiments-list
      path: /pipeline/apis/v2beta1/experiments
      methods: [GET, HEAD]
      query_parser: grpc-gateway
      namespace: {query: namespace}
      resource: {group: pipelines.kubeflow.org, version: v1beta1, resource: experiments, verb: list}
"#;

fn fixture() -> Fixture {
    let notebooks = |namespace: &str, user: &str| Binding {
        namespace: namespace.into(),
        subject: Subject::User(user.into()),
        rules: vec![
            PolicyRule {
                api_groups: vec!["kubeflow.org".into()],
                resources: vec!["notebooks".into()],
                verbs: vec!["get".into()],
            },
            PolicyRule {
                api_groups: vec!["pipelines.kubeflow.org".into()],
                resources: vec!["experiments".into()],
                verbs: vec!["list".into()],
            },
        ],
    };
    Fixture {
        tokens: Vec::new(),
        rbac: Rbac {
            bindings: vec![
                notebooks("team-a", ALICE.0),
                notebooks("team-b", ALICE.0),
                notebooks("team-b", BOB.0),
            ],
        },
    }
}

/// A browser logged in as `user` at the stack, freshly (the provider asked to authenticate
/// the person again), as making a token requires.
async fn logged_in(stack: &LoginStack, user: (&str, &str)) -> reqwest::Client {
    stack.fresh_browser(user, "/notebook/team-b/nb/lab").await
}

/// `POST /authgate/tokens?{query}` from the gateway's own origin.
async fn make(stack: &LoginStack, browser: &reqwest::Client, query: &str) -> reqwest::Response {
    stack.make_token(browser, query).await
}

async fn with_token(stack: &LoginStack, path: &str, token: &str) -> RawResponse {
    raw_http(
        stack.envoy.addr(),
        &format!(
            "GET {path} HTTP/1.1\r\nHost: kubeflow.example.com\r\nAuthorization: Bearer {token}\r\n"
        ),
    )
    .await
}

/// The target of a page's (first) form, as the browser would send it.
fn form_action(page: &str) -> String {
    page.split("action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form")
        .replace("&amp;", "&")
}

/// The stack (gRPC mode) on a clock the test moves.
async fn clocked_stack(clock: &authgate::clock::ManualClock) -> LoginStack {
    LoginStack::start_full(
        ExtAuthz::Grpc,
        RULES,
        &[],
        fixture(),
        Arc::new(clock.clone()),
    )
    .await
}

#[tokio::test]
async fn a_person_makes_a_scoped_token_and_it_acts_as_them_only_there() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = LoginStack::start_with(mode, RULES, &[], fixture()).await;
        let alice = logged_in(&stack, ALICE).await;

        let made = make(&stack, &alice, "name=ci&expires_in=7d&namespaces=team-a").await;
        assert_eq!(made.status(), 201, "{mode:?}");
        let made: Value = made.json().await.unwrap();
        let token = made["token"].as_str().unwrap().to_string();
        let id = made["id"].as_str().unwrap().to_string();
        assert!(token.starts_with("agt_") && token.len() == 47, "{token}");
        assert_eq!(made["name"], "ci");
        assert_eq!(made["namespaces"], serde_json::json!(["team-a"]));

        // It acts as the person, in its namespace, and never reaches the app.
        let used = with_token(&stack, "/notebook/team-a/nb/lab", &token).await;
        assert_eq!(used.status, 200, "{mode:?}: {used:?}");
        assert_eq!(
            used.upstream_header("kubeflow-userid").as_deref(),
            Some(ALICE.0)
        );
        assert_eq!(used.upstream_header("authorization"), None, "{mode:?}");
        let jwt = used.upstream_header("x-authgate-identity").unwrap();
        let claims = oidc::jwt_claims(&jwt);
        assert_eq!(claims["auth_method"], "personal_token");
        // The scope travels with the identity, for apps that take the JWT as a credential.
        assert_eq!(
            claims["namespaces"],
            serde_json::json!(["team-a"]),
            "{claims}"
        );
        assert_eq!(
            claims["extra"]["authgate.io/token-id"],
            serde_json::json!([id])
        );
        let reviews_before = stack.kube.access_reviews().len();
        // Only there: another namespace Alice may use, and a route that names none.
        for path in ["/notebook/team-b/nb/lab", "/healthz", "/no-rule"] {
            let refused = with_token(&stack, path, &token).await;
            assert_eq!(refused.status, 403, "{mode:?} {path}: {refused:?}");
            assert!(refused.body.contains("acts only in team-a"), "{refused:?}");
        }
        assert_eq!(
            stack.kube.access_reviews().len(),
            reviews_before,
            "refused before any review"
        );

        // Not even an app that needs no login receives it.
        let skipped = with_token(&stack, "/public/page", &token).await;
        assert_eq!(skipped.status, 200, "{mode:?}: {skipped:?}");
        assert_eq!(skipped.upstream_header("authorization"), None, "{mode:?}");

        // Counted: tokens in the store, decisions by how the identity authenticated.
        let metrics = stack.authgate.metrics().await;
        assert!(
            metric_value(
                &metrics,
                "authgate_decisions_by_auth_method_total{auth_method=\"personal_token\",outcome=\"allow\"}"
            )
            .is_some_and(|n| n >= 1.0),
            "{metrics}"
        );
        assert!(
            metric_value(
                &metrics,
                "authgate_decisions_by_auth_method_total{auth_method=\"personal_token\",outcome=\"deny\"}"
            )
            .is_some_and(|n| n >= 3.0),
            "{metrics}"
        );
        // (The gauge is process-wide and other tests' gateways set it too: its value is the
        // store contract's `count_tokens`.)
        assert!(
            metric_value(&metrics, "authgate_personal_tokens").is_some(),
            "{metrics}"
        );

        // An unscoped token goes wherever the person may. (Each token takes its own login.)
        stack.log_in_again(&alice, ALICE).await;
        let all: Value = make(&stack, &alice, "name=all&expires_in=1d")
            .await
            .json()
            .await
            .unwrap();
        let all = all["token"].as_str().unwrap();
        assert_eq!(
            with_token(&stack, "/notebook/team-b/nb/lab", all)
                .await
                .status,
            200
        );

        // The list shows both, never a secret.
        let listed = alice
            .get(stack.url("/authgate/tokens"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        // An HTTP check answers authgate's own 200s as 203 (a 200 would be an allow).
        let ok = if matches!(mode, ExtAuthz::Http) {
            203
        } else {
            200
        };
        assert_eq!(listed.status(), ok, "{mode:?}");
        let listed = listed.text().await.unwrap();
        assert!(!listed.contains("agt_"), "{listed}");
        let listed: Value = serde_json::from_str(&listed).unwrap();
        let mut names: Vec<&str> = listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["all", "ci"], "made in the same second: any order");
        assert!(
            listed["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["last_used"].is_string()),
            "both were used: {listed}"
        );

        // Another person's id is 404, and the token still works.
        let bob = logged_in(&stack, BOB).await;
        let theirs = bob
            .delete(stack.url(&format!("/authgate/tokens/{id}")))
            .header(ORIGIN, &stack.public_url)
            .send()
            .await
            .unwrap();
        assert_eq!(theirs.status(), 404);
        assert_eq!(
            with_token(&stack, "/notebook/team-a/nb/lab", &token)
                .await
                .status,
            200
        );
        // The owner revokes it: gone at once.
        let revoked = alice
            .delete(stack.url(&format!("/authgate/tokens/{id}")))
            .header(ORIGIN, &stack.public_url)
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 204, "{mode:?}");
        let after = with_token(&stack, "/notebook/team-a/nb/lab", &token).await;
        assert_eq!(after.status, 401, "{mode:?}: {after:?}");
    }
}

/// A page on the gateway's origin (a notebook runs its owner's code) can send a same-origin
/// POST with the visitor's session: making a token therefore needs a fresh login, one where
/// the provider authenticated the person again (`prompt=login`, `max_age=0`), not the session
/// alone.
#[tokio::test]
async fn making_a_token_needs_a_fresh_login_at_the_provider() {
    let stack = LoginStack::start_with(ExtAuthz::Grpc, RULES, &[], fixture()).await;
    let browser = oidc::browser();
    let plain = oidc::browser_login(&browser, &stack.url("/notebook/team-a/nb/lab"), ALICE).await;
    assert_eq!(plain.status, 200);
    let refused = make(&stack, &browser, "name=ci&expires_in=1d").await;
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "login_required", "{refused}");
    let login = refused["login"].as_str().unwrap();
    // The fresh login asks the provider to authenticate again: although the browser is logged
    // in there, it is shown the login form once more.
    let again = oidc::browser_login(&browser, &stack.url(login), ALICE).await;
    assert_eq!(again.status, 200, "{again:#?}");
    let hops = again.urls();
    assert!(
        hops.iter()
            .any(|h| h.contains("prompt=login") && h.contains("max_age=0")),
        "{hops:?}"
    );
    assert!(
        hops.iter()
            .any(|h| h.starts_with(stack.provider.issuer()) && h.contains("/login")),
        "the provider showed its login form again: {hops:?}"
    );
    assert_eq!(
        make(&stack, &browser, "name=ci&expires_in=1d")
            .await
            .status(),
        201
    );
}

/// The page flow, as a person in a browser goes through it: a form, a confirmation page that
/// names what will be made (changing nothing), and a button that makes it; no script, never
/// framed.
#[tokio::test]
async fn the_tokens_page_confirms_what_it_makes_and_shows_the_secret_once() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        // An HTTP check answers authgate's own 200s as 203 (a 200 would be an allow).
        let ok = if matches!(mode, ExtAuthz::Http) {
            203
        } else {
            200
        };
        let stack = LoginStack::start_with(mode, RULES, &[], fixture()).await;
        let alice = logged_in(&stack, ALICE).await;
        let html = |url: String| {
            alice
                .get(url)
                .header(ACCEPT, oidc::NAVIGATION_ACCEPT)
                .send()
        };
        let page = html(stack.url("/authgate/tokens")).await.unwrap();
        assert_eq!(page.status(), ok, "{mode:?}");
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        let body = page.text().await.unwrap();
        assert!(body.contains("action=\"/authgate/tokens/new\""), "{body}");
        assert!(
            !body.contains("<script") && !body.contains("onsubmit"),
            "{body}"
        );

        let confirm = html(
            stack.url("/authgate/tokens/new?name=%3Cb%3Elaptop&expires_in=7d&namespaces=team-a"),
        )
        .await
        .unwrap();
        assert_eq!(confirm.status(), ok);
        let body = confirm.text().await.unwrap();
        assert!(
            body.contains("&lt;b&gt;laptop") && body.contains("only in team-a"),
            "{body}"
        );
        assert!(!body.contains("<b>laptop"), "escaped: {body}");
        let listed: Value = alice
            .get(stack.url("/authgate/tokens"))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            listed["tokens"],
            serde_json::json!([]),
            "a confirmation makes nothing"
        );
        let action = form_action(&body);
        assert!(action.starts_with("/authgate/tokens?"), "{action}");
        let made = alice
            .post(stack.url(&action))
            .header(ORIGIN, &stack.public_url)
            .header(ACCEPT, oidc::NAVIGATION_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201);
        let body = made.text().await.unwrap();
        let token = body
            .split("<pre id=\"token\">")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap();
        assert!(token.starts_with("agt_"), "{body}");
        assert_eq!(
            with_token(&stack, "/notebook/team-a/nb/lab", token)
                .await
                .status,
            200
        );
        // Shown once: the list page never carries it again.
        let again = html(stack.url("/authgate/tokens"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !again.contains(token) && again.contains("&lt;b&gt;laptop"),
            "{again}"
        );
    }
}

#[tokio::test]
async fn tokens_are_made_only_from_this_origin_with_a_session_and_within_the_limits() {
    let stack = LoginStack::start_with(ExtAuthz::Grpc, RULES, &[], fixture()).await;
    let alice = logged_in(&stack, ALICE).await;
    let post = |origin: Option<&str>, site: Option<&str>| {
        let mut request = alice
            .post(stack.url("/authgate/tokens?name=x&expires_in=1d"))
            .header(ACCEPT, "application/json");
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        request.send()
    };
    // CSRF: another site, a browser that says nothing, a same-origin claim contradicted.
    for (origin, site) in [
        (Some("https://evil.example"), None),
        (None, None),
        (Some("null"), None),
        (Some(stack.public_url.as_str()), Some("cross-site")),
    ] {
        let refused = post(origin, site).await.unwrap();
        assert_eq!(refused.status(), 403, "{origin:?} {site:?}");
    }
    assert_eq!(post(None, Some("same-origin")).await.unwrap().status(), 201);

    // The limits: a lifetime is required and capped, namespaces are names, a name is needed
    // and shows what it says (no control, zero-width or direction-reversing characters).
    let many = (0..51)
        .map(|i| format!("ns-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let long = "n".repeat(65);
    let too_many = format!("name=x&expires_in=1d&namespaces={many}");
    let too_long = format!("name={long}&expires_in=1d");
    for query in [
        "name=x",
        "name=x&expires_in=31d",
        "name=x&expires_in=30s",
        "name=x&expires_in=soon",
        "name=x&expires_in=1d&namespaces=Team-A",
        "name=x&expires_in=1d&namespaces=team-a,..",
        too_many.as_str(),
        "expires_in=1d",
        too_long.as_str(),
        "name=ci%E2%80%AEtxt.exe&expires_in=1d",
        "name=c%E2%80%8Bi&expires_in=1d",
        "name=c%0Ai&expires_in=1d",
    ] {
        let refused = make(&stack, &alice, query).await;
        assert_eq!(refused.status(), 400, "{query}");
    }
    // A JSON body, where authgate's own HTTP port receives one, is read as strictly: a field
    // it does not know is refused, not ignored.
    let direct = |body: &'static str| {
        alice
            .post(format!("{}/authgate/tokens", stack.authgate.http_url()))
            .header(ORIGIN, &stack.public_url)
            .header(ACCEPT, "application/json")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        r#"{"name": "x", "expires_in": "1d", "admin": true}"#,
        r#"{"name": "x", "expires_in": "1d", "namespaces": "team-a"}"#,
        r#"["x"]"#,
        "not json",
    ] {
        assert_eq!(direct(body).await.unwrap().status(), 400, "{body}");
    }
    // At most max_per_user (3) live tokens. Each takes its own fresh login: a second one
    // from the login that made the first is refused.
    assert_eq!(
        make(&stack, &alice, "name=2&expires_in=1d").await.status(),
        403
    );
    for name in ["2", "3"] {
        stack.log_in_again(&alice, ALICE).await;
        let query = format!("name={name}&expires_in=1d");
        assert_eq!(make(&stack, &alice, &query).await.status(), 201);
    }
    stack.log_in_again(&alice, ALICE).await;
    assert_eq!(
        make(&stack, &alice, "name=4&expires_in=1d").await.status(),
        409
    );

    // A JSON body that never reached the check is named, not read as empty fields.
    let lost = alice
        .post(stack.url("/authgate/tokens"))
        .header(ORIGIN, &stack.public_url)
        .header(ACCEPT, "application/json")
        .json(&serde_json::json!({"name": "ci", "expires_in": "1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 400);
    assert!(lost.text().await.unwrap().contains("with_request_body"));

    // Without a session: 401; with a bearer token (even a personal one): 403.
    let stranger = oidc::browser()
        .post(stack.url("/authgate/tokens?name=x&expires_in=1d"))
        .header(ORIGIN, &stack.public_url)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    let other = logged_in(&stack, BOB).await;
    let token: Value = make(&stack, &other, "name=b&expires_in=1d")
        .await
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let by_token = reqwest::Client::new()
        .post(stack.url("/authgate/tokens?name=more&expires_in=1d"))
        .header(ORIGIN, &stack.public_url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), 403);
}

#[tokio::test]
async fn a_token_works_only_as_a_bearer_token_and_ends_at_its_expiry() {
    let clock = authgate::clock::ManualClock::new();
    let stack = clocked_stack(&clock).await;
    let alice = logged_in(&stack, ALICE).await;
    let made: Value = make(&stack, &alice, "name=ci&expires_in=2h")
        .await
        .json()
        .await
        .unwrap();
    let token = made["token"].as_str().unwrap();
    let id = made["id"].as_str().unwrap();
    let path = "/notebook/team-a/nb/lab";
    assert_eq!(with_token(&stack, path, token).await.status, 200);

    // Never as a cookie, never in the query: no credential at all there.
    for head in [
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nCookie: authgate_session={token}\r\n"),
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nCookie: {token}\r\n"),
        format!("GET {path}?access_token={token} HTTP/1.1\r\nHost: h\r\n"),
        format!("GET {path}?token={token} HTTP/1.1\r\nHost: h\r\n"),
    ] {
        let response = raw_http(stack.envoy.addr(), &head).await;
        assert_eq!(response.status, 401, "{head}: {response:?}");
    }
    // Under another scheme it is no bearer token either.
    let basic = raw_http(
        stack.envoy.addr(),
        &format!("GET {path} HTTP/1.1\r\nHost: h\r\nAuthorization: Token {token}\r\n"),
    )
    .await;
    assert_eq!(basic.status, 401);

    // A token may revoke itself (what `authgate logout` does), and only itself.
    stack.log_in_again(&alice, ALICE).await;
    let other: Value = make(&stack, &alice, "name=other&expires_in=1d")
        .await
        .json()
        .await
        .unwrap();
    let delete = |id: String, token: String| {
        reqwest::Client::new()
            .delete(stack.url(&format!("/authgate/tokens/{id}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
    };
    assert_eq!(
        delete(other["id"].as_str().unwrap().into(), token.into())
            .await
            .unwrap()
            .status(),
        403
    );

    clock.advance(Duration::from_secs(11 * 60));
    let stale = make(&stack, &alice, "name=late&expires_in=1d").await;
    assert_eq!(stale.status(), 403, "the login is no longer fresh (10m)");
    clock.advance(Duration::from_secs(2 * 3600));
    let expired = with_token(&stack, path, token).await;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(
        expired.body.contains("personal access token"),
        "{expired:?}"
    );
    assert_eq!(
        delete(id.into(), other["token"].as_str().unwrap().into())
            .await
            .unwrap()
            .status(),
        403,
        "not its own id"
    );
    let own = other["id"].as_str().unwrap().to_string();
    assert_eq!(
        delete(own, other["token"].as_str().unwrap().into())
            .await
            .unwrap()
            .status(),
        204
    );
}

#[tokio::test]
async fn tokens_are_off_unless_enabled_and_never_reach_a_token_review() {
    let stack = LoginStack::start_with(ExtAuthz::Grpc, "", &[], fixture()).await;
    let alice = logged_in(&stack, ALICE).await;
    assert_eq!(
        make(&stack, &alice, "name=x&expires_in=1d").await.status(),
        404
    );
    let made_up = format!("agt_{}", "A".repeat(43));
    let refused = with_token(&stack, "/notebook/team-a/nb/lab", &made_up).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        stack.kube.token_reviews().is_empty(),
        "an agt_ token is never sent to the API server"
    );
}

/// What `authgate login` sends a browser to, built as the CLI builds it.
/// The secret of a token just made (201).
async fn secret_of(made: reqwest::Response) -> String {
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    made["token"].as_str().unwrap().to_string()
}

/// The groups the app received, and those the signed identity names.
fn groups_seen(response: &RawResponse) -> (String, Value) {
    let jwt = response
        .upstream_header("x-authgate-identity")
        .expect("an identity JWT");
    (
        response
            .upstream_header("kubeflow-groups")
            .unwrap_or_default(),
        oidc::jwt_claims(&jwt)["groups"].clone(),
    )
}

const HOUR_AND_A_MINUTE: Duration = Duration::from_secs(61 * 60);

#[tokio::test]
async fn a_token_is_rechecked_with_the_provider_and_ends_when_the_person_is_removed_there() {
    let clock = authgate::clock::ManualClock::new();
    // The provider rotates refresh tokens, as Dex does: one used twice revokes its grant, so
    // every re-check must keep the rotated one (and no session may hold the token's grant).
    let mut stack = LoginStack::start_full(
        ExtAuthz::Grpc,
        RULES,
        &[("ROTATE_REFRESH_TOKENS", "1")],
        fixture(),
        Arc::new(clock.clone()),
    )
    .await;
    let path = "/notebook/team-b/nb/lab";
    let alice = logged_in(&stack, ALICE).await;
    let one = secret_of(make(&stack, &alice, "name=one&expires_in=7d").await).await;
    // The token took the login's grant: that login makes no second one.
    let second = make(&stack, &alice, "name=two&expires_in=7d").await;
    assert_eq!(second.status(), 403);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["error"], "login_required", "{second}");
    stack.log_in_again(&alice, ALICE).await;
    let two = secret_of(make(&stack, &alice, "name=two&expires_in=7d").await).await;
    let bob = logged_in(&stack, BOB).await;
    let three = secret_of(make(&stack, &bob, "name=three&expires_in=7d").await).await;

    let used = with_token(&stack, path, &one).await;
    assert_eq!(used.status, 200, "{used:?}");
    assert_eq!(groups_seen(&used).0, "kubeflow-users,team-a");

    // The provider changes Alice's groups. Before the interval, the token acts as it was made.
    stack
        .provider
        .set_groups(ALICE.0, &["kubeflow-users", "ml-admins"])
        .await;
    let issued = stack.provider.tokens_issued();
    assert_eq!(
        groups_seen(&with_token(&stack, path, &one).await).0,
        "kubeflow-users,team-a"
    );
    assert_eq!(stack.provider.tokens_issued(), issued, "not due yet");

    // Due: five requests at once, one re-check; from then on, the groups the provider says.
    clock.advance(HOUR_AND_A_MINUTE);
    let at_once = (0..5).map(|_| with_token(&stack, path, &one));
    for response in futures::future::join_all(at_once).await {
        assert_eq!(response.status, 200, "{response:?}");
    }
    assert_eq!(
        stack.provider.tokens_issued(),
        issued + 1,
        "exactly one re-check"
    );
    for token in [&one, &two] {
        let used = with_token(&stack, path, token).await;
        assert_eq!(used.status, 200, "{used:?}");
        assert_eq!(
            groups_seen(&used),
            (
                "kubeflow-users,ml-admins".to_string(),
                serde_json::json!(["kubeflow-users", "ml-admins"])
            )
        );
    }
    assert_eq!(
        stack.provider.tokens_issued(),
        issued + 2,
        "each token's own"
    );
    // Again: the grant rotated at the last check is the one used now.
    clock.advance(HOUR_AND_A_MINUTE);
    stack
        .provider
        .set_groups(ALICE.0, &["kubeflow-users", "ml-admins", "team-a"])
        .await;
    let used = with_token(&stack, path, &one).await;
    assert_eq!(used.status, 200, "{used:?}");
    assert_eq!(groups_seen(&used).0, "kubeflow-users,ml-admins,team-a");

    // The browser sessions that gave their grants away ended with their ID tokens (1h): the
    // provider vouched for that long, and no refresh can ask it again.
    let navigated = alice
        .get(stack.url(path))
        .header(ACCEPT, oidc::NAVIGATION_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(navigated.status(), 302, "sent to log in again");

    // Alice leaves: the provider removes her account. Each of her tokens ends at its next use,
    // within the interval; Bob's goes on.
    stack.provider.remove_account(ALICE.0).await;
    clock.advance(HOUR_AND_A_MINUTE);
    for token in [&one, &two] {
        let refused = with_token(&stack, path, token).await;
        assert_eq!(refused.status, 401, "{refused:?}");
        assert!(
            refused.body.contains("personal access token"),
            "{refused:?}"
        );
    }
    assert_eq!(with_token(&stack, path, &three).await.status, 200);
    assert_eq!(
        with_token(&stack, path, &one).await.status,
        401,
        "revoked, not only refused once"
    );

    // The provider down: nobody loses access for it; the token goes on as it was.
    stack.provider.stop();
    clock.advance(HOUR_AND_A_MINUTE);
    let used = with_token(&stack, path, &three).await;
    assert_eq!(used.status, 200, "{used:?}");
    assert_eq!(groups_seen(&used).0, "kubeflow-users");

    let metrics = stack.authgate.metrics().await;
    for (result, at_least) in [("confirmed", 3.0), ("revoked", 2.0), ("unreachable", 1.0)] {
        let series = format!("authgate_personal_token_rechecks_total{{result=\"{result}\"}}");
        assert!(
            metric_value(&metrics, &series).is_some_and(|n| n >= at_least),
            "{series}: {metrics}"
        );
    }
}

/// A provider in trouble is not a provider refusing the person: a 5xx (Dex answers a failed
/// storage or connector call with 500 `invalid_request`), a 429, or a refusal of authgate's own
/// client never revokes a token. But a token its provider has not confirmed for
/// `max_unconfirmed` is refused, until a re-check confirms the person again.
#[tokio::test]
async fn a_provider_in_trouble_never_revokes_a_token_but_a_day_unconfirmed_is_refused() {
    let clock = authgate::clock::ManualClock::new();
    let stack = clocked_stack(&clock).await;
    let path = "/notebook/team-a/nb/lab";
    let alice = logged_in(&stack, ALICE).await;
    let token = secret_of(make(&stack, &alice, "name=ci&expires_in=7d").await).await;
    let mut hours = 0;
    for (status, error) in [
        (500, "invalid_request"),
        (503, "temporarily_unavailable"),
        (429, "slow_down"),
        (401, "invalid_client"),
    ] {
        stack.provider.fail_token_endpoint(status, error).await;
        clock.advance(HOUR_AND_A_MINUTE);
        hours += 1;
        let used = with_token(&stack, path, &token).await;
        assert_eq!(used.status, 200, "{status} {error}: {used:?}");
    }
    // A day with no confirmation: refused, not revoked.
    stack
        .provider
        .fail_token_endpoint(500, "server_error")
        .await;
    clock.advance(Duration::from_secs((24 - hours) * 3600));
    let refused = with_token(&stack, path, &token).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.body.contains("not confirmed"), "{refused:?}");
    // The provider is back: the next re-check (after the lock) confirms the person.
    stack.provider.fail_token_endpoint(0, "").await;
    clock.advance(Duration::from_secs(31));
    let back = with_token(&stack, path, &token).await;
    assert_eq!(back.status, 200, "{back:?}");
}

#[tokio::test]
async fn without_refresh_tokens_a_token_keeps_its_groups_unless_rechecks_are_required() {
    for required in [false, true] {
        let clock = authgate::clock::ManualClock::new();
        let rules = RULES.replace(
            "max_per_user: 3}",
            &format!("max_per_user: 3, require_recheck: {required}}}"),
        );
        let stack = LoginStack::start_full(
            ExtAuthz::Grpc,
            &rules,
            &[("NO_REFRESH_TOKENS", "1")],
            fixture(),
            Arc::new(clock.clone()),
        )
        .await;
        let alice = logged_in(&stack, ALICE).await;
        let made = make(&stack, &alice, "name=ci&expires_in=7d").await;
        if required {
            assert_eq!(made.status(), 403);
            let refused: Value = made.json().await.unwrap();
            assert_eq!(refused["error"], "no_refresh_token", "{refused}");
            assert!(
                refused["message"]
                    .as_str()
                    .unwrap()
                    .contains("offline_access"),
                "{refused}"
            );
            continue;
        }
        let token = secret_of(made).await;
        // No grant to take: the login stays fresh, and may make another.
        let another = make(&stack, &alice, "name=another&expires_in=7d").await;
        assert_eq!(another.status(), 201);
        stack
            .provider
            .set_groups(ALICE.0, &["kubeflow-users", "ml-admins"])
            .await;
        let issued = stack.provider.tokens_issued();
        clock.advance(HOUR_AND_A_MINUTE);
        let used = with_token(&stack, "/notebook/team-a/nb/lab", &token).await;
        assert_eq!(used.status, 200, "{used:?}");
        assert_eq!(
            groups_seen(&used).0,
            "kubeflow-users,team-a",
            "as made: nothing to ask the provider with"
        );
        assert_eq!(stack.provider.tokens_issued(), issued);
    }
}

fn cli_start(stack: &LoginStack, redirect_uri: &str, challenge: &str) -> String {
    let mut url = url::Url::parse(&stack.url("/authgate/tokens/new")).unwrap();
    url.query_pairs_mut()
        .append_pair("name", "laptop")
        .append_pair("expires_in", "7d")
        .append_pair("namespaces", "team-a")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("state", "s7a7e")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

fn s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

/// The loopback flow's server side, step by step with a scripted browser: the code comes back
/// only to a loopback address, opens only with the PKCE verifier, and only for two minutes.
#[tokio::test]
async fn a_cli_code_goes_only_to_a_loopback_address_and_opens_only_with_its_verifier() {
    let clock = authgate::clock::ManualClock::new();
    let stack = clocked_stack(&clock).await;
    let alice = logged_in(&stack, ALICE).await;
    let verifier = "v".repeat(43);
    let challenge = s256(&verifier);
    let page = |url: String| {
        alice
            .get(url)
            .header(ACCEPT, oidc::NAVIGATION_ACCEPT)
            .send()
    };

    // Never to anything but a loopback address.
    for bad in [
        "https://evil.example/callback",
        "http://localhost:8123/callback",
        "http://127.0.0.1/callback",
        "http://127.0.0.1:8123@evil.example/",
        "http://[::1]:8123/cb",
        "http://127.0.0.1:8123/cb?next=https://evil.example",
    ] {
        let refused = page(cli_start(&stack, bad, &challenge)).await.unwrap();
        assert_eq!(refused.status(), 400, "{bad}");
    }
    for bad in [cli_start(&stack, "http://127.0.0.1:8123/callback", "short")] {
        assert_eq!(
            page(bad).await.unwrap().status(),
            400,
            "a challenge is 43 characters"
        );
    }
    let bad_state = cli_start(&stack, "http://127.0.0.1:8123/callback", &challenge)
        .replace("state=s7a7e", "state=%3Cscript%3E");
    assert_eq!(
        page(bad_state).await.unwrap().status(),
        400,
        "state is base64url"
    );
    let without_pkce = page(stack.url(
        "/authgate/tokens/new?name=x&expires_in=1d&redirect_uri=http%3A%2F%2F127.0.0.1%3A8123%2Fcb&state=s",
    ))
    .await
    .unwrap();
    assert_eq!(without_pkce.status(), 400);

    // A code for each of three tokens, made through the confirmation page as a browser does
    // (each after its own login).
    let code = || async {
        stack.log_in_again(&alice, ALICE).await;
        let confirm = page(cli_start(
            &stack,
            "http://127.0.0.1:8123/callback",
            &challenge,
        ))
        .await
        .unwrap();
        assert_eq!(confirm.status(), 200);
        let body = confirm.text().await.unwrap();
        assert!(
            body.contains("whatever program listens on <code>http://127.0.0.1:8123/callback"),
            "{body}"
        );
        assert!(
            body.contains("error=access_denied"),
            "a cancel goes back: {body}"
        );
        let made = alice
            .post(stack.url(&form_action(&body)))
            .header(ORIGIN, &stack.public_url)
            .header(ACCEPT, oidc::NAVIGATION_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 302);
        let location = url::Url::parse(made.headers()["location"].to_str().unwrap()).unwrap();
        assert_eq!(
            location.origin().ascii_serialization(),
            "http://127.0.0.1:8123"
        );
        assert_eq!(location.path(), "/callback");
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap()
        };
        assert_eq!(param("state"), "s7a7e");
        let code = param("code");
        assert!(
            !code.contains("agt_"),
            "the token itself never goes through the browser"
        );
        code
    };
    // The code and the verifier travel in a header (never a URL an access log keeps).
    let exchange = |code: String, verifier: String| {
        reqwest::Client::new()
            .post(stack.url("/authgate/tokens/exchange"))
            .header(AUTHORIZATION, format!("AuthgateCode {code}.{verifier}"))
            .send()
    };

    // A wrong verifier spends the code: whoever saw it without the verifier gets nothing, and
    // neither does anyone after.
    let first = code().await;
    let in_the_query = reqwest::Client::new()
        .post(stack.url(&format!(
            "/authgate/tokens/exchange?code={first}&code_verifier={verifier}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(in_the_query.status(), 400, "not in the URL");
    for header in [
        format!("Bearer {first}.{verifier}"),
        format!("AuthgateCode {first}"),
        format!("AuthgateCode {first}..{verifier}"),
    ] {
        let refused = reqwest::Client::new()
            .post(stack.url("/authgate/tokens/exchange"))
            .header(AUTHORIZATION, header.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{header}");
    }
    let wrong = exchange(first.clone(), "w".repeat(43)).await.unwrap();
    assert_eq!(wrong.status(), 400, "another verifier");
    let spent = exchange(first, verifier.clone()).await.unwrap();
    assert_eq!(spent.status(), 400, "spent by the wrong attempt");

    // The right verifier, once.
    let second = code().await;
    let taken = exchange(second.clone(), verifier.clone()).await.unwrap();
    assert_eq!(taken.status(), 200);
    let taken: Value = taken.json().await.unwrap();
    let token = taken["token"].as_str().unwrap();
    assert_eq!(taken["namespaces"], serde_json::json!(["team-a"]));
    assert_eq!(taken["user"], ALICE.0);
    assert_eq!(
        with_token(&stack, "/notebook/team-a/nb/lab", token)
            .await
            .status,
        200
    );
    let again = exchange(second, verifier.clone()).await.unwrap();
    assert_eq!(again.status(), 400, "a code is taken once");

    // Two minutes at most.
    let third = code().await;
    clock.advance(Duration::from_secs(121));
    let late = exchange(third, verifier).await.unwrap();
    assert_eq!(late.status(), 400, "a code lives two minutes");
}

/// `authgate login` end to end: the CLI opens the browser ($BROWSER), a real headless Chromium
/// logs in at the provider and confirms, the loopback redirect brings the code back to the CLI,
/// which keeps the token for this gateway readable only by its user; `authgate token` prints
/// it, it works through Envoy within its scope, and `authgate logout` revokes it.
#[tokio::test]
async fn authgate_login_gets_a_token_through_chromium_and_logout_revokes_it() {
    use std::os::unix::fs::PermissionsExt;
    let stack = LoginStack::start_with(ExtAuthz::Grpc, RULES, &[], fixture()).await;
    let dir = tempfile::tempdir().unwrap();
    let opened = dir.path().join("opened-url");
    let browser = dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > {}.part && mv {0}.part {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .args(args)
            .env("BROWSER", &browser)
            .env("XDG_CONFIG_HOME", dir.path())
            .env_remove("AUTHGATE_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let url = stack.public_url.clone();
    let login = cli(&[
        "login",
        "--url",
        &url,
        "--name",
        "laptop",
        "--expires-in",
        "7d",
        "--namespace",
        "team-a",
    ])
    .spawn()
    .unwrap();
    let mut start = None;
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&opened) {
            start = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = start.expect("authgate login opened no browser");
    assert!(
        start.starts_with(&format!("{url}/authgate/tokens/new?")),
        "{start}"
    );
    let screenshot = dir.path().join("authgate-login.png");
    let landed =
        oidc::chromium_login_and_click(&start, ALICE, &screenshot, Some("#confirm button")).await;
    assert!(
        landed["text"]
            .as_str()
            .unwrap()
            .contains("authgate login received the token's code"),
        "{landed}"
    );
    let out = tokio::time::timeout(Duration::from_secs(30), login.wait_with_output())
        .await
        .expect("authgate login did not finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("logged in at")
            && stdout.contains("as alice@example.com")
            && !stdout.contains("agt_"),
        "{stdout}"
    );

    let kept = dir.path().join("authgate/tokens.json");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable only by its user");
    let printed = cli(&["token", "--url", &url]).output().await.unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let token = String::from_utf8(printed.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("agt_"), "{token}");
    assert_eq!(
        with_token(&stack, "/notebook/team-a/nb/lab", &token)
            .await
            .status,
        200
    );
    assert_eq!(
        with_token(&stack, "/notebook/team-b/nb/lab", &token)
            .await
            .status,
        403,
        "the scope asked for on the command line"
    );

    let logout = cli(&["logout", "--url", &url]).output().await.unwrap();
    assert!(logout.status.success(), "{logout:?}");
    assert_eq!(
        with_token(&stack, "/notebook/team-a/nb/lab", &token)
            .await
            .status,
        401,
        "revoked at the gateway"
    );
    let gone = cli(&["token", "--url", &url]).output().await.unwrap();
    assert!(!gone.status.success(), "forgotten: {gone:?}");
}

/// The kfp SDK's Python (`.venv-kfp`, made by the setup script).
fn kfp_python() -> std::path::PathBuf {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-kfp/bin/python3");
    assert!(
        python.exists(),
        "the kfp SDK is not installed ({} is missing): run scripts/setup-test-peers.sh",
        python.display()
    );
    python
}

/// The real kfp SDK, given a scoped token as `existing_token`, lists experiments through Envoy
/// in the token's namespace and is refused in another one the person could use.
#[tokio::test]
async fn the_kfp_sdk_works_with_a_scoped_token_and_only_in_its_namespace() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = LoginStack::start_with(mode, RULES, &[], fixture()).await;
        let alice = logged_in(&stack, ALICE).await;
        let made: Value = make(&stack, &alice, "name=kfp&expires_in=1d&namespaces=team-a")
            .await
            .json()
            .await
            .unwrap();
        let token = made["token"].as_str().unwrap().to_string();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/kfp_with_token.py"
        );
        let host = stack.url("/pipeline");
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(kfp_python())
                .args([script, &host, &token])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("kfp took over 60 s")
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode:?}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(
            outcome,
            serde_json::json!({"team-a": "ok", "team-b": 403}),
            "{mode:?}"
        );
        // Both reviewed as Alice: the SDK's calls reached the gateway with her token.
        let reviews = stack.kube.access_reviews();
        assert!(
            reviews.iter().any(|r| r["spec"]["user"] == ALICE.0
                && r["spec"]["resourceAttributes"]["namespace"] == "team-a"),
            "{mode:?}: {reviews:?}"
        );
    }
}
