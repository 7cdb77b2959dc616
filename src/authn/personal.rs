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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use super::login::{Login, Recheck, TakenGrant};
use super::session::{Found, new_secret};
use crate::authz::rules::is_namespace_name;
use crate::clock::SharedClock;
use crate::config::PersonalTokensConfig;
use crate::identity::{AuthMethod, Identity};
use crate::store::{Key, PersonalToken, Sealer, Store, StoreError, TokenStore};

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
    /// The session's login is not recent enough, or went to another token (403): log in again
    /// first.
    #[error(
        "making a personal access token needs its own login in the last {0}: log in again at \
         /authgate/login?fresh=1&rd=/authgate/tokens"
    )]
    LoginRequired(String),
    /// The provider issued no refresh token for the login, and this gateway re-checks every
    /// token (`personal_tokens.require_recheck`) (403).
    #[error(
        "this gateway re-checks every personal access token with the identity provider, which \
         issued no refresh token for your login (the offline_access scope): ask the gateway's \
         operators"
    )]
    NoGrant,
    /// The session is being refreshed right now (409): try again shortly.
    #[error("your session is being refreshed right now: try again in half a minute")]
    Busy,
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
    /// The provider has not confirmed the owner lately enough (not revoked: a later re-check
    /// may confirm them again).
    #[error("personal access token not confirmed by the identity provider: {0}")]
    Unconfirmed(String),
    /// The store failed.
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

/// Makes, checks, lists and revokes personal access tokens.
pub struct PersonalTokens {
    store: Arc<dyn Store>,
    /// The login a token is made after, and re-checked with.
    login: Arc<Login>,
    config: PersonalTokensConfig,
    clock: SharedClock,
    /// The login issuer's claim-rules fingerprint: a token made under other rules is refused.
    rules: u64,
    issuer: Arc<str>,
    /// Seals the codes that carry a new token to `authgate login`.
    codes: Sealer,
}

/// How long one request holds the right to re-check a token (and, after the provider could
/// not be reached, how long until the next try).
const RECHECK_LOCK: Duration = Duration::from_secs(30);

/// How long past a due re-check a token whose grant this replica cannot read goes on (during a
/// key roll another replica can read it).
const UNREADABLE_GRACE: Duration = Duration::from_secs(3600);

/// How long a code for `authgate login` may be exchanged for its token.
pub const CODE_LIFETIME: Duration = Duration::from_secs(120);

/// What `authgate login` sends along, so the token can come back to it: RFC 8252's loopback
/// redirect, its `state`, and a PKCE S256 challenge (the token goes only to whoever holds the
/// verifier; the browser carries a one-time code, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loopback {
    /// `http://127.0.0.1:<port>/…`.
    pub redirect_uri: Url,
    /// Echoed back to the CLI.
    pub state: String,
    /// base64url(SHA-256(verifier)).
    pub code_challenge: String,
}

/// A redirect target for `authgate login`: only RFC 8252's IPv4 loopback address with a port,
/// over plain HTTP (the CLI listens on the person's own machine), no user, query or fragment.
/// Anything else is refused: a code sent elsewhere is a token sent elsewhere. (Not `[::1]`:
/// a Content-Security-Policy cannot name an IPv6 literal, so the confirmation's form could not
/// lead there.)
pub fn loopback_redirect(uri: &str) -> Result<Url, &'static str> {
    const WHY: &str = "redirect_uri must be http://127.0.0.1:<port>/…";
    if uri.len() > 256
        || uri
            .bytes()
            .any(|b| !(0x21..0x7f).contains(&b) || b == b'\\')
    {
        return Err(WHY);
    }
    let url = Url::parse(uri).map_err(|_| WHY)?;
    let loopback =
        matches!(url.host(), Some(Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST);
    // The URL as written must be the URL as read: `http://127.0.0.1:80@evil/` and other
    // spellings a browser reads otherwise are refused by comparing the two.
    let literal = uri.starts_with("http://127.0.0.1:");
    if url.scheme() != "http"
        || !loopback
        || !literal
        || url.port().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || url.as_str() != uri
    {
        return Err(WHY);
    }
    Ok(url)
}

