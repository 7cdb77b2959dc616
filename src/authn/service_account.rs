//! Kubernetes service-account tokens, checked with a TokenReview.
//!
//! Reviews are cached by the SHA-256 of the token (the token itself is never stored or logged):
//! an accepted token until `cache_ttl` or its own `exp`, whichever is sooner; a rejected token for
//! `failure_cache_ttl`. Concurrent reviews of one token are coalesced into one API call. API
//! errors are not cached and become 503s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use crate::cache::ReviewCache;
use crate::clock::SharedClock;
use crate::config::TokenReviewConfig;
use crate::identity::{AuthMethod, Identity};
use crate::k8s::{KubeError, ReviewError, with_deadline};
use crate::ratelimit::CallBudget;

/// What the API server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// The token is valid for one of our audiences.
    Authenticated(Arc<Identity>),
    /// The token is not valid.
    Rejected(Rejection),
}

/// Who refused a token, and why (the words never contain the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// authgate's bound-token policy, before any review: its own words, which help the caller
    /// fix the token, so the client may read them.
    Policy(Arc<str>),
    /// The API server (or its answer failed authgate's checks): logged, not shown.
    ApiServer(Arc<str>),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Policy(why) | Rejection::ApiServer(why) => f.write_str(why),
        }
    }
}

/// The TokenReview call, behind a trait so the cache can be tested without a server.
#[async_trait]
pub trait TokenReviewApi: Send + Sync {
    /// Reviews one token for the given audiences.
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, KubeError>;
}

/// The real TokenReview against the Kubernetes API.
#[derive(Clone)]
pub struct KubeTokenReview {
    client: kube::Client,
    timeout: Duration,
}

impl KubeTokenReview {
    /// Wraps a client.
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

#[async_trait]
impl TokenReviewApi for KubeTokenReview {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, KubeError> {
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..Default::default()
        };
        let answer = crate::metrics::timed(
            "tokenreview",
            with_deadline(self.timeout, api.create(&PostParams::default(), &review)),
        )
        .await?;
        Ok(answer.status.unwrap_or_default())
    }
}

/// Authenticates service-account bearer tokens.
pub struct ServiceAccountAuthenticator {
    api: Arc<dyn TokenReviewApi>,
    config: TokenReviewConfig,
    clock: SharedClock,
    cache: ReviewCache<[u8; 32], Review>,
    budget: Option<CallBudget>,
    /// Tokens (SHA-256) that passed a review within the last hour. Their re-reviews, when the
    /// cached answer runs out, do not spend the budget: a flood of made-up tokens cannot lock
    /// out workloads that were already running. This only decides who waits for the budget;
    /// every review is still made and a revoked token is still refused.
    known_good: moka::sync::Cache<[u8; 32], ()>,
}

/// How long a token that passed a review stays exempt from the review budget.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(3600);

impl ServiceAccountAuthenticator {
    /// Builds the authenticator.
    pub fn new(
        api: Arc<dyn TokenReviewApi>,
        config: TokenReviewConfig,
        clock: SharedClock,
    ) -> Self {
        let cache = ReviewCache::new("tokenreview", config.cache_capacity, clock.clone());
        let budget = config.review_rate.and_then(CallBudget::new);
        let known_good = moka::sync::Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(KNOWN_GOOD_FOR)
            .build();
        Self {
            api,
            config,
            clock,
            cache,
            budget,
            known_good,
        }
    }

    /// Reviews a token, from the cache when possible. The cache key is the token's SHA-256.
    /// Tokens the bound-token policy refuses are rejected before any review: they cost the
    /// API server nothing.
    pub async fn authenticate(&self, token: &str) -> Result<Review, ReviewError> {
        self.authenticate_keyed(token, &token_key(token)).await
    }

    /// The cached answer for a token (by [`token_key`]), if there is one; never reviews.
    pub async fn cached(&self, key: &[u8; 32]) -> Option<Review> {
        self.cache.peek(key).await
    }

