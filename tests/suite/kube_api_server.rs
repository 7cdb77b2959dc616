//! The Kubernetes API test server itself, driven through the production kube client: the
//! TokenReview and SubjectAccessReview answers the other tests rely on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::support::kube_api::*;

fn fixture() -> Fixture {
    Fixture {
        tokens: vec![
            TokenEntry {
                token: "alice-token".into(),
                username: "alice@example.com".into(),
                uid: "uid-alice".into(),
                groups: vec!["team-a".into(), "system:authenticated".into()],
                audiences: vec![DEFAULT_AUDIENCE.into(), "authgate".into()],
                extra: BTreeMap::from([("scopes".into(), vec!["openid".into()])]),
                expired: false,
            },
            TokenEntry {
                token: "sa-token".into(),
                username: "system:serviceaccount:kubeflow:pipeline-runner".into(),
                uid: "uid-sa".into(),
                groups: vec!["system:serviceaccounts".into()],
                audiences: vec!["x".into()],
                ..Default::default()
            },
            TokenEntry {
                token: "old-token".into(),
                username: "bob".into(),
                audiences: vec![DEFAULT_AUDIENCE.into()],
                expired: true,
                ..Default::default()
            },
        ],
        rbac: Rbac {
            bindings: vec![
                Binding {
                    namespace: "alice".into(),
                    subject: Subject::User("alice@example.com".into()),
                    rules: vec![PolicyRule {
                        api_groups: vec!["kubeflow.org".into()],
                        resources: vec!["notebooks".into()],
                        verbs: vec!["get".into(), "list".into()],
                    }],
                },
                Binding {
                    namespace: "team".into(),
                    subject: Subject::Group("team-a".into()),
                    rules: vec![PolicyRule {
                        api_groups: vec!["".into()],
                        resources: vec!["pods".into(), "pods/log".into()],
                        verbs: vec!["*".into()],
                    }],
                },
                Binding {
                    namespace: "*".into(),
                    subject: Subject::Group("admins".into()),
                    rules: vec![PolicyRule {
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        verbs: vec!["*".into()],
                    }],
                },
            ],
        },
    }
}

async fn config(api: &KubeApi) -> Config {
    let kubeconfig = Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn client(api: &KubeApi) -> Client {
    Client::try_from(config(api).await).unwrap()
}

async fn review(client: &Client, token: &str, audiences: &[&str]) -> TokenReview {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
}

fn sar(
    user: &str,
    groups: &[&str],
    namespace: &str,
    group: &str,
    resource: &str,
    sub: &str,
    verb: &str,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: (!sub.is_empty()).then(|| sub.into()),
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn check(client: &Client, review: &SubjectAccessReview) -> (bool, Option<String>) {
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), review)
        .await
        .unwrap();
    let status = answer.status.unwrap();
    assert_eq!(status.denied, None);
    (status.allowed, status.reason)
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn token_review_authenticates_with_default_audience() {
    let api = KubeApi::start(fixture()).await;
    let answer = review(&client(&api).await, "alice-token", &[]).await;
    let status = answer.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.audiences, Some(vec![DEFAULT_AUDIENCE.to_string()]));
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice@example.com"));
    assert_eq!(user.uid.as_deref(), Some("uid-alice"));
    assert_eq!(user.groups.unwrap(), vec!["team-a", "system:authenticated"]);
    assert_eq!(user.extra.unwrap()["scopes"], vec!["openid"]);
    assert_eq!(answer.spec.token, "alice-token");

    let recorded = api.token_reviews();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["kind"], "TokenReview");
    assert_eq!(recorded[0]["spec"]["token"], "alice-token");
}

#[tokio::test]
async fn token_review_returns_audience_intersection() {
    let api = KubeApi::start(fixture()).await;
    let status = review(&client(&api).await, "alice-token", &["authgate", "other"])
        .await
        .status
        .unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.audiences, Some(vec!["authgate".to_string()]));
}

