//! `authgate explain`: what the policy makes of one request, step by step, for operators
//! debugging a rule. It uses the same normalization, rule matching and review construction as
//! the gateway itself.

use std::fmt::Write;

use crate::authz::rules::Verdict;
use crate::authz::sar::AccessRequest;
use crate::config::DefaultAction;
use crate::identity::{AuthMethod, Identity};
use crate::request::{Headers, Request};
use crate::settings::Settings;

/// What to explain.
#[derive(Debug, Clone)]
pub struct Question {
    /// User name as Kubernetes knows it.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// HTTP method.
    pub method: String,
    /// Full URL (`https://host/path?query`) or a path (`/path?query`, on `public_url`'s host).
    pub url: String,
}

/// The outcome of the explanation.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Human-readable report.
    pub report: String,
    /// The review that would be sent, if any.
    pub review: Option<AccessRequest>,
}

/// Splits a URL into host and raw request target without normalizing anything (the gateway
/// must be explained on exactly what Envoy would send it).
fn split_url<'a>(url: &'a str, default_host: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = url.split_once("://").map(|(_, rest)| rest) {
        match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        }
    } else {
        (default_host, url)
    }
}

/// Explains a request against the settings.
pub fn explain(settings: &Settings, question: &Question) -> Explanation {
    let mut out = String::new();
    let default_host = settings.public_origin().host_str().unwrap_or_default();
    let (host, target) = split_url(&question.url, default_host);
    let req = Request::new(
        &question.method,
        "https",
        host,
        target,
        Headers::default(),
        None,
    );
    let _ = writeln!(
        out,
        "request:         {} {host}{target}",
        req.method_for_log()
    );
    let path = match &req.path {
        Ok(path) => path.clone(),
        Err(e) => {
            let _ = writeln!(out, "path:            refused ({e}) → 400");
            return Explanation {
                report: out,
                review: None,
            };
        }
    };
    let _ = writeln!(out, "path:            {path}");
    if let Err(e) = &req.method {
        let _ = writeln!(out, "method:          refused ({e}) → 400");
        return Explanation {
            report: out,
            review: None,
        };
    }
    let query = if req.query.is_empty() {
        "-"
    } else {
        &req.query
    };
    let _ = writeln!(out, "query:           {query}");
    if let Some(p) = settings.skip_auth().iter().find(|p| p.matches(&path)) {
        let _ = writeln!(
            out,
            "skip_auth:       matches \"{p}\" → allowed without authentication (identity headers removed)"
        );
        return Explanation {
            report: out,
            review: None,
        };
    }
    let identity = Identity {
        namespaces: Vec::new(),
        user: question.user.clone(),
        groups: question.groups.clone(),
        uid: None,
        extra: Default::default(),
        method: AuthMethod::Session,
        issuer: None,
    };
    let _ = writeln!(
        out,
        "identity:        {} (groups: {})",
        identity.user,
        if identity.groups.is_empty() {
            "none".to_string()
        } else {
            identity.groups.join(", ")
        }
    );
    if let Err(refused) = settings.admission().admit(&identity) {
        let _ = writeln!(
            out,
            "admission:       {refused} ({}) → 403 before any rule",
            refused.reason()
        );
        return Explanation {
            report: out,
            review: None,
        };
    }
    let mut review = None;
    match settings.rules().evaluate(&req, &path) {
        Verdict::NoRule => {
            let fate = match settings.config().authorization.default {
                DefaultAction::Allow => "allowed (default: allow)",
                DefaultAction::Deny => "403 (default: deny)",
            };
            let _ = writeln!(out, "rule:            none matched → {fate}");
        }
        Verdict::Allow(rule) => {
            let _ = writeln!(
                out,
                "rule:            {:?} ({}) → allowed for any authenticated identity",
                rule.name, rule.path
            );
        }
        Verdict::Refuse(rule, why) => {
            let _ = writeln!(out, "rule:            {:?} ({})", rule.name, rule.path);
            let _ = writeln!(out, "namespace:       {why} → 403 without a review");
        }
        Verdict::Invalid(rule, why) => {
            let _ = writeln!(out, "rule:            {:?} ({})", rule.name, rule.path);
            let _ = writeln!(out, "name:            {why} → 400 without a review");
        }
        Verdict::Review(rule, attributes) => {
            let _ = writeln!(out, "rule:            {:?} ({})", rule.name, rule.path);
            let ns = if attributes.namespace.is_empty() {
                "(cluster-wide)"
            } else {
                &attributes.namespace
            };
            let _ = writeln!(out, "namespace:       {ns}");
            let request = AccessRequest::new(&identity, attributes);
            let body = serde_json::to_string_pretty(&request.to_review()).unwrap_or_default();
            let _ = writeln!(out, "SubjectAccessReview:\n{body}");
            review = Some(request);
        }
    }
    Explanation {
        report: out,
        review,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Settings {
        Settings::from_yaml(
            "public_url: https://kf.example.com\nskip_auth: [/dex/]\nauthorization:\n  rules:\n  - name: artifacts\n    path: /pipeline/artifacts/**\n    namespace: {query: namespace}\n    resource: {group: pipelines.kubeflow.org, resource: viewers, verb: get}\n",
        )
        .unwrap()
    }

    fn ask(url: &str) -> Explanation {
        explain(
            &config(),
            &Question {
                user: "alice@example.com".into(),
                groups: vec!["team".into()],
                method: "GET".into(),
                url: url.into(),
            },
        )
    }

    #[test]
    fn explains_a_review() {
        let e = ask("https://kf.example.com/pipeline/artifacts/get?namespace=team-a");
        assert!(
            e.report
                .contains("path:            /pipeline/artifacts/get"),
            "{}",
            e.report
        );
        assert!(
            e.report.contains("rule:            \"artifacts\""),
            "{}",
            e.report
        );
        assert!(
            e.report.contains("\"namespace\": \"team-a\""),
            "{}",
            e.report
        );
        assert_eq!(e.review.unwrap().attributes.resource, "viewers");
    }

    #[test]
    fn explains_refusals_skips_and_bad_paths() {
        assert!(
            ask("/pipeline/artifacts/get")
                .report
                .contains("names no namespace")
        );
        assert!(ask("/dex/auth").report.contains("skip_auth"));
        assert!(ask("/a%2Fb").report.contains("refused"));
        let dots = ask("/pipeline//artifacts/./get?namespace=team-a").report;
        assert!(
            dots.contains("refused") && dots.contains("\"/pipeline//artifacts/get\""),
            "{dots}"
        );
        assert!(ask("/central").report.contains("none matched → allowed"));
    }

    #[test]
    fn admission_is_the_gates() {
        let config = Settings::from_yaml(
            "public_url: https://kf.example.com\nauthorization:\n  allowed_email_domains: [corp.example]\n",
        )
        .unwrap();
        let report = explain(
            &config,
            &Question {
                user: "alice@example.com".into(),
                groups: vec![],
                method: "GET".into(),
                url: "/central".into(),
            },
        )
        .report;
        assert!(
            report.contains("not in an e-mail domain allowed")
                && report.contains("domain_not_allowed"),
            "{report}"
        );
    }
}
