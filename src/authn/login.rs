//! The browser login: authorization code flow with PKCE (S256), `state` and `nonce`; the
//! callback; RP-initiated logout; and OIDC back-channel logout.
//!
//! A login in progress lives in the browser, not in the store (`super::pending`): its `state`
//! works once (the callback takes it out of the browser's one login cookie), expires after
//! `oidc.login_timeout`, and only in the browser that started it; a few tabs can log in at once,
//! and repeated unauthenticated requests replace that one cookie rather than pile up cookies
//! or stored state.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType};
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use url::Url;

use super::claims::{ClaimError, ClaimRules};
use super::jwt::{VerifyError, verify_with};
use super::oidc::{Discovered, OFFLINE_ACCESS, Provider, ProviderError};
use super::pending::{Pending, PendingLogins};
use super::session::{Found, Sessions, cookie_values};
use crate::clock::SharedClock;
use crate::decision::{Reason, Response, StatusCode, pages};
use crate::request::Request;
use crate::store::{Key, Sealer, Session, StoreError};

/// How long one replica holds the right to refresh a session (and, after a failed refresh
/// because the provider was down, how long until the next try).
const REFRESH_LOCK: Duration = Duration::from_secs(30);

/// How long before the ID token's expiry a session is refreshed.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// How long past its ID token's expiry a session whose refresh token this replica cannot
/// read goes on (another replica of a rolling key change may refresh it meanwhile).
const UNREADABLE_GRACE: Duration = Duration::from_secs(3600);

/// How far before a fresh login started the provider's `auth_time` may lie (clock skew).
const FRESH_LOGIN_LEEWAY: Duration = Duration::from_secs(30);

/// The spec's event name in a logout token.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// When the person last authenticated at the provider, from the ID token's `auth_time`
/// (`claimed`). A fresh login (started at `fresh_since`) must have made them do so after it
/// started — a provider that answers `prompt=login` from an old session says so in
/// `auth_time`; one that sends no `auth_time` counts from `now`. 0: unknown.
fn auth_time(
    claimed: Option<u64>,
    fresh_since: Option<u64>,
    now: u64,
) -> Result<u64, &'static str> {
    // Only a login that asked the provider to authenticate the person again counts: some
    // providers send `auth_time` on every login, whose grant a token must not take.
    let Some(started) = fresh_since else {
        return Ok(0);
    };
    match claimed {
        Some(at) if at + FRESH_LOGIN_LEEWAY.as_secs() < started => Err(
            "the provider did not authenticate the person again (auth_time before the login started)",
        ),
        Some(at) => Ok(at),
        None => Ok(now),
    }
}

/// The login flows.
pub struct Login {
    provider: Arc<Provider>,
    /// How the login issuer's claims become a user and groups.
    rules: ClaimRules,
    sessions: Arc<Sessions>,
    /// Seals the tokens kept in sessions.
    sealer: Sealer,
    /// Seals logins in progress into the browser's login cookie (keys of their own).
    login_sealer: Sealer,
    public_origin: Url,
    clock: SharedClock,
    /// The registered redirect URI's path when it is not `/authgate/callback`.
    other_callback_path: Option<String>,
}

/// How old (by `iat`) a logout token may be; its `jti` is remembered this long, plus leeway.
const LOGOUT_TOKEN_WINDOW: Duration = Duration::from_secs(600);

/// Longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;

/// The login page for `reason`, saying `message`.
fn page(status: StatusCode, title: &str, message: &str, reason: Reason) -> Response {
    pages::login_page(status, title, message, reason)
}

fn redirect(location: &str, set_cookies: Vec<String>, reason: Reason) -> Response {
    set_cookies
        .iter()
        .fold(Response::redirect(location, reason), |r, cookie| {
            r.with_header("set-cookie", cookie)
        })
}

fn provider_down(e: &ProviderError) -> Response {
    tracing::warn!(
        error = e as &dyn std::error::Error,
        "OIDC provider unavailable"
    );
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Login is unavailable",
        "The identity provider cannot be reached right now. Please try again in a minute.",
        Reason::ProviderUnavailable,
    )
    .with_header("retry-after", "10")
}

fn store_down(e: &crate::store::StoreError) -> Response {
    tracing::warn!(
        error = e as &dyn std::error::Error,
        "session store unavailable during login"
    );
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Login is unavailable",
        "Sessions cannot be stored right now. Please try again in a minute.",
        Reason::StoreUnavailable,
    )
}

impl Login {
    /// Builds the login flows.
    pub fn new(
        provider: Arc<Provider>,
        rules: ClaimRules,
        sessions: Arc<Sessions>,
        sealer: Sealer,
        login_sealer: Sealer,
        public_origin: Url,
        clock: SharedClock,
    ) -> Self {
        Self {
            provider,
            rules,
            sessions,
            sealer,
            login_sealer,
            public_origin,
            clock,
            other_callback_path: None,
        }
    }

