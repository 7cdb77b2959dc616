//! Namespace authorization through a real Envoy: every rule of the Kubeflow preset, RBAC answers
//! from the Kubernetes API test server, the bypass corpus, caching, and failing closed.

use authgate::authz::rules::verb_for_method;
use authgate::config::{Config, RuleConfig};
use futures::StreamExt;

use crate::support;
use crate::support::*;

const ALICE: &str = "token-alice"; // team-a editor, bound per rule of the preset
const BOB: &str = "token-bob"; // same permissions, but only in team-b
const CAROL: &str = "token-carol"; // member of a group bound in team-a
const ADMIN: &str = "token-admin"; // cluster-wide: profiles, pipelines in any namespace

fn preset() -> Config {
    kubeflow_preset().config().clone()
}

/// The preset's rules as extra YAML for the test config (everything but listen/kube settings).
fn preset_yaml() -> String {
    let config = preset();
    serde_yaml::to_string(&serde_json::json!({
        "authorization": config.authorization,
        "api_routes": config.api_routes,
    }))
    .unwrap()
}

/// A sample request for a rule: placeholders filled, the namespace wherever the rule reads it.
struct Sample {
    method: String,
    target: String,
    headers: Vec<String>,
    verb: String,
}

/// `None` for rules that review no namespace (cluster-scoped: tested on their own) and rules
/// that review nothing (`allow`, `deny`).
fn sample(rule: &RuleConfig, namespace: &str) -> Option<Sample> {
    let resource = rule.resource.as_ref()?;
    if !rule.path.contains("{namespace}") && rule.namespace.is_none() {
        return None;
    }
    let mut path = String::new();
    let mut has_name = false;
    for seg in rule.path.trim_start_matches('/').split('/') {
        let mut filled = match seg {
            "**" => "deeper/path".to_string(),
            "*" => "any".to_string(),
            s => s.to_string(),
        };
        // Placeholders, whole segments or inside one (`viewer-{viewer}-service.{namespace}…`).
        while let Some(start) = filled.find('{') {
            let end = start + filled[start..].find('}').expect("closed placeholder");
            let placeholder = filled[start..=end].to_string();
            let value = if placeholder == "{namespace}" {
                namespace.to_string()
            } else {
                if resource.name == placeholder {
                    has_name = true;
                }
                format!("{}-obj", placeholder.trim_matches(['{', '}']))
            };
            filled.replace_range(start..=end, &value);
        }
        path.push('/');
        path.push_str(&filled);
    }
    if !resource.name.is_empty() && !resource.name.starts_with('{') {
        has_name = true;
    }
    let method = rule
        .methods
        .first()
        .cloned()
        .unwrap_or_else(|| "GET".into());
    let mut query: Vec<String> = rule.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = Vec::new();
    if let Some(ns) = &rule.namespace {
        if let Some(q) = &ns.query {
            query.push(format!("{q}={namespace}"));
        }
        if let Some(h) = &ns.header {
            headers.push(format!("{h}: {namespace}"));
        }
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let verb = if resource.verb.is_empty() {
        let parsed = authgate::request::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .expect("the preset names methods");
        verb_for_method(&parsed, has_name)?.to_string()
    } else {
        resource.verb.clone()
    };
    Some(Sample {
        method,
        target: path,
        headers,
        verb,
    })
}

fn resource_name(rule: &RuleConfig) -> (String, String) {
    let r = rule.resource.as_ref().unwrap();
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    (r.group.clone(), resource)
}

/// Alice and Bob get exactly the permission each rule needs — Alice in team-a, Bob in team-b.
fn fixture(config: &Config) -> Fixture {
    let mut bindings = Vec::new();
    for rule in &config.authorization.rules {
        let Some(sample) = sample(rule, "team-a") else {
            continue;
        };
        let (group, resource) = resource_name(rule);
        for (ns, user) in [("team-a", "alice"), ("team-b", "bob")] {
            bindings.push(Binding {
                namespace: ns.into(),
                subject: Subject::User(format!("system:serviceaccount:{ns}:{user}")),
                rules: vec![PolicyRule {
                    api_groups: vec![group.clone()],
                    resources: vec![resource.clone()],
                    verbs: vec![sample.verb.clone()],
                }],
            });
        }
    }
    bindings.push(Binding {
        namespace: "team-a".into(),
        subject: Subject::Group("data-scientists".into()),
        rules: vec![PolicyRule {
            api_groups: vec!["kubeflow.org".into()],
            resources: vec!["notebooks".into()],
            verbs: vec!["get".into()],
        }],
    });
    let mut carol = sa_token(CAROL, "team-c", "carol", &[KFP_AUDIENCE]);
    carol.groups.push("data-scientists".into());
    carol.extra.insert(
        "authentication.kubernetes.io/pod-name".into(),
        vec!["carol-pod".into()],
    );
    // A platform admin: cluster-wide rights for the preset's cluster-scoped rules and the
    // `kubeflow` namespace (shared pipelines).
    bindings.push(Binding {
        namespace: "*".into(),
        subject: Subject::User("system:serviceaccount:kubeflow:admin".into()),
        rules: vec![
            PolicyRule {
                api_groups: vec!["kubeflow.org".into()],
                resources: vec!["profiles".into()],
                verbs: vec!["list".into(), "create".into()],
            },
            PolicyRule {
                api_groups: vec!["pipelines.kubeflow.org".into()],
                resources: vec!["pipelines".into()],
                verbs: vec!["create".into()],
            },
        ],
    });
    Fixture {
        tokens: vec![
            sa_token(ALICE, "team-a", "alice", &[KFP_AUDIENCE]),
            sa_token(BOB, "team-b", "bob", &[KFP_AUDIENCE]),
            sa_token(ADMIN, "kubeflow", "admin", &[KFP_AUDIENCE]),
            carol,
        ],
        rbac: Rbac { bindings },
    }
}

async fn send(
    stack: &Stack,
    method: &str,
    target: &str,
    token: &str,
    extra: &[String],
) -> RawResponse {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: kubeflow.example.com\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    stack.raw(&head).await
}

#[tokio::test]
async fn every_preset_rule_allows_its_permission_and_denies_other_namespaces() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Grpc, fixture(&config), &preset_yaml()).await;
    let mut checked = 0;
    for rule in &config.authorization.rules {
        let Some(sample) = sample(rule, "team-a") else {
            continue;
        };
        let before = stack.kube.access_reviews().len();
        let allowed = send(
            &stack,
            &sample.method,
            &sample.target,
            ALICE,
            &sample.headers,
        )
        .await;
        assert_eq!(
            allowed.status, 200,
            "rule {:?}: alice must pass {} {}: {allowed:?}",
            rule.name, sample.method, sample.target
        );
        // One review, or none when an earlier rule already asked the very same question.
        let reviews = stack.kube.access_reviews();
        assert!(
            reviews.len() <= before + 1,
            "rule {:?}: at most one review",
            rule.name
        );
        if reviews.len() == before + 1 {
            let attrs = &reviews.last().unwrap()["spec"]["resourceAttributes"];
            let (group, _) = resource_name(rule);
            assert_eq!(attrs["namespace"], "team-a", "rule {:?}", rule.name);
            assert_eq!(attrs["group"], group.as_str(), "rule {:?}", rule.name);
            assert_eq!(attrs["verb"], sample.verb.as_str(), "rule {:?}", rule.name);
        }

        let denied = send(&stack, &sample.method, &sample.target, BOB, &sample.headers).await;
        assert_eq!(
            denied.status, 403,
            "rule {:?}: bob must not pass: {denied:?}",
            rule.name
        );
        let body = denied.json();
        assert_eq!(body["namespace"], "team-a", "rule {:?}", rule.name);
        assert!(
            body["message"].as_str().unwrap().contains("team-a"),
            "the denial names the namespace: {body}"
        );
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} rules were exercised");
}

