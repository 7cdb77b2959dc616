//! Identity trust, through a real Envoy (both ext_authz modes), the npm OIDC provider with
//! accounts that carry hostile claims, and the Kubernetes API test server: only identities the
//! provider and the API server truly vouch for, carried to the app exactly, and credentials that
//! stop at the gateway.

use std::time::Duration;

use reqwest::header::ACCEPT;
use serde_json::json;

use crate::support;
use crate::support::oidc::{self, ALICE, HostileUser};
use crate::support::*;

/// Registered `alice@example.com` at the provider without verifying it (self sign-up).
const SQUATTER: HostileUser = HostileUser {
    sub: "user-squatter",
    login: "squatter@signup.example",
    password: "squatter-password",
    claims: serde_json::Value::Null,
};

fn squatter() -> HostileUser {
    HostileUser {
        claims: json!({"email": "alice@example.com", "email_verified": false}),
        ..SQUATTER
    }
}

/// The provider says nothing about whether the address is verified.
fn unspoken() -> HostileUser {
    HostileUser {
        sub: "user-unspoken",
        login: "unspoken@example.com",
        password: "unspoken-password",
        claims: json!({"email": "unspoken@example.com", "email_verified": null}),
    }
}

/// A self-service IdP lets anyone name a group `system:masters` (cluster-admin by group name).
fn masters() -> HostileUser {
    HostileUser {
        sub: "user-masters",
        login: "masters@example.com",
        password: "masters-password",
        claims: json!({"groups": ["kubeflow-users", "system:masters"]}),
    }
}

/// An e-mail claim that is a Kubernetes user name.
fn system_admin() -> HostileUser {
    HostileUser {
        sub: "user-sysadmin",
        login: "sysadmin@example.com",
        password: "sysadmin-password",
        claims: json!({"email": "system:admin"}),
    }
}

/// A group the comma-joined groups header would split in two.
fn comma_group() -> HostileUser {
    HostileUser {
        sub: "user-comma",
        login: "comma@example.com",
        password: "comma-password",
        claims: json!({"groups": ["viewers,admins"]}),
    }
}

/// A user name whose bytes apps would read as Latin-1, not as the UTF-8 authgate judged.
fn non_ascii() -> HostileUser {
    HostileUser {
        sub: "user-jose",
        login: "jose@example.com",
        password: "jose-password",
        claims: json!({"email": "jos\u{e9}@example.com"}),
    }
}

fn hostile_users() -> String {
    oidc::extra_users(&[
        squatter(),
        unspoken(),
        masters(),
        system_admin(),
        comma_group(),
        non_ascii(),
    ])
}

async fn stack(mode: ExtAuthz, extra_yaml: &str, fixture: Fixture) -> LoginStack {
    let users = hostile_users();
    LoginStack::start_with(mode, extra_yaml, &[("EXTRA_USERS", &users)], fixture).await
}

/// The same browser, asking whoami: is there a session?
async fn has_session(stack: &LoginStack, browser: &reqwest::Client) -> bool {
    let response = browser
        .get(stack.url("/authgate/whoami"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    response.status() == 200
}

async fn bearer_get(stack: &LoginStack, path: &str, token: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(stack.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(json!(body)))
}

/// Logs `user` in; the journey must end on authgate's 403 page saying why, with no session.
async fn assert_login_refused(stack: &LoginStack, user: &HostileUser, why: &str) {
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), user.credentials()).await;
    assert_eq!(journey.status, 403, "{}: {journey:#?}", user.login);
    assert!(
        journey.body.contains(why),
        "{}: the page says why ({why}): {}",
        user.login,
        journey.body
    );
    assert!(
        journey.final_url.contains("/authgate/callback"),
        "{}",
        journey.final_url
    );
    assert!(
        !has_session(stack, &browser).await,
        "{}: no session",
        user.login
    );
}

