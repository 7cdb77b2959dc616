//! `/authgate/tokens`: where a logged-in person lists, makes and revokes their personal access
//! tokens ([`crate::authn::personal`]) — JSON for scripts (`Accept: application/json`), a page
//! for browsers.
//!
//! - `GET /authgate/tokens` lists the caller's own tokens (never a secret).
//! - `POST /authgate/tokens` makes one: `{"name", "expires_in", "namespaces"}` as JSON, or the
//!   same fields in the query (`?name=ci&expires_in=30d&namespaces=team-a,team-b`) — through
//!   Envoy the check sees no request body unless `with_request_body` is set. 201 with the secret,
//!   shown this once.
//! - `DELETE /authgate/tokens/{id}` revokes one (204; another person's id is 404).
//!
//! Listing and making need a browser session, not a token; making and revoking need a request
//! that shows it comes from this origin (CSRF). A token may revoke itself (`authgate logout`).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Browser, Gate, same_origin};
use crate::authn::personal::{MintError, Minted, PersonalTokens, TokenRequest};
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
                "GET or POST /authgate/tokens, DELETE /authgate/tokens/{id}",
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
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "session store unavailable"
                );
                Err(Response::unavailable(Reason::StoreUnavailable))
            }
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
            Err(e) => {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "session store unavailable"
                );
                Response::unavailable(Reason::StoreUnavailable)
            }
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
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "session store unavailable"
            );
            return Response::unavailable(Reason::StoreUnavailable);
        }
    };
    if wants_html(req) {
        return Response::html(
            StatusCode::OK,
            tokens_page(user, &held, None),
            Reason::Tokens,
        );
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

async fn create(tokens: &PersonalTokens, req: &Request, found: &Found) -> Response {
    let asked = match asked(req) {
        Ok(asked) => asked,
        Err(why) => return Response::bad_request(&why, Reason::Tokens),
    };
    match tokens.mint(found, asked).await {
        Ok(minted) => created(tokens, req, &found.session.user, minted).await,
        Err(MintError::Invalid(why)) => Response::bad_request(&why, Reason::Tokens),
        Err(e @ MintError::TooMany(_)) => Response::json(
            StatusCode::CONFLICT,
            "conflict",
            &e.to_string(),
            Reason::Tokens,
        ),
        Err(MintError::Store(e)) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "session store unavailable"
            );
            Response::unavailable(Reason::StoreUnavailable)
        }
    }
}

async fn created(tokens: &PersonalTokens, req: &Request, user: &str, minted: Minted) -> Response {
    if wants_html(req) {
        let held = tokens.list(user).await.unwrap_or_default();
        return Response::html(
            StatusCode::CREATED,
            tokens_page(user, &held, Some(&minted)),
            Reason::Tokens,
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

/// The page: the new token (once), the person's tokens, and a form for another. The form sends
/// its fields in the query (GET to a confirmation would be a side effect; a POST body never
/// reaches the check).
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
         <form id=\"new\" method=\"get\" action=\"/authgate/tokens\" \
         onsubmit=\"event.preventDefault();var f=new FormData(this);\
         fetch('/authgate/tokens?'+new URLSearchParams(f),{method:'POST',headers:{Accept:'text/html'}})\
         .then(function(r){return r.text()}).then(function(t){document.open();document.write(t);document.close()})\">\
         <p><label>Name <input name=\"name\" required maxlength=\"64\"></label></p>\
         <p><label>Expires in <input name=\"expires_in\" value=\"30d\" required></label></p>\
         <p><label>Namespaces (comma-separated; empty: all yours) <input name=\"namespaces\"></label></p>\
         <button type=\"submit\">Create</button></form>",
    );
    document("Personal access tokens", &body)
}
