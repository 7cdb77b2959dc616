//! The configuration schema: the keys operators write (YAML file + `AUTHGATE_*` environment
//! overrides), their types and defaults, and reading them — every value of the wrong type or
//! shape reported at once, in the configuration's own key names and plain words. A leaf: what
//! the values mean together is judged, and compiled, by [`crate::settings`].
//!
//! The keys are the public contract documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use serde::{Deserialize, Serialize};
use url::Url;

/// Exit code for a configuration error (`EX_CONFIG` from sysexits.h is 78; linkerd and the
/// design use 64, `EX_USAGE`, for "you started me wrong").
pub const EXIT_CONFIG: i32 = 64;

/// Environment variables that configure the process itself rather than a config key.
const ENV_NOT_KEYS: &[&str] = &["CONFIG", "LOG", "LOG_FORMAT"];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener addresses.
    pub listen: Listen,
    /// Origin of the gateway as users see it, e.g. `https://kubeflow.example.com`.
    pub public_url: Option<Url>,
    /// Identity headers and the signed identity JWT.
    pub identity: IdentityConfig,
    /// Browser login and OIDC bearer tokens; absent: neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
    /// Server-side sessions of logged-in browsers.
    pub session: SessionConfig,
    /// Personal access tokens people make for the command line; off unless enabled.
    pub personal_tokens: PersonalTokensConfig,
    /// Kubernetes API access: TokenReview and SubjectAccessReview.
    pub kubernetes: KubernetesConfig,
    /// Path prefixes that need no authentication (matched by whole segments).
    pub skip_auth: Vec<String>,
    /// Path prefixes of API routes: never redirected to a login page.
    pub api_routes: Vec<String>,
    /// Who may pass once authenticated.
    pub authorization: AuthorizationConfig,
    /// Request rate limits; absent: none.
    pub rate_limit: RateLimitConfig,
}

/// Where the two servers listen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// gRPC `envoy.service.auth.v3.Authorization`.
    pub grpc: SocketAddr,
    /// HTTP: Envoy's HTTP ext_authz checks under `http_check_prefix`, `/authgate/*`, probes, metrics.
    pub http: SocketAddr,
    /// Path prefix under which the HTTP listener takes ext_authz checks (Istio's
    /// `envoyExtAuthzHttp.pathPrefix`). A dedicated prefix keeps a check for a client path such as
    /// `/healthz` from ever being answered by authgate's own probe with a 200 (= allow).
    pub http_check_prefix: String,
    /// How long in-flight checks may take to finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            grpc: ([0, 0, 0, 0], 9000).into(),
            http: ([0, 0, 0, 0], 8000).into(),
            http_check_prefix: "/authgate/check".into(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The identity authgate vouches for upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Header carrying the user name.
    pub user_header: String,
    /// Header carrying the comma-joined groups.
    pub groups_header: String,
    /// Prefix put in front of the user name (oidc-authservice's `USERID_PREFIX`).
    pub user_prefix: String,
    /// More headers removed from every request.
    pub strip_headers: Vec<String>,
    /// The signed identity JWT.
    pub jwt: JwtConfig,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            user_header: "kubeflow-userid".into(),
            groups_header: "kubeflow-groups".into(),
            user_prefix: String::new(),
            strip_headers: Vec::new(),
            jwt: JwtConfig::default(),
        }
    }
}

/// The signed identity JWT added on allow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Header name.
    pub header: String,
    /// PKCS#8 PEM Ed25519 private key (`authgate keygen`). Absent: generated at start.
    pub key_file: Option<PathBuf>,
    /// More public keys (PEM files) published in the JWKS, e.g. the previous key during a roll.
    pub extra_public_key_files: Vec<PathBuf>,
    /// Lifetime of each token.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Hosts (`host` or `host:port`) besides `public_url`'s whose requests get a token
    /// addressed to themselves (`aud`). A request for any other `Host` gets the audience
    /// `authgate:unlisted-host`, which no app accepts: the client chooses the Host header, and
    /// one token per made-up host would cost memory per request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The keys of the identity's `extra` signed into the token's `extra` claim (`*`: all).
    /// Default: a service account's pod binding and a personal access token's id. The rest of
    /// a TokenReview's `extra` (node name and uid, credential id) makes every token larger and
    /// is for apps that need it to ask for.
    pub extra: Vec<String>,
}