async fn refused_count(stack: &LoginStack, reason: &str) -> f64 {
    let exposition = stack.authgate.metrics().await;
    exposition
        .lines()
        .filter(|l| {
            l.starts_with("authgate_decisions_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_unverified_email_is_not_an_identity() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = stack(mode, "", Fixture::default()).await;
        // The squatter's login would make them alice@example.com, namespaces included.
        assert_login_refused(&stack, &squatter(), "not verified").await;
        assert_login_refused(&stack, &unspoken(), "email_verified is absent").await;
        assert!(refused_count(&stack, "email_not_verified").await >= 2.0);

        // The same ID token as a bearer token: a 403 in JSON that says why.
        let token =
            oidc::id_token_for(&stack.provider, &stack.client, squatter().credentials()).await;
        assert_eq!(oidc::jwt_claims(&token)["email_verified"], false);
        let (status, body) = bearer_get(&stack, "/pipeline/apis/v2beta1/runs", &token).await;
        assert_eq!(status, 403, "{mode:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("not verified"),
            "{body}"
        );

        // The real Alice (verified) still gets in.
        let browser = oidc::browser();
        let journey = oidc::browser_login(&browser, &stack.url("/"), ALICE).await;
        assert_eq!(journey.status, 200, "{mode:?}");
    }
}

#[tokio::test]
async fn a_provider_that_never_sends_email_verified_can_be_allowed_but_false_stays_refused() {
    let stack = stack(
        ExtAuthz::Grpc,
        "oidc: {require_verified_email: false}",
        Fixture::default(),
    )
    .await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), unspoken().credentials()).await;
    assert_eq!(journey.status, 200, "{journey:#?}");
    assert_login_refused(&stack, &squatter(), "email_verified is false").await;
}

/// A namespaced route, so a SubjectAccessReview decides.
const NOTEBOOK_RULE: &str = "authorization:\n  rules:\n    - name: notebooks\n      path: /notebook/{namespace}/**\n      resource: {group: kubeflow.org, resource: notebooks}\n";

#[tokio::test]
async fn names_kubernetes_reserves_never_come_from_the_provider() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = stack(mode, NOTEBOOK_RULE, Fixture::default()).await;
        assert_login_refused(&stack, &masters(), "system:masters").await;
        assert_login_refused(&stack, &system_admin(), "system:admin").await;
        let token =
            oidc::id_token_for(&stack.provider, &stack.client, masters().credentials()).await;
        let (status, body) = bearer_get(&stack, "/notebook/kubeflow/nb/", &token).await;
        assert_eq!(status, 403, "{mode:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("reserves"),
            "{body}"
        );
        let reviews = serde_json::to_string(&stack.kube.access_reviews()).unwrap();
        assert!(
            !reviews.contains("system:masters"),
            "no review is ever asked for a reserved group: {reviews}"
        );
    }
}

#[tokio::test]
async fn issuer_prefixes_apply_before_reviews_headers_and_the_signed_jwt() {
    let extra =
        format!("{NOTEBOOK_RULE}oidc: {{username_prefix: 'oidc:', groups_prefix: 'oidc:'}}\n");
    let stack = stack(ExtAuthz::Grpc, &extra, Fixture::default()).await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), masters().credentials()).await;
    assert_eq!(journey.status, 200, "{journey:#?}");
    let app = |name: &str| {
        let json: serde_json::Value = serde_json::from_str(&journey.body).unwrap();
        json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == name)
            .map(|p| p[1].as_str().unwrap().to_string())
    };
    assert_eq!(
        app("kubeflow-userid").as_deref(),
        Some("oidc:masters@example.com")
    );
    assert_eq!(
        app("kubeflow-groups").as_deref(),
        Some("oidc:kubeflow-users,oidc:system:masters")
    );
    let claims = oidc::jwt_claims(&app("x-authgate-identity").unwrap());
    assert_eq!(claims["sub"], "oidc:masters@example.com");
    assert_eq!(claims["idp"], stack.provider.issuer());

    // The prefixed group is no privileged group: RBAC decides, and says no.
    let response = browser
        .get(stack.url("/notebook/kubeflow/nb/"))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let reviews = stack.kube.access_reviews();
    let review = reviews.last().expect("a review was made");
    assert_eq!(review["spec"]["user"], "oidc:masters@example.com");
    assert_eq!(
        review["spec"]["groups"],
        json!(["oidc:kubeflow-users", "oidc:system:masters"])
    );
}

#[tokio::test]
async fn names_a_header_cannot_carry_are_refused_never_split_or_dropped() {
    for mode in [ExtAuthz::Http, ExtAuthz::Grpc] {
        let stack = stack(mode, "", Fixture::default()).await;
        assert_login_refused(&stack, &comma_group(), "separates groups").await;
        assert_login_refused(&stack, &non_ascii(), "cannot carry").await;
        // As a bearer token, with the client's own identity headers: refused, and nothing of
        // the client's reaches the app.
        let token =
            oidc::id_token_for(&stack.provider, &stack.client, non_ascii().credentials()).await;
        let response = reqwest::Client::new()
            .get(stack.url("/x"))
            .bearer_auth(&token)
            .header("kubeflow-userid", "owner@example.com")
            .header("kubeflow-groups", "admins")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{mode:?}");
    }
}

