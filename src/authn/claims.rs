//! A provider's claims → the user and groups authgate vouches for, by the rules the Kubernetes
//! API server applies to its own JWT authenticators, and a little stricter where the app behind
//! could read a name differently than the API server judged it:
//!
//! - an `email` user name counts only when the provider says `email_verified: true` (anyone who
//!   can register an unverified `owner@corp.example` would otherwise become that owner);
//! - the issuer's prefixes go in front of every user and group before anything else sees them;
//! - a name that then starts with `system:` is refused (`system:masters` is cluster-admin);
//! - a name that could be mistaken for another issuer's (it starts with that issuer's longer
//!   prefix) is refused, so two issuers never produce the same user;
//! - a name a header cannot carry faithfully is refused, never rewritten or dropped.
//!
//! Every error says why in words safe to show the person it concerns.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{IssuerNames, OidcConfig};
use crate::decision::Reason;
use crate::identity::{RESERVED_PREFIX, Uncarriable, carriable_group, carriable_user};

/// The claim that carries the user name when e-mail verification applies.
const EMAIL_CLAIM: &str = "email";

/// How one issuer's claims become a user and groups.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    issuer: Arc<str>,
    user_claim: String,
    groups_claim: String,
    require_verified_email: bool,
    username_prefix: String,
    groups_prefix: String,
    /// Other issuers' user prefixes that begin with this one's: a user of this issuer must not
    /// look like one of theirs (e.g. the login issuer has no prefix, an extra one has
    /// `https://ci.example#`).
    foreign_user_prefixes: Vec<String>,
    /// The same for groups.
    foreign_group_prefixes: Vec<String>,
}

/// Who the provider vouched for, after the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// User name, prefixed.
    pub user: String,
    /// Groups, prefixed.
    pub groups: Vec<String>,
    /// The provider's `sub`.
    pub sub: Option<String>,
}

/// Why claims are not an identity. The text is meant for the person concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The user claim is missing, empty or not a string.
    #[error("the identity provider's answer has no usable {0:?} claim")]
    NoUser(String),
    /// `email_verified` is false, or absent while verification is required, or not a boolean.
    #[error(
        "the e-mail address {email} is not verified by the identity provider \
         (email_verified is {found}); verify it there and log in again"
    )]
    EmailNotVerified {
        /// The address.
        email: String,
        /// What the claim was (`false`, `absent`, …).
        found: String,
    },
    /// The groups claim is neither a string nor a list of strings.
    #[error("the identity provider's {0:?} claim is not a list of group names")]
    GroupsMalformed(String),
    /// A name Kubernetes reserves.
    #[error(
        "{what} {value:?} starts with system:, which Kubernetes reserves for its own users and \
         groups; an identity provider cannot grant it"
    )]
    Reserved {
        /// `user name` or `group`.
        what: &'static str,
        /// The name.
        value: String,
    },
    /// A name that looks like another issuer's.
    #[error("{what} {value:?} looks like one from the issuer whose names start with {prefix:?}")]
    Foreign {
        /// `user name` or `group`.
        what: &'static str,
        /// The name.
        value: String,
        /// The other issuer's prefix.
        prefix: String,
    },
    /// A name a header cannot carry faithfully.
    #[error(transparent)]
    Uncarriable(#[from] Uncarriable),
}

impl ClaimError {
    /// Why, for logs and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            ClaimError::NoUser(_) => Reason::NoUserClaim,
            ClaimError::EmailNotVerified { .. } => Reason::EmailNotVerified,
            ClaimError::GroupsMalformed(_) => Reason::GroupsMalformed,
            ClaimError::Reserved { .. } | ClaimError::Foreign { .. } => Reason::ReservedName,
            ClaimError::Uncarriable(_) => Reason::IdentityNotCarriable,
        }
    }
}

