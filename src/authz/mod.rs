//! Authorization: after authentication, may this identity go where the request goes?
//! Route rules find the namespace and permission; a SubjectAccessReview answers.

pub mod admission;
pub mod query;
pub mod rules;
pub mod sar;

use std::sync::Arc;

use crate::config::DefaultAction;
use crate::identity::Identity;
use crate::k8s::{KubeError, ReviewError};
use crate::request::Request;
use rules::{ResourceAttributes, RuleSet, Verdict};
use sar::{AccessRequest, AccessReviewer};

/// The authorization answer for one request.
#[derive(Debug, Clone)]
pub enum Authorization {
    /// Go ahead. `rule` names the rule that allowed it, if any.
    Allowed {
        /// The rule, if one matched.
        rule: Option<String>,
        /// The rule lets the bearer token through to the app.
        forward_credentials: bool,
        /// Request headers the rule keeps from the app (lower-case).
        remove_headers: Vec<String>,
    },
    /// Refused by a rule before any review (missing/ambiguous/invalid namespace …).
    Refused {
        /// The rule.
        rule: String,
        /// Why, for the client.
        why: String,
    },
    /// A placeholder that names an object holds no object name (400, no review).
    Invalid {
        /// The rule.
        rule: String,
        /// Why, for the client.
        why: String,
    },
    /// RBAC said no.
    Denied {
        /// The rule.
        rule: String,
        /// What was missing.
        attributes: ResourceAttributes,
    },
    /// No rule matched and the default is deny.
    NoRule,
    /// A personal access token limited to some namespaces, on a route that names another (or
    /// none): refused before any review.
    OutOfScope {
        /// The rule, if one matched.
        rule: Option<String>,
        /// The namespace the route names; empty: none.
        namespace: String,
    },
    /// The identity's budget of SubjectAccessReviews is spent: no review was asked.
    BudgetSpent(std::time::Duration),
    /// The Kubernetes API could not answer.
    Unavailable(KubeError),
}

/// A token limited to namespaces acts only where a rule reviews one of them: a route that names
/// no namespace (an allow rule, a cluster-wide review, no rule at all, an optional namespace
/// left out) goes on to an app that would trust the person's whole identity, so it is refused.
/// Requests a rule refuses anyway keep that answer.
fn out_of_scope(identity: &Identity, verdict: &Verdict<'_>) -> Option<Authorization> {
    if identity.namespaces.is_empty() {
        return None;
    }
    let (rule, namespace) = match verdict {
        Verdict::Review(rule, attributes) => {
            if identity.namespaces.contains(&attributes.namespace) {
                return None;
            }
            (Some(rule.name.clone()), attributes.namespace.clone())
        }
        Verdict::Allow(rule) => (Some(rule.name.clone()), String::new()),
        Verdict::NoRule => (None, String::new()),
        Verdict::Refuse(..) | Verdict::Invalid(..) => return None,
    };
    Some(Authorization::OutOfScope { rule, namespace })
}

/// Rules plus the reviewer.
pub struct Authorizer {
    rules: RuleSet,
    default: DefaultAction,
    reviewer: Option<Arc<AccessReviewer>>,
}

impl Authorizer {
    /// Builds the authorizer; `reviewer` is required when a rule needs reviews.
    pub fn new(
        rules: RuleSet,
        default: DefaultAction,
        reviewer: Option<Arc<AccessReviewer>>,
    ) -> Self {
        assert!(
            reviewer.is_some() || !rules.needs_reviews(),
            "rules that need SubjectAccessReviews need a reviewer"
        );
        Self {
            rules,
            default,
            reviewer,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Decides whether `identity` may make this request (`path` is the normalized path).
    pub async fn authorize(&self, identity: &Identity, req: &Request, path: &str) -> Authorization {
        let verdict = self.rules.evaluate(req, path);
        if let Some(refused) = out_of_scope(identity, &verdict) {
            return refused;
        }
        match verdict {
            Verdict::NoRule => match self.default {
                DefaultAction::Allow => Authorization::Allowed {
                    rule: None,
                    forward_credentials: false,
                    remove_headers: Vec::new(),
                },
                DefaultAction::Deny => Authorization::NoRule,
            },
            Verdict::Allow(rule) => Authorization::Allowed {
                rule: Some(rule.name.clone()),
                forward_credentials: rule.forward_credentials,
                remove_headers: rule.remove_headers.clone(),
            },
            Verdict::Refuse(rule, why) => Authorization::Refused {
                rule: rule.name.clone(),
                why,
            },
            Verdict::Invalid(rule, why) => Authorization::Invalid {
                rule: rule.name.clone(),
                why,
            },
            Verdict::Review(rule, attributes) => {
                let reviewer = self.reviewer.as_ref().expect("checked in new");
                let request = AccessRequest::new(identity, attributes);
                match reviewer.check(&request).await {
                    Ok(answer) if answer.allowed => Authorization::Allowed {
                        rule: Some(rule.name.clone()),
                        forward_credentials: rule.forward_credentials,
                        remove_headers: rule.remove_headers.clone(),
                    },
                    Ok(answer) => {
                        tracing::debug!(rule = %rule.name, reason = %answer.reason, "access review denied");
                        Authorization::Denied {
                            rule: rule.name.clone(),
                            attributes: request.attributes,
                        }
                    }
                    Err(ReviewError::BudgetSpent(wait)) => Authorization::BudgetSpent(wait),
                    Err(ReviewError::Kube(e)) => Authorization::Unavailable(e),
                }
            }
        }
    }
}