/// A service-account token, and a token of a person the API server authenticates itself.
fn kube_fixture(groups_of_person: &[&str]) -> Fixture {
    let mut person = sa_token("person-token", "x", "x", &[KFP_AUDIENCE]);
    person.username = "carol@example.com".into();
    person.groups = groups_of_person.iter().map(|g| g.to_string()).collect();
    Fixture {
        tokens: vec![
            sa_token("sa-token", "team-a", "runner", &[KFP_AUDIENCE]),
            person,
        ],
        ..Fixture::default()
    }
}

#[tokio::test]
async fn a_token_review_counts_only_when_the_api_server_confirms_the_audience() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let mut fixture = kube_fixture(&[]);
        // Automounted: valid only for the API server's own audience.
        fixture
            .tokens
            .push(sa_token("automounted", "team-a", "default", &[]));
        let stack = Stack::start(mode, fixture, "").await;
        let ok = stack.get("/x", &["Authorization: Bearer sa-token"]).await;
        assert_eq!(ok.status, 200, "{mode:?}: {ok:?}");
        let refused = stack
            .get("/x", &["Authorization: Bearer automounted"])
            .await;
        assert_eq!(refused.status, 401, "{mode:?}: {refused:?}");
        // An API server that is not audience-aware ignores the audiences authgate asks for and
        // authenticates any valid token; only the missing status.audiences tells.
        stack.kube.set_audience_unaware(true);
        let unconfirmed = stack
            .get("/x", &["Authorization: Bearer person-token"])
            .await;
        assert_eq!(unconfirmed.status, 401, "{mode:?}: {unconfirmed:?}");
        let reviews = stack.kube.token_reviews();
        assert!(
            reviews
                .iter()
                .all(|r| r["spec"]["audiences"] == json!([KFP_AUDIENCE])),
            "{reviews:?}"
        );
    }
}

#[tokio::test]
async fn a_person_the_api_server_vouches_for_is_not_labelled_a_service_account() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(
            mode,
            kube_fixture(&["team-a"]),
            "authorization: {allowed_email_domains: [example.org]}",
        )
        .await;
        // Service accounts are not people: the domain allowlist does not apply to them.
        let sa = stack.get("/x", &["Authorization: Bearer sa-token"]).await;
        assert_eq!(sa.status, 200, "{mode:?}: {sa:?}");
        let claims = oidc::jwt_claims(&sa.upstream_header("x-authgate-identity").unwrap());
        assert_eq!(claims["auth_method"], "service_account");
        // carol@example.com is a person: the allowlist applies, and she is outside it.
        let person = stack
            .get("/x", &["Authorization: Bearer person-token"])
            .await;
        assert_eq!(person.status, 403, "{mode:?}: {person:?}");
        assert!(person.body.contains("e-mail domain"), "{}", person.body);

        let open = Stack::start(mode, kube_fixture(&["team-a"]), "").await;
        let person = open
            .get("/x", &["Authorization: Bearer person-token"])
            .await;
        let claims = oidc::jwt_claims(&person.upstream_header("x-authgate-identity").unwrap());
        assert_eq!(claims["auth_method"], "kubernetes_user");
        assert_eq!(claims["sub"], "carol@example.com");
    }
}

#[tokio::test]
async fn a_token_review_identity_the_headers_cannot_carry_is_refused() {
    for mode in [ExtAuthz::Http, ExtAuthz::Grpc] {
        let stack = Stack::start(mode, kube_fixture(&["viewers,admins"]), "").await;
        let response = stack
            .get(
                "/x",
                &[
                    "Authorization: Bearer person-token",
                    "kubeflow-groups: admins",
                ],
            )
            .await;
        assert_eq!(response.status, 403, "{mode:?}: {response:?}");
        assert!(
            response.body.contains("separates groups"),
            "{}",
            response.body
        );
    }
}

