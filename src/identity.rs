//! Who a request comes from, and the identity headers authgate sends upstream for it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::config::IdentityConfig;

/// How an identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A Kubernetes service-account token, checked with a TokenReview.
    ServiceAccount,
    /// A JWT from a trusted OIDC issuer, checked against its JWKS.
    OidcJwt,
    /// A browser session created by the OIDC login.
    Session,
    /// A personal access token a person made at `/authgate/tokens` (`agt_…`).
    PersonalToken,
    /// A token the Kubernetes API server vouched for (TokenReview) that is not a service
    /// account's: the API server also authenticates OIDC and webhook users. Treated as a person
    /// (the group and e-mail-domain allowlists apply), never labelled a service account.
    KubernetesUser,
}

impl AuthMethod {
    /// Stable name for logs, metrics and the signed JWT.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ServiceAccount => "service_account",
            AuthMethod::OidcJwt => "oidc_jwt",
            AuthMethod::Session => "session",
            AuthMethod::PersonalToken => "personal_token",
            AuthMethod::KubernetesUser => "kubernetes_user",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    /// User name as the authenticator gave it (no prefix).
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Stable id (TokenReview uid, OIDC `sub`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Extra attributes (TokenReview `extra`: pod name, credential id …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
    /// How it was established.
    pub method: AuthMethod,
    /// The OIDC issuer that vouched for it (sessions and OIDC bearer tokens); `None` for
    /// identities the Kubernetes API server vouched for. Issuers are kept apart by their
    /// user and group prefixes; this says which one it was.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_str")]
    pub issuer: Option<Arc<str>>,
    /// The namespaces a personal access token is limited to; empty: no limit (every other way
    /// in, and an unscoped token).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

fn as_str<S: serde::Serializer>(value: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_str(v),
        None => s.serialize_none(),
    }
}

impl Identity {
    /// Whether a person stands behind it (the e-mail-domain allowlist applies), as opposed to a
    /// Kubernetes service account.
    pub fn is_person(&self) -> bool {
        self.method != AuthMethod::ServiceAccount
    }
}

/// The hosts the signed identity JWT may be addressed to (`aud`): `public_url`'s and
/// `identity.jwt.audiences`. The client chooses the `Host` header; any other host gets
/// [`UNLISTED_AUDIENCE`], which no app accepts: made-up hosts cannot make a token (and a cache
/// entry) each, and an app on a host nobody listed (a user's model server behind the same
/// gateway) never receives a token another app would take.
#[derive(Debug, Clone)]
pub struct Audiences {
    /// Lower-cased `host` or `host:port`; the public one first.
    hosts: Vec<String>,
}

impl Audiences {
    /// `public` is the gateway's origin; `extra` more hosts.
    pub fn new(public: &url::Url, extra: &[String]) -> Audiences {
        let host = public.host_str().unwrap_or_default().to_ascii_lowercase();
        let public = match public.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let hosts = std::iter::once(public)
            .chain(extra.iter().map(|h| h.to_ascii_lowercase()))
            .collect();
        Audiences { hosts }
    }

    /// The audience for a request to `host`: that host as configured, or [`UNLISTED_AUDIENCE`].
    pub fn for_host(&self, host: &str) -> &str {
        let bare = host
            .strip_suffix(":443")
            .or_else(|| host.strip_suffix(":80"))
            .unwrap_or(host);
        self.hosts
            .iter()
            .find(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(bare))
            .map_or(UNLISTED_AUDIENCE, String::as_str)
    }
}

/// The audience of identity JWTs for a host authgate was not told about: no app's host.
pub const UNLISTED_AUDIENCE: &str = "authgate:unlisted-host";

/// The Kubernetes API server's reserved prefix: names under it are its own (`system:masters`,
/// `system:serviceaccount:…`), and a JWT authenticator may never produce one.
pub const RESERVED_PREFIX: &str = "system:";

/// Why a user or group cannot be carried to the app faithfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncarriable {
    /// The value is empty.
    #[error("{what} is empty")]
    Empty {
        /// `user name` or `group`.
        what: &'static str,
    },
    /// A byte outside visible ASCII and space: control characters end or split a header, and
    /// apps read header bytes above 0x7f as Latin-1 (Node, Python), not as the UTF-8 authgate
    /// judged.
    #[error("{what} {value:?} has a character a header cannot carry faithfully ({found:?})")]
    Character {
        /// `user name` or `group`.
        what: &'static str,
        /// The value, escaped by `Debug`.
        value: String,
        /// The first offending character.
        found: char,
    },
    /// Leading or trailing white space, which header parsers trim.
    #[error("{what} {value:?} starts or ends with white space, which headers do not keep")]
    Space {
        /// `user name` or `group`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// A `,` in a group: the groups header is comma-separated, so the app would see two groups.
    #[error("group {value:?} contains ',', which separates groups in the groups header")]
    Comma {
        /// The group.
        value: String,
    },
}

/// Checks that a user name can be written into the user header exactly as authgate judged it.
pub fn carriable_user(user: &str) -> Result<(), Uncarriable> {
    carriable("user name", user)
}

/// Checks that a group can be written into the comma-joined groups header exactly.
pub fn carriable_group(group: &str) -> Result<(), Uncarriable> {
    carriable("group", group)?;
    if group.contains(',') {
        return Err(Uncarriable::Comma {
            value: group.to_string(),
        });
    }
    Ok(())
}

fn carriable(what: &'static str, value: &str) -> Result<(), Uncarriable> {
    if value.is_empty() {
        return Err(Uncarriable::Empty { what });
    }
    if let Some(found) = value.chars().find(|c| !matches!(c, ' '..='~')) {
        return Err(Uncarriable::Character {
            what,
            value: value.to_string(),
            found,
        });
    }
    if value.starts_with(' ') || value.ends_with(' ') {
        return Err(Uncarriable::Space {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// Checks every value of an identity that reaches the app's headers.
pub fn carriable_identity(identity: &Identity) -> Result<(), Uncarriable> {
    carriable_user(&identity.user)?;
    identity.groups.iter().try_for_each(|g| carriable_group(g))
}

/// The identity headers, prepared once from the configuration: which names authgate sets, and
/// every look-alike it must remove so a client value can never reach the app.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    /// Lower-cased user header.
    pub user: String,
    /// Lower-cased groups header.
    pub groups: String,
    /// Lower-cased signed-identity header.
    pub jwt: String,
    user_prefix: String,
    /// Every variant of every identity and strip header (`_`/`-` mixes), lower-cased.
    all_variants: Vec<String>,
}

/// The most `-`/`_` separators an identity or strip header may have: every mix of the two is
/// removed from requests (2^n names), and configuration refuses longer names.
pub const MAX_SEPARATORS: usize = 6;

impl HeaderPlan {
    /// Prepares the plan.
    pub fn new(config: &IdentityConfig) -> HeaderPlan {
        let lower = |s: &str| s.to_ascii_lowercase();
        let mut all_variants = Vec::new();
        let names = [
            &config.user_header,
            &config.groups_header,
            &config.jwt.header,
        ]
        .into_iter()
        .chain(config.strip_headers.iter());
        for name in names {
            for variant in separator_variants(&lower(name)) {
                if !all_variants.contains(&variant) {
                    all_variants.push(variant);
                }
            }
        }
        HeaderPlan {
            user: lower(&config.user_header),
            groups: lower(&config.groups_header),
            jwt: lower(&config.jwt.header),
            user_prefix: config.user_prefix.clone(),
            all_variants,
        }
    }

    /// The user header value for an identity.
    pub fn user_value(&self, identity: &Identity) -> String {
        let mut value = String::with_capacity(self.user_prefix.len() + identity.user.len());
        value.push_str(&self.user_prefix);
        value.push_str(&identity.user);
        value
    }

    /// Headers to remove when the given headers are set: every variant except those, since
    /// Envoy applies removals after sets and would delete the verified value.
    pub fn remove_except(&self, set: &[&str]) -> Vec<String> {
        let mut remove = Vec::with_capacity(self.removal_count());
        self.push_removals(|name| set.contains(&name), &mut remove);
        remove
    }

    /// [`HeaderPlan::remove_except`] into `remove` (sized by the caller, with
    /// [`HeaderPlan::removal_count`]), `is_set` naming the headers set.
    pub fn push_removals(&self, is_set: impl Fn(&str) -> bool, remove: &mut Vec<String>) {
        remove.extend(self.all_variants.iter().filter(|v| !is_set(v)).cloned());
    }

    /// How many names [`HeaderPlan::push_removals`] adds at most.
    pub fn removal_count(&self) -> usize {
        self.all_variants.len()
    }

    /// Whether a lower-cased header name is one authgate owns (for tests and audits).
    pub fn is_identity_header(&self, name: &str) -> bool {
        self.all_variants.iter().any(|v| v == name)
    }
}

/// `a-b_c` → every mix of `-` and `_` at the separator positions.
fn separator_variants(name: &str) -> Vec<String> {
    let positions: Vec<usize> = name
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'-' || *b == b'_')
        .map(|(i, _)| i)
        .collect();
    assert!(
        positions.len() <= MAX_SEPARATORS,
        "configuration validation limits separators"
    );
    (0..1u32 << positions.len())
        .map(|mask| {
            let mut bytes = name.as_bytes().to_vec();
            for (bit, &pos) in positions.iter().enumerate() {
                bytes[pos] = if mask & (1 << bit) == 0 { b'-' } else { b'_' };
            }
            String::from_utf8(bytes).expect("ascii swap keeps utf-8")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_are_configured_hosts_only() {
        let public = url::Url::parse("https://Kubeflow.Example.com").unwrap();
        let audiences = Audiences::new(&public, &["models.example.com".into()]);
        assert_eq!(
            audiences.for_host("kubeflow.example.com"),
            "kubeflow.example.com"
        );
        assert_eq!(
            audiences.for_host("KUBEFLOW.example.com:443"),
            "kubeflow.example.com"
        );
        assert_eq!(
            audiences.for_host("Models.Example.com"),
            "models.example.com"
        );
        assert_eq!(
            audiences.for_host(&"x".repeat(16 * 1024)),
            UNLISTED_AUDIENCE,
            "a made-up host gets an audience no app accepts"
        );
        let local = Audiences::new(&url::Url::parse("http://127.0.0.1:8080").unwrap(), &[]);
        assert_eq!(local.for_host("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(local.for_host("127.0.0.1:9999"), UNLISTED_AUDIENCE);
    }

    #[test]
    fn only_faithfully_carriable_names_pass() {
        assert!(carriable_user("alice@example.com").is_ok());
        assert!(carriable_user("system:serviceaccount:ns:sa").is_ok());
        assert!(carriable_group("team a").is_ok());
        for bad in [
            "",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\tb",
            "a\u{7f}",
            "jos\u{e9}",
            " a",
            "a ",
        ] {
            assert!(carriable_user(bad).is_err(), "{bad:?}");
            assert!(carriable_group(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            carriable_group("viewers,admins"),
            Err(Uncarriable::Comma {
                value: "viewers,admins".into()
            })
        );
        assert!(
            carriable_user("a,b").is_ok(),
            "the user header is not a list"
        );
    }

    fn plan() -> HeaderPlan {
        HeaderPlan::new(&IdentityConfig {
            strip_headers: vec!["X-Auth-Request-Email".into()],
            ..IdentityConfig::default()
        })
    }

    #[test]
    fn variants_cover_underscores_and_case() {
        let plan = plan();
        for name in [
            "kubeflow-userid",
            "kubeflow_userid",
            "kubeflow-groups",
            "kubeflow_groups",
            "x-authgate-identity",
            "x_authgate_identity",
            "x-authgate_identity",
            "x_auth_request-email",
        ] {
            assert!(plan.is_identity_header(name), "{name}");
        }
        assert!(!plan.is_identity_header("authorization"));
    }

    #[test]
    fn never_removes_what_it_sets() {
        let plan = plan();
        let set = [plan.user.as_str(), plan.groups.as_str(), plan.jwt.as_str()];
        let removed = plan.remove_except(&set);
        for name in set {
            assert!(!removed.iter().any(|r| r == name));
        }
        assert!(removed.iter().any(|r| r == "kubeflow_userid"));
    }
}