#[tokio::test]
async fn a_role_bound_to_a_group_grants_access_and_the_review_carries_the_identity() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Http, fixture(&config), &preset_yaml()).await;
    let ok = send(&stack, "GET", "/notebook/team-a/nb1/lab", CAROL, &[]).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let review = stack.kube.access_reviews().pop().unwrap();
    let spec = &review["spec"];
    assert_eq!(spec["user"], "system:serviceaccount:team-c:carol");
    assert!(
        spec["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "data-scientists")
    );
    assert_eq!(spec["uid"], "uid-carol");
    assert_eq!(
        spec["extra"]["authentication.kubernetes.io/pod-name"][0],
        "carol-pod"
    );
    assert_eq!(spec["resourceAttributes"]["name"], "nb1");
    assert_eq!(spec["resourceAttributes"]["resource"], "notebooks");
    let denied = send(&stack, "GET", "/notebook/team-b/nb1/lab", CAROL, &[]).await;
    assert_eq!(denied.status, 403);
}

/// Ways to reach team-a's artifacts or notebooks as Bob (whose rights are in team-b only).
const BYPASSES: &[&str] = &[
    "/pipeline/artifacts/get?source=minio&bucket=mlpipeline&key=team-a/run/x",
    "/pipeline/artifacts/get?source=minio&namespace=",
    "/pipeline/artifacts/get?namespace=team-b&namespace=team-a",
    "/pipeline/artifacts/get?namespace=team-a&namespace=team-b",
    "/pipeline/artifacts/get?namespace=team-b%26namespace%3Dteam-a",
    "/pipeline/artifacts/get?Namespace=team-b",
    "/pipeline/artifacts/get?namespace=TEAM-A",
    "/pipeline/artifacts/get?namespace=team-a",
    "/pipeline/artifacts/get?name%73pace=team-a",
    "/PIPELINE/artifacts/get?namespace=team-a",
    "/pipeline/Artifacts/get?source=minio",
    "/pipeline;x/artifacts/get?source=minio",
    "/pipeline//artifacts/get?source=minio",
    "/pipeline/./artifacts/get?source=minio",
    "/pipeline/x/../artifacts/get?source=minio",
    "/pipeline/%61rtifacts/get?source=minio",
    "/pipeline/artifacts%2Fget?namespace=team-b",
    "/pipeline/artifacts/get%00?namespace=team-b",
    "/notebook/team-a/nb1/lab",
    "/notebook/team-a/nb1",
    "/Notebook/team-a/nb1/lab",
    "/notebook//team-a/nb1/lab",
    "/notebook/team-b/../team-a/nb1/lab",
    "/notebook/team-b/..%2F..%2Fteam-a/nb1/lab",
    "/notebook/%74eam-a/nb1/lab",
    "/notebook/team-a;x/nb1/lab",
    "/notebook/team-a%3Bx/nb1/lab",
    "/jupyter/api/namespaces/team-a/notebooks",
    "/jupyter/api/namespaces/team-a/notebooks?namespace=team-b",
];