#[tokio::test]
async fn bearer_tokens_stop_at_the_gateway_unless_a_rule_forwards_them() {
    let rules = "authorization:\n  rules:\n    - name: verifies-tokens-itself\n      path: /own-check/**\n      allow: true\n      forward_credentials: true\n";
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, kube_fixture(&[]), rules).await;
        let response = stack
            .get("/notebook/x/", &["Authorization: Bearer sa-token"])
            .await;
        assert_eq!(
            response.upstream_header("authorization"),
            None,
            "{mode:?}: the app never sees the token that authenticated the request"
        );
        assert!(response.upstream_header("kubeflow-userid").is_some());
        let forwarded = stack
            .get("/own-check/x", &["Authorization: Bearer sa-token"])
            .await;
        assert_eq!(
            forwarded.upstream_header("authorization").as_deref(),
            Some("Bearer sa-token"),
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn oidc_bearer_tokens_stop_at_the_gateway_too() {
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = LoginStack::start(mode, "").await;
        let token = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
        let response = reqwest::Client::new()
            .get(stack.url("/x"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        let names: Vec<&str> = body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"authorization"), "{mode:?}: {names:?}");
    }
}

#[tokio::test]
async fn by_default_pods_automounted_tokens_are_refused() {
    // A config that names no audience: the default, one dedicated to the gateway.
    let fixture = Fixture {
        tokens: vec![
            // Automounted: the API server's own default audience.
            sa_token("automounted", "team-a", "default", &[]),
            sa_token("projected", "team-a", "runner", &["authgate"]),
        ],
        ..Fixture::default()
    };
    let kube = KubeApi::start(fixture).await;
    let yaml = format!(
        "listen: {{grpc: 127.0.0.1:0, http: 127.0.0.1:0}}\n\
         public_url: https://kubeflow.example.com\n\
         kubernetes:\n  kubeconfig: {}\n  token_review: {{require_bound: false}}\n",
        kube.kubeconfig_path().display()
    );
    let authgate = Authgate::start(&yaml).await;
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let (upstream, _) = echo::start_echo().await;
        let envoy = Envoy::start_with(
            mode,
            authgate.authz_addr(mode),
            upstream,
            support::envoy::Options::default(),
        )
        .await;
        let get = |token: &'static str| {
            let head = format!(
                "GET /x HTTP/1.1\r\nHost: kubeflow.example.com\r\nAuthorization: Bearer {token}\r\n"
            );
            let addr = envoy.addr();
            async move { raw_http(addr, &head).await }
        };
        assert_eq!(get("automounted").await.status, 401, "{mode:?}");
        assert_eq!(get("projected").await.status, 200, "{mode:?}");
    }
    let reviews = kube.token_reviews();
    assert!(
        reviews
            .iter()
            .all(|r| r["spec"]["audiences"] == json!(["authgate"])),
        "every review asks for the gateway's audience: {reviews:?}"
    );
}

