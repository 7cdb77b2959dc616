//! SubjectAccessReview: asks Kubernetes RBAC whether an identity may do something in a
//! namespace. Answers are cached by everything that went into the review (allowed for
//! `allow_ttl`, denied for `deny_ttl`), concurrent equal reviews share one call, and an API error
//! is never an answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes as KubeAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::rules::ResourceAttributes;
use crate::cache::ReviewCache;
use crate::clock::SharedClock;
use crate::config::SubjectAccessReviewConfig;
use crate::identity::Identity;
use crate::k8s::{KubeError, ReviewError, with_deadline};
use crate::ratelimit::KeyedBudget;

/// Everything a review is about; also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessRequest {
    /// User name (without the header prefix: Kubernetes knows the bare name).
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Uid.
    pub uid: Option<String>,
    /// Extra (TokenReview `extra`, e.g. the pod a token was bound to).
    pub extra: BTreeMap<String, Vec<String>>,
    /// What is asked.
    pub attributes: ResourceAttributes,
}

impl AccessRequest {
    /// The review for an identity.
    pub fn new(identity: &Identity, attributes: ResourceAttributes) -> Self {
        Self {
            user: identity.user.clone(),
            groups: identity.groups.clone(),
            uid: identity.uid.clone(),
            extra: identity.extra.clone(),
            attributes,
        }
    }

