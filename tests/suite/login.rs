//! Browser login through a real Envoy against a real OpenID Provider (npm `oidc-provider`):
//! the whole journey, state handling, sessions, logout, back-channel logout, bearer JWTs.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, LOCATION, SET_COOKIE};

use crate::support;
use crate::support::oidc::{self, ALICE, ALICE_SUB, BOB, MALLORY, NAVIGATION_ACCEPT};
use crate::support::*;

/// The headers the app received, from the echo upstream's JSON body.
fn app_header(body: &str, name: &str) -> Option<String> {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["headers"]
        .as_array()?
        .iter()
        .find(|p| p[0] == name)
        .map(|p| p[1].as_str().unwrap().to_string())
}

async fn navigate(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header(ACCEPT, NAVIGATION_ACCEPT)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_person_logs_in_and_lands_on_the_page_they_asked_for() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = LoginStack::start(mode, "").await;
        let browser = oidc::browser();
        let start = stack.url("/notebook/team-a/nb1/lab?x=1");
        let journey = oidc::browser_login(&browser, &start, ALICE).await;
        assert_eq!(journey.status, 200, "{mode:?}: {journey:#?}");
        assert_eq!(journey.final_url, start, "back where it started");
        let hops = journey.urls();
        assert!(
            hops[0].starts_with(stack.provider.issuer()),
            "first hop goes to the provider: {hops:?}"
        );
        assert!(
            hops.iter().any(|h| h.contains("/authgate/callback?")),
            "{hops:?}"
        );
        assert_eq!(
            app_header(&journey.body, "kubeflow-userid").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            app_header(&journey.body, "kubeflow-groups").as_deref(),
            Some("kubeflow-users,team-a")
        );
        let jwt = app_header(&journey.body, "x-authgate-identity").unwrap();
        assert_eq!(oidc::jwt_claims(&jwt)["auth_method"], "session");

        // The session works for the next request, and whoami reports it.
        let again = navigate(&browser, &stack.url("/pipeline/")).await;
        assert_eq!(again.status(), 200);
        let whoami: serde_json::Value = browser
            .get(stack.url("/authgate/whoami"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(whoami["user"], "alice@example.com");
        assert_eq!(whoami["auth_method"], "session");
    }
}

#[tokio::test]
async fn the_authorize_request_uses_pkce_state_and_nonce_and_cookies_are_safe() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    let response = navigate(&browser, &stack.url("/")).await;
    assert_eq!(response.status(), 302);
    let location = url::Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["code_challenge"].len() >= 43);
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22);
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], stack.url("/authgate/callback"));
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    // Repeated unauthenticated navigations replace the one login cookie: no pile-up, and its
    // size stays bounded however long the URLs are.
    let name = cookie.split('=').next().unwrap().to_string();
    for i in 0..5 {
        let long = format!("/other?q={}", "x".repeat(3000 + i));
        let again = navigate(&browser, &stack.url(&long)).await;
        assert_eq!(again.status(), 302);
        let set: Vec<&str> = again
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(set.len(), 1, "{set:?}");
        assert!(set[0].starts_with(&format!("{name}=")), "{set:?}");
        assert!(set[0].len() < 3000, "bounded: {} bytes", set[0].len());
    }
}