#[tokio::test]
async fn logout_tokens_work_once() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "").await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), ALICE).await;
    assert_eq!(journey.status, 200);
    let token = stack.provider.logout_token(oidc::ALICE_SUB, None).await;
    let endpoint = format!("{}/authgate/backchannel-logout", stack.authgate.http_url());
    let post = |token: String| {
        let endpoint = endpoint.clone();
        async move {
            reqwest::Client::new()
                .post(endpoint)
                .form(&[("logout_token", token)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(token.clone()).await, 200);
    assert!(!has_session(&stack, &browser).await, "the logout ended it");

    // Alice logs in again; the captured token, replayed, ends nothing.
    let again = oidc::browser_login(&browser, &stack.url("/"), ALICE).await;
    assert_eq!(again.status, 200);
    assert_eq!(post(token).await, 400, "a replayed logout token is refused");
    assert!(
        has_session(&stack, &browser).await,
        "the new session lives on"
    );
}

#[tokio::test]
async fn a_key_the_provider_withdraws_stops_counting_within_jwks_max_age() {
    let stack = LoginStack::start(ExtAuthz::Grpc, "oidc: {jwks_max_age: 2s}").await;
    let old = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    let (status, _) = bearer_get(&stack, "/x", &old).await;
    assert_eq!(status, 200);
    // The provider withdraws the key that signed `old` (leaked, rotated out).
    stack.provider.rotate_keys().await;
    let fresh = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = bearer_get(&stack, "/x", &old).await;
    assert_eq!(status, 401, "a withdrawn key's token is refused: {body}");
    let (status, _) = bearer_get(&stack, "/x", &fresh).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn browser_pages_for_refused_logins_are_html() {
    let stack = stack(ExtAuthz::Grpc, "", Fixture::default()).await;
    let browser = oidc::browser();
    let journey = oidc::browser_login(&browser, &stack.url("/"), squatter().credentials()).await;
    assert_eq!(journey.status, 403);
    let content_type = journey.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(journey.body.contains("Login refused"), "{}", journey.body);
}

#[tokio::test]
async fn an_extra_issuers_users_are_its_own() {
    // A second provider (a CI issuer, say) that also knows alice@example.com.
    let ci_client = oidc::OidcClient::new(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1:9/cb");
    let ci = oidc::OidcProvider::start(vec![ci_client.clone()]).await;
    let stack = LoginStack::start(
        ExtAuthz::Grpc,
        &format!("oidc: {{extra_issuers: ['{}']}}", ci.issuer()),
    )
    .await;
    let from_login_issuer = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    let from_ci = oidc::id_token_for(&ci, &ci_client, ALICE).await;
    let user_of = |token: String| {
        let url = stack.url("/x");
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            let header = |name: &str| {
                body["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p[0] == name)
                    .map(|p| p[1].as_str().unwrap().to_string())
            };
            let claims = oidc::jwt_claims(&header("x-authgate-identity").unwrap());
            (
                header("kubeflow-userid"),
                header("kubeflow-groups"),
                claims["idp"].clone(),
            )
        }
    };
    let (user, _, idp) = user_of(from_login_issuer).await;
    assert_eq!(user.as_deref(), Some("alice@example.com"));
    assert_eq!(idp, stack.provider.issuer());
    let (user, groups, idp) = user_of(from_ci).await;
    assert_eq!(
        user,
        Some(format!("{}#alice@example.com", ci.issuer())),
        "the same address from another issuer is another user"
    );
    assert_eq!(
        groups,
        Some(format!("{0}#kubeflow-users,{0}#team-a", ci.issuer()))
    );
    assert_eq!(idp, ci.issuer());
}

/// An issuer whose discovery and JWKS requests are counted; its JWKS fails while `failing`.
struct CountingIssuer {
    url: String,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn counting_issuer(failing: bool) -> CountingIssuer {
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let (f1, f2) = (fetches.clone(), fetches.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                f1.fetch_add(1, Ordering::SeqCst);
                let body = discovery.to_string();
                async move { body }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                f2.fetch_add(1, Ordering::SeqCst);
                async move {
                    if failing {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, String::new())
                    } else {
                        (axum::http::StatusCode::OK, r#"{"keys":[]}"#.to_string())
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    CountingIssuer { url, fetches }
}

/// A JWT-shaped token naming `kid` from `issuer` (its signature is junk: the key is unknown).
fn token_with_kid(issuer: &str, kid: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "RS256", "kid": kid})),
        b64(json!({"iss": issuer, "aud": CLIENT_ID, "exp": exp, "email": "x@example.com"}))
    )
}

#[tokio::test]
async fn an_issuer_that_fails_is_asked_at_most_once_per_interval() {
    for failing in [true, false] {
        let issuer = counting_issuer(failing).await;
        let stack = LoginStack::start(
            ExtAuthz::Grpc,
            &format!("oidc: {{extra_issuers: ['{}']}}", issuer.url),
        )
        .await;
        for i in 0..30 {
            let (status, _) = bearer_get(
                &stack,
                "/x",
                &token_with_kid(&issuer.url, &format!("made-up-{i}")),
            )
            .await;
            let expected = if failing { 503 } else { 401 };
            assert_eq!(status, expected, "failing={failing}, token {i}");
        }
        let fetches = issuer.fetches.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            fetches, 2,
            "failing={failing}: one discovery and one JWKS request for 30 made-up kids"
        );
    }
}

#[tokio::test]
async fn a_logout_token_is_no_bearer_credential() {
    // With `user_claim: sub`, a logout token (sub, aud = client id, exp) would otherwise pass
    // for the person it logs out.
    let stack = LoginStack::start(ExtAuthz::Grpc, "oidc: {user_claim: sub}").await;
    let id_token = oidc::id_token_for(&stack.provider, &stack.client, ALICE).await;
    let (status, _) = bearer_get(&stack, "/x", &id_token).await;
    assert_eq!(status, 200, "an ID token is one");
    let logout_token = stack.provider.logout_token(oidc::ALICE_SUB, None).await;
    let (status, body) = bearer_get(&stack, "/x", &logout_token).await;
    assert_eq!(status, 401, "{body}");
}
