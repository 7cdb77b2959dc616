//! The browser login: authorization code flow with PKCE (S256), `state` and `nonce`; the
//! callback; RP-initiated logout; and OIDC back-channel logout.
//!
//! `state` is single-use (taken from the store), expires after `oidc.login_timeout`, and is bound
//! to one browser cookie that is reused across tabs: two tabs can log in at once, and repeated
//! unauthenticated requests never pile up cookies.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use url::Url;

use super::oidc::{Discovered, Provider, ProviderError};
use super::session::{Found, Sessions, cookie_values, new_secret};
use crate::clock::SharedClock;
use crate::decision::{Decision, Deny};
use crate::request::Request;
use crate::store::{Key, PendingLogin, Sealer, Session, StoreError};

/// How long one replica holds the right to refresh a session (and, after a failed refresh
/// because the provider was down, how long until the next try).
const REFRESH_LOCK: Duration = Duration::from_secs(30);

/// How long before the ID token's expiry a session is refreshed.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// The spec's event name in a logout token.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The login flows.
pub struct Login {
    provider: Arc<Provider>,
    sessions: Arc<Sessions>,
    sealer: Sealer,
    public_origin: Url,
    clock: SharedClock,
}

/// An HTML page answer (never reaches the app).
pub fn page(status: u16, title: &str, message: &str, reason: &'static str) -> Decision {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>{t}</h1><p>{m}</p><p><a href=\"/\">Start again</a></p></body></html>",
        t = html_escape(title),
        m = html_escape(message)
    );
    Decision::Deny(Deny {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body,
        identity: None,
        reason,
    })
}