/// The `extra` keys the identity JWT carries by default.
pub const DEFAULT_JWT_EXTRA: [&str; 3] = [
    "authentication.kubernetes.io/pod-name",
    "authentication.kubernetes.io/pod-uid",
    // authn::personal::TOKEN_ID_EXTRA (a test there keeps the two equal).
    "authgate.io/token-id",
];

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            header: "x-authgate-identity".into(),
            key_file: None,
            extra_public_key_files: Vec::new(),
            ttl: Duration::from_secs(300),
            audiences: Vec::new(),
            extra: DEFAULT_JWT_EXTRA.iter().map(|k| k.to_string()).collect(),
        }
    }
}

/// An OpenID Connect provider for browser login and bearer JWTs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// Issuer URL; discovery is read from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Client id registered with the provider.
    pub client_id: String,
    /// File holding the client secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// The client secret itself (prefer the file; set from `AUTHGATE_OIDC__CLIENT_SECRET`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redact")]
    pub client_secret: Option<String>,
    /// Scopes requested at login.
    pub scopes: Vec<String>,
    /// Claim naming the user.
    pub user_claim: String,
    /// Claim listing the groups.
    pub groups_claim: String,
    /// Audiences accepted in bearer JWTs (empty: the client id).
    pub audiences: Vec<String>,
    /// When the user name is the `email` claim: only an address the provider marks
    /// `email_verified: true` is an identity. `false` is for providers that never send the
    /// claim (Entra ID): an absent claim is then accepted, and `email_verified: false` is
    /// still refused, as the Kubernetes API server and oauth2-proxy do.
    pub require_verified_email: bool,
    /// Put in front of every user name from this issuer before anything else sees it
    /// (SubjectAccessReviews, headers, the signed JWT): the API server's `username.prefix`.
    pub username_prefix: String,
    /// Put in front of every group from this issuer: the API server's `groups.prefix`.
    pub groups_prefix: String,
    /// More issuers whose JWTs are accepted as bearer tokens (same audiences and claims): an
    /// issuer URL, or `{issuer, username_prefix, groups_prefix}`. Their prefixes default to
    /// `<issuer>#`, so no two issuers can produce the same user or group.
    pub extra_issuers: Vec<ExtraIssuer>,
    /// Longest time the provider's keys (JWKS) are used without fetching them again; less
    /// when the provider's `Cache-Control: max-age` says so. A key the provider withdraws
    /// stops being accepted within this time.
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// The authorization endpoint browsers are sent to, when it differs from discovery's: an
    /// issuer reached in-cluster (`http://dex.auth.svc.cluster.local:5556/dex`) advertises a URL
    /// browsers cannot open; set the public one here (e.g. `https://kubeflow.example.com/dex/auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<Url>,
    /// Where the provider sends the browser after logout (must be registered there);
    /// default: the public URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_logout_redirect_uri: Option<Url>,
    /// The path of the redirect URI registered at the provider (`<public_url><callback_path>`).
    /// `/authgate/callback` is always served; another path (oidc-authservice's `/login/oidc`)
    /// is answered as the callback too, so a redirect URI already registered keeps working.
    pub callback_path: String,
    /// When a session's ID token has expired, refresh it with the refresh token (needs the
    /// `offline_access` scope): group changes reach the gateway, and a person removed at the
    /// provider loses the session.
    pub refresh: bool,
    /// How long a login may take from redirect to callback.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Deadline for each call to the provider.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most provider calls (token exchanges, refreshes, userinfo, discovery) in flight at once;
    /// more wait for a turn within `timeout`.
    pub max_concurrent_calls: usize,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_file: None,
            client_secret: None,
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            user_claim: "email".into(),
            groups_claim: "groups".into(),
            audiences: Vec::new(),
            require_verified_email: true,
            username_prefix: String::new(),
            groups_prefix: String::new(),
            extra_issuers: Vec::new(),
            jwks_max_age: Duration::from_secs(300),
            post_logout_redirect_uri: None,
            callback_path: DEFAULT_CALLBACK_PATH.into(),
            authorization_endpoint: None,
            refresh: true,
            login_timeout: Duration::from_secs(600),
            timeout: Duration::from_secs(5),
            max_concurrent_calls: 16,
        }
    }
}

/// Another issuer of bearer JWTs: its URL alone, or with its own prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtraIssuer {
    /// Just the issuer URL: prefixes `<issuer>#`.
    Url(String),
    /// The issuer with its prefixes.
    Full {
        /// Issuer URL.
        issuer: String,
        /// Prefix of its user names; default `<issuer>#`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username_prefix: Option<String>,
        /// Prefix of its groups; default `<issuer>#`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups_prefix: Option<String>,
    },
}

