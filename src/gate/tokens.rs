//! `/authgate/tokens`: where a logged-in person lists, makes and revokes their personal access
//! tokens ([`crate::authn::personal`]) — JSON for scripts (`Accept: application/json`), a page
//! for browsers.
//!
//! - `GET /authgate/tokens` lists the caller's own tokens (never a secret).
//! - `POST /authgate/tokens` makes one: `{"name", "expires_in", "namespaces"}` as JSON, or the
//!   same fields in the query (`?name=ci&expires_in=30d&namespaces=team-a,team-b`) — through
//!   Envoy the check sees no request body unless `with_request_body` is set. 201 with the secret,
//!   shown this once.
//! - `GET /authgate/tokens/new?name=…&expires_in=…&namespaces=…` names what would be made, with
//!   a button that makes it (no script on any page; a CSP says so and forbids framing).
//! - `DELETE /authgate/tokens/{id}` revokes one (204; another person's id is 404).
//! - `POST /authgate/tokens/exchange` (`Authorization: AuthgateCode <code>.<verifier>`):
//!   `authgate login` takes the token its one-time code stands for.
//!
//! Listing and making need a browser session, not a token; making and revoking need a request
//! that shows it comes from this origin (CSRF); making needs a fresh login too
//! (`personal_tokens.fresh_login`), since pages on this origin (a notebook) can send
//! same-origin requests with a visitor's session. A token may revoke itself (`authgate logout`).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Browser, Gate, same_origin, store_unavailable};
use crate::authn::personal::{
    ExchangeError, Exchanged, Judged, Loopback, MintError, Minted, PersonalTokens, TokenRequest,
};
use crate::authn::session::Found;
use crate::authn::{Credential, credential};
use crate::decision::pages::{document, html_escape};
use crate::decision::{Reason, Response, StatusCode};
use crate::identity::AuthMethod;
use crate::request::{Method, Request};
use crate::store::PersonalToken;

impl Gate {
    /// Answers `/authgate/tokens` and below (`rest` is what follows `/tokens`).
    pub(super) async fn personal_tokens(&self, req: &Request, rest: &str) -> Response {
        let (Some(browser), Some(tokens)) = (
            self.browser.as_ref(),
            self.browser.as_ref().and_then(|b| b.tokens.as_deref()),
        ) else {
            return Response::json(
                StatusCode::NOT_FOUND,
                "not_found",
                "personal access tokens are not enabled on this gateway (personal_tokens.enabled)",
                Reason::OwnNotFound,
            );
        };
        let method = req.method.as_ref().ok();
        match (method, rest) {
            (Some(&Method::GET | &Method::HEAD), "" | "/") => {
                match self.token_session(browser, req).await {
                    Ok(found) => list(tokens, req, &found.session.user).await,
                    Err(response) => response,
                }
            }
            (Some(&Method::GET | &Method::HEAD), "/new") => {
                match self.token_session(browser, req).await {
                    Ok(found) => confirm(tokens, req, &found),
                    // A browser sent here by `authgate login` logs in first, and comes back.
                    Err(response)
                        if response.status == StatusCode::UNAUTHORIZED && wants_html(req) =>
                    {
                        fresh_login(req)
                    }
                    Err(response) => response,
                }
            }
            (Some(&Method::POST), "/exchange") => exchange(tokens, req).await,
            (Some(&Method::POST), "" | "/") => {
                if !same_origin(req, &self.public_origin) {
                    return cross_site();
                }
                match self.token_session(browser, req).await {
                    Ok(found) => create(tokens, req, &found).await,
                    Err(response) => response,
                }
            }
            (Some(&Method::DELETE), id) if id.len() > 1 => {
                self.revoke(browser, tokens, req, &id[1..]).await
            }
            _ => Response::json(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET or POST /authgate/tokens, GET /authgate/tokens/new, POST \
                 /authgate/tokens/exchange, DELETE /authgate/tokens/{id}",
                Reason::OwnMethod,
            ),
        }
    }

