//! The gate: one request in, one [`Decision`] out, as a pipeline — path → authgate's own
//! endpoints → skip_auth → authenticate → admit → authorize → allow. It sequences the layers
//! below it and is the one place where their typed answers and errors become what the client
//! reads. Knows nothing of protobuf or axum.

use std::sync::Arc;

use serde_json::json;

mod tokens;

use crate::authn::login::Login;
use crate::authn::personal::{PersonalTokens, TokenError};
use crate::authn::session::Sessions;
use crate::authn::{Authenticator, AuthnError};
use crate::authz::admission::{Admission, NotAdmitted};
use crate::authz::rules::ResourceAttributes;
use crate::authz::sar::AccessReviewer;
use crate::authz::{Authorization, Authorizer};
use crate::decision::{Allow, Decision, Reason, Response, StatusCode, pages};
use crate::identity::{Audiences, AuthMethod, HeaderPlan, Identity};
use crate::path::{PathError, PathPrefix};
use crate::ratelimit::RateLimits;
use crate::redirect;
use crate::request::{Method, Request};
use crate::settings::Settings;
use crate::signing::Signer;

/// Headers with which a client asks an app to run another method than the request's.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The prefix of authgate's own endpoints, answered inside the check.
pub const OWN_PREFIX: &str = "/authgate";

/// The browser login, when OIDC is configured: its sessions and its flows.
pub struct Browser {
    /// The sessions.
    pub sessions: Arc<Sessions>,
    /// The login flows.
    pub login: Arc<Login>,
    /// Personal access tokens; `None` unless `personal_tokens.enabled`.
    pub tokens: Option<Arc<PersonalTokens>>,
}

/// Everything `decide` needs, prepared once at start.
pub struct Gate {
    headers: HeaderPlan,
    signer: Arc<Signer>,
    authenticator: Authenticator,
    admission: Admission,
    authorizer: Authorizer,
    /// Paths that need no authentication.
    skip_auth: Vec<PathPrefix>,
    /// API routes: never treated as browser navigations.
    api_routes: Vec<PathPrefix>,
    browser: Option<Browser>,
    /// The gateway's origin: redirect targets must stay on it.
    public_origin: url::Url,
    /// The hosts the identity JWT may be addressed to.
    audiences: Audiences,
    rate_limits: RateLimits,
}

/// What a [`Gate`] is given besides its settings: the parts that hold keys or talk to a peer,
/// as [`crate::App`] (or a test, with fake peers) made them.
pub struct Peers {
    /// Signs the identity JWT.
    pub signer: Arc<Signer>,
    /// Service-account tokens; `None` when TokenReview is disabled.
    pub service_accounts: Option<crate::authn::service_account::ServiceAccountAuthenticator>,
    /// Bearer JWTs from the OIDC issuers; `None` without OIDC.
    pub oidc_bearer: Option<crate::authn::bearer::OidcBearer>,
    /// The browser login; `None` without OIDC.
    pub browser: Option<Browser>,
    /// SubjectAccessReviews; required when a rule needs them.
    pub reviewer: Option<Arc<AccessReviewer>>,
}

impl Gate {
    /// Assembles the gate from the compiled settings and the peers.
    pub fn new(settings: &Settings, peers: Peers) -> Self {
        let config = settings.config();
        let authenticator = Authenticator::new(
            peers.service_accounts,
            peers.oidc_bearer,
            peers
                .browser
                .as_ref()
                .map(|b| (b.sessions.clone(), b.login.clone())),
            peers.browser.as_ref().and_then(|b| b.tokens.clone()),
        );
        Self {
            headers: settings.headers().clone(),
            signer: peers.signer,
            authenticator,
            admission: settings.admission().clone(),
            authorizer: Authorizer::new(
                settings.rules().clone(),
                config.authorization.default,
                peers.reviewer,
            ),
            skip_auth: settings.skip_auth().to_vec(),
            api_routes: settings.api_routes().to_vec(),
            browser: peers.browser,
            public_origin: settings.public_origin().clone(),
            audiences: settings.audiences().clone(),
            rate_limits: RateLimits::new(&config.rate_limit),
        }
    }

    /// The signer, whose public keys `/authgate/jwks.json` serves.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The session store, when browser login is configured (for the metrics' gauges).
    pub fn session_store(&self) -> Option<&Arc<dyn crate::store::SessionStore>> {
        self.browser.as_ref().map(|b| b.sessions.store())
    }

    /// The personal access tokens' store, when they are enabled (for the metrics' gauge).
    pub fn token_store(&self) -> Option<&dyn crate::store::TokenStore> {
        self.browser.as_ref()?.tokens.as_ref().map(|t| t.store())
    }

