//! Unit tests of the rule language: templates, trailing slashes, namespace sources, query
//! readings and verbs, each through `RuleSet::evaluate` as the gate calls it.

use super::*;
use crate::authz::query::DEFAULT_MAX_QUERY_PARAMETERS;
use crate::config::Config;
use crate::request::Headers;

fn rules(yaml: &str) -> RuleSet {
    let config = Config::from_yaml(&format!(
        "public_url: https://kf.example.com\nauthorization:\n  rules:\n{yaml}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    RuleSet::compile(&config.authorization.rules).unwrap()
}

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
    Request::new(
        method,
        "https",
        "kf.example.com",
        target,
        Headers::from_pairs(headers.iter().map(|(n, v)| (*n, v.to_string()))),
        None,
    )
}

fn eval(set: &RuleSet, method: &str, target: &str) -> Result<Option<ResourceAttributes>, String> {
    eval_h(set, method, target, &[])
}

fn eval_h(
    set: &RuleSet,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Option<ResourceAttributes>, String> {
    let r = req(method, target, headers);
    let path = r.path.clone().expect("valid path");
    match set.evaluate(&r, &path) {
        Verdict::NoRule | Verdict::Allow(_) => Ok(None),
        Verdict::Review(_, attrs) => Ok(Some(attrs)),
        Verdict::Refuse(_, why) | Verdict::Invalid(_, why) => Err(why),
    }
}

#[test]
fn a_name_placeholder_holds_only_a_kubernetes_object_name() {
    let set = rules(NOTEBOOK);
    assert!(eval(&set, "GET", "/notebook/team-a/nb-1.v2/lab").is_ok());
    let long = "a".repeat(254);
    for bad in ["Nb1", "nb_1", "nb%20x", "-nb", "nb..x", long.as_str()] {
        let r = req("GET", &format!("/notebook/team-a/{bad}/lab"), &[]);
        let path = r.path.clone().expect("valid path");
        assert!(
            matches!(set.evaluate(&r, &path), Verdict::Invalid(..)),
            "{bad:?}"
        );
    }
}

const NOTEBOOK: &str = "  - name: notebook\n    path: /notebook/{namespace}/{name}/**\n    resource: {group: kubeflow.org, resource: notebooks, verb: get, name: '{name}'}\n";
const ARTIFACTS: &str = "  - name: artifacts\n    path: /pipeline/artifacts/**\n    namespace: {query: namespace}\n    resource: {group: pipelines.kubeflow.org, resource: viewers, verb: get}\n";
const JUPYTER: &str = "  - name: jupyter\n    path: /jupyter/api/namespaces/{namespace}/notebooks/**\n    namespace: {query: namespace, header: x-namespace}\n    resource: {group: kubeflow.org, resource: notebooks}\n";

#[test]
fn path_namespace_and_name_fill_the_review() {
    let set = rules(NOTEBOOK);
    let attrs = eval(&set, "GET", "/notebook/team-a/nb1/lab/tree")
        .unwrap()
        .unwrap();
    assert_eq!(attrs.namespace, "team-a");
    assert_eq!(attrs.name, "nb1");
    assert_eq!(attrs.verb, "get");
    assert_eq!(attrs.resource, "notebooks");
    assert_eq!(attrs.describe(), "get notebooks.kubeflow.org \"nb1\"");
    // `**` matches zero segments too; a trailing slash changes nothing.
    assert!(eval(&set, "GET", "/notebook/team-a/nb1").unwrap().is_some());
    assert!(
        eval(&set, "GET", "/notebook/team-a/nb1/")
            .unwrap()
            .is_some()
    );
    // Too short: the rule does not apply.
    assert!(eval(&set, "GET", "/notebook/team-a").unwrap().is_none());
}

#[test]
fn a_required_query_namespace_that_is_missing_is_refused() {
    let set = rules(ARTIFACTS);
    let attrs = eval(
        &set,
        "GET",
        "/pipeline/artifacts/get?source=minio&namespace=team-a",
    )
    .unwrap()
    .unwrap();
    assert_eq!(attrs.namespace, "team-a");
    for target in [
        "/pipeline/artifacts/get?source=minio",
        "/pipeline/artifacts/get?namespace=",
        "/pipeline/artifacts/get?Namespace=team-a",
        "/pipeline/artifacts/get?namespace=team-a&namespace=team-b",
        "/pipeline/artifacts/get?namespace=team-a%26namespace%3Dteam-b",
        "/pipeline/artifacts/get?namespace=Team-A",
        "/pipeline/artifacts/get?namespace=../kube-system",
        "/PIPELINE/Artifacts/get",
        "/pipeline;x/artifacts/get",
    ] {
        assert!(
            eval(&set, "GET", target).is_err(),
            "{target} must be refused"
        );
    }
    // The same namespace twice is not ambiguous.
    assert!(
        eval(
            &set,
            "GET",
            "/pipeline/artifacts/get?namespace=a&namespace=a"
        )
        .is_ok()
    );
    // Encoded parameter names are decoded like the app decodes them.
    let attrs = eval(&set, "GET", "/pipeline/artifacts/get?name%73pace=team-a")
        .unwrap()
        .unwrap();
    assert_eq!(attrs.namespace, "team-a");
}

#[test]
fn all_namespace_sources_must_agree() {
    let set = rules(JUPYTER);
    let base = "/jupyter/api/namespaces/team-a/notebooks";
    assert!(eval(&set, "GET", base).unwrap().is_some());
    assert!(
        eval(&set, "GET", &format!("{base}?namespace=team-a"))
            .unwrap()
            .is_some()
    );
    assert!(eval(&set, "GET", &format!("{base}?namespace=team-b")).is_err());
    assert!(eval_h(&set, "GET", base, &[("x-namespace", "team-b")]).is_err());
    assert!(eval_h(&set, "GET", base, &[("x-namespace", "team-a,team-b")]).is_err());
    assert!(eval_h(&set, "GET", base, &[("x-namespace", "team-a")]).is_ok());
}

#[test]
fn verbs_follow_the_method_when_not_fixed() {
    let set = rules(JUPYTER);
    let base = "/jupyter/api/namespaces/team-a/notebooks";
    let verb = |m: &str| eval(&set, m, base).unwrap().unwrap().verb;
    assert_eq!(verb("GET"), "list");
    assert_eq!(verb("HEAD"), "list");
    assert_eq!(verb("POST"), "create");
    assert_eq!(verb("PUT"), "update");
    assert_eq!(verb("PATCH"), "patch");
    assert_eq!(verb("DELETE"), "delete");
    assert!(eval(&set, "TRACE", base).is_err(), "no verb, no pass");
}

#[test]
fn methods_and_query_conditions_select_rules() {
    let set = rules(
        "  - name: v1-runs-by-namespace\n    path: /pipeline/apis/v1beta1/runs\n    methods: [GET]\n    query: {resource_reference_key.type: NAMESPACE}\n    namespace: {query: resource_reference_key.id}\n    resource: {group: pipelines.kubeflow.org, resource: runs, verb: list}\n",
    );
    let ns = "/pipeline/apis/v1beta1/runs?resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-a";
    assert_eq!(eval(&set, "GET", ns).unwrap().unwrap().namespace, "team-a");
    assert!(
        eval(&set, "POST", ns).unwrap().is_none(),
        "method does not match"
    );
    let by_experiment = "/pipeline/apis/v1beta1/runs?resource_reference_key.type=EXPERIMENT&resource_reference_key.id=0b1e";
    assert!(eval(&set, "GET", by_experiment).unwrap().is_none());
    let ambiguous = "/pipeline/apis/v1beta1/runs?resource_reference_key.type=EXPERIMENT&resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-a";
    assert!(
        eval(&set, "GET", ambiguous).is_err(),
        "a repeated condition is refused"
    );
}

#[test]
fn first_match_wins() {
    let set = rules(&format!(
        "  - name: exempt\n    path: /notebook/public/**\n    allow: true\n{NOTEBOOK}"
    ));
    assert!(eval(&set, "GET", "/notebook/public/x/y").unwrap().is_none());
    assert!(eval(&set, "GET", "/notebook/team-a/x/y").unwrap().is_some());
}

#[test]
fn namespace_names_follow_rfc_1123() {
    for ok in ["a", "team-a", "kubeflow-user-example-com", &"a".repeat(63)] {
        assert!(is_namespace_name(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "A",
        "a_b",
        "a.b",
        "a%2Fb",
        &"a".repeat(64),
        "ä",
    ] {
        assert!(!is_namespace_name(bad), "{bad}");
    }
}

#[test]
fn impossible_rules_are_config_errors() {
    let config = |rules: &str| {
        crate::settings::Settings::from_yaml(&format!(
            "public_url: https://kf.example.com\nauthorization:\n  rules:\n{rules}"
        ))
        .unwrap_err()
        .to_string()
    };
    let cases = [
        (
            "  - {name: a, path: '/x/**/y', allow: true}\n",
            "last segment",
        ),
        (
            "  - {name: a, path: '/x/{ns}', resource: {resource: r, name: '{name}'}}\n",
            "not a placeholder",
        ),
        ("  - {name: a, path: '/x/{a}/{a}', allow: true}\n", "twice"),
        ("  - {name: a, path: '/x/z{a}{b}', allow: true}\n", "apart"),
        ("  - {name: a, path: '/x/a{b', allow: true}\n", "unclosed"),
        (
            "  - {name: a, path: '/x/a*', allow: true}\n",
            "whole segments",
        ),
        (
            "  - {name: a, path: '/x', allow: true, deny: true}\n",
            "not several",
        ),
        (
            "  - {name: a, path: '/x', deny: true, headers: {referer: {contains: ''}}}\n",
            "must not be empty",
        ),
        ("  - {name: a, path: '/x'}\n", "needs `resource`"),
        (
            "  - {name: a, path: '/x', allow: true, resource: {resource: r}}\n",
            "not several",
        ),
        (
            "  - {name: a, path: '/x', methods: [FETCH], allow: true}\n",
            "unknown method",
        ),
        ("  - {name: a, path: 'x', allow: true}\n", "start with"),
        (
            "  - {name: a, path: '/x', allow: true}\n  - {name: a, path: '/y', allow: true}\n",
            "two rules",
        ),
        (
            "  - {name: a, path: '/x', allow: true, namespace: {}}\n",
            "`query` or a `header`",
        ),
        (
            "  - {name: a, path: '/x', allow: true, nmespace: {query: q}}\n",
            "nmespace",
        ),
        (
            "  - {name: a, path: '/x//y', allow: true}\n",
            "empty segment",
        ),
        (
            "  - {name: a, path: '/x', allow: true, remove_headers: [Kubeflow-Userid]}\n",
            "identity header",
        ),
        (
            "  - {name: a, path: '/x', allow: true, query: {t: {name: A, number: 1}}}\n",
            "query_parser: grpc-gateway",
        ),
        (
            "  - {name: a, path: '/x/{namespace}', allow: true, namespace: {query: q, optional: true}}\n",
            "never absent",
        ),
        (
            "  - {name: a, path: '/x', allow: true, trailing_slash: maybe}\n",
            "trailing_slash",
        ),
        (
            "  - {name: a, path: '/x', allow: true, query_parser: qs}\n",
            "query_parser",
        ),
    ];
    for (rules, want) in cases {
        let err = config(rules);
        assert!(err.contains(want), "{rules}: {err}");
    }
}

const VISUALIZATIONS: &str = "  - name: visualizations\n    path: /pipeline/apis/v1beta1/visualizations/{namespace}\n    methods: [POST]\n    resource: {group: pipelines.kubeflow.org, resource: visualizations, verb: create}\n";

fn invalid(set: &RuleSet, method: &str, target: &str) -> bool {
    let r = req(method, target, &[]);
    let path = r.path.clone().expect("valid path");
    matches!(set.evaluate(&r, &path), Verdict::Invalid(..))
}

#[test]
fn a_placeholder_never_matches_the_empty_segment_of_a_trailing_slash() {
    let set = rules(VISUALIZATIONS);
    let path = "/pipeline/apis/v1beta1/visualizations";
    assert_eq!(
        eval(&set, "POST", &format!("{path}/team-a"))
            .unwrap()
            .unwrap()
            .namespace,
        "team-a"
    );
    // grpc-gateway reads `…/visualizations/` as an empty namespace: refused, not unruled.
    assert!(invalid(&set, "POST", &format!("{path}/")));
    assert!(eval(&set, "POST", path).unwrap().is_none());
    // `/team-a/` is `/team-a` (or one segment too many): still the rule.
    assert!(
        eval(&set, "POST", &format!("{path}/team-a/"))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_rule_says_how_its_app_reads_a_trailing_slash() {
    let with = |mode: &str| {
        rules(&format!(
            "  - name: r\n    path: /a/{{name}}\n    trailing_slash: {mode}\n    resource: {{resource: r, name: '{{name}}'}}\n  - name: list\n    path: /a\n    trailing_slash: {mode}\n    resource: {{resource: r}}\n"
        ))
    };
    let rule_of = |set: &RuleSet, target: &str| {
        let r = req("GET", target, &[]);
        let path = r.path.clone().unwrap();
        match set.evaluate(&r, &path) {
            Verdict::Review(rule, _) => format!("review {}", rule.name),
            Verdict::Invalid(rule, _) => format!("invalid {}", rule.name),
            Verdict::NoRule => "none".into(),
            other => format!("{other:?}"),
        }
    };
    let either = with("either");
    assert_eq!(rule_of(&either, "/a/"), "invalid r");
    assert_eq!(rule_of(&either, "/a/x/"), "review r");
    assert_eq!(rule_of(&either, "/a"), "review list");
    let same = with("same_route");
    assert_eq!(rule_of(&same, "/a/"), "review list");
    assert_eq!(rule_of(&same, "/a/x/"), "review r");
    let segment = with("empty_segment");
    assert_eq!(rule_of(&segment, "/a/"), "invalid r");
    assert_eq!(rule_of(&segment, "/a/x/"), "none");
    assert_eq!(rule_of(&segment, "/a/x"), "review r");
}

const GRPC_RUNS: &str = "  - name: v1-runs\n    path: /pipeline/apis/v1beta1/runs\n    query_parser: grpc-gateway\n    query: {resource_reference_key.type: {name: NAMESPACE, number: 5}}\n    namespace: {query: resource_reference_key.id}\n    resource: {group: pipelines.kubeflow.org, resource: runs, verb: list}\n";

#[test]
fn grpc_gateway_spellings_are_one_parameter() {
    let set = rules(GRPC_RUNS);
    let runs = "/pipeline/apis/v1beta1/runs";
    for query in [
        "resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-a",
        "resourceReferenceKey.type=NAMESPACE&resourceReferenceKey.id=team-a",
        "resource_reference_key.type=NAMESPACE&resourceReferenceKey.id=team-a",
        "resource_reference_key.type=5&resource_reference_key.id=team-a",
        "resourceReferenceKey.type=05&resource_reference_key.id=team-a",
        "resource_reference_key.type=%2B5&resource_reference_key.id=team-a",
        "resource_reference_key.type=0x5&resource_reference_key.id=team-a&resource_reference_key.id=team-a",
    ] {
        let attrs = eval(&set, "GET", &format!("{runs}?{query}"));
        assert_eq!(attrs.unwrap().unwrap().namespace, "team-a", "{query}");
    }
    for refused in [
        "resource_reference_key.type=NAMESPACE&resource_reference_key.id=team-a&resourceReferenceKey.id=team-b",
        "resource_reference_key.type=NAMESPACE&resourceReferenceKey.type=EXPERIMENT&resource_reference_key.id=team-a",
        "resource_reference_key.type=5",
        "resource_reference_key.type=NAMESPACE&resource_reference_key.id[team-a]=",
        "resource_reference_key.type[NAMESPACE]=&resource_reference_key.id=team-a",
    ] {
        assert!(
            eval(&set, "GET", &format!("{runs}?{refused}")).is_err(),
            "{refused}"
        );
    }
    // Another resource type: the API server resolves it, no rule.
    let experiment = format!("{runs}?resource_reference_key.type=1&resource_reference_key.id=e1");
    assert!(eval(&set, "GET", &experiment).unwrap().is_none());
}

#[test]
fn a_rule_that_reads_the_query_refuses_too_many_parameters() {
    let set = rules(ARTIFACTS);
    let junk = "x=1&".repeat(DEFAULT_MAX_QUERY_PARAMETERS);
    assert!(invalid(
        &set,
        "GET",
        &format!("/pipeline/artifacts/get?{junk}namespace=team-a")
    ));
    let fewer = "x=1&".repeat(DEFAULT_MAX_QUERY_PARAMETERS - 1);
    assert!(
        eval(
            &set,
            "GET",
            &format!("/pipeline/artifacts/get?{fewer}namespace=team-a")
        )
        .is_ok()
    );
    // A rule that does not read the query does not count it.
    let notebook = rules(NOTEBOOK);
    assert!(eval(&notebook, "GET", &format!("/notebook/team-a/nb/lab?{junk}")).is_ok());
}

#[test]
fn an_optional_namespace_is_reviewed_when_given_and_left_to_the_app_when_not() {
    let set = rules(
        "  - name: v2-runs\n    path: /pipeline/apis/v2beta1/runs\n    query_parser: grpc-gateway\n    namespace: {query: namespace, optional: true}\n    resource: {group: pipelines.kubeflow.org, resource: runs, verb: list}\n",
    );
    let runs = "/pipeline/apis/v2beta1/runs";
    let allow = |target: &str| {
        let r = req("GET", target, &[]);
        let path = r.path.clone().unwrap();
        matches!(set.evaluate(&r, &path), Verdict::Allow(_))
    };
    assert!(allow(runs));
    assert!(allow(&format!("{runs}?experiment_id=e1")));
    assert!(allow(&format!("{runs}?namespace=")));
    assert_eq!(
        eval(
            &set,
            "GET",
            &format!("{runs}?namespace=team-b&experiment_id=e1")
        )
        .unwrap()
        .unwrap()
        .namespace,
        "team-b"
    );
    for refused in [
        "namespace=&namespace=team-b",
        "namespace[]=team-b",
        "namespace=Team-B",
    ] {
        assert!(
            eval(&set, "GET", &format!("{runs}?{refused}")).is_err(),
            "{refused}"
        );
    }
}

#[test]
fn a_form_encoded_post_to_a_grpc_gateway_route_is_refused_whatever_the_rule_method() {
    let set = rules(
        GRPC_RUNS
            .replace("    query_parser", "    methods: [GET]\n    query_parser")
            .as_str(),
    );
    let runs = "/pipeline/apis/v1beta1/runs?resource_reference_key.type=EXPERIMENT";
    let form = |ct: &str| {
        let r = req("POST", runs, &[("content-type", ct)]);
        let path = r.path.clone().unwrap();
        matches!(set.evaluate(&r, &path), Verdict::Invalid(..))
    };
    assert!(form("application/x-www-form-urlencoded"));
    assert!(form("Application/X-WWW-Form-Urlencoded; charset=utf-8"));
    assert!(!form("application/json"));
    assert!(!form("multipart/form-data; boundary=x"));
    // Other methods and plain-parser rules are judged as usual.
    assert!(
        eval_h(
            &set,
            "PUT",
            runs,
            &[("content-type", "application/x-www-form-urlencoded")]
        )
        .unwrap()
        .is_none()
    );
}

#[test]
fn placeholders_inside_a_segment_capture_their_part() {
    let set = rules(
        "  - name: viewer\n    path: /p/_proxy/viewer-{viewer}-service.{namespace}.svc.cluster.local:80/**\n    resource: {group: kubeflow.org, resource: viewers, verb: get}\n  - {name: closed, path: /p/_proxy/**, deny: true}\n",
    );
    let ok = "/p/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:80/tensorboard/viewer-0a1b/";
    assert_eq!(eval(&set, "GET", ok).unwrap().unwrap().namespace, "team-a");
    for closed in [
        "/p/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:8080/",
        "/p/_proxy/viewer-0a1b-service.team-a.svc.cluster.local%3A80/",
        "/p/_proxy/169.254.169.254/latest/meta-data",
        "/p/_proxy/viewer-x-service.team-a.svc.cluster.local:80@evil.example/",
        "/p/_proxy/evil.example/viewer-x-service.team-a.svc.cluster.local:80/",
    ] {
        let r = req("GET", closed, &[]);
        let path = r.path.clone().unwrap();
        assert!(
            matches!(set.evaluate(&r, &path), Verdict::Refuse(rule, _) if rule.name == "closed"),
            "{closed}"
        );
    }
    // A namespace part that is no namespace name is refused, not reviewed.
    let dotted = "/p/_proxy/viewer-x-service.team-a.evil.svc.cluster.local:80/";
    assert!(eval(&set, "GET", dotted).is_err());
}

#[test]
fn header_conditions_select_rules_and_deny_closes_a_route() {
    let set = rules(
        "  - name: by-referer\n    path: /pipeline/**\n    headers: {referer: {contains: /_proxy/}}\n    deny: true\n  - {name: open, path: /pipeline/**, allow: true}\n",
    );
    let verdict = |headers: &[(&str, &str)]| {
        let r = req("GET", "/pipeline/apis/v1beta1/runs", headers);
        let path = r.path.clone().unwrap();
        match set.evaluate(&r, &path) {
            Verdict::Refuse(rule, _) | Verdict::Allow(rule) => rule.name.clone(),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(verdict(&[]), "open");
    assert_eq!(
        verdict(&[("referer", "https://kf/pipeline/#/runs")]),
        "open"
    );
    for referer in [
        "https://kf/pipeline/apis/v1beta1/_proxy/169.254.169.254/",
        "https://kf/x?y=/apis/v1beta1/_PROXY/evil",
    ] {
        assert_eq!(verdict(&[("referer", referer)]), "by-referer", "{referer}");
    }
    assert_eq!(
        verdict(&[
            ("referer", "https://kf/"),
            ("referer", "https://kf/a/_proxy/b")
        ]),
        "by-referer"
    );
}

#[test]
fn grpc_gateway_routes_ignore_a_custom_verb_in_the_last_segment() {
    let set = rules(GRPC_RUNS);
    for runs in [
        "/pipeline/apis/v1beta1/runs:",
        "/pipeline/apis/v1beta1/runs%3A",
        "/pipeline/apis/v1beta1/runs%3a",
        "/pipeline/apis/v1beta1/runs:list",
    ] {
        let attrs = eval(
            &set,
            "GET",
            &format!(
                "{runs}?resource_reference_key.type=4294967301&resource_reference_key.id=team-a"
            ),
        );
        assert_eq!(attrs.unwrap().unwrap().namespace, "team-a", "{runs}");
    }
    let v = rules(
        VISUALIZATIONS
            .replace("    methods", "    query_parser: grpc-gateway\n    methods")
            .as_str(),
    );
    let attrs = eval(&v, "POST", "/pipeline/apis/v1beta1/visualizations/team-a:");
    assert_eq!(attrs.unwrap().unwrap().namespace, "team-a");
}

#[test]
fn the_custom_verb_starts_at_the_last_colon_raw_or_encoded() {
    assert_eq!(without_verb("runs"), "runs");
    assert_eq!(without_verb("runs:"), "runs");
    assert_eq!(without_verb("runs%3a"), "runs");
    assert_eq!(without_verb("a:b%3Ac"), "a:b");
    assert_eq!(without_verb("a%3Ab:c"), "a%3Ab");
    assert_eq!(without_verb("%3"), "%3");
}

#[test]
fn a_wildcard_never_takes_the_empty_segment_of_a_trailing_slash() {
    let set = rules(
        "  - {name: any, path: '/a/*', allow: true}\n  - name: list\n    path: /a\n    resource: {resource: r}\n",
    );
    assert!(invalid(&set, "GET", "/a/"));
    assert!(eval(&set, "GET", "/a").unwrap().is_some());
    assert!(eval(&set, "GET", "/a/x").unwrap().is_none());
}

#[test]
fn a_verb_placeholder_keeps_its_case() {
    let set = rules("  - name: r\n    path: /{X}\n    resource: {resource: r, verb: '{X}'}\n");
    assert_eq!(eval(&set, "GET", "/get").unwrap().unwrap().verb, "get");
}

#[test]
fn a_default_namespace_is_reviewed_when_the_request_names_none() {
    let set = rules(
        "  - name: upload\n    path: /pipeline/apis/v1beta1/pipelines/upload\n    namespace: {query: namespace, default: kubeflow}\n    resource: {group: pipelines.kubeflow.org, resource: pipelines, verb: create}\n",
    );
    let upload = "/pipeline/apis/v1beta1/pipelines/upload";
    let ns = |target: &str| eval(&set, "POST", target).unwrap().unwrap().namespace;
    assert_eq!(ns(upload), "kubeflow");
    assert_eq!(ns(&format!("{upload}?name=p&namespace=")), "kubeflow");
    assert_eq!(ns(&format!("{upload}?namespace=team-a")), "team-a");
    assert!(
        eval(
            &set,
            "POST",
            &format!("{upload}?namespace=&namespace=team-a")
        )
        .is_err()
    );
}

#[test]
fn a_placeholder_inside_a_segment_holds_only_a_dns_label() {
    let set = rules(
        "  - name: viewer\n    path: /p/_proxy/viewer-{viewer}-service.{namespace}.svc.cluster.local:80/**\n    resource: {group: kubeflow.org, resource: viewers, verb: get}\n",
    );
    for hostile in [
        "/p/_proxy/viewer-a@169.254.169.254%3F-service.team-a.svc.cluster.local:80/",
        "/p/_proxy/viewer-a%40evil.example%23-service.team-a.svc.cluster.local:80/",
        "/p/_proxy/viewer-x.evil.example%3F-service.team-a.svc.cluster.local:80/",
        "/p/_proxy/viewer-a@[::1]:8888%3F-service.team-a.svc.cluster.local:80/",
        "/p/_proxy/viewer-a%E3%80%82b-service.team-a.svc.cluster.local:80/",
    ] {
        assert!(invalid(&set, "GET", hostile), "{hostile}");
    }
    assert!(
        eval(
            &set,
            "GET",
            "/p/_proxy/viewer-0a1b-service.team-a.svc.cluster.local:80/"
        )
        .is_ok()
    );
}

#[test]
fn a_case_sensitive_rule_matches_only_its_exact_spelling() {
    let set = rules(
        "  - name: exact\n    path: /pipeline/apis/v1beta1/_proxy/viewer-{v}-service.{namespace}.svc.cluster.local:80/**\n    case_sensitive: true\n    remove_headers: [Referer]\n    resource: {group: kubeflow.org, resource: viewers, verb: get}\n  - {name: closed, path: /pipeline/apis/*/_proxy/**, deny: true}\n",
    );
    let name = |target: &str| {
        let r = req("GET", target, &[]);
        let path = r.path.clone().unwrap();
        match set.evaluate(&r, &path) {
            Verdict::Review(rule, _) | Verdict::Refuse(rule, _) => rule.name.clone(),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(
        name("/pipeline/apis/v1beta1/_proxy/viewer-a-service.team-a.svc.cluster.local:80/x"),
        "exact"
    );
    for other in [
        "/pipeline/apis/V1BETA1/_proxy/viewer-a-service.team-a.svc.cluster.local:80/x",
        "/Pipeline/apis/v1beta1/_proxy/viewer-a-service.team-a.svc.cluster.local:80/x",
        "/pipeline/apis/v1beta1/_proxy/VIEWER-a-service.team-a.svc.cluster.local:80/x",
        "/pipeline;x/apis/v1beta1/_proxy/viewer-a-service.team-a.svc.cluster.local:80/x",
    ] {
        assert_eq!(name(other), "closed", "{other}");
    }
    let r = req(
        "GET",
        "/pipeline/apis/v1beta1/_proxy/viewer-a-service.team-a.svc.cluster.local:80/",
        &[],
    );
    let path = r.path.clone().unwrap();
    let Verdict::Review(rule, _) = set.evaluate(&r, &path) else {
        panic!()
    };
    assert_eq!(rule.remove_headers, ["referer"]);
}