#[tokio::test]
async fn token_review_rejects_unknown_wrong_audience_and_expired() {
    let api = KubeApi::start(fixture()).await;
    let client = client(&api).await;

    let unknown = review(&client, "nope", &["authgate"]).await.status.unwrap();
    assert_eq!(unknown.authenticated, Some(false));
    assert!(unknown.user.is_none());
    assert!(unknown.error.unwrap().starts_with("[invalid bearer token"));

    let wrong = review(&client, "sa-token", &["y", "z"])
        .await
        .status
        .unwrap();
    assert_eq!(wrong.authenticated, Some(false));
    assert_eq!(
        wrong.error.as_deref(),
        Some(
            r#"[invalid bearer token, token audiences ["x"] is invalid for the target audiences ["y" "z"]]"#
        )
    );

    api.set_fixture(Fixture {
        tokens: vec![TokenEntry {
            token: "legacy".into(),
            username: "legacy".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        review(&client, "legacy", &[])
            .await
            .status
            .unwrap()
            .authenticated,
        Some(true)
    );
    assert_eq!(
        review(&client, "legacy", &["authgate"])
            .await
            .status
            .unwrap()
            .authenticated,
        Some(false)
    );
    api.set_fixture(fixture());

    let default_aud = review(&client, "sa-token", &[]).await.status.unwrap();
    assert_eq!(default_aud.authenticated, Some(false));

    let expired = review(&client, "old-token", &[]).await.status.unwrap();
    assert_eq!(expired.authenticated, Some(false));
    assert!(expired.error.unwrap().contains("token has expired"));
    assert_eq!(api.token_reviews().len(), 6);
}

#[tokio::test]
async fn empty_token_is_a_bad_request() {
    let api = KubeApi::start(fixture()).await;
    let review = TokenReview::default();
    let err = Api::<TokenReview>::all(client(&api).await)
        .create(&PostParams::default(), &review)
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 400);
}

#[tokio::test]
async fn access_review_follows_rbac() {
    let api = KubeApi::start(fixture()).await;
    let client = client(&api).await;

    let (allowed, reason) = check(
        &client,
        &sar(
            "alice@example.com",
            &[],
            "alice",
            "kubeflow.org",
            "notebooks",
            "",
            "list",
        ),
    )
    .await;
    assert!(allowed);
    assert_eq!(
        reason.as_deref(),
        Some(
            r#"RBAC: allowed by RoleBinding "binding-0/alice" of Role "role-0" to User "alice@example.com""#
        )
    );
    assert!(
        !check(
            &client,
            &sar(
                "alice@example.com",
                &[],
                "alice",
                "kubeflow.org",
                "notebooks",
                "",
                "delete"
            )
        )
        .await
        .0
    );
    assert!(
        !check(
            &client,
            &sar(
                "alice@example.com",
                &[],
                "bob",
                "kubeflow.org",
                "notebooks",
                "",
                "get"
            )
        )
        .await
        .0
    );
    assert!(
        !check(
            &client,
            &sar(
                "alice@example.com",
                &[],
                "alice",
                "",
                "notebooks",
                "",
                "get"
            )
        )
        .await
        .0
    );

    let (allowed, reason) = check(
        &client,
        &sar("carol", &["team-a"], "team", "", "pods", "log", "get"),
    )
    .await;
    assert!(allowed);
    assert!(reason.unwrap().ends_with(r#"to Group "team-a""#));
    assert!(
        !check(
            &client,
            &sar("carol", &["team-a"], "team", "", "pods", "exec", "create")
        )
        .await
        .0
    );
    assert!(
        !check(
            &client,
            &sar("carol", &["team-b"], "team", "", "pods", "", "get")
        )
        .await
        .0
    );

    let (allowed, reason) = check(
        &client,
        &sar(
            "root",
            &["admins"],
            "anywhere",
            "apps",
            "deployments",
            "",
            "delete",
        ),
    )
    .await;
    assert!(allowed);
    assert!(
        reason
            .unwrap()
            .starts_with(r#"RBAC: allowed by ClusterRoleBinding "binding-2""#)
    );

    let (allowed, reason) = check(
        &client,
        &sar(
            "nobody",
            &[],
            "alice",
            "kubeflow.org",
            "notebooks",
            "",
            "get",
        ),
    )
    .await;
    assert!(!allowed);
    assert_eq!(reason, None);

    let recorded = api.access_reviews();
    assert_eq!(recorded.len(), 9);
    assert_eq!(
        recorded[0]["spec"]["resourceAttributes"]["namespace"],
        "alice"
    );
}

#[tokio::test]
async fn access_review_validates_like_the_apiserver() {
    let api = KubeApi::start(fixture()).await;
    let client = client(&api).await;
    let mut no_subject = sar("", &[], "alice", "", "pods", "", "get");
    no_subject.spec.groups = None;
    let err = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &no_subject)
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 422);

    let mut non_resource = sar("root", &["admins"], "", "", "", "", "get");
    non_resource.spec.resource_attributes = None;
    non_resource.spec.non_resource_attributes = Some(NonResourceAttributes {
        path: Some("/healthz".into()),
        verb: Some("get".into()),
    });
    assert!(!check(&client, &non_resource).await.0);
}

#[tokio::test]
async fn set_fixture_replaces_tokens_and_rbac() {
    let api = KubeApi::start(fixture()).await;
    let client = client(&api).await;
    assert_eq!(
        review(&client, "alice-token", &[])
            .await
            .status
            .unwrap()
            .authenticated,
        Some(true)
    );
    api.set_fixture(Fixture::default());
    assert_eq!(
        review(&client, "alice-token", &[])
            .await
            .status
            .unwrap()
            .authenticated,
        Some(false)
    );
    assert!(
        !check(
            &client,
            &sar("root", &["admins"], "x", "", "pods", "", "get")
        )
        .await
        .0
    );
}

#[tokio::test]
async fn down_answers_503_status() {
    let api = KubeApi::start(fixture()).await;
    let mut config = config(&api).await;
    config.default_retry = false;
    let client = Client::try_from(config).unwrap();
    api.set_down(true);
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "alice-token".into(),
            audiences: None,
        },
        ..Default::default()
    };
    let err = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error")
    };
    assert_eq!(status.code, 503);
    assert_eq!(status.reason, "ServiceUnavailable");
    api.set_down(false);
    assert_eq!(
        Api::<TokenReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .unwrap()
            .status
            .unwrap()
            .authenticated,
        Some(true)
    );
}