#[tokio::test]
async fn api_calls_and_xhr_get_401_json_never_a_redirect() {
    let stack = LoginStack::start(ExtAuthz::Http, "").await;
    let browser = oidc::browser();
    let cases: [(&str, &[(&str, &str)]); 4] = [
        (
            "/pipeline/apis/v2beta1/runs",
            &[("accept", NAVIGATION_ACCEPT)],
        ),
        ("/jupyter/", &[("accept", "application/json")]),
        (
            "/jupyter/",
            &[
                ("accept", NAVIGATION_ACCEPT),
                ("x-requested-with", "XMLHttpRequest"),
            ],
        ),
        (
            "/jupyter/",
            &[("accept", NAVIGATION_ACCEPT), ("sec-fetch-mode", "cors")],
        ),
    ];
    for (path, headers) in cases {
        let mut request = browser.get(stack.url(path));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} {headers:?}");
        assert!(
            response.headers().get(SET_COOKIE).is_none(),
            "no cookie for API calls"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
}

/// Runs the login up to the provider's redirect back to the callback, without following it.
async fn callback_url(stack: &LoginStack, browser: &reqwest::Client, start: &str) -> String {
    let first = navigate(browser, &stack.url(start)).await;
    let to_provider = first.headers()[LOCATION].to_str().unwrap().to_string();
    let journey = oidc::browser_login(browser, &to_provider, ALICE).await;
    // The walk stops at the gateway's callback only if we cut it there: find the hop.
    journey
        .urls()
        .into_iter()
        .find(|u| u.contains("/authgate/callback?"))
        .expect("the provider redirected to the callback")
        .to_string()
}

#[tokio::test]
async fn state_is_single_use_bound_to_the_browser_and_checked() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    let callback = callback_url(&stack, &browser, "/a").await;
    // The walk above already used the callback once; replaying it fails.
    let replay = navigate(&browser, &callback).await;
    assert_eq!(replay.status(), 400, "state replay");
    assert!(replay.text().await.unwrap().contains("already used"));

    // A callback with a state nobody issued.
    let forged = callback.replace("state=", "state=x");
    let response = navigate(&browser, &forged).await;
    assert_eq!(response.status(), 400);

    // A login started in one browser and completed in another (a planted or stolen state) is
    // refused: the state is bound to the browser that started it.
    let victim = oidc::browser();
    let first = navigate(&victim, &stack.url("/b")).await;
    let to_provider = first.headers()[LOCATION].to_str().unwrap().to_string();
    // `browser` is known to the provider, so it goes straight back to the callback.
    let page = browser.get(&to_provider).send().await.unwrap();
    let callback = follow_until_callback(&browser, page).await;
    let stolen = navigate(&browser, &callback).await;
    assert_eq!(
        stolen.status(),
        400,
        "state bound to another browser's cookie"
    );
    assert!(stolen.text().await.unwrap().contains("another browser"));
}

/// Follows provider redirects (the provider already knows the browser) until the gateway's
/// callback URL, which is returned unvisited.
async fn follow_until_callback(
    client: &reqwest::Client,
    mut response: reqwest::Response,
) -> String {
    for _ in 0..10 {
        let location = response.headers()[LOCATION].to_str().unwrap().to_string();
        let next = response.url().join(&location).unwrap().to_string();
        if next.contains("/authgate/callback?") {
            return next;
        }
        response = client.get(&next).send().await.unwrap();
    }
    panic!("no callback");
}

#[tokio::test]
async fn two_tabs_logging_in_at_once_both_succeed() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    let tab1 = navigate(&browser, &stack.url("/tab-one")).await;
    let tab2 = navigate(&browser, &stack.url("/tab-two")).await;
    let to_provider_1 = tab1.headers()[LOCATION].to_str().unwrap().to_string();
    let to_provider_2 = tab2.headers()[LOCATION].to_str().unwrap().to_string();
    assert_ne!(to_provider_1, to_provider_2, "each tab has its own state");
    let one = oidc::browser_login(&browser, &to_provider_1, ALICE).await;
    assert_eq!(one.final_url, stack.url("/tab-one"));
    let two = oidc::browser_login(&browser, &to_provider_2, ALICE).await;
    assert_eq!(two.status, 200);
    assert_eq!(two.final_url, stack.url("/tab-two"));
}

#[tokio::test]
async fn logout_ends_the_session_and_sends_the_browser_to_the_provider() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), ALICE).await;
    assert_eq!(journey.status, 200);

    // A cross-site GET only gets a confirmation page.
    let csrf = browser
        .get(stack.url("/authgate/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(csrf.status(), 200);
    assert!(csrf.text().await.unwrap().contains("<form method=\"post\""));
    assert_eq!(
        navigate(&browser, &stack.url("/still-in")).await.status(),
        200
    );
    // A cross-site POST (a form on another site) neither: it would clear the browser's cookie
    // and leave nothing to show for it.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("origin", "null"),
        // A POST that says nothing of where it comes from (a browser without Sec-Fetch-*).
        ("accept", "text/html"),
    ] {
        let csrf = browser
            .post(stack.url("/authgate/logout"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(csrf.status(), 200, "{name}: {value}");
        assert!(csrf.headers().get(SET_COOKIE).is_none(), "{name}: {value}");
        assert_eq!(
            navigate(&browser, &stack.url("/still-in")).await.status(),
            200,
            "{name}: {value}"
        );
    }

    let logout = browser
        .post(stack.url("/authgate/logout"))
        // As the confirm form's POST: a browser says it comes from this origin.
        .header("origin", &stack.public_url)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 302);
    let location = logout.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(location.starts_with(stack.provider.issuer()), "{location}");
    assert!(location.contains("id_token_hint="), "{location}");
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    let cleared = logout.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // Finish the provider's logout; the provider sends the browser back to the gateway, where
    // (logged out) it is asked to log in again.
    let done = oidc::follow(&browser, &location).await;
    assert!(done.urls().contains(&stack.url("/").as_str()), "{done:#?}");
    assert!(done.body.contains("id=\"login-form\""), "{done:#?}");
    // The session is gone: a navigation goes to the login again.
    let after = navigate(&browser, &stack.url("/x")).await;
    assert_eq!(after.status(), 302);
}

#[tokio::test]
async fn back_channel_logout_ends_the_session() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &stack.url("/"), ALICE)
            .await
            .status,
        200
    );
    let bob = oidc::browser();
    assert_eq!(
        oidc::browser_login(&bob, &stack.url("/"), BOB).await.status,
        200
    );
    let result = stack.provider.end_sessions_of(ALICE_SUB).await;
    let status = &result["logouts"][0]["status"];
    assert_eq!(status, 200, "authgate accepted the logout token: {result}");
    let alice_after = navigate(&browser, &stack.url("/x")).await;
    assert_eq!(alice_after.status(), 302, "alice must log in again");
    let bob_after = navigate(&bob, &stack.url("/x")).await;
    assert_eq!(bob_after.status(), 200, "bob is untouched");
}