impl ExtraIssuer {
    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        match self {
            ExtraIssuer::Url(issuer) | ExtraIssuer::Full { issuer, .. } => issuer,
        }
    }

    /// The user-name prefix in effect.
    pub fn username_prefix(&self) -> String {
        match self {
            ExtraIssuer::Full {
                username_prefix: Some(p),
                ..
            } => p.clone(),
            _ => self.default_prefix(),
        }
    }

    /// The group prefix in effect.
    pub fn groups_prefix(&self) -> String {
        match self {
            ExtraIssuer::Full {
                groups_prefix: Some(p),
                ..
            } => p.clone(),
            _ => self.default_prefix(),
        }
    }

    /// `<issuer>#`: the API server's own default prefix for claims other than `email`.
    fn default_prefix(&self) -> String {
        format!("{}#", self.issuer().trim_end_matches('/'))
    }
}

/// One issuer as authgate applies it: where its names come from and the prefixes that keep
/// them apart from every other issuer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerNames {
    /// Issuer URL, without a trailing `/`.
    pub issuer: String,
    /// Prefix of its user names.
    pub username_prefix: String,
    /// Prefix of its groups.
    pub groups_prefix: String,
}

impl OidcConfig {
    /// Every issuer, the login's first, with its prefixes.
    pub fn issuer_names(&self) -> Vec<IssuerNames> {
        let main = IssuerNames {
            issuer: self.issuer.trim_end_matches('/').to_string(),
            username_prefix: self.username_prefix.clone(),
            groups_prefix: self.groups_prefix.clone(),
        };
        std::iter::once(main)
            .chain(self.extra_issuers.iter().map(|extra| IssuerNames {
                issuer: extra.issuer().trim_end_matches('/').to_string(),
                username_prefix: extra.username_prefix(),
                groups_prefix: extra.groups_prefix(),
            }))
            .collect()
    }

    /// The client secret, from the file or inline.
    pub fn read_client_secret(&self) -> std::io::Result<Option<String>> {
        match (&self.client_secret_file, &self.client_secret) {
            (Some(file), _) => Ok(Some(std::fs::read_to_string(file)?.trim().to_string())),
            (None, secret) => Ok(secret.clone()),
        }
    }
}

fn redact<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// Where sessions live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process (one replica; lost on restart).
    #[default]
    Memory,
    /// In Redis (several replicas; survives restarts).
    Redis,
}

/// Server-side sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `memory` or `redis`.
    pub store: StoreKind,
    /// `redis://[user@]host:port/db`, `rediss://…` for TLS, `redis+sentinel://…` not supported
    /// here: use `redis_sentinel` for Sentinel and `redis_cluster_nodes` for Cluster.
    pub redis_url: String,
    /// File holding the Redis password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password_file: Option<PathBuf>,
    /// Redis Cluster: seed node URLs, `redis://host:port` (`rediss://` for TLS), instead of
    /// `redis_url`.
    pub redis_cluster_nodes: Vec<String>,
    /// Redis Sentinel: the sentinels and the master name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_sentinel: Option<SentinelConfig>,
    /// Key (any length, from a file) from which the token-encryption key is derived; default:
    /// derived from the identity signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_file: Option<PathBuf>,
    /// Key material that sealed tokens before the current key (the previous
    /// `encryption_key_file`, or the previous signing key when the key is derived from it):
    /// still opened, never used to seal. Roll a key by listing the old one here first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_encryption_key_files: Vec<PathBuf>,
    /// Cookie name (`__Host-` is prepended when `cookie_secure`).
    pub cookie_name: String,
    /// Secure cookies with the `__Host-` prefix; turn off only for plain-HTTP development.
    pub cookie_secure: bool,
    /// Absolute lifetime of a session.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// A session unused this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Redis store only: how long a replica reuses a session it read, without asking Redis
    /// again. `0s` (default): every request reads Redis, so a logout or revocation anywhere
    /// ends the session everywhere at once. Above 0, hot sessions cost no Redis round trip, and
    /// a logout on another replica (or `authgate sessions revoke`) reaches this one within it.
    #[serde(with = "humantime_serde")]
    pub local_cache_ttl: Duration,
}