    /// Its weight in the review cache: one entry per 512 bytes it holds.
    fn weight(&self) -> u32 {
        let a = &self.attributes;
        let bytes = self.user.len()
            + self.groups.iter().map(String::len).sum::<usize>()
            + self.uid.as_ref().map_or(0, String::len)
            + self
                .extra
                .iter()
                .map(|(k, v)| k.len() + v.iter().map(String::len).sum::<usize>())
                .sum::<usize>()
            + [
                &a.namespace,
                &a.verb,
                &a.group,
                &a.version,
                &a.resource,
                &a.subresource,
                &a.name,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        u32::try_from(1 + bytes / 512).unwrap_or(u32::MAX)
    }

    /// The SubjectAccessReview object sent to the API server.
    pub fn to_review(&self) -> SubjectAccessReview {
        let a = &self.attributes;
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.user.clone()),
                groups: (!self.groups.is_empty()).then(|| self.groups.clone()),
                uid: self.uid.clone(),
                extra: (!self.extra.is_empty()).then(|| self.extra.clone().into_iter().collect()),
                resource_attributes: Some(KubeAttributes {
                    namespace: opt(&a.namespace),
                    verb: opt(&a.verb),
                    group: Some(a.group.clone()),
                    version: opt(&a.version),
                    resource: opt(&a.resource),
                    subresource: opt(&a.subresource),
                    name: opt(&a.name),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The API server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessAnswer {
    /// Allowed?
    pub allowed: bool,
    /// The authorizer's reason (for logs; may be empty).
    pub reason: String,
}

/// The SubjectAccessReview call, behind a trait so the cache can be tested without a server.
#[async_trait]
pub trait AccessReviewApi: Send + Sync {
    /// Sends one review.
    async fn review(&self, request: &AccessRequest) -> Result<AccessAnswer, KubeError>;
}

/// The real SubjectAccessReview against the Kubernetes API.
pub struct KubeAccessReview {
    client: kube::Client,
    timeout: Duration,
}

impl KubeAccessReview {
    /// Wraps a client.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

#[async_trait]
impl AccessReviewApi for KubeAccessReview {
    async fn review(&self, request: &AccessRequest) -> Result<AccessAnswer, KubeError> {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let review = request.to_review();
        let answer = crate::metrics::timed(
            "subjectaccessreview",
            with_deadline(self.timeout, api.create(&PostParams::default(), &review)),
        )
        .await?;
        let status = answer.status.unwrap_or_default();
        Ok(AccessAnswer {
            // `denied` true is an explicit deny; `allowed` false without it is "no opinion",
            // which for us is a deny as well.
            allowed: status.allowed && status.denied != Some(true),
            reason: status.reason.unwrap_or_default(),
        })
    }
}

/// Cached SubjectAccessReviews.
pub struct AccessReviewer {
    api: Arc<dyn AccessReviewApi>,
    config: SubjectAccessReviewConfig,
    clock: SharedClock,
    cache: ReviewCache<AccessRequest, AccessAnswer>,
    /// Reviews per identity (`review_rate`), spent only on cache misses.
    budget: Option<KeyedBudget>,
}

impl AccessReviewer {
    /// Builds the reviewer.
    pub fn new(
        api: Arc<dyn AccessReviewApi>,
        config: SubjectAccessReviewConfig,
        clock: SharedClock,
    ) -> Self {
        // The key holds names from the request's path: it counts one entry per 512 bytes.
        let cache = ReviewCache::weighed(
            "subjectaccessreview",
            config.cache_capacity,
            AccessRequest::weight,
            clock.clone(),
        );
        let budget = config.review_rate.and_then(KeyedBudget::new);
        Self {
            api,
            config,
            clock,
            cache,
            budget,
        }
    }

    /// Whether the identity may do it; from the cache when possible.
    pub async fn check(&self, request: &AccessRequest) -> Result<AccessAnswer, ReviewError> {
        self.cache
            .get_or_review(request, || async {
                if let Some(budget) = &self.budget {
                    budget
                        .spend(&request.user)
                        .map_err(ReviewError::BudgetSpent)?;
                }
                let answer = self.api.review(request).await?;
                let ttl = if answer.allowed {
                    self.config.allow_ttl
                } else {
                    self.config.deny_ttl
                };
                Ok::<_, ReviewError>((answer, self.clock.now() + ttl))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::identity::AuthMethod;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Api(AtomicUsize);

    #[async_trait]
    impl AccessReviewApi for Api {
        async fn review(&self, request: &AccessRequest) -> Result<AccessAnswer, KubeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(AccessAnswer {
                allowed: request.attributes.namespace == "mine",
                reason: String::new(),
            })
        }
    }

    fn request(namespace: &str) -> AccessRequest {
        let identity = Identity {
            namespaces: Vec::new(),
            user: "alice".into(),
            groups: vec!["g".into()],
            uid: None,
            extra: Default::default(),
            method: AuthMethod::Session,
            issuer: None,
        };
        AccessRequest::new(
            &identity,
            ResourceAttributes {
                namespace: namespace.into(),
                verb: "get".into(),
                group: "kubeflow.org".into(),
                version: String::new(),
                resource: "notebooks".into(),
                subresource: String::new(),
                name: "nb".into(),
            },
        )
    }

    #[tokio::test]
    async fn allow_and_deny_have_their_own_ttls_and_equal_reviews_coalesce() {
        let clock = ManualClock::new();
        let api = Arc::new(Api(AtomicUsize::new(0)));
        let reviewer = AccessReviewer::new(
            api.clone(),
            SubjectAccessReviewConfig {
                allow_ttl: Duration::from_secs(10),
                deny_ttl: Duration::from_secs(5),
                cache_capacity: 100,
                review_rate: None,
            },
            Arc::new(clock.clone()),
        );
        let mine = request("mine");
        let theirs = request("theirs");
        let answers = futures::future::join_all((0..20).map(|_| reviewer.check(&mine))).await;
        assert!(answers.iter().all(|a| a.as_ref().unwrap().allowed));
        assert!(!reviewer.check(&theirs).await.unwrap().allowed);
        assert_eq!(api.0.load(Ordering::SeqCst), 2);
        clock.advance(Duration::from_secs(5));
        reviewer.check(&mine).await.unwrap();
        reviewer.check(&theirs).await.unwrap();
        assert_eq!(
            api.0.load(Ordering::SeqCst),
            3,
            "deny expired after 5s, allow did not"
        );
        clock.advance(Duration::from_secs(5));
        reviewer.check(&mine).await.unwrap();
        assert_eq!(api.0.load(Ordering::SeqCst), 4, "allow expired after 10s");
    }

    #[test]
    fn review_carries_identity_and_attributes() {
        let review = request("mine").to_review();
        let json = serde_json::to_value(&review).unwrap();
        assert_eq!(json["spec"]["user"], "alice");
        assert_eq!(json["spec"]["groups"][0], "g");
        assert_eq!(json["spec"]["resourceAttributes"]["namespace"], "mine");
        assert_eq!(json["spec"]["resourceAttributes"]["group"], "kubeflow.org");
        assert_eq!(json["spec"]["resourceAttributes"]["name"], "nb");
    }
}
