//! `decide()`: the whole policy. Given a transport-free [`Request`], say who it comes from and
//! what Envoy must do: forward it with these headers set and removed, or answer it with this
//! response. Pure apart from the authenticators and the signer it is handed; knows nothing of
//! protobuf or axum.

use std::sync::Arc;

use serde_json::json;

use crate::authn::bearer::{BearerError, OidcBearer};
use crate::authn::claims::ClaimError;
use crate::authn::login::{Login, html_escape};
use crate::authn::service_account::{Review, ServiceAccountAuthenticator, token_key};
use crate::authn::session::{Found, Sessions};
use crate::authn::{Credential, credential};
use crate::authz::{Authorization, Authorizer};
use crate::identity::{AuthMethod, HeaderPlan, Identity, carriable_identity};
use crate::k8s::KubeError;
use crate::path::PathPrefix;
use crate::redirect;
use crate::request::Request;
use crate::signing::Signer;

/// Headers with which a client asks an app to run another method than the request's.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The prefix of authgate's own endpoints, answered inside the check.
pub const OWN_PREFIX: &str = "/authgate";

/// What Envoy must do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward upstream.
    Allow(Allow),
    /// Answer the client directly (errors, and authgate's own pages, which may carry a 200).
    Deny(Deny),
}

/// Forward upstream, after setting and removing headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Headers to set upstream, overwriting every client copy.
    pub set: Vec<(String, String)>,
    /// Headers to remove upstream; never one that is also in `set`.
    pub remove: Vec<String>,
    /// Headers for the client's response (e.g. `set-cookie`).
    pub response_headers: Vec<(String, String)>,
    /// Who, when authenticated (skip-auth paths have nobody).
    pub identity: Option<Arc<Identity>>,
    /// Why, for logs and metrics.
    pub reason: &'static str,
}

/// Answer the client with this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
    /// Who, when known (e.g. an authenticated identity outside the allowed groups).
    pub identity: Option<Arc<Identity>>,
    /// Why, for logs and metrics.
    pub reason: &'static str,
}

impl Decision {
    /// Why, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Decision::Allow(a) => a.reason,
            Decision::Deny(d) => d.reason,
        }
    }

    /// The HTTP status the client sees from authgate (200 for allow).
    pub fn status(&self) -> u16 {
        match self {
            Decision::Allow(_) => 200,
            Decision::Deny(d) => d.status,
        }
    }

    /// The identity, when one was established.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Decision::Allow(a) => a.identity.as_deref(),
            Decision::Deny(d) => d.identity.as_deref(),
        }
    }

    /// This decision, if Envoy can apply it exactly; else a 500. An allow whose headers cannot
    /// all be written (a value with a control character, a bad name) would reach the app
    /// without them, and the client's own copy of an identity header with them: never.
    pub fn deliverable(self) -> Decision {
        match &self {
            // Names come from the validated configuration and authgate's own constants; values
            // (identity, cookies) may come from outside, and are what is checked per request.
            Decision::Allow(allow)
                if !allow
                    .set
                    .iter()
                    .chain(&allow.response_headers)
                    .all(|(_, v)| header_value_deliverable(v)) =>
            {
                tracing::error!(
                    "an allow answer carries a header that cannot be written; refused instead"
                );
                let mut deny = json_response(500, "internal", "internal error", "undeliverable");
                if let Decision::Deny(d) = &mut deny {
                    d.identity = allow.identity.clone();
                }
                deny
            }
            _ => self,
        }
    }
}