#[tokio::test]
async fn the_bypass_corpus_is_denied_in_both_modes_and_with_raw_paths() {
    let config = preset();
    for (mode, normalize) in [
        (ExtAuthz::Grpc, true),
        (ExtAuthz::Http, true),
        (ExtAuthz::Grpc, false),
    ] {
        let kube = KubeApi::start(fixture(&config)).await;
        let authgate = Authgate::start(&config_yaml(kube.kubeconfig_path(), &preset_yaml())).await;
        let (upstream, _) = support::echo::start_echo().await;
        let options = support::envoy::Options {
            normalize_path: normalize,
            status_on_error: Some(503),
            ..Default::default()
        };
        let envoy = Envoy::start_with(mode, authgate.authz_addr(mode), upstream, options).await;
        for target in BYPASSES {
            let head = format!(
                "GET {target} HTTP/1.1\r\nHost: kubeflow.example.com\r\nAuthorization: Bearer {BOB}\r\n"
            );
            let response = raw_http(envoy.addr(), &head).await;
            assert!(
                matches!(response.status, 400 | 403),
                "{mode:?} normalize={normalize} {target}: {response:?}"
            );
        }
    }
}

#[tokio::test]
async fn missing_namespace_is_refused_without_asking_kubernetes() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Grpc, fixture(&config), &preset_yaml()).await;
    let response = send(
        &stack,
        "GET",
        "/pipeline/artifacts/get?source=minio&key=x",
        ALICE,
        &[],
    )
    .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("names no namespace")
    );
    assert!(stack.kube.access_reviews().is_empty());
}

