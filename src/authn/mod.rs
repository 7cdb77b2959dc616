//! Authentication: turning the credentials a request carries into an [`Identity`]. One door,
//! [`Authenticator::authenticate`], over the four ways in — service-account tokens
//! (TokenReview), OIDC bearer JWTs, personal access tokens, browser sessions — answering with the identity or a typed
//! [`AuthnError`]; what the client then reads is decided by the gate, in one place.

pub mod bearer;
pub mod claims;
pub mod jwt;
pub mod login;
pub mod oidc;
pub mod pending;
pub mod personal;
pub mod service_account;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use crate::decision::Reason;
use crate::identity::Identity;
use crate::k8s::{KubeError, ReviewError};
use crate::request::{Headers, Request};
use crate::store::StoreError;
use bearer::{BearerError, OidcBearer};
use claims::ClaimError;
use login::Login;
use oidc::ProviderError;
use personal::{PersonalTokens, TokenError};
use service_account::{Rejection, Review, ServiceAccountAuthenticator, token_key};
use session::Sessions;

/// Longest bearer token accepted; projected service-account tokens are around 1 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The credential a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// Nothing authgate understands.
    None,
    /// Something that looks like a credential but cannot be read unambiguously.
    Malformed(&'static str),
}

/// Reads the bearer credential. Several `Authorization` headers (repeated, or merged with a comma
/// by Envoy) are refused rather than picking one: the app might pick another.
pub fn credential(headers: &Headers) -> Credential<'_> {
    let value = match headers.get_single("authorization") {
        Err(_) => return Credential::Malformed("more than one Authorization header"),
        Ok(None) => return Credential::None,
        Ok(Some(v)) => v.trim(),
    };
    if value.eq_ignore_ascii_case("bearer") {
        return Credential::Malformed("empty bearer token");
    }
    let Some((scheme, token)) = value.split_once(' ') else {
        return Credential::None;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credential::None;
    }
    let token = token.trim();
    if token.is_empty() {
        return Credential::Malformed("empty bearer token");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Credential::Malformed("bearer token too long");
    }
    if !is_token68(token) {
        return Credential::Malformed("bearer token has characters outside token68");
    }
    Credential::Bearer(token)
}

/// Why a request did not authenticate. Each error keeps what went wrong in full for the log;
/// [`AuthnError::reason`] names the outcome.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No credential at all (a browser may be sent to log in).
    #[error("no credential")]
    Missing,
    /// An `Authorization` header that cannot be read unambiguously.
    #[error("{0}")]
    Malformed(&'static str),
    /// A bearer token, but no verifier for it (TokenReview off, not an OIDC issuer's).
    #[error("bearer tokens are not accepted by this gateway")]
    BearerNotAccepted,
    /// A service-account token refused by the policy or by the API server.
    #[error("bearer token refused: {0}")]
    Rejected(Rejection),
    /// A personal access token refused (unknown, revoked, expired) or not accepted here.
    #[error("personal access token refused: {0}")]
    PersonalToken(TokenError),
    /// An OIDC bearer token that does not verify.
    #[error("OIDC bearer token refused: {0}")]
    InvalidJwt(String),
    /// A genuine credential for someone authgate cannot vouch for.
    #[error(transparent)]
    Refused(ClaimError),
    /// The budget of TokenReviews for unknown tokens is spent; no review was made.
    #[error("the budget of TokenReviews for unknown tokens is spent; retry in {0:?}")]
    BudgetSpent(Duration),
    /// The TokenReview failed.
    #[error("token review failed")]
    Kube(#[source] KubeError),
    /// An OIDC issuer's keys cannot be had.
    #[error("OIDC issuer keys unavailable")]
    IssuerUnavailable(#[source] ProviderError),
    /// The session store failed.
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

impl AuthnError {
    /// The outcome, for logs and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            AuthnError::Missing => Reason::NoCredential,
            AuthnError::Malformed(_) => Reason::MalformedCredential,
            AuthnError::BearerNotAccepted => Reason::BearerNotAccepted,
            AuthnError::Rejected(Rejection::Policy(_)) => Reason::TokenPolicy,
            AuthnError::Rejected(Rejection::ApiServer(_)) | AuthnError::InvalidJwt(_) => {
                Reason::InvalidToken
            }
            AuthnError::PersonalToken(TokenError::Unknown | TokenError::Unconfirmed(_)) => {
                Reason::PersonalTokenRefused
            }
            AuthnError::PersonalToken(TokenError::Disabled) => Reason::BearerNotAccepted,
            AuthnError::PersonalToken(TokenError::Store(_)) => Reason::StoreUnavailable,
            AuthnError::Refused(why) => why.reason(),
            AuthnError::BudgetSpent(_) => Reason::ReviewBudget,
            AuthnError::Kube(_) => Reason::KubernetesUnavailable,
            AuthnError::IssuerUnavailable(_) => Reason::ProviderUnavailable,
            AuthnError::Store(_) => Reason::StoreUnavailable,
        }
    }
}

impl From<ReviewError> for AuthnError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::BudgetSpent(wait) => AuthnError::BudgetSpent(wait),
            ReviewError::Kube(e) => AuthnError::Kube(e),
        }
    }
}

