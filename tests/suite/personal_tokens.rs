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
"#;

fn fixture() -> Fixture {
    let notebooks = |namespace: &str, user: &str| Binding {
        namespace: namespace.into(),
        subject: Subject::User(user.into()),
        rules: vec![PolicyRule {
            api_groups: vec!["kubeflow.org".into()],
            resources: vec!["notebooks".into()],
            verbs: vec!["get".into()],
        }],
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
    let browser = oidc::browser();
    let journey = oidc::browser_login(
        &browser,
        &stack.url("/authgate/login?fresh=1&rd=/notebook/team-b/nb/lab"),
        user,
    )
    .await;
    assert_eq!(journey.status, 200, "{journey:#?}");
    browser
}

/// `POST /authgate/tokens?{query}` from the gateway's own origin.
async fn make(stack: &LoginStack, browser: &reqwest::Client, query: &str) -> reqwest::Response {
    browser
        .post(stack.url(&format!("/authgate/tokens?{query}")))
        .header(ORIGIN, &stack.public_url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
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

        // An unscoped token goes wherever the person may.
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
        let action = body
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .replace("&amp;", "&");
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

    // The limits: a lifetime is required and capped, namespaces are names, a name is needed.
    for query in [
        "name=x",
        "name=x&expires_in=31d",
        "name=x&expires_in=soon",
        "name=x&expires_in=1d&namespaces=Team-A",
        "expires_in=1d",
    ] {
        let refused = make(&stack, &alice, query).await;
        assert_eq!(refused.status(), 400, "{query}");
    }
    // At most max_per_user (3) live tokens.
    assert_eq!(
        make(&stack, &alice, "name=2&expires_in=1d").await.status(),
        201
    );
    assert_eq!(
        make(&stack, &alice, "name=3&expires_in=1d").await.status(),
        201
    );
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
    let stack = LoginStack::start_full(
        ExtAuthz::Grpc,
        RULES,
        &[],
        fixture(),
        Arc::new(clock.clone()),
    )
    .await;
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