    /// Also answers the callback at `path` (the registered redirect URI's path), besides
    /// `/authgate/callback`.
    pub fn with_callback_path(mut self, path: &str) -> Self {
        self.other_callback_path =
            (path != crate::config::DEFAULT_CALLBACK_PATH).then(|| path.to_string());
        self
    }

    /// Whether `path` is the registered callback path outside `/authgate/`.
    pub fn is_other_callback(&self, path: &str) -> bool {
        self.other_callback_path.as_deref() == Some(path)
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// The login issuer, as identities record it.
    pub fn issuer(&self) -> &Arc<str> {
        self.rules.issuer()
    }

    /// The fingerprint of the claim rules identities are made under now.
    pub fn rules_fingerprint(&self) -> u64 {
        self.rules.fingerprint()
    }

    /// Sends the browser to the provider; afterwards it returns to `return_to` (already checked
    /// to be on our origin). A `fresh` login asks the provider to authenticate the person again
    /// (`prompt=login`, `max_age=0`), as making a personal access token requires.
    pub async fn start(&self, req: &Request, return_to: &str, fresh: bool) -> Response {
        let discovered = match self.provider.get().await {
            Ok(d) => d,
            Err(e) => return provider_down(&e),
        };
        let now = self.clock.unix_now();
        let timeout = self.provider.config().login_timeout;
        let mut logins = self.pending_logins(req, now);
        let mut pending = Pending::new(return_to, now + timeout.as_secs());
        if fresh {
            pending = pending.fresh(now);
        }
        let verifier = PkceCodeVerifier::new(pending.pkce_verifier());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let (state, nonce) = (pending.state(), pending.nonce());
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        );
        let scopes = &self.provider.config().scopes;
        for scope in scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        if fresh {
            // A fresh login makes a personal access token, which keeps this login's grant to
            // re-check the person with the provider: it must outlive the person's session
            // there, so it asks for offline access, which must be consented to (OIDC Core 11).
            let mut offline = scopes.iter().any(|s| s == OFFLINE_ACCESS);
            if !offline && discovered.offers_offline_access {
                request = request.add_scope(Scope::new(OFFLINE_ACCESS.into()));
                offline = true;
            }
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(Duration::ZERO);
            if offline {
                request = request.add_prompt(CoreAuthPrompt::Consent);
            }
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        // Nothing is stored: the login lives in the browser's one login cookie, sealed.
        logins.add(pending);
        let login_cookie = self.sessions.config().login_cookie();
        let cookie = self
            .sessions
            .cookie(&login_cookie, &logins.seal(&self.login_sealer), timeout);
        redirect(url.as_str(), vec![cookie], Reason::LoginRedirect)
    }

    /// The logins this browser has in progress (its login cookie; at most two copies read).
    fn pending_logins(&self, req: &Request, now: u64) -> PendingLogins {
        let login_cookie = self.sessions.config().login_cookie();
        cookie_values(&req.headers, &login_cookie)
            .take(2)
            .map(|value| PendingLogins::open(&self.login_sealer, Some(value), now))
            .find(|logins| !logins.is_empty())
            .unwrap_or_default()
    }

    /// The login cookie after a callback took one login out of it.
    fn remaining_logins_cookie(&self, logins: &PendingLogins) -> String {
        let login_cookie = self.sessions.config().login_cookie();
        if logins.is_empty() {
            self.sessions.clear_cookie(&login_cookie)
        } else {
            let timeout = self.provider.config().login_timeout;
            self.sessions
                .cookie(&login_cookie, &logins.seal(&self.login_sealer), timeout)
        }
    }

    /// The provider sent the browser back: check state, exchange the code, verify the ID token,
    /// create the session, return to where the browser wanted to go.
    pub async fn callback(&self, req: &Request) -> Response {
        if let Some(error) = req.query_values("error").first() {
            let description = req
                .query_values("error_description")
                .first()
                .cloned()
                .unwrap_or_default();
            return page(
                StatusCode::UNAUTHORIZED,
                "Login failed",
                &format!("The identity provider said: {error} {description}"),
                Reason::LoginError,
            );
        }
        let (Some(code), Some(state)) = (
            req.query_values("code").into_iter().next(),
            req.query_values("state").into_iter().next(),
        ) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Login failed",
                "The login response is incomplete.",
                Reason::LoginIncomplete,
            );
        };
        // The login cookie that holds this state (of at most two: a copy planted under another
        // path must not shadow the browser's own).
        let login_cookie = self.sessions.config().login_cookie();
        let now = self.clock.unix_now();
        let found = cookie_values(&req.headers, &login_cookie)
            .take(2)
            .map(|value| PendingLogins::open(&self.login_sealer, Some(value), now))
            .find_map(|mut logins| logins.take(&state).map(|p| (logins, p)));
        let Some((logins, pending)) = found else {
            return page(
                StatusCode::BAD_REQUEST,
                "Login expired",
                "This login link was already used, has expired, or was started in another \
                 browser (or its cookie was lost). Please start again.",
                Reason::LoginStateUnknown,
            );
        };
        // The state is spent whatever happens next.
        let remaining = self.remaining_logins_cookie(&logins);
        let with_cookie = |response: Response| response.with_header("set-cookie", &remaining);
        let session = match self.complete(&code, &pending).await {
            Ok(s) => s,
            Err(LoginError::Provider(e)) => return with_cookie(provider_down(&e)),
            Err(LoginError::Refused(why)) => {
                tracing::warn!(target: "authgate::audit", event = "login_refused", reason = why.reason().as_str(), why = %why, "login refused: not an identity authgate can vouch for");
                return with_cookie(page(
                    StatusCode::FORBIDDEN,
                    "Login refused",
                    &why.to_string(),
                    why.reason(),
                ));
            }
            Err(LoginError::Unreadable) => {
                tracing::warn!("login rejected: a sealed token could not be read");
                return with_cookie(page(
                    StatusCode::UNAUTHORIZED,
                    "Login failed",
                    Reason::LoginRejected.public_message(),
                    Reason::LoginRejected,
                ));
            }
            Err(LoginError::Rejected(why) | LoginError::Unverified(why)) => {
                tracing::warn!(reason = %why, "login rejected");
                return with_cookie(page(
                    StatusCode::UNAUTHORIZED,
                    "Login failed",
                    Reason::LoginRejected.public_message(),
                    Reason::LoginRejected,
                ));
            }
        };
        let user = session.user.clone();
        match self.sessions.create(session).await {
            Ok(cookie) => {
                tracing::info!(target: "authgate::audit", event = "login", user = %user, "login");
                redirect(
                    &pending.return_to,
                    vec![cookie, remaining.clone()],
                    Reason::LoginComplete,
                )
            }
            Err(e) => with_cookie(store_down(&e)),
        }
    }

    async fn complete(&self, code: &str, pending: &Pending) -> Result<Session, LoginError> {
        let discovered = self.provider.get().await.map_err(LoginError::Provider)?;
        let turn = self.provider.turn().await.map_err(LoginError::Provider)?;
        let token = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::Rejected(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier()))
            .request_async(self.provider.http())
            .await
            .map_err(|e| match e {
                // The provider answered: the code (or our client) was refused.
                RequestTokenError::ServerResponse(r) => {
                    LoginError::Rejected(format!("code exchange refused: {}", r.error()))
                }
                // The provider could not be reached or answered garbage: try again later.
                other => LoginError::Provider(ProviderError::caused_by("code exchange", other)),
            })?;
        drop(turn);
        let id_token = token
            .id_token()
            .ok_or_else(|| LoginError::Rejected("no ID token in the token response".into()))?;
        let nonce = Nonce::new(pending.nonce());
        let verified = self
            .verify_id_token(
                discovered,
                |d| {
                    id_token
                        .claims(&d.client.id_token_verifier(), &nonce)
                        .map(|_| ())
                },
                |e| LoginError::Rejected(format!("ID token: {e}")),
            )
            .await?;
        let id_token_text = id_token.to_string();
        let claims = self
            .claims(&verified, &id_token_text, token.access_token().secret())
            .await?;
        let who = self.rules.identity(&claims).map_err(LoginError::Refused)?;
        let auth_time = self.auth_time(&claims, pending)?;
        Ok(Session {
            user: who.user,
            groups: who.groups,
            sub: who.sub.unwrap_or_default(),
            sid: claims.get("sid").and_then(Value::as_str).map(String::from),
            created_at: 0,
            auth_time,
            last_seen: 0,
            expires_at: 0,
            id_token_expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            id_token: self.logout_hint(&verified, &id_token_text),
            refresh_token: token.refresh_token().map(|t| self.sealer.seal(t.secret())),
            rules: self.rules.fingerprint(),
        })
    }

    /// Verifies an ID token (`verify`) with the provider's keys, fetched again once when the
    /// signature does not verify (the provider may have rotated them): the discovery that
    /// verified it, or why not (`refused`).
    async fn verify_id_token(
        &self,
        discovered: Arc<Discovered>,
        verify: impl Fn(&Discovered) -> Result<(), openidconnect::ClaimsVerificationError>,
        refused: impl Fn(openidconnect::ClaimsVerificationError) -> LoginError,
    ) -> Result<Arc<Discovered>, LoginError> {
        match verify(&discovered) {
            Ok(()) => Ok(discovered),
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                // Rate limited: a flood of bad signatures cannot make authgate fetch keys often.
                let fresh = self
                    .provider
                    .rediscover()
                    .await
                    .map_err(LoginError::Provider)?;
                verify(&fresh).map_err(&refused)?;
                Ok(fresh)
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// When the person last authenticated at the provider ([`auth_time`]).
    fn auth_time(&self, claims: &Map<String, Value>, pending: &Pending) -> Result<u64, LoginError> {
        auth_time(
            claims.get("auth_time").and_then(Value::as_u64),
            pending.fresh_since,
            self.clock.unix_now(),
        )
        .map_err(|why| LoginError::Rejected(why.into()))
    }

    /// The ID token, sealed, kept only for `id_token_hint` at RP-initiated logout: when the
    /// provider has no logout endpoint (Dex, Kubeflow's default) it is never used, and not
    /// keeping it makes a session a third of the size.
    fn logout_hint(&self, discovered: &Discovered, id_token: &str) -> Option<String> {
        discovered
            .end_session_endpoint
            .is_some()
            .then(|| self.sealer.seal(id_token))
    }

    /// The claims of a verified ID token, completed from the userinfo endpoint when the user or
    /// groups claim is missing.
    async fn claims(
        &self,
        discovered: &Discovered,
        id_token: &str,
        access_token: &str,
    ) -> Result<Map<String, Value>, LoginError> {
        let mut claims = payload(id_token)
            .ok_or_else(|| LoginError::Rejected("unreadable ID token payload".into()))?;
        let config = self.provider.config();
        let missing =
            !claims.contains_key(&config.user_claim) || !claims.contains_key(&config.groups_claim);
        if missing && let Some(userinfo) = &discovered.userinfo_endpoint {
            let body = self
                .provider
                .get_bytes(userinfo.as_str(), Some(access_token))
                .await
                .map_err(LoginError::Provider)?;
            let info: Map<String, Value> = serde_json::from_slice(&body)
                .map_err(|e| LoginError::Rejected(format!("userinfo: {e}")))?;
            // The userinfo `sub` must be the ID token's, or the answer is about someone else.
            if info.get("sub") != claims.get("sub") {
                return Err(LoginError::Rejected(
                    "userinfo names another subject".into(),
                ));
            }
            // A user name and whether it is verified come from one document: an ID token's
            // `email_verified` says nothing about an address only userinfo names.
            let user_from_info =
                !claims.contains_key(&config.user_claim) && info.contains_key(&config.user_claim);
            if user_from_info {
                claims.remove("email_verified");
            }
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    /// When the session's ID token has expired and a refresh token is kept: refresh it, so
    /// group changes at the provider reach the gateway, and a person disabled or removed there
    /// loses the session. One request on one replica refreshes (a store lock); the others go on
    /// with the session as it is. `None`: the provider refused the refresh, the session ended.
    pub async fn refresh_if_due(&self, found: Found) -> Result<Option<Found>, StoreError> {
        let now = self.clock.unix_now();
        // Refresh a little before the ID token expires, so groups never lag behind its life.
        if !self.provider.config().refresh
            || found.session.refresh_token.is_none()
            || now + REFRESH_AHEAD.as_secs() < found.session.id_token_expires_at
        {
            return Ok(Some(found));
        }
        let store = self.sessions.store();
        if !store.try_lock(&found.key, REFRESH_LOCK).await? {
            return Ok(Some(found));
        }
        // Refresh with the grant the store holds now, not a cached copy's: another replica may
        // have rotated it, or given it to a personal access token.
        let Some(current) = store.get(&found.key).await? else {
            self.sessions.forget(&found.key);
            return Ok(None);
        };
        if current.refresh_token.is_none()
            || now + REFRESH_AHEAD.as_secs() < current.id_token_expires_at
        {
            // Given away, or refreshed by another replica meanwhile.
            self.sessions.remember(&found.key, &current);
            return Ok(Some(Found {
                key: found.key,
                session: current,
            }));
        }
        let found = Found {
            key: found.key,
            session: current,
        };
        // Done well inside the lock: past it, another replica could refresh with the same token.
        let refreshed = tokio::time::timeout(
            REFRESH_LOCK - Duration::from_secs(5),
            self.refresh(&found.session),
        )
        .await
        .unwrap_or_else(|_| {
            Err(LoginError::Provider(ProviderError::caused_by(
                "refresh",
                "took longer than a refresh may",
            )))
        });
        match refreshed {
            Ok(session) => {
                let remaining = Duration::from_secs(session.expires_at.saturating_sub(now).max(1));
                if !store.update(&found.key, &session, remaining).await? {
                    // Revoked while the refresh ran: it stays revoked.
                    self.sessions.forget(&found.key);
                    return Ok(None);
                }
                self.sessions.remember(&found.key, &session);
                tracing::info!(target: "authgate::audit", event = "refresh", user = %session.user, "session refreshed");
                Ok(Some(Found {
                    key: found.key,
                    session,
                }))
            }
            Err(LoginError::Rejected(why) | LoginError::Unverified(why)) => {
                store.delete(&found.key).await?;
                self.sessions.forget(&found.key);
                tracing::info!(target: "authgate::audit", event = "refresh_refused", user = %found.session.user, reason = %why, "session ended: the provider refused the refresh");
                Ok(None)
            }
            Err(LoginError::Refused(why)) => {
                store.delete(&found.key).await?;
                self.sessions.forget(&found.key);
                tracing::warn!(target: "authgate::audit", event = "refresh_refused", user = %found.session.user, reason = why.reason().as_str(), why = %why, "session ended: the refreshed identity is not one authgate can vouch for");
                Ok(None)
            }
            Err(LoginError::Unreadable)
                if now < found.session.id_token_expires_at + UNREADABLE_GRACE.as_secs() =>
            {
                // Sealed under a key this replica does not have: during a key roll, another
                // replica has it. Ending the session here would log the person out for an
                // operator's change; it goes on for a while, and is refreshed there.
                tracing::warn!(user = %found.session.user, "refresh token sealed under an unknown key (add the previous key to session.previous_encryption_key_files during a roll); the session goes on for now");
                Ok(Some(found))
            }
            Err(LoginError::Unreadable) => {
                // No replica has refreshed it for an hour past its ID token: the key is gone,
                // and an identity the provider no longer confirms must not live on to max_age.
                store.delete(&found.key).await?;
                self.sessions.forget(&found.key);
                tracing::warn!(target: "authgate::audit", event = "refresh_refused", user = %found.session.user, "session ended: its refresh token cannot be read by any key held, long past its ID token");
                Ok(None)
            }
            Err(LoginError::Provider(e)) => {
                // The provider being down must not log everybody out; retry after the lock.
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "refresh failed; the session goes on"
                );
                Ok(Some(found))
            }
        }
    }

    async fn refresh(&self, old: &Session) -> Result<Session, LoginError> {
        let sealed = old.refresh_token.as_deref().ok_or(LoginError::Unreadable)?;
        let refreshed = self.refresh_grant(&old.sub, sealed).await?;
        Ok(Session {
            user: refreshed.user,
            groups: refreshed.groups,
            rules: self.rules.fingerprint(),
            id_token_expires_at: refreshed.id_token_expires_at,
            id_token: refreshed.id_token,
            refresh_token: refreshed
                .refresh_token
                .or_else(|| old.refresh_token.clone()),
            ..old.clone()
        })
    }

    /// Uses the grant whose refresh token is `sealed` (of the person `sub`): who the provider
    /// says the person is now.
    async fn refresh_grant(&self, sub: &str, sealed: &str) -> Result<Refreshed, LoginError> {
        let discovered = self.provider.get().await.map_err(LoginError::Provider)?;
        let refresh_token = self.sealer.open(sealed).ok_or(LoginError::Unreadable)?;
        let turn = self.provider.turn().await.map_err(LoginError::Provider)?;
        let token = discovered
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token))
            .map_err(|e| LoginError::Rejected(e.to_string()))?
            .request_async(self.provider.http())
            .await
            .map_err(|e| match e {
                // The provider refuses authgate itself (its client secret rotated?): that says
                // nothing about the person.
                RequestTokenError::ServerResponse(r)
                    if matches!(
                        r.error(),
                        CoreErrorResponseType::InvalidClient
                            | CoreErrorResponseType::UnauthorizedClient
                    ) =>
                {
                    LoginError::Provider(ProviderError::caused_by(
                        "refresh",
                        format!("the provider refuses authgate's client: {}", r.error()),
                    ))
                }
                // A 4xx with an OAuth error (5xx and 429 never get here: `ProviderHttp` makes
                // them unavailability): the grant is refused.
                RequestTokenError::ServerResponse(r) => {
                    LoginError::Rejected(format!("refresh refused: {}", r.error()))
                }
                other => LoginError::Provider(ProviderError::caused_by("refresh", other)),
            })?;
        drop(turn);
        let id_token = token
            .id_token()
            .ok_or_else(|| LoginError::Unverified("no ID token in the refresh response".into()))?;
        // A refreshed ID token carries no nonce (OIDC Core 12.2).
        let accept_missing_nonce = |_: Option<&Nonce>| Ok(());
        let discovered = self
            .verify_id_token(
                discovered,
                |d| {
                    id_token
                        .claims(&d.client.id_token_verifier(), accept_missing_nonce)
                        .map(|_| ())
                },
                |e| LoginError::Unverified(format!("refreshed ID token: {e}")),
            )
            .await?;
        let id_token_text = id_token.to_string();
        let claims = self
            .claims(&discovered, &id_token_text, token.access_token().secret())
            .await?;
        if claims.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(LoginError::Rejected(
                "refreshed ID token names another subject".into(),
            ));
        }
        let who = self.rules.identity(&claims).map_err(LoginError::Refused)?;
        Ok(Refreshed {
            user: who.user,
            groups: who.groups,
            id_token_expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            id_token: self.logout_hint(&discovered, &id_token_text),
            refresh_token: token.refresh_token().map(|t| self.sealer.seal(t.secret())),
        })
    }

    /// Asks the provider about the person `sub` of a personal access token, with the grant the
    /// token keeps (`grant`, sealed).
    pub async fn recheck(&self, sub: &str, grant: &str) -> Recheck {
        match self.refresh_grant(sub, grant).await {
            Ok(refreshed) => Recheck::Confirmed {
                user: refreshed.user,
                groups: refreshed.groups,
                grant: refreshed.refresh_token.unwrap_or_else(|| grant.to_string()),
            },
            Err(LoginError::Rejected(why)) => Recheck::Refused(why),
            Err(LoginError::Refused(why)) => Recheck::Unacceptable(why.to_string()),
            Err(LoginError::Unverified(why)) => Recheck::Unacceptable(why),
            Err(LoginError::Unreadable) => Recheck::Unreadable,
            Err(LoginError::Provider(e)) => Recheck::Unavailable(e),
        }
    }

    /// Takes the grant of the session's fresh login for a personal access token: the token
    /// re-checks the person with it from now on, and the session keeps none (two holders of one
    /// refresh token break when the provider rotates it). The session is then no longer fresh,
    /// and lasts no longer than its ID token: the provider vouched for that long.
    pub async fn take_grant(&self, found: &Found) -> Result<TakenGrant, StoreError> {
        let store = self.sessions.store();
        let spent = |s: &Session| s.auth_time == 0 || s.auth_time != found.session.auth_time;
        match store.get(&found.key).await? {
            None => return Ok(TakenGrant::Spent),
            Some(s) if spent(&s) => return Ok(TakenGrant::Spent),
            Some(s) if s.refresh_token.is_none() => return Ok(TakenGrant::NoGrant),
            Some(_) => {}
        }
        // The refresh lock: no replica refreshes the session while its grant changes hands.
        if !store.try_lock(&found.key, REFRESH_LOCK).await? {
            return Ok(TakenGrant::Busy);
        }
        // Read again under the lock: a refresh that finished meanwhile rotated the grant.
        let Some(mut session) = store.get(&found.key).await? else {
            return Ok(TakenGrant::Spent);
        };
        if spent(&session) {
            return Ok(TakenGrant::Spent);
        }
        let Some(grant) = session.refresh_token.take() else {
            return Ok(TakenGrant::NoGrant);
        };
        let now = self.clock.unix_now();
        session.auth_time = 0;
        if session.id_token_expires_at > 0 {
            session.expires_at = session
                .expires_at
                .min(session.id_token_expires_at.max(now + 60));
        }
        let remaining = Duration::from_secs(session.expires_at.saturating_sub(now).max(1));
        if !store.update(&found.key, &session, remaining).await? {
            return Ok(TakenGrant::Spent);
        }
        self.sessions.remember(&found.key, &session);
        Ok(TakenGrant::Grant(grant))
    }

    /// Ends the session (if any), clears the cookie and sends the browser to the provider's
    /// logout, or to the configured page.
    pub async fn logout(&self, req: &Request, found: Option<Found>) -> Response {
        let cleared = self.sessions.clear_cookie(self.sessions.cookie_name());
        let mut id_token_hint = None;
        if let Some(found) = &found {
            if let Err(e) = self.sessions.store().delete(&found.key).await {
                return store_down(&e);
            }
            self.sessions.forget(&found.key);
            id_token_hint = found
                .session
                .id_token
                .as_deref()
                .and_then(|t| self.sealer.open(t));
            tracing::info!(target: "authgate::audit", event = "logout", user = %found.session.user, "logout");
        }
        let config = self.provider.config();
        let after = config
            .post_logout_redirect_uri
            .clone()
            .unwrap_or_else(|| self.public_origin.clone());
        let rd = req.query_values("rd").into_iter().next();
        let local_after = rd
            .as_deref()
            .and_then(|t| crate::redirect::same_origin_target(t, &self.public_origin));
        let location = match self.provider.get().await {
            Ok(d) if d.end_session_endpoint.is_some() && found.is_some() => {
                let mut url = d.end_session_endpoint.clone().expect("checked");
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(hint) = &id_token_hint {
                        q.append_pair("id_token_hint", hint);
                    }
                    q.append_pair("client_id", &config.client_id);
                    q.append_pair("post_logout_redirect_uri", after.as_str());
                }
                url.to_string()
            }
            _ => local_after.unwrap_or_else(|| after.to_string()),
        };
        redirect(&location, vec![cleared], Reason::Logout)
    }

    /// OIDC back-channel logout: verify the provider's signed `logout_token` and end the
    /// sessions of that `sid` (or `sub`) on every replica (they share the store).
    pub async fn backchannel(&self, body: &[u8]) -> Response {
        let token = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token else {
            return Response::json(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "logout_token missing",
                Reason::BackchannelBad,
            );
        };
        let claims = match self.verify_logout_token(&token).await {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(
                    error = &why as &dyn std::error::Error,
                    "back-channel logout token refused"
                );
                return logout_token_refused();
            }
        };
        let (target, jti) = claims;
        let store = self.sessions.store();
        // A logout token works once, on every replica: its `jti` is taken in the shared store
        // (SET NX) for as long as such a token is accepted. Only the provider can sign one, so
        // this is no state a stranger can make.
        let jti_key = Key::of(&format!("logout-token jti {jti}"));
        match store
            .try_lock(&jti_key, LOGOUT_TOKEN_WINDOW + Duration::from_secs(120))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("back-channel logout token refused: its jti was used before");
                return logout_token_refused();
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "back-channel logout could not reach the store"
                );
                return backchannel_store_down();
            }
        }
        let result = match &target {
            LogoutTarget::Sid(sid) => store.delete_sid(sid).await,
            LogoutTarget::Sub(sub) => store.delete_sub(sub).await,
        };
        self.sessions.forget_all();
        match result {
            Ok(n) => {
                tracing::info!(target: "authgate::audit", event = "backchannel_logout", sessions = n, target = ?target, "back-channel logout");
                Response::empty(StatusCode::OK, Reason::BackchannelLogout)
            }
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "back-channel logout could not reach the store"
                );
                backchannel_store_down()
            }
        }
    }

    async fn verify_logout_token(
        &self,
        token: &str,
    ) -> Result<(LogoutTarget, String), LogoutTokenError> {
        let discovered = self.provider.get().await?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| LogoutTokenError::Refused(e.to_string()))?;
        let config = self.provider.config();
        let claims = match verify_with(
            &discovered.jwks,
            token,
            &header,
            &config.issuer,
            &[&config.client_id],
        ) {
            Err(VerifyError::UnknownKey) => {
                let fresh = self.provider.rediscover().await?;
                verify_with(
                    &fresh.jwks,
                    token,
                    &header,
                    &config.issuer,
                    &[&config.client_id],
                )
            }
            other => other,
        }
        .map_err(|e| LogoutTokenError::Refused(format!("{e:?}")))?;
        logout_claims(&claims, self.clock.unix_now()).map_err(LogoutTokenError::Refused)
    }
}