#[tokio::test]
async fn a_forged_logout_token_is_refused() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let http = stack.authgate.http_url();
    let forged = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4Iiwic3ViIjoidXNlci1hbGljZSJ9.";
    let response = reqwest::Client::new()
        .post(format!("{http}/authgate/backchannel-logout"))
        .form(&[("logout_token", forged)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn every_open_redirect_payload_is_refused_as_a_return_target() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/openredirects.txt"
    ))
    .unwrap();
    let mut checked = 0;
    for line in text.lines() {
        // The file holds query-escaped payloads: exactly what goes after `rd=`.
        let url = format!("{}/authgate/logout?rd={line}", stack.public_url);
        let Ok(response) = client
            .get(&url)
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
        else {
            continue; // a payload the HTTP client cannot even send
        };
        if response.status() == 400 {
            checked += 1; // refused by Envoy or authgate before any redirect
            continue;
        }
        assert_eq!(response.status(), 302, "{line}");
        let location = response.headers()[LOCATION].to_str().unwrap();
        assert_eq!(
            location,
            stack.url("/"),
            "payload {line:?} redirected to {location}"
        );
        checked += 1;
    }
    assert!(checked >= 550, "only {checked} payloads went through");
}

#[tokio::test]
async fn people_outside_the_allowed_domains_get_a_403_page_not_a_loop() {
    let stack = LoginStack::start(
        ExtAuthz::Grpc,
        "authorization: {allowed_email_domains: [example.com]}\n",
    )
    .await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), MALLORY).await;
    assert_eq!(journey.status, 403, "{journey:#?}");
    assert!(
        journey.body.contains("mallory@evil.example"),
        "{}",
        journey.body
    );
    let again = navigate(&browser, &stack.url("/")).await;
    assert_eq!(again.status(), 403, "still a page, not a redirect loop");
    let alice = oidc::browser();
    assert_eq!(
        oidc::browser_login(&alice, &stack.url("/"), ALICE)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn oidc_id_tokens_work_as_bearer_tokens_across_key_rotation() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let token = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    let call = |token: String| {
        let url = stack.url("/pipeline/apis/v2beta1/runs");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let response = call(token.clone()).await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert_eq!(
        app_header(&body, "kubeflow-userid").as_deref(),
        Some("alice@example.com")
    );
    assert!(
        stack.kube.token_reviews().is_empty(),
        "an OIDC token costs no TokenReview"
    );
    // Verified once, then remembered: the second call is a cache hit.
    let hits = || async {
        let series = r#"authgate_review_cache_lookups_total{cache="oidc_bearer",result="hit"}"#;
        metric_value(&stack.authgate.metrics().await, series).unwrap_or(0.0)
    };
    let before = hits().await;
    assert_eq!(call(token.clone()).await.status(), 200);
    assert!(
        hits().await > before,
        "the second use of a token is not verified again"
    );

    let new_kid = stack.provider.rotate_keys().await;
    let rotated = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    assert_eq!(oidc::jwt_header(&rotated)["kid"], new_kid.as_str());
    // The new key was unknown: authgate refetches the JWKS (after its rate-limit window).
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut status = 0;
    for _ in 0..15 {
        status = call(rotated.clone()).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        status, 200,
        "a token signed with the rotated key is accepted"
    );
    // A token for another audience is refused.
    let mut tampered = token.clone();
    tampered.push('x');
    assert_eq!(call(tampered).await.status(), 401);
}

#[tokio::test]
async fn idle_and_expired_sessions_end_by_the_clock() {
    let clock = authgate::clock::ManualClock::new();
    let stack = LoginStack::start_with_clock(
        ExtAuthz::Grpc,
        "session: {cookie_secure: false, idle_timeout: 10m, max_age: 1h}\n",
        Arc::new(clock.clone()),
    )
    .await;
    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &stack.url("/"), ALICE)
            .await
            .status,
        200
    );
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(
        navigate(&browser, &stack.url("/a")).await.status(),
        200,
        "used within 10m"
    );
    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(
        navigate(&browser, &stack.url("/b")).await.status(),
        302,
        "idle for 10m"
    );

    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &stack.url("/"), ALICE)
            .await
            .status,
        200
    );
    for _ in 0..6 {
        clock.advance(Duration::from_secs(9 * 60));
        assert_eq!(navigate(&browser, &stack.url("/c")).await.status(), 200);
    }
    clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        navigate(&browser, &stack.url("/d")).await.status(),
        302,
        "max_age is absolute"
    );
}