#[tokio::test]
async fn browsers_get_a_short_page_naming_what_was_missing() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Grpc, fixture(&config), &preset_yaml()).await;
    let response = send(
        &stack,
        "GET",
        "/notebook/team-a/nb1/lab",
        BOB,
        &["Accept: text/html,application/xhtml+xml".into()],
    )
    .await;
    assert_eq!(response.status, 403);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        response.body.contains("team-a") && response.body.contains("notebooks"),
        "{}",
        response.body
    );
    assert!(!response.body.contains("<script"), "messages are escaped");
}

#[tokio::test]
async fn a_thousand_identical_requests_cost_one_review() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Grpc, fixture(&config), &preset_yaml()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/notebook/team-a/nb1/lab", stack.envoy.url());
    let statuses: Vec<u16> = futures::stream::iter(0..1000)
        .map(|_| {
            client
                .get(&url)
                .header("host", "kubeflow.example.com")
                .bearer_auth(ALICE)
                .send()
        })
        .buffer_unordered(32)
        .map(|r| r.expect("request").status().as_u16())
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(stack.kube.access_reviews().len(), 1);
}

#[tokio::test]
async fn kubernetes_down_is_503_but_cached_answers_still_apply() {
    let config = preset();
    let stack = Stack::start(ExtAuthz::Grpc, fixture(&config), &preset_yaml()).await;
    let cached = send(&stack, "GET", "/notebook/team-a/nb1/lab", ALICE, &[]).await;
    assert_eq!(cached.status, 200);
    stack.kube.set_down(true);
    let again = send(&stack, "GET", "/notebook/team-a/nb1/lab", ALICE, &[]).await;
    assert_eq!(
        again.status, 200,
        "a cached allow within its TTL still applies"
    );
    let uncached = send(&stack, "GET", "/notebook/team-a/nb2/lab", ALICE, &[]).await;
    assert_eq!(uncached.status, 503, "{uncached:?}");
    stack.kube.set_down(false);
    let recovered = send(&stack, "GET", "/notebook/team-a/nb2/lab", ALICE, &[]).await;
    assert_eq!(recovered.status, 200);
}