/// Why a back-channel logout token was not taken.
#[derive(Debug, thiserror::Error)]
enum LogoutTokenError {
    /// The provider's keys could not be had.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The token does not verify, or its claims are not a logout's.
    #[error("{0}")]
    Refused(String),
}

/// Whose sessions a logout token ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogoutTarget {
    /// One provider session (`sid`), preferred when the token names one.
    Sid(String),
    /// Every session of a subject.
    Sub(String),
}

/// A logout token refused (the provider learns no more: it signed the token, or did not).
fn logout_token_refused() -> Response {
    Response::json(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Reason::BackchannelBad.public_message(),
        Reason::BackchannelBad,
    )
}

/// The provider retries a back-channel logout that did not reach the store.
fn backchannel_store_down() -> Response {
    Response::json(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "try again",
        Reason::StoreUnavailable,
    )
}

/// The checks of OIDC Back-Channel Logout 1.0 §2.6 on a verified token's claims, and its
/// target and `jti`. Claims of the wrong type are refused, never guessed at.
fn logout_claims(claims: &Map<String, Value>, now: u64) -> Result<(LogoutTarget, String), String> {
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .is_some_and(|e| e.contains_key(BACKCHANNEL_EVENT));
    if !has_event {
        return Err("no back-channel logout event".into());
    }
    if claims.contains_key("nonce") {
        return Err("a logout token must not carry a nonce".into());
    }
    let text = |name: &str| -> Result<Option<&str>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(format!("{name} is not a non-empty string")),
        }
    };
    let target = match (text("sid")?, text("sub")?) {
        (Some(sid), _) => LogoutTarget::Sid(sid.to_string()),
        (None, Some(sub)) => LogoutTarget::Sub(sub.to_string()),
        (None, None) => return Err("neither sid nor sub".into()),
    };
    let jti = text("jti")?.ok_or("no jti")?;
    if jti.len() > MAX_JTI_LEN {
        return Err("jti too long".into());
    }
    let Some(iat) = claims.get("iat").and_then(Value::as_u64) else {
        return Err("no iat".into());
    };
    if iat > now + 60 || now.saturating_sub(iat) > LOGOUT_TOKEN_WINDOW.as_secs() {
        return Err("iat out of range".into());
    }
    // `exp` is required and checked by the signature verification.
    Ok((target, jti.to_string()))
}