impl ClaimRules {
    /// The rules of every issuer of `config`, the login issuer's first.
    pub fn for_issuers(config: &OidcConfig) -> Vec<ClaimRules> {
        let names = config.issuer_names();
        names
            .iter()
            .map(|own| {
                let longer = |pick: fn(&IssuerNames) -> &String| -> Vec<String> {
                    names
                        .iter()
                        .filter(|other| other.issuer != own.issuer)
                        .map(pick)
                        .filter(|p| p.len() > pick(own).len() && p.starts_with(pick(own).as_str()))
                        .cloned()
                        .collect()
                };
                ClaimRules {
                    issuer: Arc::from(own.issuer.as_str()),
                    user_claim: config.user_claim.clone(),
                    groups_claim: config.groups_claim.clone(),
                    require_verified_email: config.require_verified_email,
                    username_prefix: own.username_prefix.clone(),
                    groups_prefix: own.groups_prefix.clone(),
                    foreign_user_prefixes: longer(|n| &n.username_prefix),
                    foreign_group_prefixes: longer(|n| &n.groups_prefix),
                }
            })
            .collect()
    }

    /// The issuer, without a trailing `/`.
    pub fn issuer(&self) -> &Arc<str> {
        &self.issuer
    }

    /// A stable number for these rules (the same on every replica and across restarts):
    /// sessions record it, and a session made under other rules is refused.
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [
            "claim-rules v1",
            &self.issuer,
            &self.user_claim,
            &self.groups_claim,
            if self.require_verified_email {
                "verified"
            } else {
                "unverified-ok"
            },
            &self.username_prefix,
            &self.groups_prefix,
        ]
        .into_iter()
        .chain(self.foreign_user_prefixes.iter().map(String::as_str))
        .chain(self.foreign_group_prefixes.iter().map(String::as_str))
        {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        // Never 0, which marks sessions from before rules were recorded.
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")).max(1)
    }