/// Personal access tokens: a logged-in person makes one at `/authgate/tokens` and sends it as
/// `Authorization: Bearer agt_…` from scripts, the kfp SDK or curl. Kept in the session store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalTokensConfig {
    /// Let people who logged in make tokens (needs `oidc`).
    pub enabled: bool,
    /// The longest lifetime a token may ask for (each must ask for one).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// The most live tokens one person may hold.
    pub max_per_user: u32,
    /// Making a token needs a login this recent, with the provider asked to authenticate the
    /// person again: a page on the gateway's origin (a notebook runs its owner's code) cannot
    /// turn a visitor's session into a long-lived token on its own.
    #[serde(with = "humantime_serde")]
    pub fresh_login: Duration,
    /// How often a token in use is re-checked with the provider, with the grant of the login it
    /// was made after: a person removed or disabled there loses their tokens within this
    /// interval, and group changes reach them.
    #[serde(with = "humantime_serde")]
    pub recheck_interval: Duration,
    /// How long a token goes on while the provider cannot confirm its owner (down, or
    /// answering what authgate cannot read): past it, the token is refused (not revoked) until a
    /// re-check confirms them again.
    #[serde(with = "humantime_serde")]
    pub max_unconfirmed: Duration,
    /// Refuse to make a token the provider gave no refresh token for (so it could never be
    /// re-checked), instead of making one that keeps its groups to its expiry.
    pub require_recheck: bool,
}

impl Default for PersonalTokensConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_lifetime: Duration::from_secs(90 * 24 * 3600),
            max_per_user: 20,
            fresh_login: Duration::from_secs(10 * 60),
            recheck_interval: Duration::from_secs(3600),
            max_unconfirmed: Duration::from_secs(24 * 3600),
            require_recheck: false,
        }
    }
}

/// Redis Sentinel settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel.
    pub nodes: Vec<String>,
    /// The monitored master's name.
    pub master_name: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_password_file: None,
            redis_cluster_nodes: Vec::new(),
            redis_sentinel: None,
            encryption_key_file: None,
            previous_encryption_key_files: Vec::new(),
            cookie_name: "authgate_session".into(),
            cookie_secure: true,
            max_age: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(8 * 3600),
            local_cache_ttl: Duration::ZERO,
        }
    }
}

impl SessionConfig {
    /// The session cookie's name as sent to browsers.
    pub fn cookie(&self) -> String {
        if self.cookie_secure {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        }
    }

    /// The login-binding cookie's name.
    pub fn login_cookie(&self) -> String {
        if self.cookie_secure {
            format!("__Host-{}_login", self.cookie_name)
        } else {
            format!("{}_login", self.cookie_name)
        }
    }
}

/// Kubernetes API access.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Kubeconfig file. Absent: in-cluster, then the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Deadline for one call to the API server.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Service-account tokens.
    pub token_review: TokenReviewConfig,
    /// Namespace permissions.
    pub subject_access_review: SubjectAccessReviewConfig,
    /// Most TokenReview and SubjectAccessReview calls in flight at once (shared); more wait
    /// for a turn within `timeout`, so a burst of cache misses queues here, not on the API server.
    pub max_concurrent_calls: usize,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            timeout: Duration::from_secs(2),
            token_review: TokenReviewConfig::default(),
            subject_access_review: SubjectAccessReviewConfig::default(),
            max_concurrent_calls: 32,
        }
    }
}

/// SubjectAccessReview answers: how long each is reused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectAccessReviewConfig {
    /// How long an "allowed" answer is reused.
    #[serde(with = "humantime_serde")]
    pub allow_ttl: Duration,
    /// How long a "denied" answer is reused (short: a new RoleBinding should work soon).
    #[serde(with = "humantime_serde")]
    pub deny_ttl: Duration,
    /// Most cached answers kept (an answer about more than 512 bytes of names counts as one
    /// per 512 bytes, so memory is bounded by bytes).
    pub cache_capacity: u64,
    /// Budget of reviews not answered from the cache, per identity: a user looping over
    /// made-up names gets 429 once it is spent, without a review, and nobody else notices.
    /// `null` removes the budget.
    pub review_rate: Option<Rate>,
}

impl Default for SubjectAccessReviewConfig {
    fn default() -> Self {
        Self {
            allow_ttl: Duration::from_secs(10),
            deny_ttl: Duration::from_secs(5),
            cache_capacity: 100_000,
            review_rate: Some(Rate {
                rps: 20,
                burst: 100,
            }),
        }
    }
}