    /// The browser session a token is managed with: a bearer token does not do (a token must not
    /// make tokens, or one leaked would outlive its revocation).
    async fn token_session(&self, browser: &Browser, req: &Request) -> Result<Found, Response> {
        if credential(&req.headers) != Credential::None {
            return Err(Response::forbidden(
                "personal access tokens are made and listed from a browser session, not with a \
                 bearer token: log in at this gateway in a browser",
                Reason::Tokens,
            ));
        }
        let found = match browser.sessions.find(&req.headers).await {
            Ok(Some(found)) => browser.login.refresh_if_due(found).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Response::unauthenticated(
                "log in with a browser first",
                false,
                Reason::NoCredential,
            )),
            Err(e) => Err(store_unavailable(&e)),
        }
    }

    /// `DELETE /authgate/tokens/{id}`: by the owner's browser session, or by the token itself.
    async fn revoke(
        &self,
        browser: &Browser,
        tokens: &PersonalTokens,
        req: &Request,
        id: &str,
    ) -> Response {
        let user = match credential(&req.headers) {
            Credential::Bearer(_) => match self.authenticator.authenticate(req).await {
                Ok(identity)
                    if identity.method == AuthMethod::PersonalToken
                        && identity.extra.get(crate::authn::personal::TOKEN_ID_EXTRA)
                            == Some(&vec![id.to_string()]) =>
                {
                    identity.user.clone()
                }
                Ok(_) => {
                    return Response::forbidden(
                        "a bearer token may revoke only itself; revoke other tokens from a \
                         browser session",
                        Reason::Tokens,
                    );
                }
                Err(e) => return self.unauthenticated(req, e).await,
            },
            _ => {
                if !same_origin(req, &self.public_origin) {
                    return cross_site();
                }
                match self.token_session(browser, req).await {
                    Ok(found) => found.session.user,
                    Err(response) => return response,
                }
            }
        };
        match tokens.revoke(&user, id).await {
            Ok(true) => Response::empty(StatusCode::NO_CONTENT, Reason::Tokens),
            Ok(false) => Response::json(
                StatusCode::NOT_FOUND,
                "not_found",
                "you hold no token with this id",
                Reason::Tokens,
            ),
            Err(e) => store_unavailable(&e),
        }
    }
}

fn cross_site() -> Response {
    Response::forbidden(
        "this request does not show it comes from this site (Origin or Sec-Fetch-Site): \
         personal access tokens are made and revoked only from its own pages",
        Reason::Tokens,
    )
}

/// Whether the client asked for a page rather than JSON.
fn wants_html(req: &Request) -> bool {
    let accept = req.headers.get_all("accept").collect::<Vec<_>>().join(",");
    let accept = accept.to_ascii_lowercase();
    accept.contains("text/html") && !accept.contains("application/json")
}

fn time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn described(token: &PersonalToken) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "created": time(token.created_at),
        "last_used": token.last_used.map(time),
        "expires_at": time(token.expires_at),
        "namespaces": token.namespaces,
    })
}

async fn list(tokens: &PersonalTokens, req: &Request, user: &str) -> Response {
    let held = match tokens.list(user).await {
        Ok(held) => held,
        Err(e) => return store_unavailable(&e),
    };
    if wants_html(req) {
        return page(StatusCode::OK, &tokens_page(user, &held, None));
    }
    let body = json!({ "tokens": held.iter().map(described).collect::<Vec<_>>() });
    Response::json_body(StatusCode::OK, &body, Reason::Tokens)
}

