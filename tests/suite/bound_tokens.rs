//! The bound-token policy (what a stolen service-account token is worth), through Envoy with
//! realistic projected-token JWTs: refusals happen before any TokenReview, a legitimate
//! projected token still works, and its pod binding reaches the signed identity and the review.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::support;
use crate::support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token shaped like the API server's: the fake API server knows it by its text, authgate
/// reads its claims. (Signature checking is the API server's job, in the TokenReview.)
fn jwt(claims: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"test-key"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

fn projected(aud: &str, lifetime: u64) -> String {
    let iat = now() - 60;
    jwt(serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:team-a:pipeline-runner",
        "aud": [aud],
        "iat": iat,
        "nbf": iat,
        "exp": iat + lifetime,
        "kubernetes.io": {
            "namespace": "team-a",
            "pod": {"name": "run-1-pod", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "pipeline-runner", "uid": "sa-uid-1"}
        }
    }))
}

fn entry(token: &str) -> TokenEntry {
    let mut e = sa_token(
        token,
        "team-a",
        "pipeline-runner",
        &[KFP_AUDIENCE, DEFAULT_AUDIENCE],
    );
    e.extra = BTreeMap::from([
        (
            "authentication.kubernetes.io/pod-name".into(),
            vec!["run-1-pod".into()],
        ),
        (
            "authentication.kubernetes.io/pod-uid".into(),
            vec!["pod-uid-1".into()],
        ),
        (
            "authentication.kubernetes.io/credential-id".into(),
            vec!["JTI=abc".into()],
        ),
    ]);
    e
}

const DEFAULT_AUDIENCE: &str = support::kube_api::DEFAULT_AUDIENCE;

#[tokio::test]
async fn only_bound_expiring_tokens_for_our_audience_are_reviewed() {
    let good = projected(KFP_AUDIENCE, 7200);
    let default_audience = projected(DEFAULT_AUDIENCE, 3600);
    let too_long = projected(KFP_AUDIENCE, 400 * 24 * 3600);
    let legacy = jwt(serde_json::json!({
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:team-a:pipeline-runner",
        "kubernetes.io/serviceaccount/namespace": "team-a",
    }));
    let no_exp = jwt(serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:team-a:pipeline-runner",
        "aud": [KFP_AUDIENCE],
    }));
    let opaque = "an-opaque-token-from-somewhere";
    let fixture = Fixture {
        tokens: [
            &good,
            &default_audience,
            &too_long,
            &legacy,
            &no_exp,
            &opaque.to_string(),
        ]
        .iter()
        .map(|t| entry(t))
        .collect(),
        rbac: Rbac { bindings: vec![] },
    };
    // The policy as it ships (require_bound) plus a lifetime limit, overriding the harness.
    let kube = KubeApi::start(fixture).await;
    let yaml = config_yaml(
        kube.kubeconfig_path(),
        "kubernetes: {token_review: {require_bound: true, max_lifetime: 48h}}",
    );
    let authgate = Authgate::start(&yaml).await;
    let (upstream, _) = echo::start_echo().await;
    let envoy = Envoy::start(ExtAuthz::Grpc, authgate.running.grpc_addr, upstream).await;
    let get = |token: String| {
        let addr = envoy.addr();
        async move {
            raw_http(
                addr,
                &format!("GET /api/x HTTP/1.1\r\nHost: kubeflow.example.com\r\nAuthorization: Bearer {token}\r\n"),
            )
            .await
        }
    };

    for (token, why) in [
        (legacy, "legacy"),
        (no_exp, "without an expiry"),
        (opaque.to_string(), "not a JWT"),
        (too_long, "lives longer"),
        (default_audience, "audiences"),
    ] {
        let response = get(token).await;
        assert_eq!(response.status, 401, "{why}: {response:?}");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(why), "the 401 says why ({why}): {message}");
    }
    assert!(
        kube.token_reviews().is_empty(),
        "refused tokens cost the API server nothing"
    );

    // A legitimate projected token works, and its pod binding travels with the identity.
    let response = get(good).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(kube.token_reviews().len(), 1);
    let jwt = response.upstream_header("x-authgate-identity").unwrap();
    let jwks = reqwest::get(format!("{}/authgate/jwks.json", authgate.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let claims = verify_identity_jwt(&jwt, &jwks, "kubeflow.example.com");
    assert_eq!(
        claims["extra"]["authentication.kubernetes.io/pod-name"][0],
        "run-1-pod"
    );
    // The rest of the review's `extra` only when `identity.jwt.extra` asks for it.
    assert!(
        claims["extra"]["authentication.kubernetes.io/credential-id"].is_null(),
        "{claims}"
    );
}

#[test]
fn the_policy_is_on_by_default() {
    let settings =
        authgate::settings::Settings::from_yaml("public_url: https://kf.example.com").unwrap();
    assert!(settings.config().kubernetes.token_review.require_bound);
}
