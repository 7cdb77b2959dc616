//! Route rules: the Kubeflow preset (`examples/kubeflow.yaml`, compiled once) and up to eight
//! fuzzed rules compiled with `RuleSet::compile`, evaluated on arbitrary requests built with
//! `Request::new` exactly as the transports build them.
//!
//! Invariants: evaluation never panics; a `Review` verdict's namespace is a valid RFC 1123 label
//! or empty; its verb is never empty; evaluation is deterministic; a trailing slash never makes
//! a request less checked (a request some rule applies to still meets a rule with the slash,
//! the same verdict when it is the same rule).
#![no_main]

use std::sync::LazyLock;

use authgate::authz::rules::{RuleSet, Verdict, is_namespace_name};
use authgate::config::{
    Config, HeaderConditionConfig, NamespaceSourceConfig, QueryParser, QueryValueConfig,
    ResourceConfig, RuleConfig,
};
use authgate::request::{Headers, Request};
use libfuzzer_sys::fuzz_target;

static KUBEFLOW: LazyLock<RuleSet> = LazyLock::new(|| {
    let yaml = include_str!("../../examples/kubeflow.yaml");
    let config = Config::from_yaml(yaml).expect("examples/kubeflow.yaml is a valid config");
    RuleSet::from_config(&config.authorization).expect("the preset compiles")
});

/// The text input: `METHOD target` on the first line; then header lines (`name: value`; a
/// `host` header sets the host) and rule lines compiled into a second rule set:
/// `rule <path template> [m=GET,POST] [q=key=value] [qe=key=NAME:number] [h=header=text]
/// [nsq=param] [nsh=header] [opt] [def=namespace] [grpc] [verb=v] [name=v] [allow] [deny]`
/// (`opt`: the namespace is optional; `def`: its default; `grpc`: the query is read as
/// grpc-gateway reads it; `h`: a header condition).
fn parse(text: &str) -> (Request, Vec<RuleConfig>) {
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut headers = Vec::new();
    let mut rules = Vec::new();
    let mut host = "kubeflow.example.com".to_string();
    for line in lines {
        if let Some(rule) = line.strip_prefix("rule ") {
            if rules.len() < 8 {
                rules.push(rule_config(rules.len(), rule));
            }
            continue;
        }
        let (n, v) = match line.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim_start().to_string()),
            None => (line.to_string(), String::new()),
        };
        if n.eq_ignore_ascii_case("host") {
            host = v.clone();
        }
        headers.push((n, v));
    }
    let req = Request::new(
        method,
        "https",
        &host,
        target,
        Headers::from_pairs(headers),
        None,
    );
    (req, rules)
}

fn rule_config(i: usize, text: &str) -> RuleConfig {
    let mut words = text.split(' ');
    let path = words.next().unwrap_or_default().to_string();
    let mut rule = RuleConfig {
        name: format!("fuzz-{i}"),
        path,
        ..RuleConfig::default()
    };
    let mut resource = ResourceConfig {
        group: "kubeflow.org".into(),
        version: "v1".into(),
        resource: "things".into(),
        ..ResourceConfig::default()
    };
    let mut namespace = NamespaceSourceConfig::default();
    for word in words {
        match word.split_once('=') {
            None if word == "allow" => rule.allow = true,
            None if word == "opt" => namespace.optional = true,
            None if word == "deny" => rule.deny = true,
            Some(("def", d)) => namespace.default = Some(d.to_string()),
            Some(("h", h)) => {
                let (name, text) = h.split_once('=').unwrap_or((h, ""));
                rule.headers.insert(
                    name.to_string(),
                    HeaderConditionConfig {
                        contains: text.to_string(),
                    },
                );
            }
            None if word == "grpc" => rule.query_parser = QueryParser::GrpcGateway,
            Some(("m", m)) => rule.methods = m.split(',').map(str::to_string).collect(),
            Some(("q", q)) => {
                let (k, v) = q.split_once('=').unwrap_or((q, ""));
                rule.query
                    .insert(k.to_string(), QueryValueConfig::Text(v.to_string()));
            }
            Some(("qe", q)) => {
                let (k, v) = q.split_once('=').unwrap_or((q, ""));
                let (name, number) = v.split_once(':').unwrap_or((v, "0"));
                rule.query.insert(
                    k.to_string(),
                    QueryValueConfig::Enum {
                        name: name.to_string(),
                        number: number.parse().unwrap_or(0),
                    },
                );
            }
            Some(("nsq", q)) => namespace.query = Some(q.to_string()),
            Some(("nsh", h)) => namespace.header = Some(h.to_string()),
            Some(("verb", v)) => resource.verb = v.to_string(),
            Some(("name", v)) => resource.name = v.to_string(),
            _ => {}
        }
    }
    if namespace.query.is_some() || namespace.header.is_some() {
        rule.namespace = Some(namespace);
    }
    if !rule.allow && !rule.deny {
        rule.resource = Some(resource);
    }
    rule
}