impl Loopback {
    /// Reads and judges the three values.
    pub fn new(redirect_uri: &str, state: &str, code_challenge: &str) -> Result<Loopback, String> {
        let redirect_uri = loopback_redirect(redirect_uri).map_err(String::from)?;
        let b64 = |v: &str| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if state.is_empty() || state.len() > 128 || !b64(state) {
            return Err("state: 1 to 128 base64url characters".into());
        }
        if code_challenge.len() != 43 || !b64(code_challenge) {
            return Err("code_challenge: a PKCE S256 challenge (43 base64url characters)".into());
        }
        Ok(Loopback {
            redirect_uri,
            state: state.into(),
            code_challenge: code_challenge.into(),
        })
    }
}

/// What a code opens, sealed in the store: the token and the challenge it is bound to.
#[derive(Serialize, Deserialize)]
struct Code {
    /// The secret.
    t: String,
    /// The PKCE challenge.
    c: String,
}

/// A token handed to `authgate login` for its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    /// The secret.
    pub secret: String,
    /// Its record.
    pub token: PersonalToken,
}

/// Why a code bought no token.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Unknown, used, expired, for another verifier, or its token is gone (400).
    #[error("the code is unknown, used, expired (2 minutes) or for another code_verifier")]
    Refused,
    /// The store failed (503).
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

impl PersonalTokens {
    /// Over `store`, for people who log in with `login`.
    pub fn new(
        store: Arc<dyn Store>,
        login: Arc<Login>,
        config: PersonalTokensConfig,
        clock: SharedClock,
        codes: Sealer,
    ) -> Self {
        let (rules, issuer) = (login.rules_fingerprint(), login.issuer().clone());
        Self {
            store,
            login,
            config,
            clock,
            rules,
            issuer,
            codes,
        }
    }

    /// A one-time code for the CLI that asked with `loopback`: a random handle; the store keeps
    /// what it opens (sealed) for [`CODE_LIFETIME`], and the first exchange takes it out.
    pub async fn code_for(
        &self,
        minted: &Minted,
        loopback: &Loopback,
    ) -> Result<String, StoreError> {
        let handle = new_secret();
        let code = Code {
            t: minted.secret.clone(),
            c: loopback.code_challenge.clone(),
        };
        let sealed = self
            .codes
            .seal(&serde_json::to_string(&code).expect("a code serializes"));
        self.store
            .put_code(&Key::of(&handle), &sealed, CODE_LIFETIME)
            .await?;
        Ok(handle)
    }