    /// Decides one request.
    pub async fn decide(&self, req: &Request) -> Decision {
        let path = match &req.path {
            Ok(path) => path.as_str(),
            Err(e) => {
                let reason = match e {
                    PathError::NotNormal { .. } => Reason::PathNotNormal,
                    _ => Reason::AmbiguousPath,
                };
                return Response::bad_request(&e.to_string(), reason).into();
            }
        };
        if let Err(e) = &req.method {
            return Response::bad_request(&e.to_string(), Reason::BadMethod).into();
        }
        if let Some(endpoint) = self.own_endpoint(path) {
            return self.metered_own_endpoint(endpoint, req).await.into();
        }
        if let Some(refused) = method_override(req) {
            return refused.into();
        }
        if self.skip_auth.iter().any(|p| p.matches(path)) {
            let mut remove = self.headers.remove_except(&[]);
            // A personal access token goes to no app, not even one that needs no login.
            if req
                .headers
                .get_all("authorization")
                .any(|v| v.contains(crate::authn::personal::PREFIX))
            {
                remove.push("authorization".into());
            }
            return Decision::Allow(Allow {
                set: Vec::new(),
                remove,
                response_headers: Vec::new(),
                identity: None,
                reason: Reason::SkipAuth,
            });
        }
        let identity = match self.authenticate_within_limits(req).await {
            Ok(identity) => identity,
            Err(response) => return response.into(),
        };
        if let Err(refused) = self.admit(req, &identity) {
            return refused.into();
        }
        match self.authorizer.authorize(&identity, req, path).await {
            Authorization::Allowed {
                forward_credentials,
                remove_headers,
                ..
            } => self.allow(identity, req, forward_credentials, &remove_headers),
            refused => self.authorization_refused(req, identity, refused).into(),
        }
    }

    /// Authenticates, within the client address's budget. An address over its per_client_ip
    /// limit costs nothing more: no store read, no review; a credential already verified (a
    /// cached token) is still answered from memory.
    async fn authenticate_within_limits(&self, req: &Request) -> Result<Arc<Identity>, Response> {
        if let Some(wait) = self.rate_limits.client_ip_refused(req.client_ip) {
            return match self.authenticator.from_memory(req).await {
                Some(identity) => Ok(identity),
                None => Err(Response::too_many(wait, Reason::RateLimitedClient)),
            };
        }
        match self.authenticator.authenticate(req).await {
            Ok(identity) => Ok(identity),
            Err(e) => {
                // Requests that did not authenticate count against their address, so guessing
                // tokens or hammering the login is slow too.
                if let Err(wait) = self.rate_limits.client_ip(req.client_ip) {
                    return Err(Response::too_many(wait, Reason::RateLimitedClient));
                }
                Err(self.unauthenticated(req, e).await)
            }
        }
    }

    /// Admission, and the identity's own request budget between its two halves (an identity
    /// the headers cannot carry is refused before it is counted).
    fn admit(&self, req: &Request, identity: &Arc<Identity>) -> Result<(), Response> {
        if let Err(e) = Admission::carriable(identity) {
            return Err(Response::forbidden(&e.to_string(), e.reason()).about(identity.clone()));
        }
        if let Err(wait) = self.rate_limits.identity(&identity.user) {
            return Err(
                Response::too_many(wait, Reason::RateLimitedIdentity).about(identity.clone())
            );
        }
        self.admission.member(identity).map_err(|e: NotAdmitted| {
            self.forbidden(req, identity, &e.to_string(), None, e.reason())
        })
    }

