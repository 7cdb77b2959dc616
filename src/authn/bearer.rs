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

use super::login::{VerifyError, groups, verify_with};
use super::oidc::REFETCH_INTERVAL;
use crate::identity::{AuthMethod, Identity};

/// One issuer's keys.
struct IssuerKeys {
    issuer: String,
    jwks: RwLock<Option<(Arc<JwkSet>, Instant)>>,
}

/// The verifier.
pub struct OidcBearer {
    issuers: Vec<IssuerKeys>,
    audiences: Vec<String>,
    user_claim: String,
    groups_claim: String,
    http: openidconnect::reqwest::Client,
    /// Tokens that passed verification, by SHA-256, with when they stop counting: a CLI or a
    /// script sends one ID token on every request, and checking its signature each time costs
    /// more than the rest of the check. Kept until the token's `exp`, at most [`VERIFIED_FOR`],
    /// so a key the issuer withdraws stops counting within that time.
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
    #[error("issuer unavailable: {0}")]
    Unavailable(String),
}

impl OidcBearer {
    /// Verifier for these issuers and audiences.
    pub fn new(
        issuers: Vec<String>,
        audiences: Vec<String>,
        user_claim: String,
        groups_claim: String,
        http: openidconnect::reqwest::Client,
    ) -> Self {
        Self {
            issuers: issuers
                .into_iter()
                .map(|issuer| IssuerKeys {
                    issuer: issuer.trim_end_matches('/').to_string(),
                    jwks: RwLock::new(None),
                })
                .collect(),
            audiences,
            user_claim,
            groups_claim,
            http,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_FOR)
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
        self.issuers.iter().find(|i| i.issuer == iss)
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
        let (identity, exp) = self.verify(token).await?;
        let identity = Arc::new(identity);
        let until = exp.min(SystemTime::now() + VERIFIED_FOR);
        self.verified.insert(*key, (identity.clone(), until));
        Ok(identity)
    }

    /// Verifies the token: its identity and its expiry.
    async fn verify(&self, token: &str) -> Result<(Identity, SystemTime), BearerError> {
        let issuer = self
            .issuer_of(token)
            .ok_or_else(|| BearerError::Invalid("not from a trusted issuer".into()))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| BearerError::Invalid(e.to_string()))?;
        let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        let jwks = self.keys(issuer, false).await?;
        let claims = match verify_with(&jwks, token, &header, &issuer.issuer, &audiences) {
            Err(VerifyError::UnknownKey) => {
                let fresh = self.keys(issuer, true).await?;
                verify_with(&fresh, token, &header, &issuer.issuer, &audiences)
            }
            other => other,
        }
        .map_err(|e| BearerError::Invalid(format!("{e:?}")))?;
        // jsonwebtoken checks exp; insist that there is one.
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return Err(BearerError::Invalid("no exp".into()));
        };
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BearerError::Invalid(format!("no {:?} claim", self.user_claim)))?;
        let identity = Identity {
            user: user.to_string(),
            groups: groups(claims.get(&self.groups_claim)),
            uid: claims.get("sub").and_then(Value::as_str).map(String::from),
            extra: Default::default(),
            method: AuthMethod::OidcJwt,
        };
        Ok((identity, SystemTime::UNIX_EPOCH + Duration::from_secs(exp)))
    }

    async fn keys(&self, issuer: &IssuerKeys, refetch: bool) -> Result<Arc<JwkSet>, BearerError> {
        if let Some((jwks, fetched)) = &*issuer.jwks.read().await
            && (!refetch || fetched.elapsed() < REFETCH_INTERVAL)
        {
            return Ok(jwks.clone());
        }
        let mut slot = issuer.jwks.write().await;
        if let Some((jwks, fetched)) = &*slot
            && fetched.elapsed() < REFETCH_INTERVAL
        {
            return Ok(jwks.clone());
        }
        let jwks = Arc::new(
            self.fetch(&issuer.issuer)
                .await
                .map_err(BearerError::Unavailable)?,
        );
        *slot = Some((jwks.clone(), Instant::now()));
        Ok(jwks)
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let get = |url: String| async move {
            let response = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| format!("{url}: {e}"))?;
            response.bytes().await.map_err(|e| format!("{url}: {e}"))
        };
        let discovery: Value = serde_json::from_slice(
            &get(format!("{issuer}/.well-known/openid-configuration")).await?,
        )
        .map_err(|e| e.to_string())?;
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery has no jwks_uri")?;
        serde_json::from_slice(&get(jwks_uri.to_string()).await?).map_err(|e| e.to_string())
    }
}
