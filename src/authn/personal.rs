//! Personal access tokens: made by a logged-in person for the command line, sent as
//! `Authorization: Bearer agt_…`. The secret is shown once and kept only as its hash, in the
//! session store ([`crate::store::tokens`]), so every replica honours it and a revocation
//! anywhere ends it everywhere. A token acts as the person (their user and groups as the
//! session had them), and only in its namespaces when it names some.
//!
//! The prefix makes a token recognizable: authgate never sends one to a TokenReview, and secret
//! scanners can find leaked ones (`agt_` followed by 43 base64url characters).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::session::{Found, new_secret};
use crate::authz::rules::is_namespace_name;
use crate::clock::SharedClock;
use crate::config::PersonalTokensConfig;
use crate::identity::{AuthMethod, Identity};
use crate::store::{Key, PersonalToken, StoreError, TokenStore};

/// What every personal access token starts with.
pub const PREFIX: &str = "agt_";

/// The identity's `extra` key that carries the token's id (its revocation handle).
pub const TOKEN_ID_EXTRA: &str = "authgate.io/token-id";

/// Most namespaces one token may name.
pub const MAX_NAMESPACES: usize = 50;

/// Longest name a token may have.
const MAX_NAME_LEN: usize = 64;

/// Characters that hide or reorder what a name shows: controls, zero-width and bidirectional
/// formatting characters.
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Whether a bearer token is a personal access token (by its prefix alone: such a token never
/// goes anywhere else).
pub fn is_personal(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// What a person asks for when making a token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Their label for it.
    #[serde(default)]
    pub name: String,
    /// How long it lives (`30d`, `12h`): required, at most `personal_tokens.max_lifetime`.
    #[serde(default)]
    pub expires_in: String,
    /// The namespaces it may act in; empty: wherever the person may.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A request judged acceptable: what the token will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Its name.
    pub name: String,
    /// How long it lives.
    pub lifetime: Duration,
    /// Its namespaces (empty: all the person's).
    pub namespaces: Vec<String>,
}

/// A token just made: the secret (shown once) and its record.
#[derive(Debug)]
pub struct Minted {
    /// `agt_…`.
    pub secret: String,
    /// What the store keeps.
    pub token: PersonalToken,
}

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The request asks for something not allowed (400); the words are for the person.
    #[error("{0}")]
    Invalid(String),
    /// The person holds `personal_tokens.max_per_user` tokens already (409).
    #[error("you hold {0} personal access tokens, the most allowed: revoke one first")]
    TooMany(u32),
    /// The session's login is not recent enough (403): log in again first.
    #[error(
        "making a personal access token needs a login in the last {0}: log in again at \
         /authgate/login?fresh=1&rd=/authgate/tokens"
    )]
    LoginRequired(String),
    /// The store failed (503).
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

/// Why a personal access token did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Unknown, revoked, expired, or made under other claim rules.
    #[error("unknown, revoked or expired personal access token")]
    Unknown,
    /// Personal access tokens are not enabled on this gateway.
    #[error("personal access tokens are not enabled on this gateway")]
    Disabled,
    /// The store failed.
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

/// Makes, checks, lists and revokes personal access tokens.
pub struct PersonalTokens {
    store: Arc<dyn TokenStore>,
    config: PersonalTokensConfig,
    clock: SharedClock,
    /// The login issuer's claim-rules fingerprint: a token made under other rules is refused.
    rules: u64,
    issuer: Arc<str>,
}