#[tokio::test]
async fn default_deny_refuses_paths_no_rule_covers() {
    let kube = KubeApi::start(fixture(&preset())).await;
    let authgate = Authgate::start(&config_yaml(
        kube.kubeconfig_path(),
        "authorization:\n  default: deny\n  rules:\n  - {name: home, path: /home/**, allow: true}\n",
    ))
    .await;
    let (upstream, _) = support::echo::start_echo().await;
    let envoy = Envoy::start(ExtAuthz::Grpc, authgate.running.grpc_addr, upstream).await;
    let get = |path: &'static str| {
        let addr = envoy.addr();
        async move {
            raw_http(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {ALICE}\r\n"),
            )
            .await
        }
    };
    assert_eq!(get("/home/x").await.status, 200);
    assert_eq!(get("/other").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_rule_the_review_and_the_live_answer() {
    let config = preset();
    let kube = KubeApi::start(fixture(&config)).await;
    let preset_file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kubeflow.yaml");
    let run = |user: &str, url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args([
                "explain",
                "--config",
                preset_file,
                "--user",
                user,
                "--kubeconfig",
            ])
            .arg(kube.kubeconfig_path())
            .args(["GET", url])
            .env_remove("AUTHGATE_CONFIG")
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| {
        run(
            "system:serviceaccount:team-a:alice",
            "https://kubeflow.example.com/notebook/team-a/nb1/lab",
        )
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("rule:            \"notebook-server\""),
        "{text}"
    );
    assert!(text.contains("\"resource\": \"notebooks\""), "{text}");
    assert!(text.contains("live answer:     allowed"), "{text}");
    let out = tokio::task::block_in_place(|| {
        run(
            "system:serviceaccount:team-b:bob",
            "/notebook/team-a/nb1/lab",
        )
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("live answer:     denied"));
}

/// The KFP API behind the preset, read as grpc-gateway reads it (issue 14), in both modes and
/// for the KFP releases of Kubeflow 1.9/1.10 (grpc-gateway v1: the first of two values wins,
/// `key[value]` is a value, enums by name or number): each request below reaches the API
/// server with a namespace Bob has no rights in, or none, unless the gateway stops it.
#[tokio::test]
async fn the_kfp_api_is_read_as_grpc_gateway_reads_it() {
    let config = preset();
    let runs_v1 = "/pipeline/apis/v1beta1/runs";
    let junk = "filter=x&".repeat(120);
    // (method, target, extra header lines, status for Bob)
    let cases: Vec<(&str, String, Vec<String>, u16)> = vec![
        // An empty last segment is an empty namespace to grpc-gateway: refused, unreviewed.
        (
            "POST",
            "/pipeline/apis/v1beta1/visualizations/".into(),
            vec![],
            400,
        ),
        (
            "POST",
            "/pipeline/apis/v1beta1/visualizations/team-a".into(),
            vec![],
            403,
        ),
        // NAMESPACE by number, in the spellings strconv.Atoi accepts.
        (
            "GET",
            format!("{runs_v1}?resource_reference_key.type=5&resource_reference_key.id=team-a"),
            vec![],
            403,
        ),
        (
            "GET",
            format!("{runs_v1}?resource_reference_key.type=05&resource_reference_key.id=team-a"),
            vec![],
            403,
        ),
        (
            "GET",
            format!("{runs_v1}?resourceReferenceKey.type=%2B5&resourceReferenceKey.id=team-a"),
            vec![],
            403,
        ),
        // Proto and JSON names are one parameter; two values are ambiguous.
        (
            "GET",
            format!(
                "{runs_v1}?resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-b&resourceReferenceKey.id=team-a"
            ),
            vec![],
            403,
        ),
        (
            "GET",
            format!(
                "{runs_v1}?resourceReferenceKey.type=NAMESPACE&resource_reference_key.id=team-a"
            ),
            vec![],
            403,
        ),
        // `id[team-a]=` is the value team-a to grpc-gateway v1.
        (
            "GET",
            format!(
                "{runs_v1}?resource_reference_key.type=NAMESPACE&resource_reference_key.id[team-a]="
            ),
            vec![],
            400,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/runs?namespace%5B%5D=team-a".into(),
            vec![],
            400,
        ),
        // Optional namespaces: named, reviewed; left out (or empty), the API server checks.
        (
            "GET",
            "/pipeline/apis/v2beta1/runs?namespace=team-a".into(),
            vec![],
            403,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/runs?namespace=team-b".into(),
            vec![],
            200,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/runs?experiment_id=e1".into(),
            vec![],
            200,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/recurringruns?namespace=team-a".into(),
            vec![],
            403,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/pipelines?namespace=team-a".into(),
            vec![],
            403,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/pipelines?namespace=".into(),
            vec![],
            200,
        ),
        (
            "GET",
            "/pipeline/apis/v2beta1/pipelines".into(),
            vec![],
            200,
        ),
        // A form-encoded POST runs another method's handler with the body's parameters, and
        // the method-override header runs the GET handler of a POST.
        (
            "POST",
            "/pipeline/apis/v2beta1/experiments".into(),
            vec!["Content-Type: application/x-www-form-urlencoded".into()],
            400,
        ),
        (
            "POST",
            "/pipeline/apis/v2beta1/experiments?namespace=team-a".into(),
            vec!["X-HTTP-Method-Override: GET".into()],
            400,
        ),
        // A custom verb after `:` is nothing to the list route; an enum number is 32 bits.
        (
            "GET",
            "/pipeline/apis/v2beta1/experiments:?namespace=team-a".into(),
            vec![],
            403,
        ),
        (
            "GET",
            format!(
                "{runs_v1}%3A?resource_reference_key.type=4294967301&resource_reference_key.id=team-a"
            ),
            vec![],
            403,
        ),
        // Past a bound far below Express's 1,000 parameters, a rule that reads the query refuses.
        (
            "GET",
            format!("/pipeline/artifacts/get?{junk}namespace=team-b"),
            vec![],
            400,
        ),
        (
            "GET",
            "/pipeline/artifacts/get?namespace=team-b".into(),
            vec![],
            200,
        ),
    ];
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, fixture(&config), &preset_yaml()).await;
        for (method, target, headers, want) in &cases {
            let before = stack.kube.access_reviews().len();
            let response = send(&stack, method, target, BOB, headers).await;
            assert_eq!(
                response.status, *want,
                "{mode:?} {method} {target}: {response:?}"
            );
            if *want == 400 {
                assert_eq!(
                    stack.kube.access_reviews().len(),
                    before,
                    "{target}: reviewed"
                );
            }
        }
        // Alice, whose namespace it is, passes with the number spelling too.
        let alice = send(
            &stack,
            "GET",
            &format!("{runs_v1}?resource_reference_key.type=5&resource_reference_key.id=team-a"),
            ALICE,
            &[],
        )
        .await;
        assert_eq!(alice.status, 200, "{mode:?}: {alice:?}");
    }
}