/// The request headers the shipped Istio `envoyExtAuthzHttp` provider passes to the check
/// (`includeRequestHeadersInCheck` in `istio/components/mesh-config`): in HTTP mode authgate
/// sees no other. `scripts/validate-manifests.sh` keeps the manifest equal to this list.
pub const HTTP_CHECK_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "accept",
    "x-requested-with",
    "sec-fetch-mode",
    "sec-fetch-site",
    "origin",
    "referer",
    "x-forwarded-for",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "content-type",
];

/// authgate's own callback path, always served.
pub const DEFAULT_CALLBACK_PATH: &str = "/authgate/callback";

/// The audience service-account tokens need when `token_review.audiences` is not set: one
/// dedicated to the gateway, so the API server's own default audience (every pod's automounted
/// token) is never accepted from outside.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "authgate";

/// Bearer tokens checked with a TokenReview.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenReviewConfig {
    /// Accept Kubernetes service-account tokens.
    pub enabled: bool,
    /// Audiences the token must be valid for, and that the API server's answer must confirm.
    /// Default `[authgate]`; an empty list is refused (it would mean the API server's default
    /// audience: every pod's automounted token).
    pub audiences: Vec<String>,
    /// How long an accepted token's review is reused (never past the token's own `exp`).
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long a rejected token's review is reused.
    #[serde(with = "humantime_serde")]
    pub failure_cache_ttl: Duration,
    /// Most cached reviews kept.
    pub cache_capacity: u64,
    /// Refuse tokens that are not bound, expiring tokens: no `exp`, or legacy secret-based
    /// tokens (issuer `kubernetes/serviceaccount`). A copied legacy token never expires.
    pub require_bound: bool,
    /// Refuse tokens whose lifetime (`exp - iat`) is longer than this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_lifetime: Option<Duration>,
    /// Budget of reviews for tokens not in the cache, for the whole replica: a flood of distinct
    /// made-up tokens gets 429 without a review once it is spent, so authgate cannot be turned
    /// against the API server. `null` removes the budget.
    pub review_rate: Option<Rate>,
}

impl Default for TokenReviewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            require_bound: true,
            max_lifetime: None,
            audiences: vec![DEFAULT_TOKEN_AUDIENCE.to_string()],
            cache_ttl: Duration::from_secs(60),
            failure_cache_ttl: Duration::from_secs(10),
            cache_capacity: 100_000,
            review_rate: Some(Rate {
                rps: 50,
                burst: 200,
            }),
        }
    }
}

/// Who may pass once authenticated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Empty: any authenticated identity; else the identity needs one of these groups.
    pub allowed_groups: Vec<String>,
    /// Empty: any e-mail domain; else people (not service accounts) need an address in one.
    pub allowed_email_domains: Vec<String>,
    /// What happens to authenticated requests that no rule matches.
    pub default: DefaultAction,
    /// Route rules, first match wins.
    pub rules: Vec<RuleConfig>,
    /// A rule that reads the query refuses (400) a query of more parameters: Express reads
    /// only the first 1,000, so what lies beyond would be judged here and unseen by the app.
    pub max_query_parameters: usize,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            allowed_groups: Vec::new(),
            allowed_email_domains: Vec::new(),
            default: DefaultAction::default(),
            rules: Vec::new(),
            max_query_parameters: DEFAULT_MAX_QUERY_PARAMETERS,
        }
    }
}

/// The fate of requests no rule matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Any authenticated identity passes.
    #[default]
    Allow,
    /// Denied with 403.
    Deny,
}

/// One route rule (see `docs/configuration.md`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in logs, denials and `authgate explain`.
    pub name: String,
    /// Path template: literal segments, `{placeholder}`, `*`, and a final `**`.
    pub path: String,
    /// HTTP methods the rule applies to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Query parameters that must have these values for the rule to apply.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub query: std::collections::BTreeMap<String, QueryValueConfig>,
    /// How the app parses its query string, so that every spelling of a parameter it accepts
    /// is read as that parameter.
    #[serde(default, skip_serializing_if = "QueryParser::is_plain")]
    pub query_parser: QueryParser,
    /// Whether the app reads `/a/b/` as `/a/b` or as `/a/b` and an empty segment.
    #[serde(default, skip_serializing_if = "TrailingSlash::is_either")]
    pub trailing_slash: TrailingSlash,
    /// Where the namespace comes from besides a `{namespace}` path segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceSourceConfig>,
    /// The permission to check with a SubjectAccessReview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceConfig>,
    /// Instead of `resource`: any authenticated identity passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow: bool,
    /// Instead of `resource` or `allow`: the request is refused (403), whoever sends it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny: bool,
    /// Request headers that must match for the rule to apply (any value of the header).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, HeaderConditionConfig>,
    /// Request headers removed before the app when the rule lets a request through: for an
    /// app that reads a header authgate cannot judge (the KFP UI routes its proxy by `Referer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    /// Literal text in the path compares exactly (default: ASCII case ignored): for an app that
    /// matches a route case-insensitively but reads the path case-sensitively after.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_sensitive: bool,
    /// Pass the bearer token that authenticated the request on to the app, for an app that
    /// verifies it itself. Default: removed, like authgate's cookies, so an app (a notebook
    /// runs its owner's code) never collects a visitor's token to replay it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_credentials: bool,
}