/// Who the provider says a person is when their grant is refreshed.
struct Refreshed {
    user: String,
    groups: Vec<String>,
    id_token_expires_at: u64,
    /// The new ID token, sealed, when logout needs it.
    id_token: Option<String>,
    /// The new refresh token, sealed, when the provider rotated it.
    refresh_token: Option<String>,
}

/// What the provider said when a personal access token's grant was used.
#[derive(Debug)]
pub enum Recheck {
    /// The person as the provider names them now, and the grant to keep (sealed: rotated, or
    /// the same).
    Confirmed {
        /// User name.
        user: String,
        /// Groups.
        groups: Vec<String>,
        /// The refresh token to use next time.
        grant: String,
    },
    /// The provider refused the grant (the person removed or disabled, the grant withdrawn or
    /// expired): why.
    Refused(String),
    /// The provider answered with an identity authgate cannot vouch for, or an ID token that
    /// does not verify: why. Not a refusal of the person; not a confirmation either.
    Unacceptable(String),
    /// The grant is sealed under a key this replica does not have.
    Unreadable,
    /// The provider cannot be reached, is in trouble (5xx, 429), or refuses authgate itself
    /// (`invalid_client`).
    Unavailable(ProviderError),
    /// It took longer than a re-check may.
    TimedOut,
}

