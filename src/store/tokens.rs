//! Personal access tokens as the store keeps them: a [`PersonalToken`] record under the hash of
//! its secret (the secret itself is never stored), found again by its public id and by its
//! owner, so a person can list and revoke their own and `authgate tokens revoke` can end them.
//! Both stores implement [`TokenStore`]; the same contract ([`contract::tokens`]) runs against
//! memory and a real Redis.
//!
//! [`contract::tokens`]: super::contract::tokens

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Key, StoreError};

/// A personal access token's record (everything but its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalToken {
    /// Public id: what lists show and `DELETE /authgate/tokens/{id}` names.
    pub id: String,
    /// The owner's label for it (`ci`, `laptop`).
    pub name: String,
    /// The person: user name as the session had it (without `identity.user_prefix`).
    pub user: String,
    /// Their groups when the token was made (or last re-checked with the provider).
    pub groups: Vec<String>,
    /// The provider's subject.
    pub sub: String,
    /// The namespaces the token may act in; empty: wherever the person may.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    /// Unix seconds of the last use (written at most every [`super::TOUCH_INTERVAL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<u64>,
    /// The claim rules the identity was made under (as [`super::Session::rules`]): a token made
    /// under other rules is no token.
    #[serde(default)]
    pub rules: u64,
    /// The refresh token of the login the token was made after, sealed: how authgate re-checks
    /// the person with the provider. `None` when the provider issued none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Unix seconds when the provider last confirmed the person (the token's making, or its last
    /// re-check).
    #[serde(default)]
    pub checked_at: u64,
}

/// Where personal access tokens live: the session store, so every replica honours them and
/// (with Redis) they outlive restarts.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Saves a new token under the hash of its secret until its `expires_at` (`ttl` from now),
    /// unless its owner would then hold more than `max_per_user`: whether it was saved. The
    /// limit holds against concurrent creations too (on every replica).
    async fn create_token(
        &self,
        key: &Key,
        token: &PersonalToken,
        ttl: std::time::Duration,
        max_per_user: u32,
    ) -> Result<bool, StoreError>;
    /// The token whose secret hashes to `key`, if it exists.
    async fn token(&self, key: &Key) -> Result<Option<PersonalToken>, StoreError>;
    /// Records a use at `now` when the last one recorded is [`super::TOUCH_INTERVAL`] old or
    /// more; never brings a revoked token back. Whether the token still exists.
    async fn token_used(&self, key: &Key, now: u64) -> Result<bool, StoreError>;
    /// Replaces a token's record after a re-check with the provider (its groups, grant and
    /// `checked_at`), keeping its expiry; never brings a revoked token back. Whether it exists.
    async fn recheck_token(&self, key: &Key, token: &PersonalToken) -> Result<bool, StoreError>;
    /// Every live token of `user`, oldest first.
    async fn tokens_of(&self, user: &str) -> Result<Vec<PersonalToken>, StoreError>;
    /// Revokes the token `id` if `user` owns it (another person's id is as good as none);
    /// whether it did.
    async fn revoke_token(&self, user: &str, id: &str) -> Result<bool, StoreError>;
    /// Revokes the token `id`, whoever owns it: its owner, or `None` when there is none.
    async fn revoke_token_id(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Revokes every token of `user`; how many.
    async fn revoke_tokens_of(&self, user: &str) -> Result<u64, StoreError>;
    /// Revokes every token of every person (an incident); how many.
    async fn revoke_all_tokens(&self) -> Result<u64, StoreError>;
    /// How many tokens exist (approximate).
    async fn count_tokens(&self) -> Result<u64, StoreError>;
    /// Keeps what a one-time code for `authgate login` opens (sealed) under its hash, for `ttl`.
    async fn put_code(
        &self,
        key: &Key,
        sealed: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError>;
    /// Takes a code's value out: it is gone for any later call, on every replica.
    async fn take_code(&self, key: &Key) -> Result<Option<String>, StoreError>;
}