#[tokio::test]
async fn default_client_retries_503() {
    let api = KubeApi::start(fixture()).await;
    let client = client(&api).await;
    api.set_down(true);
    let attempt = tokio::time::timeout(
        Duration::from_millis(500),
        review(&client, "alice-token", &[]),
    )
    .await;
    assert!(
        attempt.is_err(),
        "kube's default retry layer keeps retrying a 503"
    );
    assert!(api.token_reviews().len() > 1);
}

#[tokio::test]
async fn delay_trips_client_read_timeout() {
    let api = KubeApi::start(fixture()).await;
    let mut config = config(&api).await;
    config.read_timeout = Some(Duration::from_millis(200));
    let client = Client::try_from(config).unwrap();
    api.set_delay(Duration::from_secs(2));
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "alice-token".into(),
            audiences: None,
        },
        ..Default::default()
    };
    let started = Instant::now();
    let result = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await;
    assert!(result.is_err());
    assert!(!matches!(result, Err(kube::Error::Api(_))));
    assert!(started.elapsed() < Duration::from_secs(2));
    api.set_delay(Duration::ZERO);
    assert!(
        Api::<TokenReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_caller_token_is_unauthorized() {
    let api = KubeApi::start(fixture()).await;
    let mut kubeconfig = Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    kubeconfig.auth_infos[0].auth_info.as_mut().unwrap().token =
        Some("not-the-caller".to_string().into());
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: "alice-token".into(),
            audiences: None,
        },
        ..Default::default()
    };
    let err = Api::<TokenReview>::all(client)
        .create(&PostParams::default(), &review)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error")
    };
    assert_eq!(status.code, 401);
    assert_eq!(status.message, "Unauthorized");
    assert!(api.token_reviews().is_empty());
    assert!(!api.caller_token().is_empty());
}

#[tokio::test]
async fn other_paths_are_not_found() {
    let api = KubeApi::start(fixture()).await;
    let err = Api::<Pod>::namespaced(client(&api).await, "default")
        .get("x")
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 404);
    assert!(api.url().starts_with("https://127.0.0.1:"));
}