    /// What a client that did not authenticate reads: the one place where authentication
    /// errors become responses. A browser navigation without a credential goes to the login.
    async fn unauthenticated(&self, req: &Request, e: AuthnError) -> Response {
        let reason = e.reason();
        match &e {
            AuthnError::Missing => {
                if let Some(browser) = &self.browser
                    && req.is_browser_navigation(&self.api_routes)
                {
                    let target = if req.query.is_empty() {
                        req.raw_path.clone()
                    } else {
                        format!("{}?{}", req.raw_path, req.query)
                    };
                    let return_to = redirect::safe_target(&target, &self.public_origin);
                    return browser.login.start(req, &return_to, false).await;
                }
                let hint = if self.browser.is_some() {
                    "authentication required: log in with a browser or send a bearer token"
                } else {
                    "authentication required: send a bearer token"
                };
                Response::unauthenticated(hint, false, reason)
            }
            AuthnError::Malformed(why) => Response::unauthenticated(why, true, reason),
            AuthnError::BearerNotAccepted => {
                Response::unauthenticated(&e.to_string(), true, reason)
            }
            AuthnError::Rejected(why) => {
                tracing::debug!(reason = %why, "bearer token refused");
                let message = match reason.detail_shown() {
                    true => why.to_string(),
                    false => reason.public_message().to_string(),
                };
                Response::unauthenticated(&message, true, reason)
            }
            AuthnError::PersonalToken(TokenError::Store(source)) => store_unavailable(source),
            AuthnError::PersonalToken(why) => {
                Response::unauthenticated(&why.to_string(), true, reason)
            }
            AuthnError::InvalidJwt(why) => {
                tracing::debug!(reason = %why, "OIDC bearer token refused");
                Response::unauthenticated(reason.public_message(), true, reason)
            }
            AuthnError::Refused(why) => {
                tracing::warn!(target: "authgate::audit", event = "identity_refused", reason = reason.as_str(), why = %why, "bearer token refused: not an identity authgate can vouch for");
                Response::forbidden(&why.to_string(), reason)
            }
            AuthnError::BudgetSpent(wait) => {
                tracing::debug!("token review budget spent; refused without a review");
                Response::too_many(*wait, reason)
            }
            AuthnError::Kube(source) => {
                tracing::warn!(
                    error = source as &dyn std::error::Error,
                    "token review failed"
                );
                Response::unavailable(reason)
            }
            AuthnError::IssuerUnavailable(why) => {
                tracing::warn!(
                    error = why as &dyn std::error::Error,
                    "OIDC issuer keys unavailable"
                );
                Response::unavailable(reason)
            }
            AuthnError::Store(source) => store_unavailable(source),
        }
    }