/// Extra namespace sources of a rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSourceConfig {
    /// A query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Absent, the request goes on to the app's own check; present, it is reviewed like any
    /// other. For app routes where the namespace may be left out (a list that another
    /// parameter scopes, shared objects).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Absent (or empty), the request is reviewed in this namespace instead: for routes where
    /// the app reads "no namespace" as one of its own (KFP's shared pipelines live with the
    /// API server, in `kubeflow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// What a rule's header condition wants of a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderConditionConfig {
    /// A value contains this text (ASCII case ignored).
    pub contains: String,
}

/// The value a rule's query condition wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValueConfig {
    /// Exactly this text.
    Text(String),
    /// A protobuf enum value, which grpc-gateway accepts by name or by number.
    Enum {
        /// The value's name.
        name: String,
        /// Its number.
        number: i64,
    },
}

impl std::fmt::Display for QueryValueConfig {
    /// The spelling a client would normally send.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryValueConfig::Text(text) => write!(f, "{text}"),
            QueryValueConfig::Enum { name, .. } => write!(f, "{name}"),
        }
    }
}

/// How an app parses its query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryParser {
    /// One spelling per parameter (Express, Tornado, Flask).
    #[default]
    Plain,
    /// grpc-gateway (the KFP API): a field by its proto or its JSON name, enums by name or
    /// number.
    GrpcGateway,
}

impl QueryParser {
    fn is_plain(&self) -> bool {
        *self == QueryParser::Plain
    }
}

/// How the app behind a rule reads a trailing slash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailingSlash {
    /// Not known: `/a/b/` is matched both as `/a/b` and as `/a/b` with an empty last segment,
    /// and a placeholder on that empty segment is refused (400).
    #[default]
    Either,
    /// `/a/b/` is the route `/a/b` (Express without strict routing).
    SameRoute,
    /// `/a/b/` is `/a/b` with an empty last segment (grpc-gateway).
    EmptySegment,
}

impl TrailingSlash {
    fn is_either(&self) -> bool {
        *self == TrailingSlash::Either
    }
}

/// SubjectAccessReview resource attributes of a rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// API version (optional).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Resource, e.g. `notebooks`.
    pub resource: String,
    /// Subresource, e.g. `log`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Object name: a literal or a `{placeholder}` from the path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Verb; absent: from the HTTP method.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// The default of `authorization.max_query_parameters`: far below Express's 1,000, far above
/// what any Kubeflow client sends.
pub const DEFAULT_MAX_QUERY_PARAMETERS: usize = 100;

/// One rate-limit bucket's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained requests per second.
    pub rps: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
}

impl Rate {
    /// Whether the numbers make sense.
    pub fn is_valid(self) -> bool {
        self.rps > 0 && self.burst > 0
    }
}

