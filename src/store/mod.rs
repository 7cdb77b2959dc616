//! Where sessions (and personal access tokens, [`tokens`]) live: one [`SessionStore`] trait, a memory store for a single replica and a
//! Redis store for several. The same test suite runs against both. Logins in progress are not
//! here: they live in the browser (`authn::pending`), so a stranger writes nothing to a store.
//!
//! Keys are SHA-256 hashes of the secrets the browser holds, so a store dump reveals no usable
//! session id or login state. Tokens kept for logout and refresh are encrypted before they are
//! stored (see [`seal`]).

pub mod memory;
pub mod redis;
mod seal;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use seal::{Purpose, Sealer};
pub use tokens::{PersonalToken, TokenStore};

/// A store of both: what `session.store` configures.
pub trait Store: SessionStore + TokenStore {}

impl<T: SessionStore + TokenStore> Store for T {}

/// The hash under which a browser secret is stored.
/// Held as the 32 raw bytes (the memory store keeps one per session and index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// Hashes a secret (session id or login state).
    pub fn of(secret: &str) -> Key {
        Key(Sha256::digest(secret.as_bytes()).into())
    }

    /// The hex digest (how Redis names it).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From its hex digest; `None` if `hex` is not one.
    pub fn from_hex(hex: &str) -> Option<Key> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Key(bytes))
    }
}

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// User name (from the configured claim, with the issuer's `username_prefix`; without
    /// `identity.user_prefix`, which only the header gets).
    pub user: String,
    /// Groups (with the issuer's `groups_prefix`).
    pub groups: Vec<String>,
    /// The provider's subject.
    pub sub: String,
    /// The provider's session id (`sid`), for back-channel logout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds when the person last logged in at the provider (`auth_time`; for a fresh
    /// login without it, when the login completed); 0: unknown. Making a personal access token
    /// needs a recent one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub auth_time: u64,
    /// Unix seconds of the last use (refreshed at most every [`TOUCH_INTERVAL`]).
    pub last_seen: u64,
    /// Unix seconds after which the session is over, however active.
    pub expires_at: u64,
    /// Unix seconds when the ID token expires (refresh is due).
    pub id_token_expires_at: u64,
    /// The ID token, sealed (for `id_token_hint` at logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The refresh token, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The claim rules the identity was made under ([`ClaimRules::fingerprint`]: issuer,
    /// claims, prefixes, e-mail verification). A session made under other rules (an older
    /// version, another issuer, new prefixes) is no session: its names were not judged by
    /// today's rules. Absent (0) in sessions from before the rules were recorded.
    ///
    /// [`ClaimRules::fingerprint`]: crate::authn::claims::ClaimRules::fingerprint
    #[serde(default)]
    pub rules: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How often `last_seen` is written back: often enough for idle timeouts of minutes, rarely
/// enough that a busy session costs one store read per request, not a write.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// A store failure: the request gets a 503. The cause is its source (shared: a session cache
/// hands one failure to every request that waited for it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached, or refused the command.
    #[error("session store")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A stored session cannot be read (written by another version?).
    #[error("unreadable session")]
    Unreadable(#[source] Arc<serde_json::Error>),
}

impl StoreError {
    /// A store failure caused by `source` (a Redis error, or words saying what went wrong).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(source.into()))
    }
}

/// The session store.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Saves a new session for `ttl`.
    async fn create(&self, key: &Key, session: &Session, ttl: Duration) -> Result<(), StoreError>;
    /// The session, if it exists.
    async fn get(&self, key: &Key) -> Result<Option<Session>, StoreError>;
    /// Replaces a session's data, keeping it for `ttl`, only if it still exists (a revoked
    /// session never comes back); moves its revocation index entries when its user, `sub` or
    /// `sid` changed. Whether it existed.
    async fn update(&self, key: &Key, session: &Session, ttl: Duration)
    -> Result<bool, StoreError>;
    /// Marks a session used at `now` (`last_seen`), changing nothing else: the session as the
    /// store now holds it, or `None` if it is gone. A touch never brings a revoked session back
    /// nor writes an older copy over another replica's refresh.
    async fn touch(&self, key: &Key, now: u64) -> Result<Option<Session>, StoreError>;
    /// Ends one session; whether it existed.
    async fn delete(&self, key: &Key) -> Result<bool, StoreError>;
    /// Ends every session of a user; how many.
    async fn delete_user(&self, user: &str) -> Result<u64, StoreError>;
    /// Ends every session with this provider `sid`; how many.
    async fn delete_sid(&self, sid: &str) -> Result<u64, StoreError>;
    /// Ends every session with this provider `sub`; how many.
    async fn delete_sub(&self, sub: &str) -> Result<u64, StoreError>;
    /// Ends every session; how many.
    async fn delete_all(&self) -> Result<u64, StoreError>;
    /// How many sessions exist (approximate).
    async fn count(&self) -> Result<u64, StoreError>;
    /// How many keys the store evicted under memory pressure since it started; `None` when it
    /// never evicts (the memory store).
    async fn evicted(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Takes a lock named after a session for `ttl`, unless someone holds it: true when taken.
    /// Across replicas only one refreshes a session at a time.
    async fn try_lock(&self, key: &Key, ttl: Duration) -> Result<bool, StoreError>;
}

/// The behaviour every store must have; run against the memory store here and against a real
/// Redis by `tests/suite/sessions_redis.rs`.
#[doc(hidden)]
pub mod contract;