    /// The token a code carries, for whoever holds the PKCE verifier. The code is spent by the
    /// first attempt, right or wrong: a code seen by someone without the verifier is lost to
    /// the CLI too, never theirs.
    pub async fn exchange(&self, code: &str, verifier: &str) -> Result<Exchanged, ExchangeError> {
        if code.len() != 43 || !(43..=128).contains(&verifier.len()) {
            return Err(ExchangeError::Refused);
        }
        let sealed = self
            .store
            .take_code(&Key::of(code))
            .await
            .map_err(ExchangeError::Store)?
            .ok_or(ExchangeError::Refused)?;
        let code: Code = self
            .codes
            .open(&sealed)
            .and_then(|plain| serde_json::from_str(&plain).ok())
            .ok_or(ExchangeError::Refused)?;
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if challenge != code.c {
            return Err(ExchangeError::Refused);
        }
        // The token as it is now: revoked or expired since, it is no token.
        let token = self
            .store
            .token(&Key::of(&code.t))
            .await
            .map_err(ExchangeError::Store)?
            .filter(|t| t.expires_at > self.clock.unix_now() && t.rules == self.rules)
            .ok_or(ExchangeError::Refused)?;
        Ok(Exchanged {
            secret: code.t,
            token,
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn TokenStore {
        self.store.as_ref()
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
        let token = if token.grant.is_some()
            && token.checked_at + self.config.recheck_interval.as_secs() <= now
        {
            self.recheck(&key, token, now).await?
        } else {
            token
        };
        if token.grant.is_none() && self.config.require_recheck {
            return Err(TokenError::Unconfirmed(
                "this gateway re-checks every token with the provider, and this one has no \
                 grant to do it with (made before, or by a login without a refresh token)"
                    .into(),
            ));
        }
        // A provider that has not confirmed the person for this long (down, or answering
        // what authgate cannot read) no longer vouches for them.
        if token.grant.is_some() && token.checked_at + self.config.max_unconfirmed.as_secs() <= now
        {
            return Err(TokenError::Unconfirmed(format!(
                "the identity provider has not confirmed the token's owner for {} \
                 (personal_tokens.max_unconfirmed)",
                humantime::format_duration(self.config.max_unconfirmed)
            )));
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

    /// Asks the provider about the person again, with the token's grant: their groups as they
    /// are now, or the token ends. One request on one replica asks (a store lock); meanwhile the
    /// others go on with the token as it was. The asking runs in a task of its own, so a
    /// request Envoy gives up on never loses a refresh token the provider has just rotated; the
    /// request waits for it at most [`RECHECK_WAIT`], then goes on with the token as it was.
    async fn recheck(
        &self,
        key: &Key,
        token: PersonalToken,
        now: u64,
    ) -> Result<PersonalToken, TokenError> {
        if token.grant.is_none()
            || !self
                .store
                .try_lock(key, RECHECK_LOCK)
                .await
                .map_err(TokenError::Store)?
        {
            return Ok(token);
        }
        // In the check's span: the provider call is traced as the check's child.
        let task = tokio::spawn(tracing::Instrument::instrument(
            recheck_with_provider(
                self.store.clone(),
                self.login.clone(),
                *key,
                token.clone(),
                now,
                self.config.recheck_interval,
            ),
            tracing::Span::current(),
        ));
        match tokio::time::timeout(RECHECK_WAIT, task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(panicked)) => {
                tracing::error!(error = %panicked, "re-checking a personal access token failed");
                Ok(token)
            }
            // Still asking: it finishes on its own, and writes what the provider said.
            Err(_) => Ok(token),
        }
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
        // Listing first drops ids of expired tokens from the person's index, which the store's
        // own count (the limit under concurrency, in `create_token`) then counts right.
        let held = self.store.tokens_of(user).await.map_err(MintError::Store)?;
        if held.len() >= self.config.max_per_user as usize {
            return Err(MintError::TooMany(self.config.max_per_user));
        }
        // The token takes the fresh login's grant, to re-check the person with it.
        let grant = match self.login.take_grant(session).await {
            Ok(TakenGrant::Grant(grant)) => Some(grant),
            Ok(TakenGrant::NoGrant) if self.config.require_recheck => {
                return Err(MintError::NoGrant);
            }
            Ok(TakenGrant::NoGrant) => None,
            Ok(TakenGrant::Spent) => {
                return Err(MintError::LoginRequired(
                    humantime::format_duration(self.config.fresh_login).to_string(),
                ));
            }
            Ok(TakenGrant::Busy) => return Err(MintError::Busy),
            Err(e) => return Err(MintError::Store(e)),
        };
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
            checked_at: now,
            grant,
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

/// How long a request waits for its token's re-check (Envoy's ext_authz timeout is ~2 s).
const RECHECK_WAIT: Duration = Duration::from_millis(1500);

/// The longest one re-check may take, below [`RECHECK_LOCK`]: past the lock another replica
/// could ask with the same refresh token.
const RECHECK_LIMIT: Duration = Duration::from_secs(25);

/// One re-check of `token` (the caller holds its lock): the token as the provider confirms
/// it, or as it was when the provider cannot say; an error when it ends.
async fn recheck_with_provider(
    store: Arc<dyn Store>,
    login: Arc<Login>,
    key: Key,
    token: PersonalToken,
    now: u64,
    interval: Duration,
) -> Result<PersonalToken, TokenError> {
    // Read again under the lock: another replica may have re-checked it (and rotated its
    // grant) since this request read it.
    let token = match store.token(&key).await.map_err(TokenError::Store)? {
        Some(current) if current.id == token.id => current,
        _ => return Err(TokenError::Unknown),
    };
    let Some(grant) = token.grant.as_deref() else {
        return Ok(token);
    };
    if token.checked_at + interval.as_secs() > now {
        return Ok(token);
    }
    let answer = tokio::time::timeout(RECHECK_LIMIT, login.recheck(&token.sub, grant))
        .await
        .unwrap_or(Recheck::TimedOut);
    let metrics = crate::metrics::global();
    let why = match answer {
        Recheck::Confirmed {
            user,
            groups,
            grant,
        } if user == token.user => {
            let rechecked = PersonalToken {
                groups,
                grant: Some(grant),
                checked_at: now,
                ..token
            };
            if !store
                .recheck_token(&key, &rechecked)
                .await
                .map_err(TokenError::Store)?
            {
                // Revoked while the provider was asked: it stays revoked.
                return Err(TokenError::Unknown);
            }
            metrics.token_recheck("confirmed");
            tracing::debug!(user = %rechecked.user, id = %rechecked.id, groups = ?rechecked.groups, "personal access token re-checked with the provider");
            return Ok(rechecked);
        }
        // The token's index and every record name the person as they were.
        Recheck::Confirmed { user, .. } => format!("the provider now names the person {user:?}"),
        Recheck::Refused(why) => why,
        Recheck::Unacceptable(why) => {
            // Not revoked: the answer may change (a group someone else added), and the next
            // check, after the lock, may confirm the person again. Until then: refused.
            metrics.token_recheck("unacceptable");
            tracing::warn!(target: "authgate::audit", event = "token_refused", user = %token.user, id = %token.id, reason = %why, "personal access token refused: the provider's answer about its owner cannot be accepted");
            return Err(TokenError::Unconfirmed(why));
        }
        Recheck::Unreadable
            if now < token.checked_at + interval.as_secs() + UNREADABLE_GRACE.as_secs() =>
        {
            metrics.token_recheck("unreadable");
            tracing::warn!(user = %token.user, id = %token.id, "a personal access token's grant is sealed under an unknown key (add the previous key to session.previous_encryption_key_files during a roll); the token goes on for now");
            return Ok(token);
        }
        Recheck::Unreadable => "its grant cannot be read by any key held".to_string(),
        Recheck::Unavailable(e) => {
            metrics.token_recheck("unreachable");
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                user = %token.user,
                id = %token.id,
                "the provider cannot re-check a personal access token; it goes on as last confirmed"
            );
            return Ok(token);
        }
        Recheck::TimedOut => {
            metrics.token_recheck("unreachable");
            tracing::warn!(user = %token.user, id = %token.id, "re-checking a personal access token took too long; it goes on as last confirmed");
            return Ok(token);
        }
    };
    store
        .revoke_token_id(&token.id)
        .await
        .map_err(TokenError::Store)?;
    metrics.token_recheck("revoked");
    tracing::info!(
        target: "authgate::audit",
        event = "token_revoked",
        user = %token.user,
        id = %token.id,
        by = "provider",
        reason = %why,
        "personal access token revoked: the provider no longer confirms the person"
    );
    Err(TokenError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_jwt_carries_a_tokens_id_by_default() {
        assert!(crate::config::DEFAULT_JWT_EXTRA.contains(&TOKEN_ID_EXTRA));
    }

    #[test]
    fn only_a_loopback_address_with_a_port_takes_a_code() {
        for good in ["http://127.0.0.1:8123/callback", "http://127.0.0.1:1/"] {
            assert!(loopback_redirect(good).is_ok(), "{good}");
        }
        for bad in [
            "http://127.0.0.1/callback",
            "http://localhost:8123/callback",
            "https://127.0.0.1:8123/callback",
            "http://127.0.0.2:8123/",
            "http://0.0.0.0:8123/",
            "http://127.1:8123/",
            "http://2130706433:8123/",
            "http://0x7f.0.0.1:8123/",
            "http://127.0.0.1:8123@evil.example/",
            "http://user@127.0.0.1:8123/",
            "http://127.0.0.1:8123/cb?x=1",
            "http://127.0.0.1:8123/cb#f",
            "http://127.0.0.1:8123\\@evil.example/",
            "http://127.0.0.1:8123/%2e%2e/",
            "http://127.0.0.1:8123/a/../b",
            "http://[::ffff:127.0.0.1]:8123/",
            "http://[::1]:8123/cb",
            "//127.0.0.1:8123/",
            "/callback",
            "",
        ] {
            assert!(loopback_redirect(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_open_redirect_payload_is_refused_as_a_loopback_redirect() {
        let payloads = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/openredirects.txt"
        ))
        .expect("tests/data/openredirects.txt");
        let mut n = 0;
        for payload in payloads.lines().filter(|l| !l.is_empty()) {
            n += 1;
            assert!(loopback_redirect(payload).is_err(), "{payload:?}");
        }
        assert!(n >= 500, "{n} payloads");
    }
}