/// `rate_limit:` in the config; each part absent means no limit of that kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Per user or service account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_identity: Option<Rate>,
    /// Per client address, for requests that did not authenticate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_client_ip: Option<Rate>,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `identity.jwt.ttl`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file is missing.
    #[error("cannot read configuration: {0}")]
    Parse(String),
    /// Values of the wrong type, or settings that are invalid: every one found.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Listen::default(),
            public_url: None,
            identity: IdentityConfig::default(),
            oidc: None,
            session: SessionConfig::default(),
            personal_tokens: PersonalTokensConfig::default(),
            kubernetes: KubernetesConfig::default(),
            skip_auth: Vec::new(),
            api_routes: ["/api/", "/apis/", "/pipeline/apis/", "/ml_metadata"]
                .map(String::from)
                .to_vec(),
            authorization: AuthorizationConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl Config {
    /// What the identity-trust settings in effect do, in words (`check-config` prints them).
    pub fn trust_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(oidc) = &self.oidc {
            if oidc.user_claim == "email" {
                notes.push(if oidc.require_verified_email {
                    "oidc.require_verified_email: true: a user named by the email claim needs \
                     email_verified: true from the provider (absent or false: refused with a 403); \
                     set false only for a provider that never sends the claim"
                        .to_string()
                } else {
                    "oidc.require_verified_email: false: an email without an email_verified claim \
                     is accepted; email_verified: false is still refused"
                        .to_string()
                });
            }
            for names in oidc.issuer_names() {
                notes.push(format!(
                    "issuer {}: users {:?}+name, groups {:?}+group (names that then start with \
                     system: are refused)",
                    names.issuer, names.username_prefix, names.groups_prefix
                ));
            }
        }
        if let Some(oidc) = &self.oidc
            && oidc.user_claim != "email"
            && !self.authorization.allowed_email_domains.is_empty()
        {
            notes.push(format!(
                "warning: authorization.allowed_email_domains judges the user name, which comes from \
                 the {:?} claim: the provider does not verify that claim as an e-mail address \
                 (only `email` needs email_verified), so a user may choose a name in an allowed domain",
                oidc.user_claim
            ));
        }
        for rule in &self.authorization.rules {
            let read = rule
                .namespace
                .as_ref()
                .and_then(|n| n.header.as_ref())
                .into_iter()
                .chain(rule.headers.keys());
            for header in read {
                if !HTTP_CHECK_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                    notes.push(format!(
                        "warning: rule {:?} reads header {header:?}, which the shipped HTTP \
                         ext_authz provider does not pass to the check: add it to \
                         includeRequestHeadersInCheck, or use the gRPC provider (it passes every \
                         header)",
                        rule.name
                    ));
                }
            }
        }
        let tr = &self.kubernetes.token_review;
        if tr.enabled {
            notes.push(format!(
                "kubernetes.token_review.audiences: [{}]: only tokens the API server confirms for \
                 these audiences are accepted; pods' automounted tokens are not",
                tr.audiences.join(", ")
            ));
        }
        notes
    }

    /// Reads YAML text into the schema, every unreadable value reported; nothing more is judged
    /// (that is [`crate::settings::Settings::from_yaml`]).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        use figment::providers::{Format, Yaml};
        match extract(&Figment::new().merge(Yaml::string(text))) {
            (Some(config), problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(ConfigError::Invalid(problems)),
        }
    }

    /// The effective configuration as YAML, with secrets redacted.
    pub fn redacted_yaml(&self) -> String {
        // No secret is held inline yet: secrets only ever come from files, and we print paths.
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The variables Kubernetes injects into every pod of a namespace for a Service named
/// `authgate` (`AUTHGATE_SERVICE_HOST`, `AUTHGATE_PORT_9000_TCP_ADDR` …, unless the pod sets
/// `enableServiceLinks: false`): not settings, and no setting is named like them.
fn is_service_link(key: &str) -> bool {
    key == "PORT" || key.starts_with("PORT_") || key.starts_with("SERVICE_")
}

/// `AUTHGATE_IDENTITY__JWT__TTL=1m` → (`identity.jwt.ttl`, `"1m"`), from a handed-in environment
/// (figment's own `Env` provider always reads the process environment). Values are parsed the
/// way figment parses environment values: `[a, b]` is a list, `true` a bool, `5` a number.
pub fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, figment::value::Value)> {
    env.into_iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("AUTHGATE_")?;
            if ENV_NOT_KEYS.contains(&key) || is_service_link(key) {
                return None;
            }
            let key = key.to_ascii_lowercase().replace("__", ".");
            Some((
                key,
                v.parse().expect("parsing a figment value is infallible"),
            ))
        })
        .collect()
}

