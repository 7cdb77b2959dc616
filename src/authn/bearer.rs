//! Bearer JWTs from trusted OIDC issuers (`oidc.issuer` and `oidc.extra_issuers`): CLI users and
//! scripts holding an ID token. Verified locally against each issuer's JWKS (refetched, rate
//! limited, when a token names an unknown key); tokens from other issuers fall through to
//! TokenReview.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;
use tokio::sync::RwLock;

use super::claims::{ClaimError, ClaimRules};
use super::jwt::{VerifyError, jwks_max_age, verify_with};
use super::oidc::{ProviderError, REFETCH_INTERVAL};
use crate::identity::{AuthMethod, Identity};

/// One issuer: how its claims are read, and its keys.
struct IssuerKeys {
    rules: ClaimRules,
    keys: RwLock<KeyState>,
    /// Held by the one fetch in flight; `keys` is never locked across a fetch, so requests go
    /// on with the keys held while the provider is slow.
    fetching: tokio::sync::Mutex<()>,
}

/// An issuer's keys as last fetched.
#[derive(Default)]
struct KeyState {
    /// The keys, when they were fetched, and how long they may be used.
    current: Option<(Arc<JwkSet>, Instant, Duration)>,
    /// The last fetch, successful or not: fetches are at most one per refetch interval, so
    /// made-up `kid`s or a provider that is down cannot cause a storm.
    last_attempt: Option<Instant>,
}

impl KeyState {
    /// The keys, if they are still within their age.
    fn fresh(&self) -> Option<(Arc<JwkSet>, Instant)> {
        let (keys, fetched, max_age) = self.current.as_ref()?;
        (fetched.elapsed() < *max_age).then(|| (keys.clone(), *fetched + *max_age))
    }

    /// Whether a fetch was tried within `interval`.
    fn tried_within(&self, interval: Duration) -> bool {
        self.last_attempt.is_some_and(|t| t.elapsed() < interval)
    }

    /// The keys to use when no fetch may be made now: fresh ones, or ones past their age by
    /// less than `grace` (the provider is slow or down), until the next fetch may be made.
    /// Older keys are not used at all: a withdrawn key must stop counting in bounded time.
    fn usable(
        &self,
        interval: Duration,
        grace: Duration,
    ) -> Result<(Arc<JwkSet>, Instant), BearerError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        match &self.current {
            Some((keys, fetched, max_age)) if fetched.elapsed() < *max_age + grace => {
                let until = (Instant::now() + interval).min(*fetched + *max_age + grace);
                Ok((keys.clone(), until))
            }
            Some(_) => Err(BearerError::Unavailable(ProviderError::new(
                "the issuer's keys are too old to use and cannot be fetched",
            ))),
            None => Err(BearerError::Unavailable(ProviderError::new(
                "the issuer's keys could not be fetched lately",
            ))),
        }
    }
}

/// The verifier.
pub struct OidcBearer {
    issuers: Vec<IssuerKeys>,
    audiences: Vec<String>,
    /// `oidc.jwks_max_age`.
    jwks_max_age: Duration,
    http: reqwest::Client,
    /// Tokens that passed verification, by SHA-256, with when they stop counting: a CLI or a
    /// script sends one ID token on every request, and checking its signature each time costs
    /// more than the rest of the check. Kept until the token's `exp`, at most [`VERIFIED_FOR`],
    /// and never past the age of the keys that verified it, so a key the issuer withdraws stops
    /// counting within `oidc.jwks_max_age`.
    verified: moka::sync::Cache<[u8; 32], (Arc<Identity>, SystemTime)>,
}

/// How long a verified bearer token is trusted without checking its signature again.
pub const VERIFIED_FOR: Duration = Duration::from_secs(60);

/// Most verified tokens kept.
const VERIFIED_CAPACITY: u64 = 10_000;

/// Only the issuer of a token's claims (the rest is skipped, not decoded).
#[derive(serde::Deserialize)]
struct IssuerClaim<'a> {
    #[serde(borrow)]
    iss: Option<Cow<'a, str>>,
}

/// Why a token was refused, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// The token is not acceptable (401).
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The issuer's keys could not be fetched (503).
    #[error("issuer unavailable")]
    Unavailable(#[source] ProviderError),
    /// The token is genuine, but what it vouches for is not an identity authgate accepts
    /// (403, and the caller is told why).
    #[error(transparent)]
    Refused(ClaimError),
}

