//! Bearer token handling: `credential()` on arbitrary `Authorization` headers, then the
//! unverified claims and the bound-token policy on the token and on a JWT-shaped token built
//! from fuzzed claims JSON.
//!
//! Invariants: `Bearer(t)` only for exactly one `Authorization` header whose scheme is `bearer`,
//! with `t` non-empty, at most `MAX_TOKEN_LEN`, token68 only; the policy with `require_bound`
//! never accepts a token without a numeric `exp` in the future or with the legacy issuer; with
//! audiences configured it never accepts a token for none of them; with `max_lifetime` never one
//! that lives longer.
#![no_main]

use std::time::Duration;

use authgate::authn::service_account::{bound_token_policy, unverified_claims};
use authgate::authn::{Credential, MAX_TOKEN_LEN, credential};
use authgate::config::TokenReviewConfig;
use authgate::request::Headers;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

/// The text input: header lines (`name: value`), then optionally a line `--`, a policy line
/// (`bound aud=a,b max=600 now=1700000000`, words in any order) and the claims JSON of a second,
/// JWT-shaped token.
struct Input {
    headers: Vec<(String, String)>,
    require_bound: bool,
    audiences: Vec<String>,
    max_lifetime: Option<Duration>,
    now: u64,
    claims: Option<String>,
}

fn parse(text: &str) -> Input {
    let (head, tail) = match text.split_once("\n--\n") {
        Some((h, t)) => (h, Some(t)),
        None => (text, None),
    };
    let headers = head
        .split('\n')
        .map(|line| match line.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim_start().to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect();
    let mut input = Input {
        headers,
        require_bound: false,
        audiences: Vec::new(),
        max_lifetime: None,
        now: 1_700_000_000,
        claims: None,
    };
    if let Some(tail) = tail {
        let (policy, claims) = tail.split_once('\n').unwrap_or((tail, ""));
        for word in policy.split_whitespace() {
            match word.split_once('=') {
                None if word == "bound" => input.require_bound = true,
                Some(("aud", a)) => input.audiences = a.split(',').map(str::to_string).collect(),
                Some(("max", m)) => input.max_lifetime = m.parse().ok().map(Duration::from_secs),
                Some(("now", n)) => input.now = n.parse().unwrap_or(input.now),
                _ => {}
            }
        }
        input.claims = Some(claims.to_string());
    }
    input
}

fuzz_target!(|data: &[u8]| {
    let input = parse(&String::from_utf8_lossy(data));
    let headers = Headers::from_pairs(input.headers.iter().map(|(n, v)| (n.as_str(), v.clone())));
    let authorization: Vec<&str> = headers.get_all("authorization").collect();
    let mut tokens: Vec<String> = Vec::new();
    match credential(&headers) {
        Credential::Bearer(token) => {
            assert_eq!(authorization.len(), 1, "bearer from {authorization:?}");
            let value = authorization[0].trim();
            let (scheme, _) = value.split_once(' ').expect("scheme and token");
            assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}");
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
            assert!(value.ends_with(token), "{value:?} / {token:?}");
            let body = token.trim_end_matches('=');
            assert!(!body.is_empty());
            assert!(
                body.bytes().all(|b| b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')),
                "{token:?}"
            );
            tokens.push(token.to_string());
        }
        Credential::None => {
            assert!(authorization.len() <= 1, "{authorization:?}");
        }
        Credential::Malformed(_) => {
            assert!(!authorization.is_empty());
        }
    }
    if let Some(claims) = &input.claims {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        tokens.push(format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln"));
    }

    let config = TokenReviewConfig {
        require_bound: input.require_bound,
        audiences: input.audiences.clone(),
        max_lifetime: input.max_lifetime,
        ..TokenReviewConfig::default()
    };
    for token in &tokens {
        let claims = unverified_claims(token);
        if bound_token_policy(token, &config, input.now).is_err() {
            continue;
        }
        let exp = claims
            .as_ref()
            .and_then(|c| c.get("exp"))
            .and_then(|v| v.as_u64());
        if config.require_bound {
            let claims = claims.as_ref().expect("require_bound accepted a non-JWT");
            assert_ne!(
                claims.get("iss").and_then(|v| v.as_str()),
                Some("kubernetes/serviceaccount"),
                "legacy token accepted"
            );
            assert!(
                exp.is_some(),
                "require_bound accepted a token without exp: {claims:?}"
            );
        }
        if let Some(exp) = exp {
            assert!(exp > input.now, "expired token accepted");
        }
        if let (Some(claims), false) = (&claims, config.audiences.is_empty()) {
            let auds: Vec<&str> = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => vec![a.as_str()],
                Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
                _ => Vec::new(),
            };
            assert!(
                auds.iter().any(|a| config.audiences.iter().any(|c| c == a)),
                "token for {auds:?} accepted with audiences {:?}",
                config.audiences
            );
        }
        if let (Some(max), Some(claims)) = (config.max_lifetime, &claims)
            && let (Some(iat), Some(exp)) = (
                claims.get("iat").and_then(|v| v.as_u64()),
                claims.get("exp").and_then(|v| v.as_u64()),
            )
        {
            assert!(
                exp.saturating_sub(iat) <= max.as_secs(),
                "too long-lived token accepted"
            );
        }
    }
});