/// Whether a header can be written as is, on HTTP/1.1 and HTTP/2: a token name and a value
/// without control characters (other than tab) — `http::HeaderValue::from_bytes`'s rule. The
/// value scan has no early exit, so it vectorizes: every allowed answer carries a ~700-byte JWT.
pub fn header_deliverable(name: &str, value: &str) -> bool {
    header_value_deliverable(value) && http::HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// The value half of [`header_deliverable`].
pub fn header_value_deliverable(value: &str) -> bool {
    !value.bytes().fold(false, |bad, b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// Everything `decide` needs, prepared once at start.
pub struct Gate {
    /// Header names to set and remove.
    pub headers: HeaderPlan,
    /// Signs the identity JWT.
    pub signer: Arc<Signer>,
    /// Service-account tokens; `None` when TokenReview is disabled.
    pub service_accounts: Option<ServiceAccountAuthenticator>,
    /// Paths that need no authentication.
    pub skip_auth: Vec<PathPrefix>,
    /// Empty: any authenticated identity passes.
    pub allowed_groups: Vec<String>,
    /// Route rules and SubjectAccessReviews.
    pub authorizer: Authorizer,
    /// API routes: never treated as browser navigations.
    pub api_routes: Vec<PathPrefix>,
    /// Empty: any domain; else people need an e-mail address in one of these.
    pub allowed_email_domains: Vec<String>,
    /// Browser sessions; `None` without OIDC.
    pub sessions: Option<Arc<Sessions>>,
    /// The browser login; `None` without OIDC.
    pub login: Option<Login>,
    /// Bearer JWTs from the OIDC issuers; `None` without OIDC.
    pub oidc_bearer: Option<OidcBearer>,
    /// The gateway's origin: redirect targets must stay on it.
    pub public_origin: url::Url,
    /// The hosts the identity JWT may be addressed to.
    pub audiences: crate::identity::Audiences,
    /// Per-identity and per-address request limits.
    pub rate_limits: crate::ratelimit::RateLimits,
}

impl Gate {
    /// Decides one request.
    pub async fn decide(&self, req: &Request) -> Decision {
        let path = match &req.path {
            Ok(path) => path.as_str(),
            Err(e) => {
                let reason = match e {
                    crate::path::PathError::NotNormal { .. } => "path_not_normal",
                    _ => "ambiguous_path",
                };
                return json_response(400, "bad_request", &e.to_string(), reason);
            }
        };

        // The registered redirect URI may lie outside /authgate/ (oidc-authservice's
        // /login/oidc): it is the callback, answered here like the others.
        let own = own_endpoint(path).or_else(|| {
            self.login
                .as_ref()
                .is_some_and(|l| l.is_other_callback(path))
                .then_some("/callback")
        });
        if let Some(own) = own {
            // Endpoints that take credentials (login, callback, whoami, logout) count their
            // failures against the address, and an address over its limit gets nothing from
            // them: a replayed callback costs the provider a code exchange each time.
            let metered = !matches!(own, "/jwks.json" | "/backchannel-logout");
            if metered && let Some(wait) = self.rate_limits.client_ip_refused(req.client_ip) {
                return too_many(wait, "rate_limited_client");
            }
            let decision = self.own_endpoint(own, req).await;
            if metered && matches!(decision.status(), 400 | 401) {
                let _ = self.rate_limits.client_ip(req.client_ip);
            }
            return decision;
        }

        // grpc-gateway (the KFP API) runs the GET handler of a POST that says
        // `X-HTTP-Method-Override: GET`, and Express's method-override does the same: a rule
        // judged on the method Envoy saw would not be the one the app runs.
        if let Some(name) = METHOD_OVERRIDES
            .iter()
            .find(|name| req.headers.get(name).is_some())
        {
            return json_response(
                400,
                "bad_request",
                &format!(
                    "the {name} header is refused: the app could run another method than the one authorized"
                ),
                "method_override",
            );
        }

        if self.skip_auth.iter().any(|p| p.matches(path)) {
            return Decision::Allow(Allow {
                set: Vec::new(),
                remove: self.headers.remove_all().to_vec(),
                response_headers: Vec::new(),
                identity: None,
                reason: "skip_auth",
            });
        }

        // An address over its per_client_ip limit costs nothing more: no store read, no review.
        // A credential already verified (a cached token) is still answered from memory, so
        // machines behind the same address (a NAT) go on while a stranger there floods.
        let authenticated = match self.rate_limits.client_ip_refused(req.client_ip) {
            Some(wait) => match self.authenticate_from_memory(req).await {
                Some(identity) => Ok(identity),
                None => return too_many(wait, "rate_limited_client"),
            },
            None => self.authenticate(req).await,
        };
        let identity = match authenticated {
            Ok(identity) => identity,
            Err(deny) => {
                // Requests that did not authenticate count against their address, so guessing
                // tokens or hammering the login is slow too.
                if let Err(wait) = self.rate_limits.client_ip(req.client_ip) {
                    return too_many(wait, "rate_limited_client");
                }
                return deny;
            }
        };
        // Whoever vouched for it (a TokenReview too), an identity the headers cannot carry
        // exactly is refused: the app would act on a different name than authgate judged.
        if let Err(why) = carriable_identity(&identity) {
            let mut d = json_response(403, "forbidden", &why.to_string(), "identity_not_carriable");
            if let Decision::Deny(deny) = &mut d {
                deny.identity = Some(identity);
            }
            return d;
        }
        if let Err(wait) = self.rate_limits.identity(&identity.user) {
            let mut d = too_many(wait, "rate_limited_identity");
            if let Decision::Deny(deny) = &mut d {
                deny.identity = Some(identity);
            }
            return d;
        }

        if let Some(deny) = self.check_groups(req, &identity) {
            return deny;
        }

        match self.authorizer.authorize(&identity, req, path).await {
            Authorization::Allowed {
                forward_credentials,
                remove_headers,
                ..
            } => self.allow(identity, req, forward_credentials, &remove_headers),
            Authorization::Refused { rule, why } => self.forbidden(
                req,
                &identity,
                &format!("request refused by rule {rule:?}: {why}"),
                None,
                "namespace_refused",
            ),
            Authorization::Invalid { rule, why } => json_response(
                400,
                "bad_request",
                &format!("request refused by rule {rule:?}: {why}"),
                "invalid_request",
            ),
            Authorization::Denied { rule, attributes } => {
                let message = format!(
                    "{} may not {} in namespace {:?} (rule {rule:?})",
                    identity.user,
                    attributes.describe(),
                    attributes.namespace
                );
                self.forbidden(req, &identity, &message, Some(&attributes), "rbac_denied")
            }
            Authorization::NoRule => {
                self.forbidden(req, &identity, "no rule allows this path", None, "no_rule")
            }
            Authorization::Unavailable(KubeError::Throttled(wait)) => {
                tracing::debug!(user = %identity.user, "review budget of this identity spent");
                let mut d = too_many(wait, "review_budget_identity");
                if let Decision::Deny(deny) = &mut d {
                    deny.identity = Some(identity);
                }
                d
            }
            Authorization::Unavailable(e) => {
                tracing::warn!(error = %e, "subject access review failed");
                unavailable("kubernetes_unavailable")
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
        attributes: Option<&crate::authz::rules::ResourceAttributes>,
        reason: &'static str,
    ) -> Decision {
        let mut decision = if req.is_browser_navigation(&self.api_routes) {
            own_page(
                403,
                "text/html; charset=utf-8",
                forbidden_page(message),
                reason,
                None,
            )
        } else {
            let mut body = json!({ "error": "forbidden", "message": message });
            if let Some(a) = attributes {
                body["namespace"] = json!(a.namespace);
                body["permission"] = json!(a);
            }
            own_page(403, "application/json", body.to_string(), reason, None)
        };
        if let Decision::Deny(deny) = &mut decision {
            deny.identity = Some(identity.clone());
        }
        decision
    }

    /// The identity of a bearer token verified lately (TokenReview or OIDC cache), without any
    /// call; `None` for anything else.
    async fn authenticate_from_memory(&self, req: &Request) -> Option<Arc<Identity>> {
        let Credential::Bearer(token) = credential(&req.headers) else {
            return None;
        };
        let key = token_key(token);
        if let Some(service_accounts) = &self.service_accounts
            && let Some(Review::Authenticated(identity)) = service_accounts.cached(&key).await
        {
            return Some(identity);
        }
        self.oidc_bearer.as_ref()?.cached(&key)
    }

    async fn authenticate(&self, req: &Request) -> Result<Arc<Identity>, Decision> {
        self.authenticate_with_session(req)
            .await
            .map(|(identity, _)| identity)
    }

    /// Who the request comes from, and the browser session it used (if that is how).
    async fn authenticate_with_session(
        &self,
        req: &Request,
    ) -> Result<(Arc<Identity>, Option<Found>), Decision> {
        match credential(&req.headers) {
            Credential::Bearer(token) => self.authenticate_bearer(token).await.map(|i| (i, None)),
            Credential::Malformed(why) => Err(unauthenticated(why, true, "malformed_credential")),
            Credential::None => {
                if let Some(sessions) = &self.sessions {
                    let found = match sessions.find(&req.headers).await {
                        Ok(Some(found)) => match &self.login {
                            Some(login) => login.refresh_if_due(found).await,
                            None => Ok(Some(found)),
                        },
                        other => other,
                    };
                    match found {
                        Ok(Some(found)) => {
                            let issuer = self.login.as_ref().map(|l| l.issuer().clone());
                            return Ok((Arc::new(found.identity(issuer)), Some(found)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "session store unavailable");
                            return Err(unavailable("store_unavailable"));
                        }
                    }
                }
                Err(self.login_or_401(req).await)
            }
        }
    }

    /// No credential: a browser navigation goes to the login; anything else gets 401 JSON.
    async fn login_or_401(&self, req: &Request) -> Decision {
        if let Some(login) = &self.login
            && req.is_browser_navigation(&self.api_routes)
        {
            let target = if req.query.is_empty() {
                req.raw_path.clone()
            } else {
                format!("{}?{}", req.raw_path, req.query)
            };
            let return_to = redirect::safe_target(&target, &self.public_origin);
            return login.start(req, &return_to).await;
        }
        let hint = if self.login.is_some() {
            "authentication required: log in with a browser or send a bearer token"
        } else {
            "authentication required: send a bearer token"
        };
        unauthenticated(hint, false, "no_credential")
    }

    async fn authenticate_bearer(&self, token: &str) -> Result<Arc<Identity>, Decision> {
        let key = token_key(token);
        // A token the TokenReview cache knows needs nothing more, not even a look at its issuer:
        // the issuers are fixed at start, so an OIDC issuer's token never reaches that cache.
        if let Some(service_accounts) = &self.service_accounts
            && let Some(review) = service_accounts.cached(&key).await
        {
            return review_answer(Ok(review));
        }
        if let Some(oidc) = &self.oidc_bearer {
            if let Some(identity) = oidc.cached(&key) {
                return Ok(identity);
            }
            if oidc.claims_our_issuer(token) {
                return match oidc.authenticate(token, &key).await {
                    Ok(identity) => Ok(identity),
                    Err(BearerError::Invalid(why)) => {
                        tracing::debug!(reason = %why, "OIDC bearer token refused");
                        Err(unauthenticated(
                            "invalid bearer token",
                            true,
                            "invalid_token",
                        ))
                    }
                    Err(BearerError::Unavailable(why)) => {
                        tracing::warn!(reason = %why, "OIDC issuer keys unavailable");
                        Err(unavailable("provider_unavailable"))
                    }
                    Err(BearerError::Refused(why)) => Err(identity_refused(&why)),
                };
            }
        }
        // Not an OIDC issuer's token: a TokenReview decides.
        let Some(service_accounts) = &self.service_accounts else {
            return Err(unauthenticated(
                "bearer tokens are not accepted by this gateway",
                true,
                "bearer_not_accepted",
            ));
        };
        review_answer(service_accounts.authenticate_keyed(token, &key).await)
    }

    fn check_groups(&self, req: &Request, identity: &Arc<Identity>) -> Option<Decision> {
        if identity.is_person() && !self.allowed_email_domains.is_empty() {
            let domain = identity
                .user
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase());
            let allowed = domain.is_some_and(|d| {
                self.allowed_email_domains
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&d))
            });
            if !allowed {
                return Some(self.forbidden(
                    req,
                    identity,
                    &format!(
                        "{} is not in an e-mail domain allowed to use this gateway",
                        identity.user
                    ),
                    None,
                    "domain_not_allowed",
                ));
            }
        }
        if self.allowed_groups.is_empty()
            || identity
                .groups
                .iter()
                .any(|g| self.allowed_groups.contains(g))
        {
            return None;
        }
        Some(self.forbidden(
            req,
            identity,
            &format!(
                "{} is not a member of a group allowed to use this gateway",
                identity.user
            ),
            None,
            "group_not_allowed",
        ))
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
                tracing::error!(error = %e, "cannot sign the identity token");
                return json_response(500, "internal", "internal error", "signing_failed");
            }
        };
        let mut set = vec![
            (plan.user.clone(), user_value),
            (plan.jwt.clone(), token.to_string()),
        ];
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
        let set_names: Vec<&str> = set.iter().map(|(n, _)| n.as_str()).collect();
        let mut remove = plan.remove_except(&set_names);
        if remove_cookie {
            remove.push("cookie".into());
        }
        // The bearer token that authenticated the request stops here, as authgate's cookies do,
        // unless the rule says the app verifies it itself.
        if identity.method != AuthMethod::Session && !forward_credentials {
            remove.push("authorization".into());
        }
        // What the rule keeps from its app (KFP's proxy routes by the Referer).
        remove.extend(rule_removes.iter().cloned());
        Decision::Allow(Allow {
            set,
            remove,
            response_headers: Vec::new(),
            identity: Some(identity),
            reason: "authenticated",
        })
    }

    /// The request's `Cookie` header without authgate's own cookies, when it carried any: apps
    /// (a user's notebook server runs arbitrary code) must never see another user's session id.
    /// `None` when there is nothing to change.
    fn cookie_without_ours(&self, req: &Request) -> Option<String> {
        let ours = self.sessions.as_ref()?.own_cookie_names();
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

    async fn own_endpoint(&self, endpoint: &str, req: &Request) -> Decision {
        match endpoint {
            "/jwks.json" => own_page(
                200,
                "application/json",
                self.signer.jwks().to_string(),
                "jwks",
                Some("public, max-age=300"),
            ),
            "/whoami" => match self.authenticate(req).await {
                Ok(identity) => {
                    let body = json!({
                        "user": self.headers.user_value(&identity),
                        "groups": identity.groups,
                        "auth_method": identity.method,
                    });
                    let mut d = own_page(200, "application/json", body.to_string(), "whoami", None);
                    if let Decision::Deny(deny) = &mut d {
                        deny.identity = Some(identity);
                    }
                    d
                }
                Err(deny) => deny,
            },
            "/login" | "/callback" | "/logout" | "/backchannel-logout" => {
                let Some(login) = &self.login else {
                    return json_response(
                        404,
                        "not_found",
                        "browser login is not configured",
                        "own_not_found",
                    );
                };
                match endpoint {
                    "/login" => {
                        let rd = req
                            .query_values("rd")
                            .into_iter()
                            .next()
                            .unwrap_or_default();
                        login
                            .start(req, &redirect::safe_target(&rd, &self.public_origin))
                            .await
                    }
                    "/callback" => login.callback(req).await,
                    "/logout" => self.logout(login, req).await,
                    _ if req.method == "POST" => login.backchannel(&req.body).await,
                    _ => json_response(
                        405,
                        "method_not_allowed",
                        "POST a logout_token",
                        "own_method",
                    ),
                }
            }
            _ => json_response(
                404,
                "not_found",
                "no such authgate endpoint",
                "own_not_found",
            ),
        }
    }

    /// Logout ends a session, so a cross-site page must not be able to trigger it: POST, or a
    /// GET that the browser marks as same-origin.
    async fn logout(&self, login: &Login, req: &Request) -> Decision {
        let same_origin = req
            .headers
            .get("sec-fetch-site")
            .is_some_and(|s| s == "same-origin" || s == "none")
            || req.headers.get("origin").is_some_and(|o| {
                url::Url::parse(o).is_ok_and(|o| o.origin() == self.public_origin.origin())
            })
            || req.headers.get("referer").is_some_and(|r| {
                url::Url::parse(r).is_ok_and(|r| r.origin() == self.public_origin.origin())
            });
        // A browser says where a request comes from: `Sec-Fetch-Site`, and `Origin` on every
        // POST (`null` when it will not say). A cross-site POST (a form on another site) must
        // not end the session any more than a cross-site GET; a POST with neither header is
        // not from a browser, and no other site can make one.
        let cross_site = req
            .headers
            .get("sec-fetch-site")
            .is_some_and(|s| s != "same-origin" && s != "none")
            || req.headers.get("origin").is_some_and(|o| {
                !url::Url::parse(o).is_ok_and(|o| o.origin() == self.public_origin.origin())
            });
        // POST or GET, a browser must show the request comes from this origin (the confirm
        // form's POST carries `Origin`); a request that says nothing could be a cross-site form
        // in a browser that sends neither header.
        let may_log_out = same_origin && !cross_site;
        if !may_log_out {
            return own_page(
                200,
                "text/html; charset=utf-8",
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log out</title></head>\
                 <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
                 <form method=\"post\" action=\"/authgate/logout\"><p>Log out of this site?</p>\
                 <button id=\"logout\" type=\"submit\">Log out</button></form></body></html>"
                    .into(),
                "logout_confirm",
                None,
            );
        }
        let found = match &self.sessions {
            Some(sessions) => match sessions.find(&req.headers).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "session store unavailable");
                    return unavailable("store_unavailable");
                }
            },
            None => None,
        };
        login.logout(req, found).await
    }
}