    /// The identity in verified claims (an ID token's, completed from userinfo).
    pub fn identity(&self, claims: &Map<String, Value>) -> Result<ProviderIdentity, ClaimError> {
        let raw_user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ClaimError::NoUser(self.user_claim.clone()))?;
        if self.user_claim == EMAIL_CLAIM {
            self.check_verified(raw_user, claims.get("email_verified"))?;
        }
        let user = format!("{}{raw_user}", self.username_prefix);
        self.check_name("user name", &user, &self.foreign_user_prefixes)?;
        carriable_user(&user)?;
        let groups = self
            .groups(claims.get(&self.groups_claim))?
            .into_iter()
            .map(|g| {
                let group = format!("{}{g}", self.groups_prefix);
                self.check_name("group", &group, &self.foreign_group_prefixes)?;
                carriable_group(&group)?;
                Ok(group)
            })
            .collect::<Result<Vec<_>, ClaimError>>()?;
        Ok(ProviderIdentity {
            user,
            groups,
            sub: claims.get("sub").and_then(Value::as_str).map(String::from),
        })
    }

    /// The API server's rule (`claims.?email_verified.orValue(true) == true`), with an absent
    /// claim refused unless `require_verified_email` is off: a provider that says nothing about
    /// an address has not vouched for it.
    fn check_verified(&self, email: &str, verified: Option<&Value>) -> Result<(), ClaimError> {
        let found = match verified {
            Some(Value::Bool(true)) => return Ok(()),
            None if !self.require_verified_email => return Ok(()),
            None => "absent".to_string(),
            Some(other) => other.to_string(),
        };
        Err(ClaimError::EmailNotVerified {
            email: email.to_string(),
            found,
        })
    }

    fn check_name(
        &self,
        what: &'static str,
        name: &str,
        foreign: &[String],
    ) -> Result<(), ClaimError> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(ClaimError::Reserved {
                what,
                value: name.to_string(),
            });
        }
        if let Some(prefix) = foreign.iter().find(|p| name.starts_with(p.as_str())) {
            return Err(ClaimError::Foreign {
                what,
                value: name.to_string(),
                prefix: prefix.clone(),
            });
        }
        Ok(())
    }

    /// Groups as the provider sent them: a list of strings, or one string; anything else is
    /// refused rather than partly read.
    fn groups(&self, value: Option<&Value>) -> Result<Vec<String>, ClaimError> {
        let malformed = || ClaimError::GroupsMalformed(self.groups_claim.clone());
        match value {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(malformed))
                .collect(),
            Some(_) => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExtraIssuer;
    use serde_json::json;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://dex.example.com/dex".into(),
            client_id: "kubeflow".into(),
            extra_issuers: vec![ExtraIssuer::Url("https://ci.example.com".into())],
            ..OidcConfig::default()
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn login(config: &OidcConfig, v: Value) -> Result<ProviderIdentity, ClaimError> {
        ClaimRules::for_issuers(config)[0].identity(&claims(v))
    }

    #[test]
    fn a_verified_email_is_an_identity() {
        let id = login(
            &config(),
            json!({"sub": "s", "email": "a@x.io", "email_verified": true, "groups": ["g"]}),
        )
        .unwrap();
        assert_eq!(id.user, "a@x.io");
        assert_eq!(id.groups, vec!["g".to_string()]);
        assert_eq!(id.sub.as_deref(), Some("s"));
    }

    #[test]
    fn an_unverified_or_unspoken_email_is_not() {
        for verified in [json!(false), json!("true"), json!(1), Value::Null] {
            let mut c = json!({"email": "owner@corp.example"});
            c["email_verified"] = verified.clone();
            let err = login(&config(), c).unwrap_err();
            assert_eq!(err.reason(), Reason::EmailNotVerified, "{verified}");
        }
        let err = login(&config(), json!({"email": "owner@corp.example"})).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");

        let lenient = OidcConfig {
            require_verified_email: false,
            ..config()
        };
        assert!(login(&lenient, json!({"email": "a@x.io"})).is_ok());
        assert!(
            login(
                &lenient,
                json!({"email": "a@x.io", "email_verified": false})
            )
            .is_err()
        );

        let by_name = OidcConfig {
            user_claim: "preferred_username".into(),
            ..config()
        };
        assert!(login(&by_name, json!({"preferred_username": "alice"})).is_ok());
    }

    #[test]
    fn reserved_names_are_refused_unless_a_prefix_moves_them() {
        let c = json!({"email": "a@x.io", "email_verified": true, "groups": ["system:masters"]});
        assert_eq!(
            login(&config(), c.clone()).unwrap_err().reason(),
            Reason::ReservedName
        );
        let prefixed = OidcConfig {
            username_prefix: "oidc:".into(),
            groups_prefix: "oidc:".into(),
            ..config()
        };
        let id = login(&prefixed, c).unwrap();
        assert_eq!(id.user, "oidc:a@x.io");
        assert_eq!(id.groups, vec!["oidc:system:masters".to_string()]);
        let by_name = OidcConfig {
            user_claim: "name".into(),
            ..config()
        };
        let err = login(&by_name, json!({"name": "system:admin"})).unwrap_err();
        assert_eq!(err.reason(), Reason::ReservedName);
    }

    #[test]
    fn issuers_never_produce_each_others_names() {
        let rules = ClaimRules::for_issuers(&config());
        let ci = rules[1]
            .identity(&claims(
                json!({"email": "a@x.io", "email_verified": true, "groups": ["g"]}),
            ))
            .unwrap();
        assert_eq!(ci.user, "https://ci.example.com#a@x.io");
        assert_eq!(ci.groups, vec!["https://ci.example.com#g".to_string()]);
        // The login issuer (no prefix) cannot name a user that looks like the CI issuer's.
        let err = rules[0]
            .identity(&claims(
                json!({"email": "https://ci.example.com#a@x.io", "email_verified": true}),
            ))
            .unwrap_err();
        assert!(matches!(err, ClaimError::Foreign { .. }), "{err}");
    }

    #[test]
    fn names_a_header_cannot_carry_are_refused_not_rewritten() {
        for groups in [
            json!(["viewers,admins"]),
            json!(["a\r\nx-evil: 1"]),
            json!([""]),
            json!(["ok", 7]),
            json!({"a": 1}),
        ] {
            let c = json!({"email": "a@x.io", "email_verified": true, "groups": groups});
            assert!(login(&config(), c).is_err(), "{groups}");
        }
        let c = json!({"email": "jos\u{e9}@x.io", "email_verified": true});
        assert_eq!(
            login(&config(), c).unwrap_err().reason(),
            Reason::IdentityNotCarriable
        );
    }
}