/// The fields of a new token: the JSON body when there is one, else the query.
fn asked(req: &Request) -> Result<TokenRequest, String> {
    if !req.body.is_empty() {
        return serde_json::from_slice(&req.body).map_err(|e| {
            format!(
                "the body must be a JSON object {{\"name\", \"expires_in\", \"namespaces\"}}: {e}"
            )
        });
    }
    let sent_a_body = req
        .headers
        .get("content-length")
        .is_some_and(|l| l.trim() != "0");
    if sent_a_body && req.query.is_empty() {
        return Err(
            "authgate did not receive the request body (Envoy sends ext_authz none \
                    unless with_request_body is set): send the fields in the query, \
                    ?name=…&expires_in=…&namespaces=…"
                .into(),
        );
    }
    let first = |name: &str| {
        req.query_values(name)
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    Ok(TokenRequest {
        name: first("name"),
        expires_in: first("expires_in"),
        namespaces: req
            .query_values("namespaces")
            .iter()
            .chain(req.query_values("namespace").iter())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// What a request asks to make, judged, and the `authgate login` it is for (if any); or the
/// 400 that says why not. The confirmation and the POST read a request alike.
fn judged_request(
    tokens: &PersonalTokens,
    req: &Request,
) -> Result<(Judged, Option<Loopback>), Response> {
    let refused =
        |why: String| refused_page_or_json(req, StatusCode::BAD_REQUEST, "bad_request", &why);
    let judged = asked(req)
        .and_then(|asked| tokens.judge(&asked).map_err(|e| e.to_string()))
        .map_err(refused)?;
    let loopback = loopback(req).map_err(refused)?;
    Ok((judged, loopback))
}

async fn create(tokens: &PersonalTokens, req: &Request, found: &Found) -> Response {
    let (judged, loopback) = match judged_request(tokens, req) {
        Ok(judged) => judged,
        Err(refused) => return refused,
    };
    match tokens.mint(found, judged).await {
        Ok(minted) => match loopback {
            // Back to `authgate login` with a code only its PKCE verifier opens.
            Some(loopback) => match tokens.code_for(&minted, &loopback).await {
                Ok(code) => {
                    let mut target = loopback.redirect_uri.clone();
                    target
                        .query_pairs_mut()
                        .append_pair("code", &code)
                        .append_pair("state", &loopback.state);
                    Response::redirect(target.as_str(), Reason::Tokens)
                }
                Err(e) => store_unavailable(&e),
            },
            None => created(tokens, req, &found.session.user, minted).await,
        },
        Err(MintError::Invalid(why)) => {
            refused_page_or_json(req, StatusCode::BAD_REQUEST, "bad_request", &why)
        }
        Err(e @ MintError::TooMany(_)) => {
            refused_page_or_json(req, StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        Err(e @ MintError::LoginRequired(_)) => login_required(req, &e.to_string()),
        Err(e @ MintError::NoGrant) => refused_page_or_json(
            req,
            StatusCode::FORBIDDEN,
            "no_refresh_token",
            &e.to_string(),
        ),
        Err(e @ MintError::Busy) => {
            refused_page_or_json(req, StatusCode::CONFLICT, "conflict", &e.to_string())
                .with_header("retry-after", "30")
        }
        Err(MintError::Store(e)) => store_unavailable(&e),
    }
}

/// A browser without a fresh login is sent to log in again (the provider asked to authenticate
/// the person), coming back to this very page.
fn fresh_login(req: &Request) -> Response {
    // The query written again, every `/` and `:` escaped: the return target is a same-origin
    // path without `//` anywhere, and must fit what a login keeps.
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(req.query.as_bytes()))
        .finish();
    let here = format!("/authgate/tokens/new?{query}");
    if here.len() > crate::authn::pending::MAX_RETURN_TO {
        return refused_page_or_json(
            req,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request is too long to come back to after the login: fewer namespaces or a \
             shorter name",
        );
    }
    let rd: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    Response::redirect(&format!("/authgate/login?fresh=1&rd={rd}"), Reason::Tokens)
}

/// The `authgate login` values of a request, if it has them (all or none).
fn loopback(req: &Request) -> Result<Option<Loopback>, String> {
    let first = |name: &str| req.query_values(name).into_iter().next();
    let (uri, state, challenge) = (
        first("redirect_uri"),
        first("state"),
        first("code_challenge"),
    );
    if uri.is_none() && state.is_none() && challenge.is_none() {
        return Ok(None);
    }
    if first("code_challenge_method").as_deref() != Some("S256") {
        return Err("code_challenge_method must be S256".into());
    }
    Loopback::new(
        &uri.unwrap_or_default(),
        &state.unwrap_or_default(),
        &challenge.unwrap_or_default(),
    )
    .map(Some)
}

/// `POST /authgate/tokens/exchange` with `Authorization: AuthgateCode <code>.<verifier>`:
/// `authgate login` takes its token. In a header, not the query, so no access log holds them;
/// no session: the code and the verifier only the CLI holds are the credential.
async fn exchange(tokens: &PersonalTokens, req: &Request) -> Response {
    let sent = req
        .headers
        .get_single("authorization")
        .ok()
        .flatten()
        .and_then(|v| v.trim().strip_prefix("AuthgateCode "))
        .and_then(|v| v.trim().split_once('.'));
    let Some((code, verifier)) = sent else {
        return Response::bad_request(
            "send Authorization: AuthgateCode <code>.<code_verifier>",
            Reason::Tokens,
        );
    };
    match tokens.exchange(code, verifier).await {
        Ok(Exchanged { secret, token }) => Response::json_body(
            StatusCode::OK,
            &json!({
                "id": token.id,
                "token": secret,
                "name": token.name,
                "user": token.user,
                "expires_at": time(token.expires_at),
                "namespaces": token.namespaces,
            }),
            Reason::Tokens,
        ),
        Err(e @ ExchangeError::Refused) => Response::bad_request(&e.to_string(), Reason::Tokens),
        Err(ExchangeError::Store(e)) => store_unavailable(&e),
    }
}

/// Where a person logs in again before making a token.
const FRESH_LOGIN: &str = "/authgate/login?fresh=1&rd=/authgate/tokens";

/// 403: the login is too old to make a token; the way to a fresh one.
fn login_required(req: &Request, message: &str) -> Response {
    if wants_html(req) {
        let body = format!(
            "<h1>Log in again</h1><p>{}</p><p><a id=\"login\" href=\"{FRESH_LOGIN}\">Log in \
             again</a></p>",
            html_escape(message)
        );
        return page(StatusCode::FORBIDDEN, &body);
    }
    Response::json_body(
        StatusCode::FORBIDDEN,
        &json!({"error": "login_required", "message": message, "login": FRESH_LOGIN}),
        Reason::Tokens,
    )
}

/// A refusal, as a page for a browser or as JSON.
fn refused_page_or_json(req: &Request, status: StatusCode, error: &str, message: &str) -> Response {
    if wants_html(req) {
        let body = format!(
            "<h1>No token made</h1><p>{}</p><p><a href=\"/authgate/tokens\">Back</a></p>",
            html_escape(message)
        );
        return page(status, &body);
    }
    Response::json(status, error, message, Reason::Tokens)
}

/// An HTML page of `/authgate/tokens`, which shows a secret once: never framed, no script, its
/// forms post only here.
fn page(status: StatusCode, body: &str) -> Response {
    page_posting_to(status, body, None)
}

/// As [`page`]; its form may also lead to `loopback` (a browser checks `form-action` against
/// the redirect after the POST too: `authgate login`'s confirmation goes on there).
fn page_posting_to(status: StatusCode, body: &str, loopback: Option<&Loopback>) -> Response {
    let also = loopback
        .map(|l| format!(" {}", l.redirect_uri.origin().ascii_serialization()))
        .unwrap_or_default();
    Response::html(
        status,
        document("Personal access tokens", body),
        Reason::Tokens,
    )
    .with_header(
        "content-security-policy",
        &format!(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{also}; \
             frame-ancestors 'none'; base-uri 'none'"
        ),
    )
}

/// `GET /authgate/tokens/new?name=…&expires_in=…&namespaces=…`: what would be made, and a
/// button that makes it (a page that changes nothing: the POST does).
fn confirm(tokens: &PersonalTokens, req: &Request, found: &Found) -> Response {
    let (judged, loopback) = match judged_request(tokens, req) {
        Ok(judged) => judged,
        Err(refused) => return refused,
    };
    if !tokens.login_is_fresh(found) {
        return fresh_login(req);
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("name", &judged.name)
        .append_pair(
            "expires_in",
            &humantime::format_duration(judged.lifetime).to_string(),
        )
        .append_pair("namespaces", &judged.namespaces.join(","));
    let mut to_whom = String::new();
    if let Some(loopback) = &loopback {
        query
            .append_pair("redirect_uri", loopback.redirect_uri.as_str())
            .append_pair("state", &loopback.state)
            .append_pair("code_challenge", &loopback.code_challenge)
            .append_pair("code_challenge_method", "S256");
        let mut cancelled = loopback.redirect_uri.clone();
        cancelled
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &loopback.state);
        to_whom = format!(
            "<p id=\"cli\">It is sent to whatever program listens on <code>{}</code> on this \
             computer — <b>authgate login</b> if you just ran it, and it printed that port. If \
             you did not, <a href=\"{}\">cancel</a>.</p>",
            html_escape(loopback.redirect_uri.as_str()),
            html_escape(cancelled.as_str())
        );
    }
    let query = query.finish();
    let body = format!(
        "<h1>Make a personal access token?</h1>\
         <p>For <b>{user}</b>: a token named <b>{name}</b>, valid for <b>{lifetime}</b>, acting \
         <b>{scope}</b>.</p>{to_whom}\
         <form id=\"confirm\" method=\"post\" action=\"/authgate/tokens?{query}\">\
         <button type=\"submit\">Make it</button></form><p><a href=\"/authgate/tokens\">Cancel</a></p>",
        user = html_escape(&found.session.user),
        name = html_escape(&judged.name),
        lifetime = humantime::format_duration(judged.lifetime),
        scope = html_escape(&if judged.namespaces.is_empty() {
            "wherever you may".to_string()
        } else {
            format!("only in {}", judged.namespaces.join(", "))
        }),
        query = html_escape(&query),
    );
    page_posting_to(StatusCode::OK, &body, loopback.as_ref())
}

async fn created(tokens: &PersonalTokens, req: &Request, user: &str, minted: Minted) -> Response {
    if wants_html(req) {
        let held = tokens.list(user).await.unwrap_or_default();
        return page(
            StatusCode::CREATED,
            &tokens_page(user, &held, Some(&minted)),
        );
    }
    let Minted { secret, token } = minted;
    let body = json!({
        "id": token.id,
        "token": secret,
        "name": token.name,
        "expires_at": time(token.expires_at),
        "namespaces": token.namespaces,
    });
    Response::json_body(StatusCode::CREATED, &body, Reason::Tokens)
}

/// The page's body: the new token (once), the person's tokens, and a form for another. The
/// form asks for a confirmation page first (a GET that changes nothing), whose button POSTs
/// the fields in the query: a POST body never reaches the check through Envoy.
fn tokens_page(user: &str, held: &[PersonalToken], minted: Option<&Minted>) -> String {
    let mut body = format!(
        "<h1>Personal access tokens</h1><p>Signed in as <b>{}</b>.</p>",
        html_escape(user)
    );
    if let Some(minted) = minted {
        body.push_str(&format!(
            "<div id=\"created\"><p>Token <b>{}</b> was created. Copy it now: it is not shown \
             again.</p><pre id=\"token\">{}</pre></div>",
            html_escape(&minted.token.name),
            html_escape(&minted.secret)
        ));
    }
    body.push_str("<table id=\"tokens\"><tr><th>Name</th><th>Id</th><th>Namespaces</th><th>Created</th><th>Last used</th><th>Expires</th></tr>");
    for token in held {
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&token.name),
            html_escape(&token.id),
            html_escape(&if token.namespaces.is_empty() {
                "all yours".to_string()
            } else {
                token.namespaces.join(", ")
            }),
            time(token.created_at),
            token.last_used.map(time).unwrap_or_else(|| "never".into()),
            time(token.expires_at),
        ));
    }
    body.push_str(
        "</table><h2>New token</h2>\
         <form id=\"new\" method=\"get\" action=\"/authgate/tokens/new\">\
         <p><label>Name <input name=\"name\" required maxlength=\"64\"></label></p>\
         <p><label>Expires in <input name=\"expires_in\" value=\"30d\" required></label></p>\
         <p><label>Namespaces (comma-separated; empty: all yours) <input name=\"namespaces\"></label></p>\
         <button type=\"submit\">Next</button></form>",
    );
    body
}