/// `/authgate/x` → `Some("/x")`; `/authgate` → `Some("")`.
fn own_endpoint(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(OWN_PREFIX)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn own_page(
    status: u16,
    content_type: &str,
    body: String,
    reason: &'static str,
    cache: Option<&str>,
) -> Decision {
    Decision::Deny(Deny {
        status,
        headers: vec![
            ("content-type".into(), content_type.into()),
            ("cache-control".into(), cache.unwrap_or("no-store").into()),
        ],
        body,
        identity: None,
        reason,
    })
}

fn forbidden_page(message: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Access denied</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>Access denied</h1><p>{}</p>\
         <p>Ask an owner of the namespace to share it with you.</p></body></html>",
        html_escape(message)
    )
}

/// A TokenReview's answer (cached or not) as the gate's: the identity, or the response.
fn review_answer(review: Result<Review, KubeError>) -> Result<Arc<Identity>, Decision> {
    match review {
        Ok(Review::Authenticated(identity)) => Ok(identity),
        Ok(Review::Rejected(why)) => {
            tracing::debug!(reason = %why, "bearer token refused");
            // The policy's own reasons are safe to show and help the caller fix the token;
            // the API server's are not shown.
            let message = if why.starts_with("service-account token")
                || why.starts_with("legacy")
                || why.starts_with("not a bound")
            {
                why.to_string()
            } else {
                "invalid bearer token".to_string()
            };
            Err(unauthenticated(&message, true, "invalid_token"))
        }
        Err(KubeError::Throttled(wait)) => {
            tracing::debug!("token review budget spent; refused without a review");
            Err(too_many(wait, "review_budget"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "token review failed");
            Err(unavailable("kubernetes_unavailable"))
        }
    }
}

/// A genuine credential that vouches for someone authgate cannot accept (an unverified e-mail, a
/// reserved or uncarriable name): 403, saying why, and an audit line.
fn identity_refused(why: &ClaimError) -> Decision {
    tracing::warn!(target: "authgate::audit", event = "identity_refused", reason = why.reason(), why = %why, "bearer token refused: not an identity authgate can vouch for");
    json_response(403, "forbidden", &why.to_string(), why.reason())
}

/// A JSON error answer.
pub fn json_response(status: u16, error: &str, message: &str, reason: &'static str) -> Decision {
    let body = json!({ "error": error, "message": message }).to_string();
    own_page(status, "application/json", body, reason, None)
}

fn unauthenticated(message: &str, token_was_bad: bool, reason: &'static str) -> Decision {
    let mut decision = json_response(401, "unauthenticated", message, reason);
    if let Decision::Deny(deny) = &mut decision {
        let challenge = if token_was_bad {
            r#"Bearer realm="authgate", error="invalid_token""#
        } else {
            r#"Bearer realm="authgate""#
        };
        deny.headers
            .push(("www-authenticate".into(), challenge.into()));
    }
    decision
}

fn too_many(wait: std::time::Duration, reason: &'static str) -> Decision {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut decision = json_response(
        429,
        "too_many_requests",
        &format!("rate limit exceeded; retry in {seconds}s"),
        reason,
    );
    if let Decision::Deny(deny) = &mut decision {
        deny.headers
            .push(("retry-after".into(), seconds.to_string()));
    }
    decision
}

fn unavailable(reason: &'static str) -> Decision {
    let mut decision = json_response(
        503,
        "unavailable",
        "authgate cannot verify this request right now; try again shortly",
        reason,
    );
    if let Decision::Deny(deny) = &mut decision {
        deny.headers.push(("retry-after".into(), "5".into()));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_deliverable_is_the_http_crates_rule() {
        for b in 0..0x80u8 {
            let value = format!("a{}b", char::from(b));
            assert_eq!(
                header_deliverable("x", &value),
                http::HeaderValue::from_bytes(value.as_bytes()).is_ok(),
                "{b:#x}"
            );
        }
        assert!(
            header_deliverable("x", "jos\u{e9}"),
            "UTF-8 bytes are obs-text"
        );
        assert!(!header_deliverable("bad name", "v"));
    }
}
