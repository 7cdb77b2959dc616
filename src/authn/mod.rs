//! Authentication: turning the credentials a request carries into an [`Identity`].
//!
//! [`Identity`]: crate::identity::Identity

pub mod bearer;
pub mod claims;
pub mod jwt;
pub mod login;
pub mod oidc;
pub mod pending;
pub mod service_account;
pub mod session;

use crate::request::Headers;

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

/// RFC 7235 `token68`: what a bearer token may consist of.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| TOKEN68[usize::from(b)])
}

/// The bytes of [`is_token68`], as a table: a projected token is ~1 KB and is checked on every
/// request.
static TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(values: &[&str]) -> Credential<'static> {
        let headers = Headers::from_pairs(values.iter().map(|v| ("authorization", v.to_string())));
        let headers: &'static Headers = Box::leak(Box::new(headers));
        credential(headers)
    }

    #[test]
    fn token68_table_is_rfc_7235() {
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