#[tokio::test]
async fn the_app_never_sees_authgates_cookies() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = LoginStack::start(mode, "").await;
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let browser = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        assert_eq!(
            oidc::browser_login(&browser, &stack.url("/"), ALICE)
                .await
                .status,
            200
        );
        // The browser sends its session cookie along with the app's own cookies.
        jar.add_cookie_str(
            "app_pref=dark; Path=/",
            &url::Url::parse(&stack.public_url).unwrap(),
        );
        let response = browser
            .get(stack.url("/notebook/team-a/nb1/lab"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{mode:?}");
        let body = response.text().await.unwrap();
        let cookie = app_header(&body, "cookie").unwrap_or_default();
        assert!(
            !cookie.contains("authgate_session"),
            "{mode:?}: session id reached the app: {cookie}"
        );
        assert!(
            cookie.contains("app_pref=dark"),
            "{mode:?}: the app's own cookies stay: {cookie}"
        );
    }
}

#[tokio::test]
async fn expired_id_tokens_are_refreshed_once_and_a_refused_refresh_ends_the_session() {
    let clock = authgate::clock::ManualClock::new();
    // ID tokens live 90 s (more than the 60 s refresh margin); the injected clock is
    // moved past that, so from then on every check finds one due.
    let mut stack = LoginStack::start_full(
        ExtAuthz::Grpc,
        "",
        &[("ID_TOKEN_TTL", "90")],
        Fixture::default(),
        Arc::new(clock.clone()),
    )
    .await;
    let browser = oidc::browser();
    assert_eq!(
        oidc::browser_login(&browser, &stack.url("/"), ALICE)
            .await
            .status,
        200
    );
    assert_eq!(stack.provider.tokens_issued(), 1);

    // Due: ten concurrent requests, one refresh.
    clock.advance(Duration::from_secs(120));
    let urls: Vec<String> = (0..10).map(|i| stack.url(&format!("/r{i}"))).collect();
    let statuses = futures::future::join_all(urls.iter().map(|u| navigate(&browser, u))).await;
    assert!(statuses.iter().all(|r| r.status() == 200));
    assert_eq!(stack.provider.tokens_issued(), 2, "exactly one refresh");

    // The provider down: the session goes on.
    stack.provider.stop();
    clock.advance(Duration::from_secs(31));
    assert_eq!(navigate(&browser, &stack.url("/down")).await.status(), 200);

    // The provider forgot the grant (a person removed there): the refresh is refused, the
    // session ends, and the browser is sent to log in again.
    stack.provider.restart().await;
    clock.advance(Duration::from_secs(31));
    let after = navigate(&browser, &stack.url("/gone")).await;
    assert_eq!(after.status(), 302, "refused refresh ends the session");
}

#[tokio::test]
async fn claims_missing_from_the_id_token_come_from_userinfo() {
    let stack = LoginStack::start_with(
        ExtAuthz::Grpc,
        "",
        &[("USERINFO_ONLY_CLAIMS", "1")],
        Fixture::default(),
    )
    .await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), ALICE).await;
    assert_eq!(journey.status, 200, "{journey:#?}");
    assert_eq!(
        app_header(&journey.body, "kubeflow-userid").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        app_header(&journey.body, "kubeflow-groups").as_deref(),
        Some("kubeflow-users,team-a")
    );
}