    /// As [`Self::authenticate`], with the token's key already computed.
    pub async fn authenticate_keyed(
        &self,
        token: &str,
        key: &[u8; 32],
    ) -> Result<Review, ReviewError> {
        // A cached answer was given to a token that passed the policy (an accepted one is never
        // kept past the token's own `exp`): no need to decode the token again.
        if let Some(answer) = self.cache.peek(key).await {
            return Ok(answer);
        }
        self.review_missed(token, key).await
    }

    /// As [`Self::authenticate_keyed`], for a caller that has just found no cached answer
    /// ([`Self::cached`]): the policy, then one review for all concurrent requests with it.
    pub async fn review_missed(&self, token: &str, key: &[u8; 32]) -> Result<Review, ReviewError> {
        if let Err(why) = bound_token_policy(token, &self.config, self.clock.unix_now()) {
            return Ok(Review::Rejected(Rejection::Policy(why.into())));
        }
        self.cache
            .get_or_review(key, || self.review_uncached(key, token))
            .await
    }

    /// Runs only on a cache miss (once for concurrent requests with one token), so the budget
    /// counts calls to the API server, not requests.
    async fn review_uncached(
        &self,
        key: &[u8; 32],
        token: &str,
    ) -> Result<(Review, SystemTime), ReviewError> {
        if let Some(budget) = &self.budget
            && !self.known_good.contains_key(key)
        {
            budget.spend().map_err(ReviewError::BudgetSpent)?;
        }
        let status = self.api.review(token, &self.config.audiences).await?;
        let now = self.clock.now();
        Ok(match status_to_identity(status, &self.config.audiences) {
            Ok(identity) => {
                self.known_good.insert(*key, ());
                let mut valid_until = now + self.config.cache_ttl;
                if let Some(exp) = unverified_exp(token) {
                    valid_until = valid_until.min(exp);
                }
                (Review::Authenticated(Arc::new(identity)), valid_until)
            }
            Err(reason) => {
                self.known_good.invalidate(key);
                (
                    Review::Rejected(Rejection::ApiServer(reason.into())),
                    now + self.config.failure_cache_ttl,
                )
            }
        })
    }
}

/// The key bearer tokens are cached under: their SHA-256 (the token itself is never stored).
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The issuer of legacy, secret-based service-account tokens (they never expire).
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// What a stolen service-account token may be worth: only a bound, expiring token, not living
/// longer than `max_lifetime`, for one of our audiences. Read from the token's claims without
/// verifying them; the TokenReview that follows verifies the token itself.
pub fn bound_token_policy(token: &str, config: &TokenReviewConfig, now: u64) -> Result<(), String> {
    let claims = unverified_claims(token);
    if config.require_bound {
        let Some(claims) = &claims else {
            return Err("not a bound service-account token (not a JWT)".into());
        };
        if claims.get("iss").and_then(|v| v.as_str()) == Some(LEGACY_ISSUER) {
            return Err(
                "legacy secret-based service-account tokens are refused: use a projected token"
                    .into(),
            );
        }
        if claims.get("exp").and_then(|v| v.as_u64()).is_none() {
            return Err("service-account tokens without an expiry are refused".into());
        }
    }
    if let Some(max) = config.max_lifetime
        && let Some(claims) = &claims
        && let (Some(iat), Some(exp)) = (
            claims.get("iat").and_then(|v| v.as_u64()),
            claims.get("exp").and_then(|v| v.as_u64()),
        )
        && exp.saturating_sub(iat) > max.as_secs()
    {
        return Err(format!(
            "service-account token lives longer than the allowed {}",
            humantime::format_duration(max)
        ));
    }
    if !config.audiences.is_empty()
        && let Some(claims) = &claims
    {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if !auds.iter().any(|a| config.audiences.iter().any(|c| c == a)) {
            return Err(format!(
                "service-account token is not for this gateway's audiences ({})",
                config.audiences.join(", ")
            ));
        }
    }
    if let Some(exp) = claims
        .as_ref()
        .and_then(|c| c.get("exp"))
        .and_then(|v| v.as_u64())
        && exp <= now
    {
        return Err("service-account token has expired".into());
    }
    Ok(())
}

