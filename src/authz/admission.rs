//! Admission: whether an authenticated identity may use the gateway at all, before any route
//! rule — a name the identity headers carry exactly, an allowed e-mail domain, an allowed
//! group. The gate and `authgate explain` both ask it, so they cannot drift apart.

use crate::config::AuthorizationConfig;
use crate::decision::Reason;
use crate::identity::{Identity, Uncarriable, carriable_identity};

/// The admission settings.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Empty: any authenticated identity passes.
    allowed_groups: Vec<String>,
    /// Empty: any domain; else people need an e-mail address in one of these.
    allowed_email_domains: Vec<String>,
}

/// Why an identity may not use the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdmitted {
    /// Whoever vouched for it (a TokenReview too), a name the headers cannot carry exactly: the
    /// app would act on a different name than authgate judged.
    #[error(transparent)]
    Uncarriable(Uncarriable),
    /// A person outside `authorization.allowed_email_domains`.
    #[error("{user} is not in an e-mail domain allowed to use this gateway")]
    Domain {
        /// The user.
        user: String,
    },
    /// An identity outside `authorization.allowed_groups`.
    #[error("{user} is not a member of a group allowed to use this gateway")]
    Group {
        /// The user.
        user: String,
    },
}

impl NotAdmitted {
    /// The outcome, for logs and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            NotAdmitted::Uncarriable(_) => Reason::IdentityNotCarriable,
            NotAdmitted::Domain { .. } => Reason::DomainNotAllowed,
            NotAdmitted::Group { .. } => Reason::GroupNotAllowed,
        }
    }
}

impl Admission {
    /// From `authorization.allowed_groups` and `authorization.allowed_email_domains`.
    pub fn new(config: &AuthorizationConfig) -> Self {
        Self {
            allowed_groups: config.allowed_groups.clone(),
            allowed_email_domains: config.allowed_email_domains.clone(),
        }
    }

    /// Every admission check, in the gate's order ([`Self::carriable`], then [`Self::member`]).
    pub fn admit(&self, identity: &Identity) -> Result<(), NotAdmitted> {
        Self::carriable(identity)?;
        self.member(identity)
    }

    /// The identity headers can carry the identity exactly.
    pub fn carriable(identity: &Identity) -> Result<(), NotAdmitted> {
        carriable_identity(identity).map_err(NotAdmitted::Uncarriable)
    }

    /// The identity is in an allowed e-mail domain (people only) and an allowed group.
    pub fn member(&self, identity: &Identity) -> Result<(), NotAdmitted> {
        if identity.is_person() && !self.allowed_email_domains.is_empty() {
            let domain = identity
                .user
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase());
            let allowed = domain.is_some_and(|d| {
                self.allowed_email_domains
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&d))
            });
            if !allowed {
                return Err(NotAdmitted::Domain {
                    user: identity.user.clone(),
                });
            }
        }
        if self.allowed_groups.is_empty()
            || identity
                .groups
                .iter()
                .any(|g| self.allowed_groups.contains(g))
        {
            return Ok(());
        }
        Err(NotAdmitted::Group {
            user: identity.user.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;

    fn person(user: &str, groups: &[&str]) -> Identity {
        Identity {
            namespaces: Vec::new(),
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            uid: None,
            extra: Default::default(),
            method: AuthMethod::Session,
            issuer: None,
        }
    }

    #[test]
    fn domains_then_groups() {
        let admission = Admission::new(&AuthorizationConfig {
            allowed_groups: vec!["ml".into()],
            allowed_email_domains: vec!["example.com".into()],
            ..Default::default()
        });
        assert_eq!(admission.admit(&person("a@EXAMPLE.com", &["ml"])), Ok(()));
        assert_eq!(
            admission
                .admit(&person("a@other.com", &["ml"]))
                .unwrap_err()
                .reason(),
            Reason::DomainNotAllowed
        );
        assert_eq!(
            admission
                .admit(&person("a@example.com", &["x"]))
                .unwrap_err()
                .reason(),
            Reason::GroupNotAllowed
        );
        assert_eq!(
            admission
                .admit(&person("a\u{7f}@example.com", &["ml"]))
                .unwrap_err()
                .reason(),
            Reason::IdentityNotCarriable
        );
        assert_eq!(Admission::default().admit(&person("anyone", &[])), Ok(()));
    }
}
