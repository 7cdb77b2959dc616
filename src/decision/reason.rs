//! [`Reason`]: every outcome a decision can have, named once. Its label is what logs and the
//! `authgate_decisions_total` metric show; dashboards and alerts key on these labels, so a label
//! never changes meaning.

/// Why a request was answered as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // Forwarded to the app.
    /// Authenticated and authorized.
    Authenticated,
    /// A `skip_auth` path: no identity, identity headers removed.
    SkipAuth,

    // The request itself.
    /// The path is not in the normal form a normalizing Envoy sends.
    PathNotNormal,
    /// The path can be read in more than one way.
    AmbiguousPath,
    /// A method that is not an HTTP token (no Envoy forwards one).
    BadMethod,
    /// A method-override header.
    MethodOverride,
    /// A rule found the request malformed (e.g. a placeholder that holds no object name).
    InvalidRequest,

    // Credentials.
    /// No credential, and not a browser navigation that could log in.
    NoCredential,
    /// An `Authorization` header that cannot be read unambiguously.
    MalformedCredential,
    /// A bearer token, but this gateway verifies none (no TokenReview, not an OIDC issuer's).
    BearerNotAccepted,
    /// The API server or the OIDC issuer's keys refused the token.
    InvalidToken,
    /// A personal access token unknown, revoked or expired (same label as
    /// [`Reason::InvalidToken`]; authgate's own words, so shown).
    PersonalTokenRefused,
    /// A personal access token used outside the namespaces it names.
    TokenScope,
    /// authgate's bound-token policy refused a service-account token (same label as
    /// [`Reason::InvalidToken`]; its words are authgate's own, so the client may read them).
    TokenPolicy,

    // Identities authgate cannot vouch for (a genuine credential, a refused identity).
    /// The user claim is missing.
    NoUserClaim,
    /// An e-mail user claim whose address is not verified.
    EmailNotVerified,
    /// The groups claim is not a list of strings.
    GroupsMalformed,
    /// A name in a prefix reserved for another issuer or for Kubernetes.
    ReservedName,
    /// A name the identity headers cannot carry exactly.
    IdentityNotCarriable,

    // Admission and authorization.
    /// A person outside `authorization.allowed_email_domains`.
    DomainNotAllowed,
    /// An identity outside `authorization.allowed_groups`.
    GroupNotAllowed,
    /// A rule refused the request before any review (no or an ambiguous namespace …).
    NamespaceRefused,
    /// The SubjectAccessReview said no.
    RbacDenied,
    /// No rule matched and the default is deny.
    NoRule,

    // Budgets.
    /// The client address is over `rate_limit.per_client_ip`.
    RateLimitedClient,
    /// The identity is over `rate_limit.per_identity`.
    RateLimitedIdentity,
    /// The budget of TokenReviews for unknown tokens is spent.
    ReviewBudget,
    /// The identity's SubjectAccessReview budget is spent.
    ReviewBudgetIdentity,

    // Peers that could not answer (503: authgate does not guess).
    /// The Kubernetes API.
    KubernetesUnavailable,
    /// The session store.
    StoreUnavailable,
    /// The OIDC provider.
    ProviderUnavailable,

    // authgate's own failures (500).
    /// The identity JWT could not be signed.
    SigningFailed,
    /// An allow whose headers could not all be written.
    Undeliverable,

    // authgate's own endpoints.
    /// `/authgate/jwks.json`.
    Jwks,
    /// `/authgate/whoami`.
    Whoami,
    /// No such endpoint, or browser login is not configured.
    OwnNotFound,
    /// A method the endpoint does not take.
    OwnMethod,
    /// Sent to the provider to log in.
    LoginRedirect,
    /// Back from the provider with a session.
    LoginComplete,
    /// The provider reported an error at the callback.
    LoginError,
    /// A callback without code or state.
    LoginIncomplete,
    /// A callback whose state this browser is not logging in with.
    LoginStateUnknown,
    /// The provider's answer could not be verified.
    LoginRejected,
    /// `/authgate/tokens`: listed, made or revoked a personal access token.
    Tokens,
    /// Logged out.
    Logout,
    /// A page asking to confirm a logout that did not show it came from this origin.
    LogoutConfirm,
    /// A back-channel logout.
    BackchannelLogout,
    /// A back-channel logout token refused.
    BackchannelBad,
}

impl Reason {
    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            Authenticated => "authenticated",
            SkipAuth => "skip_auth",
            PathNotNormal => "path_not_normal",
            AmbiguousPath => "ambiguous_path",
            BadMethod => "bad_method",
            MethodOverride => "method_override",
            InvalidRequest => "invalid_request",
            NoCredential => "no_credential",
            MalformedCredential => "malformed_credential",
            BearerNotAccepted => "bearer_not_accepted",
            InvalidToken | TokenPolicy | PersonalTokenRefused => "invalid_token",
            TokenScope => "token_scope",
            NoUserClaim => "no_user_claim",
            EmailNotVerified => "email_not_verified",
            GroupsMalformed => "groups_malformed",
            ReservedName => "reserved_name",
            IdentityNotCarriable => "identity_not_carriable",
            DomainNotAllowed => "domain_not_allowed",
            GroupNotAllowed => "group_not_allowed",
            NamespaceRefused => "namespace_refused",
            RbacDenied => "rbac_denied",
            NoRule => "no_rule",
            RateLimitedClient => "rate_limited_client",
            RateLimitedIdentity => "rate_limited_identity",
            ReviewBudget => "review_budget",
            ReviewBudgetIdentity => "review_budget_identity",
            KubernetesUnavailable => "kubernetes_unavailable",
            StoreUnavailable => "store_unavailable",
            ProviderUnavailable => "provider_unavailable",
            SigningFailed => "signing_failed",
            Undeliverable => "undeliverable",
            Jwks => "jwks",
            Whoami => "whoami",
            OwnNotFound => "own_not_found",
            OwnMethod => "own_method",
            LoginRedirect => "login_redirect",
            LoginComplete => "login_complete",
            LoginError => "login_error",
            LoginIncomplete => "login_incomplete",
            LoginStateUnknown => "login_state_unknown",
            LoginRejected => "login_rejected",
            Tokens => "tokens",
            Logout => "logout",
            LogoutConfirm => "logout_confirm",
            BackchannelLogout => "backchannel_logout",
            BackchannelBad => "backchannel_bad",
        }
    }

    /// Whether the client may read what went wrong in detail. Where not, it reads only
    /// [`Reason::public_message`]: an API server's or a provider's words, a store's or a
    /// signer's error would tell a stranger about authgate's peers, or help forge a token.
    pub fn detail_shown(self) -> bool {
        use Reason::*;
        !matches!(
            self,
            InvalidToken
                | KubernetesUnavailable
                | StoreUnavailable
                | ProviderUnavailable
                | SigningFailed
                | Undeliverable
                | LoginRejected
                | BackchannelBad
        )
    }

    /// What the client reads when [`Reason::detail_shown`] is false.
    pub fn public_message(self) -> &'static str {
        use Reason::*;
        match self {
            InvalidToken => "invalid bearer token",
            KubernetesUnavailable | StoreUnavailable | ProviderUnavailable => {
                "authgate cannot verify this request right now; try again shortly"
            }
            SigningFailed | Undeliverable => "internal error",
            LoginRejected => "The identity provider's answer could not be verified.",
            BackchannelBad => "logout_token refused",
            _ => "request refused",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
