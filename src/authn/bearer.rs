//! Bearer JWTs from trusted OIDC issuers (`oidc.issuer` and `oidc.extra_issuers`): CLI users and
//! scripts holding an ID token. Verified locally against each issuer's JWKS (refetched, rate
//! limited, when a token names an unknown key); tokens from other issuers fall through to
//! TokenReview.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
        }
    }

    /// Whether the token claims to come from one of our issuers (read without verifying, only
    /// to choose the verifier).
    pub fn claims_our_issuer(&self, token: &str) -> bool {
        self.issuer_of(token).is_some()
    }

    fn issuer_of(&self, token: &str) -> Option<&IssuerKeys> {
        let claims = super::service_account::unverified_claims(token)?;
        let iss = claims.get("iss")?.as_str()?.trim_end_matches('/');
        self.issuers.iter().find(|i| i.issuer == iss)
    }

    /// Verifies the token and returns its identity.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, BearerError> {
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
        if claims.get("exp").and_then(Value::as_u64).is_none() {
            return Err(BearerError::Invalid("no exp".into()));
        }
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BearerError::Invalid(format!("no {:?} claim", self.user_claim)))?;
        Ok(Identity {
            user: user.to_string(),
            groups: groups(claims.get(&self.groups_claim)),
            uid: claims.get("sub").and_then(Value::as_str).map(String::from),
            extra: Default::default(),
            method: AuthMethod::OidcJwt,
        })
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