    /// What a client that authenticated but may not go there reads.
    fn authorization_refused(
        &self,
        req: &Request,
        identity: Arc<Identity>,
        refused: Authorization,
    ) -> Response {
        match refused {
            Authorization::Allowed { .. } => unreachable!("allowed requests are forwarded"),
            Authorization::Refused { rule, why } => self.forbidden(
                req,
                &identity,
                &format!("request refused by rule {rule:?}: {why}"),
                None,
                Reason::NamespaceRefused,
            ),
            Authorization::Invalid { rule, why } => Response::json(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("request refused by rule {rule:?}: {why}"),
                Reason::InvalidRequest,
            ),
            Authorization::Denied { rule, attributes } => {
                let message = format!(
                    "{} may not {} in namespace {:?} (rule {rule:?})",
                    identity.user,
                    attributes.describe(),
                    attributes.namespace
                );
                self.forbidden(
                    req,
                    &identity,
                    &message,
                    Some(&attributes),
                    Reason::RbacDenied,
                )
            }
            Authorization::NoRule => self.forbidden(
                req,
                &identity,
                "no rule allows this path",
                None,
                Reason::NoRule,
            ),
            Authorization::OutOfScope { rule, namespace } => {
                let scope = identity.namespaces.join(", ");
                let message = match (namespace.is_empty(), rule) {
                    (false, _) => format!(
                        "this personal access token acts only in {scope}, not in namespace {namespace:?}"
                    ),
                    (true, Some(rule)) => format!(
                        "this personal access token acts only in {scope}; rule {rule:?} names no namespace"
                    ),
                    (true, None) => format!(
                        "this personal access token acts only in {scope}; no rule names a namespace for this path"
                    ),
                };
                self.forbidden(req, &identity, &message, None, Reason::TokenScope)
            }
            Authorization::BudgetSpent(wait) => {
                tracing::debug!(user = %identity.user, "review budget of this identity spent");
                Response::too_many(wait, Reason::ReviewBudgetIdentity).about(identity)
            }
            Authorization::Unavailable(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "subject access review failed"
                );
                Response::unavailable(Reason::KubernetesUnavailable)
            }
        }
    }

    /// A 403 people understand: JSON for API clients, a short page for browsers, naming what
    /// was missing (never internal errors).
    fn forbidden(
        &self,
        req: &Request,
        identity: &Arc<Identity>,
        message: &str,
        attributes: Option<&ResourceAttributes>,
        reason: Reason,
    ) -> Response {
        let response = if req.is_browser_navigation(&self.api_routes) {
            pages::forbidden_page(message, reason)
        } else {
            let mut body = json!({ "error": "forbidden", "message": message });
            if let Some(a) = attributes {
                body["namespace"] = json!(a.namespace);
                body["permission"] = json!(a);
            }
            Response::json_body(StatusCode::FORBIDDEN, &body, reason)
        };
        response.about(identity.clone())
    }

    fn allow(
        &self,
        identity: Arc<Identity>,
        req: &Request,
        forward_credentials: bool,
        rule_removes: &[String],
    ) -> Decision {
        let plan = &self.headers;
        let user_value = plan.user_value(&identity);
        let audience = self.audiences.for_host(&req.host);
        let token = match self.signer.token(&identity, &user_value, audience) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "cannot sign the identity token"
                );
                return Response::internal(Reason::SigningFailed).into();
            }
        };
        // Sized for what can be added: every push below is then without a reallocation.
        let mut set = Vec::with_capacity(4);
        set.push((plan.user.clone(), user_value));
        set.push((plan.jwt.clone(), token.to_string()));
        if !identity.groups.is_empty() {
            set.push((plan.groups.clone(), identity.groups.join(",")));
        }
        let mut remove_cookie = false;
        if let Some(cookie) = self.cookie_without_ours(req) {
            if cookie.is_empty() {
                remove_cookie = true;
            } else {
                set.push(("cookie".into(), cookie));
            }
        }
        let mut remove = Vec::with_capacity(plan.removal_count() + 2 + rule_removes.len());
        // Every look-alike, whether or not this check shows it: over gRPC too, a gateway may
        // send fewer headers than the request has (Envoy's `allowed_headers`).
        plan.push_removals(|name| set.iter().any(|(n, _)| n == name), &mut remove);
        if remove_cookie {
            remove.push("cookie".into());
        }
        // The bearer token that authenticated the request stops here, as authgate's cookies do,
        // unless the rule says the app verifies it itself.
        // A personal access token never reaches an app: no app can verify one, and a notebook
        // server (user code) would collect it.
        if identity.method == AuthMethod::PersonalToken
            || (identity.method != AuthMethod::Session && !forward_credentials)
        {
            remove.push("authorization".into());
        }
        // What the rule keeps from its app (KFP's proxy routes by the Referer).
        remove.extend(rule_removes.iter().cloned());
        Decision::Allow(Allow {
            set,
            remove,
            response_headers: Vec::new(),
            identity: Some(identity),
            reason: Reason::Authenticated,
        })
    }

    /// The request's `Cookie` header without authgate's own cookies, when it carried any: apps
    /// (a user's notebook server runs arbitrary code) must never see another user's session id.
    /// `None` when there is nothing to change.
    fn cookie_without_ours(&self, req: &Request) -> Option<String> {
        let ours = self.browser.as_ref()?.sessions.own_cookie_names();
        let mut found = false;
        let kept: Vec<&str> = req
            .headers
            .get_all("cookie")
            .flat_map(|h| h.split([';', ',']))
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or_default().trim();
                let is_ours = ours.iter().any(|o| o == name);
                found |= is_ours;
                !is_ours
            })
            .collect();
        found.then(|| kept.join("; "))
    }

    /// `/authgate/x` → `Some("/x")`; `/authgate` → `Some("")`. The registered redirect URI may
    /// lie outside /authgate/ (oidc-authservice's /login/oidc): it is the callback, answered
    /// here like the others.
    fn own_endpoint<'a>(&self, path: &'a str) -> Option<&'a str> {
        under_own_prefix(path).or_else(|| {
            self.browser
                .as_ref()
                .is_some_and(|b| b.login.is_other_callback(path))
                .then_some("/callback")
        })
    }

    /// Endpoints that take credentials (login, callback, whoami, logout) count their failures
    /// against the address, and an address over its limit gets nothing from them: a replayed
    /// callback costs the provider a code exchange each time.
    async fn metered_own_endpoint(&self, endpoint: &str, req: &Request) -> Response {
        let metered = !matches!(endpoint, "/jwks.json" | "/backchannel-logout");
        if metered && let Some(wait) = self.rate_limits.client_ip_refused(req.client_ip) {
            return Response::too_many(wait, Reason::RateLimitedClient);
        }
        let response = self.answer_own_endpoint(endpoint, req).await;
        if metered
            && matches!(
                response.status,
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
            )
        {
            let _ = self.rate_limits.client_ip(req.client_ip);
        }
        response
    }

    async fn answer_own_endpoint(&self, endpoint: &str, req: &Request) -> Response {
        match endpoint {
            "/jwks.json" => Response::new(
                StatusCode::OK,
                "application/json",
                self.signer.jwks().to_string(),
                Reason::Jwks,
            )
            .cached("public, max-age=300"),
            "/whoami" => match self.authenticator.authenticate(req).await {
                Ok(identity) => {
                    let body = json!({
                        "user": self.headers.user_value(&identity),
                        "groups": identity.groups,
                        "auth_method": identity.method,
                    });
                    Response::json_body(StatusCode::OK, &body, Reason::Whoami).about(identity)
                }
                Err(e) => self.unauthenticated(req, e).await,
            },
            "/login" | "/callback" | "/logout" | "/backchannel-logout" => {
                let Some(browser) = &self.browser else {
                    return Response::json(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "browser login is not configured",
                        Reason::OwnNotFound,
                    );
                };
                let login = &browser.login;
                match endpoint {
                    "/login" => {
                        let rd = req
                            .query_values("rd")
                            .into_iter()
                            .next()
                            .unwrap_or_default();
                        login
                            .start(
                                req,
                                &redirect::safe_target(&rd, &self.public_origin),
                                req.query_values("fresh").iter().any(|f| f == "1"),
                            )
                            .await
                    }
                    "/callback" => login.callback(req).await,
                    "/logout" => self.logout(browser, req).await,
                    _ if req.method == Ok(Method::POST) => login.backchannel(&req.body).await,
                    _ => Response::json(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "POST a logout_token",
                        Reason::OwnMethod,
                    ),
                }
            }
            tokens if tokens == "/tokens" || tokens.starts_with("/tokens/") => {
                self.personal_tokens(req, &tokens["/tokens".len()..]).await
            }
            _ => Response::json(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such authgate endpoint",
                Reason::OwnNotFound,
            ),
        }
    }

    /// Logout ends a session, so a cross-site page must not be able to trigger it: POST, or a
    /// GET that the browser marks as same-origin.
    async fn logout(&self, browser: &Browser, req: &Request) -> Response {
        if !same_origin(req, &self.public_origin) {
            return pages::logout_confirm_page();
        }
        let found = match browser.sessions.find(&req.headers).await {
            Ok(found) => found,
            Err(e) => return store_unavailable(&e),
        };
        browser.login.logout(req, found).await
    }
}