impl From<BearerError> for AuthnError {
    fn from(e: BearerError) -> Self {
        match e {
            BearerError::Invalid(why) => AuthnError::InvalidJwt(why),
            BearerError::Unavailable(why) => AuthnError::IssuerUnavailable(why),
            BearerError::Refused(why) => AuthnError::Refused(why),
        }
    }
}

/// The verifiers a gateway has; each is `None` when not configured.
pub struct Authenticator {
    /// Service-account tokens; `None` when TokenReview is disabled.
    service_accounts: Option<ServiceAccountAuthenticator>,
    /// Bearer JWTs from the OIDC issuers; `None` without OIDC.
    oidc_bearer: Option<OidcBearer>,
    /// Browser sessions and the login that refreshes them; `None` without OIDC.
    browser: Option<(Arc<Sessions>, Arc<Login>)>,
    /// Personal access tokens; `None` unless enabled.
    personal: Option<Arc<PersonalTokens>>,
}

impl Authenticator {
    /// Builds the door from the verifiers configured.
    pub fn new(
        service_accounts: Option<ServiceAccountAuthenticator>,
        oidc_bearer: Option<OidcBearer>,
        browser: Option<(Arc<Sessions>, Arc<Login>)>,
        personal: Option<Arc<PersonalTokens>>,
    ) -> Self {
        Self {
            service_accounts,
            oidc_bearer,
            browser,
            personal,
        }
    }

    /// Who the request comes from: its bearer token, else its browser session.
    pub async fn authenticate(&self, req: &Request) -> Result<Arc<Identity>, AuthnError> {
        match credential(&req.headers) {
            Credential::Bearer(token) => self.bearer(token).await,
            Credential::Malformed(why) => Err(AuthnError::Malformed(why)),
            Credential::None => self.session(&req.headers).await,
        }
    }

