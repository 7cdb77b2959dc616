//! What a decision answers: forward the request upstream with these headers set and removed
//! ([`Allow`]), or answer the client with this [`Response`] — and why ([`Reason`]). A leaf: it
//! knows nothing of how the answer was reached, so authentication, authorization, the gate
//! and both transports all build and read decisions through it. Responses are built whole
//! (`Response::json(…).with_header(…)`), never reopened.

pub mod pages;
mod reason;

use std::sync::Arc;
use std::time::Duration;

pub use http::StatusCode;
use serde_json::json;

use crate::identity::Identity;
pub use reason::Reason;

/// What Envoy must do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward upstream.
    Allow(Allow),
    /// Answer the client directly (errors, and authgate's own pages, which may carry a 200).
    Respond(Response),
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
    pub reason: Reason,
}

/// Answer the client with this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
    /// Who, when known (e.g. an authenticated identity outside the allowed groups).
    pub identity: Option<Arc<Identity>>,
    /// Why, for logs and metrics.
    pub reason: Reason,
}

/// `Content-Type` of authgate's JSON answers.
const JSON: &str = "application/json";

/// `Content-Type` of authgate's pages.
const HTML: &str = "text/html; charset=utf-8";

impl Response {
    /// A body with its content type, not to be cached.
    pub fn new(status: StatusCode, content_type: &str, body: String, reason: Reason) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
            identity: None,
            reason,
        }
    }

    /// An empty body, not to be cached.
    pub fn empty(status: StatusCode, reason: Reason) -> Self {
        Self {
            status,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: String::new(),
            identity: None,
            reason,
        }
    }

    /// A JSON document.
    pub fn json_body(status: StatusCode, body: &serde_json::Value, reason: Reason) -> Self {
        Self::new(status, JSON, body.to_string(), reason)
    }

    /// A JSON error answer: `{"error": …, "message": …}`.
    pub fn json(status: StatusCode, error: &str, message: &str, reason: Reason) -> Self {
        Self::json_body(
            status,
            &json!({ "error": error, "message": message }),
            reason,
        )
    }

    /// An HTML page.
    pub fn html(status: StatusCode, body: String, reason: Reason) -> Self {
        Self::new(status, HTML, body, reason)
    }

    /// A `302 Found` to `location`.
    pub fn redirect(location: &str, reason: Reason) -> Self {
        Self::empty(StatusCode::FOUND, reason).with_header("location", location)
    }

    /// 400, in JSON.
    pub fn bad_request(message: &str, reason: Reason) -> Self {
        Self::json(StatusCode::BAD_REQUEST, "bad_request", message, reason)
    }

    /// 401 with a `WWW-Authenticate` challenge (`error="invalid_token"` when a token was sent
    /// and was bad, RFC 6750 §3).
    pub fn unauthenticated(message: &str, token_was_bad: bool, reason: Reason) -> Self {
        let challenge = if token_was_bad {
            r#"Bearer realm="authgate", error="invalid_token""#
        } else {
            r#"Bearer realm="authgate""#
        };
        Self::json(StatusCode::UNAUTHORIZED, "unauthenticated", message, reason)
            .with_header("www-authenticate", challenge)
    }

    /// 403, in JSON.
    pub fn forbidden(message: &str, reason: Reason) -> Self {
        Self::json(StatusCode::FORBIDDEN, "forbidden", message, reason)
    }

    /// 429 with `Retry-After` in whole seconds (at least one).
    pub fn too_many(wait: Duration, reason: Reason) -> Self {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self::json(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            &format!("rate limit exceeded; retry in {seconds}s"),
            reason,
        )
        .with_header("retry-after", &seconds.to_string())
    }

    /// 503 with `Retry-After`: a peer authgate needs did not answer, so it does not guess.
    pub fn unavailable(reason: Reason) -> Self {
        Self::json(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            reason.public_message(),
            reason,
        )
        .with_header("retry-after", "5")
    }

    /// 500: authgate's own failure; the client learns nothing more.
    pub fn internal(reason: Reason) -> Self {
        Self::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            reason.public_message(),
            reason,
        )
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This response, cacheable as `cache_control` says (replacing `no-store`).
    pub fn cached(mut self, cache_control: &str) -> Self {
        for (name, value) in &mut self.headers {
            if name == "cache-control" {
                *value = cache_control.into();
            }
        }
        self
    }

    /// This response, about `identity` (for the decision log).
    pub fn about(mut self, identity: Arc<Identity>) -> Self {
        self.identity = Some(identity);
        self
    }
}

impl From<Response> for Decision {
    fn from(response: Response) -> Self {
        Decision::Respond(response)
    }
}

impl Decision {
    /// Why, for logs and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow(a) => a.reason,
            Decision::Respond(r) => r.reason,
        }
    }

    /// The HTTP status the client sees from authgate (200 for allow).
    pub fn status(&self) -> StatusCode {
        match self {
            Decision::Allow(_) => StatusCode::OK,
            Decision::Respond(r) => r.status,
        }
    }

    /// The identity, when one was established.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Decision::Allow(a) => a.identity.as_deref(),
            Decision::Respond(r) => r.identity.as_deref(),
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
                let mut response = Response::internal(Reason::Undeliverable);
                response.identity = allow.identity.clone();
                response.into()
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

    #[test]
    fn builders_answer_as_before() {
        let r = Response::too_many(Duration::from_millis(1200), Reason::RateLimitedClient);
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers.contains(&("retry-after".into(), "2".into())));
        let r = Response::new(StatusCode::OK, JSON, "{}".into(), Reason::Jwks)
            .cached("public, max-age=300");
        assert_eq!(
            r.headers,
            vec![
                ("content-type".to_string(), JSON.to_string()),
                (
                    "cache-control".to_string(),
                    "public, max-age=300".to_string()
                )
            ]
        );
        let r = Response::unavailable(Reason::StoreUnavailable);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!r.body.contains("store"), "{}", r.body);
    }
}
