//! `ClaimRules::identity` on arbitrary provider claims (an ID token's or userinfo's JSON).
//!
//! Input: a JSON object (non-objects are skipped). The rules are those of a login issuer with
//! no prefixes and an extra issuer with the default `<issuer>#` prefixes.
//!
//! Invariants: an accepted identity's user and groups are carriable in headers exactly (visible
//! ASCII, no surrounding space, no `,` in a group), never start with `system:`, carry the
//! issuer's prefixes, and the login issuer never yields a name that starts with the extra
//! issuer's prefix; an `email` user needs `email_verified: true`.
#![no_main]

use authgate::authn::claims::ClaimRules;
use authgate::config::{ExtraIssuer, OidcConfig};
use authgate::identity::{carriable_group, carriable_user};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) else {
        return;
    };
    let config = OidcConfig {
        issuer: "https://dex.example.com/dex".into(),
        client_id: "kubeflow".into(),
        extra_issuers: vec![ExtraIssuer::Url("https://ci.example.com".into())],
        ..OidcConfig::default()
    };
    let rules = ClaimRules::for_issuers(&config);
    for (i, rule) in rules.iter().enumerate() {
        let Ok(identity) = rule.identity(&claims) else {
            continue;
        };
        assert_eq!(
            claims.get("email_verified"),
            Some(&serde_json::Value::Bool(true))
        );
        assert!(carriable_user(&identity.user).is_ok(), "{identity:?}");
        assert!(!identity.user.starts_with("system:"), "{identity:?}");
        for group in &identity.groups {
            assert!(carriable_group(group).is_ok(), "{identity:?}");
            assert!(!group.starts_with("system:"), "{identity:?}");
        }
        if i == 0 {
            assert!(!identity.user.starts_with("https://ci.example.com#"));
            assert!(
                identity
                    .groups
                    .iter()
                    .all(|g| !g.starts_with("https://ci.example.com#"))
            );
        } else {
            assert!(identity.user.starts_with("https://ci.example.com#"));
            assert!(
                identity
                    .groups
                    .iter()
                    .all(|g| g.starts_with("https://ci.example.com#"))
            );
        }
    }
});