/// What the Kubeflow apps leave open (issue 16), closed by the preset, in both modes: the KFP
/// UI's open proxy (path and Referer forms), MLMD writes, the dashboard's unchecked KFAM routes,
/// shared-pipeline uploads, and artifact links whose key names the namespace.
#[tokio::test]
async fn the_preset_closes_what_the_apps_leave_open() {
    let config = preset();
    let viewer = "/pipeline/apis/v1beta1/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:80/tensorboard/viewer-0a1b/";
    let referer = |r: &str| vec![format!("Referer: {r}")];
    // (who, method, target, extra header lines, status)
    let cases: Vec<(&str, &str, String, Vec<String>, u16)> = vec![
        (ALICE, "GET", viewer.into(), vec![], 200),
        (BOB, "GET", viewer.into(), vec![], 403),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v1beta1/_proxy/169.254.169.254/latest/meta-data/".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v1beta1/_proxy/http%3A%2F%2Fevil.example/".into(),
            vec![],
            400,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v2beta1/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:80/".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v1beta1/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:8080/"
                .into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v1beta1/healthz".into(),
            referer("https://kubeflow.example.com/pipeline/apis/v1beta1/_proxy/169.254.169.254/"),
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/static/main.js".into(),
            // Anywhere in the Referer (the UI tests `indexOf`); Envoy drops one with a fragment.
            referer(
                "https://kubeflow.example.com/pipeline/runs?x=/apis/v1beta1/_proxy/evil.example",
            ),
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/apis/v1beta1/healthz".into(),
            referer("https://kubeflow.example.com/pipeline/"),
            200,
        ),
        // MLMD: reads open, writes closed.
        (
            ALICE,
            "POST",
            "/ml_metadata.MetadataStoreService/GetArtifacts".into(),
            vec![],
            200,
        ),
        (
            ALICE,
            "POST",
            "/ml_metadata.MetadataStoreService/PutArtifacts".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "POST",
            "/ml_metadata.MetadataStoreService/putExecution".into(),
            vec![],
            403,
        ),
        // The dashboard's routes KFAM answers without a check.
        (
            ALICE,
            "GET",
            "/api/workgroup/get-all-namespaces".into(),
            vec![],
            403,
        ),
        (
            ADMIN,
            "GET",
            "/api/workgroup/get-all-namespaces".into(),
            vec![],
            200,
        ),
        (ALICE, "POST", "/api/workgroup/create".into(), vec![], 403),
        (ADMIN, "POST", "/api/workgroup/create".into(), vec![], 200),
        (
            BOB,
            "GET",
            "/api/workgroup/get-contributors/team-a".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "GET",
            "/kfam/v1/bindings?namespace=team-b".into(),
            vec![],
            403,
        ),
        // Shared pipelines: an upload without a namespace needs the right in `kubeflow`.
        (
            ALICE,
            "POST",
            "/pipeline/apis/v1beta1/pipelines/upload?name=p".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "POST",
            "/pipeline/apis/v1beta1/pipelines/upload?name=p&namespace=".into(),
            vec![],
            403,
        ),
        (
            ADMIN,
            "POST",
            "/pipeline/apis/v1beta1/pipelines/upload?name=p".into(),
            vec![],
            200,
        ),
        (
            ALICE,
            "POST",
            "/pipeline/apis/v1beta1/pipelines/upload?name=p&namespace=team-a".into(),
            vec![],
            200,
        ),
        // Artifact links: the key's namespace where it has one; none, none.
        (
            ALICE,
            "GET",
            "/pipeline/artifacts/minio/mlpipeline/private-artifacts/team-a/v2/artifacts/p/r/x"
                .into(),
            vec![],
            200,
        ),
        (
            BOB,
            "GET",
            "/pipeline/artifacts/minio/mlpipeline/private-artifacts/team-a/v2/artifacts/p/r/x"
                .into(),
            vec![],
            403,
        ),
        (
            BOB,
            "GET",
            "/pipeline/artifacts/minio/mlpipeline/private-artifacts/team-a/x?namespace=team-b"
                .into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "GET",
            "/pipeline/artifacts/minio/mlpipeline/v2/artifacts/p/r/x".into(),
            vec![],
            403,
        ),
        (
            ALICE,
            "POST",
            "/pipeline/apis/v1beta1/visualizations/".into(),
            vec![],
            400,
        ),
    ];
    let hostile_referer =
        referer("https://kubeflow.example.com/pipeline/apis/v1beta1/_proxy/169.254.169.254");
    let cases: Vec<_> = cases
        .into_iter()
        .chain([
            // Placeholders inside the viewer's host name hold DNS labels only.
            (
                ALICE,
                "GET",
                "/pipeline/apis/v1beta1/_proxy/viewer-a@169.254.169.254%3F-service.team-a.svc.cluster.local:80/".to_string(),
                vec![],
                400,
            ),
            // The middleware compares case-sensitively: another case is not the viewer route.
            (
                ALICE,
                "GET",
                "/pipeline/apis/V1BETA1/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:80/".to_string(),
                vec![],
                403,
            ),
            // Istio's prefix `/pipeline` is a string prefix: /pipelinex reaches the UI too.
            (ALICE, "GET", "/pipelinex".to_string(), hostile_referer.clone(), 403),
        ])
        .collect();
    for mode in [ExtAuthz::Grpc, ExtAuthz::Http] {
        let stack = Stack::start(mode, fixture(&config), &preset_yaml()).await;
        // The viewer route goes on without its Referer: the proxy's router would take the
        // origin from it first.
        let viewed = send(&stack, "GET", viewer, ALICE, &hostile_referer).await;
        assert_eq!(viewed.status, 200, "{mode:?}: {viewed:?}");
        assert_eq!(viewed.upstream_header("referer"), None, "{mode:?}");
        for (who, method, target, headers, want) in &cases {
            let response = send(&stack, method, target, who, headers).await;
            assert_eq!(
                response.status, *want,
                "{mode:?} {who} {method} {target} {headers:?}: {response:?}"
            );
        }
    }
}

/// gRPC-web calls to MLMD and the other API prefixes are API routes: never a login redirect.
#[test]
fn the_presets_api_routes_cover_the_grpc_web_paths() {
    let config = preset();
    let prefixes: Vec<_> = config
        .api_routes
        .iter()
        .map(|p| authgate::path::PathPrefix::parse(p).unwrap())
        .collect();
    for path in [
        "/ml_metadata.MetadataStoreService/GetArtifacts",
        "/pipeline/apis/v1beta1/runs",
        "/kserve-endpoints/api/namespaces/team-a/inferenceservices",
    ] {
        let req = authgate::request::Request::new(
            "GET",
            "https",
            "kubeflow.example.com",
            path,
            authgate::request::Headers::from_pairs([("accept", "text/html")]),
            None,
        );
        assert!(!req.is_browser_navigation(&prefixes), "{path}");
    }
}