/// Reads the merged sources into the typed configuration, reporting every value of the wrong
/// type or shape, not only the first (serde stops there): each bad value is taken out and the
/// rest read again, so the configuration returned (when the sources could be read at all) has
/// defaults in their place — for finding the remaining problems, never for running.
pub fn extract(figment: &Figment) -> (Option<Config>, Vec<Problem>) {
    let mut problems = Vec::new();
    // The sources merged as figment merges them (defaults, the file, overrides on top).
    let mut data: Dict = match figment.extract::<Dict>() {
        Ok(data) => data,
        Err(errors) => {
            // The YAML itself cannot be read (its syntax): nothing more can be judged.
            problems.extend(errors.into_iter().map(|e| Problem {
                key: source_name(&e),
                message: e.kind.to_string(),
            }));
            return (None, problems);
        }
    };
    // Each pass takes out at least one value; a configuration has far fewer than this many.
    for _ in 0..256 {
        let errors = match Figment::from(Serialized::defaults(&data)).extract::<Config>() {
            Ok(config) => return (Some(config), problems),
            Err(errors) => errors,
        };
        let mut taken_out = false;
        for e in errors {
            let key = key_path(&e.path, &e.kind);
            problems.push(Problem {
                key: match key.is_empty() {
                    true => "configuration".to_string(),
                    false => key.join("."),
                },
                message: in_plain_words(&e.kind),
            });
            taken_out |= take_out(&mut data, &key, &e.kind);
        }
        if !taken_out {
            break;
        }
    }
    (None, problems)
}

/// Where a problem the YAML reader found lies: the file, or the environment.
fn source_name(e: &figment::Error) -> String {
    match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(path)) => path.display().to_string(),
        Some(other) => other.to_string(),
        None => "configuration".to_string(),
    }
}

/// The dotted key a reading problem is about: figment's path, and the field an unknown, missing
/// or repeated key names when the path stops short of it.
fn key_path<'a>(path: &'a [String], kind: &'a Kind) -> Vec<&'a str> {
    let mut key: Vec<&str> = path.iter().map(String::as_str).collect();
    let field = match kind {
        Kind::UnknownField(field, _) => Some(field.as_str()),
        Kind::MissingField(field) => Some(field.as_ref()),
        Kind::DuplicateField(field) => Some(*field),
        _ => None,
    };
    if let Some(field) = field
        && key.last() != Some(&field)
    {
        key.push(field);
    }
    key
}

/// Takes the offending value at `key` out of `data`; false when there is nothing to take out (a
/// required key is missing, or the problem is with the whole document).
fn take_out(data: &mut Dict, key: &[&str], kind: &Kind) -> bool {
    if matches!(kind, Kind::MissingField(_)) {
        return false;
    }
    let Some((last, parents)) = key.split_last() else {
        return false;
    };
    let mut dict = data;
    for parent in parents {
        match dict.get_mut(*parent) {
            Some(Value::Dict(_, inner)) => dict = inner,
            _ => return false,
        }
    }
    dict.remove(*last).is_some()
}

/// What is wrong with the value at `key`, as the operator wrote it: no library's or Rust's
/// words in it.
fn in_plain_words(kind: &Kind) -> String {
    match kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "expected {}, found {}",
            expected_words(expected),
            actual_words(actual)
        ),
        Kind::InvalidLength(n, expected) => {
            format!("expected {}, found {n} values", expected_words(expected))
        }
        Kind::UnknownVariant(value, expected) => {
            format!("{value:?} is not one of {}", one_of(expected))
        }
        Kind::UnknownField(_, []) => "unknown key".to_string(),
        Kind::UnknownField(_, expected) => {
            format!("unknown key; the keys here are {}", one_of(expected))
        }
        Kind::MissingField(_) => "required".to_string(),
        Kind::DuplicateField(_) => "given twice".to_string(),
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    }
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What serde says a value should be, in the words of the configuration's documentation.
fn expected_words(expected: &str) -> String {
    let words = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" => "text",
        "a sequence" => "a list",
        "a map" => "a map of keys",
        "socket address" => "an address and port such as 0.0.0.0:9000",
        "a string representing an URL" => "a URL such as https://kubeflow.example.com",
        "a duration" => "a duration such as 30s, 5m or 1h",
        "option" => "a value or null",
        other if other.starts_with("struct ") => "a map of keys",
        other if other.starts_with("enum ") || other.starts_with("variant ") => {
            "one of the documented values"
        }
        other => other,
    };
    words.to_string()
}

/// What was found instead, as the operator wrote it.
fn actual_words(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Char(c) => format!("{c:?}"),
        Actual::Str(s) => format!("{s:?}"),
        Actual::Unit | Actual::Option => "nothing".into(),
        Actual::Seq => "a list".into(),
        Actual::Map | Actual::StructVariant => "a map".into(),
        Actual::Other(what) => what.clone(),
        _ => "another kind of value".into(),
    }
}