/// The prefix of every service account's user name.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The API server's answer as an identity. When authgate asked for audiences, the answer must
/// name one of them: an API server that is not audience-aware ignores the requested audiences
/// and says so only by leaving `status.audiences` out (the TokenReview API tells clients to
/// check it). A user that is not a service account (the API server also authenticates OIDC and
/// webhook users) is labelled as such, never as a service account.
fn status_to_identity(status: TokenReviewStatus, requested: &[String]) -> Result<Identity, String> {
    if status.authenticated != Some(true) {
        return Err(status
            .error
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "token not authenticated".into()));
    }
    if !requested.is_empty() {
        let confirmed = status
            .audiences
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|a| requested.contains(a));
        if !confirmed {
            return Err(format!(
                "the API server did not confirm the token is for this gateway's audiences \
                 (asked for {}, answered {:?})",
                requested.join(", "),
                status.audiences.unwrap_or_default()
            ));
        }
    }
    let user = status.user.unwrap_or_default();
    let username = user
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| "the TokenReview authenticated the token but named no user".to_string())?;
    let method = if username.starts_with(SERVICE_ACCOUNT_PREFIX) {
        AuthMethod::ServiceAccount
    } else {
        AuthMethod::KubernetesUser
    };
    Ok(Identity {
        namespaces: Vec::new(),
        user: username,
        groups: user.groups.unwrap_or_default(),
        uid: user.uid.filter(|u| !u.is_empty()),
        extra: user.extra.unwrap_or_default().into_iter().collect(),
        method,
        issuer: None,
    })
}

/// The `exp` of a JWT-shaped token, read without verifying it: only ever used to shorten how
/// long an API-server-approved review is cached.
pub fn unverified_exp(token: &str) -> Option<SystemTime> {
    let claims = unverified_claims(token)?;
    let exp = claims.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// The payload of a JWT-shaped token, not verified.
pub fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(&unverified_payload(token)?).ok()
}

