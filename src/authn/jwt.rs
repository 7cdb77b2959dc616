//! JWTs a provider signs (bearer ID tokens, logout tokens): verified against its JWKS, and how
//! long a fetched JWKS may be used.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Map, Value};

/// Why a provider-signed JWT was refused.
#[derive(Debug)]
pub enum VerifyError {
    /// Its `kid` is not in the JWKS (maybe the provider rotated keys).
    UnknownKey,
    /// Anything else.
    Invalid(String),
}

/// Verifies a JWT signed by a provider key: signature, `iss`, `aud` and `exp`, all required (a
/// provider token without an expiry would be good forever).
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
    validation.set_required_spec_claims(&["iss", "aud", "exp"]);
    validation.leeway = 30;
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| VerifyError::Invalid(e.to_string()))
}

/// How long a JWKS fetched with these response headers may be used: the provider's
/// `Cache-Control: max-age` when it is shorter than `configured`, else `configured`; never less
/// than `floor` (the refetch interval), so a provider that says `no-cache` (Keycloak does) or
/// `max-age=0` costs one fetch per interval, not one per request.
pub fn jwks_max_age(
    cache_control: Option<&str>,
    configured: Duration,
    floor: Duration,
) -> Duration {
    let floor = floor.min(configured);
    let Some(value) = cache_control else {
        return configured;
    };
    let mut age = configured;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return floor;
        }
        if let Some(seconds) = lower.strip_prefix("max-age=")
            && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
        {
            age = age.min(Duration::from_secs(seconds));
        }
    }
    age.max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_token_without_exp_is_refused() {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let pem = crate::signing::generate_key_pem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, &pem).unwrap();
        let signer = crate::signing::Signer::load(
            Some(&path),
            &[],
            "https://op.example",
            Duration::from_secs(60),
            std::sync::Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        let jwks: JwkSet = serde_json::from_str(&signer.jwks()).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = jwks.keys[0].common.key_id.clone();
        let key = EncodingKey::from_ed_der(pem::parse(&pem).unwrap().contents());
        let sign =
            |claims: serde_json::Value| jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let good =
            sign(serde_json::json!({"iss": "https://op.example", "aud": "c", "exp": now + 60}));
        let verify = |t: &str| {
            verify_with(
                &jwks,
                t,
                &jsonwebtoken::decode_header(t).unwrap(),
                "https://op.example",
                &["c"],
            )
        };
        assert!(verify(&good).is_ok());
        let forever = sign(serde_json::json!({"iss": "https://op.example", "aud": "c"}));
        assert!(matches!(verify(&forever), Err(VerifyError::Invalid(_))));
    }

    #[test]
    fn the_provider_may_shorten_but_not_lengthen_the_jwks_age() {
        let five = Duration::from_secs(300);
        let ten = Duration::from_secs(10);
        assert_eq!(jwks_max_age(None, five, ten), five);
        assert_eq!(
            jwks_max_age(Some("public, max-age=60"), five, ten),
            Duration::from_secs(60)
        );
        assert_eq!(jwks_max_age(Some("max-age=86400"), five, ten), five);
        assert_eq!(jwks_max_age(Some("no-cache"), five, ten), ten);
        assert_eq!(jwks_max_age(Some("max-age=0"), five, ten), ten);
        assert_eq!(jwks_max_age(Some("max-age=junk"), five, ten), five);
        let two = Duration::from_secs(2);
        assert_eq!(jwks_max_age(Some("no-store"), two, ten), two);
    }
}