/// A 503 for a store that did not answer, its cause logged (never shown).
fn store_unavailable(e: &crate::store::StoreError) -> Response {
    tracing::warn!(
        error = e as &dyn std::error::Error,
        "session store unavailable"
    );
    Response::unavailable(Reason::StoreUnavailable)
}

/// Whether a request shows it comes from a page of this origin, and nothing says otherwise: what
/// a request that ends or makes something (logout, a personal access token) must show (CSRF).
/// A browser says where a request comes from: `Sec-Fetch-Site`, and `Origin` on every POST
/// (`null` when it will not say). A request that says nothing could be a cross-site form in a
/// browser that sends neither header, so it does not count as same-origin.
fn same_origin(req: &Request, origin: &url::Url) -> bool {
    let ours = |value: &str| url::Url::parse(value).is_ok_and(|u| u.origin() == origin.origin());
    let said_same = req
        .headers
        .get("sec-fetch-site")
        .is_some_and(|s| s == "same-origin" || s == "none")
        || req.headers.get("origin").is_some_and(ours)
        || req.headers.get("referer").is_some_and(ours);
    let said_cross = req
        .headers
        .get("sec-fetch-site")
        .is_some_and(|s| s != "same-origin" && s != "none")
        || req.headers.get("origin").is_some_and(|o| !ours(o));
    said_same && !said_cross
}

/// `/authgate/x` → `Some("/x")`; `/authgate` → `Some("")`; `/authgateway/x` → `None` (a
/// registered callback path may start so).
fn under_own_prefix(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(OWN_PREFIX)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// grpc-gateway (the KFP API) runs the GET handler of a POST that says
/// `X-HTTP-Method-Override: GET`, and Express's method-override does the same: a rule judged on
/// the method Envoy saw would not be the one the app runs.
fn method_override(req: &Request) -> Option<Response> {
    let name = METHOD_OVERRIDES
        .iter()
        .find(|name| req.headers.get(name).is_some())?;
    Some(Response::bad_request(
        &format!(
            "the {name} header is refused: the app could run another method than the one authorized"
        ),
        Reason::MethodOverride,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_endpoints_are_whole_segments_under_the_prefix() {
        assert_eq!(under_own_prefix("/authgate"), Some(""));
        assert_eq!(under_own_prefix("/authgate/whoami"), Some("/whoami"));
        // Not authgate's: a registered callback path may start so, and the gate asks about it.
        assert_eq!(under_own_prefix("/authgateway/callback"), None);
        assert_eq!(under_own_prefix("/api/authgate"), None);
    }
}