/// The decoded (base64url) payload of a JWT-shaped token, not verified: for callers that read
/// only some claims into their own type.
pub fn unverified_payload(token: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingApi {
        calls: AtomicUsize,
        fail: bool,
    }

    #[async_trait]
    impl TokenReviewApi for CountingApi {
        async fn review(
            &self,
            token: &str,
            requested: &[String],
        ) -> Result<TokenReviewStatus, KubeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail {
                return Err(KubeError::transport("down"));
            }
            Ok(if token == "good" {
                TokenReviewStatus {
                    authenticated: Some(true),
                    audiences: Some(requested.to_vec()),
                    user: Some(UserInfo {
                        username: Some("system:serviceaccount:ns:sa".into()),
                        groups: Some(vec!["system:serviceaccounts".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("invalid bearer token".into()),
                    ..Default::default()
                }
            })
        }
    }

    fn authenticator(
        fail: bool,
        clock: &ManualClock,
    ) -> (ServiceAccountAuthenticator, Arc<CountingApi>) {
        let api = Arc::new(CountingApi {
            calls: AtomicUsize::new(0),
            fail,
        });
        let config = TokenReviewConfig {
            cache_ttl: Duration::from_secs(60),
            failure_cache_ttl: Duration::from_secs(10),
            // These tests are about the cache; the opaque test tokens are not bound tokens.
            require_bound: false,
            ..Default::default()
        };
        (
            ServiceAccountAuthenticator::new(api.clone(), config, Arc::new(clock.clone())),
            api,
        )
    }

    #[tokio::test]
    async fn concurrent_reviews_of_one_token_are_coalesced_and_cached_until_ttl() {
        let clock = ManualClock::new();
        let (auth, api) = authenticator(false, &clock);
        let results = futures::future::join_all((0..50).map(|_| auth.authenticate("good"))).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(Review::Authenticated(_))))
        );
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(59));
        auth.authenticate("good").await.unwrap();
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(1));
        auth.authenticate("good").await.unwrap();
        assert_eq!(
            api.calls.load(Ordering::SeqCst),
            2,
            "reviewed again after cache_ttl"
        );
    }

    #[tokio::test]
    async fn a_spent_budget_refuses_new_tokens_but_not_re_reviews_of_known_good_ones() {
        let clock = ManualClock::new();
        let api = Arc::new(CountingApi {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let config = TokenReviewConfig {
            require_bound: false,
            review_rate: Some(crate::ratelimit::Rate { rps: 1, burst: 2 }),
            ..Default::default()
        };
        let auth = ServiceAccountAuthenticator::new(api.clone(), config, Arc::new(clock.clone()));
        // The budget of two: the good token and one made-up token.
        assert!(matches!(
            auth.authenticate("good").await,
            Ok(Review::Authenticated(_))
        ));
        assert!(matches!(
            auth.authenticate("made-up-1").await,
            Ok(Review::Rejected(_))
        ));
        // Spent: another unknown token is throttled without a call.
        assert!(matches!(
            auth.authenticate("made-up-2").await,
            Err(ReviewError::BudgetSpent(_))
        ));
        assert_eq!(api.calls.load(Ordering::SeqCst), 2);
        // The good token's cached answer runs out: its re-review is made regardless.
        clock.advance(Duration::from_secs(61));
        assert!(matches!(
            auth.authenticate("good").await,
            Ok(Review::Authenticated(_))
        ));
        assert_eq!(api.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rejections_are_cached_briefly() {
        let clock = ManualClock::new();
        let (auth, api) = authenticator(false, &clock);
        assert!(matches!(
            auth.authenticate("bad").await,
            Ok(Review::Rejected(_))
        ));
        clock.advance(Duration::from_secs(9));
        auth.authenticate("bad").await.unwrap();
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(1));
        auth.authenticate("bad").await.unwrap();
        assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn api_errors_are_not_cached() {
        let clock = ManualClock::new();
        let (auth, api) = authenticator(true, &clock);
        assert!(auth.authenticate("good").await.is_err());
        assert!(auth.authenticate("good").await.is_err());
        assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn the_bound_token_policy_refuses_before_any_review() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = |claims: &str| format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims));
        let config = TokenReviewConfig {
            audiences: vec!["pipelines.kubeflow.org".into()],
            max_lifetime: Some(Duration::from_secs(86_400)),
            ..Default::default()
        };
        let now = 1_800_000_000;
        let ok = token(r#"{"aud":["pipelines.kubeflow.org"],"iat":1799999000,"exp":1800003600}"#);
        assert_eq!(bound_token_policy(&ok, &config, now), Ok(()));
        for (claims, why) in [
            (r#"{"iss":"kubernetes/serviceaccount"}"#, "legacy"),
            (r#"{"aud":["pipelines.kubeflow.org"]}"#, "without an expiry"),
            (
                r#"{"aud":["x"],"iat":1799999000,"exp":1800003600}"#,
                "audiences",
            ),
            (
                r#"{"aud":["pipelines.kubeflow.org"],"iat":1700000000,"exp":1800003600}"#,
                "longer",
            ),
            (
                r#"{"aud":["pipelines.kubeflow.org"],"iat":1799990000,"exp":1799999999}"#,
                "expired",
            ),
        ] {
            let err = bound_token_policy(&token(claims), &config, now).unwrap_err();
            assert!(err.contains(why), "{claims}: {err}");
        }
        assert!(
            bound_token_policy("opaque", &config, now)
                .unwrap_err()
                .contains("not a JWT")
        );
    }

    #[test]
    fn reads_exp_of_jwt_shaped_tokens_only() {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1700000000}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(
            unverified_exp(&token),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(unverified_exp("opaque-token"), None);
    }
}