#[tokio::test]
async fn an_authorization_endpoint_override_sends_browsers_to_the_public_url() {
    // An issuer reached in-cluster advertises an address browsers cannot open (Kubeflow's
    // http://dex.auth.svc.cluster.local:5556/dex); the override names the public one.
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let public_auth = stack.provider.issuer().replace("127.0.0.1", "localhost") + "/auth";
    let yaml = login_config_yaml(
        stack.kube.kubeconfig_path(),
        &stack.public_url,
        stack.provider.issuer(),
        free_port(),
        &format!("oidc: {{authorization_endpoint: '{public_auth}'}}"),
    );
    let authgate = Authgate::start(&yaml).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/authgate/login?rd=/x", authgate.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()[LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{public_auth}?")),
        "{location}"
    );
}

async fn assert_login_unavailable(response: reqwest::Response, case: &str) {
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{case}: {body}");
    assert!(retry_after.is_some(), "{case}: a 503 says when to retry");
    assert!(body.contains("Login is unavailable"), "{case}: {body}");
}

/// The provider down: a login that needs it gets a clear 503 page (never a 401 or a loop),
/// sessions made before keep working, and discovery comes back by itself with the provider.
#[tokio::test]
async fn provider_down_new_logins_get_a_503_page_and_sessions_keep_working() {
    // Down before authgate ever reached it: discovery fails, the login page says so.
    let mut stack = LoginStack::start_with_provider_down(ExtAuthz::Grpc).await;
    let first = navigate(&oidc::browser(), &stack.url("/notebook/team-a/")).await;
    assert_login_unavailable(first, "discovery").await;

    // Back up: discovery is retried (with backoff) and logins work again, untouched by hand.
    stack.provider.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = navigate(&oidc::browser(), &stack.url("/notebook/team-a/")).await;
        if response.status() == 302 {
            break;
        }
        assert_eq!(response.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "discovery never recovered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let alice = oidc::browser();
    let journey = oidc::browser_login(&alice, &stack.url("/a"), ALICE).await;
    assert_eq!(journey.status, 200, "{journey:#?}");

    // Bob is at the provider when it dies: his code cannot be exchanged.
    let bob = oidc::browser();
    let callback_prefix = stack.url("/authgate/callback");
    let to_callback =
        oidc::browser_login_until(&bob, &stack.url("/b"), BOB, &callback_prefix).await;
    stack.provider.stop();

    let session = navigate(&alice, &stack.url("/pipeline/")).await;
    assert_eq!(session.status(), 200, "a session made before keeps working");
    let exchange = navigate(&bob, &to_callback.final_url).await;
    assert_login_unavailable(exchange, "code exchange").await;
}

/// oidc-authservice's own `params.env` from Kubeflow's manifests, verbatim, plus the one
/// setting it derived per request (`AUTHGATE_PUBLIC_URL`) and, because the test's Dex is not
/// `dex.auth.svc.cluster.local`, the provider's address for `OIDC_PROVIDER`. No config file.
/// The provider is served under the gateway's `/dex` (skip_auth `/dex`) as Dex is in Kubeflow,
/// the browser is sent to the relative `OIDC_AUTH_URL=/dex/auth`, and the provider redirects to
/// the redirect URI registered for oidc-authservice, `REDIRECT_URL=/login/oidc`, where authgate
/// answers the callback: both modes, through a real Envoy.
#[tokio::test]
async fn oidc_authservices_own_params_env_logs_in_at_its_redirect_url() {
    let params = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/oidc-authservice-params.env"
    ))
    .unwrap();
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let (gateway_port, provider_port) = (free_port(), free_port());
        let public_url = format!("http://127.0.0.1:{gateway_port}");
        let issuer = format!("http://127.0.0.1:{provider_port}/dex");
        let mut client = oidc::OidcClient::new(
            "kubeflow-oidc-authservice",
            "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
            &format!("{public_url}/login/oidc"),
        );
        client.post_logout_redirect_uris = vec![format!("{public_url}/")];
        let provider =
            oidc::OidcProvider::start_at(provider_port, vec![client], &[("ISSUER", &issuer)]).await;
        assert_eq!(provider.issuer(), issuer);
        let kube = KubeApi::start(Fixture::default()).await;

        let mut env: Vec<(String, String)> = params
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .filter(|(k, _)| k != "OIDC_PROVIDER")
            .collect();
        for (k, v) in [
            ("OIDC_PROVIDER", issuer.as_str()),
            ("CLIENT_ID", "kubeflow-oidc-authservice"),
            ("CLIENT_SECRET", "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"),
            ("AUTHGATE_PUBLIC_URL", public_url.as_str()),
            ("AUTHGATE_SESSION__COOKIE_SECURE", "false"),
            (
                "AUTHGATE_KUBERNETES__KUBECONFIG",
                kube.kubeconfig_path().to_str().unwrap(),
            ),
        ] {
            env.push((k.to_string(), v.to_string()));
        }
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_authgate"));
        let authgate = support::process::AuthgateProcess::start_with_env(binary, &env).await;
        let authz = match mode {
            ExtAuthz::Grpc => authgate.grpc,
            ExtAuthz::Http => std::net::SocketAddr::from(([127, 0, 0, 1], authgate.http_port)),
        };
        let upstream =
            echo::start_echo_with_dex(std::net::SocketAddr::from(([127, 0, 0, 1], provider_port)))
                .await;
        let options = envoy::Options {
            status_on_error: Some(503),
            listen_port: Some(gateway_port),
            ..Default::default()
        };
        let _envoy = Envoy::start_with(mode, authz, upstream, options).await;

        let browser = oidc::browser();
        let start = format!("{public_url}/notebook/team-a/nb1/lab");
        let journey = oidc::browser_login(&browser, &start, ALICE).await;
        assert_eq!(
            journey.status,
            200,
            "{mode:?}: {journey:#?}\n{}",
            authgate.log()
        );
        assert_eq!(journey.final_url, start);
        let hops = journey.urls();
        assert!(
            hops[0].starts_with(&format!("{public_url}/dex/auth?")),
            "the browser goes to the gateway's /dex/auth: {hops:?}"
        );
        assert!(
            hops.iter()
                .any(|h| h.starts_with(&format!("{public_url}/login/oidc?"))),
            "the provider returns to REDIRECT_URL: {hops:?}"
        );
        assert_eq!(
            app_header(&journey.body, "kubeflow-userid").as_deref(),
            Some("alice@example.com")
        );
    }
}