/// Escapes text for HTML.
pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn redirect(location: &str, set_cookies: Vec<String>, reason: &'static str) -> Decision {
    let mut headers = vec![
        ("location".to_string(), location.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(
        set_cookies
            .into_iter()
            .map(|c| ("set-cookie".to_string(), c)),
    );
    Decision::Deny(Deny {
        status: 302,
        headers,
        body: String::new(),
        identity: None,
        reason,
    })
}

fn provider_down(e: &ProviderError) -> Decision {
    tracing::warn!(error = %e, "OIDC provider unavailable");
    let mut d = page(
        503,
        "Login is unavailable",
        "The identity provider cannot be reached right now. Please try again in a minute.",
        "provider_unavailable",
    );
    if let Decision::Deny(deny) = &mut d {
        deny.headers.push(("retry-after".into(), "10".into()));
    }
    d
}

fn store_down(e: &crate::store::StoreError) -> Decision {
    tracing::warn!(error = %e, "session store unavailable during login");
    page(
        503,
        "Login is unavailable",
        "Sessions cannot be stored right now. Please try again in a minute.",
        "store_unavailable",
    )
}

impl Login {
    /// Builds the login flows.
    pub fn new(
        provider: Arc<Provider>,
        sessions: Arc<Sessions>,
        sealer: Sealer,
        public_origin: Url,
        clock: SharedClock,
    ) -> Self {
        Self {
            provider,
            sessions,
            sealer,
            public_origin,
            clock,
        }
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<Provider> {
        &self.provider
    }

    /// Sends the browser to the provider; afterwards it returns to `return_to` (already checked
    /// to be on our origin).
    pub async fn start(&self, req: &Request, return_to: &str) -> Decision {
        let discovered = match self.provider.get().await {
            Ok(d) => d,
            Err(e) => return provider_down(&e),
        };
        let config = self.sessions.config();
        let login_cookie = config.login_cookie();
        let existing = cookie_values(&req.headers, &login_cookie)
            .find(|v| v.len() == 43)
            .map(str::to_string);
        let (browser, set_cookie) = match existing {
            Some(b) => (b, None),
            None => {
                let b = new_secret();
                let c =
                    self.sessions
                        .cookie(&login_cookie, &b, self.provider.config().login_timeout);
                (b, Some(c))
            }
        };
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in &self.provider.config().scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let pending = PendingLogin {
            browser: Key::of(&browser).hex(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to: return_to.to_string(),
        };
        if let Err(e) = self
            .sessions
            .store()
            .put_login(
                &Key::of(state.secret()),
                &pending,
                self.provider.config().login_timeout,
            )
            .await
        {
            return store_down(&e);
        }
        redirect(
            url.as_str(),
            set_cookie.into_iter().collect(),
            "login_redirect",
        )
    }

    /// The provider sent the browser back: check state, exchange the code, verify the ID token,
    /// create the session, return to where the browser wanted to go.
    pub async fn callback(&self, req: &Request) -> Decision {
        if let Some(error) = req.query_values("error").first() {
            let description = req
                .query_values("error_description")
                .first()
                .cloned()
                .unwrap_or_default();
            return page(
                401,
                "Login failed",
                &format!("The identity provider said: {error} {description}"),
                "login_error",
            );
        }
        let (Some(code), Some(state)) = (
            req.query_values("code").into_iter().next(),
            req.query_values("state").into_iter().next(),
        ) else {
            return page(
                400,
                "Login failed",
                "The login response is incomplete.",
                "login_incomplete",
            );
        };
        let pending = match self.sessions.store().take_login(&Key::of(&state)).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return page(
                    400,
                    "Login expired",
                    "This login link was already used or has expired. Please start again.",
                    "login_state_unknown",
                );
            }
            Err(e) => return store_down(&e),
        };
        let login_cookie = self.sessions.config().login_cookie();
        let same_browser =
            cookie_values(&req.headers, &login_cookie).any(|v| Key::of(v).hex() == pending.browser);
        if !same_browser {
            return page(
                400,
                "Login failed",
                "This login was started in another browser (or its cookie was lost). Please start again.",
                "login_wrong_browser",
            );
        }
        let session = match self.complete(&code, &pending).await {
            Ok(s) => s,
            Err(LoginError::Provider(e)) => return provider_down(&e),
            Err(LoginError::Rejected(why)) => {
                tracing::warn!(reason = %why, "login rejected");
                return page(
                    401,
                    "Login failed",
                    "The identity provider's answer could not be verified.",
                    "login_rejected",
                );
            }
        };
        let user = session.user.clone();
        match self.sessions.create(session).await {
            Ok(cookie) => {
                tracing::info!(target: "authgate::audit", event = "login", user = %user, "login");
                let mut d = redirect(&pending.return_to, vec![cookie], "login_complete");
                if let Decision::Deny(deny) = &mut d {
                    deny.identity = None;
                }
                d
            }
            Err(e) => store_down(&e),
        }
    }

    async fn complete(&self, code: &str, pending: &PendingLogin) -> Result<Session, LoginError> {
        let discovered = self.provider.get().await.map_err(LoginError::Provider)?;
        let turn = self.provider.turn().await.map_err(LoginError::Provider)?;
        let token = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| LoginError::Rejected(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(self.provider.http())
            .await
            .map_err(|e| match e {
                // The provider answered: the code (or our client) was refused.
                RequestTokenError::ServerResponse(r) => {
                    LoginError::Rejected(format!("code exchange refused: {}", r.error()))
                }
                // The provider could not be reached or answered garbage: try again later.
                other => LoginError::Provider(ProviderError(format!("code exchange: {other}"))),
            })?;
        drop(turn);
        let id_token = token
            .id_token()
            .ok_or_else(|| LoginError::Rejected("no ID token in the token response".into()))?;
        let nonce = Nonce::new(pending.nonce.clone());
        let verified = match id_token.claims(&discovered.client.id_token_verifier(), &nonce) {
            Ok(_) => discovered.clone(),
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                // Maybe the provider rotated its keys: look again (rate limited) and retry once.
                let fresh = self
                    .provider
                    .rediscover()
                    .await
                    .map_err(LoginError::Provider)?;
                id_token
                    .claims(&fresh.client.id_token_verifier(), &nonce)
                    .map_err(|e| LoginError::Rejected(format!("ID token: {e}")))?;
                fresh
            }
            Err(e) => return Err(LoginError::Rejected(format!("ID token: {e}"))),
        };
        let id_token_text = id_token.to_string();
        let claims = self
            .claims(&verified, &id_token_text, token.access_token().secret())
            .await?;
        let user = self.user_of(&claims)?;
        Ok(Session {
            user,
            groups: groups(claims.get(&self.provider.config().groups_claim)),
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            sid: claims.get("sid").and_then(Value::as_str).map(String::from),
            created_at: 0,
            last_seen: 0,
            expires_at: 0,
            id_token_expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            id_token: self.logout_hint(&verified, &id_token_text),
            refresh_token: token.refresh_token().map(|t| self.sealer.seal(t.secret())),
        })
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
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
        Ok(claims)
    }

    fn user_of(&self, claims: &Map<String, Value>) -> Result<String, LoginError> {
        let claim = &self.provider.config().user_claim;
        claims
            .get(claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .ok_or_else(|| LoginError::Rejected(format!("no {claim:?} claim")))
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
        match self.refresh(&found.session).await {
            Ok(session) => {
                let remaining = Duration::from_secs(session.expires_at.saturating_sub(now).max(1));
                store.update(&found.key, &session, remaining).await?;
                self.sessions.remember(&found.key, &session);
                tracing::info!(target: "authgate::audit", event = "refresh", user = %session.user, "session refreshed");
                Ok(Some(Found {
                    key: found.key,
                    session,
                }))
            }
            Err(LoginError::Rejected(why)) => {
                store.delete(&found.key).await?;
                self.sessions.forget(&found.key);
                tracing::info!(target: "authgate::audit", event = "refresh_refused", user = %found.session.user, reason = %why, "session ended: the provider refused the refresh");
                Ok(None)
            }
            Err(LoginError::Provider(e)) => {
                // The provider being down must not log everybody out; retry after the lock.
                tracing::warn!(error = %e, "refresh failed; the session goes on");
                Ok(Some(found))
            }
        }
    }

    async fn refresh(&self, old: &Session) -> Result<Session, LoginError> {
        let discovered = self.provider.get().await.map_err(LoginError::Provider)?;
        let refresh_token = old
            .refresh_token
            .as_deref()
            .and_then(|t| self.sealer.open(t))
            .ok_or_else(|| LoginError::Rejected("refresh token unreadable".into()))?;
        let turn = self.provider.turn().await.map_err(LoginError::Provider)?;
        let token = discovered
            .client
            .exchange_refresh_token(&RefreshToken::new(refresh_token))
            .map_err(|e| LoginError::Rejected(e.to_string()))?
            .request_async(self.provider.http())
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => {
                    LoginError::Rejected(format!("refresh refused: {}", r.error()))
                }
                other => LoginError::Provider(ProviderError(format!("refresh: {other}"))),
            })?;
        drop(turn);
        let id_token = token
            .id_token()
            .ok_or_else(|| LoginError::Rejected("no ID token in the refresh response".into()))?;
        // A refreshed ID token carries no nonce (OIDC Core 12.2).
        let accept_missing_nonce = |_: Option<&Nonce>| Ok(());
        id_token
            .claims(&discovered.client.id_token_verifier(), accept_missing_nonce)
            .map_err(|e| LoginError::Rejected(format!("refreshed ID token: {e}")))?;
        let id_token_text = id_token.to_string();
        let claims = self
            .claims(&discovered, &id_token_text, token.access_token().secret())
            .await?;
        if claims.get("sub").and_then(Value::as_str) != Some(old.sub.as_str()) {
            return Err(LoginError::Rejected(
                "refreshed ID token names another subject".into(),
            ));
        }
        Ok(Session {
            user: self.user_of(&claims)?,
            groups: groups(claims.get(&self.provider.config().groups_claim)),
            id_token_expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            id_token: self.logout_hint(&discovered, &id_token_text),
            refresh_token: token
                .refresh_token()
                .map(|t| self.sealer.seal(t.secret()))
                .or_else(|| old.refresh_token.clone()),
            ..old.clone()
        })
    }

    /// Ends the session (if any), clears the cookie and sends the browser to the provider's
    /// logout, or to the configured page.
    pub async fn logout(&self, req: &Request, found: Option<Found>) -> Decision {
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
        redirect(&location, vec![cleared], "logout")
    }

    /// OIDC back-channel logout: verify the provider's signed `logout_token` and end the
    /// sessions of that `sid` (or `sub`) on every replica (they share the store).
    pub async fn backchannel(&self, body: &[u8]) -> Decision {
        let token = url::form_urlencoded::parse(body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token else {
            return crate::decision::json_response(
                400,
                "invalid_request",
                "logout_token missing",
                "backchannel_bad",
            );
        };
        let claims = match self.verify_logout_token(&token).await {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(reason = %why, "back-channel logout token refused");
                return crate::decision::json_response(
                    400,
                    "invalid_request",
                    "logout_token refused",
                    "backchannel_bad",
                );
            }
        };
        let store = self.sessions.store();
        let result = match (
            claims.get("sid").and_then(Value::as_str),
            claims.get("sub").and_then(Value::as_str),
        ) {
            (Some(sid), _) => store.delete_sid(sid).await,
            (None, Some(sub)) => store.delete_sub(sub).await,
            (None, None) => unreachable!("checked in verify"),
        };
        self.sessions.forget_all();
        match result {
            Ok(n) => {
                tracing::info!(target: "authgate::audit", event = "backchannel_logout", sessions = n, sub = ?claims.get("sub"), "back-channel logout");
                Decision::Deny(Deny {
                    status: 200,
                    headers: vec![("cache-control".into(), "no-store".into())],
                    body: String::new(),
                    identity: None,
                    reason: "backchannel_logout",
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "back-channel logout could not reach the store");
                crate::decision::json_response(503, "unavailable", "try again", "store_unavailable")
            }
        }
    }

    async fn verify_logout_token(&self, token: &str) -> Result<Map<String, Value>, String> {
        let discovered = self.provider.get().await.map_err(|e| e.to_string())?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let config = self.provider.config();
        let claims = match verify_with(
            &discovered.jwks,
            token,
            &header,
            &config.issuer,
            &[&config.client_id],
        ) {
            Err(VerifyError::UnknownKey) => {
                let fresh = self
                    .provider
                    .rediscover()
                    .await
                    .map_err(|e| e.to_string())?;
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
        .map_err(|e| format!("{e:?}"))?;
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
        if claims.get("sid").is_none() && claims.get("sub").is_none() {
            return Err("neither sid nor sub".into());
        }
        let now = self.clock.unix_now();
        let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        if iat > now + 60 || now.saturating_sub(iat) > Duration::from_secs(600).as_secs() {
            return Err("iat out of range".into());
        }
        Ok(claims)
    }
}

enum LoginError {
    Provider(ProviderError),
    Rejected(String),
}

/// Why a provider-signed JWT was refused.
#[derive(Debug)]
pub enum VerifyError {
    /// Its `kid` is not in the JWKS (maybe the provider rotated keys).
    UnknownKey,
    /// Anything else.
    Invalid(String),
}

/// Verifies a JWT signed by a provider key: signature, `iss`, `aud`, `exp` when present.
pub fn verify_with(
    jwks: &JwkSet,
    token: &str,
    header: &jsonwebtoken::Header,
    issuer: &str,
    audiences: &[&str],
) -> Result<Map<String, Value>, VerifyError> {
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid).ok_or(VerifyError::UnknownKey)?,
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(VerifyError::UnknownKey),
    };
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    if matches!(
        header.alg,
        jsonwebtoken::Algorithm::HS256
            | jsonwebtoken::Algorithm::HS384
            | jsonwebtoken::Algorithm::HS512
    ) {
        return Err(VerifyError::Invalid(
            "symmetric algorithms are not accepted".into(),
        ));
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer.trim_end_matches('/'), issuer]);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation.leeway = 30;
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| VerifyError::Invalid(e.to_string()))
}

/// The JSON payload of a (verified) JWT.
fn payload(jwt: &str) -> Option<Map<String, Value>> {
    crate::authn::service_account::unverified_claims(jwt)
}

/// Groups as the provider sent them: a list, or one string.
pub fn groups(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}