impl PersonalTokens {
    /// Over `store`, for the login issuer `issuer` whose claim rules have fingerprint `rules`.
    pub fn new(
        store: Arc<dyn TokenStore>,
        config: PersonalTokensConfig,
        clock: SharedClock,
        rules: u64,
        issuer: Arc<str>,
    ) -> Self {
        Self {
            store,
            config,
            clock,
            rules,
            issuer,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The identity a token stands for.
    pub async fn authenticate(&self, secret: &str) -> Result<Arc<Identity>, TokenError> {
        let key = Key::of(secret);
        let token = self
            .store
            .token(&key)
            .await
            .map_err(TokenError::Store)?
            .ok_or(TokenError::Unknown)?;
        let now = self.clock.unix_now();
        if token.expires_at <= now || token.rules != self.rules {
            return Err(TokenError::Unknown);
        }
        if token.last_used.is_none() {
            tracing::info!(
                target: "authgate::audit",
                event = "token_first_use",
                user = %token.user,
                id = %token.id,
                "personal access token used for the first time"
            );
        }
        if token
            .last_used
            .is_none_or(|t| t + crate::store::TOUCH_INTERVAL.as_secs() <= now)
            && let Err(e) = self.store.token_used(&key, now).await
        {
            // Only the "last used" column is lost: the token was found and is good.
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "could not record a token's use"
            );
        }
        Ok(Arc::new(Identity {
            user: token.user,
            groups: token.groups,
            uid: Some(token.sub),
            extra: BTreeMap::from([(TOKEN_ID_EXTRA.to_string(), vec![token.id])]),
            method: AuthMethod::PersonalToken,
            issuer: Some(self.issuer.clone()),
            namespaces: token.namespaces,
        }))
    }

    /// Judges what a person asks for, without making anything.
    pub fn judge(&self, asked: &TokenRequest) -> Result<Judged, MintError> {
        let name = asked.name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(MintError::Invalid(format!(
                "name: 1 to {MAX_NAME_LEN} characters, required"
            )));
        }
        if name.chars().any(hides_text) {
            return Err(MintError::Invalid(
                "name: no control or text-direction characters".to_string(),
            ));
        }
        let lifetime = self.lifetime(&asked.expires_in)?;
        let mut namespaces = Vec::new();
        for ns in asked.namespaces.iter().map(|n| n.trim()) {
            if !is_namespace_name(ns) {
                return Err(MintError::Invalid(
                    "namespaces: each must be a Kubernetes namespace name (lower-case letters, \
                     digits and '-', at most 63)"
                        .to_string(),
                ));
            }
            if !namespaces.iter().any(|n| n == ns) {
                namespaces.push(ns.to_string());
            }
        }
        if namespaces.len() > MAX_NAMESPACES {
            return Err(MintError::Invalid(format!(
                "namespaces: at most {MAX_NAMESPACES}"
            )));
        }
        Ok(Judged {
            name,
            lifetime,
            namespaces,
        })
    }

    /// Whether the session's login is recent enough to make a token.
    pub fn login_is_fresh(&self, session: &Found) -> bool {
        let now = self.clock.unix_now();
        session.session.auth_time > 0
            && now.saturating_sub(session.session.auth_time) <= self.config.fresh_login.as_secs()
    }

    /// Makes a token for the person logged in with `session`.
    pub async fn mint(&self, session: &Found, judged: Judged) -> Result<Minted, MintError> {
        if !self.login_is_fresh(session) {
            return Err(MintError::LoginRequired(
                humantime::format_duration(self.config.fresh_login).to_string(),
            ));
        }
        let Judged {
            name,
            lifetime,
            namespaces,
        } = judged;
        let user = &session.session.user;
        let held = self.store.tokens_of(user).await.map_err(MintError::Store)?;
        if held.len() >= self.config.max_per_user as usize {
            return Err(MintError::TooMany(self.config.max_per_user));
        }
        let now = self.clock.unix_now();
        let secret = format!("{PREFIX}{}", new_secret());
        let token = PersonalToken {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name,
            user: user.clone(),
            groups: session.session.groups.clone(),
            sub: session.session.sub.clone(),
            namespaces,
            created_at: now,
            expires_at: now + lifetime.as_secs(),
            last_used: None,
            rules: self.rules,
        };
        let max = self.config.max_per_user;
        if !self
            .store
            .create_token(&Key::of(&secret), &token, lifetime, max)
            .await
            .map_err(MintError::Store)?
        {
            return Err(MintError::TooMany(max));
        }
        tracing::info!(
            target: "authgate::audit",
            event = "token_created",
            user = %token.user,
            id = %token.id,
            name = %token.name,
            namespaces = ?token.namespaces,
            expires_at = token.expires_at,
            "personal access token created"
        );
        Ok(Minted { secret, token })
    }

    /// `expires_in` read and judged against `personal_tokens.max_lifetime`.
    fn lifetime(&self, expires_in: &str) -> Result<Duration, MintError> {
        let max = self.config.max_lifetime;
        let shown = humantime::format_duration(max);
        if expires_in.trim().is_empty() {
            return Err(MintError::Invalid(format!(
                "expires_in is required (such as 30d; at most {shown})"
            )));
        }
        let lifetime = humantime::parse_duration(expires_in.trim()).map_err(|_| {
            MintError::Invalid("expires_in: not a duration such as 12h or 30d".to_string())
        })?;
        if lifetime < Duration::from_secs(60) || lifetime > max {
            return Err(MintError::Invalid(format!(
                "expires_in: between 1m and {shown} (personal_tokens.max_lifetime)"
            )));
        }
        Ok(lifetime)
    }

    /// The person's live tokens, oldest first (those made under other claim rules, which no
    /// longer work, left out).
    pub async fn list(&self, user: &str) -> Result<Vec<PersonalToken>, StoreError> {
        let mut held = self.store.tokens_of(user).await?;
        held.retain(|t| t.rules == self.rules);
        Ok(held)
    }

    /// Revokes `user`'s token `id`: whether there was one (another person's is none).
    pub async fn revoke(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_token(user, id).await?;
        if revoked {
            tracing::info!(
                target: "authgate::audit",
                event = "token_revoked",
                user = %user,
                id = %id,
                by = "owner",
                "personal access token revoked"
            );
        }
        Ok(revoked)
    }
}