/// A provider (or whatever answers at its address) that redirects: authgate's calls to it —
/// discovery here, through openidconnect's HTTP adapter — never follow a redirect (that would
/// open SSRF paths), so a discovery document moved elsewhere is no discovery. The same server
/// serving the document in place is discovered, and the login starts: the refusal is the
/// redirect's, not the server's.
#[tokio::test]
async fn the_provider_calls_never_follow_a_redirect() {
    use axum::extract::State;
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Redirect};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Clone)]
    struct Served {
        base: String,
        moved_document_fetched: Arc<AtomicUsize>,
    }
    async fn answer(State(served): State<Served>, uri: Uri) -> axum::response::Response {
        let document = |issuer: String| {
            axum::Json(serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{}/jwks", served.base),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }))
            .into_response()
        };
        match uri.path() {
            "/direct/.well-known/openid-configuration" => {
                document(format!("{}/direct", served.base))
            }
            "/moved/.well-known/openid-configuration" => {
                Redirect::temporary("/moved/real-configuration").into_response()
            }
            "/moved/real-configuration" => {
                served.moved_document_fetched.fetch_add(1, Ordering::SeqCst);
                document(format!("{}/moved", served.base))
            }
            "/jwks" => axum::Json(serde_json::json!({"keys": []})).into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served = Served {
        base: format!("http://{}", listener.local_addr().unwrap()),
        moved_document_fetched: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(served.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let kube = KubeApi::start(Fixture::default()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (issuer, follows) in [("direct", true), ("moved", false)] {
        let port = free_port();
        let yaml = login_config_yaml(
            kube.kubeconfig_path(),
            &format!("http://127.0.0.1:{port}"),
            &format!("{}/{issuer}", served.base),
            port,
            "",
        );
        let authgate = Authgate::start(&yaml).await;
        let response = client
            .get(format!("{}/authgate/login?rd=/x", authgate.http_url()))
            .send()
            .await
            .unwrap();
        if follows {
            assert_eq!(
                response.status(),
                302,
                "{issuer}: the control is discovered"
            );
            let location = response.headers()[LOCATION].to_str().unwrap();
            assert!(
                location.starts_with(&format!("{}/direct/auth?", served.base)),
                "{location}"
            );
        } else {
            assert_login_unavailable(response, issuer).await;
        }
    }
    assert_eq!(
        served.moved_document_fetched.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