impl OidcBearer {
    /// Verifier for these issuers (each with its claim rules) and audiences.
    pub fn new(
        issuers: Vec<ClaimRules>,
        audiences: Vec<String>,
        jwks_max_age: Duration,
        http: reqwest::Client,
    ) -> Self {
        Self {
            issuers: issuers
                .into_iter()
                .map(|rules| IssuerKeys {
                    rules,
                    keys: RwLock::new(KeyState::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            audiences,
            jwks_max_age,
            http,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_FOR.min(jwks_max_age))
                .build(),
        }
    }

    /// Whether the token claims to come from one of our issuers (read without verifying, only
    /// to choose the verifier).
    pub fn claims_our_issuer(&self, token: &str) -> bool {
        self.issuer_of(token).is_some()
    }

    fn issuer_of(&self, token: &str) -> Option<&IssuerKeys> {
        let payload = super::service_account::unverified_payload(token)?;
        let claim: IssuerClaim = serde_json::from_slice(&payload).ok()?;
        let iss = claim.iss?;
        let iss = iss.trim_end_matches('/');
        self.issuers.iter().find(|i| **i.rules.issuer() == *iss)
    }

    /// The identity of a token (by [`super::service_account::token_key`]) verified lately.
    pub fn cached(&self, key: &[u8; 32]) -> Option<Arc<Identity>> {
        let (identity, until) = self.verified.get(key)?;
        let fresh = SystemTime::now() < until;
        if fresh {
            crate::metrics::global().cache_lookup("oidc_bearer", true);
        }
        fresh.then_some(identity)
    }

    /// Verifies the token and remembers its identity under `key` (its
    /// [`super::service_account::token_key`]) for [`Self::cached`], which callers ask first.
    pub async fn authenticate(
        &self,
        token: &str,
        key: &[u8; 32],
    ) -> Result<Arc<Identity>, BearerError> {
        crate::metrics::global().cache_lookup("oidc_bearer", false);
        let (identity, exp, keys_until) = self.verify(token).await?;
        let identity = Arc::new(identity);
        let keys_until = SystemTime::now() + keys_until.saturating_duration_since(Instant::now());
        let until = exp.min(SystemTime::now() + VERIFIED_FOR).min(keys_until);
        self.verified.insert(*key, (identity.clone(), until));
        Ok(identity)
    }

    /// Verifies the token: its identity, its expiry, and until when the keys that verified it
    /// may be used.
    async fn verify(&self, token: &str) -> Result<(Identity, SystemTime, Instant), BearerError> {
        let issuer = self
            .issuer_of(token)
            .ok_or_else(|| BearerError::Invalid("not from a trusted issuer".into()))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| BearerError::Invalid(e.to_string()))?;
        let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        let iss = issuer.rules.issuer().as_ref();
        let (jwks, mut keys_until) = self.keys(issuer, false).await?;
        let claims = match verify_with(&jwks, token, &header, iss, &audiences) {
            Err(VerifyError::UnknownKey) => {
                let (fresh, until) = self.keys(issuer, true).await?;
                keys_until = until;
                verify_with(&fresh, token, &header, iss, &audiences)
            }
            other => other,
        }
        .map_err(|e| BearerError::Invalid(format!("{e:?}")))?;
        // jsonwebtoken checks exp; insist that there is one.
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return Err(BearerError::Invalid("no exp".into()));
        };
        // The issuer signs other JWTs for this client too: a logout token (which reaches a
        // public endpoint and logs) is no credential.
        let logout_typ = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("logout+jwt"));
        if logout_typ || claims.contains_key("events") {
            return Err(BearerError::Invalid(
                "a logout token is not a bearer credential".into(),
            ));
        }
        // With several audiences, OIDC Core 3.1.3.7: the authorized party must be one of ours.
        if let Some(Value::Array(aud)) = claims.get("aud")
            && aud.len() > 1
        {
            let azp = claims.get("azp").and_then(Value::as_str);
            if !azp.is_some_and(|azp| self.audiences.iter().any(|a| a == azp)) {
                return Err(BearerError::Invalid(
                    "a token for several audiences must name one of ours as azp".into(),
                ));
            }
        }
        let who = issuer
            .rules
            .identity(&claims)
            .map_err(BearerError::Refused)?;
        let identity = Identity {
            namespaces: Vec::new(),
            user: who.user,
            groups: who.groups,
            uid: who.sub,
            extra: Default::default(),
            method: AuthMethod::OidcJwt,
            issuer: Some(issuer.rules.issuer().clone()),
        };
        let exp = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(exp))
            .ok_or_else(|| BearerError::Invalid("exp out of range".into()))?;
        Ok((identity, exp, keys_until))
    }

    /// The issuer's keys and until when they may be used. Fetched again when they are older
    /// than their age (`oidc.jwks_max_age`, or less if the provider says so) or, with `refetch`,
    /// because a token names an unknown key; either way at most once per refetch interval,
    /// failed or not. While the provider is slow or down, the keys held go on being used for at
    /// most `oidc.jwks_max_age` past their age; after that bearer tokens get 503.
    async fn keys(
        &self,
        issuer: &IssuerKeys,
        refetch: bool,
    ) -> Result<(Arc<JwkSet>, Instant), BearerError> {
        let interval = REFETCH_INTERVAL.min(self.jwks_max_age);
        let grace = self.jwks_max_age;
        {
            let state = issuer.keys.read().await;
            if !refetch && let Some(fresh) = state.fresh() {
                return Ok(fresh);
            }
            if state.tried_within(interval) {
                return state.usable(interval, grace);
            }
        }
        let _fetch = match issuer.fetching.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                // Another request is fetching: go on with what is held, or wait for it.
                if let Ok(held) = issuer.keys.read().await.usable(interval, grace) {
                    return Ok(held);
                }
                issuer.fetching.lock().await
            }
        };
        {
            let mut state = issuer.keys.write().await;
            if state.tried_within(interval) {
                // Fetched while this request waited.
                return state.usable(interval, grace);
            }
            state.last_attempt = Some(Instant::now());
        }
        let fetched = self.fetch(issuer.rules.issuer()).await;
        let mut state = issuer.keys.write().await;
        match fetched {
            Ok((jwks, cache_control)) => {
                let jwks = Arc::new(jwks);
                let max_age = jwks_max_age(
                    cache_control.as_deref(),
                    self.jwks_max_age,
                    REFETCH_INTERVAL,
                );
                let now = Instant::now();
                state.current = Some((jwks.clone(), now, max_age));
                Ok((jwks, now + max_age))
            }
            Err(e) => {
                tracing::warn!(error = &e as &dyn std::error::Error, issuer = %issuer.rules.issuer(), "JWKS fetch failed");
                state
                    .usable(interval, grace)
                    .map_err(|_| BearerError::Unavailable(e))
            }
        }
    }

    /// The issuer's JWKS and its `Cache-Control` header.
    async fn fetch(&self, issuer: &str) -> Result<(JwkSet, Option<String>), ProviderError> {
        let get = |url: String| async move {
            let response = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| ProviderError::caused_by(format!("GET {url}"), e))?;
            let cache_control = response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = response
                .bytes()
                .await
                .map_err(|e| ProviderError::caused_by(format!("GET {url}"), e))?;
            Ok::<_, ProviderError>((body, cache_control))
        };
        let (discovery, _) = get(format!("{issuer}/.well-known/openid-configuration")).await?;
        let discovery: Value = serde_json::from_slice(&discovery)
            .map_err(|e| ProviderError::caused_by("discovery document", e))?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::new("the discovery document has no jwks_uri"))?;
        let (body, cache_control) = get(jwks_uri.to_string()).await?;
        let jwks =
            serde_json::from_slice(&body).map_err(|e| ProviderError::caused_by("JWKS", e))?;
        Ok((jwks, cache_control))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(age: Duration, max_age: Duration) -> KeyState {
        KeyState {
            current: Some((
                Arc::new(JwkSet { keys: Vec::new() }),
                Instant::now().checked_sub(age).unwrap(),
                max_age,
            )),
            last_attempt: Some(Instant::now()),
        }
    }

    #[test]
    fn keys_past_their_age_serve_only_within_the_grace() {
        let (interval, grace, five) = (
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_secs(300),
        );
        assert!(held(Duration::from_secs(60), five).fresh().is_some());
        let stale = held(Duration::from_secs(420), five);
        assert!(stale.fresh().is_none());
        let (_, until) = stale.usable(interval, grace).unwrap();
        assert!(until <= Instant::now() + interval);
        assert!(matches!(
            held(Duration::from_secs(601), five).usable(interval, grace),
            Err(BearerError::Unavailable(_))
        ));
        assert!(matches!(
            KeyState::default().usable(interval, grace),
            Err(BearerError::Unavailable(_))
        ));
    }
}