/// What [`Login::take_grant`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum TakenGrant {
    /// The grant's refresh token, sealed; the session holds it no more.
    Grant(String),
    /// The provider issued no refresh token for this login.
    NoGrant,
    /// The session's fresh login went to another token already (or the session ended).
    Spent,
    /// A replica is refreshing the session right now: try again shortly.
    Busy,
}

enum LoginError {
    /// The provider cannot be reached: try again later.
    Provider(ProviderError),
    /// The provider's answer was refused (a bad code, a token that does not verify).
    Rejected(String),
    /// The provider vouched for someone authgate cannot accept (unverified e-mail, a reserved
    /// or uncarriable name): the person is told why.
    Refused(ClaimError),
    /// The refresh token is sealed under a key this replica does not have.
    Unreadable,
    /// The refreshed ID token does not verify (after the provider's keys were fetched again).
    Unverified(String),
}

/// The JSON payload of a (verified) JWT.
fn payload(jwt: &str) -> Option<Map<String, Value>> {
    crate::authn::service_account::unverified_claims(jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fresh_login_needs_an_authentication_after_it_started() {
        let started = 1_000_000;
        // An old authentication answered from the provider's session: refused.
        assert!(auth_time(Some(started - 31), Some(started), started + 5).is_err());
        // Within the clock-skew leeway, or after: its time.
        assert_eq!(
            auth_time(Some(started - 30), Some(started), started + 5),
            Ok(started - 30)
        );
        assert_eq!(
            auth_time(Some(started + 2), Some(started), started + 5),
            Ok(started + 2)
        );
        // No auth_time from the provider: the login's completion counts.
        assert_eq!(auth_time(None, Some(started), started + 5), Ok(started + 5));
        // Not a fresh login: what the provider says, or unknown.
        assert_eq!(
            auth_time(Some(5), None, started),
            Ok(0),
            "not a fresh login"
        );
        assert_eq!(auth_time(None, None, started), Ok(0));
    }

    fn logout(v: Value) -> Result<(LogoutTarget, String), String> {
        logout_claims(v.as_object().unwrap(), 1_000_000)
    }

    fn token(extra: Value) -> Value {
        let mut t = json!({
            "events": {BACKCHANNEL_EVENT: {}},
            "jti": "j1",
            "iat": 1_000_000,
            "exp": 1_000_120,
        });
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    }

    #[test]
    fn logout_tokens_name_their_target_by_sid_then_sub() {
        assert_eq!(
            logout(token(json!({"sid": "s", "sub": "u"}))).unwrap(),
            (LogoutTarget::Sid("s".into()), "j1".into())
        );
        assert_eq!(
            logout(token(json!({"sub": "u"}))).unwrap().0,
            LogoutTarget::Sub("u".into())
        );
    }

    #[test]
    fn odd_logout_tokens_are_refused_not_panicked_on() {
        for bad in [
            token(json!({"sid": 7})),
            token(json!({"sid": ["s"], "sub": "u"})),
            token(json!({"sub": {"a": 1}})),
            token(json!({"sid": ""})),
            token(json!({})),
            token(json!({"sub": "u", "jti": 5})),
            token(json!({"sub": "u", "jti": "x".repeat(MAX_JTI_LEN + 1)})),
            token(json!({"sub": "u", "nonce": "n"})),
            token(json!({"sub": "u", "iat": "now"})),
            token(json!({"sub": "u", "iat": 1})),
            token(json!({"sub": "u", "events": {}})),
        ] {
            assert!(logout(bad.clone()).is_err(), "{bad}");
        }
        let mut no_jti = token(json!({"sub": "u"}));
        no_jti.as_object_mut().unwrap().remove("jti");
        assert!(logout(no_jti).is_err());
    }
}