fn check(rules: &RuleSet, req: &Request, path: &str) {
    let verdict = rules.evaluate(req, path);
    if let Verdict::Review(rule, attributes) = &verdict {
        assert!(
            attributes.namespace.is_empty() || is_namespace_name(&attributes.namespace),
            "rule {:?} reviews invalid namespace {:?} for {path:?}",
            rule.name,
            attributes.namespace
        );
        assert!(
            !attributes.verb.is_empty(),
            "rule {:?}: empty verb",
            rule.name
        );
        let _ = attributes.describe();
    }
    // Deterministic.
    let again = rules.evaluate(req, path);
    assert_eq!(summary(&verdict), summary(&again));
    // Every rule that applies to `/p` applies to `/p/` (read as `/p`, or with an empty last
    // segment), so the first rule for `/p/` comes no later; the same rule, the same verdict.
    let (bare, slashed) = match path.strip_suffix('/') {
        Some("") => return,
        Some(p) => (p.to_string(), path.to_string()),
        None => (path.to_string(), format!("{path}/")),
    };
    let (bare_verdict, slashed_verdict) =
        (rules.evaluate(req, &bare), rules.evaluate(req, &slashed));
    if let Some(rule) = rule_of(&bare_verdict) {
        let with_slash = rule_of(&slashed_verdict)
            .unwrap_or_else(|| panic!("{bare:?} meets rule {rule:?}, {slashed:?} none"));
        if with_slash == rule {
            assert_eq!(
                summary(&bare_verdict),
                summary(&slashed_verdict),
                "{bare:?}"
            );
        }
    }
}

fn rule_of<'a>(v: &Verdict<'a>) -> Option<&'a str> {
    match v {
        Verdict::NoRule => None,
        Verdict::Allow(r)
        | Verdict::Review(r, _)
        | Verdict::Refuse(r, _)
        | Verdict::Invalid(r, _) => Some(r.name.as_str()),
    }
}

fn summary(v: &Verdict<'_>) -> String {
    match v {
        Verdict::NoRule => "none".into(),
        Verdict::Allow(r) => format!("allow {}", r.name),
        Verdict::Review(r, a) => format!("review {} {a:?}", r.name),
        Verdict::Refuse(r, why) => format!("refuse {} {why}", r.name),
        Verdict::Invalid(r, why) => format!("invalid {} {why}", r.name),
    }
}

fuzz_target!(|data: &[u8]| {
    let (req, configs) = parse(&String::from_utf8_lossy(data));
    let _ = req.query_values("namespace");
    let _ = req.is_browser_navigation(&[]);
    let Ok(path) = req.path.clone() else {
        return;
    };
    check(&KUBEFLOW, &req, &path);
    if configs.is_empty() {
        return;
    }
    // Compiling a rule with placeholders inside a segment builds a regex, which costs far more
    // than evaluating; most mutations change the request, not the rules: reuse compiled sets.
    let key = serde_json::to_string(&configs).expect("rule configs serialize");
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 4096 {
            cache.clear();
        }
        let rules = cache
            .entry(key)
            .or_insert_with(|| RuleSet::compile(&configs).ok());
        if let Some(rules) = rules {
            check(rules, &req, &path);
        }
    });
});

thread_local! {
    static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<RuleSet>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}