    /// The identity of a bearer token verified lately (TokenReview or OIDC cache), without any
    /// call; `None` for anything else. For a client over its rate limit: machines behind its
    /// address (a NAT) go on while a stranger there floods.
    pub async fn from_memory(&self, req: &Request) -> Option<Arc<Identity>> {
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

    async fn bearer(&self, token: &str) -> Result<Arc<Identity>, AuthnError> {
        // By its prefix alone: a personal access token never goes to a TokenReview or an issuer.
        if personal::is_personal(token) {
            let Some(personal) = &self.personal else {
                return Err(AuthnError::PersonalToken(TokenError::Disabled));
            };
            return personal
                .authenticate(token)
                .await
                .map_err(AuthnError::PersonalToken);
        }
        let key = token_key(token);
        // A token the TokenReview cache knows needs nothing more, not even a look at its issuer:
        // the issuers are fixed at start, so an OIDC issuer's token never reaches that cache.
        if let Some(service_accounts) = &self.service_accounts
            && let Some(review) = service_accounts.cached(&key).await
        {
            return review_identity(review);
        }
        if let Some(oidc) = &self.oidc_bearer {
            if let Some(identity) = oidc.cached(&key) {
                return Ok(identity);
            }
            if oidc.claims_our_issuer(token) {
                return Ok(oidc.authenticate(token, &key).await?);
            }
        }
        // Not an OIDC issuer's token: a TokenReview decides.
        let Some(service_accounts) = &self.service_accounts else {
            return Err(AuthnError::BearerNotAccepted);
        };
        review_identity(service_accounts.review_missed(token, &key).await?)
    }

    async fn session(&self, headers: &Headers) -> Result<Arc<Identity>, AuthnError> {
        let Some((sessions, login)) = &self.browser else {
            return Err(AuthnError::Missing);
        };
        let found = match sessions.find(headers).await.map_err(AuthnError::Store)? {
            Some(found) => login
                .refresh_if_due(found)
                .await
                .map_err(AuthnError::Store)?,
            None => None,
        };
        match found {
            Some(found) => Ok(Arc::new(found.identity(Some(login.issuer().clone())))),
            None => Err(AuthnError::Missing),
        }
    }
}

fn review_identity(review: Review) -> Result<Arc<Identity>, AuthnError> {
    match review {
        Review::Authenticated(identity) => Ok(identity),
        Review::Rejected(why) => Err(AuthnError::Rejected(why)),
    }
}

/// RFC 7235 `token68`: what a bearer token may consist of. A projected token is ~1 KB and is
/// checked on every request: the byte test is branch-free comparisons, folded without an early
/// exit, so the compiler checks many bytes per instruction (a table lookup per byte cannot).
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().fold(true, |ok, b| ok & token68_byte(b))
}

/// One byte of `token68`: `ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/"`.
const fn token68_byte(b: u8) -> bool {
    // `| 0x20` folds upper-case letters onto lower-case ones and moves no other byte into a-z.
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(values: &[&str]) -> Credential<'static> {
        let headers = Headers::from_pairs(values.iter().map(|v| ("authorization", v.to_string())));
        let headers: &'static Headers = Box::leak(Box::new(headers));
        credential(headers)
    }

    #[test]
    fn token68_is_rfc_7235() {
        for b in 0..=u8::MAX {
            let rfc = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(token68_byte(b), rfc, "{b:#04x}");
        }
        for c in (0..0x80u8).map(char::from).filter(|c| *c != '=') {
            let rfc = c.is_ascii_alphanumeric() || "-._~+/".contains(c);
            assert_eq!(is_token68(&format!("a{c}")), rfc, "{c:?}");
        }
        assert!(!is_token68("aé"), "non-ASCII");
        assert!(!is_token68("=="));
        assert!(is_token68("ab=="));
        assert!(!is_token68("a=b"));
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(
            cred(&["Bearer abc.def-_~+/="]),
            Credential::Bearer("abc.def-_~+/=")
        );
        assert_eq!(cred(&["bearer  abc "]), Credential::Bearer("abc"));
        assert_eq!(cred(&[]), Credential::None);
        assert_eq!(cred(&["Basic dXNlcjpwdw=="]), Credential::None);
    }

    #[test]
    fn refuses_ambiguous_or_malformed_tokens() {
        assert!(matches!(
            cred(&["Bearer a", "Bearer b"]),
            Credential::Malformed(_)
        ));
        assert!(matches!(
            cred(&["Bearer a,Bearer b"]),
            Credential::Malformed(_)
        ));
        assert!(matches!(cred(&["Bearer "]), Credential::Malformed(_)));
        assert!(matches!(cred(&["Bearer a b"]), Credential::Malformed(_)));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(cred(&[long.as_str()]), Credential::Malformed(_)));
    }
}
